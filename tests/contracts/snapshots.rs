//! The snapshot store contract (`src/stream/snapshot.rs`), written once and run against
//! every store (memory, Table storage — see the fixtures in `memory.rs` and `table.rs`).
//!
//! Snapshots are only an optimisation, so a store may lose one or keep a stale one; what it may
//! never do is hand back something that was not saved: a state that is not the one saved
//! (byte for byte), a mix of two saves, or a snapshot that claims to hold fewer events than it
//! does (a sequence or a `max_timestamp` earlier than saved — the runner would then use it for
//! a point in time it is past). The cases check that, plus what makes snapshots worth having:
//! a saved snapshot is found again, by this process and by another, one per stream and
//! projection.

use std::sync::Arc;
use std::time::Duration;

use serde_json::value::RawValue;
use streamfold::projection::{Snapshot, SnapshotStore};
use streamfold::stream::{StreamId, MAX_INSTANCE_KEY_BYTES};
use time::OffsetDateTime;

use crate::helpers::stream;

/// A fresh, empty snapshot store of one backend.
pub struct Fixture {
    /// The store the cases save through.
    pub store: Arc<dyn SnapshotStore>,
    /// Opens another view of the same storage, as another process would.
    pub reopen: Box<dyn Fn() -> Arc<dyn SnapshotStore> + Send + Sync>,
    /// How finely the store keeps `max_timestamp` (it may round it up to this, never down).
    pub time_resolution: Duration,
    /// Whatever must live as long as the store (an Azurite process): held, never read.
    #[allow(dead_code)]
    pub guard: Box<dyn std::any::Any + Send>,
}

/// Expands to one `#[tokio::test]` per case for the fixture made by `$make` (an async fn).
macro_rules! suite {
    ($make:path) => {
        $crate::cases!(snapshots, $make;
            a_missing_snapshot_is_none,
            a_snapshot_loads_back_as_saved,
            a_save_replaces_the_earlier_snapshot,
            snapshots_are_kept_per_stream_and_projection,
            another_process_loads_what_was_saved,
            concurrent_saves_leave_one_whole_snapshot,
            a_state_too_large_is_never_an_error_nor_half_kept,
        );
    };
}
pub(crate) use suite;

/// A time with nanoseconds no coarser store keeps.
fn awkward_time() -> OffsetDateTime {
    OffsetDateTime::from_unix_timestamp_nanos(1_700_000_000_123_456_789).unwrap()
}

/// A snapshot of `projection` at `sequence` whose state is the JSON text `state`.
fn snapshot(projection: &str, sequence: u64, state: &str) -> Snapshot {
    Snapshot {
        projection: projection.to_owned(),
        projection_version: 3,
        sequence,
        max_timestamp: Some(awkward_time()),
        state: RawValue::from_string(state.to_owned()).unwrap(),
        failure: None,
    }
}

/// A JSON string of `len` bytes.
fn sized_state(len: usize, fill: char) -> String {
    format!("\"{}\"", fill.to_string().repeat(len.saturating_sub(2)))
}

/// Checks that `loaded` is `saved`: the same projection, version and sequence, the state's
/// text byte for byte, and `max_timestamp` the same or later by less than `resolution`.
#[track_caller]
fn assert_loaded_as_saved(loaded: &Snapshot, saved: &Snapshot, resolution: Duration) {
    assert_eq!(
        (
            &loaded.projection,
            loaded.projection_version,
            loaded.sequence
        ),
        (&saved.projection, saved.projection_version, saved.sequence)
    );
    assert!(
        loaded.state.get() == saved.state.get(),
        "the state comes back byte for byte ({} bytes saved, {} loaded)",
        saved.state.get().len(),
        loaded.state.get().len()
    );
    let (Some(loaded_time), Some(saved_time)) = (loaded.max_timestamp, saved.max_timestamp) else {
        panic!("a snapshot saved with a max_timestamp loads with one");
    };
    let later_by = loaded_time - saved_time;
    assert!(
        later_by >= time::Duration::ZERO && later_by < resolution,
        "max_timestamp {loaded_time} loaded for {saved_time} saved: it may only be rounded up, within {resolution:?}"
    );
}

/// Loads the snapshot, which must be there.
async fn load(store: &dyn SnapshotStore, s: &StreamId, projection: &str) -> Snapshot {
    store
        .load(s, projection)
        .await
        .unwrap()
        .unwrap_or_else(|| panic!("a snapshot of {projection} for {s}"))
}

pub async fn a_missing_snapshot_is_none(f: &Fixture) {
    let s = stream("nothing");
    assert!(f.store.load(&s, "balance").await.unwrap().is_none());
    // Saving one leaves every other (stream, projection) without.
    f.store
        .save(&s, &snapshot("balance", 1, "{}"))
        .await
        .unwrap();
    assert!(f.store.load(&s, "history").await.unwrap().is_none());
    assert!(f
        .store
        .load(&stream("other"), "balance")
        .await
        .unwrap()
        .is_none());
}

