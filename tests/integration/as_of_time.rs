//! Property: as of a time is as of a sequence. Writers whose clocks are off by up to ten
//! minutes either way append to one stream in turn, under every kind of expectation; then, for
//! the time of every event (and just before it), a projection run as of that time gives
//! exactly the state as of the sequence of the last event recorded at or before it — the fold
//! of events `1..=M`, a prefix — with and without snapshots (saved at random points through the
//! state cache), on the in-memory backend, Table storage and Append Blobs (Azurite). The times
//! read never go back.

use std::sync::Arc;

use crate::support::seen::Seen;
use proptest::prelude::*;
use proptest::test_runner::{Config, TestCaseError, TestRunner};
use streamfold::projection::{AsOf, ProjectionRunner, SnapshotStore, StateCache};
use streamfold::storage::MemorySnapshotStore;
use streamfold::storage::{BlobStore, MemoryStore, StorageAccount, TableSnapshotStore, TableStore};
use streamfold::stream::{
    Clock, EventStore, ExpectedVersion, NewEvent, ReadRequest, StreamId, TIME_PRECISION_NANOS,
};
use streamfold_testbed::Azurite;
use time::Duration;

#[derive(Debug, Clone, Copy)]
enum Kind {
    Any,
    Exists,
    /// The version the writer reads just before.
    Exact,
}

#[derive(Debug, Clone)]
struct Step {
    writer: usize,
    kind: Kind,
    events: usize,
    /// Run the projection as of the latest event afterwards (saving snapshots, caching state).
    run_latest: bool,
}

#[derive(Debug, Clone)]
struct Case {
    /// Each writer's clock offset, in milliseconds.
    skews: Vec<i64>,
    steps: Vec<Step>,
    /// Snapshot cadence.
    every: u64,
}

const WRITERS: usize = 3;
const TEN_MINUTES_MS: i64 = 600_000;

fn case() -> impl Strategy<Value = Case> {
    let step = (
        0..WRITERS,
        prop_oneof![Just(Kind::Any), Just(Kind::Exists), Just(Kind::Exact)],
        1usize..4,
        any::<bool>(),
    )
        .prop_map(|(writer, kind, events, run_latest)| Step {
            writer,
            kind,
            events,
            run_latest,
        });
    (
        prop::collection::vec(-TEN_MINUTES_MS..TEN_MINUTES_MS, WRITERS),
        prop::collection::vec(step, 1..9),
        0u64..3,
    )
        .prop_map(|(skews, steps, every)| Case {
            skews,
            steps,
            every,
        })
}

/// A backend: opens views of one storage with a given clock, and a snapshot store.
trait Backend {
    fn open(&self, clock: Clock) -> Arc<dyn EventStore>;
    fn snapshots(&self) -> Arc<dyn SnapshotStore>;
}

struct Memory(MemoryStore);

impl Backend for Memory {
    fn open(&self, clock: Clock) -> Arc<dyn EventStore> {
        Arc::new(self.0.clone().with_clock(clock))
    }
    fn snapshots(&self) -> Arc<dyn SnapshotStore> {
        Arc::new(MemorySnapshotStore::new())
    }
}

struct Table(StorageAccount);

impl Backend for Table {
    fn open(&self, clock: Clock) -> Arc<dyn EventStore> {
        Arc::new(TableStore::new(self.0.clone()).with_clock(clock))
    }
    fn snapshots(&self) -> Arc<dyn SnapshotStore> {
        Arc::new(TableSnapshotStore::new(self.0.clone()))
    }
}

struct Blob(StorageAccount);

impl Backend for Blob {
    fn open(&self, clock: Clock) -> Arc<dyn EventStore> {
        // Small segments, so that runs also read across segments.
        Arc::new(
            BlobStore::new(self.0.clone())
                .with_max_blocks_per_segment(3)
                .with_clock(clock),
        )
    }
    fn snapshots(&self) -> Arc<dyn SnapshotStore> {
        // Snapshots of blob streams live in Table storage, with its 100 ns times.
        Arc::new(TableSnapshotStore::new(self.0.clone()))
    }
}

fn events(n: usize) -> Vec<NewEvent> {
    (0..n)
        .map(|i| NewEvent::new("Happened", &serde_json::json!({ "i": i })).unwrap())
        .collect()
}

fn fail(what: impl std::fmt::Display) -> TestCaseError {
    TestCaseError::fail(what.to_string())
}

