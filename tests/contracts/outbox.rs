//! The notification outbox contract (`src/stream/outbox.rs`), written once and run against
//! every backend that keeps one (Table storage with its outbox on, Append Blobs — see the
//! fixtures in `table.rs` and `blob.rs`). A backend is conformant when every case passes on a
//! fresh, empty store.
//!
//! What a backend adds on its own (the Table append staying one request, unreadable rows planted in
//! storage, a Table stream whose every mark loses its ETag race) stays in
//! `tests/integration/outbox.rs`. The cases ask the fixture for a second view of the same storage
//! (what another process sees, with its own caches), so that marks made and read by different
//! processes are part of the contract.

use std::collections::BTreeSet;
use std::sync::Arc;

use streamfold::notify::dispatch::DispatchOutcome;
use streamfold::notify::{
    notification_id, Dispatcher, NotificationKind, NotificationSink, RaiseSwitches,
};
use streamfold::storage::MemoryDeadLetters;
use streamfold::stream::ExpectedVersion::{Exact, NoStream};
use streamfold::stream::{EventStore, Outbox, PendingScan, PendingStream, StreamId};
use streamfold::testing::{MemorySink, RacingSink};
use uuid::Uuid;

use crate::helpers::{events, stream};

/// One view of a backend: its event store and its outbox, over the same storage.
#[derive(Clone)]
pub struct View {
    pub store: Arc<dyn EventStore>,
    pub outbox: Arc<dyn Outbox>,
}

impl View {
    /// A store that is its own outbox.
    pub fn of<T: EventStore + Outbox>(store: T) -> Self {
        let store = Arc::new(store);
        Self {
            store: store.clone(),
            outbox: store,
        }
    }

    /// A dispatcher of this view into `sink`, raising every notification.
    fn dispatcher(&self, sink: Arc<dyn NotificationSink>) -> Dispatcher {
        Dispatcher::new(
            "contract",
            self.store.clone(),
            self.outbox.clone(),
            sink,
            Arc::new(MemoryDeadLetters::new()),
            RaiseSwitches::ALL,
        )
    }
}

/// A fresh, empty store of one backend, with its outbox.
pub struct Fixture {
    /// The view the cases write through.
    pub view: View,
    /// Opens another view of the same storage, as another process would (its own clients
    /// and caches).
    pub reopen: Box<dyn Fn() -> View + Send + Sync>,
    /// Whatever must live as long as the store (an Azurite process): held, never read.
    #[allow(dead_code)]
    pub guard: Box<dyn std::any::Any + Send>,
}

/// Expands to one `#[tokio::test]` per case for the fixture made by `$make` (an async fn).
macro_rules! suite {
    ($make:path) => {
        $crate::cases!(outbox, $make;
            appends_are_pending_until_marked,
            a_mark_made_with_a_spent_token_is_refused,
            concurrent_marks_of_one_read_move_it_once,
            a_mark_never_hides_events_appended_after_the_read,
            every_stream_of_the_store_is_swept,
            pending_streams_rotate_after_the_last_one_taken,
            another_process_sees_and_moves_the_same_marks,
            the_outbox_is_no_stream,
            a_dispatch_publishes_then_marks,
            a_dispatch_racing_an_append_never_skips_it,
        );
    };
}
pub(crate) use suite;

/// The instance keys of a scan, which must have no unreadable entry.
fn instances(scan: PendingScan) -> Vec<String> {
    assert!(scan.unreadable.is_empty(), "{:?}", scan.unreadable);
    scan.streams
        .iter()
        .map(|p| p.stream.instance().to_owned())
        .collect()
}

/// (notified, version) of what is pending for `s`, if anything is.
async fn pending_range(outbox: &dyn Outbox, s: &StreamId) -> Option<(u64, u64)> {
    outbox
        .pending_for(s)
        .await
        .unwrap()
        .map(|p| (p.notified, p.version))
}

/// What is pending for `s`, which must be something.
async fn pending(outbox: &dyn Outbox, s: &StreamId) -> PendingStream {
    outbox
        .pending_for(s)
        .await
        .unwrap()
        .unwrap_or_else(|| panic!("{s} is pending"))
}

/// (sequence, kind) of what a sink received, in order.
fn published(sink: &MemorySink) -> Vec<(u64, NotificationKind)> {
    sink.published()
        .iter()
        .map(|n| (n.data.sequence_number, n.kind()))
        .collect()
}

