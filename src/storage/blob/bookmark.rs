//! Where recent range reads of each stream stopped, so the next read of a reader walking the
//! stream (a `ReadStream` page after page, a replay or a catch-up chunk after chunk) starts
//! right there instead of at the start of a segment; and the events such a reader's reads
//! fetched past what they asked for (*read-ahead*), so its next reads cost no request.
//!
//! Guarantees:
//! - a bookmark is only a hint: the read that uses it checks that the record there is the
//!   event it names, and starts elsewhere when it is not (see `view::StreamBlobs::read_range`);
//! - read-ahead events are events a read found stored (possibly past the version it was
//!   bounded by), which never change; they are handed out once (a read takes them) and only
//!   from their first sequence;
//! - memory is bounded: at most [`BOOKMARKS_PER_STREAM`] bookmarks for each of at most
//!   [`MAX_BOOKMARKED_STREAMS`] streams, each a few numbers; read-ahead events of at most
//!   [`READ_AHEAD_BUDGET_BYTES`] in all (estimated from their sizes), the oldest dropped first.

use std::collections::{HashMap, VecDeque};
use std::sync::{Mutex, MutexGuard};

use super::view::Position;
use crate::stream::{RecordedEvent, StreamId};

/// Bookmarks kept per stream (readers of one stream at different places).
pub const BOOKMARKS_PER_STREAM: usize = 4;
/// Streams with bookmarks one store keeps; past this, an arbitrary stream's are dropped.
pub const MAX_BOOKMARKED_STREAMS: usize = 1_024;
/// Most bytes of events one read fetches past what it was asked for (see the module
/// documentation), and the most kept for one stream.
pub const READ_AHEAD_BYTES: u64 = 4 * 1024 * 1024;
/// Most bytes of read-ahead events one store keeps, all streams together.
pub const READ_AHEAD_BUDGET_BYTES: u64 = 16 * 1024 * 1024;
/// Bytes counted for an event besides its data and type (ids, numbers, metadata, allocation).
const EVENT_OVERHEAD_BYTES: u64 = 256;
/// Most bytes of records a read skips when it starts at a bookmark before its first event
/// (rather than where the segments' metadata says): when read-ahead events were dropped, the
/// read before them is within this.
pub const MAX_SKIPPED_BYTES: u64 = 2 * READ_AHEAD_BYTES;

/// Where a read stopped, and the average size of the records it read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Bookmark {
    pub position: Position,
    pub record_bytes: u64,
    /// The largest event the read returned, by the estimate of [`events_bytes`].
    pub largest_event: u64,
}

/// The bookmarks of one store (shared by its clones).
#[derive(Debug, Default)]
pub struct Bookmarks {
    marks: Mutex<HashMap<StreamId, VecDeque<Bookmark>>>,
    ahead: Mutex<Ahead>,
}

/// Read-ahead events of every stream, oldest first, and their estimated size.
#[derive(Debug, Default)]
struct Ahead {
    kept: VecDeque<(StreamId, Vec<RecordedEvent>, u64)>,
    bytes: u64,
}

/// How many events one read fetches ahead when the largest event seen so far takes
/// `largest_event` bytes (by [`events_bytes`]): as many as [`READ_AHEAD_BYTES`] holds if none
/// is larger, so that what is read ahead is kept.
pub fn read_ahead_events(largest_event: u64) -> u64 {
    READ_AHEAD_BYTES / largest_event.max(EVENT_OVERHEAD_BYTES)
}

/// The estimated memory of `event`.
pub fn event_bytes(event: &RecordedEvent) -> u64 {
    (event.data.get().len() + event.event_type.len()) as u64 + EVENT_OVERHEAD_BYTES
}

/// The estimated memory of `events`.
pub fn events_bytes(events: &[RecordedEvent]) -> u64 {
    events.iter().map(event_bytes).sum()
}

