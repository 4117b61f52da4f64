//! What one process knows about the end of a stream (its [`Tail`]).
//!
//! The blob content is the truth; a `Tail` is a cached view of it: the stream's last segment
//! and its length, the version at that length, the recorded time of the last event (which the
//! next append must not go below), where the last records start (within the last
//! [`KNOWN_WINDOW_BYTES`], so that a read of the newest events starts where they are), and what
//! this process knows of the stream's event ids ([`IdKnowledge`], for recognising retries,
//! module `ids`). Offsets in a tail are stream-wide: a segment starts at the sum of the lengths
//! of the segments before it ([`Segment::base`]).

use std::collections::VecDeque;

use time::OffsetDateTime;
use uuid::Uuid;

use super::ids::{IdEntry, IdKnowledge};
use super::record::{AppendSpan, StoredEvent};
use crate::stream::{NewEvent, StoreError, StreamId};

/// How far back (in bytes of records) a process remembers where each record starts.
pub const KNOWN_WINDOW_BYTES: u64 = 128 * 1024;

/// One segment blob of a stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Segment {
    pub number: u32,
    /// Where the segment starts in the stream's bytes (the lengths of earlier segments).
    pub base: u64,
    /// Its length in bytes, as last seen.
    pub length: u64,
    /// The sequence number its first event has or will have.
    pub first_sequence: u64,
}

impl Segment {
    pub fn end(&self) -> u64 {
        self.base + self.length
    }
}

/// The segment appends go to, with what the service last said about it.
#[derive(Debug, Clone)]
pub struct Current {
    pub segment: Segment,
    /// Blocks committed at `segment.length`. Counted from the content (each append is one
    /// block and its records name it), never taken from a read's headers.
    pub committed_blocks: u64,
    /// The service refused a block because the segment holds the most it can.
    pub refused_block: bool,
    /// ETag at `segment.length` (for the conditional metadata write).
    pub etag: Option<String>,
    /// Length recorded in the segment's metadata hint, as far as this process knows.
    pub hint_length: u64,
}

impl Current {
    /// Segment `number`, just created and still empty: it starts at stream offset `base` and
    /// with event `first_sequence`, and has the ETag `etag` when its creation answered one.
    pub fn empty(number: u32, base: u64, first_sequence: u64, etag: Option<String>) -> Self {
        Self {
            segment: Segment {
                number,
                base,
                length: 0,
                first_sequence,
            },
            committed_blocks: 0,
            refused_block: false,
            etag,
            hint_length: 0,
        }
    }
}

/// An event whose record lies in the window of known positions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Known {
    pub event_id: Uuid,
    pub sequence: u64,
    pub append: AppendSpan,
    /// Stream-wide offsets of its record.
    pub start: u64,
    pub end: u64,
}

/// A view of the end of one stream.
#[derive(Debug, Clone, Default)]
pub struct Tail {
    /// The stream's last segment; `None` when the stream has no segment blob.
    pub current: Option<Current>,
    /// The (full, final) segment before `current`, if known.
    pub previous: Option<Segment>,
    /// The stream's version at the end of `current`.
    pub version: u64,
    /// The last events, in sequence order, every one whose record starts at or after
    /// `known_from`.
    pub known: VecDeque<Known>,
    /// Stream-wide offset from which every event is in `known`.
    pub known_from: u64,
    /// The recorded time of event `version` (`None`: no event, or not known yet).
    pub last_recorded: Option<OffsetDateTime>,
    /// What this process knows of the stream's event ids.
    pub ids: IdKnowledge,
    /// The stream was erased (module `erase`) at this version: it reads as version 0 and
    /// takes no appends.
    pub erased: Option<u64>,
}

impl Tail {
    /// Stream-wide offset of the end of the stream as known.
    pub fn end(&self) -> u64 {
        self.current.as_ref().map_or(0, |c| c.segment.end())
    }

    /// Where the window of known positions starts.
    pub fn window_start(&self) -> u64 {
        let floor = self
            .previous
            .map(|p| p.base)
            .or(self.current.as_ref().map(|c| c.segment.base))
            .unwrap_or(0);
        self.end().saturating_sub(KNOWN_WINDOW_BYTES).max(floor)
    }

    /// Whether the current segment takes no more blocks.
    pub fn is_full(&self, max_blocks: u64) -> bool {
        self.current
            .as_ref()
            .is_some_and(|c| c.refused_block || c.committed_blocks >= max_blocks)
    }

    fn known_at(&self, sequence: u64) -> Option<&Known> {
        let first = self.known.front()?.sequence;
        let index = usize::try_from(sequence.checked_sub(first)?).ok()?;
        self.known.get(index).filter(|k| k.sequence == sequence)
    }

    /// Adds events read from the current segment. Events up to the version are already
    /// counted and skipped; the rest must continue it without a gap, and each append among
    /// them is one more block.
    pub fn absorb(&mut self, stream: &StreamId, events: &[StoredEvent]) -> Result<(), StoreError> {
        let Some(current) = self.current.as_mut() else {
            return Ok(());
        };
        let base = current.segment.base;
        for stored in events {
            let sequence = stored.event.sequence;
            if sequence <= self.version {
                continue;
            }
            if sequence != self.version + 1 {
                return Err(StoreError::Corrupt {
                    stream: stream.to_string(),
                    detail: format!(
                        "segment {} holds event {sequence} right after event {}",
                        current.segment.number, self.version
                    ),
                });
            }
            if stored.append.first == sequence {
                current.committed_blocks += 1;
            }
            self.ids.push(IdEntry {
                event_id: stored.event.event_id,
                sequence,
                append: stored.append,
                next: (current.segment.number, stored.end),
            });
            self.last_recorded = Some(stored.event.timestamp);
            self.known.push_back(Known {
                event_id: stored.event.event_id,
                sequence,
                append: stored.append,
                start: base + stored.start,
                end: base + stored.end,
            });
            self.version = sequence;
        }
        self.trim();
        Ok(())
    }

