//! The rows of a stream as Table storage entities: their property names, how values are
//! written as JSON properties (module `append_rows` writes an append's rows with the same names
//! and values straight to JSON), how big an entity is as the service counts it, and how rows
//! read back become events again.
//!
//! Guarantees:
//! - event data is stored as the JSON text the caller gave, split into string properties of at
//!   most [`MAX_STRING_PROPERTY_UTF16`] UTF-16 code units (`Data`, `Data01`, `Data02`, ...),
//!   never cut inside a character, and read back by concatenation: byte for byte the same text;
//! - [`event_entity_size`] is the size of an event's entity as Table storage counts it, which
//!   an append checks against [`MAX_ENTITY_BYTES`] before any I/O;
//! - numbers that can exceed 2^31 (versions, sequences, schema versions) are written as
//!   `Edm.Int64` with their `@odata.type` annotation, times as `Edm.DateTime` with 100 ns
//!   precision (the service's own), and the time returned to callers is that stored value;
//! - a row that does not have the shape written here is reported as `Corrupt`, never guessed at.

use serde_json::{Map, Value};
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;
use uuid::Uuid;

use super::digits::Digits;
use super::keys;
use crate::stream::{EventMetadata, NewEvent, StoredEventId};

/// A JSON object of entity properties.
pub type Properties = Map<String, Value>;

/// Largest entity Table storage stores (1 MiB, counted as `TableStore::event_entity_size` counts).
pub const MAX_ENTITY_BYTES: usize = 1024 * 1024;
/// Longest string property, in UTF-16 code units (64 KiB).
pub const MAX_STRING_PROPERTY_UTF16: usize = 32 * 1024;
/// Most data chunk properties one event may use (`Data` .. `Data15`); the entity size limit is
/// reached first, this only bounds the reader.
pub const MAX_DATA_CHUNKS: usize = 16;
/// Digits of the number in a data chunk property name after the first (`Data01`).
pub const DATA_CHUNK_WIDTH: usize = 2;

pub const PARTITION_KEY: &str = "PartitionKey";
pub const ROW_KEY: &str = "RowKey";
/// The service's own last-modified property, present on every entity.
pub const TIMESTAMP: &str = "Timestamp";
pub const VERSION: &str = "Version";
pub const CREATED: &str = "Created";
/// The header's recorded time of the stream's last event (event `Version`), written by every
/// append with the version, so the next append can record a time no earlier.
pub const LAST_RECORDED: &str = "LastRecorded";
pub const EVENT_ID: &str = "EventId";
pub const EVENT_TYPE: &str = "EventType";
pub const RECORDED: &str = "Recorded";
pub const CORRELATION_ID: &str = "CorrelationId";
pub const CAUSATION_ID: &str = "CausationId";
pub const WHO: &str = "Who";
pub const SOURCE: &str = "Source";
pub const COMMENTARY: &str = "Commentary";
pub const SCHEMA_VERSION: &str = "SchemaVersion";
pub const IDEMPOTENCY_KEY: &str = "IdempotencyKey";
pub const REQUEST_HASH: &str = "RequestHash";
/// The first data chunk; later ones are `Data01`, `Data02`, ...
pub const DATA: &str = "Data";
pub const SEQUENCE: &str = "Sequence";
pub const FIRST_SEQUENCE: &str = "FirstSequence";
pub const LAST_SEQUENCE: &str = "LastSequence";

/// Suffix of the property annotation that gives a value's EDM type.
pub const ODATA_TYPE_SUFFIX: &str = "@odata.type";
pub const EDM_INT64: &str = "Edm.Int64";
pub const EDM_DATETIME: &str = "Edm.DateTime";

// Sizes from "Understanding the Table service data model" / entity size accounting:
// 4 bytes + 2 × len(PartitionKey + RowKey) + per property (8 bytes + 2 × len(name) + value).
const ENTITY_BASE_BYTES: usize = 4;
const PROPERTY_BASE_BYTES: usize = 8;
const STRING_VALUE_BASE_BYTES: usize = 4;
const INT64_BYTES: usize = 8;
const DATETIME_BYTES: usize = 8;

