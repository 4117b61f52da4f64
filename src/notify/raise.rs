//! Raising notifications: from a stored event to the notifications it raises, each one
//! publishable. When the event data would make a notification exceed Event Grid's per-event
//! limit ([`MAX_EVENT_BYTES`]) in either schema, the payload is left out and replaced by a
//! reference to the read that returns the event ([`Notification::without_payload`]).
//!
//! This sits above both [`super::notification`] (what a notification says) and
//! [`super::schema`] (how it is written), since the size rule needs the encoders.

use super::notification::{
    notification_id, subject, Notification, NotificationData, NotificationKind, MAX_EVENT_BYTES,
    NEW_ENTITY_SUFFIX, SOURCE_PREFIX,
};
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
        let notification = Self {
            id: notification_id(stream, event.sequence, kind),
            event_type: format!("{}.{}.{suffix}", stream.domain(), stream.entity()),
            subject: subject(stream),
            source: format!("{SOURCE_PREFIX}/{}/{}", stream.domain(), stream.entity()),
            time: event.timestamp,
            data: NotificationData {
                notification_kind: kind,
                domain: stream.domain().to_owned(),
                entity: stream.entity().to_owned(),
                instance: stream.instance().to_owned(),
                instance_key: stream.instance().to_owned(),
                sequence_number: event.sequence,
                event_type: event.event_type.clone(),
                event_id: event.event_id,
                correlation_id: event.metadata.correlation_id.clone(),
                causation_id: event.metadata.causation_id.clone(),
                timestamp: event.timestamp,
                payload: Some(event.data.clone()),
                payload_too_large: false,
                payload_ref: None,
            },
        };
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
