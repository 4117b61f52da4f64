//! Projections, snapshots and classifications over the in-memory backend.
//!
//! Two stores are used: `MemoryStore` (the library's in-memory backend) for everything it can
//! express, and `ScriptedStore` below for histories whose stored timestamps no backend writes
//! today: times that go backwards as sequence numbers go forwards (writers with skewed clocks,
//! before appends recorded at least their predecessor's time). It reads them as every backend
//! does ([`TimeLine`]: times never go back, as of a time is a prefix), and the runner's result
//! as of a time must be the same prefix, with or without snapshots.

use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use proptest::prelude::*;
use serde::{Deserialize, Serialize};
use serde_json::json;
use serde_json::value::RawValue;
use time::macros::datetime;
use time::{Duration, OffsetDateTime};
use uuid::Uuid;

use streamfold::backend::TimeLine;
use streamfold::projection::{
    decode_data, ApplyError, AsOf, Classification, Classified, Classifier, DynProjection,
    Membership, Projected, Projection, ProjectionError, ProjectionRunner, Snapshot, SnapshotStore,
    StateCache, StatefulClassification, StatefulClassifier,
};
use streamfold::storage::MemorySnapshotStore;
use streamfold::storage::MemoryStore;
use streamfold::stream::{
    AppendOutcome, EventMetadata, EventStore, ExpectedVersion, NewEvent, ReadRequest,
    RecordedEvent, StoreError, StreamId, StreamPage, StreamSlice,
};
use streamfold::testing::CountingStore;

// ---------------------------------------------------------------------------------------------
// The domain under test: an account with deposits, withdrawals, freezes, and an event type
// ("Renamed") that no projection here knows.

const DEPOSITED: &str = "Deposited";
const WITHDRAWN: &str = "Withdrawn";
const FROZEN: &str = "Frozen";
const UNFROZEN: &str = "Unfrozen";
const RENAMED: &str = "Renamed";

#[derive(Serialize, Deserialize)]
struct Amount {
    amount: i64,
}

/// The balance: deposits minus withdrawals.
#[derive(Clone, Copy)]
struct Balance {
    version: u32,
}

const BALANCE: Balance = Balance { version: 1 };

impl Projection for Balance {
    type State = i64;

    fn name(&self) -> &str {
        "balance"
    }

    fn version(&self) -> u32 {
        self.version
    }

    fn initial(&self) -> i64 {
        0
    }

    fn apply(&self, balance: &mut i64, event: &RecordedEvent) -> Result<(), ApplyError> {
        match event.event_type.as_str() {
            DEPOSITED => *balance += decode_data::<Amount>(event)?.amount,
            WITHDRAWN => *balance -= decode_data::<Amount>(event)?.amount,
            _ => {}
        }
        Ok(())
    }
}

/// The sequence numbers folded in, in order: shows exactly which events a run applied.
struct History;

impl Projection for History {
    type State = Vec<u64>;

    fn name(&self) -> &str {
        "history"
    }

    fn version(&self) -> u32 {
        1
    }

    fn initial(&self) -> Vec<u64> {
        Vec::new()
    }

    fn apply(&self, seen: &mut Vec<u64>, event: &RecordedEvent) -> Result<(), ApplyError> {
        seen.push(event.sequence);
        Ok(())
    }
}

/// In the "frozen" group between a Frozen and an Unfrozen event.
struct IsFrozen;

impl Classification for IsFrozen {
    fn name(&self) -> &str {
        "frozen"
    }

    fn version(&self) -> u32 {
        1
    }

    fn classify(&self, event: &RecordedEvent) -> Result<Classified, ApplyError> {
        Ok(match event.event_type.as_str() {
            FROZEN => Classified::Include,
            UNFROZEN => Classified::Exclude,
            _ => Classified::Unchanged,
        })
    }
}

/// In the "overdraft" group while the running balance is below zero.
struct InOverdraft;

impl StatefulClassification for InOverdraft {
    type Memo = i64;

    fn name(&self) -> &str {
        "in-overdraft"
    }

    fn version(&self) -> u32 {
        1
    }

    fn classify_with(
        &self,
        balance: &mut i64,
        event: &RecordedEvent,
    ) -> Result<Classified, ApplyError> {
        BALANCE.apply(balance, event)?;
        Ok(match event.event_type.as_str() {
            DEPOSITED | WITHDRAWN if *balance < 0 => Classified::Include,
            DEPOSITED | WITHDRAWN => Classified::Exclude,
            _ => Classified::Unchanged,
        })
    }
}

fn account(key: &str) -> StreamId {
    StreamId::new("Bank", "Account", key).unwrap()
}

fn event(kind: &str, amount: i64) -> NewEvent {
    match kind {
        DEPOSITED | WITHDRAWN => NewEvent::new(kind, &Amount { amount }).unwrap(),
        _ => NewEvent::new(kind, &json!({ "note": amount })).unwrap(),
    }
}

async fn append(store: &dyn EventStore, stream: &StreamId, events: Vec<NewEvent>) {
    store
        .append(stream, ExpectedVersion::Any, events)
        .await
        .unwrap();
}

/// Appends `n` deposits of 1, 2, 3... continuing from `first`.
async fn deposits(store: &dyn EventStore, stream: &StreamId, first: i64, n: i64) {
    let events = (first..first + n).map(|a| event(DEPOSITED, a)).collect();
    append(store, stream, events).await;
}

