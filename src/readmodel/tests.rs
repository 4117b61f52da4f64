//! Unit tests of the projector and the rebuild on the in-memory stores, with a projection that
//! records every event it folds, so an event applied twice or skipped shows in the state.

use std::sync::Arc;

use async_trait::async_trait;
use serde_json::value::RawValue;

use super::*;
use crate::projection::{ApplyError, DynProjection, Projection};
use crate::storage::MemoryStore;
use crate::stream::{
    EntityType, EventStore, ExpectedVersion, NewEvent, ReadRequest, RecordedEvent, StoreDecorator,
    StreamId,
};
use crate::testing::{CountingStore, EventCount};

/// An event type [`Trail`] refuses (and [`COUNT`] counts).
const POISON: &str = "Poison";

/// State: the sequence numbers folded in, in order.
pub(super) struct Trail;

impl Projection for Trail {
    type State = Vec<u64>;
    fn name(&self) -> &str {
        "trail"
    }
    fn version(&self) -> u32 {
        1
    }
    fn initial(&self) -> Vec<u64> {
        Vec::new()
    }
    fn apply(&self, state: &mut Vec<u64>, event: &RecordedEvent) -> Result<(), ApplyError> {
        if event.event_type == POISON {
            return Err(ApplyError::new(event, "trail refuses poison"));
        }
        state.push(event.sequence);
        Ok(())
    }
}

pub(super) const COUNT: EventCount = EventCount::new().at_version(3);

/// A read-model store that yields to other tasks before each operation, so concurrent
/// projector calls interleave between load and save, as they do against real storage. When
/// it watches an event store, each load notes, as it finishes, how many event reads had
/// finished: a load that overlaps the read of the events sees it done.
pub(super) struct Yielding(pub(super) MemoryReadModelStore, pub(super) Option<Watch>);

pub(super) struct Watch {
    events: Arc<CountingStore<MemoryStore>>,
    reads_seen: std::sync::Mutex<Vec<u64>>,
}

impl Yielding {
    /// The event reads each load saw finished (empty when it watches nothing).
    fn reads_seen(&self) -> Vec<u64> {
        self.1
            .as_ref()
            .map_or_else(Vec::new, |w| w.reads_seen.lock().unwrap().clone())
    }
}

#[async_trait]
impl ReadModelStore for Yielding {
    async fn load(
        &self,
        model: &str,
        stream: &StreamId,
    ) -> Result<Option<StoredCheckpoint>, ReadModelStoreError> {
        tokio::task::yield_now().await;
        if let Some(watch) = &self.1 {
            watch.reads_seen.lock().unwrap().push(watch.events.reads());
        }
        self.0.load(model, stream).await
    }
    async fn save(
        &self,
        model: &str,
        stream: &StreamId,
        checkpoint: &Checkpoint,
        condition: &SaveCondition,
    ) -> Result<SaveOutcome, ReadModelStoreError> {
        tokio::task::yield_now().await;
        self.0.save(model, stream, checkpoint, condition).await
    }
    async fn list(
        &self,
        model: &str,
        entity_type: &EntityType,
        continuation: Option<&str>,
        page_size: usize,
    ) -> Result<ReadModelPage, ReadModelStoreError> {
        self.0
            .list(model, entity_type, continuation, page_size)
            .await
    }
}

struct Fixture {
    events: Arc<MemoryStore>,
    rows: Arc<Yielding>,
    projector: ReadModelProjector,
}

fn fixture() -> Fixture {
    let events = Arc::new(MemoryStore::new());
    let rows = Arc::new(Yielding(MemoryReadModelStore::new(), None));
    let models: Vec<Arc<dyn DynProjection>> = vec![Arc::new(Trail), Arc::new(COUNT)];
    let projector = ReadModelProjector::new(events.clone(), rows.clone(), models);
    Fixture {
        events,
        rows,
        projector,
    }
}

pub(super) fn stream(instance: &str) -> StreamId {
    StreamId::new("Bank", "Account", instance).unwrap()
}

pub(super) async fn append(events: &MemoryStore, stream: &StreamId, count: usize) {
    let new = (0..count)
        .map(|_| NewEvent::from_raw("Happened", RawValue::from_string("{}".into()).unwrap()))
        .collect();
    events
        .append(stream, ExpectedVersion::Any, new)
        .await
        .unwrap();
}

