//! Errors of projections: [`ApplyError`] when one event cannot be folded, [`ProjectionError`]
//! for a whole run. A missing, stale or unreadable snapshot is never an error (the runner
//! replays instead), so nothing here is about snapshots.
//!
//! A fold error names the stream, the projection and the event (sequence and type), so the
//! HTTP layer can answer `stream-unreadable` with all three, and read models can mark the row
//! of that stream and carry on with the others (`crate::readmodel`).

use crate::stream::{RecordedEvent, StoreError, StreamId};

/// A known event could not be applied (its data does not have the expected shape, a value is
/// out of range...). The projection's state is then unknown, so the run stops.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("event {sequence} ({event_type}): {reason}")]
#[non_exhaustive]
pub struct ApplyError {
    /// Sequence number of the event that could not be applied.
    pub sequence: u64,
    pub event_type: String,
    /// What is wrong with it, in words.
    pub reason: String,
}

impl ApplyError {
    /// An error about `event`.
    pub fn new(event: &RecordedEvent, reason: impl Into<String>) -> Self {
        Self {
            sequence: event.sequence,
            event_type: event.event_type.clone(),
            reason: reason.into(),
        }
    }
}

impl ProjectionError {
    /// [`ProjectionError::Apply`] for `projection` over `stream`.
    pub fn apply(stream: &StreamId, projection: &str, source: ApplyError) -> Self {
        Self::Apply {
            stream: stream.to_string(),
            projection: projection.to_owned(),
            source,
        }
    }
}

/// Why a projection run failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ProjectionError {
    /// Reading the stream failed.
    #[error(transparent)]
    Store(#[from] StoreError),

    /// The projection refused one of the stream's events: the stream holds data this
    /// projection cannot fold (written before a rule existed, or by another tool). The event
    /// is named by `source`; it will be refused on every run, so retrying does not help.
    #[error("stream {stream} cannot be folded by projection {projection}: {source}")]
    Apply {
        /// The stream, as `domain/entity/instance`.
        stream: String,
        projection: String,
        #[source]
        source: ApplyError,
    },

    /// The projection's name breaks the naming rules (see `validate_projection_name`).
    #[error("invalid projection name {projection:?}: {reason}")]
    InvalidName { projection: String, reason: String },

    /// The folded state could not be turned into JSON (a `Serialize` impl failed, or a map
    /// with non-string keys).
    #[error("projection {projection}: its state cannot be serialized: {source}")]
    State {
        projection: String,
        #[source]
        source: serde_json::Error,
    },
}
