//! The rows an append writes (see the layout in [`super`]): the event rows, the stream header,
//! the event-id rows and the version check's empty merge, as the typed values they are written
//! from; `batch_request` writes them into the transaction's body without a property map.
//!
//! Guarantees:
//! - an event is encoded once per append, into its row's JSON properties ([`EncodedEvent`]):
//!   the property names, values and `@odata.type` annotations of module `entity`'s layout
//!   (`EventId`, `EventType`, `Recorded`, the metadata strings, `SchemaVersion`, the data in
//!   `Data`, `Data01`, ... chunks), so a row read back decodes to the same event. A retry of the
//!   append rewrites only the `Recorded` time, in place;
//! - an event that a Table entity cannot hold is refused by [`encode_event`] before anything
//!   is written: `InvalidEvent` for a metadata string over [`MAX_STRING_PROPERTY_UTF16`],
//!   `EventTooLarge` over [`MAX_ENTITY_BYTES`] as [`event_entity_size`] counts;
//! - [`AppendRow::json_bytes_bound`] is never below the length of the properties' JSON that
//!   [`AppendRow::write_json`] writes (the keys not counted).

use std::ops::Range;

use time::OffsetDateTime;
use uuid::Uuid;

use super::entity::{
    event_entity_size, metadata_strings, utf16_len, CREATED, DATA_PROPERTIES, EVENT_ID, EVENT_TYPE,
    FIRST_SEQUENCE, LAST_RECORDED, LAST_SEQUENCE, MAX_DATA_CHUNKS, MAX_ENTITY_BYTES,
    MAX_STRING_PROPERTY_UTF16, PARTITION_KEY, RECORDED, ROW_KEY, SCHEMA_VERSION, SEQUENCE, VERSION,
};
use super::json_members::{self, int64_bytes_bound, time_bytes_bound, Members};
use crate::stream::{NewEvent, StoreError};

/// The braces of a JSON object.
const OBJECT_BRACES_BYTES: usize = 2;
/// Longest JSON of a header row's properties.
const HEADER_JSON_BYTES_BOUND: usize = OBJECT_BRACES_BYTES
    + int64_bytes_bound(VERSION)
    + time_bytes_bound(CREATED)
    + time_bytes_bound(LAST_RECORDED);
/// Longest JSON of an event-id row's properties.
const EVENT_ID_JSON_BYTES_BOUND: usize = OBJECT_BRACES_BYTES
    + int64_bytes_bound(SEQUENCE)
    + int64_bytes_bound(FIRST_SEQUENCE)
    + int64_bytes_bound(LAST_SEQUENCE);
/// The JSON of an event row's properties besides its strings and data: the names, the event
/// id, the annotated `Recorded` and `SchemaVersion`, the punctuation of every member.
const EVENT_JSON_FIXED_BYTES: usize = 768;

/// An event encoded as its row's properties (without its keys, which depend on its sequence).
#[derive(Debug, Clone)]
pub struct EncodedEvent {
    pub event_id: Uuid,
    /// The properties as JSON object members (no braces).
    json: Vec<u8>,
    /// Where the text of the `Recorded` time is in `json`.
    recorded: Range<usize>,
}

impl EncodedEvent {
    /// Sets the time the event is recorded at (each attempt of an append takes its own).
    pub fn set_recorded(&mut self, recorded: OffsetDateTime) {
        let range = self.recorded.clone();
        match super::entity::time_text(recorded) {
            Some(text) => match self.json.get_mut(range.clone()) {
                Some(slot) if slot.len() == text.len() => slot.copy_from_slice(&text),
                _ => self.replace_recorded(range, &text),
            },
            None => {
                let text = super::entity::format_time(recorded);
                self.replace_recorded(range, text.as_bytes());
            }
        }
    }

    /// Puts `text` where the `Recorded` time's text is (it has another length).
    fn replace_recorded(&mut self, range: Range<usize>, text: &[u8]) {
        let start = range.start.min(self.json.len());
        let end = range.end.clamp(start, self.json.len());
        self.json.splice(start..end, text.iter().copied());
        self.recorded = start..start.saturating_add(text.len());
    }

    /// The entity the row is (keys and properties), as storage receives it: for checking what
    /// the encoding stores.
    #[cfg(any(test, feature = "fuzzing"))]
    pub fn entity(
        &self,
        partition_key: &str,
        row_key: &str,
    ) -> Result<super::entity::Properties, serde_json::Error> {
        let mut out = Vec::new();
        AppendRow::Event(self).write_json(&mut out, Some((partition_key, row_key)))?;
        serde_json::from_slice(&out)
    }
}

