//! Learning the state of a stream from its blobs: a cold load (list the segments, read the
//! last one from its metadata hint), a refresh (read on from a known offset), range reads (for
//! `read`: the events of a bounded range, as of a time a prefix of them) and id scans (the
//! events after the id index's watermark, module `ids`).
//!
//! Guarantees:
//! - nothing is believed without the content: a hint is used only if the byte before its
//!   offset ends a record and the first record after it is the hinted version + 1; otherwise
//!   the segment is read from its start;
//! - a tail is never learned by downloading a whole blob when a position in it is known: a
//!   cold load reads from the hint, a refresh from the cached length (open-ended reads);
//! - the recorded time of a stream's last event is learnt with its tail: from the last record
//!   read, or from the hint (which carries it); only a hint written before hints carried it
//!   costs a read of the last record ([`StreamBlobs::last_recorded`]);
//! - times are reported as [`TimeLine`] says (never going back), and a read as of a time ends
//!   at the first event recorded after it;
//! - sequence numbers are checked wherever records are read: gap-free within a segment, the
//!   first record of a segment is the next sequence after the previous segment, and a
//!   segment's `firstsequence` metadata agrees; a violation is `Corrupt`, never papered over;
//! - a segment's block count is counted from its records (each append is one block, and its
//!   first record is the one whose sequence is the append's `first`), starting from the hint's
//!   `blocks` or from zero; a read's block-count header is never used (Azurite can send one of
//!   a later state than the body);
//! - a full segment (as many blocks as the store allows) is followed into the next segment
//!   when one exists, so readers and writers cross segment boundaries transparently;
//! - memory does not grow with a segment: segments are read range by range
//!   ([`BlobApi::scan`]), each range's records decoded and absorbed (a tail keeps only the
//!   idempotency window) or kept only when a read asked for them; a range read stops at the
//!   last event asked for, and says where the next event starts ([`Position`]), so a reader
//!   walking a stream chunk by chunk never reads the same bytes twice.

use std::collections::VecDeque;

use time::OffsetDateTime;

use super::client::{
    Alignment, BlobApi, Flow, ListedSegment, ReadOutcome, ScanEnd, ScanOutcome, TailBytes,
    MAX_READ_RANGE_BYTES, MIN_READ_RANGE_BYTES,
};
use super::ids::{IdEntry, IdKnowledge, Watermark};
use super::naming;
use super::record::{decode_records, StoredEvent};
use super::tail::{Current, Segment, Tail};
use crate::stream::{recorded_time, ReadRequest, RecordedEvent, StoreError, StreamId, TimeLine};

/// Bytes per record a range read assumes before it has seen any (it then uses what it saw).
pub const ASSUMED_RECORD_BYTES: u64 = 512;

/// A place in a stream's blobs where a record starts: segment, offset in it, and the sequence
/// number of the event recorded there. Learned by reads; always checked against the content.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Position {
    pub segment: u32,
    pub offset: u64,
    pub sequence: u64,
}

/// What a range read returned, and where it stopped.
pub struct RangeRead {
    /// The events of the request, in order.
    pub events: Vec<RecordedEvent>,
    /// Where the event after the last one asked for starts.
    pub next: Position,
    /// Average bytes per record among those read (for sizing the next read).
    pub record_bytes: u64,
}

/// What reading a segment into a tail found.
enum Absorbed {
    Read(ScanEnd),
    /// No segment of that number.
    Missing,
    /// The offset is not a record boundary, or the record there is not the expected event.
    Wrong,
}

/// How the first record of a read's start compared with what was expected.
enum StartCheck {
    /// The start is a record boundary holding the expected event (or nothing at all yet).
    Good,
    /// The start is wrong (not a boundary, or another event): try another start.
    Wrong,
}

/// Reads the blobs of one stream.
pub struct StreamBlobs<'a> {
    pub api: &'a BlobApi,
    pub stream: &'a StreamId,
    pub what: String,
    prefix: String,
    max_blocks: u64,
}

