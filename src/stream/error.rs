//! The one error type of the storage contract: each variant carries what a caller needs to act
//! on it (the versions of a conflict, the key that was refused, the limit that was hit).

use uuid::Uuid;

use super::{ExpectedVersion, KeyError};

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// The stream was not at the version the append expected. Nothing was written.
    #[error("stream {stream}: expected version {expected}, but it is at {actual}")]
    WrongExpectedVersion {
        stream: String,
        expected: ExpectedVersion,
        /// The version found (0 = the stream does not exist).
        actual: u64,
    },

    /// A domain, entity type or instance key breaks a rule of this backend.
    #[error(transparent)]
    InvalidKey(#[from] KeyError),

    /// An event is malformed (bad event type, a duplicated event id within one append...).
    #[error("event {event_id}: {reason}")]
    InvalidEvent { event_id: Uuid, reason: String },

    /// One event is larger than the backend can store.
    #[error(
        "event {event_id} is {size} bytes; this backend stores events of at most {limit} bytes"
    )]
    EventTooLarge {
        event_id: Uuid,
        size: usize,
        limit: usize,
    },

    /// The append as a whole cannot be written atomically by this backend (too many events or
    /// too many bytes for one transaction). Nothing was written.
    #[error("an append of {events} events ({bytes} bytes) cannot be written atomically: {limit}")]
    AppendTooLarge {
        events: usize,
        bytes: usize,
        /// Which limit, in words ("at most 48 events per append", ...).
        limit: String,
    },

    /// An event id was used before for a different event or a different append.
    #[error("event id {event_id} was already used in stream {stream} for a different append")]
    EventIdReused { stream: String, event_id: Uuid },

    /// A listing's continuation token is not one this backend hands out.
    #[error("continuation {continuation:?} is not valid here: {reason}")]
    InvalidContinuation {
        continuation: String,
        reason: String,
    },

    /// An append must contain at least one event.
    #[error("an append must contain at least one event")]
    EmptyAppend,

    /// The storage service could not be reached or answered with a server error; the operation
    /// may or may not have been applied only where `maybe_applied` says so.
    #[error("storage unavailable: {message}")]
    Unavailable {
        message: String,
        /// True when a write may have reached storage before the failure (a retry with the same
        /// event ids is then the safe way to find out).
        maybe_applied: bool,
    },

    /// The storage service refused a value that came from the caller (a time outside its
    /// range, a property too large...): a client error, with the service's own status and code.
    /// Nothing was written.
    #[error("storage refused a value of the request for {target}: HTTP {status} ({code})")]
    InputRefused {
        /// The stream, table or container the request was for.
        target: String,
        /// The service's HTTP status (400, 413 or 416).
        status: u16,
        /// The service's error code (`OutOfRangeInput`, `PropertyValueTooLarge`...).
        code: String,
    },

    /// Stored data could not be understood: a bug or a hand-edited stream.
    #[error("stream {stream} is corrupt: {detail}")]
    Corrupt { stream: String, detail: String },

    /// The stream was erased ([`super::EventStore::erase`]): its tombstone refuses every
    /// append, so an erased stream never silently comes back. Nothing was written.
    #[error("stream {stream} was erased; it takes no more events")]
    StreamErased { stream: String },

    /// Configuration or credentials are wrong (authentication failed, a setting is missing).
    #[error("storage misconfigured: {0}")]
    Misconfigured(String),
}

impl StoreError {
    pub fn unavailable(message: impl Into<String>) -> Self {
        Self::Unavailable {
            message: message.into(),
            maybe_applied: false,
        }
    }
}