async fn trail(f: &Fixture, stream: &StreamId) -> Option<(Vec<u64>, u64)> {
    let row = f.rows.0.load("trail", stream).await.unwrap()?;
    Some((
        serde_json::from_str(row.checkpoint.state.get()).unwrap(),
        row.checkpoint.sequence,
    ))
}

async fn count(f: &Fixture, stream: &StreamId) -> Option<(u64, u64)> {
    let row = f.rows.0.load("count", stream).await.unwrap()?;
    Some((
        serde_json::from_str(row.checkpoint.state.get()).unwrap(),
        row.checkpoint.sequence,
    ))
}

/// Both rows equal a full replay of the stream.
async fn assert_exact(f: &Fixture, stream: &StreamId) {
    let version = f.events.version(stream).await.unwrap();
    let all: Vec<u64> = (1..=version).collect();
    assert_eq!(trail(f, stream).await, Some((all, version)));
    assert_eq!(count(f, stream).await, Some((version, version)));
}

#[tokio::test]
async fn in_order_duplicated_and_reversed_notifications_apply_each_event_once() {
    let f = fixture();
    let s = stream("1");
    append(&f.events, &s, 1).await;
    let outcome = f.projector.project(&s, 1).await.unwrap();
    assert_eq!(outcome.len(), 2);
    assert!(outcome.iter().all(|o| o.applied == 1 && !o.duplicate));
    assert_exact(&f, &s).await;

    // A duplicate changes nothing and writes nothing.
    let saves = f.rows.0.saves();
    let again = f.projector.project(&s, 1).await.unwrap();
    assert!(again.iter().all(|o| o.duplicate && o.applied == 0));
    assert_eq!(f.rows.0.saves(), saves);

    // Events 2..=4 appended; 4 is notified first: the gap is filled.
    append(&f.events, &s, 3).await;
    let jumped = f.projector.project(&s, 4).await.unwrap();
    assert!(jumped
        .iter()
        .all(|o| o.before == 1 && o.after == 4 && o.applied == 3));
    assert_exact(&f, &s).await;
    for n in [3, 2, 4, 1] {
        let late = f.projector.project(&s, n).await.unwrap();
        assert!(late.iter().all(|o| o.duplicate), "{n}: {late:?}");
    }
    assert_eq!(f.rows.0.saves(), saves + 2);
    assert_exact(&f, &s).await;
}

#[tokio::test]
async fn concurrent_notifications_of_one_stream_lose_nothing_and_double_nothing() {
    let f = fixture();
    let s = stream("busy");
    append(&f.events, &s, 30).await;
    // Every notification at once, several times over, interleaving at every storage call, to
    // three instances (each projector its own process: its own turns and cache), so saves race.
    let models: Vec<Arc<dyn DynProjection>> = vec![Arc::new(Trail), Arc::new(COUNT)];
    let instances: Vec<ReadModelProjector> = (0..3)
        .map(|_| ReadModelProjector::new(f.events.clone(), f.rows.clone(), models.clone()))
        .collect();
    let calls = (1..=30u64)
        .chain((1..=30).rev())
        .enumerate()
        .map(|(i, n)| instances[i % instances.len()].project(&s, n));
    let outcomes = futures::future::join_all(calls).await;
    let outcomes: Vec<_> = outcomes.into_iter().map(Result::unwrap).collect();
    assert_exact(&f, &s).await;
    // Races happened, and were resolved by retrying from the fresh row.
    assert!(outcomes.iter().flatten().any(|o| o.attempts > 1));
    let applied: u64 = outcomes
        .iter()
        .flatten()
        .filter(|o| o.model == "trail")
        .map(|o| o.applied)
        .sum();
    assert_eq!(
        applied, 30,
        "each event folded into the saved rows exactly once"
    );
}

#[tokio::test]
async fn interleaved_appends_and_notifications_converge() {
    let f = fixture();
    let s = stream("grow");
    for round in 1..=10u64 {
        append(&f.events, &s, 2).await;
        let version = f.events.version(&s).await.unwrap();
        let late = f.projector.project(&s, version - 1);
        let early = f.projector.project(&s, version);
        let (a, b) = futures::join!(late, early);
        a.unwrap();
        b.unwrap();
        assert_eq!(
            count(&f, &s).await,
            Some((version, version)),
            "round {round}"
        );
    }
    assert_exact(&f, &s).await;
}