pub async fn appends_are_pending_until_marked(f: &Fixture) {
    let View { store, outbox } = &f.view;
    let s = stream("acc-1");
    assert_eq!(pending_range(&**outbox, &s).await, None);
    assert!(instances(outbox.pending(None, 100).await.unwrap()).is_empty());

    store.append(&s, NoStream, events(2)).await.unwrap();
    let first = pending(&**outbox, &s).await;
    assert_eq!((&first.stream, first.notified, first.version), (&s, 0, 2));
    let swept = outbox.pending(None, 100).await.unwrap().streams;
    assert_eq!(swept.len(), 1, "{swept:?}");
    assert_eq!(
        (&swept[0].stream, swept[0].notified, swept[0].version),
        (&s, 0, 2)
    );

    assert!(outbox.mark_notified(&first).await.unwrap());
    assert_eq!(pending_range(&**outbox, &s).await, None);
    assert!(instances(outbox.pending(None, 100).await.unwrap()).is_empty());

    // Only the events appended since are pending, from the mark on.
    store.append(&s, Exact(2), events(3)).await.unwrap();
    let second = pending(&**outbox, &s).await;
    assert_eq!((second.notified, second.version), (2, 5));
    assert!(outbox.mark_notified(&second).await.unwrap());
    assert_eq!(pending_range(&**outbox, &s).await, None);
}

pub async fn a_mark_made_with_a_spent_token_is_refused(f: &Fixture) {
    let View { store, outbox } = &f.view;
    let s = stream("spent");
    store.append(&s, NoStream, events(1)).await.unwrap();
    let read = pending(&**outbox, &s).await;
    assert!(outbox.mark_notified(&read).await.unwrap());
    // The same read again: the mark moved since, so nothing changes.
    assert!(!outbox.mark_notified(&read).await.unwrap());
    assert_eq!(pending_range(&**outbox, &s).await, None);

    // Nor does an old read move a newer mark backwards.
    store.append(&s, Exact(1), events(2)).await.unwrap();
    let newer = pending(&**outbox, &s).await;
    assert_eq!((newer.notified, newer.version), (1, 3));
    assert!(!outbox.mark_notified(&read).await.unwrap());
    assert_eq!(pending_range(&**outbox, &s).await, Some((1, 3)));
    assert!(outbox.mark_notified(&newer).await.unwrap());
    assert!(!outbox.mark_notified(&newer).await.unwrap());
    assert_eq!(pending_range(&**outbox, &s).await, None);
}

pub async fn concurrent_marks_of_one_read_move_it_once(f: &Fixture) {
    const MARKERS: usize = 6;
    let View { store, outbox } = &f.view;
    for (round, s) in [stream("fresh"), stream("marked")].iter().enumerate() {
        // "fresh": no mark yet; "marked": a mark made before the race.
        store.append(s, NoStream, events(1)).await.unwrap();
        if round == 1 {
            let first = pending(&**outbox, s).await;
            assert!(outbox.mark_notified(&first).await.unwrap());
            store.append(s, Exact(1), events(1)).await.unwrap();
        }
        let read = pending(&**outbox, s).await;
        // Each marker through its own view, as several dispatchers in several processes.
        let marks = futures::future::join_all((0..MARKERS).map(|_| {
            let view = (f.reopen)();
            let read = read.clone();
            async move { view.outbox.mark_notified(&read).await.unwrap() }
        }))
        .await;
        assert_eq!(
            marks.iter().filter(|won| **won).count(),
            1,
            "{s}: exactly one mark of the same read succeeds: {marks:?}"
        );
        assert_eq!(pending_range(&**outbox, s).await, None);
    }
}

pub async fn a_mark_never_hides_events_appended_after_the_read(f: &Fixture) {
    let View { store, outbox } = &f.view;
    let s = stream("raced");
    store.append(&s, NoStream, events(1)).await.unwrap();
    let read = pending(&**outbox, &s).await;
    // Appended by another process between the read and the mark.
    let other = (f.reopen)();
    other.store.append(&s, Exact(1), events(2)).await.unwrap();
    // The mark may be refused (the append changed the token) or made at the version read;
    // either way events 2 and 3 stay pending, for every view.
    let marked = outbox.mark_notified(&read).await.unwrap();
    let expected = if marked { (1, 3) } else { (0, 3) };
    assert_eq!(pending_range(&**outbox, &s).await, Some(expected));
    assert_eq!(
        pending_range(&*(f.reopen)().outbox, &s).await,
        Some(expected)
    );
    let swept = outbox.pending(None, 100).await.unwrap().streams;
    assert_eq!(
        swept
            .iter()
            .map(|p| (p.notified, p.version))
            .collect::<Vec<_>>(),
        [expected]
    );
}