async fn check(backend: &dyn Backend, case: &Case) -> Result<(), TestCaseError> {
    let stream = StreamId::new("Prop", "Clocks", uuid::Uuid::new_v4().to_string()).unwrap();
    let writers: Vec<Arc<dyn EventStore>> = case
        .skews
        .iter()
        .map(|ms| backend.open(Clock::skewed(Duration::milliseconds(*ms))))
        .collect();
    let reader = backend.open(Clock::default());
    let plain = ProjectionRunner::new(reader.clone());
    let snapshotting = ProjectionRunner::new(reader.clone())
        .with_snapshots(backend.snapshots(), case.every)
        .with_cache(Arc::new(StateCache::new(1 << 20)));
    let mut version = 0;
    for step in &case.steps {
        let writer = &writers[step.writer];
        let expected = match (step.kind, version) {
            (_, 0) => ExpectedVersion::NoStream,
            (Kind::Any, _) => ExpectedVersion::Any,
            (Kind::Exists, _) => ExpectedVersion::Exists,
            (Kind::Exact, _) => {
                ExpectedVersion::Exact(writer.version(&stream).await.map_err(fail)?)
            }
        };
        let outcome = writer
            .append(&stream, expected, events(step.events))
            .await
            .map_err(fail)?;
        version = outcome.version;
        if step.run_latest {
            snapshotting
                .run(&stream, &Seen, AsOf::Latest)
                .await
                .map_err(fail)?;
        }
    }
    let all = reader
        .read(&stream, ReadRequest::all())
        .await
        .map_err(fail)?
        .events;
    prop_assert_eq!(all.len() as u64, version);
    let times: Vec<_> = all.iter().map(|e| e.timestamp).collect();
    prop_assert!(
        times.windows(2).all(|w| w[0] <= w[1]),
        "times go back: {:?}",
        times
    );
    // Each event's time, one precision step before it, and one nanosecond before it (a
    // snapshot of a time stored less precisely than the events' must not pass for it).
    let tick = Duration::nanoseconds(i64::from(TIME_PRECISION_NANOS));
    let nano = Duration::nanoseconds(1);
    let mut points: Vec<_> = times
        .iter()
        .flat_map(|&t| [t, t - tick, t - nano])
        .collect();
    points.dedup();
    for t in points {
        // The last event recorded at or before `t`.
        let last = times
            .iter()
            .rposition(|&u| u <= t)
            .map_or(0, |i| i as u64 + 1);
        let by_sequence = plain
            .run(&stream, &Seen, AsOf::Sequence(last))
            .await
            .map_err(fail)?;
        prop_assert_eq!(&by_sequence.state, &(1..=last).collect::<Vec<_>>());
        for (runner, label) in [(&plain, "plain"), (&snapshotting, "with snapshots")] {
            let by_time = runner
                .run(&stream, &Seen, AsOf::Time(t))
                .await
                .map_err(fail)?;
            prop_assert_eq!(
                (&by_time.state, by_time.sequence),
                (&by_sequence.state, by_sequence.sequence),
                "{} as of {} (times {:?})",
                label,
                t,
                times
            );
        }
    }
    let latest = snapshotting
        .run(&stream, &Seen, AsOf::Latest)
        .await
        .map_err(fail)?;
    prop_assert_eq!(latest.state, (1..=version).collect::<Vec<_>>());
    Ok(())
}

fn run_property(cases: u32, backend: &dyn Backend, runtime: &tokio::runtime::Runtime) {
    let mut runner = TestRunner::new(Config {
        cases,
        ..Config::default()
    });
    runner
        .run(&case(), |case| runtime.block_on(check(backend, &case)))
        .unwrap();
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

#[test]
fn as_of_a_time_is_as_of_a_sequence_in_memory() {
    run_property(64, &Memory(MemoryStore::new()), &runtime());
}

#[test]
fn as_of_a_time_is_as_of_a_sequence_on_table_storage() {
    let runtime = runtime();
    let azurite = runtime.block_on(Azurite::start()).unwrap();
    let account = StorageAccount::from_connection_string(&azurite.connection_string()).unwrap();
    run_property(12, &Table(account), &runtime);
    drop(azurite);
}

#[test]
fn as_of_a_time_is_as_of_a_sequence_on_append_blobs() {
    let runtime = runtime();
    let azurite = runtime.block_on(Azurite::start()).unwrap();
    let account = StorageAccount::from_connection_string(&azurite.connection_string()).unwrap();
    run_property(12, &Blob(account), &runtime);
    drop(azurite);
}
