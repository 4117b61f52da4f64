//! What this process last knew of each read-model row (its sequence, and the row itself when
//! small), and one catch-up at a time per stream, so that the notifications of one stream cost
//! one catch-up, a duplicate none, and a kept row no load.
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
//! - an entry may also keep the row whole, as storage holds it under its ETag, when this
//!   process loaded it or saved it (the save answers the new ETag) at the entry's sequence:
//!   the projector folds onto it without a load and saves on that ETag, which storage refuses
//!   if anything changed the row since, so a kept row is never trusted further than its ETag.
//!   A kept row is dropped when the entry learns a later sequence without it, or a save on it
//!   is refused;
//! - memory is bounded: at most [`MAX_CACHED_CHECKPOINTS`] entries, beyond that the map is
//!   emptied; rows are kept only up to [`MAX_CACHED_ROW_BYTES`] of state each and
//!   [`MAX_CACHED_ROWS_BYTES`] in all, beyond that the kept rows are dropped (all of this costs
//!   only reads);
//! - it holds the process's [`FirstRowOdds`]: whether the rows of a stream with no entry here
//!   are probably not written yet (`first_rows` says why guessing so is exact).

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};

use super::FirstRowOdds;
use crate::stream::{StoredCheckpoint, StreamId, StreamTurn, StreamTurns};

/// Most rows whose sequence is remembered.
pub const MAX_CACHED_CHECKPOINTS: usize = 100_000;
/// Largest state of a row kept whole (bytes of its JSON); a larger row is loaded each time.
pub const MAX_CACHED_ROW_BYTES: usize = 64 * 1024;
/// Most bytes of state kept over all rows; beyond that the rows kept whole are dropped (their
/// sequences stay), which costs only loads.
pub const MAX_CACHED_ROWS_BYTES: usize = 8 * 1024 * 1024;

/// What this process knows of one row.
#[derive(Debug)]
struct Entry {
    version: u32,
    sequence: u64,
    /// The row itself, as storage holds it under its ETag, when this process loaded or saved
    /// it at `sequence` and it is small enough to keep.
    row: Option<StoredCheckpoint>,
}

/// The entries and the bytes of state they keep.
#[derive(Debug, Default)]
struct Entries {
    map: HashMap<(String, StreamId), Entry>,
    row_bytes: usize,
}

impl Entries {
    /// Makes room for one more entry and `bytes` more of state.
    fn make_room(&mut self, bytes: usize) {
        if self.map.len() >= MAX_CACHED_CHECKPOINTS {
            self.map.clear();
            self.row_bytes = 0;
        }
        if self.row_bytes.saturating_add(bytes) > MAX_CACHED_ROWS_BYTES {
            for entry in self.map.values_mut() {
                entry.row = None;
            }
            self.row_bytes = 0;
        }
    }

    /// Drops the row kept in `entry`, if any.
    fn drop_row(row_bytes: &mut usize, entry: &mut Entry) {
        if let Some(row) = entry.row.take() {
            *row_bytes = row_bytes.saturating_sub(state_bytes(&row));
        }
    }
}

/// The entry of (`model`, `stream`), made at `version` and `sequence` without a row when there
/// is none.
fn entry_of<'a>(
    map: &'a mut HashMap<(String, StreamId), Entry>,
    model: &str,
    stream: &StreamId,
    version: u32,
    sequence: u64,
) -> &'a mut Entry {
    map.entry((model.to_owned(), stream.clone()))
        .or_insert(Entry {
            version,
            sequence,
            row: None,
        })
}

/// The bytes a kept row counts for.
fn state_bytes(row: &StoredCheckpoint) -> usize {
    row.checkpoint.state.get().len()
}

