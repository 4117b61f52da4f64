//! The dead-letter contract: where the notifications a topic refused for good are kept, with
//! the reason, so one bad notification never holds back the ones after it and nothing is lost.
//!
//! Guarantees every [`DeadLetterStore`] gives:
//! - **Idempotent.** A letter's key is the notification's deterministic id, so a notification
//!   refused again replaces its own letter (latest reason and time); it never makes a second.
//! - **Small and rebuildable.** A letter holds what identifies the notification (stream,
//!   sequence, kind) and why it was refused, not the notification itself: the stored event is
//!   the truth, and a re-drive builds the same notification from it again.
//! - `list` pages in id order; rows a backend cannot read back are reported, not dropped.

use async_trait::async_trait;
use serde::Serialize;
use time::OffsetDateTime;
use uuid::Uuid;

use super::{KeyError, NotificationKind, StoreError, StreamId, UnreadableEntry};

/// One notification the topic refused for good.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct DeadLetter {
    /// The notification's id.
    pub id: Uuid,
    pub domain: String,
    pub entity: String,
    pub instance: String,
    pub sequence_number: u64,
    pub notification_kind: NotificationKind,
    /// The notification's `eventType` (`{Domain}.{Entity}.{EventType}` or `...NewEntity`).
    pub event_type: String,
    /// The topic's HTTP status (none when nothing could be sent).
    pub status: Option<u16>,
    /// The topic's error text (or why it could not be sent).
    pub reason: String,
    /// The topic, without query string.
    pub endpoint: String,
    /// When it was (last) refused.
    #[serde(with = "time::serde::rfc3339")]
    pub dead_lettered_at: OffsetDateTime,
}
impl DeadLetter {
    /// The stream the notification is about.
    pub fn stream(&self) -> Result<StreamId, KeyError> {
        StreamId::new(&self.domain, &self.entity, &self.instance)
    }
}

/// A page of dead letters, in id order.
#[derive(Debug, Clone, Default)]
pub struct DeadLetterPage {
    pub letters: Vec<DeadLetter>,
    /// Rows met that are not dead letters this module wrote.
    pub unreadable: Vec<UnreadableEntry>,
    /// The last id of the page when more follow.
    pub next: Option<Uuid>,
}

/// Where a backend's dead letters are kept.
#[async_trait]
pub trait DeadLetterStore: Send + Sync {
    /// Records `letter`, replacing the letter of the same notification if there is one.
    async fn put(&self, letter: &DeadLetter) -> Result<(), StoreError>;
    /// The letter of notification `id`.
    async fn get(&self, id: Uuid) -> Result<Option<DeadLetter>, StoreError>;
    /// Up to `limit` letters with an id after `after`, in id order.
    async fn list(&self, after: Option<Uuid>, limit: usize) -> Result<DeadLetterPage, StoreError>;
    /// Forgets the letter of notification `id` (nothing when there is none).
    async fn remove(&self, id: Uuid) -> Result<(), StoreError>;
}
