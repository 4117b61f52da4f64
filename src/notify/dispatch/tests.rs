//! The dispatcher's unit tests, over the memory backend, and their fixtures (a memory outbox
//! that other modules' tests use too).

use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;

use super::*;
use crate::notify::notification::{notification_id, NotificationKind};
use crate::notify::publisher::PublishError;
use crate::notify::raise::RaiseSwitches;
use crate::notify::sink::NotificationSink;
use crate::notify::NotifyingStore;
use crate::storage::MemoryDeadLetters;
use crate::storage::MemoryStore;
use crate::stream::{
    EntityType, EventStore, ExpectedVersion, NewEvent, Outbox, PendingStream, StoreError, StreamId,
};
use crate::testing::{MemorySink, RacingSink};
use std::collections::BTreeMap;

/// An outbox over a [`MemoryStore`]: pending = version past the mark; the token is the
/// mark's own change counter (so, like the Blob outbox, appends do not change it). A stream
/// in `poisoned` claims one event more than it has, so its every dispatch fails.
#[derive(Default)]
pub(crate) struct MemoryOutbox {
    store: Arc<MemoryStore>,
    marks: Mutex<BTreeMap<StreamId, (u64, u64)>>,
    poisoned: Mutex<Vec<StreamId>>,
}

impl MemoryOutbox {
    pub(crate) fn new(store: Arc<MemoryStore>) -> Self {
        Self {
            store,
            ..Self::default()
        }
    }
}

#[async_trait]
impl Outbox for MemoryOutbox {
    async fn pending(
        &self,
        after: Option<&StreamId>,
        limit: usize,
    ) -> Result<crate::stream::PendingScan, StoreError> {
        let page = self
            .store
            .list_streams(&EntityType::from_static("Bank", "Account"), None, 1000)
            .await?;
        let mut streams: Vec<StreamId> = page
            .instances
            .into_iter()
            .map(|instance| StreamId::new("Bank", "Account", instance).unwrap())
            .collect();
        streams.sort();
        if let Some(after) = after {
            let split = streams.partition_point(|s| s <= after);
            streams.rotate_left(split);
        }
        let mut scan = crate::stream::PendingScan::default();
        for stream in streams {
            if let Some(p) = self.pending_for(&stream).await? {
                scan.streams.push(p);
            }
        }
        scan.streams.truncate(limit);
        Ok(scan)
    }

    async fn pending_for(&self, stream: &StreamId) -> Result<Option<PendingStream>, StoreError> {
        let mut version = self.store.version(stream).await?;
        if self.poisoned.lock().unwrap().contains(stream) {
            version += 1;
        }
        let (notified, changes) = self
            .marks
            .lock()
            .unwrap()
            .get(stream)
            .copied()
            .unwrap_or_default();
        Ok((version > notified).then(|| PendingStream {
            stream: stream.clone(),
            notified,
            version,
            token: changes.to_string(),
        }))
    }

    async fn mark_notified(&self, pending: &PendingStream) -> Result<bool, StoreError> {
        let mut marks = self.marks.lock().unwrap();
        let entry = marks.entry(pending.stream.clone()).or_default();
        if entry.1.to_string() != pending.token {
            return Ok(false);
        }
        *entry = (pending.version, entry.1 + 1);
        Ok(true)
    }
}

fn stream(instance: &str) -> StreamId {
    StreamId::new("Bank", "Account", instance).unwrap()
}

fn events(n: usize) -> Vec<NewEvent> {
    (0..n)
        .map(|i| NewEvent::new("Deposited", &serde_json::json!({ "i": i })).unwrap())
        .collect()
}

fn setup(sink: Arc<MemorySink>, raise: RaiseSwitches) -> (Arc<MemoryStore>, Arc<Dispatcher>) {
    let (store, _, _, dispatcher) = setup_with_outbox(sink, raise);
    (store, dispatcher)
}