/// Encodes an event row's properties, refusing what a Table entity cannot hold. `recorded` is
/// the time it is recorded at unless [`EncodedEvent::set_recorded`] sets another.
pub fn encode_event(
    partition_key: &str,
    event: &NewEvent,
    recorded: OffsetDateTime,
) -> Result<EncodedEvent, StoreError> {
    let mut strings_bytes = json_members::string_bytes_bound(&event.event_type);
    for (name, value) in metadata_strings(&event.metadata) {
        if utf16_len(value) > MAX_STRING_PROPERTY_UTF16 {
            return Err(StoreError::InvalidEvent {
                event_id: event.event_id,
                reason: format!(
                    "metadata {name} is longer than {MAX_STRING_PROPERTY_UTF16} UTF-16 code units"
                ),
            });
        }
        strings_bytes = strings_bytes.saturating_add(json_members::string_bytes_bound(value));
    }
    let data = event.data.get();
    let entity_size = event_entity_size(partition_key, event);
    if entity_size > MAX_ENTITY_BYTES || super::entity::data_chunks(data).count() > MAX_DATA_CHUNKS
    {
        return Err(StoreError::EventTooLarge {
            event_id: event.event_id,
            size: entity_size,
            limit: MAX_ENTITY_BYTES,
        });
    }
    let mut json = Vec::with_capacity(
        EVENT_JSON_FIXED_BYTES
            .saturating_add(strings_bytes)
            .saturating_add(json_members::string_bytes_bound(data)),
    );
    let mut members = Members::new(&mut json);
    let unwritable = |error: serde_json::Error| StoreError::InvalidEvent {
        event_id: event.event_id,
        reason: format!("the event could not be written as JSON: {error}"),
    };
    members.uuid(EVENT_ID, &event.event_id);
    members
        .string(EVENT_TYPE, &event.event_type)
        .map_err(unwritable)?;
    let recorded = members.time(RECORDED, recorded);
    for (name, value) in metadata_strings(&event.metadata) {
        members.string(name, value).map_err(unwritable)?;
    }
    if let Some(schema_version) = event.metadata.schema_version {
        members.int64(SCHEMA_VERSION, u64::from(schema_version));
    }
    // The chunk count was checked above: every chunk has a name.
    for (name, chunk) in DATA_PROPERTIES.iter().zip(super::entity::data_chunks(data)) {
        members.string(name, chunk).map_err(unwritable)?;
    }
    Ok(EncodedEvent {
        event_id: event.event_id,
        json,
        recorded,
    })
}

/// The properties of one row an append writes, as the values they are written from.
#[derive(Debug, Clone)]
pub enum AppendRow<'a> {
    /// No properties: the merge that proves a row exists.
    Empty,
    /// The header of a stream at `version`, whose last event was recorded at `last_recorded`
    /// (`created` only when the append creates the stream).
    Header {
        version: u64,
        created: Option<OffsetDateTime>,
        last_recorded: OffsetDateTime,
    },
    /// An event's row.
    Event(&'a EncodedEvent),
    /// The event-id row of the event at `sequence`, written by the append that stored
    /// `first..=last`.
    EventId {
        sequence: u64,
        first: u64,
        last: u64,
    },
}

impl AppendRow<'_> {
    /// Writes the row as an entity body: a JSON object of its keys (`(PartitionKey, RowKey)`,
    /// for an insert) and its properties.
    pub fn write_json(
        &self,
        out: &mut Vec<u8>,
        keys: Option<(&str, &str)>,
    ) -> Result<(), serde_json::Error> {
        out.push(b'{');
        let mut members = Members::new(out);
        if let Some((partition_key, row_key)) = keys {
            members.string(PARTITION_KEY, partition_key)?;
            members.string(ROW_KEY, row_key)?;
        }
        match self {
            Self::Empty => {}
            Self::Header {
                version,
                created,
                last_recorded,
            } => {
                members.int64(VERSION, *version);
                if let Some(created) = created {
                    members.time(CREATED, *created);
                }
                members.time(LAST_RECORDED, *last_recorded);
            }
            Self::Event(event) => members.raw(&event.json),
            Self::EventId {
                sequence,
                first,
                last,
            } => {
                members.int64(SEQUENCE, *sequence);
                members.int64(FIRST_SEQUENCE, *first);
                members.int64(LAST_SEQUENCE, *last);
            }
        }
        out.push(b'}');
        Ok(())
    }

    /// An upper bound of the JSON length of the row's properties (without its keys).
    pub fn json_bytes_bound(&self) -> usize {
        match self {
            Self::Empty => OBJECT_BRACES_BYTES,
            Self::Header { .. } => Self::HEADER_JSON_BYTES_BOUND,
            Self::Event(event) => OBJECT_BRACES_BYTES + event.json.len(),
            Self::EventId { .. } => Self::EVENT_ID_JSON_BYTES_BOUND,
        }
    }

    /// The longest JSON of a header row's properties.
    pub const HEADER_JSON_BYTES_BOUND: usize = HEADER_JSON_BYTES_BOUND;
    /// The longest JSON of an event-id row's properties.
    pub const EVENT_ID_JSON_BYTES_BOUND: usize = EVENT_ID_JSON_BYTES_BOUND;
}

#[cfg(test)]
mod tests {
    use serde_json::value::RawValue;
    use serde_json::Value;

