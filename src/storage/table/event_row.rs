//! An event row as a query returns it, deserialized straight from the answer's JSON.
//!
//! A replay reads every row of a stream, so how a row is decoded is most of a replay's CPU.
//! Reading rows as generic property maps first builds a map of every property (the service's
//! own metadata and type annotations included) and then looks each one up again. [`EventRow`]
//! keeps only the properties an event is made of, as they stream past, and skips the rest
//! unparsed.
//!
//! Guarantees: [`EventRow::into_event`] accepts exactly what [`super::entity::encode_event`]
//! writes, with the same checks as every other read of a row (see `entity`): a missing or
//! mistyped property, a bad row key, event id or time, or data that is not JSON is reported as
//! an error naming it, never guessed at.

use std::borrow::Cow;
use std::fmt;

use serde::de::{Deserialize, Deserializer, IgnoredAny, MapAccess, Visitor};
use serde_json::value::RawValue;
use serde_json::Value;
use time::OffsetDateTime;
use uuid::Uuid;

use super::entity::{
    self, data_chunk_index, CAUSATION_ID, COMMENTARY, CORRELATION_ID, DATA, EVENT_ID, EVENT_TYPE,
    IDEMPOTENCY_KEY, MAX_DATA_CHUNKS, RECORDED, REQUEST_HASH, ROW_KEY, SCHEMA_VERSION, SOURCE, WHO,
};
use super::keys;
use crate::stream::{EventMetadata, RecordedEvent};

/// The properties of one event row, as read.
#[derive(Debug, Default)]
pub struct EventRow {
    row_key: Option<Value>,
    event_id: Option<Value>,
    event_type: Option<Value>,
    recorded: Option<Value>,
    schema_version: Option<Value>,
    correlation_id: Option<Value>,
    causation_id: Option<Value>,
    who: Option<Value>,
    source: Option<Value>,
    commentary: Option<Value>,
    idempotency_key: Option<Value>,
    request_hash: Option<Value>,
    /// `Data`, `Data01`, ... by chunk index.
    chunks: [Option<Value>; MAX_DATA_CHUNKS],
}

impl EventRow {
    /// The stored event.
    pub fn into_event(self) -> Result<RecordedEvent, String> {
        let row_key = entity::str_value(ROW_KEY, self.row_key.as_ref())?;
        let sequence = keys::parse_event_row_key(row_key)
            .ok_or_else(|| format!("{row_key:?} is not an event row key"))?;
        let event_id = entity::str_value(EVENT_ID, self.event_id.as_ref())?;
        let event_id = Uuid::parse_str(event_id)
            .map_err(|_| format!("event {sequence}: {EVENT_ID} is not a UUID: {event_id:?}"))?;
        let data = join_chunks(sequence, self.chunks)?;
        let data = RawValue::from_string(data)
            .map_err(|e| format!("event {sequence}: data is not JSON: {e}"))?;
        let schema_version = match self.schema_version {
            None | Some(Value::Null) => None,
            Some(value) => Some(
                u32::try_from(entity::u64_value(SCHEMA_VERSION, Some(&value))?)
                    .map_err(|_| format!("event {sequence}: {SCHEMA_VERSION} is out of range"))?,
            ),
        };
        let timestamp: OffsetDateTime = entity::time_value(RECORDED, self.recorded.as_ref())?;
        Ok(RecordedEvent {
            sequence,
            event_id,
            event_type: into_string(EVENT_TYPE, self.event_type)?,
            data,
            timestamp,
            metadata: EventMetadata {
                correlation_id: optional_string(CORRELATION_ID, self.correlation_id)?,
                causation_id: optional_string(CAUSATION_ID, self.causation_id)?,
                who: optional_string(WHO, self.who)?,
                source: optional_string(SOURCE, self.source)?,
                commentary: optional_string(COMMENTARY, self.commentary)?,
                schema_version,
                idempotency_key: optional_string(IDEMPOTENCY_KEY, self.idempotency_key)?,
                request_hash: optional_string(REQUEST_HASH, self.request_hash)?,
            },
        })
    }
}

/// The data text: the chunks in order, up to the first missing one. The first must be there.
fn join_chunks(sequence: u64, chunks: [Option<Value>; MAX_DATA_CHUNKS]) -> Result<String, String> {
    let mut chunks = chunks.into_iter().enumerate();
    let mut data = match chunks.next() {
        Some((_, Some(Value::String(first)))) => first,
        Some((_, Some(other))) => {
            return Err(format!("event {sequence}: {DATA} is not a string: {other}"))
        }
        _ => return Err(format!("event {sequence}: {DATA} is missing")),
    };
    for (index, chunk) in chunks {
        match chunk {
            Some(Value::String(chunk)) => data.push_str(&chunk),
            Some(other) => {
                return Err(format!(
                    "event {sequence}: {} is not a string: {other}",
                    entity::data_property(index)
                ))
            }
            None => break,
        }
    }
    Ok(data)
}

