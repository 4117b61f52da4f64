//! The bytes of a segment blob: one self-describing JSON record per event, one line each
//! (newline-delimited JSON, readable by any tool), and the size limits of an append.
//!
//! A record is
//! `{"sequence":..,"eventId":..,"eventType":..,"timestamp":..,"metadata":{..},"append":{"first":..,"last":..},"data":<JSON>}`
//! followed by `\n`. `append` names the sequence numbers of the append that wrote the event, so
//! an idempotent retry can be told from a reuse of event ids by reading the records alone.
//!
//! Guarantees:
//! - the event data is written as the JSON text the caller gave, byte for byte, and read back
//!   the same. JSON text may contain line breaks as whitespace (which would break the one-line
//!   framing) or whitespace around the value (which a JSON reader drops); such data is stored
//!   instead as a JSON string in `dataText` (the exact text again) and read back from there;
//! - every record ends with `\n` and contains no other line break, so a block (one append) is a
//!   run of whole lines and any byte offset just after a `\n` starts a record;
//! - the size of a record is bounded before the sequence numbers are known
//!   ([`record_size_bound`]), so the block limit is checked before any I/O: one event over
//!   [`MAX_BLOCK_BYTES`] is `EventTooLarge`, an append over it `AppendTooLarge`;
//! - timestamps are written in a fixed-width RFC 3339 form (UTC, nine fractional digits) and
//!   read back to the nanosecond.

use serde::{Deserialize, Deserializer, Serialize};
use serde_json::value::RawValue;
use time::format_description::well_known::Rfc3339;
use time::{OffsetDateTime, UtcOffset};
use uuid::Uuid;

use crate::stream::{EventMetadata, NewEvent, RecordedEvent, StoreError};

/// Largest block an append blob accepts at every service version (100 MiB only from
/// x-ms-version 2022-11-02): one append is one block, so at most this many bytes.
pub const MAX_BLOCK_BYTES: usize = 4 * 1024 * 1024;
/// Ends every record.
pub const RECORD_TERMINATOR: u8 = b'\n';
/// Characters that would split a record into two lines if written raw.
const LINE_BREAKS: [char; 2] = ['\n', '\r'];
/// Whitespace JSON allows around a value (a raw value read back would lose it at the edges).
const JSON_WHITESPACE: [char; 4] = [' ', '\t', '\n', '\r'];
/// The widest sequence number (used to bound a record's size before it is numbered).
const WIDEST_SEQUENCE: u64 = u64::MAX;
/// Fractional digits of a written timestamp.
const TIMESTAMP_FRACTION_DIGITS: usize = 9;

/// The sequence numbers of the append that wrote an event (both inclusive).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct AppendSpan {
    pub first: u64,
    pub last: u64,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct RecordOut<'a> {
    sequence: u64,
    event_id: Uuid,
    event_type: &'a str,
    timestamp: &'a str,
    metadata: &'a EventMetadata,
    append: AppendSpan,
    #[serde(skip_serializing_if = "Option::is_none")]
    data: Option<&'a RawValue>,
    #[serde(skip_serializing_if = "Option::is_none")]
    data_text: Option<&'a str>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RecordIn {
    sequence: u64,
    event_id: Uuid,
    event_type: String,
    timestamp: String,
    #[serde(default)]
    metadata: EventMetadata,
    append: AppendSpan,
    #[serde(default, deserialize_with = "present_raw")]
    data: Option<Box<RawValue>>,
    #[serde(default)]
    data_text: Option<String>,
}

/// Keeps a present `"data": null` as the text `null` (a plain `Option` would drop it).
fn present_raw<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Box<RawValue>>, D::Error> {
    Box::<RawValue>::deserialize(d).map(Some)
}

/// An event read back from a segment, with where it ends in the segment.
#[derive(Debug, Clone)]
pub struct StoredEvent {
    pub event: RecordedEvent,
    pub append: AppendSpan,
    /// Byte offset in the segment where this record starts.
    pub start: u64,
    /// Byte offset in the segment just after this record's terminator.
    pub end: u64,
}

/// Largest sequence number a record may carry: far beyond any real stream, and low enough
/// that numbering the events after it can never overflow.
pub const MAX_RECORD_SEQUENCE: u64 = i64::MAX as u64;

/// The fixed-width RFC 3339 text of a time (UTC, nanoseconds).
pub fn format_timestamp(time: OffsetDateTime) -> String {
    let t = time.checked_to_offset(UtcOffset::UTC).unwrap_or(time);
    format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:0width$}Z",
        t.year(),
        u8::from(t.month()),
        t.day(),
        t.hour(),
        t.minute(),
        t.second(),
        t.nanosecond(),
        width = TIMESTAMP_FRACTION_DIGITS
    )
}

