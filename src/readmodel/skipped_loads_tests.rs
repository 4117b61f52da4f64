//! Tests of the projector's saves without a load: the rows of a stream it has not seen,
//! guessed absent (`first_rows`), and the rows it kept as it last loaded or saved them
//! (`cache`). The requests each saves, and that a wrong guess or a row changed elsewhere
//! changes no row's content.

use std::sync::Arc;

use proptest::prelude::*;

use super::tests::{append, stream, Trail, Yielding, COUNT};
use super::*;
use crate::projection::DynProjection;
use crate::storage::MemoryStore;
use crate::stream::{EventStore, StreamId};
use crate::testing::CountingStore;

fn models() -> Vec<Arc<dyn DynProjection>> {
    vec![Arc::new(Trail), Arc::new(COUNT)]
}

/// A process's cache whose evidence already says first-seen rows are absent.
fn confident_cache() -> Arc<CheckpointCache> {
    let cache = Arc::new(CheckpointCache::new());
    for _ in 0..MAX_SCORE {
        cache.first_rows().observe(true);
    }
    cache
}

/// The rows of `stream` (trail state and sequence, count state and sequence).
async fn rows_of(
    rows: &MemoryReadModelStore,
    stream: &StreamId,
) -> Option<((Vec<u64>, u64), (u64, u64))> {
    let trail = rows.load("trail", stream).await.unwrap()?;
    let count = rows.load("count", stream).await.unwrap()?;
    Some((
        (
            serde_json::from_str(trail.checkpoint.state.get()).unwrap(),
            trail.checkpoint.sequence,
        ),
        (
            serde_json::from_str(count.checkpoint.state.get()).unwrap(),
            count.checkpoint.sequence,
        ),
    ))
}

/// Both rows as a replay of the stream's first `sequence` events leaves them.
fn replayed(sequence: u64) -> ((Vec<u64>, u64), (u64, u64)) {
    (((1..=sequence).collect(), sequence), (sequence, sequence))
}

#[tokio::test]
async fn a_new_streams_rows_are_saved_without_a_load_once_first_rows_were_mostly_absent() {
    let events = Arc::new(CountingStore::new(MemoryStore::new()));
    let rows = Arc::new(MemoryReadModelStore::new());
    let cache = Arc::new(CheckpointCache::new());
    let projector =
        ReadModelProjector::new(events.clone(), rows.clone(), models()).with_cache(cache.clone());

    // A fresh process loads; every row it finds absent is evidence (two per stream here).
    let mut opened = 0;
    while !cache.first_rows().guess_absent() {
        let s = stream(&format!("new-{opened}"));
        append(events.inner(), &s, 2).await;
        let loads = rows.loads();
        projector.project(&s, 2).await.unwrap();
        assert_eq!(
            rows.loads(),
            loads + 2,
            "not guessing yet: the rows are loaded"
        );
        opened += 1;
    }
    assert_eq!(opened, GUESS_FROM.div_ceil(2));

    let s = stream("guessed");
    append(events.inner(), &s, 2).await;
    let (loads, saves) = (rows.loads(), rows.saves());
    events.reset();
    let outcomes = projector.project(&s, 2).await.unwrap();
    assert_eq!(rows.loads(), loads, "no load");
    assert_eq!(events.reads(), 1, "one read of the events");
    assert_eq!(rows.saves(), saves + 2, "one insert per read model");
    assert!(
        outcomes
            .iter()
            .all(|o| (o.before, o.after, o.applied, o.attempts) == (0, 2, 2, 1)),
        "{outcomes:?}"
    );
    assert_eq!(rows_of(&rows, &s).await, Some(replayed(2)));
}

#[tokio::test]
async fn a_row_guessed_absent_that_was_there_is_loaded_and_brought_forward_exactly() {
    let events = Arc::new(MemoryStore::new());
    let rows = Arc::new(MemoryReadModelStore::new());
    let s = stream("old");
    append(&events, &s, 3).await;
    // Another process (or this one before a restart) wrote the rows at event 3.
    ReadModelProjector::new(events.clone(), rows.clone(), models())
        .project(&s, 3)
        .await
        .unwrap();

    let cache = confident_cache();
    let projector =
        ReadModelProjector::new(events.clone(), rows.clone(), models()).with_cache(cache.clone());
    append(&events, &s, 2).await;
    let loads = rows.loads();
    let outcomes = projector.project(&s, 5).await.unwrap();
    assert!(
        outcomes
            .iter()
            .all(|o| (o.before, o.after, o.applied, o.attempts) == (3, 5, 2, 2)),
        "refused insert, then the load and the catch-up: {outcomes:?}"
    );
    assert_eq!(rows.loads(), loads + 2);
    assert_eq!(rows_of(&rows, &s).await, Some(replayed(5)));
    assert_eq!(
        cache.first_rows().score(),
        MAX_SCORE - 2 * PRESENT_STEP,
        "both rows were there: evidence against guessing"
    );
}

