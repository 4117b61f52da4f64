//! The two wire schemas a notification can be published in, and decoding them back on the
//! receiving side (the Projector's Event Grid trigger).
//!
//! - [`NotificationSchema::EventGridEvent`] (the default): `id`, `subject`, `eventType`,
//!   `eventTime`, `data`, `dataVersion`. `topic` and `metadataVersion` are left out: Event Grid
//!   stamps them itself, and a `topic` that does not match the topic's resource id is refused.
//! - [`NotificationSchema::CloudEvent`]: CloudEvents 1.0 JSON, `specversion: "1.0"`, `id`,
//!   `source`, `type`, `time`, `subject`, `datacontenttype: "application/json"`, `data`; a batch
//!   is sent as `application/cloudevents-batch+json; charset=utf-8`.
//!
//! Why our own serde types rather than `azure_messaging_eventgrid::Event<T>`: that crate (0.21)
//! has only the Event Grid schema, always serializes `"topic": null` and `"metadataVersion"`,
//! and takes `data` as a typed value (the event data would be parsed and re-serialized instead
//! of passed through byte for byte). These structs borrow from the [`Notification`], so
//! encoding copies nothing but the output.
//!
//! Encoding is compact JSON (no whitespace), so the byte count the publisher batches by is the
//! byte count Event Grid measures.

use std::str::FromStr;

use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use serde_json::Value;
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

use super::notification::{Notification, NotificationData, DATA_VERSION, SOURCE_PREFIX};

/// The CloudEvents version written.
pub const CLOUDEVENTS_SPEC_VERSION: &str = "1.0";
/// `datacontenttype` of every CloudEvent written (the data is JSON).
pub const DATA_CONTENT_TYPE: &str = "application/json";
/// Content type of a batch of Event Grid schema events.
pub const EVENT_GRID_BATCH_CONTENT_TYPE: &str = "application/json; charset=utf-8";
/// Content type of a batch of CloudEvents (structured, JSON batch format).
pub const CLOUDEVENTS_BATCH_CONTENT_TYPE: &str =
    "application/cloudevents-batch+json; charset=utf-8";

/// Which event schema notifications are published in (setting `NotificationSchema`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub enum NotificationSchema {
    #[default]
    EventGridEvent,
    /// CloudEvents 1.0, JSON.
    CloudEvent,
}

impl NotificationSchema {
    /// The name used in settings.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::EventGridEvent => "EventGridEvent",
            Self::CloudEvent => "CloudEvent",
        }
    }

    /// The `Content-Type` of a published batch.
    pub fn batch_content_type(self) -> &'static str {
        match self {
            Self::EventGridEvent => EVENT_GRID_BATCH_CONTENT_TYPE,
            Self::CloudEvent => CLOUDEVENTS_BATCH_CONTENT_TYPE,
        }
    }

    /// One notification as compact JSON in this schema.
    pub fn encode(self, notification: &Notification) -> Result<Vec<u8>, serde_json::Error> {
        match self {
            Self::EventGridEvent => serde_json::to_vec(&EventGridEventOut::from(notification)),
            Self::CloudEvent => serde_json::to_vec(&CloudEventOut::from(notification)),
        }
    }

    /// A JSON array of notifications in this schema (a request body), without size checks.
    pub fn encode_batch(
        self,
        notifications: &[Notification],
    ) -> Result<Vec<u8>, serde_json::Error> {
        let encoded = notifications
            .iter()
            .map(|n| self.encode(n))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(join_array(encoded.iter().map(Vec::as_slice)))
    }
}

impl FromStr for NotificationSchema {
    type Err = String;

    /// Case-insensitive; `CloudEvents` and `CloudEventSchemaV1_0` (Event Grid's own name) are
    /// accepted for `CloudEvent`, `EventGridSchema` for `EventGridEvent`.
    fn from_str(value: &str) -> Result<Self, Self::Err> {
        let v = value.trim().to_ascii_lowercase();
        match v.as_str() {
            "eventgridevent" | "eventgridschema" => Ok(Self::EventGridEvent),
            "cloudevent" | "cloudevents" | "cloudeventschemav1_0" => Ok(Self::CloudEvent),
            _ => Err(format!(
                "{value:?} is not a notification schema (use EventGridEvent or CloudEvent)"
            )),
        }
    }
}

