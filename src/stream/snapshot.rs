//! The snapshot contract: a projection's state saved at a known sequence number, so a later run reads only
//! the events after it.
//!
//! A snapshot is only ever an optimisation: the runner checks that it was written by the same
//! projection version, that it fits the requested point in time, and that its state can be
//! read, and otherwise replays the stream from the start. Every snapshot store may therefore
//! lose, keep stale or overwrite snapshots freely (last write wins) without changing any
//! result. A store keeps at most one snapshot per (stream, projection name).

use async_trait::async_trait;

use super::{StoreError, StoredState, StreamId};

/// A projection's state after folding events `1..=sequence` of one stream, kept to resume from
/// (the one stored form of a fold, [`StoredState`]; a snapshot has a `max_timestamp` and no
/// `failure`).
pub type Snapshot = StoredState;

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

    /// Deletes every snapshot of `stream`, of every projection (the stream was erased).
    async fn delete_stream(&self, stream: &StreamId) -> Result<(), StoreError> {
        Err(StoreError::Misconfigured(format!(
            "this snapshot store cannot delete the snapshots of {stream}"
        )))
    }
}
