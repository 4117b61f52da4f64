//! Learning the state of a stream from its blobs: a cold load (list the segments, read the
//! last one from its metadata hint), a refresh (read on from a known offset), a window read
//! (for the idempotency check) and a full read (for `read`).
//!
//! Guarantees:
//! - nothing is believed without the content: a hint is used only if the byte before its
//!   offset ends a record and the first record after it is the hinted version + 1; otherwise
//!   the segment is read from its start;
//! - a tail is never learned by downloading a whole blob when a position in it is known: a
//!   cold load reads from the hint, a refresh from the cached length, a window read from the
//!   window's start (all open-ended reads);
//! - sequence numbers are checked wherever records are read: gap-free within a segment, the
//!   first record of a segment is the next sequence after the previous segment, and a
//!   segment's `firstsequence` metadata agrees; a violation is `Corrupt`, never papered over;
//! - a segment's block count is counted from its records (each append is one block, and its
//!   first record is the one whose sequence is the append's `first`), starting from the hint's
//!   `blocks` or from zero; a read's block-count header is never used (Azurite can send one of
//!   a later state than the body);
//! - a full segment (as many blocks as the store allows) is followed into the next segment
//!   when one exists, so readers and writers cross segment boundaries transparently.

use std::collections::VecDeque;

use super::client::{Alignment, BlobApi, ListedSegment, ReadOutcome, TailBytes};
use super::naming;
use super::record::{decode_records, StoredEvent};
use super::tail::{Current, Known, Segment, Tail};
use crate::stream::{ReadRequest, RecordedEvent, StoreError, StreamId};

/// Reads the blobs of one stream.
pub struct StreamBlobs<'a> {
    pub api: &'a BlobApi,
    pub stream: &'a StreamId,
    pub what: String,
    prefix: String,
    max_blocks: u64,
}