/// `[` + parts joined by `,` + `]`: the body of a batch whose events are already encoded.
pub fn join_array<'a>(parts: impl IntoIterator<Item = &'a [u8]>) -> Vec<u8> {
    let mut body = vec![b'['];
    for (i, part) in parts.into_iter().enumerate() {
        if i > 0 {
            body.push(b',');
        }
        body.extend_from_slice(part);
    }
    body.push(b']');
    body
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct EventGridEventOut<'a> {
    id: String,
    subject: &'a str,
    event_type: &'a str,
    #[serde(with = "time::serde::rfc3339")]
    event_time: OffsetDateTime,
    data: &'a NotificationData,
    data_version: &'a str,
}

impl<'a> From<&'a Notification> for EventGridEventOut<'a> {
    fn from(n: &'a Notification) -> Self {
        Self {
            id: n.id.to_string(),
            subject: &n.subject,
            event_type: &n.event_type,
            event_time: n.time,
            data: &n.data,
            data_version: DATA_VERSION,
        }
    }
}

#[derive(Serialize)]
struct CloudEventOut<'a> {
    specversion: &'a str,
    id: String,
    source: &'a str,
    #[serde(rename = "type")]
    kind: &'a str,
    #[serde(with = "time::serde::rfc3339")]
    time: OffsetDateTime,
    subject: &'a str,
    datacontenttype: &'a str,
    data: &'a NotificationData,
}

impl<'a> From<&'a Notification> for CloudEventOut<'a> {
    fn from(n: &'a Notification) -> Self {
        Self {
            specversion: CLOUDEVENTS_SPEC_VERSION,
            id: n.id.to_string(),
            source: &n.source,
            kind: &n.event_type,
            time: n.time,
            subject: &n.subject,
            datacontenttype: DATA_CONTENT_TYPE,
            data: &n.data,
        }
    }
}

