//! Snapshots in memory ([`MemorySnapshotStore`]), for tests and single-process use: the
//! [`SnapshotStore`] contract (`tests/contracts/snapshots.rs`) over a map behind a mutex.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

use async_trait::async_trait;

use crate::stream::{Snapshot, SnapshotStore, StoreError, StreamId};

/// Snapshots in a map behind a mutex, for tests and single-process use.
#[derive(Default)]
pub struct MemorySnapshotStore {
    snapshots: Mutex<HashMap<(StreamId, String), Snapshot>>,
    saves: AtomicU64,
}

impl MemorySnapshotStore {
    pub fn new() -> Self {
        Self::default()
    }

    /// The stored snapshot, read without going through the async trait.
    pub fn get(&self, stream: &StreamId, projection: &str) -> Option<Snapshot> {
        self.lock()
            .get(&(stream.clone(), projection.to_owned()))
            .cloned()
    }

    /// How many snapshots are stored.
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// How many times `save` was called since the store was made.
    pub fn saves(&self) -> u64 {
        self.saves.load(Ordering::Relaxed)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<(StreamId, String), Snapshot>> {
        // Each operation is a single insert or lookup, so a poisoned map is still consistent.
        self.snapshots.lock().unwrap_or_else(|p| p.into_inner())
    }
}

#[async_trait]
impl SnapshotStore for MemorySnapshotStore {
    async fn load(
        &self,
        stream: &StreamId,
        projection: &str,
    ) -> Result<Option<Snapshot>, StoreError> {
        Ok(self.get(stream, projection))
    }

    async fn save(&self, stream: &StreamId, snapshot: &Snapshot) -> Result<(), StoreError> {
        self.lock().insert(
            (stream.clone(), snapshot.projection.clone()),
            snapshot.clone(),
        );
        self.saves.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }

    async fn delete_stream(&self, stream: &StreamId) -> Result<(), StoreError> {
        self.lock().retain(|(kept, _), _| kept != stream);
        Ok(())
    }
}
