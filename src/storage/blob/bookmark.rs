//! Where recent range reads of each stream stopped, so the next read of a reader walking the
//! stream (a `ReadStream` page after page, a replay or a catch-up chunk after chunk) starts
//! right there instead of at the start of a segment.
//!
//! Guarantees:
//! - a bookmark is only a hint: the read that uses it checks that the record there is the
//!   event it names, and starts elsewhere when it is not (see `view::StreamBlobs::read_range`);
//! - memory is bounded: at most [`BOOKMARKS_PER_STREAM`] bookmarks for each of at most
//!   [`MAX_BOOKMARKED_STREAMS`] streams, each a few numbers; past that the oldest go.

use std::collections::{HashMap, VecDeque};
use std::sync::{Mutex, MutexGuard};

use super::view::Position;
use crate::stream::StreamId;

/// Bookmarks kept per stream (readers of one stream at different places).
pub const BOOKMARKS_PER_STREAM: usize = 4;
/// Streams with bookmarks one store keeps; past this, an arbitrary stream's are dropped.
pub const MAX_BOOKMARKED_STREAMS: usize = 1_024;

/// Where a read stopped, and the average size of the records it read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Bookmark {
    pub position: Position,
    pub record_bytes: u64,
}

/// The bookmarks of one store (shared by its clones).
#[derive(Debug, Default)]
pub struct Bookmarks(Mutex<HashMap<StreamId, VecDeque<Bookmark>>>);

impl Bookmarks {
    fn lock(&self) -> MutexGuard<'_, HashMap<StreamId, VecDeque<Bookmark>>> {
        // Entries are replaced whole, so a panic elsewhere cannot leave one half-written.
        self.0
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// The bookmark at event `sequence` of `stream`, if a read stopped right before it.
    pub fn at(&self, stream: &StreamId, sequence: u64) -> Option<Bookmark> {
        self.lock()
            .get(stream)?
            .iter()
            .find(|b| b.position.sequence == sequence)
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
        assert_eq!(bookmarks.lock()[&stream].len(), BOOKMARKS_PER_STREAM);
        for n in 0..MAX_BOOKMARKED_STREAMS + 5 {
            let other = StreamId::new("Bank", "Account", n.to_string()).unwrap();
            bookmarks.remember(&other, mark(1));
        }
        assert_eq!(bookmarks.lock().len(), MAX_BOOKMARKED_STREAMS);
        bookmarks.forget(&stream);
        assert_eq!(bookmarks.at(&stream, 10), None);
    }
}