#[tokio::test]
async fn a_guessed_first_row_of_a_stream_with_an_event_it_refuses_is_saved_failed() {
    let events = Arc::new(MemoryStore::new());
    let rows = Arc::new(MemoryReadModelStore::new());
    let projector = ReadModelProjector::new(events.clone(), rows.clone(), models())
        .with_cache(confident_cache());
    let s = stream("poisoned");
    append(&events, &s, 1).await;
    super::tests::append_poison(&events, &s).await;

    let outcomes = projector.project(&s, 2).await.unwrap();
    assert_eq!(rows.loads(), 0, "guessed");
    let trail = rows.load("trail", &s).await.unwrap().unwrap();
    let failure = trail.checkpoint.failure.expect("the trail row is failed");
    assert_eq!(failure.sequence, 2);
    assert_eq!(outcomes[0].failed.as_ref(), Some(&failure));
    let count = rows.load("count", &s).await.unwrap().unwrap();
    assert_eq!(
        (count.checkpoint.sequence, count.checkpoint.state.get()),
        (2, "2")
    );

    // A second process guessing too finds the failed row and leaves it so.
    let other = ReadModelProjector::new(events.clone(), rows.clone(), models())
        .with_cache(confident_cache());
    let outcomes = other.project(&s, 2).await.unwrap();
    assert_eq!(outcomes[0].failed, Some(failure));
    assert!(outcomes.iter().all(|o| o.duplicate));
}

#[tokio::test]
async fn a_row_this_process_saved_is_not_loaded_again() {
    let events = Arc::new(CountingStore::new(MemoryStore::new()));
    let rows = Arc::new(MemoryReadModelStore::new());
    let projector = ReadModelProjector::new(events.clone(), rows.clone(), models());
    let s = stream("kept");
    append(events.inner(), &s, 2).await;
    projector.project(&s, 2).await.unwrap();
    assert_eq!(rows.loads(), 2, "the first notification loads the rows");

    for n in 3..=5 {
        append(events.inner(), &s, 1).await;
        events.reset();
        let (loads, saves) = (rows.loads(), rows.saves());
        let outcomes = projector.project(&s, n).await.unwrap();
        assert_eq!(rows.loads(), loads, "{n}: no load");
        assert_eq!(
            (events.reads(), events.events_read()),
            (1, 1),
            "{n}: the new event"
        );
        assert_eq!(rows.saves(), saves + 2, "{n}: one merge per row");
        assert!(
            outcomes
                .iter()
                .all(|o| (o.before, o.after, o.attempts) == (n - 1, n, 1)),
            "{outcomes:?}"
        );
        assert_eq!(rows_of(&rows, &s).await, Some(replayed(n)));
    }
}

#[tokio::test]
async fn a_kept_row_changed_or_deleted_elsewhere_is_refused_then_loaded() {
    let events = Arc::new(MemoryStore::new());
    let rows = Arc::new(MemoryReadModelStore::new());
    let projector = ReadModelProjector::new(events.clone(), rows.clone(), models());
    let other = ReadModelProjector::new(events.clone(), rows.clone(), models());
    let s = stream("shared");
    append(&events, &s, 2).await;
    projector.project(&s, 2).await.unwrap();

    // Another process moves the rows on: this one's kept ETags are spent.
    append(&events, &s, 1).await;
    other.project(&s, 3).await.unwrap();
    append(&events, &s, 1).await;
    let loads = rows.loads();
    let outcomes = projector.project(&s, 4).await.unwrap();
    assert!(
        outcomes
            .iter()
            .all(|o| (o.before, o.after, o.applied, o.attempts) == (3, 4, 1, 2)),
        "refused, then loaded at 3: {outcomes:?}"
    );
    assert_eq!(rows.loads(), loads + 2);
    assert_eq!(rows_of(&rows, &s).await, Some(replayed(4)));

    // The rows are deleted (a rebuild's repair, or by hand): made again from the first event.
    rows.delete("trail", &s).await.unwrap();
    rows.delete("count", &s).await.unwrap();
    append(&events, &s, 1).await;
    let outcomes = projector.project(&s, 5).await.unwrap();
    assert!(
        outcomes
            .iter()
            .all(|o| (o.before, o.after, o.applied, o.attempts) == (0, 5, 5, 2)),
        "{outcomes:?}"
    );
    assert_eq!(rows_of(&rows, &s).await, Some(replayed(5)));
}