impl<'a> StreamBlobs<'a> {
    pub fn new(api: &'a BlobApi, stream: &'a StreamId, max_blocks: u64) -> Self {
        Self {
            api,
            stream,
            what: stream.to_string(),
            prefix: naming::stream_prefix(stream),
            max_blocks,
        }
    }

    /// Blocks a segment may hold before the stream moves on to the next one.
    pub fn max_blocks(&self) -> u64 {
        self.max_blocks
    }

    pub fn segment_name(&self, number: u32) -> String {
        naming::segment_blob_name(self.stream, number)
    }

    pub fn corrupt(&self, detail: impl Into<String>) -> StoreError {
        StoreError::Corrupt {
            stream: self.what.clone(),
            detail: detail.into(),
        }
    }

    fn decode(&self, number: u32, read: &TailBytes) -> Result<Vec<StoredEvent>, StoreError> {
        self.decode_at(number, &read.bytes, read.offset)
    }

    /// Decodes whole records that start at offset `at` of segment `number`.
    fn decode_at(
        &self,
        number: u32,
        bytes: &[u8],
        at: u64,
    ) -> Result<Vec<StoredEvent>, StoreError> {
        decode_records(bytes, at)
            .map_err(|detail| self.corrupt(format!("segment {number}: {detail}")))
    }

    /// The stream's segments in order, numbered 0, 1, ... without gaps; or, when one of them
    /// is a tombstone (module `erase`), the version it holds.
    async fn list(&self) -> Result<Result<Vec<(u32, ListedSegment)>, u64>, StoreError> {
        let listed = self.api.list_segments(&self.prefix, &self.what).await?;
        if let Some(version) = listed.iter().find_map(|s| s.erased) {
            return Ok(Err(version));
        }
        let mut segments: Vec<(u32, ListedSegment)> = listed
            .into_iter()
            .filter_map(|s| naming::parse_segment_name(&self.prefix, &s.name).map(|n| (n, s)))
            .collect();
        segments.sort_by_key(|(number, _)| *number);
        for (index, (number, _)) in segments.iter().enumerate() {
            if u32::try_from(index).ok() != Some(*number) {
                return Err(self.corrupt(format!(
                    "segment {number} exists but segment {index} does not"
                )));
            }
        }
        Ok(Ok(segments))
    }

    /// Learns the end of the stream with no cached knowledge: one listing and one read from the
    /// last segment's hint (or, without a usable hint, from its start), range by range.
    pub async fn cold_load(&self) -> Result<Tail, StoreError> {
        let listed = match self.list().await? {
            Ok(listed) => listed,
            Err(version) => {
                return Ok(Tail {
                    erased: Some(version),
                    ..Tail::default()
                })
            }
        };
        let Some(((number, last), earlier)) = listed.split_last() else {
            return Ok(Tail {
                ids: IdKnowledge::of_empty_stream(),
                ..Tail::default()
            });
        };
        let base: u64 = earlier.iter().map(|(_, s)| s.length).sum();
        let previous = earlier.last().map(|(n, s)| Segment {
            number: *n,
            base: base - s.length,
            length: s.length,
            first_sequence: s.hint.map_or(0, |h| h.first_sequence),
        });
        if let Some(hint) = last.hint.filter(|h| h.length <= last.length) {
            let mut tail = Tail {
                current: Some(current_at(
                    *number,
                    base,
                    hint.first_sequence,
                    hint.length,
                    hint.blocks,
                )),
                previous,
                version: hint.version,
                known: VecDeque::new(),
                known_from: base + hint.length,
                last_recorded: hint.recorded.map(recorded_time),
                ids: IdKnowledge::default(),
                erased: None,
            };
            if let Absorbed::Read(end) = self
                .absorb_segment(&mut tail, hint.length, hint.version + 1, None)
                .await?
            {
                if let Some(current) = tail.current.as_mut() {
                    update_current(current, &end);
                }
                return Ok(settled(tail));
            }
        }
        // No usable hint: read the whole (last) segment. Every segment is created with its
        // metadata; without it, only the first segment's start is known.
        let first_sequence = match last.hint {
            Some(hint) => hint.first_sequence,
            None if *number == 0 => 1,
            None => {
                return Err(self.corrupt(format!("segment {number} has no firstsequence metadata")))
            }
        };
        let mut tail = Tail {
            current: Some(current_at(*number, base, first_sequence, 0, 0)),
            previous,
            version: first_sequence - 1,
            known: VecDeque::new(),
            known_from: base,
            last_recorded: None,
            ids: IdKnowledge::default(),
            erased: None,
        };
        match self
            .absorb_segment(&mut tail, 0, first_sequence, None)
            .await?
        {
            Absorbed::Read(end) => {
                if let Some(current) = tail.current.as_mut() {
                    update_current(current, &end);
                }
                Ok(settled(tail))
            }
            Absorbed::Missing | Absorbed::Wrong => Err(self.corrupt(format!(
                "segment {number} vanished while being read, or does not start with event \
                 {first_sequence}"
            ))),
        }
    }

