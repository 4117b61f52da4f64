//! Errors of projections: [`ApplyError`] when one event cannot be folded, [`ProjectionError`]
//! for a whole run. A missing, stale or unreadable snapshot is never an error (the runner
//! replays instead), so nothing here is about snapshots.

use crate::stream::{RecordedEvent, StoreError};

/// A known event could not be applied (its data does not have the expected shape, a value is
/// out of range...). The projection's state is then unknown, so the run stops.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("event {sequence} ({event_type}): {reason}")]
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

/// Why a projection run failed.
#[derive(Debug, thiserror::Error)]
pub enum ProjectionError {
    /// Reading the stream failed.
    #[error(transparent)]
    Store(#[from] StoreError),

    /// The projection refused one of the stream's events.
    #[error("projection {projection}: {source}")]
    Apply {
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
