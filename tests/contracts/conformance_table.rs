//! The storage contract on Azure Table storage (Azurite).

use crate::{conformance, conformance_suite};

use std::sync::Arc;
use std::time::Duration;

use conformance::{EventLimit, Fixture};
use streamfold::storage::table::MAX_ENTITY_BYTES;
use streamfold::storage::TableStore;
use streamfold::stream::{Clock, EventStore};

async fn table() -> Fixture {
    let (azurite, account) = crate::azurite().await;
    // Another process: a new store on the same table, with its own client.
    let skewed_account = account.clone();
    let open = move || -> Arc<dyn EventStore> { Arc::new(TableStore::new(account.clone())) };
    Fixture {
        store: open(),
        reopen: Box::new(open),
        skewed: Box::new(move |offset| {
            Arc::new(TableStore::new(skewed_account.clone()).with_clock(Clock::skewed(offset)))
        }),
        event_limit: Some(EventLimit {
            bytes: MAX_ENTITY_BYTES,
            size: Box::new(TableStore::event_entity_size),
        }),
        // Times are recorded to 100 ns, and as-of reads cut exactly at them.
        as_of_resolution: Duration::from_nanos(100),
        guard: Box::new(azurite),
    }
}

conformance_suite!(table);