    /// Reads `tail`'s current segment from `from` (an offset in it) to its end, range by
    /// range, absorbing each range's events into `tail` and handing those `request` asks for
    /// to `keep` (as its time line admits them). The first record read must be event
    /// `expect_first` (if any record follows `from`); when it is not, or `from` is not a record
    /// boundary, nothing is absorbed.
    async fn absorb_segment(
        &self,
        tail: &mut Tail,
        from: u64,
        expect_first: u64,
        mut keep: Option<Keep<'_>>,
    ) -> Result<Absorbed, StoreError> {
        let Some(number) = tail.current.as_ref().map(|c| c.segment.number) else {
            return Ok(Absorbed::Missing);
        };
        let mut start = StartCheck::Good;
        let mut checked = false;
        let stream = self.stream;
        let mut sink = |records: &[u8], at: u64| -> Result<Flow, StoreError> {
            let events = self.decode_at(number, records, at)?;
            if !checked {
                checked = true;
                if events
                    .first()
                    .is_some_and(|e| e.event.sequence != expect_first)
                {
                    start = StartCheck::Wrong;
                    return Ok(Flow::Stop);
                }
            }
            tail.absorb(stream, &events)?;
            if let Some(keep) = keep.as_mut() {
                for stored in events {
                    keep.offer(stored.event);
                }
            }
            Ok(Flow::More(MAX_READ_RANGE_BYTES))
        };
        let outcome = self
            .api
            .scan(
                &self.segment_name(number),
                from,
                Alignment::Exact,
                MAX_READ_RANGE_BYTES,
                &self.what,
                &mut sink,
            )
            .await?;
        Ok(match (outcome, start) {
            (ScanOutcome::Read(end), StartCheck::Good) => Absorbed::Read(end),
            (ScanOutcome::Missing, _) => Absorbed::Missing,
            _ => Absorbed::Wrong,
        })
    }

    /// Reads the current segment on from `from` (an offset in it where the record of event
    /// `expect_first` starts, or the end), follows full segments into their successors, and
    /// adds what it finds to `tail`. Returns the events read that `request` asks for (none
    /// without a request), or `None` when the blobs do not match `tail` (a reload is needed).
    pub async fn advance(
        &self,
        tail: &mut Tail,
        from: u64,
        expect_first: u64,
        request: Option<&ReadRequest>,
    ) -> Result<Option<Vec<RecordedEvent>>, StoreError> {
        let mut collected = Vec::new();
        let mut line = TimeLine::new(request.and_then(|r| r.as_of));
        let Some(current) = tail.current.as_ref() else {
            return Ok(None);
        };
        let known_length = current.segment.length;
        let keep = request.map(|request| Keep {
            request,
            line: &mut line,
            kept: &mut collected,
        });
        let mut end = match self.absorb_segment(tail, from, expect_first, keep).await? {
            Absorbed::Read(end) if end.length >= known_length => end,
            _ => return Ok(None),
        };
        loop {
            let Some(current) = tail.current.as_mut() else {
                return Ok(None);
            };
            update_current(current, &end);
            let number = current.segment.number;
            if !tail.is_full(self.max_blocks) {
                return Ok(Some(collected));
            }
            // The next segment, if there is one, starts right after this one.
            let first_sequence = tail.version + 1;
            let mut next = tail.clone();
            next.roll_over(first_sequence);
            let keep = request.map(|request| Keep {
                request,
                line: &mut line,
                kept: &mut collected,
            });
            end = match self
                .absorb_segment(&mut next, 0, first_sequence, keep)
                .await?
            {
                Absorbed::Missing => return Ok(Some(collected)),
                Absorbed::Read(end)
                    if end.hint.is_none_or(|h| h.first_sequence == first_sequence) =>
                {
                    end
                }
                _ => {
                    return Err(self.corrupt(format!(
                        "segment {} does not start at event {first_sequence}, where segment \
                         {number} ends",
                        number + 1
                    )))
                }
            };
            *tail = next;
        }
    }