fn setup_with_outbox(
    sink: Arc<MemorySink>,
    raise: RaiseSwitches,
) -> (
    Arc<MemoryStore>,
    Arc<MemoryOutbox>,
    Arc<MemoryDeadLetters>,
    Arc<Dispatcher>,
) {
    let store = Arc::new(MemoryStore::new());
    let outbox = Arc::new(MemoryOutbox::new(store.clone()));
    let dead_letters = Arc::new(MemoryDeadLetters::new());
    let dispatcher = Arc::new(Dispatcher::new(
        "memory",
        store.clone(),
        outbox.clone(),
        sink,
        dead_letters.clone(),
        raise,
    ));
    (store, outbox, dead_letters, dispatcher)
}

/// A memory sink, a dispatcher into it raising `raise`, and stream `1` holding `n` events.
async fn with_stream(
    raise: RaiseSwitches,
    n: usize,
) -> (Arc<MemorySink>, Arc<MemoryStore>, Arc<Dispatcher>, StreamId) {
    let sink = Arc::new(MemorySink::new());
    let (store, dispatcher) = setup(sink.clone(), raise);
    let s = stream("1");
    store
        .append(&s, ExpectedVersion::NoStream, events(n))
        .await
        .unwrap();
    (sink, store, dispatcher, s)
}

fn ids(sink: &MemorySink) -> Vec<uuid::Uuid> {
    sink.published().iter().map(|n| n.id).collect()
}

#[tokio::test]
async fn dispatch_publishes_then_marks_and_a_second_dispatch_publishes_nothing() {
    let (sink, store, dispatcher, s) = with_stream(RaiseSwitches::ALL, 2).await;
    let outcome = dispatcher.dispatch(&s).await.unwrap();
    assert_eq!(
        outcome,
        DispatchOutcome {
            published: 3,
            dead_lettered: 0,
            marked: true
        }
    );
    assert_eq!(
        ids(&sink),
        vec![
            notification_id(&s, 1, NotificationKind::NewEntity),
            notification_id(&s, 1, NotificationKind::NewEvent),
            notification_id(&s, 2, NotificationKind::NewEvent),
        ]
    );
    assert_eq!(dispatcher.dispatch(&s).await.unwrap().published, 0);
    store
        .append(&s, ExpectedVersion::Exact(2), events(1))
        .await
        .unwrap();
    assert_eq!(dispatcher.dispatch(&s).await.unwrap().published, 1);
    assert_eq!(
        ids(&sink)[3],
        notification_id(&s, 3, NotificationKind::NewEvent)
    );
}

#[tokio::test]
async fn a_failed_publish_marks_nothing() {
    let (sink, _, dispatcher, s) = with_stream(RaiseSwitches::ALL, 1).await;
    sink.fail_next(1);
    let error = dispatcher.dispatch(&s).await.unwrap_err();
    assert!(error.is_sink_unavailable(), "{error}");
    assert!(sink.published().is_empty());
    let report = dispatcher.sweep(10).await.unwrap();
    assert_eq!(
        (report.pending, report.dispatched, report.published),
        (1, 1, 2)
    );
}

#[tokio::test]
async fn only_the_switched_on_kinds_are_raised() {
    let only_new = RaiseSwitches {
        entity_creation: true,
        event: false,
    };
    let (sink, store, dispatcher, s) = with_stream(only_new, 3).await;
    assert_eq!(dispatcher.dispatch(&s).await.unwrap().published, 1);
    store
        .append(&s, ExpectedVersion::Exact(3), events(1))
        .await
        .unwrap();
    assert_eq!(
        dispatcher.dispatch(&s).await.unwrap(),
        DispatchOutcome {
            published: 0,
            dead_lettered: 0,
            marked: true
        }
    );
    assert_eq!(
        ids(&sink),
        vec![notification_id(&s, 1, NotificationKind::NewEntity)]
    );
}

#[tokio::test]
async fn long_pending_ranges_are_published_in_chunks() {
    let sink = Arc::new(MemorySink::new());
    let (store, dispatcher) = setup(
        sink.clone(),
        RaiseSwitches {
            entity_creation: false,
            event: true,
        },
    );
    let s = stream("1");
    let total = READ_CHUNK_EVENTS as usize + 7;
    for chunk in events(total).chunks(40) {
        store
            .append(&s, ExpectedVersion::Any, chunk.to_vec())
            .await
            .unwrap();
    }
    assert_eq!(dispatcher.dispatch(&s).await.unwrap().published, total);
    let sequences: Vec<u64> = sink
        .published()
        .iter()
        .map(|n| n.data.sequence_number)
        .collect();
    assert_eq!(sequences, (1..=total as u64).collect::<Vec<_>>());
}