#[tokio::test]
async fn notifications_ahead_of_the_stream_fail_for_a_retry() {
    let f = fixture();
    let s = stream("2");
    append(&f.events, &s, 2).await;
    let error = f.projector.project(&s, 3).await.unwrap_err();
    assert!(matches!(
        error,
        ReadModelError::AheadOfStream {
            sequence: 3,
            version: 2,
            ..
        }
    ));
    assert!(error.is_transient());
    let missing = stream("none");
    assert!(f.projector.project(&missing, 1).await.is_err());
    // Catching up a stream that does not exist writes nothing.
    f.projector.catch_up(&missing).await.unwrap();
    assert!(trail(&f, &missing).await.is_none());
}

#[tokio::test]
async fn rows_of_another_version_unreadable_or_past_the_stream_are_recomputed() {
    let f = fixture();
    let s = stream("3");
    append(&f.events, &s, 3).await;
    f.projector.project(&s, 3).await.unwrap();
    // Rows are edited behind the projector's back: each check is by a projector of its own
    // (another process), since a process that saw a row at an event skips that event's
    // notifications without a read (see `cache`).
    let fresh = |f: &Fixture| {
        let models: Vec<Arc<dyn DynProjection>> = vec![Arc::new(Trail), Arc::new(COUNT)];
        ReadModelProjector::new(f.events.clone(), f.rows.clone(), models)
    };
    let bad = |state: &str, sequence, projection_version| Checkpoint {
        projection: String::new(),
        max_timestamp: None,
        state: RawValue::from_string(state.into()).unwrap(),
        sequence,
        projection_version,
        failure: None,
    };

    // Another projection version at an earlier sequence: recomputed, not resumed.
    f.rows.0.overwrite("trail", &s, bad("[99]", 2, 0));
    fresh(&f).project(&s, 3).await.unwrap();
    assert_exact(&f, &s).await;

    // A state that does not read back.
    f.rows.0.overwrite("trail", &s, bad("\"garbage\"", 1, 1));
    fresh(&f).project(&s, 3).await.unwrap();
    assert_exact(&f, &s).await;

    // The marker of a row a backend could not read.
    f.rows
        .0
        .overwrite("count", &s, bad("null", 0, UNREADABLE_ROW_VERSION));
    fresh(&f).project(&s, 2).await.unwrap();
    assert_exact(&f, &s).await;

    // A row claiming events the stream does not have: a catch-up replays from the start.
    f.rows.0.overwrite("trail", &s, bad("[1,2,3,4,5]", 5, 1));
    fresh(&f).catch_up(&s).await.unwrap();
    assert_exact(&f, &s).await;
}

#[tokio::test]
async fn rebuild_fills_missing_rows_fixes_wrong_ones_and_keeps_newer_ones() {
    let f = fixture();
    let (a, b, c) = (stream("a"), stream("b"), stream("c"));
    append(&f.events, &a, 2).await;
    append(&f.events, &b, 3).await;
    append(&f.events, &c, 1).await;
    f.projector.project(&c, 1).await.unwrap();
    // b's count row is wrong at the right sequence; a has no rows; c is right.
    f.rows.0.overwrite(
        "count",
        &b,
        Checkpoint {
            projection: String::new(),
            max_timestamp: None,
            state: RawValue::from_string("42".into()).unwrap(),
            sequence: 3,
            projection_version: 3,
            failure: None,
        },
    );
    let report = rebuild(&f.projector, &EntityType::from_static("Bank", "Account"))
        .await
        .unwrap();
    assert_eq!(report.streams, 3);
    assert_eq!(report.failed, 0);
    // a: 2 created; b: trail created, count replaced; c: 2 unchanged.
    assert_eq!((report.written, report.unchanged, report.newer), (4, 2, 0));
    for s in [&a, &b, &c] {
        assert_exact(&f, s).await;
    }
    let again = rebuild(&f.projector, &EntityType::from_static("Bank", "Account"))
        .await
        .unwrap();
    assert_eq!((again.written, again.unchanged), (0, 6));

    // A row ahead of the stream (corrupt) is replaced by the replay.
    f.rows.0.overwrite(
        "count",
        &c,
        Checkpoint {
            projection: String::new(),
            max_timestamp: None,
            state: RawValue::from_string("9".into()).unwrap(),
            sequence: 9,
            projection_version: 3,
            failure: None,
        },
    );
    let fixed = rebuild(&f.projector, &EntityType::from_static("Bank", "Account"))
        .await
        .unwrap();
    assert_eq!(fixed.written, 1);
    assert_exact(&f, &c).await;
}

