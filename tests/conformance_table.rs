//! The storage contract on Azure Table storage (Azurite).

mod conformance;

use std::sync::Arc;
use std::time::Duration;

use conformance::{EventLimit, Fixture};
use streamfold::storage::table::MAX_ENTITY_BYTES;
use streamfold::storage::{StorageAccount, TableStore};
use streamfold::stream::EventStore;
use streamfold_testbed::Azurite;

/// Azurite compares Table times to the millisecond (the service itself to 100 ns).
const AZURITE_TIME_RESOLUTION: Duration = Duration::from_millis(1);

async fn table() -> Fixture {
    let azurite = Azurite::start().await.unwrap();
    let account = StorageAccount::from_connection_string(&azurite.connection_string()).unwrap();
    // Another process: a new store on the same table, with its own client.
    let open = move || -> Arc<dyn EventStore> { Arc::new(TableStore::new(account.clone())) };
    Fixture {
        store: open(),
        reopen: Box::new(open),
        event_limit: Some(EventLimit {
            bytes: MAX_ENTITY_BYTES,
            size: Box::new(TableStore::event_entity_size),
        }),
        as_of_resolution: AZURITE_TIME_RESOLUTION,
        guard: Box::new(azurite),
    }
}

conformance_suite!(table);
