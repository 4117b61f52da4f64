//! The storage contract on Azure Table storage (Azurite).

mod conformance;

use std::sync::Arc;

use conformance::Fixture;
use streamfold::storage::table::MAX_ENTITY_BYTES;
use streamfold::storage::{StorageAccount, TableStore};
use streamfold_testbed::Azurite;

async fn table() -> Fixture {
    let azurite = Azurite::start().await.unwrap();
    let account = StorageAccount::from_connection_string(&azurite.connection_string()).unwrap();
    Fixture {
        store: Arc::new(TableStore::new(account)),
        fits: Some(Box::new(|stream, event| {
            TableStore::event_entity_size(stream, event) <= MAX_ENTITY_BYTES
        })),
        guard: Box::new(azurite),
    }
}

conformance_suite!(table);