/// An event store that, right after the first full read of a stream, appends two events to it
/// and lets another projector handle them: the race between a rebuild's replay and a
/// concurrent notification, made deterministic.
struct GrowsDuringReplay {
    inner: Arc<MemoryStore>,
    concurrent: std::sync::Mutex<Option<(ReadModelProjector, StreamId)>>,
}

#[async_trait]
impl StoreDecorator for GrowsDuringReplay {
    fn inner(&self) -> &dyn EventStore {
        self.inner.as_ref()
    }

    async fn read(
        &self,
        stream: &StreamId,
        request: ReadRequest,
    ) -> Result<crate::stream::StreamSlice, crate::stream::StoreError> {
        let slice = self.inner.read(stream, request).await?;
        let concurrent = self.concurrent.lock().unwrap().take();
        if let Some((projector, stream)) = concurrent {
            append(&self.inner, &stream, 2).await;
            projector.project(&stream, slice.version + 2).await.unwrap();
        }
        Ok(slice)
    }
}

#[tokio::test]
async fn rebuild_leaves_rows_a_projector_took_further() {
    let f = fixture();
    let s = stream("race");
    append(&f.events, &s, 2).await;
    let growing = Arc::new(GrowsDuringReplay {
        inner: f.events.clone(),
        concurrent: std::sync::Mutex::new(Some((f.projector.clone(), s.clone()))),
    });
    let models: Vec<Arc<dyn DynProjection>> = vec![Arc::new(Trail), Arc::new(COUNT)];
    let rebuilding = ReadModelProjector::new(growing, f.rows.clone(), models);
    let report = rebuild(&rebuilding, &EntityType::from_static("Bank", "Account"))
        .await
        .unwrap();
    // The replay saw version 2; the rows were at 4 by the time it would have saved.
    assert_eq!((report.written, report.newer), (0, 2));
    assert_eq!(f.events.version(&s).await.unwrap(), 4);
    assert_exact(&f, &s).await;
}

pub(super) async fn append_poison(events: &MemoryStore, stream: &StreamId) {
    let poison = NewEvent::from_raw(POISON, RawValue::from_string("{}".into()).unwrap());
    events
        .append(stream, ExpectedVersion::Any, vec![poison])
        .await
        .unwrap();
}

