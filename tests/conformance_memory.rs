//! The storage contract on the in-memory backend.

mod conformance;

use std::sync::Arc;

use conformance::Fixture;
use streamfold::storage::MemoryStore;

async fn memory() -> Fixture {
    Fixture {
        store: Arc::new(MemoryStore::new()),
        fits: None,
        guard: Box::new(()),
    }
}

conformance_suite!(memory);