impl Bookmarks {
    fn lock(&self) -> MutexGuard<'_, HashMap<StreamId, VecDeque<Bookmark>>> {
        // Entries are replaced whole, so a panic elsewhere cannot leave one half-written.
        self.marks
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn lock_ahead(&self) -> MutexGuard<'_, Ahead> {
        // Entries are added and removed whole, with the byte count updated in the same lock.
        self.ahead
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn drop_ahead_of(ahead: &mut Ahead, stream: &StreamId) {
        if let Some(index) = ahead.kept.iter().position(|(s, _, _)| s == stream) {
            if let Some((_, _, dropped)) = ahead.kept.remove(index) {
                ahead.bytes = ahead.bytes.saturating_sub(dropped);
            }
        }
    }

    /// Takes the read-ahead events of `stream` if they start at event `from`.
    pub fn take_ahead(&self, stream: &StreamId, from: u64) -> Option<Vec<RecordedEvent>> {
        let mut ahead = self.lock_ahead();
        let index = ahead.kept.iter().position(|(s, events, _)| {
            s == stream && events.first().is_some_and(|e| e.sequence == from)
        })?;
        let (_, events, bytes) = ahead.kept.remove(index)?;
        ahead.bytes = ahead.bytes.saturating_sub(bytes);
        Some(events)
    }

    /// Keeps `events` (contiguous, of `stream`) for the next read that starts at the first,
    /// replacing what was kept for the stream: as many of the first as fit in
    /// [`READ_AHEAD_BYTES`]; drops the oldest events of other streams to stay within
    /// [`READ_AHEAD_BUDGET_BYTES`].
    pub fn keep_ahead(&self, stream: &StreamId, mut events: Vec<RecordedEvent>) {
        let mut bytes = 0u64;
        let fit = events
            .iter()
            .position(|event| {
                bytes = bytes.saturating_add(event_bytes(event));
                bytes > READ_AHEAD_BYTES
            })
            .unwrap_or(events.len());
        events.truncate(fit);
        let bytes = events_bytes(&events);
        let mut ahead = self.lock_ahead();
        Self::drop_ahead_of(&mut ahead, stream);
        if events.is_empty() {
            return;
        }
        while ahead.bytes.saturating_add(bytes) > READ_AHEAD_BUDGET_BYTES {
            let Some((_, _, dropped)) = ahead.kept.pop_front() else {
                break;
            };
            ahead.bytes = ahead.bytes.saturating_sub(dropped);
        }
        ahead.bytes = ahead.bytes.saturating_add(bytes);
        ahead.kept.push_back((stream.clone(), events, bytes));
    }

    /// The bookmark at event `sequence` of `stream`, if a read stopped right before it.
    pub fn at(&self, stream: &StreamId, sequence: u64) -> Option<Bookmark> {
        self.lock()
            .get(stream)?
            .iter()
            .find(|b| b.position.sequence == sequence)
            .copied()
    }

    /// The nearest bookmark at or before event `sequence` of `stream` from which reading to it
    /// skips at most about [`MAX_SKIPPED_BYTES`] (by the bookmark's average record size).
    pub fn near(&self, stream: &StreamId, sequence: u64) -> Option<Bookmark> {
        self.lock()
            .get(stream)?
            .iter()
            .filter(|b| b.position.sequence <= sequence)
            .filter(|b| {
                (sequence - b.position.sequence).saturating_mul(b.record_bytes.max(1))
                    <= MAX_SKIPPED_BYTES
            })
            .max_by_key(|b| b.position.sequence)
            .copied()
    }

    /// The average record size last seen in `stream`, if any read learned it.
    pub fn record_bytes(&self, stream: &StreamId) -> Option<u64> {
        self.lock().get(stream)?.back().map(|b| b.record_bytes)
    }

    /// Keeps `bookmark` (replacing one at the same event, else the oldest beyond the bound).
    pub fn remember(&self, stream: &StreamId, bookmark: Bookmark) {
        let mut all = self.lock();
        if !all.contains_key(stream) && all.len() >= MAX_BOOKMARKED_STREAMS {
            if let Some(evicted) = all.keys().next().cloned() {
                all.remove(&evicted);
            }
        }
        let kept = all.entry(stream.clone()).or_default();
        kept.retain(|b| b.position.sequence != bookmark.position.sequence);
        if kept.len() >= BOOKMARKS_PER_STREAM {
            kept.pop_front();
        }
        kept.push_back(bookmark);
    }

