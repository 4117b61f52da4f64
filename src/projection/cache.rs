//! An in-process cache of projection states, so that a warm instance answers a repeated query
//! of a stream that has not moved with one storage request (the stream's version) instead of
//! reading a snapshot and events.
//!
//! Guarantees:
//! - an entry is exactly what a persistent snapshot would hold (a [`Snapshot`]: the state as of
//!   a sequence, with the projection's version and the latest timestamp folded in), taken at
//!   the end of a run as of the latest event; the runner uses it only under the same checks as
//!   a snapshot (same projection version, not past the stream's version, which is always read),
//!   so a cache hit never changes a result — it only saves reads. Instances of a scaled-out app
//!   each have their own cache; none can serve another's stale state, because the version is
//!   read from storage on every run;
//! - memory is bounded: the entries together take at most `max_bytes` (each counted as its
//!   state's JSON text, its keys and [`ENTRY_OVERHEAD_BYTES`]), and no state larger than
//!   [`MAX_CACHED_STATE_BYTES`] is kept; beyond the budget the least recently used entries go
//!   first (a tenth of them at a time, see [`EVICTION_FRACTION`], so an insert is amortised
//!   O(log n));
//! - a budget of 0 caches nothing.

use std::collections::HashMap;
use std::sync::Mutex;

use super::Snapshot;
use crate::stream::StreamId;

/// Largest state (as JSON text) kept in the cache; larger ones are read from storage each time.
pub const MAX_CACHED_STATE_BYTES: usize = 64 * 1024;
/// One entry in `n` is evicted at once when the cache is over its budget.
pub const EVICTION_FRACTION: usize = 10;
/// What an entry is counted to cost besides its state and keys (map slot, timestamps, boxes).
pub const ENTRY_OVERHEAD_BYTES: usize = 256;

/// The cache, shared by every run of one process.
pub struct StateCache {
    max_bytes: usize,
    entries: Mutex<Entries>,
}

#[derive(Default)]
struct Entries {
    /// (stream, projection name) → (last use, state, sequence of the last saved snapshot).
    map: HashMap<(StreamId, String), (u64, Snapshot, u64)>,
    /// What the entries are counted to take, in bytes.
    bytes: usize,
    clock: u64,
}

impl StateCache {
    /// A cache whose entries take at most `max_bytes` (0 = caches nothing).
    pub fn new(max_bytes: usize) -> Self {
        Self {
            max_bytes,
            entries: Mutex::new(Entries::default()),
        }
    }

    /// The cached state of `projection` over `stream`, if any, with the sequence of the last
    /// snapshot saved to storage that the run which cached it knew of.
    pub fn get(&self, stream: &StreamId, projection: &str) -> Option<(Snapshot, u64)> {
        let mut entries = self.lock();
        entries.clock += 1;
        let now = entries.clock;
        let key = (stream.clone(), projection.to_owned());
        let (used, snapshot, persisted) = entries.map.get_mut(&key)?;
        *used = now;
        Some((snapshot.clone(), *persisted))
    }

    /// Keeps `snapshot` as the state of its projection over `stream` (`persisted`: the sequence
    /// of the last snapshot saved to storage), unless an entry at a later sequence is already
    /// there (a slower run finishing after a faster one).
    pub fn put(&self, stream: &StreamId, snapshot: Snapshot, persisted: u64) {
        let size = entry_bytes(stream, &snapshot);
        if snapshot.state.get().len() > MAX_CACHED_STATE_BYTES || size > self.max_bytes {
            return;
        }
        let mut entries = self.lock();
        entries.clock += 1;
        let now = entries.clock;
        let key = (stream.clone(), snapshot.projection.clone());
        let replaced = match entries.map.get_mut(&key) {
            Some((used, kept, kept_persisted)) => {
                *used = now;
                let newer = kept.projection_version != snapshot.projection_version
                    || kept.sequence <= snapshot.sequence;
                if !newer {
                    return;
                }
                let old = entry_bytes(stream, kept);
                *kept = snapshot;
                *kept_persisted = persisted;
                Some(old)
            }
            None => {
                entries.map.insert(key, (now, snapshot, persisted));
                None
            }
        };
        entries.bytes = entries.bytes + size - replaced.unwrap_or(0);
        while entries.bytes > self.max_bytes {
            let count = (entries.map.len() / EVICTION_FRACTION).max(1);
            evict_oldest(&mut entries, count);
        }
    }

    /// Drops every state of `stream` (it was erased).
    pub fn forget_stream(&self, stream: &StreamId) {
        let mut entries = self.lock();
        let dropped: usize = entries
            .map
            .iter()
            .filter(|((kept, _), _)| kept == stream)
            .map(|((kept, _), (_, snapshot, _))| entry_bytes(kept, snapshot))
            .sum();
        entries.map.retain(|(kept, _), _| kept != stream);
        entries.bytes = entries.bytes.saturating_sub(dropped);
    }

