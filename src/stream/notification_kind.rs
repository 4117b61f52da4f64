//! Which notification an append raises: a stream came into being, or an event was appended.
//! In the core because notifications and the dead letters of the ones refused both name it.

use serde::{Deserialize, Serialize};

/// Which notification: a stream came into being, or an event was appended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum NotificationKind {
    /// Raised once per stream, with its first event.
    NewEntity,
    /// Raised for every event.
    NewEvent,
    /// Raised once when a stream is erased (about no event: its `sequenceNumber` is the
    /// version the stream had, and it carries no payload).
    DeletedEntity,
}

impl NotificationKind {
    /// The name used in ids and in `notificationKind`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::NewEntity => "NewEntity",
            Self::NewEvent => "NewEvent",
            Self::DeletedEntity => "DeletedEntity",
        }
    }
}
