//! Raising notifications: from a stored event to the notifications it raises, each one
//! publishable. When the event data would make a notification exceed Event Grid's per-event
//! limit ([`MAX_EVENT_BYTES`]) in either schema, the payload is left out and replaced by a
//! reference to the read that returns the event ([`Notification::without_payload`]).
//!
//! This sits above both [`super::notification`] (what a notification says) and
//! [`super::schema`] (how it is written), since the size rule needs the encoders.

use super::notification::{Notification, NotificationKind, MAX_EVENT_BYTES, NEW_ENTITY_SUFFIX};
use super::schema::NotificationSchema;
use crate::stream::{RecordedEvent, StreamId};

/// Bytes a request body adds around a single event (`[` and `]`).
const ARRAY_OVERHEAD: usize = 2;

impl Notification {
    /// The notification that a stream was created, raised with its first event.
    pub fn new_entity(stream: &StreamId, event: &RecordedEvent) -> Self {
        Self::build(NotificationKind::NewEntity, stream, event)
    }

    /// The notification that an event was appended.
    pub fn new_event(stream: &StreamId, event: &RecordedEvent) -> Self {
        Self::build(NotificationKind::NewEvent, stream, event)
    }

    /// A notification of `kind` about `event`, with the payload left out when it would not fit
    /// in one Event Grid event.
    pub fn build(kind: NotificationKind, stream: &StreamId, event: &RecordedEvent) -> Self {
        let suffix = match kind {
            NotificationKind::NewEntity => NEW_ENTITY_SUFFIX,
            NotificationKind::DeletedEntity => super::notification::DELETED_ENTITY_SUFFIX,
            NotificationKind::NewEvent => event.event_type.as_str(),
        };
        let mut notification = Self::about(
            kind,
            stream,
            event.sequence,
            suffix,
            (event.event_type.clone(), event.event_id),
            event.timestamp,
        );
        notification.data.correlation_id = event.metadata.correlation_id.clone();
        notification.data.causation_id = event.metadata.causation_id.clone();
        notification.data.payload = Some(event.data.clone());
        if notification.fits() {
            notification
        } else {
            notification.without_payload()
        }
    }

    /// True when the encoded notification, alone in a request body, is within
    /// [`MAX_EVENT_BYTES`] in every schema.
    pub fn fits(&self) -> bool {
        [
            NotificationSchema::EventGridEvent,
            NotificationSchema::CloudEvent,
        ]
        .iter()
        .all(|schema| {
            schema
                .encode(self)
                .map(|bytes| bytes.len() + ARRAY_OVERHEAD <= MAX_EVENT_BYTES)
                .unwrap_or(false)
        })
    }
}

/// The notifications of one append, in order: `NewEntity` (when the append starts the stream
/// and `raise.entity_creation`), then one `NewEvent` per event (when `raise.event`).
pub fn notifications_for(
    stream: &StreamId,
    events: &[RecordedEvent],
    raise: RaiseSwitches,
) -> Vec<Notification> {
    let mut out = Vec::new();
    for event in events {
        if raise.entity_creation && event.sequence == 1 {
            out.push(Notification::new_entity(stream, event));
        }
        if raise.event {
            out.push(Notification::new_event(stream, event));
        }
    }
    out
}

/// Which notifications are raised (the seed's `RaiseEntityCreationNotification` and
/// `RaiseEventNotification`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct RaiseSwitches {
    pub entity_creation: bool,
    pub event: bool,
}

impl RaiseSwitches {
    pub const ALL: Self = Self {
        entity_creation: true,
        event: true,
    };
    pub const NONE: Self = Self {
        entity_creation: false,
        event: false,
    };

    /// True when at least one kind of notification is raised.
    pub fn any(self) -> bool {
        self.entity_creation || self.event
    }
}
