//! What this process last knew of each read-model row, and one catch-up at a time per stream,
//! so that the notifications of one stream cost one catch-up, and a duplicate none.
//!
//! Guarantees:
//! - an entry (read model, stream) → (projection version, sequence) records a row this process
//!   saved, or loaded and resumed from, at that sequence (never a failed row). Under the
//!   projector a row's sequence never goes down (every save is conditioned on the row it
//!   folded from and only moves it forward), so an entry is a lower bound of the row: a
//!   notification of event `n` whose every read model has an entry at `n` or later, of its
//!   current projection version, is a duplicate, acknowledged with no storage request (the
//!   projector would have loaded the row and found the same). Only what is outside the
//!   projector takes a row back: erasure (the stream is gone, and its notifications are
//!   acknowledged either way), a rebuild replacing a row that claims events the stream does
//!   not have (never entered here: an entry is at most the version read with it), and a row
//!   edited or deleted by hand in storage, which a rebuild repairs, as before. A read model is
//!   therefore never left wrong by a skip; another process's entries never matter, since each
//!   skips only what it saw itself;
//! - the notifications of one stream are applied one at a time in this process
//!   ([`StreamTurns`]): when several arrive together (the `Projector` function is invoked once
//!   per event, concurrently), the first catches the rows up to the end of the stream with one
//!   read and one save, and those that waited find the entries past their event and do
//!   nothing. Without the turn each would load the rows, read the stream and race to save;
//! - memory is bounded: at most [`MAX_CACHED_CHECKPOINTS`] entries; beyond that the map is
//!   emptied (which costs only reads);
//! - it holds the process's [`FirstRowOdds`]: whether the rows of a stream with no entry here
//!   are probably not written yet (`first_rows` says why guessing so is exact).

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};

use super::FirstRowOdds;
use crate::stream::{StreamId, StreamTurn, StreamTurns};

/// Most rows whose sequence is remembered.
pub const MAX_CACHED_CHECKPOINTS: usize = 100_000;

/// The rows this process last saw, and the turns of the streams being caught up.
#[derive(Debug, Default)]
pub struct CheckpointCache {
    /// (read model, stream) → (projection version, sequence).
    rows: Mutex<HashMap<(String, StreamId), (u32, u64)>>,
    turns: Arc<StreamTurns>,
    first_rows: FirstRowOdds,
}

impl CheckpointCache {
    pub fn new() -> Self {
        Self::default()
    }

    /// Waits for `stream`'s turn to be caught up.
    pub(super) async fn turn(&self, stream: &StreamId) -> StreamTurn {
        self.turns.take(stream).await
    }

    /// The sequence the row of `model` (at `version`) for `stream` is known to have reached.
    pub(super) fn known(&self, model: &str, version: u32, stream: &StreamId) -> Option<u64> {
        let key = (model.to_owned(), stream.clone());
        match self.lock().get(&key) {
            Some(&(known_version, sequence)) if known_version == version => Some(sequence),
            _ => None,
        }
    }

    /// Records that the row of `model` (at `version`) for `stream` is at `sequence`.
    pub(super) fn record(&self, model: &str, version: u32, stream: &StreamId, sequence: u64) {
        let mut rows = self.lock();
        if rows.len() >= MAX_CACHED_CHECKPOINTS {
            rows.clear();
        }
        let entry = rows
            .entry((model.to_owned(), stream.clone()))
            .or_insert((version, sequence));
        if entry.0 != version || entry.1 < sequence {
            *entry = (version, sequence);
        }
    }

    /// Whether rows with no entry here are probably absent.
    pub fn first_rows(&self) -> &FirstRowOdds {
        &self.first_rows
    }

    /// Rows remembered.
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<(String, StreamId), (u32, u64)>> {
        self.rows
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_only_move_forward_within_a_version_and_stay_bounded() {
        let cache = CheckpointCache::new();
        let s = StreamId::new("Bank", "Account", "1").unwrap();
        assert_eq!(cache.known("count", 1, &s), None);
        cache.record("count", 1, &s, 5);
        cache.record("count", 1, &s, 3); // a slower call finishing later
        assert_eq!(cache.known("count", 1, &s), Some(5));
        assert_eq!(cache.known("count", 2, &s), None, "another version");
        assert_eq!(cache.known("trail", 1, &s), None);
        cache.record("count", 2, &s, 1);
        assert_eq!(cache.known("count", 2, &s), Some(1));
        for n in 0..MAX_CACHED_CHECKPOINTS {
            let other = StreamId::new("Bank", "Account", format!("A-{n}")).unwrap();
            cache.record("count", 1, &other, 1);
        }
        assert!(cache.len() <= MAX_CACHED_CHECKPOINTS);
    }
}