/// What the property test does, one step at a time.
#[derive(Debug, Clone)]
enum Step {
    /// Appends `count` events to stream `stream`.
    Append { stream: usize, count: usize },
    /// Process `process` handles the notification of event `version - back` of `stream`.
    Notify {
        process: usize,
        stream: usize,
        back: u64,
    },
    /// Both processes handle the notification of the stream's last event at the same time.
    Together { stream: usize },
    /// Process `process` starts again with an empty cache, sure or not that first-seen rows
    /// are absent.
    Restart { process: usize, confident: bool },
    /// The rows of `stream` are deleted behind the processes' backs (by hand), then an event
    /// is appended and process `process` handles its notification. (A duplicate of an earlier
    /// event is acknowledged from the cache without a look at the row, by design, so the
    /// deleted rows are only asked back by a new event.)
    Delete { process: usize, stream: usize },
}

const STREAMS: usize = 3;
const PROCESSES: usize = 2;

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        (0..STREAMS, 1..4usize).prop_map(|(stream, count)| Step::Append { stream, count }),
        (0..PROCESSES, 0..STREAMS, 0..3u64).prop_map(|(process, stream, back)| Step::Notify {
            process,
            stream,
            back
        }),
        (0..STREAMS).prop_map(|stream| Step::Together { stream }),
        (0..PROCESSES, any::<bool>())
            .prop_map(|(process, confident)| Step::Restart { process, confident }),
        (0..PROCESSES, 0..STREAMS).prop_map(|(process, stream)| Step::Delete { process, stream }),
    ]
}

/// Runs `steps` against two processes sharing the stores (rows interleaving at every call);
/// after every notification of event n, both rows of the stream are at n or later and equal
/// a replay up to their sequence; at the end every stream is caught up exactly.
async fn run(steps: Vec<Step>, confident: bool) -> Result<(), TestCaseError> {
    let events = Arc::new(MemoryStore::new());
    let rows = Arc::new(Yielding(MemoryReadModelStore::new(), None));
    let process = |confident: bool| {
        let cache = if confident {
            confident_cache()
        } else {
            Arc::new(CheckpointCache::new())
        };
        ReadModelProjector::new(events.clone(), rows.clone(), models()).with_cache(cache)
    };
    let mut processes: Vec<ReadModelProjector> =
        (0..PROCESSES).map(|_| process(confident)).collect();
    let streams: Vec<StreamId> = (0..STREAMS).map(|i| stream(&format!("p-{i}"))).collect();
    let check = |s: StreamId, n: u64| {
        let rows = rows.clone();
        async move {
            let found = rows_of(&rows.0, &s).await;
            let at = found.as_ref().map_or(0, |((_, at), _)| *at);
            prop_assert!(at >= n, "{s}: rows at {at} after notification {n}");
            prop_assert_eq!(found, Some(replayed(at)));
            Ok(())
        }
    };
    for step in steps {
        match step {
            Step::Append { stream, count } => append(&events, &streams[stream], count).await,
            Step::Notify {
                process,
                stream,
                back,
            } => {
                let s = &streams[stream];
                let n = events.version(s).await.unwrap().saturating_sub(back);
                if n > 0 {
                    processes[process].project(s, n).await.unwrap();
                    check(s.clone(), n).await?;
                }
            }
            Step::Together { stream } => {
                let s = &streams[stream];
                let n = events.version(s).await.unwrap();
                if n > 0 {
                    let (a, b) =
                        futures::join!(processes[0].project(s, n), processes[1].project(s, n));
                    a.unwrap();
                    b.unwrap();
                    check(s.clone(), n).await?;
                }
            }
            Step::Restart {
                process: p,
                confident,
            } => processes[p] = process(confident),
            Step::Delete { process, stream } => {
                let s = &streams[stream];
                for model in ["trail", "count"] {
                    rows.0.delete(model, s).await.unwrap();
                }
                append(&events, s, 1).await;
                let n = events.version(s).await.unwrap();
                processes[process].project(s, n).await.unwrap();
                check(s.clone(), n).await?;
            }
        }
    }
    for s in &streams {
        let version = events.version(s).await.unwrap();
        if version > 0 {
            processes[0].project(s, version).await.unwrap();
            prop_assert_eq!(rows_of(&rows.0, s).await, Some(replayed(version)));
        }
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(128))]

    /// Rows guessed absent or kept, restarts, concurrent processes, rows deleted behind their
    /// backs, late and repeated notifications: the rows end exactly as a replay, and never lag
    /// a notification handled.
    #[test]
    fn skipping_loads_never_changes_what_a_row_holds(
        steps in proptest::collection::vec(step(), 1..40),
        confident in any::<bool>(),
    ) {
        let runtime = tokio::runtime::Builder::new_current_thread().build().unwrap();
        runtime.block_on(run(steps, confident))?;
    }
}