/// The names of the data chunks, [`data_property`] of 0 to 15, for writers that need no
/// `String` of them.
pub const DATA_PROPERTIES: [&str; MAX_DATA_CHUNKS] = [
    "Data", "Data01", "Data02", "Data03", "Data04", "Data05", "Data06", "Data07", "Data08",
    "Data09", "Data10", "Data11", "Data12", "Data13", "Data14", "Data15",
];

/// The name of data chunk `index` (0 → `Data`, 1 → `Data01`, ...).
pub fn data_property(index: usize) -> String {
    if index == 0 {
        DATA.to_owned()
    } else {
        format!("{DATA}{index:0DATA_CHUNK_WIDTH$}")
    }
}

/// The chunk index of a data chunk property name (`Data` → 0, `Data01` → 1, ...), if it is
/// one.
pub fn data_chunk_index(name: &str) -> Option<usize> {
    let digits = name.strip_prefix(DATA)?;
    if digits.is_empty() {
        return Some(0);
    }
    if digits.len() != DATA_CHUNK_WIDTH || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits
        .parse()
        .ok()
        .filter(|index| (1..MAX_DATA_CHUNKS).contains(index))
}

/// A time as Table storage keeps it: UTC, truncated to 100 ns (the precision every backend
/// records, [`crate::stream::TIME_PRECISION_NANOS`]).
pub fn storage_time(time: OffsetDateTime) -> OffsetDateTime {
    // A time whose UTC date is outside the `time` crate's range stays as given (the callers
    // that read stored text refuse it first, in `time_value`).
    crate::stream::recorded_time(time)
}

/// The `Edm.DateTime` text of a time (7 fractional digits, `Z`).
pub fn format_time(time: OffsetDateTime) -> String {
    match time_text(time) {
        Some(text) => text.iter().map(|&byte| char::from(byte)).collect(),
        None => format_time_slowly(time),
    }
}

/// [`format_time`]'s text for years 0 to 9999 (every time an append records), written digit by
/// digit without allocating: an append writes several of these, and `format!` costs several
/// times as much. `None` for earlier years, whose text is longer.
pub fn time_text(time: OffsetDateTime) -> Option<[u8; EDM_DATETIME_LEN]> {
    let time = storage_time(time);
    let year = u32::try_from(time.year())
        .ok()
        .filter(|year| *year <= 9999)?;
    let mut text = [0u8; EDM_DATETIME_LEN];
    let fields = [
        (year, 4, b'-'),
        (u32::from(u8::from(time.month())), 2, b'-'),
        (u32::from(time.day()), 2, b'T'),
        (u32::from(time.hour()), 2, b':'),
        (u32::from(time.minute()), 2, b':'),
        (u32::from(time.second()), 2, b'.'),
        (time.nanosecond() / 100, 7, b'Z'),
    ];
    let mut at = 0;
    for (value, width, separator) in fields {
        let digits = Digits::new(u64::from(value), width);
        // Each value has at most `width` digits (the year was checked above); were one longer,
        // `format_time` would take its slow path.
        let digits = Some(digits.as_bytes()).filter(|digits| digits.len() == width)?;
        let end = at + width;
        text.get_mut(at..end)?.copy_from_slice(digits);
        *text.get_mut(end)? = separator;
        at = end + 1;
    }
    Some(text)
}

/// [`format_time`] for the years [`time_text`] does not write: before year 0, padded as
/// `format!` pads a negative number.
fn format_time_slowly(time: OffsetDateTime) -> String {
    let time = storage_time(time);
    format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:07}Z",
        time.year(),
        u8::from(time.month()),
        time.day(),
        time.hour(),
        time.minute(),
        time.second(),
        time.nanosecond() / 100
    )
}

/// Length of [`time_text`]'s text (years 0 to 9999).
pub const EDM_DATETIME_LEN: usize = "0000-00-00T00:00:00.0000000Z".len();