    /// Entries held now.
    pub fn len(&self) -> usize {
        self.lock().map.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Entries> {
        self.entries
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// What one entry is counted to take.
fn entry_bytes(stream: &StreamId, snapshot: &Snapshot) -> usize {
    ENTRY_OVERHEAD_BYTES
        + stream.domain().len()
        + stream.entity().len()
        + stream.instance().len()
        + snapshot.projection.len()
        + snapshot.state.get().len()
}

/// Removes the `count` least recently used entries.
fn evict_oldest(entries: &mut Entries, count: usize) {
    let mut uses: Vec<u64> = entries.map.values().map(|(used, _, _)| *used).collect();
    let count = count.min(uses.len());
    if count == 0 {
        entries.bytes = 0;
        return;
    }
    let (_, cutoff, _) = uses.select_nth_unstable(count - 1);
    let cutoff = *cutoff;
    let mut freed = 0;
    entries.map.retain(|(stream, _), (used, snapshot, _)| {
        let keep = *used > cutoff;
        if !keep {
            freed += entry_bytes(stream, snapshot);
        }
        keep
    });
    entries.bytes -= freed;
}

#[cfg(test)]
mod tests {
    use serde_json::value::to_raw_value;

    use super::*;

    fn snapshot(projection: &str, sequence: u64, version: u32) -> Snapshot {
        Snapshot {
            projection: projection.to_owned(),
            projection_version: version,
            sequence,
            max_timestamp: Some(time::OffsetDateTime::UNIX_EPOCH),
            state: to_raw_value(&sequence).unwrap(),
            failure: None,
        }
    }

    fn stream(n: usize) -> StreamId {
        StreamId::new("Bank", "Account", format!("A-{n}")).unwrap()
    }

    #[test]
    fn keeps_the_latest_state_of_each_projection_and_stream() {
        let cache = StateCache::new(1 << 20);
        assert!(cache.get(&stream(1), "balance").is_none());
        cache.put(&stream(1), snapshot("balance", 5, 1), 0);
        cache.put(&stream(1), snapshot("balance", 3, 1), 0); // a slower run: ignored
        cache.put(&stream(1), snapshot("other", 9, 1), 0);
        assert_eq!(cache.get(&stream(1), "balance").unwrap().0.sequence, 5);
        assert_eq!(cache.get(&stream(1), "other").unwrap().0.sequence, 9);
        assert!(cache.get(&stream(2), "balance").is_none());
        // A new projection version replaces the entry whatever its sequence.
        cache.put(&stream(1), snapshot("balance", 2, 2), 0);
        let (kept, _) = cache.get(&stream(1), "balance").unwrap();
        assert_eq!((kept.sequence, kept.projection_version), (2, 2));
    }

    #[test]
    fn evicts_the_least_recently_used_and_stays_bounded() {
        let one = entry_bytes(&stream(10), &snapshot("balance", 1, 1));
        let cache = StateCache::new(20 * one);
        for n in 0..20 {
            cache.put(&stream(n), snapshot("balance", 1, 1), 0);
        }
        // Stream 0 is used again, so it is the most recent.
        assert!(cache.get(&stream(0), "balance").is_some());
        cache.put(&stream(20), snapshot("balance", 1, 1), 0);
        assert!(cache.len() <= 20);
        assert!(cache.get(&stream(0), "balance").is_some(), "recently used");
        assert!(
            cache.get(&stream(1), "balance").is_none(),
            "least recently used"
        );
        assert!(cache.get(&stream(20), "balance").is_some(), "just added");
        for n in 21..1000 {
            cache.put(&stream(n), snapshot("balance", 1, 1), 0);
            assert!(cache.len() <= 20);
        }
    }

    #[test]
    fn large_states_and_a_zero_capacity_are_not_kept() {
        let cache = StateCache::new(0);
        cache.put(&stream(1), snapshot("balance", 1, 1), 0);
        assert!(cache.is_empty());
        let cache = StateCache::new(1 << 30);
        let mut big = snapshot("balance", 1, 1);
        big.state = to_raw_value(&"x".repeat(MAX_CACHED_STATE_BYTES)).unwrap();
        cache.put(&stream(1), big, 0);
        assert!(cache.is_empty());
        let small = StateCache::new(ENTRY_OVERHEAD_BYTES);
        small.put(&stream(1), snapshot("balance", 1, 1), 0);
        assert!(small.is_empty(), "an entry over the whole budget");
    }
}