    /// Reads on from the cached length (or loads cold when the cache no longer matches).
    pub async fn refresh(&self, tail: &mut Tail) -> Result<(), StoreError> {
        let from = tail.current.as_ref().map(|c| c.segment.length);
        let advanced = match from {
            Some(from) => {
                let next = tail.version + 1;
                self.advance(tail, from, next, None).await?.is_some()
            }
            None => false,
        };
        if !advanced {
            *tail = self.cold_load().await?;
        }
        Ok(())
    }

    /// The recorded time of the last event of `tail` (at its version), read from the blobs:
    /// for a view whose hint did not say it (hints written before they carried it). A view at
    /// version 0 has none.
    pub async fn last_recorded(&self, tail: &Tail) -> Result<Option<OffsetDateTime>, StoreError> {
        if tail.version == 0 {
            return Ok(None);
        }
        let Some(current) = tail.current.as_ref() else {
            return Ok(None);
        };
        let (number, length) = if current.segment.length > 0 {
            (current.segment.number, current.segment.length)
        } else {
            match tail.previous {
                Some(previous) => (previous.number, previous.length),
                None => return Err(self.corrupt("the last event is in no known segment")),
            }
        };
        // The last record is at most one block; look back a little first, then further.
        let mut back = MIN_READ_RANGE_BYTES;
        loop {
            let from = length.saturating_sub(back);
            let alignment = if from == 0 {
                Alignment::Exact
            } else {
                Alignment::NextRecord
            };
            let read = self
                .api
                .read_from(&self.segment_name(number), from, alignment, &self.what)
                .await?;
            if let ReadOutcome::Read(read) = read {
                let events = self.decode(number, &read)?;
                if let Some(last) = events.iter().find(|e| e.event.sequence == tail.version) {
                    return Ok(Some(last.event.timestamp));
                }
            }
            if from == 0 {
                return Err(self.corrupt(format!(
                    "segment {number} does not hold event {}",
                    tail.version
                )));
            }
            back = back.saturating_mul(4);
        }
    }

    /// The ids of events `watermark.version + 1 ..= to` (which exist), read from where the
    /// watermark says event `watermark.version + 1` starts, or from the stream's start when that
    /// proves wrong.
    pub async fn scan_ids(
        &self,
        watermark: Watermark,
        to: u64,
    ) -> Result<Vec<IdEntry>, StoreError> {
        let from = watermark.version.saturating_add(1);
        if from > to {
            return Ok(Vec::new());
        }
        let mut entries = Vec::new();
        let request = ReadRequest::range(from, Some(to));
        let starts = [
            Position {
                segment: watermark.segment,
                offset: watermark.offset,
                sequence: from,
            },
            Position {
                segment: watermark.segment.saturating_add(1),
                offset: 0,
                sequence: from,
            },
            Position {
                segment: 0,
                offset: 0,
                sequence: 1,
            },
        ];
        for start in starts {
            let mut visit = |segment: u32, stored: StoredEvent| {
                if stored.event.sequence >= from {
                    entries.push(IdEntry {
                        event_id: stored.event.event_id,
                        sequence: stored.event.sequence,
                        append: stored.append,
                        next: (segment, stored.end),
                    });
                }
                Visit::Took
            };
            if self
                .walk(
                    &request,
                    start,
                    ASSUMED_RECORD_BYTES,
                    PastTo::Stop,
                    &mut visit,
                )
                .await?
                .is_some()
            {
                return Ok(entries);
            }
            entries.clear();
        }
        Err(self.corrupt(format!("events {from} to {to} cannot be found")))
    }

