//! What a notification says: the schema-independent shape of "a stream was created" and "an
//! event was appended", built from a stored event. It is what the [`super::NotificationSink`]
//! contract carries, so it lives with the core model; `crate::notify` raises, encodes and
//! publishes it.
//!
//! Guarantees:
//! - **Deterministic identity.** A notification's id is a UUID v5 under [`NOTIFICATION_NAMESPACE`]
//!   over the name `{domain}/{entity}/{instance}/{sequence}/{kind}` (UTF-8; no part can contain
//!   `/`, so the name is unambiguous). Publishing the same notification twice, from two
//!   processes or after a crash, yields the same id, so every receiver can drop duplicates.
//! - **Deterministic content.** Everything in a notification comes from the stored event (its
//!   time is the event's append time, not the publish time): a re-published notification is
//!   byte-for-byte the one sent before.
//! - **Always publishable.** When the event data would make the notification exceed Event
//!   Grid's per-event limit ([`MAX_EVENT_BYTES`]) in either schema, the payload is left out
//!   (by `crate::notify::raise`, which builds notifications and knows the encoders); the data then
//!   says `payloadTooLarge: true` and carries `payloadRef`, the path of the generic HTTP read
//!   that returns exactly that event.
//!
//! The names are the seed's: event type `{Domain}.{Entity}.NewEntity` (raised with the first
//! event of a stream) or `{Domain}.{Entity}.{EventType}`, subject
//! `eventsourcing/{Domain}/{Entity}/{Instance}`, and `instanceKey` in the data beside
//! `instance`. Because a user's event type may itself be called `NewEntity`, the data also
//! says which kind of notification it is (`notificationKind`).

use percent_encoding::{utf8_percent_encode, AsciiSet, NON_ALPHANUMERIC};
use serde::{Deserialize, Deserializer, Serialize};
use serde_json::value::RawValue;
use time::OffsetDateTime;
use uuid::Uuid;

pub use super::NotificationKind;
use super::StreamId;

/// The UUID namespace of notification ids (fixed forever: changing it breaks deduplication
/// across versions).
pub const NOTIFICATION_NAMESPACE: Uuid = Uuid::from_u128(0xeb47_2ac1_0f07_4fda_9261_800b_5125_89cb);
/// Event Grid's limit on one event and on one request, "1 MB", in bytes. Read as decimal
/// megabytes: 4.6 % below 1 MiB, it is safe whichever Event Grid means.
pub const MAX_EVENT_BYTES: usize = 1_000_000;
/// Prefix of every notification subject (the seed's).
pub const SUBJECT_PREFIX: &str = "eventsourcing";
/// Prefix of the CloudEvents `source` attribute: `/streamfold/{Domain}/{Entity}`.
pub const SOURCE_PREFIX: &str = "/streamfold";
/// Last part of the event type of a new-entity notification.
pub const NEW_ENTITY_SUFFIX: &str = "NewEntity";
/// Last part of the event type of an erased-stream notification (the seed's).
pub const DELETED_ENTITY_SUFFIX: &str = "DeletedEntity";
/// Version of the data shape (Event Grid `dataVersion`).
pub const DATA_VERSION: &str = "1.0";
/// Path of the generic stream read (`src/functions/streams.rs`) a payload reference points to.
pub const READ_PATH_PREFIX: &str = "/api/streams";

/// Characters escaped in a path segment of a payload reference: all but RFC 3986 unreserved.
const PATH_SEGMENT: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

/// The `data` of a notification, identical in both schemas (serialized in camelCase).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NotificationData {
    pub notification_kind: NotificationKind,
    pub domain: String,
    pub entity: String,
    pub instance: String,
    /// Same as `instance` (the seed's name for it).
    pub instance_key: String,
    pub sequence_number: u64,
    /// The stored event's type (for a new-entity notification: the first event's type).
    pub event_type: String,
    pub event_id: Uuid,
    pub correlation_id: Option<String>,
    pub causation_id: Option<String>,
    /// When the event was appended.
    #[serde(with = "time::serde::rfc3339")]
    pub timestamp: OffsetDateTime,
    /// The event data exactly as stored; absent when too large (see `payload_ref`).
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "present_raw"
    )]
    pub payload: Option<Box<RawValue>>,
    /// True when the payload was left out because of Event Grid's event size limit.
    #[serde(default, skip_serializing_if = "is_false")]
    pub payload_too_large: bool,
    /// With `payload_too_large`: the path (under the function app's base URL) of the read
    /// that returns this one event.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub payload_ref: Option<String>,
}

