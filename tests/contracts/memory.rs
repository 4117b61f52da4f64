//! The contracts on the in-memory stores. One process: another view of a store is the same
//! store. (The memory event store keeps no outbox.)

use std::sync::Arc;
use std::time::Duration;

use streamfold::projection::SnapshotStore;
use streamfold::readmodel::{MemoryReadModelStore, ReadModelStore};
use streamfold::storage::MemorySnapshotStore;

mod snapshots {
    use super::*;
    use crate::snapshots::Fixture;

    async fn memory() -> Fixture {
        let store: Arc<dyn SnapshotStore> = Arc::new(MemorySnapshotStore::new());
        let shared = store.clone();
        Fixture {
            store,
            reopen: Box::new(move || shared.clone()),
            time_resolution: Duration::from_nanos(1),
            guard: Box::new(()),
        }
    }

    crate::snapshots::suite!(memory);
}

mod readmodels {
    use super::*;
    use crate::readmodels::Fixture;

    async fn memory() -> Fixture {
        let store: Arc<dyn ReadModelStore> = Arc::new(MemoryReadModelStore::new());
        let shared = store.clone();
        Fixture {
            store,
            reopen: Box::new(move || shared.clone()),
            guard: Box::new(()),
        }
    }

    crate::readmodels::suite!(memory);
}
