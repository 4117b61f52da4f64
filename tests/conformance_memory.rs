//! The storage contract on the in-memory backend.

mod conformance;

use std::sync::Arc;
use std::time::Duration;

use conformance::Fixture;
use streamfold::storage::MemoryStore;
use streamfold::stream::EventStore;

async fn memory() -> Fixture {
    let store: Arc<dyn EventStore> = Arc::new(MemoryStore::new());
    let shared = store.clone();
    Fixture {
        store,
        // One process: another view is the same store.
        reopen: Box::new(move || shared.clone()),
        event_limit: None,
        as_of_resolution: Duration::from_nanos(1),
        guard: Box::new(()),
    }
}

conformance_suite!(memory);