pub async fn a_snapshot_loads_back_as_saved(f: &Fixture) {
    let s = stream("exact");
    let states = [
        // Whitespace, key order, escapes and numbers a parser would rewrite.
        r#" { "b" : 1.50, "a":[ 1e2 ,"\u00fc\n"], "z": null } "#.to_owned(),
        r#""ü ☃ 𝄞 \"quoted\"""#.to_owned(),
        "0".to_owned(),
        // Larger than a Table property holds (64 KiB): stored in parts, joined back exactly.
        format!("[{}]", vec![r#""ümlaut-and-more""#; 12_000].join(",")),
    ];
    for (n, state) in states.iter().enumerate() {
        let saved = Snapshot {
            sequence: 1u64 << (20 + n),
            ..snapshot("balance", 0, state)
        };
        f.store.save(&s, &saved).await.unwrap();
        let loaded = load(&*f.store, &s, "balance").await;
        assert_loaded_as_saved(&loaded, &saved, f.time_resolution);
    }
}

pub async fn a_save_replaces_the_earlier_snapshot(f: &Fixture) {
    let s = stream("replaced");
    let big = snapshot("balance", 10, &sized_state(200_000, 'b'));
    let small = Snapshot {
        projection_version: 4,
        max_timestamp: Some(awkward_time() + Duration::from_secs(60)),
        ..snapshot("balance", 12, r#"{"small":true}"#)
    };
    // Large after small, small after large, and back: nothing of the one before remains.
    for saved in [&small, &big, &small, &big] {
        f.store.save(&s, saved).await.unwrap();
        let loaded = load(&*f.store, &s, "balance").await;
        assert_loaded_as_saved(&loaded, saved, f.time_resolution);
    }
    // An earlier sequence replaces a later one too: the store keeps the last save, it does not
    // judge.
    let earlier = snapshot("balance", 2, "[2]");
    f.store.save(&s, &earlier).await.unwrap();
    assert_loaded_as_saved(
        &load(&*f.store, &s, "balance").await,
        &earlier,
        f.time_resolution,
    );
}

pub async fn snapshots_are_kept_per_stream_and_projection(f: &Fixture) {
    let long = "k".repeat(MAX_INSTANCE_KEY_BYTES);
    let streams = [
        stream("O'Brien"),
        stream("a b"),
        stream("A B"),
        stream("ü"),
        stream("%41"),
        stream("A"),
        stream(&long),
        StreamId::new("Shop", "Order", "a b").unwrap(),
        StreamId::new("Bank", "Cart", "a b").unwrap(),
    ];
    let projections = ["balance", "history", "Balance", "with-dash_and_underscore"];
    let mut saved = Vec::new();
    for (i, s) in streams.iter().enumerate() {
        for (j, projection) in projections.iter().enumerate() {
            let one = snapshot(projection, (i * 10 + j) as u64 + 1, &format!("[{i},{j}]"));
            f.store.save(s, &one).await.unwrap();
            saved.push((s.clone(), one));
        }
    }
    for (s, one) in &saved {
        let loaded = load(&*f.store, s, &one.projection).await;
        assert_loaded_as_saved(&loaded, one, f.time_resolution);
    }
}

pub async fn another_process_loads_what_was_saved(f: &Fixture) {
    let s = stream("shared");
    let first = snapshot("balance", 5, r#"{"n":5}"#);
    f.store.save(&s, &first).await.unwrap();
    let other = (f.reopen)();
    assert_loaded_as_saved(
        &load(&*other, &s, "balance").await,
        &first,
        f.time_resolution,
    );
    // And the other way round: this process sees the other's later save.
    let second = snapshot("balance", 9, r#"{"n":9}"#);
    other.save(&s, &second).await.unwrap();
    assert_loaded_as_saved(
        &load(&*f.store, &s, "balance").await,
        &second,
        f.time_resolution,
    );
}

pub async fn concurrent_saves_leave_one_whole_snapshot(f: &Fixture) {
    const SAVERS: usize = 8;
    let s = stream("raced");
    // States of different sizes (some in several parts on Table storage), so that a mix of
    // two saves would show.
    let candidates: Vec<Snapshot> = (0..SAVERS)
        .map(|i| {
            let fill = char::from(b'a' + i as u8);
            snapshot("balance", i as u64 + 1, &sized_state(2 + i * 40_000, fill))
        })
        .collect();
    futures::future::join_all(candidates.iter().map(|one| {
        let store = (f.reopen)();
        let s = s.clone();
        async move { store.save(&s, one).await.unwrap() }
    }))
    .await;
    let loaded = load(&*f.store, &s, "balance").await;
    let which = candidates
        .iter()
        .find(|c| c.sequence == loaded.sequence)
        .expect("the sequence of one of the saves");
    assert_loaded_as_saved(&loaded, which, f.time_resolution);
}

pub async fn a_state_too_large_is_never_an_error_nor_half_kept(f: &Fixture) {
    let s = stream("huge");
    let before = snapshot("balance", 1, "[1]");
    f.store.save(&s, &before).await.unwrap();
    // Larger than any one stored row can be: a store may refuse to keep it, but not fail the
    // projection run that saves it.
    // Two sizes: far past any limit, and just short of the most parts a Table row holds (which
    // the whole row, counted in UTF-16, then exceeds).
    for (sequence, len) in [(2, 5 * 1024 * 1024), (3, 16 * 32 * 1024 - 64)] {
        let huge = snapshot("balance", sequence, &sized_state(len, 'h'));
        f.store.save(&s, &huge).await.unwrap();
        let loaded = load(&*f.store, &s, "balance").await;
        let which = if loaded.sequence == huge.sequence {
            &huge
        } else {
            &before
        };
        assert_loaded_as_saved(&loaded, which, f.time_resolution);
    }
}