    use super::*;
    use crate::storage::table::entity::{self, Properties};
    use crate::storage::table::keys;

    fn event(data: &str) -> NewEvent {
        NewEvent::from_raw("Deposited", RawValue::from_string(data.to_owned()).unwrap())
    }

    fn properties(row: &AppendRow<'_>) -> Properties {
        let mut out = Vec::new();
        row.write_json(&mut out, None).unwrap();
        assert!(out.len() <= row.json_bytes_bound(), "{row:?}");
        match serde_json::from_slice(&out).unwrap() {
            Value::Object(map) => map,
            other => panic!("{other}"),
        }
    }

    #[test]
    fn events_round_trip_through_their_rows() {
        let raw = format!(
            r#"{{"amount": 0.10000000000000000001, "s": "{}"}}"#,
            "x".repeat(70_000)
        );
        let mut e = event(&raw);
        e.metadata.who = Some("O'Brien \"the\" \\ \u{1}".into());
        e.metadata.schema_version = Some(u32::MAX);
        let recorded = OffsetDateTime::now_utc();
        let encoded = encode_event("Bank|Account|1", &e, recorded).unwrap();
        let entity = encoded
            .entity("Bank|Account|1", &keys::event_row_key(3))
            .unwrap();
        assert!(entity.contains_key("Data02"));
        // What the service sends back carries the same properties (and more annotations).
        let row: super::super::event_row::EventRow =
            serde_json::from_value(Value::Object(entity)).unwrap();
        let back = row.into_event().unwrap();
        assert_eq!(back.sequence, 3);
        assert_eq!(back.data.get(), raw);
        assert_eq!(back.metadata, e.metadata);
        assert_eq!(back.timestamp, entity::storage_time(recorded));
        assert_eq!(back.event_id, e.event_id);
    }

    #[test]
    fn a_new_recorded_time_replaces_the_old_one() {
        let e = event(r#"{"a":1}"#);
        let first = time::macros::datetime!(2024-02-29 23:59:58.123456789 UTC);
        let mut encoded = encode_event("p", &e, first).unwrap();
        // Same length, longer (year -1234), and back.
        for time in [
            time::macros::datetime!(2025-01-01 00:00:00 UTC),
            time::macros::datetime!(-1234-12-31 23:59:59.5 UTC),
            first,
        ] {
            encoded.set_recorded(time);
            let entity = encoded.entity("p", "E-0000000001").unwrap();
            assert_eq!(
                entity::get_str(&entity, RECORDED).unwrap(),
                entity::format_time(time)
            );
            let again = encode_event("p", &e, time).unwrap();
            assert_eq!(encoded.json, again.json);
        }
        assert_eq!(
            entity::get_time(&encoded.entity("p", "E-0000000001").unwrap(), RECORDED).unwrap(),
            entity::storage_time(first)
        );
    }

    #[test]
    fn too_large_events_are_refused() {
        let e = event(&format!("\"{}\"", "a".repeat(MAX_ENTITY_BYTES / 2)));
        match encode_event("p", &e, OffsetDateTime::now_utc()) {
            Err(StoreError::EventTooLarge { size, limit, .. }) => {
                assert_eq!(limit, MAX_ENTITY_BYTES);
                assert_eq!(size, event_entity_size("p", &e));
                assert!(size > limit);
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn long_metadata_is_refused() {
        let mut e = event("1");
        e.metadata.source = Some("s".repeat(MAX_STRING_PROPERTY_UTF16 + 1));
        assert!(matches!(
            encode_event("p", &e, OffsetDateTime::now_utc()),
            Err(StoreError::InvalidEvent { .. })
        ));
    }

    #[test]
    fn header_and_id_rows_are_the_setters_and_within_their_bounds() {
        let time = time::macros::datetime!(2024-02-29 23:59:58.123456789 UTC);
        for created in [None, Some(time::PrimitiveDateTime::MIN.assume_utc())] {
            let row = AppendRow::Header {
                version: u64::MAX,
                created,
                last_recorded: time::PrimitiveDateTime::MAX.assume_utc(),
            };
            let mut expected = Properties::new();
            entity::set_int64(&mut expected, VERSION, u64::MAX);
            if let Some(created) = created {
                entity::set_time(&mut expected, CREATED, created);
            }
            entity::set_time(
                &mut expected,
                LAST_RECORDED,
                time::PrimitiveDateTime::MAX.assume_utc(),
            );
            assert_eq!(properties(&row), expected);
        }
        let row = AppendRow::EventId {
            sequence: u64::MAX,
            first: 1,
            last: u64::MAX,
        };
        assert_eq!(
            properties(&row),
            entity::event_id_properties(u64::MAX, 1, u64::MAX)
        );
        assert_eq!(properties(&AppendRow::Empty), Properties::new());
        let encoded = encode_event("p", &event("[]"), time).unwrap();
        properties(&AppendRow::Event(&encoded));
    }
}