    /// Reads the events of `request`, which must end (`to_sequence`) at or before a version of
    /// the stream known to exist, range by range from `start` (a position at or before
    /// `from_sequence`, as a bookmark or the cached tail knows it) or, when that proves wrong
    /// or there is none, from what the segments' metadata says (the segment holding
    /// `from_sequence`, from its hint when that is at or before it), crossing into later
    /// segments as needed and stopping at `to_sequence`. `record_bytes` sizes the first range.
    /// With an `ahead` limit (not as of a time), the events after `to_sequence` that the range
    /// holding it fetched are returned too, and the read ends before the event that would take
    /// the events after `ahead.after` over its budget (the caller keeps those for its next
    /// read; they are stored, so final, even past the version the request is bounded by).
    pub async fn read_range(
        &self,
        request: &ReadRequest,
        start: Option<Position>,
        record_bytes: u64,
        ahead: Option<AheadLimit>,
    ) -> Result<RangeRead, StoreError> {
        let from = request.from_sequence.max(1);
        let to = request.to_sequence.unwrap_or(from).max(from);
        if let Some(start) = start.filter(|p| p.sequence <= from) {
            if let Some(read) = self.scan_range(request, start, record_bytes, ahead).await? {
                return Ok(read);
            }
        }
        let (start, record_bytes) = if from == 1 {
            (
                Position {
                    segment: 0,
                    offset: 0,
                    sequence: 1,
                },
                record_bytes,
            )
        } else {
            let listed = self
                .list()
                .await?
                .map_err(|_| self.corrupt("the stream was erased while being read"))?;
            let holding = if listed.iter().all(|(_, s)| s.hint.is_some()) {
                listed
                    .iter()
                    .rev()
                    .find(|(_, s)| s.hint.is_some_and(|h| h.first_sequence <= from))
            } else {
                None
            };
            match holding.and_then(|(n, s)| s.hint.map(|h| (*n, h))) {
                Some((segment, hint)) => {
                    let records = (hint.version + 1).saturating_sub(hint.first_sequence);
                    let measured = hint.length.checked_div(records).unwrap_or(record_bytes);
                    if hint.version < from && hint.version >= hint.first_sequence {
                        let at_hint = Position {
                            segment,
                            offset: hint.length,
                            sequence: hint.version + 1,
                        };
                        if let Some(read) =
                            self.scan_range(request, at_hint, measured, ahead).await?
                        {
                            return Ok(read);
                        }
                    }
                    let at_start = Position {
                        segment,
                        offset: 0,
                        sequence: hint.first_sequence,
                    };
                    (at_start, measured)
                }
                None => (
                    Position {
                        segment: 0,
                        offset: 0,
                        sequence: 1,
                    },
                    record_bytes,
                ),
            }
        };
        self.scan_range(request, start, record_bytes, ahead)
            .await?
            .ok_or_else(|| {
                self.corrupt(format!(
                    "segment {} does not start with event {}, or events {from} to {to} are missing",
                    start.segment, start.sequence
                ))
            })
    }