/// An event one read model refuses marks that model's row of that stream failed, once; the
/// call succeeds (no redelivery for ever), and the other model and the other streams carry on.
#[tokio::test]
async fn an_event_a_model_refuses_marks_its_row_and_the_rest_carries_on() {
    let f = fixture();
    let (bad, good) = (stream("bad"), stream("good"));
    append(&f.events, &bad, 2).await;
    append_poison(&f.events, &bad).await;
    append(&f.events, &bad, 1).await;
    append(&f.events, &good, 2).await;

    let outcomes = f.projector.project(&bad, 4).await.unwrap();
    let trail_outcome = outcomes.iter().find(|o| o.model == "trail").unwrap();
    let failure = trail_outcome.failed.clone().expect("trail refused event 3");
    assert_eq!(failure.sequence, 3);
    assert!(failure.reason.contains("poison"), "{}", failure.reason);
    let row = f.rows.0.load("trail", &bad).await.unwrap().unwrap();
    assert_eq!(row.checkpoint.failure, Some(failure.clone()));
    assert_eq!(row.checkpoint.sequence, 3);
    assert_eq!(row.checkpoint.state.get(), "[]");
    assert_eq!(count(&f, &bad).await, Some((4, 4)));

    // Later notifications of that stream leave the failed row alone, without reading.
    append(&f.events, &bad, 1).await;
    let saves = f.rows.0.saves();
    let later = f.projector.project(&bad, 5).await.unwrap();
    let trail_later = later.iter().find(|o| o.model == "trail").unwrap();
    assert!(trail_later.duplicate && trail_later.failed == Some(failure.clone()));
    assert_eq!(f.rows.0.saves(), saves + 1, "only the count row moved");
    assert_eq!(count(&f, &bad).await, Some((5, 5)));

    f.projector.project(&good, 2).await.unwrap();
    assert_exact(&f, &good).await;

    // A rebuild agrees with the projector, and counts the stream as unreadable.
    let report = rebuild(&f.projector, &EntityType::from_static("Bank", "Account"))
        .await
        .unwrap();
    assert_eq!(
        (report.streams, report.failed, report.unreadable),
        (2, 0, 1)
    );
    assert_eq!(report.unreadable_streams[0].instance, "bad");
    assert_eq!(report.unreadable_streams[0].model, "trail");
    assert_eq!(report.unreadable_streams[0].sequence, 3);
    assert_eq!(report.written, 0);

    // A row folded past the refused event (by code that did not refuse it) is replaced by
    // the failed row, though it looks newer than the failure.
    f.rows.0.overwrite(
        "trail",
        &bad,
        Checkpoint {
            projection: String::new(),
            max_timestamp: None,
            state: RawValue::from_string("[1,2,3,4,5]".into()).unwrap(),
            sequence: 5,
            projection_version: 1,
            failure: None,
        },
    );
    let fixed = rebuild(&f.projector, &EntityType::from_static("Bank", "Account"))
        .await
        .unwrap();
    assert_eq!((fixed.written, fixed.newer, fixed.unreadable), (1, 0, 1));
    let row = f.rows.0.load("trail", &bad).await.unwrap().unwrap();
    assert_eq!(row.checkpoint.failure, Some(failure));
}

/// A projector over stores that count their requests: event reads and row loads / saves.
struct Counted {
    events: Arc<CountingStore<MemoryStore>>,
    rows: Arc<MemoryReadModelStore>,
    projector: ReadModelProjector,
}

fn counted() -> Counted {
    let events = Arc::new(CountingStore::new(MemoryStore::new()));
    let rows = Arc::new(MemoryReadModelStore::new());
    let models: Vec<Arc<dyn DynProjection>> = vec![Arc::new(Trail), Arc::new(COUNT)];
    let projector = ReadModelProjector::new(events.clone(), rows.clone(), models);
    Counted {
        events,
        rows,
        projector,
    }
}

#[tokio::test]
async fn the_notifications_of_one_stream_arriving_together_cost_one_catch_up() {
    let c = counted();
    let s = stream("together");
    append(c.events.inner(), &s, 8).await;
    // Eight notifications at once, as the host invokes the Projector once per event.
    let outcomes = futures::future::join_all((1..=8u64).map(|n| c.projector.project(&s, n))).await;
    let outcomes: Vec<_> = outcomes.into_iter().map(Result::unwrap).collect();
    // One catch-up: each row loaded once, the stream read once, each row saved once.
    assert_eq!(c.rows.loads(), 2, "one load per read model");
    assert_eq!(c.events.reads(), 1, "one read of the events");
    assert_eq!(c.rows.saves(), 2, "one save per read model");
    let applied: u64 = outcomes.iter().flatten().map(|o| o.applied).sum();
    assert_eq!(applied, 16, "8 events into each of 2 rows, once");
    let count = c.rows.load("count", &s).await.unwrap().unwrap();
    assert_eq!(
        (count.checkpoint.sequence, count.checkpoint.state.get()),
        (8, "8")
    );
}

