//! Dead letters: the notifications the topic refused for good, kept with the reason, so that
//! one bad notification never holds back the ones after it, and nothing is lost either.
//!
//! Guarantees:
//! - **Recorded before the stream moves on.** The dispatcher writes a dead letter before it
//!   moves the stream's notified mark past the refused notification (see [`super::dispatch`]);
//!   if the write fails, the stream stays pending and the notification is tried again later.
//! - **Idempotent.** A dead letter's key is the notification's deterministic id, so a
//!   notification refused again (a dispatch redone after a crash, a failed re-drive) replaces
//!   its own letter, with the latest reason and time; it never makes a second one.
//! - **Small and rebuildable.** A letter holds what identifies the notification (stream,
//!   sequence, kind) and why it was refused, not the notification itself: the stored event is
//!   the truth, and a re-drive builds the same notification from it again.
//!
//! The contract ([`DeadLetterStore`], [`DeadLetter`]) is the core's (`crate::stream`); its
//! adapters are in `crate::storage` (memory, and a table per storage account). What is here:
//! the letter of a refused notification.

use time::OffsetDateTime;

use super::notification::Notification;
use super::publisher::PublishError;
use crate::stream::DeadLetter;
#[cfg(doc)]
use crate::stream::DeadLetterStore;

/// Longest reason kept, in characters.
pub const MAX_REASON_CHARS: usize = 4_096;

impl DeadLetter {
    /// The letter of `notification`, refused with `error`, now.
    pub fn new(notification: &Notification, error: &PublishError) -> Self {
        let (endpoint, reason) = match error {
            PublishError::Rejected { endpoint, body, .. } => (endpoint.clone(), body.clone()),
            other => (String::new(), other.to_string()),
        };
        Self {
            id: notification.id,
            domain: notification.data.domain.clone(),
            entity: notification.data.entity.clone(),
            instance: notification.data.instance.clone(),
            sequence_number: notification.data.sequence_number,
            notification_kind: notification.kind(),
            event_type: notification.event_type.clone(),
            status: error.status(),
            reason: reason.chars().take(MAX_REASON_CHARS).collect(),
            endpoint,
            dead_lettered_at: OffsetDateTime::now_utc(),
        }
    }
}

/// A letter of a rejected `Deposited` notification about event `sequence` of
/// `Bank/Account/{instance}`, for the dead-letter stores' tests.
#[cfg(test)]
pub(crate) fn sample_letter(instance: &str, sequence: u64) -> DeadLetter {
    use crate::stream::{EventMetadata, RecordedEvent, StreamId};
    let stream = StreamId::new("Bank", "Account", instance).unwrap();
    let event = RecordedEvent {
        sequence,
        event_id: uuid::Uuid::new_v4(),
        event_type: "Deposited".into(),
        data: serde_json::value::RawValue::from_string("{}".into()).unwrap(),
        metadata: EventMetadata::default(),
        timestamp: OffsetDateTime::UNIX_EPOCH,
    };
    let notification = Notification::new_event(&stream, &event);
    let error = PublishError::Rejected {
        status: 400,
        body: "event 0: data is required".into(),
        endpoint: "http://topic/api/events".into(),
        batch: 0..1,
    };
    DeadLetter::new(&notification, &error)
}