fn sum(from: i64, to: i64) -> i64 {
    (from..=to).sum()
}

// ---------------------------------------------------------------------------------------------
// A store of pre-recorded events with chosen timestamps (see the module comment).

#[derive(Default)]
struct ScriptedStore {
    events: Mutex<Vec<RecordedEvent>>,
    /// Answered once by `version` instead of the true version (a read that was served
    /// before appends that another read already saw).
    stale_version: Mutex<Option<u64>>,
}

impl ScriptedStore {
    fn push(&self, kind: &str, amount: i64, timestamp: OffsetDateTime) {
        let new = event(kind, amount);
        let mut events = self.events.lock().unwrap();
        let sequence = events.len() as u64 + 1;
        events.push(RecordedEvent {
            sequence,
            event_id: Uuid::new_v4(),
            event_type: new.event_type,
            data: new.data,
            timestamp,
            metadata: EventMetadata::default(),
        });
    }

    fn snapshot(&self) -> Vec<RecordedEvent> {
        self.events.lock().unwrap().clone()
    }
}

#[async_trait]
impl EventStore for ScriptedStore {
    async fn append(
        &self,
        _: &StreamId,
        _: ExpectedVersion,
        _: Vec<NewEvent>,
    ) -> Result<AppendOutcome, StoreError> {
        Err(StoreError::Misconfigured(
            "the scripted store is written with push()".into(),
        ))
    }

    async fn read(&self, _: &StreamId, request: ReadRequest) -> Result<StreamSlice, StoreError> {
        let events = self.events.lock().unwrap();
        Ok(StreamSlice {
            version: events.len() as u64,
            events: TimeLine::cut(&request, events.iter().cloned()),
        })
    }

    async fn version(&self, _: &StreamId) -> Result<u64, StoreError> {
        if let Some(stale) = self.stale_version.lock().unwrap().take() {
            return Ok(stale);
        }
        Ok(self.events.lock().unwrap().len() as u64)
    }

    async fn list_streams(
        &self,
        _: &streamfold::stream::EntityType,
        _: Option<&str>,
        _: usize,
    ) -> Result<StreamPage, StoreError> {
        Ok(StreamPage::default())
    }
}

/// A snapshot store that is down: every load and save fails.
struct BrokenSnapshots;

#[async_trait]
impl SnapshotStore for BrokenSnapshots {
    async fn load(&self, _: &StreamId, _: &str) -> Result<Option<Snapshot>, StoreError> {
        Err(StoreError::unavailable("snapshot store is down"))
    }

    async fn save(&self, _: &StreamId, _: &Snapshot) -> Result<(), StoreError> {
        Err(StoreError::unavailable("snapshot store is down"))
    }
}

const T0: OffsetDateTime = datetime!(2024-01-01 00:00 UTC);

fn at(seconds: i64) -> OffsetDateTime {
    T0 + Duration::seconds(seconds)
}

// ---------------------------------------------------------------------------------------------
// As of a sequence, as of a time, unknown and malformed events.

#[tokio::test]
async fn as_of_sequence_folds_exactly_the_first_n_events() {
    let store = Arc::new(MemoryStore::new());
    let stream = account("A1");
    deposits(store.as_ref(), &stream, 1, 5).await;
    let runner = ProjectionRunner::new(store);

    for n in 0..=5u64 {
        let p = runner
            .run(&stream, &BALANCE, AsOf::Sequence(n))
            .await
            .unwrap();
        assert_eq!(p.state, sum(1, n as i64), "as of {n}");
        assert_eq!(p.sequence, n);
        assert_eq!(p.events_read, n);
        assert_eq!(p.stream_version, 5);
        assert_eq!(p.snapshot_sequence, None);
    }
    // Past the version: the latest state.
    let p = runner
        .run(&stream, &BALANCE, AsOf::Sequence(99))
        .await
        .unwrap();
    assert_eq!((p.state, p.sequence), (15, 5));
    let p = runner.run(&stream, &BALANCE, AsOf::Latest).await.unwrap();
    assert_eq!((p.state, p.sequence, p.stream_version), (15, 5, 5));
}

#[tokio::test]
async fn a_stream_that_does_not_exist_projects_the_initial_state() {
    let runner = ProjectionRunner::new(Arc::new(MemoryStore::new()));
    let p = runner
        .run(&account("nobody"), &BALANCE, AsOf::Latest)
        .await
        .unwrap();
    assert_eq!(
        p,
        Projected {
            state: 0,
            sequence: 0,
            stream_version: 0,
            events_read: 0,
            snapshot_sequence: None
        }
    );
}

