//! The one stored form of a fold: a projection's state after events `1..=sequence` of one
//! stream, as a snapshot store keeps it ([`super::Snapshot`]) and as a read-model row keeps it
//! ([`super::Checkpoint`]). Both are this type, so the fold engine
//! (`crate::projection::fold`) resumes from either with the same checks.
//!
//! What each store keeps of it:
//! - a snapshot store keeps every field but `failure` (the runner never saves one), and always
//!   a `max_timestamp` (a snapshot without one is admitted for no point in time);
//! - a read-model store keeps `state`, `sequence`, `projection_version` and `failure`, and
//!   answers with `projection` set to the read model it was asked for and no `max_timestamp`
//!   (a row is always as of the latest event, so it is never resumed for a point in time).
//!
//! Storage formats did not change with this type: snapshots and rows written by earlier
//! versions load as they did.

use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use time::OffsetDateTime;

/// Longest reason kept in a failed row, in characters (a refusal can quote event data).
pub const MAX_FAILURE_REASON_CHARS: usize = 1000;

/// A projection's state after folding events `1..=sequence` of one stream.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct StoredState {
    /// The projection's name (for a read-model row: the read model's).
    pub projection: String,
    /// The projection's version when the state was written; a state of another version is
    /// never resumed from.
    pub projection_version: u32,
    /// Sequence number of the last event folded in (0 = none); for a failed row, the event
    /// the projection refused.
    pub sequence: u64,
    /// The latest timestamp among the events folded in, when kept. Timestamps need not grow
    /// with sequence numbers (writers' clocks differ), so this is a maximum, not the last
    /// event's timestamp: the state holds exactly the events written at or before any time
    /// from here on. `None`: not kept, and the state serves no point in time.
    #[serde(default, with = "time::serde::rfc3339::option")]
    pub max_timestamp: Option<OffsetDateTime>,
    /// The state as the projection serializes it.
    pub state: Box<RawValue>,
    /// Set when the projection refuses an event of the stream (read-model rows only): the
    /// state is then the projection's initial state at the refused event's sequence, and stays
    /// so (events never change) until another projection version recomputes it. Listings show
    /// such a row as unreadable rather than as a state.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failure: Option<FoldFailure>,
}

/// The event a read model's projection refused, for good.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FoldFailure {
    /// Its sequence number.
    pub sequence: u64,
    /// Why, in words (names the event type).
    pub reason: String,
}

impl StoredState {
    /// The row of a stream whose event `sequence` projection `projection` refuses: its
    /// `initial` state, at that sequence, with the reason.
    pub fn failed(
        projection: &str,
        initial: Box<RawValue>,
        projection_version: u32,
        sequence: u64,
        reason: &dyn std::fmt::Display,
    ) -> Self {
        Self {
            projection: projection.to_owned(),
            projection_version,
            sequence,
            max_timestamp: None,
            state: initial,
            failure: Some(FoldFailure {
                sequence,
                reason: reason
                    .to_string()
                    .chars()
                    .take(MAX_FAILURE_REASON_CHARS)
                    .collect(),
            }),
        }
    }
}

impl StoredState {
    /// What a read-model store keeps of this state as the row of `model`, and answers with:
    /// `projection` is `model`, and no `max_timestamp`.
    pub fn as_row_of(&self, model: &str) -> Self {
        Self {
            projection: model.to_owned(),
            max_timestamp: None,
            ..self.clone()
        }
    }
}

impl PartialEq for StoredState {
    fn eq(&self, other: &Self) -> bool {
        self.state.get() == other.state.get()
            && self.projection == other.projection
            && self.sequence == other.sequence
            && self.projection_version == other.projection_version
            && self.max_timestamp == other.max_timestamp
            && self.failure == other.failure
    }
}