pub async fn every_stream_of_the_store_is_swept(f: &Fixture) {
    let View { store, outbox } = &f.view;
    // Streams of several domains and entity types, and awkward keys.
    let streams = [
        StreamId::new("Shop", "Cart", "c1").unwrap(),
        StreamId::new("Shop", "Order", "o1").unwrap(),
        StreamId::new("Bank", "Account", "O'Brien").unwrap(),
        StreamId::new("Bank", "Account", "a b ü").unwrap(),
        StreamId::new("Bank", "Account", "A B Ü").unwrap(),
    ];
    for (n, s) in streams.iter().enumerate() {
        store.append(s, NoStream, events(n + 1)).await.unwrap();
    }
    let scan = outbox.pending(None, 100).await.unwrap();
    assert!(scan.unreadable.is_empty(), "{:?}", scan.unreadable);
    let found: BTreeSet<(StreamId, u64, u64)> = scan
        .streams
        .iter()
        .map(|p| (p.stream.clone(), p.notified, p.version))
        .collect();
    let expected: BTreeSet<(StreamId, u64, u64)> = streams
        .iter()
        .enumerate()
        .map(|(n, s)| (s.clone(), 0, n as u64 + 1))
        .collect();
    assert_eq!(found, expected);
    assert_eq!(scan.streams.len(), streams.len(), "each stream once");

    // A limit takes that many, and marking them all empties the outbox.
    let two = outbox.pending(None, 2).await.unwrap().streams;
    assert_eq!(two.len(), 2, "{two:?}");
    for p in &scan.streams {
        assert!(outbox.mark_notified(p).await.unwrap(), "{p:?}");
    }
    assert!(instances(outbox.pending(None, 100).await.unwrap()).is_empty());
}

pub async fn pending_streams_rotate_after_the_last_one_taken(f: &Fixture) {
    let View { store, outbox } = &f.view;
    for name in ["a", "b", "c", "d"] {
        store
            .append(&stream(name), NoStream, events(1))
            .await
            .unwrap();
    }
    let all = outbox.pending(None, 10).await.unwrap();
    assert_eq!(instances(all), ["a", "b", "c", "d"]);
    let after_b = outbox.pending(Some(&stream("b")), 10).await.unwrap();
    assert_eq!(instances(after_b), ["c", "d", "a", "b"]);
    let limited = outbox.pending(Some(&stream("c")), 2).await.unwrap();
    assert_eq!(instances(limited), ["d", "a"]);
    let after_last = outbox.pending(Some(&stream("d")), 3).await.unwrap();
    assert_eq!(instances(after_last), ["a", "b", "c"]);
    // A stream that is not pending (or does not exist) is a place in the order all the same.
    let after_gap = outbox.pending(Some(&stream("bb")), 10).await.unwrap();
    assert_eq!(instances(after_gap), ["c", "d", "a", "b"]);

    // A sweep limited to 2 streams a run reaches all four in two runs.
    let sink = Arc::new(MemorySink::new());
    let dispatcher = f.view.dispatcher(sink.clone());
    let first = dispatcher.sweep(2).await.unwrap();
    let second = dispatcher.sweep(2).await.unwrap();
    assert_eq!((first.dispatched, second.dispatched), (2, 2));
    let swept: BTreeSet<String> = sink
        .published()
        .iter()
        .map(|n| n.data.instance.clone())
        .collect();
    assert_eq!(swept.len(), 4, "{swept:?}");
}

pub async fn another_process_sees_and_moves_the_same_marks(f: &Fixture) {
    let writer = &f.view;
    let (a, b) = (stream("a"), stream("b"));
    // Several appends, so that marks fall inside a stream's history (and, on backends that
    // split streams, across their parts).
    for version in 0..3u64 {
        writer
            .store
            .append(&a, Exact(version), events(1))
            .await
            .unwrap();
    }
    writer.store.append(&b, NoStream, events(2)).await.unwrap();

    // A process with nothing cached finds both and marks them.
    let sweeper = (f.reopen)();
    let scan = sweeper.outbox.pending(None, 100).await.unwrap();
    let seen: Vec<(String, u64, u64)> = scan
        .streams
        .iter()
        .map(|p| (p.stream.instance().to_owned(), p.notified, p.version))
        .collect();
    assert_eq!(seen, [("a".into(), 0, 3), ("b".into(), 0, 2)]);
    for p in &scan.streams {
        assert!(sweeper.outbox.mark_notified(p).await.unwrap());
    }
    // The writer and yet another process see the marks.
    for view in [writer.clone(), (f.reopen)()] {
        assert_eq!(pending_range(&*view.outbox, &a).await, None);
        assert!(instances(view.outbox.pending(None, 100).await.unwrap()).is_empty());
    }

    // More events on `a`, by the writer: another process finds them past the mark.
    writer.store.append(&a, Exact(3), events(2)).await.unwrap();
    let again = (f.reopen)();
    let found = again.outbox.pending(None, 100).await.unwrap().streams;
    assert_eq!(found.len(), 1, "{found:?}");
    assert_eq!((found[0].notified, found[0].version), (3, 5));
    assert!(again.outbox.mark_notified(&found[0]).await.unwrap());
    assert_eq!(pending_range(&*writer.outbox, &a).await, None);
}