#[tokio::test]
async fn as_of_time_folds_the_events_written_by_then() {
    let store = Arc::new(MemoryStore::new());
    let stream = account("A1");
    deposits(store.as_ref(), &stream, 1, 2).await;
    // The events of one append share a timestamp; `between` is after it and before the next.
    let between = store
        .read(&stream, ReadRequest::all())
        .await
        .unwrap()
        .events[1]
        .timestamp;
    tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    deposits(store.as_ref(), &stream, 3, 1).await;
    let runner = ProjectionRunner::new(store);

    let p = runner
        .run(&stream, &BALANCE, AsOf::Time(between))
        .await
        .unwrap();
    assert_eq!((p.state, p.sequence, p.stream_version), (3, 2, 3));
    let p = runner
        .run(
            &stream,
            &BALANCE,
            AsOf::Time(between - Duration::seconds(60)),
        )
        .await
        .unwrap();
    assert_eq!((p.state, p.sequence), (0, 0));
    let p = runner
        .run(
            &stream,
            &BALANCE,
            AsOf::Time(between + Duration::seconds(60)),
        )
        .await
        .unwrap();
    assert_eq!((p.state, p.sequence), (6, 3));
}

#[tokio::test]
async fn as_of_time_is_a_prefix_even_where_stored_times_go_back() {
    let store = Arc::new(ScriptedStore::default());
    let stream = account("skewed");
    store.push(DEPOSITED, 1, at(10));
    store.push(DEPOSITED, 10, at(5)); // written by a writer whose clock is behind
    store.push(DEPOSITED, 100, at(20));
    store.push(DEPOSITED, 1000, at(1));
    let runner = ProjectionRunner::new(store);

    // Event 2 reads as recorded at 10 (its predecessor's time): nothing is as of 6, though
    // events 2 and 4 were stored with earlier times.
    let p = runner
        .run(&stream, &History, AsOf::Time(at(6)))
        .await
        .unwrap();
    assert_eq!((p.state, p.sequence), (vec![], 0));
    // (as of second, balance, sequence)
    for (second, balance, sequence) in [(10, 11, 2), (20, 1111, 4), (0, 0, 0)] {
        let p = runner
            .run(&stream, &BALANCE, AsOf::Time(at(second)))
            .await
            .unwrap();
        assert_eq!((p.state, p.sequence), (balance, sequence), "as of {second}");
    }
}

#[tokio::test]
async fn unknown_event_types_leave_the_state_unchanged() {
    let store = Arc::new(MemoryStore::new());
    let stream = account("A1");
    append(
        store.as_ref(),
        &stream,
        vec![
            event(DEPOSITED, 10),
            event(RENAMED, 1),
            event(WITHDRAWN, 3),
            event(RENAMED, 2),
        ],
    )
    .await;
    let p = ProjectionRunner::new(store)
        .run(&stream, &BALANCE, AsOf::Latest)
        .await
        .unwrap();
    assert_eq!(p.state, 7);
    assert_eq!(p.sequence, 4, "unknown events count as read and applied");
    assert_eq!(p.events_read, 4);
}

