//! Events as written by a caller ([`NewEvent`]) and as read back ([`RecordedEvent`]).
//!
//! Event data is kept as the JSON text the caller gave (`RawValue`), byte for byte: amounts of
//! money never pass through a floating-point number on their way to storage and back.

use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use time::OffsetDateTime;
use uuid::Uuid;

/// Longest event type name, in characters.
pub const MAX_EVENT_TYPE_LEN: usize = 128;

/// Who and what caused an event: stored with it, returned with it, never interpreted by the
/// store.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct EventMetadata {
    /// Ties together every event caused by one business request.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub correlation_id: Option<String>,
    /// The id of the event or command that caused this one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub causation_id: Option<String>,
    /// The user or system on whose behalf the event was written.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub who: Option<String>,
    /// The application or function that wrote it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<String>,
    /// Free text for people reading the history.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub commentary: Option<String>,
    /// Version of the event's data schema, for upcasting old events.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub schema_version: Option<u32>,
    /// The client's `Idempotency-Key` of the command that wrote the event (see
    /// `crate::projection::Idempotency`); set by the command executor, never by a caller.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub idempotency_key: Option<String>,
    /// The hash of the canonical request of that command, so a retry with the same key but
    /// another request is recognised as such.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request_hash: Option<String>,
}

/// An event to append.
#[derive(Debug, Clone)]
pub struct NewEvent {
    /// Identifies the event; the same id sent twice makes the second append a no-op.
    pub event_id: Uuid,
    pub event_type: String,
    /// The event's data as JSON text, stored exactly as given.
    pub data: Box<RawValue>,
    pub metadata: EventMetadata,
}

impl NewEvent {
    /// An event with a fresh random id and the data serialized from `data`.
    pub fn new<T: Serialize>(
        event_type: impl Into<String>,
        data: &T,
    ) -> Result<Self, serde_json::Error> {
        Ok(Self::from_raw(
            event_type,
            serde_json::value::to_raw_value(data)?,
        ))
    }

    /// An event with a fresh random id and data that is already JSON text.
    pub fn from_raw(event_type: impl Into<String>, data: Box<RawValue>) -> Self {
        Self {
            event_id: Uuid::new_v4(),
            event_type: event_type.into(),
            data,
            metadata: EventMetadata::default(),
        }
    }

    pub fn with_id(mut self, event_id: Uuid) -> Self {
        self.event_id = event_id;
        self
    }

    pub fn with_metadata(mut self, metadata: EventMetadata) -> Self {
        self.metadata = metadata;
        self
    }

    /// Checks the event type: 1 to 128 ASCII letters, digits, `.`, `-` or `_`, starting with a
    /// letter (it becomes part of Event Grid event types).
    pub fn validate_event_type(event_type: &str) -> Result<(), String> {
        let mut chars = event_type.chars();
        match chars.next() {
            None => return Err("event type must not be empty".into()),
            Some(c) if !c.is_ascii_alphabetic() => {
                return Err(format!(
                    "event type {event_type:?} must start with an ASCII letter"
                ))
            }
            Some(_) => {}
        }
        if !chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_')) {
            return Err(format!(
                "event type {event_type:?} may contain only ASCII letters, digits, '.', '-' and '_'"
            ));
        }
        if event_type.len() > MAX_EVENT_TYPE_LEN {
            return Err(format!(
                "event type must be at most {MAX_EVENT_TYPE_LEN} characters"
            ));
        }
        Ok(())
    }
}

/// An event as stored: its place in the stream and when it was written.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RecordedEvent {
    /// Position in the stream: 1 for the first event, no gaps.
    pub sequence: u64,
    pub event_id: Uuid,
    pub event_type: String,
    pub data: Box<RawValue>,
    /// When the append that wrote it was made (UTC). Every event of one append shares it.
    #[serde(with = "time::serde::rfc3339")]
    pub timestamp: OffsetDateTime,
    pub metadata: EventMetadata,
}

impl RecordedEvent {
    /// Deserializes the event's data into `T`.
    pub fn data_as<'a, T: Deserialize<'a>>(&'a self) -> Result<T, serde_json::Error> {
        serde_json::from_str(self.data.get())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn event_types() {
        assert!(NewEvent::validate_event_type("Deposited").is_ok());
        assert!(NewEvent::validate_event_type("bank.v2-Deposit_x").is_ok());
        for bad in ["", "1x", "a b", "a/b", "é"] {
            assert!(NewEvent::validate_event_type(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn data_is_kept_as_text() {
        let raw = RawValue::from_string(r#"{"amount": 0.10000000000000000001}"#.into()).unwrap();
        let e = NewEvent::from_raw("Deposited", raw);
        assert_eq!(e.data.get(), r#"{"amount": 0.10000000000000000001}"#);
    }
}