fn write_record(
    out: &mut Vec<u8>,
    event: &NewEvent,
    sequence: u64,
    append: AppendSpan,
    timestamp: &str,
) -> Result<(), StoreError> {
    let text = event.data.get();
    let verbatim_raw = !text.contains(LINE_BREAKS)
        && !text.starts_with(JSON_WHITESPACE)
        && !text.ends_with(JSON_WHITESPACE);
    let (data, data_text) = if !verbatim_raw {
        (None, Some(text))
    } else {
        (Some(&*event.data), None)
    };
    let record = RecordOut {
        sequence,
        event_id: event.event_id,
        event_type: &event.event_type,
        timestamp,
        metadata: &event.metadata,
        append,
        data,
        data_text,
    };
    serde_json::to_writer(&mut *out, &record).map_err(|e| StoreError::InvalidEvent {
        event_id: event.event_id,
        reason: format!("cannot be written as JSON: {e}"),
    })?;
    out.push(RECORD_TERMINATOR);
    Ok(())
}

/// The most bytes the record of `event` can take, whatever its sequence numbers.
pub fn record_size_bound(event: &NewEvent) -> Result<usize, StoreError> {
    let mut out = Vec::with_capacity(event.data.get().len() + 256);
    let widest = AppendSpan {
        first: WIDEST_SEQUENCE,
        last: WIDEST_SEQUENCE,
    };
    let timestamp = format_timestamp(OffsetDateTime::UNIX_EPOCH);
    write_record(&mut out, event, WIDEST_SEQUENCE, widest, &timestamp)?;
    Ok(out.len())
}

/// Refuses, before any I/O, an event or an append that cannot be one block.
pub fn check_block_limits(events: &[NewEvent]) -> Result<(), StoreError> {
    let mut total = 0usize;
    for event in events {
        let size = record_size_bound(event)?;
        if size > MAX_BLOCK_BYTES {
            return Err(StoreError::EventTooLarge {
                event_id: event.event_id,
                size,
                limit: MAX_BLOCK_BYTES,
            });
        }
        total += size;
    }
    if total > MAX_BLOCK_BYTES {
        return Err(StoreError::AppendTooLarge {
            events: events.len(),
            bytes: total,
            limit: format!("one append is one block of at most {MAX_BLOCK_BYTES} bytes"),
        });
    }
    Ok(())
}

/// One append, encoded.
#[derive(Debug, Clone)]
pub struct EncodedAppend {
    pub span: AppendSpan,
    /// The block: every record of the append.
    pub bytes: Vec<u8>,
    /// Where each record ends in `bytes` (just after its terminator).
    pub ends: Vec<usize>,
}

/// The block that appends `events` as sequences `first..`, all stamped `timestamp`.
pub fn encode_append(
    events: &[NewEvent],
    first: u64,
    timestamp: OffsetDateTime,
) -> Result<EncodedAppend, StoreError> {
    let span = AppendSpan {
        first,
        last: first + events.len().saturating_sub(1) as u64,
    };
    let timestamp = format_timestamp(timestamp);
    let mut bytes = Vec::new();
    let mut ends = Vec::with_capacity(events.len());
    for (event, sequence) in events.iter().zip(first..) {
        write_record(&mut bytes, event, sequence, span, &timestamp)?;
        ends.push(bytes.len());
    }
    Ok(EncodedAppend { span, bytes, ends })
}

/// Decodes whole records. `bytes` must start at a record boundary (offset `start` in the
/// segment) and end with a terminator; the error says what is wrong, in words.
pub fn decode_records(bytes: &[u8], start: u64) -> Result<Vec<StoredEvent>, String> {
    let mut events = Vec::new();
    let mut offset = start;
    let mut rest = bytes;
    while !rest.is_empty() {
        let Some(len) = rest.iter().position(|&b| b == RECORD_TERMINATOR) else {
            return Err(format!(
                "{} bytes at offset {offset} are not a whole record",
                rest.len()
            ));
        };
        let line = &rest[..len];
        let stored = decode_record(line)
            .map_err(|e| format!("the record at offset {offset} is not valid: {e}"))?;
        let record_start = offset;
        offset += len as u64 + 1;
        events.push(StoredEvent {
            start: record_start,
            end: offset,
            ..stored
        });
        rest = &rest[len + 1..];
    }
    Ok(events)
}

