//! The storage contract on Append Blobs (Azurite).

mod conformance;

use std::sync::Arc;

use conformance::Fixture;
use streamfold::storage::blob::{record_size_bound, MAX_BLOCK_BYTES};
use streamfold::storage::{BlobStore, StorageAccount};
use streamfold_testbed::Azurite;

async fn blob() -> Fixture {
    let azurite = Azurite::start().await.unwrap();
    let account = StorageAccount::from_connection_string(&azurite.connection_string()).unwrap();
    Fixture {
        store: Arc::new(BlobStore::new(account)),
        fits: Some(Box::new(|_stream, event| {
            record_size_bound(event).is_ok_and(|size| size <= MAX_BLOCK_BYTES)
        })),
        guard: Box::new(azurite),
    }
}

conformance_suite!(blob);