/// The name of the `@odata.type` annotation of property `name`.
fn odata_type_key(name: &str) -> String {
    let mut key = String::with_capacity(name.len().saturating_add(ODATA_TYPE_SUFFIX.len()));
    key.push_str(name);
    key.push_str(ODATA_TYPE_SUFFIX);
    key
}

/// Length of `s` in UTF-16 code units (what Table storage counts), with ASCII text (every event
/// type, key and most payloads) counted by its byte length.
pub(super) fn utf16_len(s: &str) -> usize {
    if s.is_ascii() {
        s.len()
    } else {
        s.encode_utf16().count()
    }
}

/// The size of one value as Table storage counts it.
#[derive(Debug, Clone, Copy)]
enum ValueSize {
    String(usize),
    Int64,
    DateTime,
}

fn property_size(name: &str, value: ValueSize) -> usize {
    PROPERTY_BASE_BYTES
        + 2 * utf16_len(name)
        + match value {
            ValueSize::String(units) => STRING_VALUE_BASE_BYTES + 2 * units,
            ValueSize::Int64 => INT64_BYTES,
            ValueSize::DateTime => DATETIME_BYTES,
        }
}

/// Sets an `Edm.Int64` property (a string value with its type annotation).
pub fn set_int64(properties: &mut Properties, name: &str, value: u64) {
    properties.insert(odata_type_key(name), Value::String(EDM_INT64.to_owned()));
    properties.insert(name.to_owned(), Value::String(value.to_string()));
}

/// Sets an `Edm.DateTime` property.
pub fn set_time(properties: &mut Properties, name: &str, value: OffsetDateTime) {
    properties.insert(odata_type_key(name), Value::String(EDM_DATETIME.to_owned()));
    properties.insert(name.to_owned(), Value::String(format_time(value)));
}

/// The size, as Table storage counts it, of the entity that stores `event` in the partition
/// `partition_key`. An event is stored only if this is at most [`MAX_ENTITY_BYTES`].
pub fn event_entity_size(partition_key: &str, event: &NewEvent) -> usize {
    let row_key_len = keys::EVENT_ROW_PREFIX.len() + keys::SEQUENCE_WIDTH;
    let mut size = ENTITY_BASE_BYTES
        + 2 * (utf16_len(partition_key) + row_key_len)
        + property_size(TIMESTAMP, ValueSize::DateTime)
        + property_size(EVENT_ID, ValueSize::String(36))
        + property_size(EVENT_TYPE, ValueSize::String(utf16_len(&event.event_type)))
        + property_size(RECORDED, ValueSize::DateTime);
    for (name, value) in metadata_strings(&event.metadata) {
        size += property_size(name, ValueSize::String(utf16_len(value)));
    }
    if event.metadata.schema_version.is_some() {
        size += property_size(SCHEMA_VERSION, ValueSize::Int64);
    }
    for (index, chunk) in data_chunks(event.data.get()).enumerate() {
        size += property_size(&data_property(index), ValueSize::String(utf16_len(chunk)));
    }
    size
}

/// The metadata an event row stores as string properties, by property name (absent ones left
/// out).
pub fn metadata_strings(metadata: &EventMetadata) -> impl Iterator<Item = (&'static str, &str)> {
    [
        (CORRELATION_ID, metadata.correlation_id.as_deref()),
        (CAUSATION_ID, metadata.causation_id.as_deref()),
        (WHO, metadata.who.as_deref()),
        (SOURCE, metadata.source.as_deref()),
        (COMMENTARY, metadata.commentary.as_deref()),
        (IDEMPOTENCY_KEY, metadata.idempotency_key.as_deref()),
        (REQUEST_HASH, metadata.request_hash.as_deref()),
    ]
    .into_iter()
    .filter_map(|(name, value)| value.map(|v| (name, v)))
}

/// Splits `text` into pieces of at most [`MAX_STRING_PROPERTY_UTF16`] UTF-16 code units, on
/// character boundaries. Empty text is one empty piece.
pub fn data_chunks(text: &str) -> DataChunks<'_> {
    DataChunks { rest: Some(text) }
}