/// The rows this process last saw, and the turns of the streams being caught up.
#[derive(Debug, Default)]
pub struct CheckpointCache {
    /// (read model, stream) → what this process knows of the row.
    rows: Mutex<Entries>,
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
        match self.lock().map.get(&key) {
            Some(entry) if entry.version == version => Some(entry.sequence),
            _ => None,
        }
    }

    /// The row of `model` (at `version`) for `stream` as this process last loaded or saved it,
    /// with its ETag, if it kept it.
    pub(super) fn row(
        &self,
        model: &str,
        version: u32,
        stream: &StreamId,
    ) -> Option<StoredCheckpoint> {
        let key = (model.to_owned(), stream.clone());
        match self.lock().map.get(&key) {
            Some(entry) if entry.version == version => entry.row.clone(),
            _ => None,
        }
    }

    /// Records that the row of `model` (at `version`) for `stream` is at `sequence`. A row
    /// kept at another sequence or version is dropped.
    pub(super) fn record(&self, model: &str, version: u32, stream: &StreamId, sequence: u64) {
        let mut entries = self.lock();
        entries.make_room(0);
        let Entries { map, row_bytes } = &mut *entries;
        let entry = entry_of(map, model, stream, version, sequence);
        if entry.version != version || entry.sequence < sequence {
            Entries::drop_row(row_bytes, entry);
            entry.version = version;
            entry.sequence = sequence;
        }
    }

    /// Records the row of `model` for `stream` as storage holds it under `row.etag` (just
    /// loaded, or just saved with that ETag in answer); kept whole when small enough. A failed
    /// row, or one behind what this process already knows, is not recorded.
    pub(super) fn record_row(&self, model: &str, stream: &StreamId, row: StoredCheckpoint) {
        if row.checkpoint.failure.is_some() {
            return;
        }
        let (version, sequence) = (row.checkpoint.projection_version, row.checkpoint.sequence);
        let bytes = state_bytes(&row);
        let keep = bytes <= MAX_CACHED_ROW_BYTES;
        let mut entries = self.lock();
        // Room only for what is kept: a row too large to keep must not drop the others.
        entries.make_room(if keep { bytes } else { 0 });
        let Entries { map, row_bytes } = &mut *entries;
        let entry = entry_of(map, model, stream, version, sequence);
        if entry.version == version && entry.sequence > sequence {
            return;
        }
        Entries::drop_row(row_bytes, entry);
        entry.version = version;
        entry.sequence = sequence;
        if keep {
            *row_bytes = row_bytes.saturating_add(bytes);
            entry.row = Some(row);
        }
    }

    /// Drops the row of `model` for `stream` kept whole (storage refused a save conditioned
    /// on its ETag: it changed elsewhere); its sequence stays known.
    pub(super) fn forget_row(&self, model: &str, stream: &StreamId) {
        let mut entries = self.lock();
        let Entries { map, row_bytes } = &mut *entries;
        if let Some(entry) = map.get_mut(&(model.to_owned(), stream.clone())) {
            Entries::drop_row(row_bytes, entry);
        }
    }

    /// Whether rows with no entry here are probably absent.
    pub fn first_rows(&self) -> &FirstRowOdds {
        &self.first_rows
    }

    /// Rows remembered.
    pub fn len(&self) -> usize {
        self.lock().map.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Bytes of state kept in rows kept whole.
    pub fn row_bytes(&self) -> usize {
        self.lock().row_bytes
    }

    fn lock(&self) -> MutexGuard<'_, Entries> {
        self.rows
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stream::{Checkpoint, ETag, FoldFailure};
    use serde_json::value::RawValue;

    fn stored(version: u32, sequence: u64, state: &str, etag: &str) -> StoredCheckpoint {
        StoredCheckpoint {
            checkpoint: Checkpoint {
                projection: "count".into(),
                projection_version: version,
                sequence,
                max_timestamp: None,
                state: RawValue::from_string(state.to_owned()).unwrap(),
                failure: None,
            },
            etag: ETag(etag.to_owned()),
        }
    }

    #[test]
    fn rows_are_kept_at_their_sequence_only_and_within_their_bytes() {
        let cache = CheckpointCache::new();
        let s = StreamId::new("Bank", "Account", "1").unwrap();
        cache.record_row("count", &s, stored(1, 4, "4", "a"));
        let kept = cache.row("count", 1, &s).unwrap();
        assert_eq!((kept.checkpoint.sequence, kept.etag.0.as_str()), (4, "a"));
        assert_eq!(
            cache.row("count", 2, &s).map(|r| r.etag),
            None,
            "another version"
        );
        assert_eq!(cache.row_bytes(), 1);
        // An older row does not replace it; the same sequence seen again keeps it.
        cache.record_row("count", &s, stored(1, 3, "3", "old"));
        cache.record("count", 1, &s, 4);
        assert_eq!(cache.row("count", 1, &s).unwrap().etag.0, "a");
        // A later sequence learnt without the row drops it; the sequence stays known.
        cache.record("count", 1, &s, 5);
        assert!(cache.row("count", 1, &s).is_none());
        assert_eq!(
            (cache.known("count", 1, &s), cache.row_bytes()),
            (Some(5), 0)
        );
        // A refused save forgets the row, not the sequence.
        cache.record_row("count", &s, stored(1, 6, "66", "b"));
        cache.forget_row("count", &s);
        assert!(cache.row("count", 1, &s).is_none());
        assert_eq!(
            (cache.known("count", 1, &s), cache.row_bytes()),
            (Some(6), 0)
        );
        // A row too large to keep, or failed: the sequence only, or nothing.
        let large = format!("\"{}\"", "x".repeat(MAX_CACHED_ROW_BYTES));
        cache.record_row("count", &s, stored(1, 7, &large, "c"));
        assert!(cache.row("count", 1, &s).is_none());
        assert_eq!(cache.known("count", 1, &s), Some(7));
        let other = StreamId::new("Bank", "Account", "2").unwrap();
        let mut failed = stored(1, 2, "0", "d");
        failed.checkpoint.failure = Some(FoldFailure {
            sequence: 2,
            reason: "refused".into(),
        });
        cache.record_row("count", &other, failed);
        assert_eq!(cache.known("count", 1, &other), None);
    }

    #[test]
    fn the_rows_kept_stay_within_the_byte_budget() {
        let cache = CheckpointCache::new();
        let state = format!("\"{}\"", "x".repeat(MAX_CACHED_ROW_BYTES - 2));
        let fit = MAX_CACHED_ROWS_BYTES / MAX_CACHED_ROW_BYTES;
        for n in 0..fit {
            let s = StreamId::new("Bank", "Account", format!("A-{n}")).unwrap();
            cache.record_row("count", &s, stored(1, 1, &state, "e"));
        }
        assert_eq!(cache.row_bytes(), fit * MAX_CACHED_ROW_BYTES);
        let s = StreamId::new("Bank", "Account", "one-more").unwrap();
        cache.record_row("count", &s, stored(1, 1, &state, "e"));
        assert_eq!(
            cache.row_bytes(),
            MAX_CACHED_ROW_BYTES,
            "the others were dropped"
        );
        let first = StreamId::new("Bank", "Account", "A-0").unwrap();
        assert!(cache.row("count", 1, &first).is_none());
        assert_eq!(cache.known("count", 1, &first), Some(1), "sequences stay");
        assert!(cache.row("count", 1, &s).is_some());

        // A row too large to keep makes no room for itself: the kept rows stay.
        let large = format!("\"{}\"", "x".repeat(MAX_CACHED_ROWS_BYTES));
        let big = StreamId::new("Bank", "Account", "big").unwrap();
        cache.record_row("count", &big, stored(1, 1, &large, "f"));
        assert!(cache.row("count", 1, &s).is_some(), "kept rows dropped");
        assert_eq!(cache.known("count", 1, &big), Some(1));
    }

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