fn decode_record(line: &[u8]) -> Result<StoredEvent, String> {
    let record: RecordIn = serde_json::from_slice(line).map_err(|e| e.to_string())?;
    let data = match (record.data, record.data_text) {
        (Some(data), None) => data,
        (None, Some(text)) => RawValue::from_string(text).map_err(|e| format!("dataText: {e}"))?,
        _ => return Err("it must have exactly one of data and dataText".into()),
    };
    let timestamp = OffsetDateTime::parse(&record.timestamp, &Rfc3339)
        .map_err(|e| format!("timestamp {:?}: {e}", record.timestamp))?
        .checked_to_offset(UtcOffset::UTC)
        .filter(|utc| (0..=9999).contains(&utc.year()))
        .ok_or_else(|| format!("timestamp {:?} is out of range in UTC", record.timestamp))?;
    let span = record.append;
    if span.first == 0
        || span.last < span.first
        || span.last > MAX_RECORD_SEQUENCE
        || !(span.first..=span.last).contains(&record.sequence)
    {
        return Err(format!(
            "sequence {} is outside its append {}..{}",
            record.sequence, span.first, span.last
        ));
    }
    Ok(StoredEvent {
        event: RecordedEvent {
            sequence: record.sequence,
            event_id: record.event_id,
            event_type: record.event_type,
            data,
            timestamp,
            metadata: record.metadata,
        },
        append: span,
        start: 0,
        end: 0,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(data: &str) -> NewEvent {
        NewEvent::from_raw("Deposited", RawValue::from_string(data.to_owned()).unwrap())
    }

    #[test]
    fn records_round_trip_byte_for_byte() {
        let datas = [
            r#"{"amount": 0.10000000000000000001, "who":"O'Brien ünï"}"#,
            "null",
            "  [1,\n 2]\r\n",
            r#""a\nb""#,
            " 7",
        ];
        let events: Vec<NewEvent> = datas.iter().map(|d| event(d)).collect();
        let mut events = events;
        events[0].metadata.correlation_id = Some("c\n1".into());
        events[0].metadata.schema_version = Some(3);
        let now = OffsetDateTime::now_utc();
        let encoded = encode_append(&events, 41, now).unwrap();
        let bytes = encoded.bytes;
        assert_eq!(encoded.ends.last(), Some(&bytes.len()));
        assert_eq!(bytes.iter().filter(|&&b| b == b'\n').count(), events.len());
        let stored = decode_records(&bytes, 100).unwrap();
        assert_eq!(stored.len(), 5);
        for (i, (s, e)) in stored.iter().zip(&events).enumerate() {
            assert_eq!(s.event.sequence, 41 + i as u64);
            assert_eq!(s.event.data.get(), e.data.get());
            assert_eq!(s.event.event_id, e.event_id);
            assert_eq!(s.event.metadata, e.metadata);
            assert_eq!(s.event.timestamp, now);
            assert_eq!(
                s.append,
                AppendSpan {
                    first: 41,
                    last: 45
                }
            );
        }
        assert_eq!(stored.last().unwrap().end, 100 + bytes.len() as u64);
        let line = std::str::from_utf8(&bytes).unwrap().lines().next().unwrap();
        assert!(line.starts_with(r#"{"sequence":41,"eventId":""#), "{line}");
        assert!(
            line.ends_with(r#""data":{"amount": 0.10000000000000000001, "who":"O'Brien ünï"}}"#)
        );
    }

    #[test]
    fn size_bound_covers_every_numbering() {
        let e = event(r#"{"x":1}"#);
        let bound = record_size_bound(&e).unwrap();
        for first in [1, 9_999_999, u64::MAX - 1] {
            let bytes = encode_append(std::slice::from_ref(&e), first, OffsetDateTime::now_utc())
                .unwrap()
                .bytes;
            assert!(bytes.len() <= bound);
        }
    }

    #[test]
    fn limits() {
        let big = format!("\"{}\"", "x".repeat(MAX_BLOCK_BYTES));
        assert!(matches!(
            check_block_limits(&[event(&big)]),
            Err(StoreError::EventTooLarge { .. })
        ));
        let half = format!("\"{}\"", "x".repeat(MAX_BLOCK_BYTES / 2));
        assert!(check_block_limits(&[event(&half)]).is_ok());
        assert!(matches!(
            check_block_limits(&[event(&half), event(&half)]),
            Err(StoreError::AppendTooLarge { events: 2, .. })
        ));
    }

    #[test]
    fn broken_bytes_are_reported() {
        let bytes = encode_append(&[event("1")], 1, OffsetDateTime::now_utc())
            .unwrap()
            .bytes;
        assert!(decode_records(&bytes[..bytes.len() - 1], 0).is_err());
        assert!(decode_records(b"{}\n", 0).is_err());
        assert!(decode_records(b"", 0).unwrap().is_empty());
    }
}
