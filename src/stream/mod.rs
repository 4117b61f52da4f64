//! The event stream model: what a stream is, what an event is, and the contract every storage
//! backend honours.
//!
//! Nothing here knows about HTTP or Azure. A stream is identified by a [`StreamId`]
//! (domain / entity type / instance key); its events carry gap-free sequence numbers starting at
//! 1, and its *version* is the sequence number of its last event (0 for a stream that does not
//! exist). Every append states an [`ExpectedVersion`] and is all-or-nothing.
//!
//! The contracts every adapter implements live here, with the types they speak in:
//! [`EventStore`], [`Outbox`], [`SnapshotStore`], [`ReadModelStore`], [`DeadLetterStore`], and
//! [`NotificationSink`] (with the shape of a [`Notification`] and a [`PublishError`]; the
//! Event Grid publisher that implements it is in `crate::notify`).
//!
//! A wrapper of an event store (counting, notifying, injecting faults) implements
//! [`StoreDecorator`] and writes only the calls it changes.
//!
//! The helpers a backend uses to keep these contracts (checking an append, recognising a
//! retried one, recorded times) are defined here too, and published apart, in
//! `crate::backend`, for those who write an adapter.

mod dead_letter;
mod decorator;
mod error;
mod event;
mod expected;
mod id;
mod jitter;
pub mod notification;
mod notification_kind;
mod outbox;
mod publish_error;
pub(crate) mod read_model;
pub mod sink;
mod snapshot;
pub(crate) mod store;
mod stored_state;
mod turns;

pub use dead_letter::{DeadLetter, DeadLetterPage, DeadLetterStore};
pub use decorator::StoreDecorator;
pub use error::StoreError;
pub use event::{EventMetadata, NewEvent, RecordedEvent, MAX_EVENT_TYPE_LEN};
pub use expected::ExpectedVersion;
pub use id::{
    validate_instance_key, validate_name, EntityType, KeyError, StreamId, MAX_INSTANCE_KEY_BYTES,
    MAX_NAME_LEN,
};
#[doc(hidden)]
pub use jitter::random_unit;
pub use notification::{Notification, NotificationData};
pub use notification_kind::NotificationKind;
pub use outbox::{Outbox, PendingScan, PendingStream, UnreadableEntry};
pub use publish_error::PublishError;
pub(crate) use read_model::checked_page_size;
pub use read_model::{
    Checkpoint, ETag, ReadModelPage, ReadModelRow, ReadModelStore, ReadModelStoreError,
    SaveCondition, SaveOutcome, StateTooLarge, StoredCheckpoint, UNREADABLE_ROW_VERSION,
};
pub use sink::NotificationSink;
pub use snapshot::{Snapshot, SnapshotStore};
pub use store::Clock;
pub use store::{
    AppendOutcome, Erasure, EventStore, ReadRequest, StreamPage, StreamSlice, DEFAULT_PAGE_SIZE,
    TIME_PRECISION_NANOS,
};
// What only a backend needs; outside the crate, `crate::backend` names them.
pub(crate) use store::{
    append_time, check_key_continuation, check_new_events, earlier_append, end_page, recorded_time,
    StoredEventId, TimeLine,
};
pub use stored_state::{FoldFailure, StoredState, MAX_FAILURE_REASON_CHARS};
pub use turns::{StreamTurn, StreamTurns};