#[tokio::test]
async fn an_append_racing_a_dispatch_stays_pending() {
    let store = Arc::new(MemoryStore::new());
    let s = stream("1");
    let sink = Arc::new(RacingSink::new(store.clone(), s.clone(), 1));
    let memory = sink.memory().clone();
    let outbox = Arc::new(MemoryOutbox::new(store.clone()));
    let dispatcher = Dispatcher::new(
        "memory",
        store.clone(),
        outbox.clone(),
        sink,
        Arc::new(MemoryDeadLetters::new()),
        RaiseSwitches::ALL,
    );
    store
        .append(&s, ExpectedVersion::NoStream, events(1))
        .await
        .unwrap();
    dispatcher.dispatch(&s).await.unwrap();
    // Event 2 arrived while event 1 was being published: the mark stops at 1.
    let pending = outbox.pending_for(&s).await.unwrap().unwrap();
    assert_eq!((pending.notified, pending.version), (1, 2));
    dispatcher.dispatch(&s).await.unwrap();
    assert!(outbox.pending_for(&s).await.unwrap().is_none());
    let sequences: Vec<u64> = memory
        .published()
        .iter()
        .map(|n| n.data.sequence_number)
        .collect();
    assert_eq!(sequences, vec![1, 1, 2]);
}

#[tokio::test]
async fn the_notifying_store_dispatches_in_the_background() {
    let sink = Arc::new(MemorySink::new());
    let (store, dispatcher) = setup(sink.clone(), RaiseSwitches::ALL);
    let notifying = NotifyingStore::new(store.clone(), dispatcher);
    let s = stream("1");
    let first = notifying
        .append(&s, ExpectedVersion::NoStream, events(1))
        .await
        .unwrap();
    notifying
        .append(&s, ExpectedVersion::Exact(1), events(1))
        .await
        .unwrap();
    for _ in 0..200 {
        if sink.published().len() >= 3 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(sink.published().len(), 3);
    assert_eq!(first.version, 1);
}
fn new_event_id(s: &StreamId, sequence: u64) -> uuid::Uuid {
    notification_id(s, sequence, NotificationKind::NewEvent)
}

#[tokio::test]
async fn a_refused_notification_is_dead_lettered_and_the_stream_goes_on() {
    let sink = Arc::new(MemorySink::new());
    let (store, _, dead_letters, dispatcher) = setup_with_outbox(sink.clone(), RaiseSwitches::ALL);
    let s = stream("1");
    let refused = new_event_id(&s, 3);
    sink.refuse(refused, 400);
    store
        .append(&s, ExpectedVersion::NoStream, events(5))
        .await
        .unwrap();
    let outcome = dispatcher.dispatch(&s).await.unwrap();
    assert_eq!(
        outcome,
        DispatchOutcome {
            published: 5,
            dead_lettered: 1,
            marked: true
        }
    );
    assert!(!ids(&sink).contains(&refused));
    let letters = dead_letters.all();
    assert_eq!(letters.len(), 1);
    assert_eq!(letters[0].id, refused);
    assert_eq!(letters[0].sequence_number, 3);
    assert_eq!(letters[0].status, Some(400));
    assert_eq!(letters[0].reason, crate::testing::MEMORY_SINK_REFUSAL);
    // Later events go on.
    store
        .append(&s, ExpectedVersion::Exact(5), events(1))
        .await
        .unwrap();
    assert_eq!(dispatcher.dispatch(&s).await.unwrap().published, 1);
    assert!(ids(&sink).contains(&new_event_id(&s, 6)));

    // Re-driven while still refused: kept; once accepted: published and forgotten.
    let (report, found) = dispatcher.redrive(None, 10).await.unwrap();
    assert_eq!((report.redriven, report.refused), (0, 1));
    assert_eq!(found, vec![refused]);
    assert_eq!(dead_letters.all().len(), 1);
    sink.accept_all();
    let (report, _) = dispatcher.redrive(Some(&[refused]), 10).await.unwrap();
    assert_eq!((report.redriven, report.refused, report.failed), (1, 0, 0));
    assert!(dead_letters.all().is_empty());
    assert_eq!(ids(&sink).last(), Some(&refused));
}

#[tokio::test]
async fn splitting_finds_every_refused_notification_and_keeps_the_order() {
    let sink = Arc::new(MemorySink::new());
    let only_events = RaiseSwitches {
        entity_creation: false,
        event: true,
    };
    let (store, _, dead_letters, dispatcher) = setup_with_outbox(sink.clone(), only_events);
    let s = stream("1");
    store
        .append(&s, ExpectedVersion::NoStream, events(40))
        .await
        .unwrap();
    for sequence in [1, 2, 17, 40] {
        sink.refuse(new_event_id(&s, sequence), 413);
    }
    let outcome = dispatcher.dispatch(&s).await.unwrap();
    assert_eq!((outcome.published, outcome.dead_lettered), (36, 4));
    let sequences: Vec<u64> = sink
        .published()
        .iter()
        .map(|n| n.data.sequence_number)
        .collect();
    let expected: Vec<u64> = (1..=40).filter(|q| ![1, 2, 17, 40].contains(q)).collect();
    assert_eq!(sequences, expected, "in order, each once");
    let letters: Vec<u64> = dead_letters
        .all()
        .iter()
        .map(|l| l.sequence_number)
        .collect::<std::collections::BTreeSet<_>>()
        .into_iter()
        .collect();
    assert_eq!(letters, vec![1, 2, 17, 40]);
    // Halving: a few calls per refused notification, not one per notification.
    assert!(sink.calls() < 40, "{} calls", sink.calls());
}

#[tokio::test]
async fn sweeps_take_turns_so_failing_streams_cannot_starve_the_rest() {
    let sink = Arc::new(MemorySink::new());
    let (store, outbox, _, dispatcher) = setup_with_outbox(sink.clone(), RaiseSwitches::ALL);
    // Five streams that sort first and fail every time, then one healthy stream.
    for name in ["a0", "a1", "a2", "a3", "a4", "b"] {
        store
            .append(&stream(name), ExpectedVersion::NoStream, events(1))
            .await
            .unwrap();
    }
    for name in ["a0", "a1", "a2", "a3", "a4"] {
        outbox.poisoned.lock().unwrap().push(stream(name));
    }
    let first = dispatcher.sweep(5).await.unwrap();
    assert_eq!((first.pending, first.failed, first.dispatched), (5, 5, 0));
    let second = dispatcher.sweep(5).await.unwrap();
    assert_eq!(second.dispatched, 1, "{second:?}");
    assert!(sink.published().iter().any(|n| n.data.instance == "b"));
}

/// A sink that says it is paused.
struct PausedSink;

#[async_trait]
impl NotificationSink for PausedSink {
    async fn publish(&self, _: &[super::super::Notification]) -> Result<(), PublishError> {
        panic!("a paused sink is not asked to publish");
    }

    fn paused(&self) -> Option<String> {
        Some("the topic refused the key with 401".into())
    }
}

#[tokio::test]
async fn a_paused_sink_is_not_swept() {
    let store = Arc::new(MemoryStore::new());
    let outbox = Arc::new(MemoryOutbox::new(store.clone()));
    let dispatcher = Dispatcher::new(
        "memory",
        store.clone(),
        outbox,
        Arc::new(PausedSink),
        Arc::new(MemoryDeadLetters::new()),
        RaiseSwitches::ALL,
    );
    store
        .append(&stream("1"), ExpectedVersion::NoStream, events(1))
        .await
        .unwrap();
    let report = dispatcher.sweep(10).await.unwrap();
    assert_eq!(report.pending, 0);
    assert!(report.paused.unwrap().contains("401"));
}