    /// [`Self::read_range`] from `start`; `None` when `start` proves wrong (not a record
    /// boundary, another event there, no such segment) before any event was read. As of a
    /// time, the read ends at the first event recorded after it ([`TimeLine`]), and the
    /// position after the read is where that event starts.
    async fn scan_range(
        &self,
        request: &ReadRequest,
        start: Position,
        record_bytes: u64,
        ahead: Option<AheadLimit>,
    ) -> Result<Option<RangeRead>, StoreError> {
        let from = request.from_sequence.max(1);
        let mut line = TimeLine::new(request.as_of);
        let mut events = Vec::new();
        // Records past `to` that the last range already fetched are taken too: a reader that
        // goes on would fetch the same bytes again.
        let ahead = ahead.filter(|_| request.as_of.is_none());
        let past_to = match ahead {
            Some(_) => PastTo::TakeFetched,
            None => PastTo::Stop,
        };
        let mut ahead_bytes = 0u64;
        let mut visit = |_: u32, stored: StoredEvent| {
            if let Some(limit) = ahead.filter(|limit| stored.event.sequence > limit.after) {
                ahead_bytes = ahead_bytes.saturating_add((limit.size_of)(&stored.event));
                if ahead_bytes > limit.budget {
                    return Visit::Refused;
                }
            }
            let mut event = stored.event;
            if !line.admit(&mut event) {
                return Visit::Refused;
            }
            if event.sequence >= from {
                events.push(event);
            }
            Visit::Took
        };
        let walked = self
            .walk(request, start, record_bytes, past_to, &mut visit)
            .await?;
        Ok(walked.map(|walked| RangeRead {
            events,
            next: walked.next,
            record_bytes: walked.record_bytes,
        }))
    }

    /// Walks the records from `start` (a position at or before `request.from_sequence`),
    /// range by range and across segments, handing each to `visit`, up to
    /// `request.to_sequence` (and, as `past_to` says, the rest of the range that holds it) or
    /// a record `visit` refuses (the walk then ends before it). `record_bytes` sizes the first
    /// range. `None` when `start` proves wrong (not a record boundary, another event there, no
    /// such segment) before any record was read.
    async fn walk(
        &self,
        request: &ReadRequest,
        start: Position,
        record_bytes: u64,
        past_to: PastTo,
        visit: &mut (dyn FnMut(u32, StoredEvent) -> Visit + Send),
    ) -> Result<Option<Walked>, StoreError> {
        let from = request.from_sequence.max(1);
        let to = request.to_sequence.unwrap_or(from).max(from);
        let mut position = start;
        // Bytes and records seen, for sizing the ranges.
        let mut bytes_seen = 0u64;
        let mut records_seen = 0u64;
        let mut next = None::<Position>;
        loop {
            let segment = position.segment;
            let mut wrong = false;
            let mut expected = position.sequence;
            let mut sink = |records: &[u8], at: u64| -> Result<Flow, StoreError> {
                let stored = self.decode_at(segment, records, at)?;
                for record in stored {
                    let sequence = record.event.sequence;
                    if sequence != expected {
                        if expected == start.sequence && records_seen == 0 {
                            wrong = true;
                            return Ok(Flow::Stop);
                        }
                        return Err(self.corrupt(format!(
                            "segment {segment} holds event {sequence} where event {expected} \
                             belongs"
                        )));
                    }
                    let (record_start, record_end) = (record.start, record.end);
                    if visit(segment, record) == Visit::Refused {
                        next = Some(Position {
                            segment,
                            offset: record_start,
                            sequence,
                        });
                        return Ok(Flow::Stop);
                    }
                    expected += 1;
                    records_seen += 1;
                    bytes_seen += record_end - record_start;
                    if sequence >= to {
                        next = Some(Position {
                            segment,
                            offset: record_end,
                            sequence: sequence + 1,
                        });
                        if past_to == PastTo::Stop {
                            return Ok(Flow::Stop);
                        }
                    }
                }
                if next.is_some() {
                    // `to` was reached in this range; what it fetched after is taken.
                    return Ok(Flow::EndWithRange);
                }
                let average = bytes_seen.checked_div(records_seen).unwrap_or(record_bytes);
                Ok(Flow::More(wanted_bytes(expected, from, to, average)))
            };
            let first_range = wanted_bytes(position.sequence, from, to, record_bytes);
            let outcome = self
                .api
                .scan(
                    &self.segment_name(segment),
                    position.offset,
                    Alignment::Exact,
                    first_range,
                    &self.what,
                    &mut sink,
                )
                .await?;
            let untouched = records_seen == 0 && position == start;
            match outcome {
                _ if wrong => return Ok(None),
                ScanOutcome::Read(_) => {}
                ScanOutcome::Missing | ScanOutcome::NotABoundary if untouched => return Ok(None),
                ScanOutcome::Missing | ScanOutcome::NotABoundary => {
                    return Err(self.corrupt(format!(
                        "events {expected} to {to} are missing: segment {segment} does not \
                         continue the stream"
                    )))
                }
            }
            if let Some(next) = next {
                return Ok(Some(Walked {
                    next,
                    record_bytes: bytes_seen.checked_div(records_seen).unwrap_or(record_bytes),
                }));
            }
            // The segment ended before `to`: the stream goes on in the next one.
            position = Position {
                segment: segment
                    .checked_add(1)
                    .ok_or_else(|| self.corrupt("more segments than segment numbers".to_owned()))?,
                offset: 0,
                sequence: expected,
            };
        }
    }
}