/// Why a received event is not a streamfold notification.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DecodeError {
    #[error("event is not JSON: {0}")]
    Json(#[from] serde_json::Error),
    #[error("event is not a JSON object")]
    NotAnObject,
    #[error("event has no {0:?}")]
    Missing(&'static str),
    #[error("event field {field:?} is invalid: {reason}")]
    Invalid { field: &'static str, reason: String },
}

/// The envelope fields of either schema; `data` stays text so the payload keeps its digits.
#[derive(Deserialize)]
struct EnvelopeIn {
    #[serde(default)]
    specversion: Option<String>,
    id: Option<String>,
    subject: Option<String>,
    #[serde(default, rename = "eventType")]
    event_type: Option<String>,
    #[serde(default, rename = "eventTime")]
    event_time: Option<String>,
    #[serde(default, rename = "type")]
    kind: Option<String>,
    #[serde(default)]
    source: Option<String>,
    #[serde(default)]
    time: Option<String>,
    data: Option<Box<RawValue>>,
}

impl Notification {
    /// Decodes one delivered event in either schema (CloudEvents when it has `specversion`),
    /// from its JSON text. Accepts the event, and its `data`, either as JSON or as a JSON
    /// string holding it (the Functions host may pass trigger data either way). Decoding from
    /// text keeps the payload byte for byte.
    pub fn from_event_slice(event: &[u8]) -> Result<Self, DecodeError> {
        let text = std::str::from_utf8(event).map_err(|e| DecodeError::Invalid {
            field: "event",
            reason: e.to_string(),
        })?;
        let unwrapped;
        let text = if text.trim_start().starts_with('"') {
            unwrapped = serde_json::from_str::<String>(text)?;
            unwrapped.as_str()
        } else {
            text
        };
        if !text.trim_start().starts_with('{') {
            return Err(DecodeError::NotAnObject);
        }
        let envelope: EnvelopeIn = serde_json::from_str(text)?;
        let raw = envelope.data.ok_or(DecodeError::Missing("data"))?;
        let data_text;
        let data_text = if raw.get().starts_with('"') {
            data_text = serde_json::from_str::<String>(raw.get())?;
            data_text.as_str()
        } else {
            raw.get()
        };
        let data: NotificationData =
            serde_json::from_str(data_text).map_err(|e| DecodeError::Invalid {
                field: "data",
                reason: e.to_string(),
            })?;
        let cloud = envelope.specversion.is_some();
        let (event_type, time, type_name, time_name) = if cloud {
            (envelope.kind, envelope.time, "type", "time")
        } else {
            (
                envelope.event_type,
                envelope.event_time,
                "eventType",
                "eventTime",
            )
        };
        let id = envelope.id.ok_or(DecodeError::Missing("id"))?;
        let id = id.parse().map_err(|e: uuid::Error| DecodeError::Invalid {
            field: "id",
            reason: e.to_string(),
        })?;
        let time = time.ok_or(DecodeError::Missing(time_name))?;
        let time = OffsetDateTime::parse(&time, &Rfc3339).map_err(|e| DecodeError::Invalid {
            field: time_name,
            reason: e.to_string(),
        })?;
        let source = match envelope.source {
            Some(source) if cloud => source,
            _ => format!("{SOURCE_PREFIX}/{}/{}", data.domain, data.entity),
        };
        Ok(Self {
            id,
            event_type: event_type.ok_or(DecodeError::Missing(type_name))?,
            subject: envelope.subject.ok_or(DecodeError::Missing("subject"))?,
            source,
            time,
            data,
        })
    }

    /// [`Notification::from_event_slice`] for an event already parsed (numbers in the payload
    /// are then only as exact as `serde_json::Value` keeps them).
    pub fn from_event_json(event: &Value) -> Result<Self, DecodeError> {
        Self::from_event_slice(event.to_string().as_bytes())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::notify::notification::NotificationKind;
    use crate::stream::{EventMetadata, RecordedEvent, StreamId};
    use time::macros::datetime;
    use uuid::Uuid;

    fn notification() -> Notification {
        let event = RecordedEvent {
            sequence: 1,
            event_id: Uuid::nil(),
            event_type: "Opened".into(),
            data: RawValue::from_string(
                r#"{"owner":"Ann","amount":0.10000000000000000001}"#.into(),
            )
            .unwrap(),
            timestamp: datetime!(2024-05-01 10:00:00 UTC),
            metadata: EventMetadata::default(),
        };
        Notification::new_event(&StreamId::new("Bank", "Account", "42").unwrap(), &event)
    }

    #[test]
    fn event_grid_shape() {
        let n = notification();
        let v: Value =
            serde_json::from_slice(&NotificationSchema::EventGridEvent.encode(&n).unwrap())
                .unwrap();
        let mut keys: Vec<_> = v.as_object().unwrap().keys().cloned().collect();
        keys.sort();
        assert_eq!(
            keys,
            [
                "data",
                "dataVersion",
                "eventTime",
                "eventType",
                "id",
                "subject"
            ]
        );
        assert_eq!(v["eventTime"], "2024-05-01T10:00:00Z");
        assert_eq!(v["data"]["sequenceNumber"], 1);
        assert_eq!(v["data"]["correlationId"], Value::Null);
    }

    #[test]
    fn cloud_event_shape() {
        let n = notification();
        let bytes = NotificationSchema::CloudEvent.encode(&n).unwrap();
        let v: Value = serde_json::from_slice(&bytes).unwrap();
        assert_eq!(v["specversion"], "1.0");
        assert_eq!(v["type"], "Bank.Account.Opened");
        assert_eq!(v["source"], "/streamfold/Bank/Account");
        assert_eq!(v["datacontenttype"], "application/json");
        assert!(v.get("topic").is_none());
        // The payload is passed through as text: no float rounding.
        let text = String::from_utf8(bytes).unwrap();
        assert!(text.contains(r#""payload":{"owner":"Ann","amount":0.10000000000000000001}"#));
    }

    #[test]
    fn both_schemas_decode_back() {
        let n = notification();
        for schema in [
            NotificationSchema::EventGridEvent,
            NotificationSchema::CloudEvent,
        ] {
            let v: Value = serde_json::from_slice(&schema.encode(&n).unwrap()).unwrap();
            let back = Notification::from_event_json(&v).unwrap();
            assert_eq!(back.id, n.id);
            assert_eq!(back.event_type, n.event_type);
            assert_eq!(back.source, n.source);
            assert_eq!(back.kind(), NotificationKind::NewEvent);
            let text = String::from_utf8(schema.encode(&n).unwrap()).unwrap();
            let exact = Notification::from_event_slice(text.as_bytes()).unwrap();
            assert_eq!(
                exact.data.payload.unwrap().get(),
                r#"{"owner":"Ann","amount":0.10000000000000000001}"#
            );
            // And as a JSON string holding the event.
            let wrapped = Value::String(v.to_string());
            assert_eq!(Notification::from_event_json(&wrapped).unwrap().id, n.id);
        }
    }

    #[test]
    fn schema_names() {
        assert_eq!(
            "cloudevent".parse::<NotificationSchema>(),
            Ok(NotificationSchema::CloudEvent)
        );
        assert_eq!(
            "EventGridEvent".parse::<NotificationSchema>(),
            Ok(NotificationSchema::EventGridEvent)
        );
        assert!("Avro".parse::<NotificationSchema>().is_err());
    }

    #[test]
    fn batch_is_a_json_array() {
        let n = notification();
        let body = NotificationSchema::CloudEvent
            .encode_batch(&[n.clone(), n])
            .unwrap();
        let v: Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(v.as_array().unwrap().len(), 2);
        assert_eq!(join_array(std::iter::empty()), b"[]");
    }
}
