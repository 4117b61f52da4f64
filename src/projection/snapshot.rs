//! Snapshots: a projection's state saved at a known sequence number, so a later run reads only
//! the events after it.
//!
//! A snapshot is only ever an optimisation: the runner checks that it was written by the same
//! projection version, that it fits the requested point in time, and that its state can be
//! read, and otherwise replays the stream from the start. Every snapshot store may therefore
//! lose, keep stale or overwrite snapshots freely (last write wins) without changing any
//! result. A store keeps at most one snapshot per (stream, projection name).

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use time::OffsetDateTime;

use crate::stream::{StoreError, StreamId};

/// A projection's state after folding events `1..=sequence` of one stream.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Snapshot {
    /// The projection's name.
    pub projection: String,
    /// The projection's version when the snapshot was written.
    pub projection_version: u32,
    /// Sequence number of the last event folded in.
    pub sequence: u64,
    /// The latest timestamp among the events folded in. Timestamps need not grow with sequence
    /// numbers (writers' clocks differ), so this is a maximum, not the last event's timestamp:
    /// the snapshot holds exactly the events written at or before any time from here on.
    #[serde(with = "time::serde::rfc3339")]
    pub max_timestamp: OffsetDateTime,
    /// The state as the projection serializes it.
    pub state: Box<RawValue>,
}

/// Where snapshots are kept. A store may lose a snapshot or keep an older one, but what `load`
/// returns is one that was saved, whole: its state's text byte for byte, its sequence, and a
/// `max_timestamp` no earlier than saved (a store may round it up to the precision it keeps,
/// never down). The suite `tests/contracts/snapshots.rs` checks every store for this.
#[async_trait]
pub trait SnapshotStore: Send + Sync + 'static {
    /// The snapshot of `projection` for `stream`, if there is one.
    async fn load(
        &self,
        stream: &StreamId,
        projection: &str,
    ) -> Result<Option<Snapshot>, StoreError>;

    /// Saves `snapshot`, replacing any earlier snapshot of the same projection and stream.
    async fn save(&self, stream: &StreamId, snapshot: &Snapshot) -> Result<(), StoreError>;
}

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
}