/// The pieces of a text, as [`data_chunks`] splits it (without collecting them).
#[derive(Debug, Clone)]
pub struct DataChunks<'a> {
    /// What is left to split; `None` once the last piece (possibly empty) was given.
    rest: Option<&'a str>,
}

impl<'a> Iterator for DataChunks<'a> {
    type Item = &'a str;

    fn next(&mut self) -> Option<&'a str> {
        let rest = self.rest?;
        // A character has no more UTF-16 code units than UTF-8 bytes: text this short is one
        // piece.
        if rest.len() <= MAX_STRING_PROPERTY_UTF16 {
            self.rest = None;
            return Some(rest);
        }
        let mut units = 0;
        for (index, c) in rest.char_indices() {
            if units + c.len_utf16() > MAX_STRING_PROPERTY_UTF16 {
                let (chunk, after) = rest.split_at(index);
                self.rest = Some(after);
                return Some(chunk);
            }
            units += c.len_utf16();
        }
        self.rest = None;
        Some(rest)
    }
}

/// Counts the `Data`, `Data01`, … properties of a JSON document stored by [`set_json_text`].
pub const DATA_CHUNKS: &str = "DataChunks";

/// Stores a JSON document (a snapshot's or read model's state) as `Data`, `Data01`, … with
/// its chunk count in [`DATA_CHUNKS`], so a merge over a longer older document never mixes the
/// two. `None` when the text needs more chunks than an entity may hold.
pub fn set_json_text(properties: &mut Properties, text: &str) -> Option<()> {
    let count = data_chunks(text).count();
    if count > MAX_DATA_CHUNKS {
        return None;
    }
    set_int64(properties, DATA_CHUNKS, count as u64);
    for (index, chunk) in data_chunks(text).enumerate() {
        properties.insert(data_property(index), Value::String(chunk.to_owned()));
    }
    Some(())
}

/// Reads a JSON document stored by [`set_json_text`].
pub fn get_json_text(entity: &Properties) -> Result<Box<serde_json::value::RawValue>, String> {
    let chunks = usize::try_from(get_u64(entity, DATA_CHUNKS)?)
        .ok()
        .filter(|n| (1..=MAX_DATA_CHUNKS).contains(n))
        .ok_or_else(|| format!("{DATA_CHUNKS} is not between 1 and {MAX_DATA_CHUNKS}"))?;
    let mut text = String::new();
    for index in 0..chunks {
        text.push_str(get_str(entity, &data_property(index))?);
    }
    serde_json::value::RawValue::from_string(text).map_err(|e| format!("not JSON: {e}"))
}

/// A complete entity: keys plus properties.
pub fn with_keys(partition_key: &str, row_key: &str, properties: &Properties) -> Properties {
    let mut entity = Properties::with_capacity(properties.len() + 2);
    entity.insert(
        PARTITION_KEY.to_owned(),
        Value::String(partition_key.to_owned()),
    );
    entity.insert(ROW_KEY.to_owned(), Value::String(row_key.to_owned()));
    entity.extend(properties.iter().map(|(k, v)| (k.clone(), v.clone())));
    entity
}

/// Properties of the event-id row of the event at `sequence`, written by the append that
/// stored `first..=last`.
pub fn event_id_properties(sequence: u64, first: u64, last: u64) -> Properties {
    let mut properties = Properties::new();
    set_int64(&mut properties, SEQUENCE, sequence);
    set_int64(&mut properties, FIRST_SEQUENCE, first);
    set_int64(&mut properties, LAST_SEQUENCE, last);
    properties
}

/// Reads an integer property written as `Edm.Int64` (a string), or as a plain JSON number.
pub fn get_u64(entity: &Properties, name: &str) -> Result<u64, String> {
    u64_value(name, entity.get(name))
}

/// Reads a string property.
pub fn get_str<'a>(entity: &'a Properties, name: &str) -> Result<&'a str, String> {
    str_value(name, entity.get(name))
}