    /// Records an append this process just wrote at `position` of the current segment,
    /// recorded at `recorded`: `ends` are the ends of its records relative to `position`.
    pub fn record_append(
        &mut self,
        events: &[NewEvent],
        span: AppendSpan,
        position: u64,
        ends: &[usize],
        recorded: OffsetDateTime,
    ) {
        let Some(current) = self.current.as_mut() else {
            return;
        };
        let base = current.segment.base + position;
        let mut start = base;
        for ((event, sequence), &end) in events.iter().zip(span.first..).zip(ends) {
            self.ids.push(IdEntry {
                event_id: event.event_id,
                sequence,
                append: span,
                next: (current.segment.number, position + end as u64),
            });
            let end = base + end as u64;
            self.known.push_back(Known {
                event_id: event.event_id,
                sequence,
                append: span,
                start,
                end,
            });
            start = end;
        }
        current.segment.length = start - current.segment.base;
        self.version = span.last;
        self.last_recorded = Some(recorded);
        self.trim();
    }

    /// Moves on to the next segment, which starts with event `first_sequence`; the current one
    /// becomes the previous (final) segment.
    pub fn roll_over(&mut self, first_sequence: u64) {
        let Some(current) = self.current.take() else {
            return;
        };
        let old = current.segment;
        self.previous = Some(old);
        self.current = Some(Current::empty(
            old.number + 1,
            old.end(),
            first_sequence,
            None,
        ));
    }

    /// Forgets the events that have left the window.
    fn trim(&mut self) {
        let start = self.window_start();
        while let Some(front) = self.known.front().copied() {
            if front.end > start {
                break;
            }
            self.known.pop_front();
            self.known_from = self.known_from.max(front.end);
        }
    }

    /// Where, in the current segment, the event after `sequence` starts, if known.
    pub fn position_after(&self, sequence: u64) -> Option<u64> {
        let current = self.current.as_ref()?;
        let segment = current.segment;
        if sequence >= self.version {
            return Some(segment.length);
        }
        if sequence + 1 == segment.first_sequence {
            return Some(0);
        }
        self.known_at(sequence + 1)
            .filter(|k| k.start >= segment.base)
            .map(|k| k.start - segment.base)
    }
}

#[cfg(test)]
mod tests {
    use serde_json::value::RawValue;

    use super::*;

    fn stream() -> StreamId {
        StreamId::new("Bank", "Account", "1").unwrap()
    }

    fn new_event() -> NewEvent {
        NewEvent::from_raw("Deposited", RawValue::from_string("1".into()).unwrap())
    }

    /// A tail holding appends of the given sizes, every record 10 bytes.
    fn tail_with(appends: &[usize]) -> (Tail, Vec<Vec<NewEvent>>) {
        let mut tail = Tail {
            current: Some(Current::empty(0, 0, 1, None)),
            ..Tail::default()
        };
        let mut batches = Vec::new();
        for &size in appends {
            let batch: Vec<NewEvent> = (0..size).map(|_| new_event()).collect();
            let first = tail.version + 1;
            let span = AppendSpan {
                first,
                last: first + size as u64 - 1,
            };
            let offset = tail.end();
            let stored: Vec<StoredEvent> = batch
                .iter()
                .zip(first..)
                .enumerate()
                .map(|(i, (e, sequence))| StoredEvent {
                    event: crate::stream::RecordedEvent {
                        sequence,
                        event_id: e.event_id,
                        event_type: e.event_type.clone(),
                        data: e.data.clone(),
                        timestamp: time::OffsetDateTime::UNIX_EPOCH,
                        metadata: Default::default(),
                    },
                    append: span,
                    start: offset + 10 * i as u64,
                    end: offset + 10 * (i as u64 + 1),
                })
                .collect();
            if let Some(c) = tail.current.as_mut() {
                c.segment.length += 10 * size as u64;
            }
            tail.absorb(&stream(), &stored).unwrap();
            batches.push(batch);
        }
        (tail, batches)
    }

    #[test]
    fn positions_times_and_ids_follow_what_was_absorbed() {
        let (tail, batches) = tail_with(&[2, 3, 1]);
        assert_eq!(tail.version, 6);
        assert_eq!(tail.position_after(2), Some(20));
        assert_eq!(tail.position_after(0), Some(0));
        assert_eq!(tail.position_after(6), Some(60));
        assert_eq!(tail.last_recorded, Some(time::OffsetDateTime::UNIX_EPOCH));
        let recent = tail.ids.recent_by_id();
        let second = &recent[&batches[1][1].event_id];
        assert_eq!((second.sequence, second.append), (4, (3, 5)));
        assert!(tail.ids.covers_after(0, 6));
    }

    #[test]
    fn the_window_of_positions_forgets_old_records() {
        let per_append = (KNOWN_WINDOW_BYTES / 10) as usize;
        let (tail, _) = tail_with(&[3, per_append - 1, 4]);
        // The first append left the window of positions; what comes after it is still known.
        assert_eq!(tail.position_after(3), None);
        assert_eq!(tail.position_after(10), Some(100));
        // Ids are kept past the window (they are not indexed yet).
        assert!(tail.ids.covers_after(0, tail.version));
    }
}