pub async fn the_outbox_is_no_stream(f: &Fixture) {
    let View { store, outbox } = &f.view;
    let s = stream("only");
    store.append(&s, NoStream, events(2)).await.unwrap();
    let read = pending(&**outbox, &s).await;
    assert!(outbox.mark_notified(&read).await.unwrap());
    // Whatever the outbox keeps, listings and reads show the streams and their events only.
    for view in [f.view.clone(), (f.reopen)()] {
        let page = view
            .store
            .list_streams(s.entity_type(), None, 100)
            .await
            .unwrap();
        assert_eq!(page.instances, ["only"]);
        assert_eq!(page.continuation, None);
        let slice = view
            .store
            .read(&s, streamfold::stream::ReadRequest::all())
            .await
            .unwrap();
        assert_eq!((slice.version, slice.events.len()), (2, 2));
    }
}

pub async fn a_dispatch_publishes_then_marks(f: &Fixture) {
    let View { store, outbox } = &f.view;
    let sink = Arc::new(MemorySink::new());
    let dispatcher = f.view.dispatcher(sink.clone());
    let s = stream("acc-1");
    store.append(&s, NoStream, events(2)).await.unwrap();

    let outcome = dispatcher.dispatch(&s).await.unwrap();
    assert_eq!(
        outcome,
        DispatchOutcome {
            published: 3,
            dead_lettered: 0,
            marked: true
        }
    );
    // The ids are the deterministic ones.
    let ids: Vec<Uuid> = sink.published().iter().map(|n| n.id).collect();
    assert_eq!(
        ids,
        [
            notification_id(&s, 1, NotificationKind::NewEntity),
            notification_id(&s, 1, NotificationKind::NewEvent),
            notification_id(&s, 2, NotificationKind::NewEvent),
        ]
    );
    assert_eq!(pending_range(&**outbox, &s).await, None);
    assert_eq!(dispatcher.dispatch(&s).await.unwrap().published, 0);

    // More events: a sweep publishes only them.
    store.append(&s, Exact(2), events(3)).await.unwrap();
    let report = dispatcher.sweep(100).await.unwrap();
    assert_eq!(
        (report.pending, report.dispatched, report.published),
        (1, 1, 3)
    );
    assert_eq!(published(&sink).len(), 6);
    assert!(instances(outbox.pending(None, 100).await.unwrap()).is_empty());
}

pub async fn a_dispatch_racing_an_append_never_skips_it(f: &Fixture) {
    let View { store, outbox } = &f.view;
    let s = stream("race");
    // One event appended to the stream while the first batch is published: an append racing
    // the dispatch, between its read and its mark.
    let sink = Arc::new(RacingSink::new((f.reopen)().store, s.clone(), 1));
    let memory = sink.memory().clone();
    let dispatcher = f.view.dispatcher(sink);
    store.append(&s, NoStream, events(1)).await.unwrap();
    dispatcher.dispatch(&s).await.unwrap();
    // Whatever the mark did, event 2 is published or still pending.
    if let Some(p) = outbox.pending_for(&s).await.unwrap() {
        assert_eq!((p.notified, p.version), (1, 2));
        let sequences: BTreeSet<u64> = published(&memory).iter().map(|(q, _)| *q).collect();
        assert_eq!(sequences, BTreeSet::from([1]));
        dispatcher.dispatch(&s).await.unwrap();
    }
    assert_eq!(pending_range(&**outbox, &s).await, None);
    let sequences: BTreeSet<u64> = published(&memory).iter().map(|(q, _)| *q).collect();
    assert_eq!(sequences, BTreeSet::from([1, 2]));
}