fn is_false(value: &bool) -> bool {
    !*value
}

/// A present `payload` is kept even when it is JSON `null` (an event's data may be `null`).
fn present_raw<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Box<RawValue>>, D::Error> {
    Box::<RawValue>::deserialize(d).map(Some)
}

/// One notification, ready to encode in either schema.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Notification {
    /// Deterministic (see the module documentation).
    pub id: Uuid,
    /// `{Domain}.{Entity}.NewEntity` or `{Domain}.{Entity}.{EventType}`.
    pub event_type: String,
    /// `eventsourcing/{Domain}/{Entity}/{Instance}`.
    pub subject: String,
    /// CloudEvents `source`: `/streamfold/{Domain}/{Entity}`.
    pub source: String,
    /// The event's append time.
    #[serde(with = "time::serde::rfc3339")]
    pub time: OffsetDateTime,
    pub data: NotificationData,
}

impl Notification {
    /// The notification of `kind` about event `sequence` of `stream` (of type `event_type`,
    /// id `event_id`, recorded at `time`), with the event's type ending the notification's
    /// type as `suffix` and nothing else set: no correlation, causation or payload.
    pub(crate) fn about(
        kind: NotificationKind,
        stream: &StreamId,
        sequence: u64,
        suffix: &str,
        (event_type, event_id): (String, Uuid),
        time: OffsetDateTime,
    ) -> Self {
        Self {
            id: notification_id(stream, sequence, kind),
            event_type: format!("{}.{}.{suffix}", stream.domain(), stream.entity()),
            subject: subject(stream),
            source: format!("{SOURCE_PREFIX}/{}/{}", stream.domain(), stream.entity()),
            time,
            data: NotificationData {
                notification_kind: kind,
                domain: stream.domain().to_owned(),
                entity: stream.entity().to_owned(),
                instance: stream.instance().to_owned(),
                instance_key: stream.instance().to_owned(),
                sequence_number: sequence,
                event_type,
                event_id,
                correlation_id: None,
                causation_id: None,
                timestamp: time,
                payload: None,
                payload_too_large: false,
                payload_ref: None,
            },
        }
    }

    /// The notification that `stream`, at `version`, was erased at `erased_at`: type
    /// `{Domain}.{Entity}.DeletedEntity`, the id deterministic over the stream and version (a
    /// retried erasure raises the same id), no payload (the events are gone).
    pub fn deleted_entity(stream: &StreamId, version: u64, erased_at: OffsetDateTime) -> Self {
        let kind = NotificationKind::DeletedEntity;
        // The event id is the notification's own (there is no event).
        let event = (
            DELETED_ENTITY_SUFFIX.to_owned(),
            notification_id(stream, version, kind),
        );
        Self::about(
            kind,
            stream,
            version,
            DELETED_ENTITY_SUFFIX,
            event,
            erased_at,
        )
    }

    /// Which notification this is.
    pub fn kind(&self) -> NotificationKind {
        self.data.notification_kind
    }

    /// The same notification with the payload replaced by a reference to the read that
    /// returns the event.
    pub fn without_payload(mut self) -> Self {
        self.data.payload = None;
        self.data.payload_too_large = true;
        self.data.payload_ref = Some(read_path(
            &self.data.domain,
            &self.data.entity,
            &self.data.instance,
            self.data.sequence_number,
        ));
        self
    }
}

/// The deterministic id of the `kind` notification about event `sequence` of `stream`.
pub fn notification_id(stream: &StreamId, sequence: u64, kind: NotificationKind) -> Uuid {
    let name = format!("{stream}/{sequence}/{}", kind.as_str());
    Uuid::new_v5(&NOTIFICATION_NAMESPACE, name.as_bytes())
}

/// `eventsourcing/{Domain}/{Entity}/{Instance}`.
pub fn subject(stream: &StreamId) -> String {
    format!(
        "{SUBJECT_PREFIX}/{}/{}/{}",
        stream.domain(),
        stream.entity(),
        stream.instance()
    )
}

