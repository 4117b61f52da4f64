//! Checking one stream's blobs against the layout of this backend (for `streamfold verify`),
//! reading every segment whole, range by range:
//! - every segment decodes into records, and the records of all segments carry the sequence
//!   numbers 1..n without a gap (each missing sequence is named), each segment starting at its
//!   `firstsequence` metadata;
//! - the last segment's hint (its metadata, the "header" of a blob stream) is not ahead of the
//!   content: its version and length are at most the stream's;
//! - the event-id index: every event up to the index's watermark has its row, naming the same
//!   sequence; a row naming another sequence, or an event not stored, is named;
//! - the notification marker marks no more events than the stream holds.
//!
//! An erased stream (module `erase`) is healthy when its tombstones are all that is left.

use std::collections::HashMap;

use uuid::Uuid;

use super::client::{Alignment, BlobApi, ReadOutcome};
use super::ids::IdIndex;
use super::naming;
use super::record::decode_records;
use crate::storage::table::verify_gap as gap;
use crate::stream::{StoreError, StreamId};

/// Every problem of `stream`'s blobs (none: healthy).
pub async fn verify(
    api: &BlobApi,
    index: &IdIndex,
    stream: &StreamId,
) -> Result<Vec<String>, StoreError> {
    let what = stream.to_string();
    let prefix = naming::stream_prefix(stream);
    let mut problems = Vec::new();
    let listed = api.list_segments(&prefix, &what).await?;
    if listed.iter().any(|s| s.erased.is_some()) {
        if listed.iter().any(|s| s.erased.is_none()) {
            problems.push(
                "the stream is erased (a tombstone is there) but segments of it are left: \
                 erase it again to finish"
                    .to_owned(),
            );
        }
        return Ok(problems);
    }
    let mut segments: Vec<_> = listed
        .iter()
        .filter_map(|s| naming::parse_segment_name(&prefix, &s.name).map(|n| (n, s)))
        .collect();
    segments.sort_by_key(|(n, _)| *n);
    let mut expected = 1u64;
    let mut ids: Vec<(u64, Uuid)> = Vec::new();
    for (index, (number, segment)) in segments.iter().enumerate() {
        if u32::try_from(index).ok() != Some(*number) {
            problems.push(format!(
                "segment {number} exists but segment {index} does not"
            ));
        }
        let bytes = match api
            .read_from(&segment.name, 0, Alignment::Exact, &what)
            .await?
        {
            ReadOutcome::Read(read) => read.bytes,
            ReadOutcome::Missing | ReadOutcome::NotABoundary => {
                problems.push(format!("segment {number} vanished while being read"));
                continue;
            }
        };
        let records = match decode_records(&bytes, 0) {
            Ok(records) => records,
            Err(detail) => {
                problems.push(format!("segment {number}: {detail}"));
                continue;
            }
        };
        if let (Some(hint), Some(first)) = (segment.hint, records.first()) {
            if hint.first_sequence != first.event.sequence {
                problems.push(format!(
                    "segment {number} says it starts at event {}, but its first record is event {}",
                    hint.first_sequence, first.event.sequence
                ));
            }
        }
        for record in &records {
            let sequence = record.event.sequence;
            if sequence > expected {
                problems.push(gap(expected, sequence - 1));
            } else if sequence < expected {
                problems.push(format!(
                    "event {sequence} is stored again (or out of order) after event {}",
                    expected - 1
                ));
            }
            expected = sequence.max(expected.saturating_sub(1)).saturating_add(1);
            ids.push((sequence, record.event.event_id));
        }
        let last_here = records.last().map_or(0, |r| r.event.sequence);
        if let Some(hint) = segment.hint {
            if *number as usize + 1 == segments.len()
                && (hint.version > last_here.max(hint.first_sequence - 1)
                    || hint.length > segment.length)
            {
                problems.push(format!(
                    "the hint of segment {number} says version {} at {} bytes, past what it \
                     holds (event {last_here}, {} bytes)",
                    hint.version, hint.length, segment.length
                ));
            }
        }
    }
    let version = expected.saturating_sub(1);
    // The event-id index.
    let found = index.all_rows(stream).await?;
    let watermark = found.watermark.version;
    let stored: HashMap<Uuid, u64> = ids.iter().map(|(s, id)| (*id, *s)).collect();
    if watermark > version {
        problems.push(format!(
            "the event-id index says events up to {watermark} are indexed, but the stream \
             ends at {version}"
        ));
    }
    for (sequence, id) in ids.iter().filter(|(s, _)| *s <= watermark) {
        match found.rows.get(id) {
            None => problems.push(format!(
                "event {sequence} (id {id}) has no event-id record (the index's watermark is \
                 {watermark})"
            )),
            Some(row) if row.sequence != *sequence => problems.push(format!(
                "the event-id record of {id} says sequence {}, but event {sequence} has that id",
                row.sequence
            )),
            Some(_) => {}
        }
    }
    for (id, row) in &found.rows {
        if !stored.contains_key(id) {
            problems.push(format!(
                "the event-id record of {id} points at event {}, which is not stored",
                row.sequence
            ));
        }
    }
    // The notification marker.
    if let Some(notified) = api
        .marker_notified(&super::outbox::marker_name(stream), &what)
        .await?
    {
        if notified > version {
            problems.push(format!(
                "the notification marker says {notified} events were notified, but the stream \
                 ends at {version}"
            ));
        }
    }
    Ok(problems)
}