#[tokio::test]
async fn a_notification_whose_rows_this_process_saw_past_it_reads_nothing() {
    let c = counted();
    let s = stream("known");
    append(c.events.inner(), &s, 3).await;
    c.projector.project(&s, 3).await.unwrap();
    let (loads, reads, saves) = (c.rows.loads(), c.events.reads(), c.rows.saves());
    assert_eq!((loads, reads, saves), (2, 1, 2));

    // Duplicates and late ones: no storage request at all.
    for n in [3, 1, 2, 3] {
        let outcomes = c.projector.project(&s, n).await.unwrap();
        assert!(
            outcomes.iter().all(|o| o.duplicate && o.attempts == 0),
            "{n}: {outcomes:?}"
        );
    }
    assert_eq!(
        (c.rows.loads(), c.events.reads(), c.rows.saves()),
        (loads, reads, saves)
    );

    // A new event is read and the rows saved on the ETags this process kept (a row another
    // process moved refuses that save, and is loaded then: see `skipped_loads_tests`).
    append(c.events.inner(), &s, 1).await;
    c.projector.project(&s, 4).await.unwrap();
    assert_eq!(
        (c.rows.loads(), c.events.reads(), c.rows.saves()),
        (loads, reads + 1, saves + 2)
    );
    assert_eq!(
        c.rows
            .load("count", &s)
            .await
            .unwrap()
            .unwrap()
            .checkpoint
            .sequence,
        4
    );

    // Another process (its own cache) moved the rows on: this one still sees new events.
    let other = ReadModelProjector::new(
        c.events.clone(),
        c.rows.clone(),
        vec![Arc::new(Trail), Arc::new(COUNT)],
    );
    append(c.events.inner(), &s, 2).await;
    other.project(&s, 6).await.unwrap();
    let outcomes = c.projector.project(&s, 5).await.unwrap();
    assert!(outcomes.iter().all(|o| o.duplicate && o.after == 6));
}

#[tokio::test]
async fn a_notification_reads_the_rows_and_the_events_at_the_same_time() {
    let events = Arc::new(CountingStore::new(MemoryStore::new()));
    let watch = Watch {
        events: events.clone(),
        reads_seen: std::sync::Mutex::new(Vec::new()),
    };
    let rows = Arc::new(Yielding(MemoryReadModelStore::new(), Some(watch)));
    let models: Vec<Arc<dyn DynProjection>> = vec![Arc::new(Trail), Arc::new(COUNT)];
    let projector = ReadModelProjector::new(events.clone(), rows.clone(), models);
    let s = stream("together-read");
    append(events.inner(), &s, 2).await;

    projector.project(&s, 2).await.unwrap();
    assert_eq!(
        rows.reads_seen(),
        vec![1, 1],
        "both loads overlapped the read of the events"
    );
    assert_eq!(events.reads(), 1, "that read was the whole catch-up");

    // A known row (another process's view, which knows its sequence but did not keep it):
    // the read starts after it, still beside the loads.
    append(events.inner(), &s, 1).await;
    if let Some(watch) = &rows.1 {
        watch.reads_seen.lock().unwrap().clear();
    }
    events.reset();
    projector.forget_kept_rows(&s);
    projector.project(&s, 3).await.unwrap();
    assert_eq!(rows.reads_seen(), vec![1, 1]);
    assert_eq!((events.reads(), events.events_read()), (1, 1));
    let row = rows.0.load("trail", &s).await.unwrap().unwrap();
    assert_eq!(
        (row.checkpoint.sequence, row.checkpoint.state.get()),
        (3, "[1,2,3]")
    );
}

#[tokio::test]
async fn a_row_behind_what_this_process_saw_gets_the_events_before_the_early_read() {
    let c = counted();
    let s = stream("behind");
    append(c.events.inner(), &s, 3).await;
    c.projector.project(&s, 3).await.unwrap();
    // Behind this process's back the trail row becomes another projection version's (a
    // rollback): it must be recomputed from the first event, though the early read starts
    // after event 3.
    c.rows.overwrite(
        "trail",
        &s,
        Checkpoint {
            projection: "trail".into(),
            projection_version: 0,
            sequence: 3,
            max_timestamp: None,
            state: RawValue::from_string("[7,7,7]".into()).unwrap(),
            failure: None,
        },
    );
    append(c.events.inner(), &s, 2).await;
    c.events.reset();
    // A process that knows the rows' sequences but kept no row (too large to keep, say)
    // loads them.
    c.projector.forget_kept_rows(&s);
    c.projector.project(&s, 5).await.unwrap();
    assert_eq!(c.events.reads(), 2, "the early read, then events 1..=3");
    let trail = c.rows.load("trail", &s).await.unwrap().unwrap();
    assert_eq!(
        (trail.checkpoint.sequence, trail.checkpoint.state.get()),
        (5, "[1,2,3,4,5]")
    );
    let count = c.rows.load("count", &s).await.unwrap().unwrap();
    assert_eq!(
        (count.checkpoint.sequence, count.checkpoint.state.get()),
        (5, "5")
    );
}