/// `/api/streams/{domain}/{entity}/{instance}?fromSequence=N&toSequence=N`, the instance
/// percent-encoded as one path segment.
pub(crate) fn read_path(domain: &str, entity: &str, instance: &str, sequence: u64) -> String {
    let segment = |s: &str| utf8_percent_encode(s, PATH_SEGMENT).to_string();
    format!(
        "{READ_PATH_PREFIX}/{}/{}/{}?fromSequence={sequence}&toSequence={sequence}",
        segment(domain),
        segment(entity),
        segment(instance)
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::notify::raise::{notifications_for, RaiseSwitches};
    use crate::stream::EventMetadata;
    use crate::stream::RecordedEvent;
    use time::macros::datetime;

    fn event(sequence: u64, data: &str) -> RecordedEvent {
        RecordedEvent {
            sequence,
            event_id: Uuid::from_u128(sequence as u128),
            event_type: "Deposited".into(),
            data: RawValue::from_string(data.into()).unwrap(),
            timestamp: datetime!(2024-05-01 10:00:00.25 UTC),
            metadata: EventMetadata {
                correlation_id: Some("corr".into()),
                ..Default::default()
            },
        }
    }

    fn stream() -> StreamId {
        StreamId::new("Bank", "Account", "ACC 1 ü%").unwrap()
    }

    #[test]
    fn names_follow_the_seed() {
        let n = Notification::new_event(&stream(), &event(3, r#"{"amount":"1.10"}"#));
        assert_eq!(n.event_type, "Bank.Account.Deposited");
        assert_eq!(n.subject, "eventsourcing/Bank/Account/ACC 1 ü%");
        assert_eq!(n.data.instance_key, "ACC 1 ü%");
        assert_eq!(
            n.data.payload.as_ref().unwrap().get(),
            r#"{"amount":"1.10"}"#
        );
        let e = Notification::new_entity(&stream(), &event(1, "{}"));
        assert_eq!(e.event_type, "Bank.Account.NewEntity");
        assert_eq!(e.kind(), NotificationKind::NewEntity);
    }

    #[test]
    fn ids_are_deterministic_and_distinct() {
        let a = Notification::new_event(&stream(), &event(3, "1"));
        let b = Notification::new_event(&stream(), &event(3, "2"));
        assert_eq!(a.id, b.id);
        assert_eq!(a.id.get_version_num(), 5);
        let other_seq = Notification::new_event(&stream(), &event(4, "1"));
        let other_kind = Notification::new_entity(&stream(), &event(3, "1"));
        let other_stream = Notification::new_event(
            &StreamId::new("Bank", "Account", "ACC 2").unwrap(),
            &event(3, "1"),
        );
        assert_ne!(a.id, other_seq.id);
        assert_ne!(a.id, other_kind.id);
        assert_ne!(a.id, other_stream.id);
        // Pinned: other implementations must be able to compute the same id.
        assert_eq!(
            notification_id(
                &StreamId::new("Bank", "Account", "42").unwrap(),
                1,
                NotificationKind::NewEvent
            ),
            Uuid::new_v5(&NOTIFICATION_NAMESPACE, b"Bank/Account/42/1/NewEvent")
        );
    }

    #[test]
    fn oversized_payload_becomes_a_reference() {
        let big = format!("\"{}\"", "x".repeat(MAX_EVENT_BYTES));
        let n = Notification::new_event(&stream(), &event(7, &big));
        assert!(n.data.payload.is_none());
        assert!(n.data.payload_too_large);
        assert_eq!(
            n.data.payload_ref.as_deref(),
            Some("/api/streams/Bank/Account/ACC%201%20%C3%BC%25?fromSequence=7&toSequence=7")
        );
        assert!(n.fits());
    }

    #[test]
    fn switches_choose_the_notifications() {
        let events = [event(1, "{}"), event(2, "{}")];
        let kinds = |raise| {
            notifications_for(&stream(), &events, raise)
                .iter()
                .map(|n| (n.kind(), n.data.sequence_number))
                .collect::<Vec<_>>()
        };
        use NotificationKind::*;
        assert_eq!(
            kinds(RaiseSwitches::ALL),
            [(NewEntity, 1), (NewEvent, 1), (NewEvent, 2)]
        );
        let only_entity = RaiseSwitches {
            entity_creation: true,
            event: false,
        };
        assert_eq!(kinds(only_entity), [(NewEntity, 1)]);
        assert!(kinds(RaiseSwitches::NONE).is_empty());
    }

    #[test]
    fn null_payload_survives_a_round_trip() {
        let n = Notification::new_event(&stream(), &event(2, "null"));
        let json = serde_json::to_string(&n).unwrap();
        let back: Notification = serde_json::from_str(&json).unwrap();
        assert_eq!(back.data.payload.unwrap().get(), "null");
        assert_eq!(back.id, n.id);
    }
}
