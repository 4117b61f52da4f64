//! The storage contract on the in-memory backend.

use crate::{conformance, conformance_suite};

use std::sync::Arc;
use std::time::Duration;

use conformance::Fixture;
use streamfold::storage::MemoryStore;
use streamfold::stream::{Clock, EventStore};

async fn memory() -> Fixture {
    let memory = MemoryStore::new();
    let store: Arc<dyn EventStore> = Arc::new(memory.clone());
    let shared = store.clone();
    Fixture {
        store,
        // One process: another view is the same store.
        reopen: Box::new(move || shared.clone()),
        // The same streams, another clock.
        skewed: Box::new(move |offset| Arc::new(memory.clone().with_clock(Clock::skewed(offset)))),
        event_limit: None,
        // Times are recorded to 100 ns.
        as_of_resolution: Duration::from_nanos(100),
        guard: Box::new(()),
    }
}

conformance_suite!(memory);