/// What a walk's visitor did with a record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Visit {
    /// Taken: walk on.
    Took,
    /// Not part of the walk: it ends before this record.
    Refused,
}

/// How much a range read may return past what its caller needs: the events after `after`
/// are kept for a next read, at most `budget` bytes of them as `size_of` estimates.
#[derive(Debug, Clone, Copy)]
pub struct AheadLimit {
    pub after: u64,
    pub budget: u64,
    pub size_of: fn(&RecordedEvent) -> u64,
}

/// What a walk does with the records after `to_sequence` in the range that holds it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum PastTo {
    /// The walk ends at `to_sequence`.
    Stop,
    /// The walk hands them to its visitor too (until it refuses one) and ends with the range:
    /// they are fetched already. No further range is read for them.
    TakeFetched,
}

/// Where a walk ended.
struct Walked {
    /// Where the record after the last one taken starts.
    next: Position,
    /// Average bytes per record among those read.
    record_bytes: u64,
}

/// Where a read that absorbs a segment into a tail hands the events a request asks for.
struct Keep<'a> {
    request: &'a ReadRequest,
    line: &'a mut TimeLine,
    kept: &'a mut Vec<RecordedEvent>,
}

impl Keep<'_> {
    /// Takes `event` (the next of the stream) if the request asks for it and its time line
    /// has not ended.
    fn offer(&mut self, mut event: RecordedEvent) {
        if self.line.ended() || !self.line.admit(&mut event) {
            return;
        }
        let request = self.request;
        if event.sequence >= request.from_sequence
            && request.to_sequence.is_none_or(|to| event.sequence <= to)
        {
            self.kept.push(event);
        }
    }
}

/// A freshly loaded tail, with what its version tells of its ids: a stream with no event has
/// no id to recognise.
fn settled(mut tail: Tail) -> Tail {
    if tail.version == 0 {
        tail.ids = IdKnowledge::of_empty_stream();
    }
    tail
}

/// Bytes a range read asks for next: the events still wanted (from `next`, at least `from`,
/// up to `to`) at `record_bytes` each, plus a quarter (the scan bounds it).
fn wanted_bytes(next: u64, from: u64, to: u64, record_bytes: u64) -> u64 {
    let records = to.saturating_sub(next.max(from)).saturating_add(1);
    records
        .saturating_mul(record_bytes.max(1))
        .saturating_add(records.saturating_mul(record_bytes.max(1)) / 4)
}

/// The current-segment state before a read of it: `length` bytes holding `blocks` blocks.
fn current_at(number: u32, base: u64, first_sequence: u64, length: u64, blocks: u64) -> Current {
    Current {
        segment: Segment {
            number,
            base,
            length,
            first_sequence,
        },
        committed_blocks: blocks,
        refused_block: false,
        etag: None,
        hint_length: 0,
    }
}

/// The current segment after a scan of it to its end.
fn update_current(current: &mut Current, end: &ScanEnd) {
    update_current_with(current, end.length, end.etag.as_ref(), end.hint);
}

fn update_current_with(
    current: &mut Current,
    length: u64,
    etag: Option<&String>,
    hint: Option<super::client::SegmentHint>,
) {
    current.segment.length = length;
    if let Some(etag) = etag {
        current.etag = Some(etag.clone());
    }
    if let Some(hint) = hint {
        current.hint_length = current.hint_length.max(hint.length);
    }
}