/// Reads an `Edm.DateTime` property.
pub fn get_time(entity: &Properties, name: &str) -> Result<OffsetDateTime, String> {
    time_value(name, entity.get(name))
}

/// The value of property `name` (`None` = absent) as an integer written as `Edm.Int64` (a
/// string) or as a plain JSON number.
pub fn u64_value(name: &str, value: Option<&Value>) -> Result<u64, String> {
    match value {
        Some(Value::String(s)) => s
            .parse()
            .map_err(|_| format!("property {name} is not an integer: {s:?}")),
        Some(Value::Number(n)) => n
            .as_u64()
            .ok_or_else(|| format!("property {name} is not a non-negative integer: {n}")),
        Some(other) => Err(format!("property {name} has an unexpected value {other}")),
        None => Err(format!("property {name} is missing")),
    }
}

/// The value of property `name` (`None` = absent) as a string.
pub fn str_value<'a>(name: &str, value: Option<&'a Value>) -> Result<&'a str, String> {
    match value {
        Some(Value::String(s)) => Ok(s),
        Some(other) => Err(format!("property {name} is not a string: {other}")),
        None => Err(format!("property {name} is missing")),
    }
}

/// The value of property `name` (`None` = absent) as an `Edm.DateTime`.
pub fn time_value(name: &str, value: Option<&Value>) -> Result<OffsetDateTime, String> {
    let text = str_value(name, value)?;
    let parsed = OffsetDateTime::parse(text, &Rfc3339)
        .map_err(|e| format!("property {name} is not a date-time ({e}): {text:?}"))?;
    parsed
        .checked_to_offset(time::UtcOffset::UTC)
        .filter(|utc| (0..=9999).contains(&utc.year()))
        .map(storage_time)
        .ok_or_else(|| format!("property {name} is out of range in UTC: {text:?}"))
}

/// The stream version held by a header row.
pub fn decode_header_version(entity: &Properties) -> Result<u64, String> {
    get_u64(entity, VERSION)
}

/// The recorded time of the stream's last event held by a header row; `None` for a header
/// written before headers carried it.
pub fn decode_header_last_recorded(entity: &Properties) -> Result<Option<OffsetDateTime>, String> {
    match entity.get(LAST_RECORDED) {
        None => Ok(None),
        value => time_value(LAST_RECORDED, value).map(Some),
    }
}