/// The events a full read returned and what it learned about the end of the stream.
pub struct FullRead {
    pub version: u64,
    pub events: Vec<RecordedEvent>,
    pub tail: Tail,
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
        decode_records(&read.bytes, read.offset)
            .map_err(|detail| self.corrupt(format!("segment {number}: {detail}")))
    }

    /// The stream's segments in order, numbered 0, 1, ... without gaps.
    async fn list(&self) -> Result<Vec<(u32, ListedSegment)>, StoreError> {
        let mut segments: Vec<(u32, ListedSegment)> = self
            .api
            .list_segments(&self.prefix, &self.what)
            .await?
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
        Ok(segments)
    }

    /// Learns the end of the stream with no cached knowledge: one listing and one read from the
    /// last segment's hint (or, without a usable hint, from its start).
    pub async fn cold_load(&self) -> Result<Tail, StoreError> {
        let listed = self.list().await?;
        let Some(((number, last), earlier)) = listed.split_last() else {
            return Ok(Tail::default());
        };
        let base: u64 = earlier.iter().map(|(_, s)| s.length).sum();
        let previous = earlier.last().map(|(n, s)| Segment {
            number: *n,
            base: base - s.length,
            length: s.length,
            first_sequence: s.hint.map_or(0, |h| h.first_sequence),
        });
        let name = self.segment_name(*number);
        if let Some(hint) = last.hint.filter(|h| h.length <= last.length) {
            if let ReadOutcome::Read(read) = self
                .api
                .read_from(&name, hint.length, Alignment::Exact, &self.what)
                .await?
            {
                let events = self.decode(*number, &read)?;
                if events
                    .first()
                    .is_none_or(|e| e.event.sequence == hint.version + 1)
                {
                    let mut tail = Tail {
                        current: Some(current_from(
                            *number,
                            base,
                            hint.first_sequence,
                            hint.blocks,
                            &read,
                        )),
                        previous,
                        version: hint.version,
                        known: VecDeque::new(),
                        known_from: base + hint.length,
                    };
                    tail.absorb(self.stream, &events)?;
                    return Ok(tail);
                }
            }
        }
        // No usable hint: read the whole (last) segment.
        let read = match self
            .api
            .read_from(&name, 0, Alignment::Exact, &self.what)
            .await?
        {
            ReadOutcome::Read(read) => read,
            ReadOutcome::Missing | ReadOutcome::NotABoundary => {
                return Err(self.corrupt(format!("segment {number} vanished while being read")))
            }
        };
        let events = self.decode(*number, &read)?;
        // Every segment is created with its metadata; without it, only the first segment's
        // start is known.
        let first_sequence = match last.hint.or(read.hint) {
            Some(hint) => hint.first_sequence,
            None if *number == 0 => 1,
            None => {
                return Err(self.corrupt(format!("segment {number} has no firstsequence metadata")))
            }
        };
        if let Some(first) = events.first() {
            if first.event.sequence != first_sequence {
                return Err(self.corrupt(format!(
                    "segment {number} starts with event {} but should start with {first_sequence}",
                    first.event.sequence
                )));
            }
        }
        let mut tail = Tail {
            current: Some(current_from(*number, base, first_sequence, 0, &read)),
            previous,
            version: first_sequence - 1,
            known: VecDeque::new(),
            known_from: base,
        };
        tail.absorb(self.stream, &events)?;
        Ok(tail)
    }

    /// Reads the current segment on from `from` (an offset in it that starts a record), follows
    /// full segments into their successors, and adds what it finds to `tail`. Returns the
    /// events read, or `None` when the blobs do not match `tail` (a reload is needed).
    pub async fn advance(
        &self,
        tail: &mut Tail,
        from: u64,
    ) -> Result<Option<Vec<StoredEvent>>, StoreError> {
        let Some(current) = &tail.current else {
            return Ok(None);
        };
        let number = current.segment.number;
        let mut outcome = self
            .api
            .read_from(
                &self.segment_name(number),
                from,
                Alignment::Exact,
                &self.what,
            )
            .await?;
        let mut collected = Vec::new();
        loop {
            let read = match outcome {
                ReadOutcome::Read(read) => read,
                ReadOutcome::Missing | ReadOutcome::NotABoundary => return Ok(None),
            };
            let Some(current) = tail.current.as_mut() else {
                return Ok(None);
            };
            if read.length < current.segment.length {
                return Ok(None);
            }
            let number = current.segment.number;
            let events = self.decode(number, &read)?;
            if read.offset == 0 {
                if let Some(first) = events.first() {
                    if first.event.sequence != current.segment.first_sequence {
                        return Err(self.corrupt(format!(
                            "segment {number} starts with event {} instead of {}",
                            first.event.sequence, current.segment.first_sequence
                        )));
                    }
                }
            }
            update_current(current, &read);
            tail.absorb(self.stream, &events)?;
            collected.extend(events);
            if !tail.is_full(self.max_blocks) {
                return Ok(Some(collected));
            }
            let next = self
                .api
                .read_from(
                    &self.segment_name(number + 1),
                    0,
                    Alignment::Exact,
                    &self.what,
                )
                .await?;
            let ReadOutcome::Read(read) = &next else {
                return Ok(Some(collected));
            };
            let first_sequence = read.hint.map_or(tail.version + 1, |h| h.first_sequence);
            if first_sequence != tail.version + 1 {
                return Err(self.corrupt(format!(
                    "segment {} starts at event {first_sequence}, but segment {number} ends at \
                     event {}",
                    number + 1,
                    tail.version
                )));
            }
            tail.roll_over(first_sequence);
            outcome = next;
        }
    }

    /// Reads on from the cached length (or loads cold when the cache no longer matches).
    pub async fn refresh(&self, tail: &mut Tail) -> Result<(), StoreError> {
        let from = tail.current.as_ref().map(|c| c.segment.length);
        let advanced = match from {
            Some(from) => self.advance(tail, from).await?.is_some(),
            None => false,
        };
        if !advanced {
            *tail = self.cold_load().await?;
        }
        Ok(())
    }

    /// Reads every event of the idempotency window (and on to the end of the stream).
    pub async fn load_window(&self, tail: &mut Tail) -> Result<(), StoreError> {
        let start = tail.window_start();
        let Some(current) = tail.current.clone() else {
            tail.known_from = 0;
            return Ok(());
        };
        let mut known = VecDeque::new();
        let mut from = None;
        let mut expected_next = None;
        let mut push = |stream_offset: u64,
                        events: &[StoredEvent],
                        expected_next: &mut Option<u64>|
         -> Result<(), StoreError> {
            for stored in events {
                let sequence = stored.event.sequence;
                if expected_next.is_some_and(|next| next != sequence) {
                    return Err(self.corrupt(format!(
                        "event {sequence} follows event {}",
                        expected_next.unwrap_or_default().saturating_sub(1)
                    )));
                }
                *expected_next = Some(sequence + 1);
                known.push_back(Known {
                    event_id: stored.event.event_id,
                    sequence,
                    append: stored.append,
                    start: stream_offset + stored.start,
                    end: stream_offset + stored.end,
                });
            }
            Ok(())
        };
        let mut current_from = start.saturating_sub(current.segment.base);
        if let Some(previous) = tail.previous.filter(|p| start < p.end()) {
            let name = self.segment_name(previous.number);
            let local = start.saturating_sub(previous.base);
            match self
                .api
                .read_from(&name, local, Alignment::NextRecord, &self.what)
                .await?
            {
                ReadOutcome::Read(read) => {
                    from = Some(previous.base + read.offset);
                    let events = self.decode(previous.number, &read)?;
                    push(previous.base, &events, &mut expected_next)?;
                }
                ReadOutcome::Missing | ReadOutcome::NotABoundary => {
                    return Err(self.corrupt(format!(
                        "segment {} changed after it was full",
                        previous.number
                    )))
                }
            }
            current_from = 0;
        }
        let read = match self
            .api
            .read_from(
                &self.segment_name(current.segment.number),
                current_from,
                Alignment::NextRecord,
                &self.what,
            )
            .await?
        {
            ReadOutcome::Read(read) => read,
            ReadOutcome::Missing | ReadOutcome::NotABoundary => {
                *tail = self.cold_load().await?;
                return Ok(());
            }
        };
        let from = from.unwrap_or(current.segment.base + read.offset);
        let events = self.decode(current.segment.number, &read)?;
        if read.offset == 0 {
            if let Some(first) = events.first() {
                if first.event.sequence != current.segment.first_sequence {
                    return Err(self.corrupt(format!(
                        "segment {} starts with event {} instead of {}",
                        current.segment.number,
                        first.event.sequence,
                        current.segment.first_sequence
                    )));
                }
            }
        }
        push(current.segment.base, &events, &mut expected_next)?;
        let new_blocks = events
            .iter()
            .filter(|s| s.event.sequence > tail.version && s.event.sequence == s.append.first)
            .count() as u64;
        if let Some(current) = tail.current.as_mut() {
            update_current(current, &read);
            current.committed_blocks += new_blocks;
        }
        if let Some(last) = known.back() {
            if last.sequence < tail.version {
                *tail = self.cold_load().await?;
                return Ok(());
            }
            tail.version = last.sequence;
        }
        tail.replace_known(from, known);
        Ok(())
    }

    /// Reads the events `request` asks for, from the segment holding `from_sequence` on (the
    /// `firstsequence` metadata of the segments says which), and the end of the stream.
    pub async fn read_full(&self, request: &ReadRequest) -> Result<FullRead, StoreError> {
        let listed = self.list().await?;
        if listed.is_empty() {
            return Ok(FullRead {
                version: 0,
                events: Vec::new(),
                tail: Tail::default(),
            });
        }
        let all_hinted = listed.iter().all(|(_, s)| s.hint.is_some());
        let start_index = if all_hinted {
            listed
                .iter()
                .rposition(|(_, s)| {
                    s.hint
                        .is_some_and(|h| h.first_sequence <= request.from_sequence)
                })
                .unwrap_or(0)
        } else {
            0
        };
        let mut base: u64 = listed[..start_index].iter().map(|(_, s)| s.length).sum();
        let mut version = None::<u64>;
        let mut events = Vec::new();
        let mut tail = Tail::default();
        for (index, (number, listed_segment)) in listed.iter().enumerate().skip(start_index) {
            let read = match self
                .api
                .read_from(&self.segment_name(*number), 0, Alignment::Exact, &self.what)
                .await?
            {
                ReadOutcome::Read(read) => read,
                ReadOutcome::Missing | ReadOutcome::NotABoundary => {
                    return Err(self.corrupt(format!("segment {number} vanished while being read")))
                }
            };
            let stored = self.decode(*number, &read)?;
            let hinted_first = listed_segment.hint.or(read.hint).map(|h| h.first_sequence);
            let first_sequence = match (version, hinted_first, stored.first()) {
                (Some(v), _, _) => v + 1,
                (None, Some(first), _) => first,
                (None, None, Some(first)) => first.event.sequence,
                (None, None, None) => 1,
            };
            if hinted_first.is_some_and(|h| h != first_sequence) {
                return Err(self.corrupt(format!(
                    "segment {number} says it starts at event {}, but the events before it end at {}",
                    hinted_first.unwrap_or_default(),
                    first_sequence - 1
                )));
            }
            let mut next = first_sequence;
            for s in &stored {
                if s.event.sequence != next {
                    return Err(self.corrupt(format!(
                        "segment {number} holds event {} where event {next} belongs",
                        s.event.sequence
                    )));
                }
                next += 1;
            }
            version = Some(next - 1);
            if index + 1 == listed.len() {
                let previous = index.checked_sub(1).map(|p| {
                    let (n, s) = &listed[p];
                    Segment {
                        number: *n,
                        base: base - s.length,
                        length: s.length,
                        first_sequence: s.hint.map_or(0, |h| h.first_sequence),
                    }
                });
                tail = Tail {
                    current: Some(current_from(*number, base, first_sequence, 0, &read)),
                    previous,
                    version: first_sequence - 1,
                    known: VecDeque::new(),
                    known_from: base,
                };
                tail.absorb(self.stream, &stored)?;
            }
            base += read.length;
            events.extend(
                stored
                    .into_iter()
                    .map(|s| s.event)
                    .filter(|e| request.includes(e)),
            );
        }
        Ok(FullRead {
            version: version.unwrap_or(0),
            events,
            tail,
        })
    }
}

/// The current-segment state after reading it to its end, before the events read are
/// absorbed: `blocks` is the number of blocks before the first event read.
fn current_from(
    number: u32,
    base: u64,
    first_sequence: u64,
    blocks: u64,
    read: &TailBytes,
) -> Current {
    Current {
        segment: Segment {
            number,
            base,
            length: read.length,
            first_sequence,
        },
        committed_blocks: blocks,
        refused_block: false,
        etag: read.etag.clone(),
        hint_length: read.hint.map_or(0, |h| h.length),
    }
}

fn update_current(current: &mut Current, read: &TailBytes) {
    current.segment.length = read.length;
    if read.etag.is_some() {
        current.etag = read.etag.clone();
    }
    if let Some(hint) = read.hint {
        current.hint_length = current.hint_length.max(hint.length);
    }
}