fn into_string(name: &str, value: Option<Value>) -> Result<String, String> {
    match value {
        Some(Value::String(s)) => Ok(s),
        other => entity::str_value(name, other.as_ref()).map(str::to_owned),
    }
}

fn optional_string(name: &str, value: Option<Value>) -> Result<Option<String>, String> {
    match value {
        None | Some(Value::Null) => Ok(None),
        other => into_string(name, other).map(Some),
    }
}

impl<'de> Deserialize<'de> for EventRow {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_map(RowVisitor)
    }
}

struct RowVisitor;

impl<'de> Visitor<'de> for RowVisitor {
    type Value = EventRow;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a Table storage entity")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<EventRow, A::Error> {
        let mut row = EventRow::default();
        while let Some(name) = map.next_key::<Cow<'de, str>>()? {
            let slot = match name.as_ref() {
                ROW_KEY => &mut row.row_key,
                EVENT_ID => &mut row.event_id,
                EVENT_TYPE => &mut row.event_type,
                RECORDED => &mut row.recorded,
                SCHEMA_VERSION => &mut row.schema_version,
                CORRELATION_ID => &mut row.correlation_id,
                CAUSATION_ID => &mut row.causation_id,
                WHO => &mut row.who,
                SOURCE => &mut row.source,
                COMMENTARY => &mut row.commentary,
                IDEMPOTENCY_KEY => &mut row.idempotency_key,
                REQUEST_HASH => &mut row.request_hash,
                other => match data_chunk_index(other) {
                    Some(index) => &mut row.chunks[index],
                    None => {
                        map.next_value::<IgnoredAny>()?;
                        continue;
                    }
                },
            };
            *slot = Some(map.next_value::<Value>()?);
        }
        Ok(row)
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn row(value: Value) -> Result<RecordedEvent, String> {
        serde_json::from_value::<EventRow>(value)
            .map_err(|e| e.to_string())?
            .into_event()
    }

    fn good() -> Value {
        json!({
            "odata.etag": "W/\"x\"",
            "PartitionKey": "Bank|Account|1",
            "RowKey": keys::event_row_key(7),
            "Timestamp": "2024-01-01T00:00:00.0000000Z",
            "EventId": "6c1e7d1a-3f77-4a53-9c55-0c7a9d4c1e20",
            "EventType": "Deposited",
            "Recorded@odata.type": "Edm.DateTime",
            "Recorded": "2024-01-01T00:00:00.1234567Z",
            "CorrelationId": "c-1",
            "SchemaVersion@odata.type": "Edm.Int64",
            "SchemaVersion": "2",
            "Data": "{\"amount\":",
            "Data01": "\"12.50\"}",
            "Unrelated": {"nested": [1, 2]},
        })
    }

    #[test]
    fn reads_what_is_written_and_skips_the_rest() {
        let event = row(good()).unwrap();
        assert_eq!(event.sequence, 7);
        assert_eq!(event.event_type, "Deposited");
        assert_eq!(event.data.get(), r#"{"amount":"12.50"}"#);
        assert_eq!(event.metadata.correlation_id.as_deref(), Some("c-1"));
        assert_eq!(event.metadata.causation_id, None);
        assert_eq!(event.metadata.schema_version, Some(2));
        assert_eq!(event.timestamp.nanosecond(), 123_456_700);
    }

    #[test]
    fn a_row_of_another_shape_is_named() {
        let broken = |edit: &dyn Fn(&mut serde_json::Map<String, Value>)| {
            let mut value = good();
            edit(value.as_object_mut().unwrap());
            row(value).unwrap_err()
        };
        assert!(broken(&|r| {
            r.remove("Data");
        })
        .contains("Data is missing"));
        assert!(broken(&|r| {
            r.insert("Data".into(), json!(5));
        })
        .contains("Data is not a string"));
        assert!(broken(&|r| {
            r.insert("Data01".into(), json!("garbage"));
        })
        .contains("data is not JSON"));
        assert!(broken(&|r| {
            r.insert("RowKey".into(), json!("HEAD"));
        })
        .contains("not an event row key"));
        assert!(broken(&|r| {
            r.insert("EventId".into(), json!("nope"));
        })
        .contains("EventId is not a UUID"));
        assert!(broken(&|r| {
            r.remove("Recorded");
        })
        .contains("Recorded is missing"));
        assert!(broken(&|r| {
            r.insert("SchemaVersion".into(), json!("99999999999"));
        })
        .contains("SchemaVersion is out of range"));
    }
}