/// The (first, last) sequence numbers of the append recorded in an event-id row.
pub fn decode_event_id_row(entity: &Properties) -> Result<(Uuid, StoredEventId), String> {
    let row_key = get_str(entity, ROW_KEY)?;
    let event_id = keys::parse_event_id_row_key(row_key)
        .ok_or_else(|| format!("{row_key:?} is not an event-id row key"))?;
    let sequence = get_u64(entity, SEQUENCE)?;
    let first = get_u64(entity, FIRST_SEQUENCE)?;
    let last = get_u64(entity, LAST_SEQUENCE)?;
    if first == 0 || last < first || !(first..=last).contains(&sequence) {
        return Err(format!(
            "event-id row {row_key} records an impossible append: event {sequence} of \
             {first}..{last}"
        ));
    }
    Ok((
        event_id,
        StoredEventId {
            sequence,
            append: (first, last),
        },
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunks_respect_the_property_limit_and_characters() {
        assert_eq!(data_chunks("").collect::<Vec<_>>(), vec![""]);
        let ascii = "a".repeat(MAX_STRING_PROPERTY_UTF16 * 2 + 1);
        let chunks = data_chunks(&ascii).collect::<Vec<_>>();
        assert_eq!(
            chunks.iter().map(|c| c.len()).collect::<Vec<_>>(),
            vec![MAX_STRING_PROPERTY_UTF16, MAX_STRING_PROPERTY_UTF16, 1]
        );
        // A character outside the BMP (2 UTF-16 units) never straddles a chunk boundary.
        let text = format!("{}😀", "a".repeat(MAX_STRING_PROPERTY_UTF16 - 1));
        let chunks = data_chunks(&text).collect::<Vec<_>>();
        assert_eq!(chunks.len(), 2);
        assert_eq!(chunks[1], "😀");
        assert_eq!(chunks.concat(), text);
    }

    #[test]
    fn data_property_names() {
        assert_eq!(data_property(0), "Data");
        assert_eq!(data_property(1), "Data01");
        assert_eq!(data_property(15), "Data15");
        for (index, name) in DATA_PROPERTIES.iter().enumerate() {
            assert_eq!(data_property(index), *name);
        }
    }

    #[test]
    fn data_chunk_names_round_trip() {
        for index in 0..MAX_DATA_CHUNKS {
            assert_eq!(data_chunk_index(&data_property(index)), Some(index));
        }
        for other in [
            "Dat",
            "Data1",
            "Data001",
            "Data16",
            "Data00",
            "DataChunks",
            "Datax1",
        ] {
            assert_eq!(data_chunk_index(other), None, "{other}");
        }
    }

    proptest::proptest! {
        /// The digit-by-digit text is `format!`'s, for every time the `time` crate holds
        /// (years -9999 to 9999, so the padded, the unpadded and the negative years).
        #[test]
        fn time_text_is_the_formatted_text(
            seconds in time::PrimitiveDateTime::MIN.assume_utc().unix_timestamp()
                ..=time::PrimitiveDateTime::MAX.assume_utc().unix_timestamp(),
            nanos in 0u32..1_000_000_000,
        ) {
            let t = OffsetDateTime::from_unix_timestamp(seconds)
                .unwrap()
                .replace_nanosecond(nanos)
                .unwrap();
            let s = storage_time(t);
            let expected = format!(
                "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:07}Z",
                s.year(),
                u8::from(s.month()),
                s.day(),
                s.hour(),
                s.minute(),
                s.second(),
                s.nanosecond() / 100
            );
            proptest::prop_assert_eq!(format_time(t), expected);
        }
    }

    use proptest::strategy::Strategy as _;

    proptest::proptest! {
        /// The shortcuts (ASCII counted by bytes, short text one piece) answer as the full
        /// walks do, on text around the chunk size with ASCII and wider characters.
        #[test]
        fn utf16_lengths_and_chunks_are_the_walks(
            pieces in proptest::collection::vec(
                proptest::prop_oneof![
                    "[a-z]{0,40}".prop_map(|s| s.repeat(1 + 4000 / (s.len() + 1))),
                    "[a-zé€😀]{0,8}",
                ],
                0..24,
            ),
        ) {
            let text: String = pieces.concat();
            proptest::prop_assert_eq!(utf16_len(&text), text.encode_utf16().count());
            let chunks = data_chunks(&text).collect::<Vec<_>>();
            proptest::prop_assert_eq!(chunks.concat(), text.clone());
            let mut walked = Vec::new();
            let (mut start, mut units) = (0, 0);
            for (index, c) in text.char_indices() {
                if units + c.len_utf16() > MAX_STRING_PROPERTY_UTF16 {
                    walked.push(&text[start..index]);
                    start = index;
                    units = 0;
                }
                units += c.len_utf16();
            }
            walked.push(&text[start..]);
            proptest::prop_assert_eq!(chunks, walked);
        }
    }

    #[test]
    fn early_years_are_padded() {
        let t = time::macros::datetime!(0007-01-02 03:04:05.000000600 UTC);
        assert_eq!(format_time(t), "0007-01-02T03:04:05.0000006Z");
    }

    #[test]
    fn times_keep_100ns() {
        let t = time::macros::datetime!(2024-02-29 23:59:58.123456789 UTC);
        assert_eq!(format_time(t), "2024-02-29T23:59:58.1234567Z");
        let mut p = Properties::new();
        set_time(&mut p, RECORDED, t);
        assert_eq!(get_time(&p, RECORDED).unwrap(), storage_time(t));
    }
}