#[tokio::test]
async fn a_known_event_with_bad_data_fails_the_run_and_names_the_event() {
    let store = Arc::new(MemoryStore::new());
    let stream = account("A1");
    let bad = NewEvent::from_raw(
        DEPOSITED,
        RawValue::from_string(r#"{"amount":"lots"}"#.into()).unwrap(),
    );
    append(store.as_ref(), &stream, vec![event(DEPOSITED, 1), bad]).await;
    let err = ProjectionRunner::new(store)
        .run(&stream, &BALANCE, AsOf::Latest)
        .await
        .unwrap_err();
    match err {
        ProjectionError::Apply {
            projection, source, ..
        } => {
            assert_eq!(projection, "balance");
            assert_eq!(source.sequence, 2);
            assert_eq!(source.event_type, DEPOSITED);
        }
        other => panic!("expected an apply error, got {other:?}"),
    }
}

#[tokio::test]
async fn invalid_projection_names_are_refused() {
    struct BadName;
    impl Projection for BadName {
        type State = ();
        fn name(&self) -> &str {
            "no/slashes"
        }
        fn version(&self) -> u32 {
            1
        }
        fn initial(&self) {}
        fn apply(&self, _: &mut (), _: &RecordedEvent) -> Result<(), ApplyError> {
            Ok(())
        }
    }
    let runner = ProjectionRunner::new(Arc::new(MemoryStore::new()));
    let err = runner.run(&account("A1"), &BadName, AsOf::Latest).await;
    assert!(matches!(err, Err(ProjectionError::InvalidName { .. })));
}

// ---------------------------------------------------------------------------------------------
// Several projections in one pass.

#[tokio::test]
async fn run_many_reads_the_stream_once_and_matches_single_runs() {
    let store = Arc::new(CountingStore::new(MemoryStore::new()));
    let stream = account("A1");
    append(
        store.as_ref(),
        &stream,
        vec![
            event(DEPOSITED, 5),
            event(FROZEN, 0),
            event(WITHDRAWN, 8),
            event(RENAMED, 0),
            event(UNFROZEN, 0),
            event(WITHDRAWN, 1),
        ],
    )
    .await;
    let runner = ProjectionRunner::new(store.clone());
    let frozen = Classifier::new(IsFrozen);
    let overdraft = StatefulClassifier::new(InOverdraft);
    let projections: [&dyn DynProjection; 4] = [&BALANCE, &History, &frozen, &overdraft];

    for (as_of, expected) in [
        (
            AsOf::Latest,
            [
                json!(-4),
                json!([1, 2, 3, 4, 5, 6]),
                json!(false),
                json!({"member": true, "memo": -4}),
            ],
        ),
        (
            AsOf::Sequence(3),
            [
                json!(-3),
                json!([1, 2, 3]),
                json!(true),
                json!({"member": true, "memo": -3}),
            ],
        ),
    ] {
        store.reset();
        let results = runner.run_many(&stream, &projections, as_of).await.unwrap();
        assert_eq!(store.reads(), 1, "one read for four projections");
        let states: Vec<_> = results.iter().map(|r| r.state.clone()).collect();
        assert_eq!(states, expected, "as of {as_of:?}");

        let single = runner.run(&stream, &BALANCE, as_of).await.unwrap();
        assert_eq!(results[0], single.map(|b| json!(b)));
        let single = runner.run(&stream, &overdraft, as_of).await.unwrap();
        assert_eq!(
            results[3].state,
            serde_json::to_value(&single.state).unwrap()
        );
    }
}

// ---------------------------------------------------------------------------------------------
// Classifications.

#[tokio::test]
async fn classification_membership_as_of_a_sequence() {
    let store = Arc::new(MemoryStore::new());
    let stream = account("A1");
    append(
        store.as_ref(),
        &stream,
        vec![
            event(DEPOSITED, 10), // 1: 10
            event(WITHDRAWN, 15), // 2: -5, in overdraft
            event(RENAMED, 0),    // 3: unchanged
            event(DEPOSITED, 5),  // 4: 0, out
            event(WITHDRAWN, 1),  // 5: -1, in
        ],
    )
    .await;
    let runner = ProjectionRunner::new(store);
    let overdraft = StatefulClassifier::new(InOverdraft);
    let mut members = Vec::new();
    for n in 0..=5 {
        let p = runner
            .run(&stream, &overdraft, AsOf::Sequence(n))
            .await
            .unwrap();
        members.push(p.state.member);
    }
    assert_eq!(members, [false, false, true, true, false, true]);
    let p = runner.run(&stream, &overdraft, AsOf::Latest).await.unwrap();
    assert_eq!(
        p.state,
        Membership {
            member: true,
            memo: -1
        }
    );

    let frozen = Classifier::new(IsFrozen);
    let p = runner.run(&stream, &frozen, AsOf::Latest).await.unwrap();
    assert!(!p.state, "never frozen");
}

// ---------------------------------------------------------------------------------------------
// Snapshots.

fn snapshotting(
    store: Arc<dyn EventStore>,
    every: u64,
) -> (ProjectionRunner, Arc<MemorySnapshotStore>) {
    let snapshots = Arc::new(MemorySnapshotStore::new());
    let runner = ProjectionRunner::new(store).with_snapshots(snapshots.clone(), every);
    (runner, snapshots)
}

#[tokio::test]
async fn a_snapshot_is_written_past_the_threshold_and_then_used() {
    let store = Arc::new(CountingStore::new(MemoryStore::new()));
    let stream = account("A1");
    let (runner, snapshots) = snapshotting(store.clone(), 10);

    deposits(store.as_ref(), &stream, 1, 10).await;
    let p = runner.run(&stream, &BALANCE, AsOf::Latest).await.unwrap();
    assert_eq!((p.state, p.events_read), (sum(1, 10), 10));
    assert!(snapshots.is_empty(), "10 events is not more than 10");

    deposits(store.as_ref(), &stream, 11, 1).await;
    let p = runner.run(&stream, &BALANCE, AsOf::Latest).await.unwrap();
    assert_eq!(
        (p.state, p.events_read, p.snapshot_sequence),
        (sum(1, 11), 11, None)
    );
    let saved = snapshots
        .get(&stream, "balance")
        .expect("a snapshot after 11 events");
    assert_eq!(saved.sequence, 11);
    assert_eq!(saved.projection_version, 1);
    assert_eq!(saved.state.get(), sum(1, 11).to_string());

    deposits(store.as_ref(), &stream, 12, 3).await;
    store.reset();
    let p = runner.run(&stream, &BALANCE, AsOf::Latest).await.unwrap();
    assert_eq!(p.state, sum(1, 14));
    assert_eq!(p.sequence, 14);
    assert_eq!(p.snapshot_sequence, Some(11));
    assert_eq!(p.events_read, 3, "only the events after the snapshot");
    assert_eq!(store.events_read(), 3, "the store returned only those");
    assert_eq!(
        snapshots.saves(),
        1,
        "3 events past the snapshot: no new one"
    );

    // A snapshot is never written by a run as of a sequence or a time.
    deposits(store.as_ref(), &stream, 15, 20).await;
    runner
        .run(&stream, &BALANCE, AsOf::Sequence(34))
        .await
        .unwrap();
    runner
        .run(
            &stream,
            &BALANCE,
            AsOf::Time(at(0) + Duration::days(365 * 100)),
        )
        .await
        .unwrap();
    assert_eq!(snapshots.saves(), 1);
    let p = runner.run(&stream, &BALANCE, AsOf::Latest).await.unwrap();
    assert_eq!((p.events_read, p.snapshot_sequence), (23, Some(11)));
    assert_eq!(snapshots.get(&stream, "balance").unwrap().sequence, 34);
}

#[tokio::test]
async fn a_long_stream_with_a_snapshot_reads_only_the_events_after_it() {
    const EVENTS: i64 = 10_000;
    const PER_APPEND: i64 = 1_000;
    let store = Arc::new(CountingStore::new(MemoryStore::new()));
    let stream = account("long");
    for first in (1..=EVENTS).step_by(PER_APPEND as usize) {
        deposits(store.as_ref(), &stream, first, PER_APPEND).await;
    }
    let (runner, snapshots) = snapshotting(store.clone(), 100);
    let p = runner.run(&stream, &BALANCE, AsOf::Latest).await.unwrap();
    assert_eq!((p.state, p.events_read), (sum(1, EVENTS), EVENTS as u64));
    assert_eq!(
        snapshots.get(&stream, "balance").unwrap().sequence,
        EVENTS as u64
    );

    deposits(store.as_ref(), &stream, EVENTS + 1, 5).await;
    store.reset();
    let p = runner.run(&stream, &BALANCE, AsOf::Latest).await.unwrap();
    assert_eq!(p.state, sum(1, EVENTS + 5));
    assert_eq!(
        (p.events_read, p.snapshot_sequence),
        (5, Some(EVENTS as u64))
    );
    assert_eq!((store.reads(), store.events_read()), (1, 5));
}

#[tokio::test]
async fn a_snapshot_at_the_head_of_the_stream_needs_no_read_of_events() {
    let store = Arc::new(CountingStore::new(MemoryStore::new()));
    let stream = account("head");
    deposits(store.as_ref(), &stream, 1, 30).await;
    let (runner, _snapshots) = snapshotting(store.clone(), 10);
    runner.run(&stream, &BALANCE, AsOf::Latest).await.unwrap();

    store.reset();
    let p = runner.run(&stream, &BALANCE, AsOf::Latest).await.unwrap();
    assert_eq!(p.state, sum(1, 30));
    assert_eq!((p.sequence, p.stream_version), (30, 30));
    assert_eq!((p.events_read, p.snapshot_sequence), (0, Some(30)));
    assert_eq!(store.reads(), 0, "the version alone showed nothing to read");

    // As of a sequence the snapshot passes, events are read (and the snapshot ignored).
    let p = runner
        .run(&stream, &BALANCE, AsOf::Sequence(12))
        .await
        .unwrap();
    assert_eq!((p.state, p.snapshot_sequence), (sum(1, 12), None));
    assert_eq!((store.reads(), store.events_read()), (1, 12));
}

#[tokio::test]
async fn a_snapshot_newer_than_a_version_read_beside_it_is_kept() {
    let store = Arc::new(ScriptedStore::default());
    let stream = account("race");
    for i in 0..10 {
        store.push(DEPOSITED, 1, at(i));
    }
    let (runner, snapshots) = snapshotting(store.clone(), 0);
    runner.run(&stream, &BALANCE, AsOf::Latest).await.unwrap();
    assert_eq!(snapshots.get(&stream, "balance").unwrap().sequence, 10);

    // The version is read before appends 9 and 10 landed, the snapshot after they did.
    *store.stale_version.lock().unwrap() = Some(8);
    store.push(DEPOSITED, 1, at(10));
    let p = runner.run(&stream, &BALANCE, AsOf::Latest).await.unwrap();
    assert_eq!((p.state, p.stream_version), (11, 11));
    assert_eq!((p.events_read, p.snapshot_sequence), (1, Some(10)));
}

#[tokio::test]
async fn a_cached_state_at_the_head_costs_only_the_version_read() {
    let store = Arc::new(CountingStore::new(MemoryStore::new()));
    let stream = account("cached");
    deposits(store.as_ref(), &stream, 1, 5).await;
    // The snapshot store is down: whatever is saved, the cache alone makes runs cheap.
    let cache = Arc::new(StateCache::new(1 << 20));
    let runner = ProjectionRunner::new(store.clone())
        .with_snapshots(Arc::new(BrokenSnapshots), 100)
        .with_cache(cache.clone());
    let p = runner.run(&stream, &BALANCE, AsOf::Latest).await.unwrap();
    assert_eq!(
        (p.state, p.events_read, p.snapshot_sequence),
        (sum(1, 5), 5, None)
    );

    store.reset();
    let p = runner.run(&stream, &BALANCE, AsOf::Latest).await.unwrap();
    assert_eq!(
        (p.state, p.events_read, p.snapshot_sequence),
        (sum(1, 5), 0, Some(5))
    );
    assert_eq!(store.reads(), 0);

    // The stream moves on: only the new events are read.
    deposits(store.as_ref(), &stream, 6, 2).await;
    let p = runner.run(&stream, &BALANCE, AsOf::Latest).await.unwrap();
    assert_eq!(
        (p.state, p.events_read, p.snapshot_sequence),
        (sum(1, 7), 2, Some(5))
    );
    assert_eq!((store.reads(), store.events_read()), (1, 2));

    // Points in the past never use the cache (a state as of the head is not one as of them).
    let p = runner
        .run(&stream, &BALANCE, AsOf::Sequence(3))
        .await
        .unwrap();
    assert_eq!((p.state, p.snapshot_sequence), (sum(1, 3), None));

    // Another runner without the cache sees none of it.
    let p = ProjectionRunner::new(store.clone())
        .run(&stream, &BALANCE, AsOf::Latest)
        .await
        .unwrap();
    assert_eq!((p.events_read, p.snapshot_sequence), (7, None));
    assert_eq!(cache.len(), 1);
}

#[tokio::test]
async fn snapshots_keep_up_with_a_stream_read_through_the_cache() {
    let store = Arc::new(MemoryStore::new());
    let stream = account("cached-growing");
    let (runner, snapshots) = snapshotting(store.clone(), 10);
    let runner = runner.with_cache(Arc::new(StateCache::new(1 << 20)));
    for n in 1..=25 {
        deposits(store.as_ref(), &stream, n, 1).await;
        let p = runner.run(&stream, &BALANCE, AsOf::Latest).await.unwrap();
        assert_eq!(p.events_read, 1, "one new event per run");
    }
    // Each run folds one event past the cached state, yet a snapshot is saved whenever more
    // than 10 events have passed since the last saved one.
    assert_eq!(snapshots.get(&stream, "balance").unwrap().sequence, 22);
}

#[tokio::test]
async fn an_append_of_this_process_moves_the_cached_state_to_the_head() {
    let store = Arc::new(CountingStore::new(MemoryStore::new()));
    let stream = account("remembered");
    deposits(store.as_ref(), &stream, 1, 3).await;
    let (runner, snapshots) = snapshotting(store.clone(), 0);
    let runner = runner.with_cache(Arc::new(StateCache::new(1 << 20)));
    runner.run(&stream, &BALANCE, AsOf::Latest).await.unwrap();

    let new = vec![event(DEPOSITED, 4), event(DEPOSITED, 5)];
    let outcome = store
        .append(&stream, ExpectedVersion::Exact(3), new.clone())
        .await
        .unwrap();
    runner.remember_append(&stream, &BALANCE, &new, &outcome);
    store.reset();
    let p = runner.run(&stream, &BALANCE, AsOf::Latest).await.unwrap();
    assert_eq!((p.state, p.sequence, p.events_read), (sum(1, 5), 5, 0));
    assert_eq!(store.reads(), 0, "nothing read back");
    // The run saved a snapshot of the remembered state; its time is the stored one, so a
    // point in time between the appends still excludes the remembered events.
    let saved = snapshots.get(&stream, "balance").unwrap();
    assert_eq!(saved.sequence, 5);
    let stored = store.read(&stream, ReadRequest::all()).await.unwrap();
    assert_eq!(saved.max_timestamp, Some(stored.events[4].timestamp));
    let before = stored.events[4].timestamp - Duration::nanoseconds(1);
    let p = runner
        .run(&stream, &BALANCE, AsOf::Time(before))
        .await
        .unwrap();
    assert_eq!(p.state, sum(1, 3));

    // Nothing moves when the cached state is not the one right before the append: another
    // writer's event in between, a duplicate, or an outcome without its time.
    let theirs = store
        .append(
            &stream,
            ExpectedVersion::Exact(5),
            vec![event(DEPOSITED, 6)],
        )
        .await
        .unwrap();
    let mine = vec![event(DEPOSITED, 7)];
    let outcome = store
        .append(&stream, ExpectedVersion::Exact(6), mine.clone())
        .await
        .unwrap();
    runner.remember_append(&stream, &BALANCE, &mine, &outcome);
    let retry = store
        .append(&stream, ExpectedVersion::Exact(6), mine.clone())
        .await
        .unwrap();
    assert!(retry.duplicate && retry.recorded.is_none());
    runner.remember_append(&stream, &BALANCE, &mine, &retry);
    store.reset();
    let p = runner.run(&stream, &BALANCE, AsOf::Latest).await.unwrap();
    assert_eq!((p.state, p.sequence), (sum(1, 7), 7));
    assert_eq!(p.events_read, 2, "both later events read: {theirs:?}");
}

#[tokio::test]
async fn a_snapshot_is_used_only_for_points_it_does_not_pass() {
    let store = Arc::new(ScriptedStore::default());
    let stream = account("A1");
    for i in 0..10 {
        store.push(DEPOSITED, 1 << i, at(i * 10));
    }
    let (runner, snapshots) = snapshotting(store.clone(), 0);
    runner
        .run(&stream, &BALANCE, AsOf::Sequence(1))
        .await
        .unwrap();
    assert!(snapshots.is_empty());
    runner.run(&stream, &BALANCE, AsOf::Latest).await.unwrap();
    assert_eq!(snapshots.get(&stream, "balance").unwrap().sequence, 10);
    assert_eq!(
        snapshots.get(&stream, "balance").unwrap().max_timestamp,
        Some(at(90))
    );
    store.push(DEPOSITED, 1 << 10, at(100));
    store.push(DEPOSITED, 1 << 11, at(55)); // a skewed clock: before the snapshot's max

    let p = runner
        .run(&stream, &BALANCE, AsOf::Sequence(5))
        .await
        .unwrap();
    assert_eq!(
        (p.state, p.snapshot_sequence, p.events_read),
        (0b11111, None, 5)
    );
    let p = runner
        .run(&stream, &BALANCE, AsOf::Sequence(11))
        .await
        .unwrap();
    assert_eq!(
        (p.state, p.snapshot_sequence, p.events_read),
        (0x7ff, Some(10), 1)
    );
    // As of a time: up to the first event recorded after it (event 12, stored at 55, reads as
    // recorded at 100, its predecessor's time).
    let p = runner
        .run(&stream, &BALANCE, AsOf::Time(at(89)))
        .await
        .unwrap();
    assert_eq!((p.state, p.snapshot_sequence), (0x1ff, None));
    let p = runner
        .run(&stream, &BALANCE, AsOf::Time(at(90)))
        .await
        .unwrap();
    assert_eq!(
        (p.state, p.snapshot_sequence, p.events_read),
        (0x3ff, Some(10), 0)
    );
    assert_eq!(p.sequence, 10);
    let p = runner
        .run(&stream, &BALANCE, AsOf::Time(at(100)))
        .await
        .unwrap();
    assert_eq!((p.state, p.sequence), (0xfff, 12));
}

#[tokio::test]
async fn a_snapshot_of_another_projection_version_is_ignored_and_replaced() {
    let store = Arc::new(MemoryStore::new());
    let stream = account("A1");
    let (runner, snapshots) = snapshotting(store.clone(), 2);
    deposits(store.as_ref(), &stream, 1, 5).await;
    runner.run(&stream, &BALANCE, AsOf::Latest).await.unwrap();
    assert_eq!(
        snapshots
            .get(&stream, "balance")
            .unwrap()
            .projection_version,
        1
    );

    deposits(store.as_ref(), &stream, 6, 1).await;
    let v2 = Balance { version: 2 };
    let p = runner.run(&stream, &v2, AsOf::Latest).await.unwrap();
    assert_eq!(
        (p.state, p.events_read, p.snapshot_sequence),
        (sum(1, 6), 6, None)
    );
    let saved = snapshots.get(&stream, "balance").unwrap();
    assert_eq!((saved.projection_version, saved.sequence), (2, 6));

    // The old code, still running somewhere during a rollout, ignores the new snapshot too.
    let p = runner.run(&stream, &BALANCE, AsOf::Latest).await.unwrap();
    assert_eq!(
        (p.state, p.events_read, p.snapshot_sequence),
        (sum(1, 6), 6, None)
    );
}

#[tokio::test]
async fn a_corrupt_snapshot_falls_back_to_a_full_replay() {
    let store = Arc::new(MemoryStore::new());
    let stream = account("A1");
    deposits(store.as_ref(), &stream, 1, 4).await;
    let (runner, snapshots) = snapshotting(store.clone(), 100);

    let corrupt = |sequence: u64, state: &str| Snapshot {
        projection: "balance".into(),
        projection_version: 1,
        sequence,
        max_timestamp: Some(at(0)),
        state: RawValue::from_string(state.into()).unwrap(),
        failure: None,
    };
    // A state that does not deserialize into the projection's state.
    snapshots
        .save(&stream, &corrupt(2, r#"{"not":"a number"}"#))
        .await
        .unwrap();
    let p = runner.run(&stream, &BALANCE, AsOf::Latest).await.unwrap();
    assert_eq!((p.state, p.events_read, p.snapshot_sequence), (10, 4, None));

    // A snapshot past the end of the stream (the stream it was taken of is not this one).
    snapshots.save(&stream, &corrupt(50, "1000")).await.unwrap();
    let p = runner.run(&stream, &BALANCE, AsOf::Latest).await.unwrap();
    assert_eq!(
        (p.state, p.sequence, p.events_read, p.snapshot_sequence),
        (10, 4, 4, None)
    );
    let many = runner
        .run_many(&stream, &[&BALANCE, &History], AsOf::Latest)
        .await
        .unwrap();
    assert_eq!(many[0].state, json!(10));
    assert_eq!(many[1].state, json!([1, 2, 3, 4]));

    // A snapshot store that is down.
    let runner = ProjectionRunner::new(store).with_snapshots(Arc::new(BrokenSnapshots), 0);
    let p = runner.run(&stream, &BALANCE, AsOf::Latest).await.unwrap();
    assert_eq!((p.state, p.events_read), (10, 4));
}

#[tokio::test]
async fn run_many_resumes_each_projection_from_its_own_snapshot() {
    let store = Arc::new(CountingStore::new(MemoryStore::new()));
    let stream = account("A1");
    let (runner, snapshots) = snapshotting(store.clone(), 0);
    deposits(store.as_ref(), &stream, 1, 4).await;
    runner.run(&stream, &BALANCE, AsOf::Latest).await.unwrap();
    deposits(store.as_ref(), &stream, 5, 2).await;
    runner.run(&stream, &History, AsOf::Latest).await.unwrap();
    deposits(store.as_ref(), &stream, 7, 1).await;

    store.reset();
    let results = runner
        .run_many(&stream, &[&BALANCE, &History], AsOf::Latest)
        .await
        .unwrap();
    assert_eq!(store.reads(), 1);
    assert_eq!(
        store.events_read(),
        3,
        "from the older snapshot (4) to the end (7)"
    );
    assert_eq!(results[0].state, json!(sum(1, 7)));
    assert_eq!(
        (results[0].snapshot_sequence, results[0].events_read),
        (Some(4), 3)
    );
    assert_eq!(results[1].state, json!([1, 2, 3, 4, 5, 6, 7]));
    assert_eq!(
        (results[1].snapshot_sequence, results[1].events_read),
        (Some(6), 1)
    );
    assert_eq!(snapshots.get(&stream, "balance").unwrap().sequence, 7);
    assert_eq!(snapshots.get(&stream, "history").unwrap().sequence, 7);
}

// ---------------------------------------------------------------------------------------------
// Property: snapshots and cached states never change a result.

#[derive(Debug, Clone)]
enum Op {
    /// Append the next `n` events of the generated history.
    Append(usize),
    Query(Point),
}

#[derive(Debug, Clone, Copy)]
enum Point {
    Latest,
    Sequence(u64),
    /// Seconds after T0.
    Time(i64),
}

impl Point {
    fn as_of(self) -> AsOf {
        match self {
            Point::Latest => AsOf::Latest,
            Point::Sequence(n) => AsOf::Sequence(n),
            Point::Time(s) => AsOf::Time(at(s)),
        }
    }
}

const KINDS: [&str; 5] = [DEPOSITED, WITHDRAWN, FROZEN, UNFROZEN, RENAMED];

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        (1usize..8).prop_map(Op::Append),
        Just(Op::Query(Point::Latest)),
        (0u64..45).prop_map(|n| Op::Query(Point::Sequence(n))),
        (-2i64..42).prop_map(|s| Op::Query(Point::Time(s))),
    ]
}

/// The result the runner must give, computed without it: the prefix (as of a time, up to the
/// first event whose time, never below its predecessor's, is after it), then fold.
fn reference<P: Projection>(
    projection: &P,
    events: &[RecordedEvent],
    as_of: AsOf,
) -> (P::State, u64) {
    let mut state = projection.initial();
    let mut sequence = 0;
    let mut latest = None;
    for e in events.iter().take_while(|e| {
        latest = latest.max(Some(e.timestamp));
        match as_of {
            AsOf::Latest => true,
            AsOf::Sequence(n) => e.sequence <= n,
            AsOf::Time(t) => latest.is_some_and(|latest| latest <= t),
        }
    }) {
        projection.apply(&mut state, e).unwrap();
        sequence = e.sequence;
    }
    (state, sequence)
}

/// Runs `projection` on `plain` (no snapshots) and then on `snapshotting`, and checks both, and
/// its `run_many` result `many`, against the reference fold of `events`.
async fn check<P: Projection>(
    projection: &P,
    events: &[RecordedEvent],
    as_of: AsOf,
    (plain, snapshotting, stream): (&ProjectionRunner, &ProjectionRunner, &StreamId),
    many: &Projected<serde_json::Value>,
) -> Result<(), TestCaseError>
where
    P::State: PartialEq + std::fmt::Debug,
{
    let plain = plain.run(stream, projection, as_of).await.unwrap();
    let snapshotted = snapshotting.run(stream, projection, as_of).await.unwrap();
    let (state, sequence) = reference(projection, events, as_of);
    let name = Projection::name(projection);
    prop_assert_eq!(&plain.state, &state, "{} without snapshots", name);
    prop_assert_eq!(plain.sequence, sequence);
    prop_assert_eq!(plain.snapshot_sequence, None);
    prop_assert_eq!(&snapshotted.state, &state, "{} with snapshots", name);
    prop_assert_eq!(snapshotted.sequence, sequence);
    prop_assert_eq!(snapshotted.stream_version, events.len() as u64);
    prop_assert_eq!(
        &many.state,
        &serde_json::to_value(&state).unwrap(),
        "{} in run_many",
        name
    );
    prop_assert_eq!(many.sequence, sequence);
    if !matches!(as_of, AsOf::Time(_)) {
        // Sequence-bounded reads fold a contiguous range past the snapshot.
        let from = snapshotted.snapshot_sequence.unwrap_or(0);
        prop_assert_eq!(snapshotted.events_read, sequence.saturating_sub(from));
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    #[test]
    fn snapshots_and_cached_states_never_change_a_result(
        history in prop::collection::vec((0usize..KINDS.len(), 1i64..50, 0i64..40), 0..40),
        ops in prop::collection::vec(op(), 1..16),
        every in 0u64..6,
    ) {
        futures::executor::block_on(async {
            let store = Arc::new(ScriptedStore::default());
            let stream = account("prop");
            let plain = ProjectionRunner::new(store.clone());
            // Snapshots and a state cache of room for about three small states, so runs resume
            // from either, or from nothing.
            let (runner, _snapshots) = snapshotting(store.clone(), every);
            let runner = runner.with_cache(Arc::new(StateCache::new(3 * 400)));
            let frozen = Classifier::new(IsFrozen);
            let overdraft = StatefulClassifier::new(InOverdraft);
            let mut pending = history.iter();

            for op in &ops {
                let point = match op {
                    Op::Append(n) => {
                        for (kind, amount, second) in pending.by_ref().take(*n) {
                            store.push(KINDS[*kind], *amount, at(*second));
                        }
                        continue;
                    }
                    Op::Query(point) => *point,
                };
                let as_of = point.as_of();
                let events = store.snapshot();
                let many = runner
                    .run_many(&stream, &[&BALANCE, &History, &frozen, &overdraft], as_of)
                    .await
                    .unwrap();
                let runners = (&plain, &runner, &stream);
                check(&BALANCE, &events, as_of, runners, &many[0]).await?;
                check(&History, &events, as_of, runners, &many[1]).await?;
                check(&frozen, &events, as_of, runners, &many[2]).await?;
                check(&overdraft, &events, as_of, runners, &many[3]).await?;
            }
            Ok::<(), TestCaseError>(())
        })?;
    }
}