    /// Drops what is known of `stream` (after a read found a bookmark wrong or failed).
    pub fn forget(&self, stream: &StreamId) {
        self.lock().remove(stream);
        Self::drop_ahead_of(&mut self.lock_ahead(), stream);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mark(sequence: u64) -> Bookmark {
        Bookmark {
            position: Position {
                segment: 0,
                offset: sequence * 10,
                sequence,
            },
            record_bytes: 10,
            largest_event: 300,
        }
    }

    #[test]
    fn bookmarks_are_bounded_per_stream_and_in_all() {
        let bookmarks = Bookmarks::default();
        let stream = StreamId::new("Bank", "Account", "1").unwrap();
        for sequence in 1..=10 {
            bookmarks.remember(&stream, mark(sequence));
        }
        assert_eq!(bookmarks.at(&stream, 10), Some(mark(10)));
        assert_eq!(bookmarks.at(&stream, 6), None);
        assert_eq!(bookmarks.near(&stream, 15), Some(mark(10)));
        assert_eq!(bookmarks.near(&stream, 6), None);
        let far = 10 + MAX_SKIPPED_BYTES / 10 + 1;
        assert_eq!(bookmarks.near(&stream, far), None);
        assert_eq!(bookmarks.lock()[&stream].len(), BOOKMARKS_PER_STREAM);
        for n in 0..MAX_BOOKMARKED_STREAMS + 5 {
            let other = StreamId::new("Bank", "Account", n.to_string()).unwrap();
            bookmarks.remember(&other, mark(1));
        }
        assert_eq!(bookmarks.lock().len(), MAX_BOOKMARKED_STREAMS);
        bookmarks.forget(&stream);
        assert_eq!(bookmarks.at(&stream, 10), None);
    }

    fn events(from: u64, n: u64, data_bytes: usize) -> Vec<RecordedEvent> {
        let data =
            serde_json::value::RawValue::from_string(format!("\"{}\"", "d".repeat(data_bytes)))
                .unwrap();
        (from..from + n)
            .map(|sequence| RecordedEvent {
                sequence,
                event_id: uuid::Uuid::from_u128(sequence.into()),
                event_type: "T".into(),
                data: data.clone(),
                timestamp: time::OffsetDateTime::UNIX_EPOCH,
                metadata: Default::default(),
            })
            .collect()
    }

    #[test]
    fn read_ahead_is_taken_once_from_its_start_and_bounded() {
        let bookmarks = Bookmarks::default();
        let stream = StreamId::new("Bank", "Account", "1").unwrap();
        bookmarks.keep_ahead(&stream, events(11, 5, 100));
        assert!(bookmarks.take_ahead(&stream, 12).is_none());
        let taken = bookmarks.take_ahead(&stream, 11).unwrap();
        assert_eq!(taken.len(), 5);
        assert!(bookmarks.take_ahead(&stream, 11).is_none());
        assert_eq!(bookmarks.lock_ahead().bytes, 0);

        // Over the per-read bound: the first events that fit are kept, none when the first
        // does not fit.
        bookmarks.keep_ahead(&stream, events(1, 5, (READ_AHEAD_BYTES / 3) as usize));
        assert_eq!(bookmarks.take_ahead(&stream, 1).map(|e| e.len()), Some(2));
        bookmarks.keep_ahead(&stream, events(1, 5, READ_AHEAD_BYTES as usize));
        assert!(bookmarks.take_ahead(&stream, 1).is_none());
        // Many streams: the budget holds, the oldest go first.
        let per = (READ_AHEAD_BYTES / 4) as usize;
        for n in 0..40 {
            let other = StreamId::new("Bank", "Account", n.to_string()).unwrap();
            bookmarks.keep_ahead(&other, events(1, 1, per));
        }
        assert!(bookmarks.lock_ahead().bytes <= READ_AHEAD_BUDGET_BYTES);
        let first = StreamId::new("Bank", "Account", "0").unwrap();
        let last = StreamId::new("Bank", "Account", "39").unwrap();
        assert!(bookmarks.take_ahead(&first, 1).is_none());
        assert!(bookmarks.take_ahead(&last, 1).is_some());
        bookmarks.keep_ahead(&last, events(1, 1, 10));
        bookmarks.forget(&last);
        assert!(bookmarks.take_ahead(&last, 1).is_none());
    }
}
