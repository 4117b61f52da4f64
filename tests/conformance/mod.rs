//! The storage contract (`src/stream/store.rs`), written once and run against every backend
//! (memory, Table storage, Append Blobs — see `tests/contracts/conformance_*.rs`). A backend is
//! conformant when every case here passes on a fresh, empty store.
//!
//! Every case that is about the contract lives here and nowhere else; the per-backend files
//! (`tests/integration/table_backend.rs`, `tests/integration/blob_backend.rs`) test only what their
//! physical design adds (transaction limits, segments, request counts, lost responses). Cases ask
//! the fixture for what differs between backends (the per-event limit, how finely `as_of` tells
//! times apart) and for a second view of the same storage — what another process would see, with
//! its own caches — so that stale writers, cold caches and several processes are part of the
//! contract, not of one backend's tests.
#![allow(dead_code)]

pub mod helpers;

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;
use std::time::Duration;

use streamfold::stream::ExpectedVersion::{Any, Exact, Exists, NoStream};
use streamfold::stream::{
    EntityType, EventMetadata, EventStore, NewEvent, ReadRequest, StoreError, StreamId,
    MAX_EVENT_TYPE_LEN, MAX_INSTANCE_KEY_BYTES,
};
use uuid::Uuid;

use helpers::{
    all_pages, assert_wrong_version, contiguous, entity_type, event, events, ids, largest_fitting,
    sequences, sized_event, stream, DOMAIN, ENTITY,
};

/// The size of one event in a stream, as a backend measures it (computed, no I/O).
pub type EventSize = Box<dyn Fn(&StreamId, &NewEvent) -> usize + Send + Sync>;

/// A backend's limit on the size of one event.
pub struct EventLimit {
    /// The largest size an event may have, as the backend measures it.
    pub bytes: usize,
    /// How the backend measures an event.
    pub size: EventSize,
}

/// A fresh, empty store of one backend, and what the cases need to know of it.
pub struct Fixture {
    /// The store the cases write through.
    pub store: Arc<dyn EventStore>,
    /// Opens another view of the same storage, as another process would: a new store on the
    /// same account and table or container, with its own clients and caches. A backend that
    /// lives in one process (memory) returns its one store.
    pub reopen: Box<dyn Fn() -> Arc<dyn EventStore> + Send + Sync>,
    /// Opens another view of the same storage whose clock is off by the given time (positive:
    /// ahead), as a process on another machine would be.
    pub skewed: Box<dyn Fn(time::Duration) -> Arc<dyn EventStore> + Send + Sync>,
    /// The backend's per-event limit; `None` = no limit.
    pub event_limit: Option<EventLimit>,
    /// The smallest difference in time that `as_of` reads tell apart.
    pub as_of_resolution: Duration,
    /// Whatever must live as long as the store (an Azurite process).
    pub guard: Box<dyn std::any::Any + Send>,
}

impl Fixture {
    /// The fixture's store, then a view opened now (cold caches).
    fn views(&self) -> [Arc<dyn EventStore>; 2] {
        [self.store.clone(), (self.reopen)()]
    }
}

/// Expands to one `#[tokio::test]` per case for the fixture made by `$make` (an async fn).
#[macro_export]
macro_rules! conformance_suite {
    ($make:path) => {
        $crate::conformance_suite!(@cases $make;
            expectations_against_a_missing_stream,
            expectations_against_an_existing_stream,
            a_stale_writer_is_refused_and_learns_the_version,
            multi_event_appends_are_atomic,
            retries_with_the_same_event_ids_are_idempotent,
            retries_are_recognised_however_much_was_appended_since,
            recorded_times_never_go_back_and_as_of_a_time_is_a_prefix,
            reads_by_range_and_as_of_a_time,
            reads_up_to_a_known_version,
            reads_without_the_version_return_the_stored_events,
            data_and_metadata_round_trip_exactly,
            the_largest_event_fits_and_the_next_is_refused,
            invalid_appends_write_nothing,
            awkward_keys_are_distinct_streams,
            listing_pages_through_one_entity_type,
            concurrent_exact_writers_leave_no_gap,
            concurrent_any_appends_all_land_once,
            reads_racing_appends_see_events_one_to_version,
            an_erased_stream_is_gone_and_its_tombstone_refuses_every_writer,
            erasing_a_long_stream_leaves_nothing_of_it,
        );
    };
    (@cases $make:path; $($case:ident),* $(,)?) => {
        $(
            #[tokio::test]
            async fn $case() {
                let fixture = $make().await;
                conformance::$case(&fixture).await;
            }
        )*
    };
}

/// Every instance of `DOMAIN / ENTITY`, every page followed.
async fn listed(store: &dyn EventStore) -> Vec<String> {
    all_pages(store, DOMAIN, ENTITY, 1_000).await.concat()
}

pub async fn expectations_against_a_missing_stream(f: &Fixture) {
    let s = stream("missing");
    for store in f.views() {
        for expected in [Exists, Exact(1), Exact(5)] {
            assert_wrong_version(store.append(&s, expected, events(1)).await, expected, 0);
        }
    }
    for store in f.views() {
        assert_eq!(
            store.version(&s).await.unwrap(),
            0,
            "refused appends wrote nothing"
        );
        let slice = store.read(&s, ReadRequest::all()).await.unwrap();
        assert_eq!((slice.version, slice.events.len()), (0, 0));
        assert!(listed(&*store).await.is_empty(), "no stream was created");
    }

    for (instance, expected) in [("no-stream", NoStream), ("exact-0", Exact(0)), ("any", Any)] {
        let s = stream(instance);
        let outcome = f.store.append(&s, expected, events(2)).await.unwrap();
        assert_eq!(
            (outcome.first_sequence, outcome.version),
            (1, 2),
            "{expected}"
        );
        assert!(outcome.created && !outcome.duplicate, "{expected}");
        for store in f.views() {
            assert_eq!(store.version(&s).await.unwrap(), 2, "{expected}");
        }
    }
}

pub async fn expectations_against_an_existing_stream(f: &Fixture) {
    let s = stream("existing");
    f.store.append(&s, NoStream, events(2)).await.unwrap();
    // The same answers from the writer's own view and from a cold one.
    for store in f.views() {
        let base = store.version(&s).await.unwrap();
        let wrong = [
            NoStream,
            Exact(0),
            Exact(1),
            Exact(base - 1),
            Exact(base + 1),
            Exact(100),
            // Versions no stream can reach: still a conflict that names the real version
            // (never "too large", never an overflow).
            Exact(9_999_999_999),
            Exact(u64::MAX - 1),
            Exact(u64::MAX),
        ];
        for expected in wrong {
            assert_wrong_version(store.append(&s, expected, events(1)).await, expected, base);
        }
        assert_eq!(store.version(&s).await.unwrap(), base);

        let exact = store.append(&s, Exact(base), events(1)).await.unwrap();
        assert_eq!((exact.first_sequence, exact.version), (base + 1, base + 1));
        assert!(!exact.created && !exact.duplicate);
        let any = store.append(&s, Any, events(2)).await.unwrap();
        assert_eq!((any.first_sequence, any.version), (base + 2, base + 3));
        let exists = store.append(&s, Exists, events(1)).await.unwrap();
        assert_eq!(
            (exists.first_sequence, exists.version),
            (base + 4, base + 4)
        );
        assert_wrong_version(
            store.append(&s, Exact(base + 3), events(1)).await,
            Exact(base + 3),
            base + 4,
        );
    }
    assert_eq!(contiguous(&*(f.reopen)(), &s).await.len(), 10);
}

/// Two processes on one stream: whichever view is behind is refused (never a second write at
/// a position already taken) and told the version, and every acknowledged event is stored once
/// at the sequence it was acknowledged with.
pub async fn a_stale_writer_is_refused_and_learns_the_version(f: &Fixture) {
    let s = stream("stale");
    let (a, b) = (f.store.clone(), (f.reopen)());
    let mut acknowledged = Vec::new();
    let mut append = |store: &Arc<dyn EventStore>, expected, batch: Vec<NewEvent>| {
        let store = store.clone();
        let s = s.clone();
        acknowledged.extend(ids(&batch));
        async move { store.append(&s, expected, batch).await.unwrap() }
    };

    assert_eq!(append(&a, NoStream, events(2)).await.version, 2);
    // `b` writes: its view is current, `a`'s (at 2) is stale.
    assert_eq!(append(&b, Exact(2), events(1)).await.version, 3);
    assert_wrong_version(a.append(&s, Exact(2), events(1)).await, Exact(2), 3);
    assert_wrong_version(a.append(&s, NoStream, events(1)).await, NoStream, 3);
    // `a` learned the version from the refusal; now `b` is stale, for several events.
    assert_eq!(append(&a, Exact(3), events(1)).await.version, 4);
    assert_wrong_version(b.append(&s, Exact(3), events(3)).await, Exact(3), 4);
    // Appends without a version from a stale view land after the events it has not seen.
    let any = append(&b, Any, events(2)).await;
    assert_eq!((any.first_sequence, any.version), (5, 6));
    let exists = append(&a, Exists, events(1)).await;
    assert_eq!((exists.first_sequence, exists.version), (7, 7));
    assert_wrong_version(b.append(&s, Exact(6), events(1)).await, Exact(6), 7);

    for store in [a, b, (f.reopen)()] {
        assert_eq!(contiguous(&*store, &s).await, acknowledged);
    }
}

pub async fn multi_event_appends_are_atomic(f: &Fixture) {
    let store = &f.store;
    let s = stream("atomic");
    let first = events(5);
    let outcome = store.append(&s, NoStream, first.clone()).await.unwrap();
    assert_eq!((outcome.first_sequence, outcome.version), (1, 5));
    // A conflicting multi-event append writes none of its events.
    for expected in [Exact(3), Exact(7)] {
        assert_wrong_version(store.append(&s, expected, events(4)).await, expected, 5);
    }
    // So does one whose last event reuses an id.
    let mut mixed = events(3);
    mixed[2].event_id = first[0].event_id;
    match store.append(&s, Exact(5), mixed).await {
        Err(StoreError::EventIdReused { event_id, .. }) => assert_eq!(event_id, first[0].event_id),
        other => panic!("expected EventIdReused, got {other:?}"),
    }
    let slice = store.read(&s, ReadRequest::all()).await.unwrap();
    assert_eq!((slice.version, slice.events.len()), (5, 5));

    let next = events(3);
    let outcome = store.append(&s, Exact(5), next.clone()).await.unwrap();
    assert_eq!((outcome.first_sequence, outcome.version), (6, 8));
    let all = store.read(&s, ReadRequest::all()).await.unwrap();
    assert_eq!(sequences(&all), (1..=8).collect::<Vec<_>>());
    let stored: Vec<Uuid> = all.events.iter().map(|e| e.event_id).collect();
    assert_eq!(
        stored,
        [ids(&first), ids(&next)].concat(),
        "in the order given"
    );
    // One append shares one timestamp.
    for append in [&all.events[..5], &all.events[5..]] {
        assert!(append.iter().all(|e| e.timestamp == append[0].timestamp));
    }
}

pub async fn retries_with_the_same_event_ids_are_idempotent(f: &Fixture) {
    let s = stream("idempotent");
    let batch = events(3);
    let created = f.store.append(&s, NoStream, batch.clone()).await.unwrap();
    assert_eq!(
        (created.version, created.created, created.duplicate),
        (3, true, false)
    );

    // The retry of a timed-out call, under any expectation, from any view (a fresh one too):
    // the first append's outcome, nothing written.
    for expected in [NoStream, Exact(0), Exact(3), Any, Exists] {
        for store in f.views() {
            let retry = store.append(&s, expected, batch.clone()).await.unwrap();
            assert_eq!(
                (
                    retry.first_sequence,
                    retry.version,
                    retry.created,
                    retry.duplicate
                ),
                (1, 3, true, true),
                "{expected}"
            );
            assert_eq!(retry.recorded, None, "a duplicate wrote nothing now");
        }
    }
    let later = events(2);
    let outcome = f.store.append(&s, Exact(3), later.clone()).await.unwrap();
    assert_eq!(
        (outcome.first_sequence, outcome.version, outcome.created),
        (4, 5, false)
    );
    // Retries with their now stale expectation, after the stream moved on.
    for store in f.views() {
        let retry = store.append(&s, Exact(0), batch.clone()).await.unwrap();
        assert_eq!(
            (retry.first_sequence, retry.version, retry.duplicate),
            (1, 3, true)
        );
        for expected in [Exact(3), Any] {
            let retry = store.append(&s, expected, later.clone()).await.unwrap();
            assert_eq!(
                (
                    retry.first_sequence,
                    retry.version,
                    retry.created,
                    retry.duplicate
                ),
                (4, 5, false, true),
                "{expected}"
            );
        }
    }

    // Ids of earlier appends reused for something else: part of one append, one mixed with new
    // events, the events of two appends in one.
    let mut overlap = events(2);
    overlap[0].event_id = batch[2].event_id;
    let stored = [ids(&batch), ids(&later)].concat();
    let attempts = [
        overlap,
        batch[..2].to_vec(),
        later[1..].to_vec(),
        [batch.clone(), later.clone()].concat(),
    ];
    for attempt in attempts {
        for expected in [Exact(5), Any] {
            for store in f.views() {
                match store.append(&s, expected, attempt.clone()).await {
                    Err(StoreError::EventIdReused { event_id, .. }) => {
                        assert!(stored.contains(&event_id), "{expected}: {event_id}")
                    }
                    other => panic!("{expected}: expected EventIdReused, got {other:?}"),
                }
            }
        }
    }
    // The events of one append in another order are not a retry of it: its outcome would
    // place them where they are not.
    let reordered = vec![batch[1].clone(), batch[0].clone(), batch[2].clone()];
    for expected in [Exact(5), Any] {
        for store in f.views() {
            match store.append(&s, expected, reordered.clone()).await {
                Err(StoreError::EventIdReused { event_id, .. }) => {
                    assert!(stored.contains(&event_id))
                }
                other => panic!("a reordered retry: {other:?}"),
            }
        }
    }
    for store in f.views() {
        assert_eq!(contiguous(&*store, &s).await, stored, "stored once");
    }
    // The ids belong to this stream only: another stream may use them.
    let other = f
        .store
        .append(&stream("idempotent-other"), NoStream, batch)
        .await
        .unwrap();
    assert_eq!((other.version, other.duplicate), (3, false));
}

/// Retries are recognised however much was appended since (more than 128 KiB, dozens of
/// appends, many segments of an Append Blob stream, and more events than a backend may leave
/// unindexed), from the process that wrote them, one that saw everything since, and one that
/// saw nothing, under their own expectation or any other, including an exact expectation the
/// stream now meets (what a command retried after its state moved on sends).
pub async fn retries_are_recognised_however_much_was_appended_since(f: &Fixture) {
    const BIG_APPENDS: usize = 40;
    const BIG_EVENT: usize = 4 * 1024;
    const SMALL_APPENDS: u64 = 30;
    const SMALL_PER_APPEND: usize = 5;
    let s = stream("long-ago");
    let any = events(3);
    let exists = events(2);
    let exact = events(2);
    f.store.append(&s, Any, any.clone()).await.unwrap();
    f.store.append(&s, Exists, exists.clone()).await.unwrap();
    f.store.append(&s, Exact(5), exact.clone()).await.unwrap();

    let other = (f.reopen)();
    let mut version = 7u64;
    for _ in 0..BIG_APPENDS {
        version = other
            .append(&s, Any, vec![sized_event(BIG_EVENT)])
            .await
            .unwrap()
            .version;
    }
    assert!((BIG_APPENDS * BIG_EVENT) as u64 > 128 * 1024);
    for _ in 0..SMALL_APPENDS {
        version = other
            .append(&s, Exact(version), events(SMALL_PER_APPEND))
            .await
            .unwrap()
            .version;
    }
    let appended = 7 + BIG_APPENDS as u64 + SMALL_APPENDS * SMALL_PER_APPEND as u64;
    assert_eq!(version, appended);

    let earlier = [(&any, 1, 3), (&exists, 4, 5), (&exact, 6, 7)];
    for store in [f.store.clone(), other.clone(), (f.reopen)()] {
        for (batch, first, last) in earlier {
            for expected in [Any, Exists, NoStream, Exact(first - 1), Exact(version)] {
                let retry = store.append(&s, expected, batch.clone()).await;
                let retry = retry.unwrap_or_else(|e| panic!("{expected} at {first}: {e:?}"));
                assert_eq!(
                    (retry.first_sequence, retry.version, retry.duplicate),
                    (first, last, true),
                    "{expected} at {first}"
                );
            }
        }
        // Ids of those appends in another arrangement are refused, however old.
        let mut mixed = events(1);
        mixed.push(any[0].clone());
        for attempt in [
            any[1..].to_vec(),
            mixed,
            vec![exists[1].clone(), exists[0].clone()],
        ] {
            for expected in [Any, Exact(version)] {
                match store.append(&s, expected, attempt.clone()).await {
                    Err(StoreError::EventIdReused { .. }) => {}
                    other => panic!("{expected}: expected EventIdReused, got {other:?}"),
                }
            }
        }
    }
    let stored = contiguous(&*(f.reopen)(), &s).await;
    assert_eq!(stored.len() as u64, appended, "nothing was stored twice");
    assert_eq!(
        stored[..7],
        [ids(&any), ids(&exists), ids(&exact)].concat()[..]
    );
}

/// Writers whose clocks disagree (one ahead, one behind) append in turn, with every kind of
/// expectation: the times recorded never go back (an append records at least its
/// predecessor's time), each append reports the time its events read back with, and a read as
/// of any time is a prefix: the events up to the last one recorded at or before it, the same
/// as the read as of that event's sequence, from any first sequence.
pub async fn recorded_times_never_go_back_and_as_of_a_time_is_a_prefix(f: &Fixture) {
    let s = stream("clocks");
    let minutes = time::Duration::minutes;
    let (ahead, behind, normal) = (
        (f.skewed)(minutes(10)),
        (f.skewed)(-minutes(10)),
        f.store.clone(),
    );
    let mut outcomes = Vec::new();
    let mut version = 0;
    let writers: [(&Arc<dyn EventStore>, _); 8] = [
        (&normal, NoStream),
        (&ahead, Exact(0)),
        (&behind, Any),
        (&behind, Exact(0)),
        (&normal, Exists),
        (&ahead, Any),
        (&behind, Exact(0)),
        (&normal, Exact(0)),
    ];
    for (writer, expected) in writers {
        // `Exact(0)` stands for "the version the writer reads now".
        let expected = match expected {
            Exact(_) if version > 0 => Exact(writer.version(&s).await.unwrap()),
            other => other,
        };
        let outcome = writer.append(&s, expected, events(2)).await.unwrap();
        version = outcome.version;
        outcomes.push(outcome);
    }
    let resolution = time::Duration::try_from(f.as_of_resolution).unwrap();
    for store in f.views() {
        let all = store.read(&s, ReadRequest::all()).await.unwrap();
        assert_eq!(sequences(&all), (1..=version).collect::<Vec<_>>());
        let times: Vec<_> = all.events.iter().map(|e| e.timestamp).collect();
        assert!(
            times.windows(2).all(|w| w[0] <= w[1]),
            "recorded times go back: {times:?}"
        );
        for outcome in &outcomes {
            let at = outcome.first_sequence as usize - 1;
            assert_eq!(Some(times[at]), outcome.recorded, "the time reported");
            assert_eq!(times[at], times[at + 1], "one time per append");
        }
        // The writer behind appended after the one ahead: it recorded no earlier.
        assert!(times[4] >= times[2], "{times:?}");
        for (index, &t) in times.iter().enumerate() {
            // As of the time of event `index + 1`: up to the last event recorded then.
            let last = times.iter().rposition(|&u| u <= t).unwrap() as u64 + 1;
            let before = times.iter().position(|&u| u == t).unwrap() as u64;
            for from in [1, index as u64 + 1, last] {
                let read = store
                    .read(&s, ReadRequest::range(from, None).as_of(t))
                    .await
                    .unwrap();
                assert_eq!(
                    sequences(&read),
                    (from..=last).collect::<Vec<_>>(),
                    "at {t}"
                );
                let by_sequence = store
                    .read(&s, ReadRequest::range(from, Some(last)))
                    .await
                    .unwrap();
                assert_eq!(
                    format!("{:?}", read.events),
                    format!("{:?}", by_sequence.events)
                );
                let known = store
                    .read_known(&s, ReadRequest::range(from, None).as_of(t), version)
                    .await
                    .unwrap();
                assert_eq!(known.len() as u64, (last + 1).saturating_sub(from));
            }
            let earlier = store
                .read(&s, ReadRequest::all().as_of(t - resolution))
                .await
                .unwrap();
            assert_eq!(sequences(&earlier), (1..=before).collect::<Vec<_>>());
        }
    }
}

pub async fn reads_by_range_and_as_of_a_time(f: &Fixture) {
    let s = stream("reads");
    let pause = || tokio::time::sleep(Duration::from_millis(30));
    f.store.append(&s, NoStream, events(2)).await.unwrap();
    pause().await;
    let between = time::OffsetDateTime::now_utc();
    pause().await;
    f.store.append(&s, Exact(2), events(2)).await.unwrap();
    pause().await;
    f.store.append(&s, Exact(4), events(2)).await.unwrap();

    for store in f.views() {
        let read = |request| {
            let (store, s) = (store.clone(), s.clone());
            async move {
                let slice = store.read(&s, request).await.unwrap();
                (slice.version, sequences(&slice))
            }
        };
        let all = store.read(&s, ReadRequest::all()).await.unwrap();
        assert_eq!((all.version, sequences(&all)), (6, (1..=6).collect()));
        let times: Vec<_> = all.events.iter().map(|e| e.timestamp).collect();
        assert!(times[0] == times[1] && times[2] == times[3] && times[4] == times[5]);
        assert!(times[1] < times[2] && times[3] < times[4], "{times:?}");

        assert_eq!(
            read(ReadRequest::range(2, Some(4))).await,
            (6, vec![2, 3, 4])
        );
        assert_eq!(read(ReadRequest::after(4)).await, (6, vec![5, 6]));
        assert_eq!(read(ReadRequest::after(6)).await, (6, vec![]));
        assert_eq!(read(ReadRequest::range(7, None)).await, (6, vec![]));
        assert_eq!(read(ReadRequest::range(100, None)).await, (6, vec![]));
        assert_eq!(read(ReadRequest::range(5, Some(2))).await, (6, vec![]));

        // As of a time: inclusive of the appends made at it, whatever the range.
        let second = times[2];
        let all_as_of = |at| ReadRequest::all().as_of(at);
        assert_eq!(read(all_as_of(second)).await, (6, vec![1, 2, 3, 4]));
        let range = ReadRequest::range(2, Some(3)).as_of(second);
        assert_eq!(read(range).await, (6, vec![2, 3]));
        let from = ReadRequest::range(2, None).as_of(second);
        assert_eq!(read(from).await, (6, vec![2, 3, 4]));
        assert_eq!(read(all_as_of(between)).await, (6, vec![1, 2]));
        let just_before = times[0] - f.as_of_resolution;
        assert_eq!(read(all_as_of(just_before)).await, (6, vec![]));
        let long_ago = time::OffsetDateTime::UNIX_EPOCH;
        assert_eq!(read(all_as_of(long_ago)).await, (6, vec![]));

        // The times read are the stored ones: the same on every read.
        let again = store.read(&s, ReadRequest::all()).await.unwrap();
        assert_eq!(
            again.events.iter().map(|e| e.timestamp).collect::<Vec<_>>(),
            times
        );
    }
}

pub async fn reads_up_to_a_known_version(f: &Fixture) {
    let s = stream("known");
    let first = f.store.append(&s, NoStream, events(3)).await.unwrap();
    let known = f.store.version(&s).await.unwrap();
    assert_eq!(known, 3);
    tokio::time::sleep(Duration::from_millis(30)).await;
    let later = time::OffsetDateTime::now_utc();
    tokio::time::sleep(Duration::from_millis(30)).await;
    // The stream moves on after the version was learnt: nothing past it comes back.
    f.store.append(&s, Exact(3), events(2)).await.unwrap();

    for store in f.views() {
        let read = |request, version| {
            let (store, s) = (store.clone(), s.clone());
            async move {
                let events = store.read_known(&s, request, version).await.unwrap();
                events.iter().map(|e| e.sequence).collect::<Vec<u64>>()
            }
        };
        assert_eq!(read(ReadRequest::all(), known).await, vec![1, 2, 3]);
        assert_eq!(read(ReadRequest::after(1), known).await, vec![2, 3]);
        assert_eq!(read(ReadRequest::range(2, Some(2)), known).await, vec![2]);
        assert_eq!(read(ReadRequest::after(3), known).await, Vec::<u64>::new());
        assert_eq!(read(ReadRequest::all(), 5).await, vec![1, 2, 3, 4, 5]);
        assert_eq!(
            read(ReadRequest::all().as_of(later), 5).await,
            vec![1, 2, 3]
        );
        // The same events, byte for byte, as a plain read gives.
        let known_events = store.read_known(&s, ReadRequest::all(), 5).await.unwrap();
        let plain = store.read(&s, ReadRequest::all()).await.unwrap();
        assert_eq!(format!("{known_events:?}"), format!("{:?}", plain.events));
        // The time an append reports is the time its events read back with.
        let recorded = first.recorded.expect("a first write reports its time");
        assert!(plain.events[..3].iter().all(|e| e.timestamp == recorded));
    }
    let missing = stream("known-missing");
    let none = f.store.read_known(&missing, ReadRequest::all(), 0).await;
    assert!(none.unwrap().is_empty());
}

/// `read_stored` gives exactly what `read` gives for the same range, ends where the stored
/// events end, and gives nothing for a stream without the first event asked for.
pub async fn reads_without_the_version_return_the_stored_events(f: &Fixture) {
    let s = stream("stored");
    f.store.append(&s, NoStream, events(4)).await.unwrap();
    for store in f.views() {
        let stored = |request| {
            let (store, s) = (store.clone(), s.clone());
            async move {
                let events = store.read_stored(&s, request).await.unwrap();
                events.iter().map(|e| e.sequence).collect::<Vec<u64>>()
            }
        };
        assert_eq!(stored(ReadRequest::all()).await, vec![1, 2, 3, 4]);
        assert_eq!(stored(ReadRequest::after(2)).await, vec![3, 4]);
        assert_eq!(stored(ReadRequest::range(2, Some(3))).await, vec![2, 3]);
        assert_eq!(stored(ReadRequest::after(4)).await, Vec::<u64>::new());
        let all = store.read_stored(&s, ReadRequest::all()).await.unwrap();
        let plain = store.read(&s, ReadRequest::all()).await.unwrap();
        assert_eq!(format!("{all:?}"), format!("{:?}", plain.events));
    }
    let missing = stream("stored-missing");
    let none = f.store.read_stored(&missing, ReadRequest::all()).await;
    assert!(none.unwrap().is_empty());
}

pub async fn data_and_metadata_round_trip_exactly(f: &Fixture) {
    let s = stream("exact");
    let large = format!(
        r#"{{"blob": "{}", "tail": 1e-400}}"#,
        "ab\u{e9}c".repeat(200 * 1024 / 5)
    );
    assert!(large.len() > 200 * 1024);
    let texts = [
        r#"{"amount": 0.10000000000000000001, "big": 123456789012345678901234567890}"#,
        r#"{"amount":"0.10","s": "tab\there \"q\" ünï 😀"}"#,
        r#"{"nested":{"list":[1,"two",{"three":3.0}],"unicode":"ünïcödé ✓ \u00e9"},"empty":{}}"#,
        r#"{ "spaced" :  [1, 2 ,3] ,"unicode":"ünï \u00e9 😀 \"quoted\"" }"#,
        "{\n  \"pretty\": true\n}",
        "  \"surrounded by spaces\"\t",
        large.as_str(),
        "[1, 2, 3]",
        "[]",
        r#""a string""#,
        r#""""#,
        "null",
        "-0.0e+00",
    ];
    let full = EventMetadata {
        correlation_id: Some("corr-1".into()),
        causation_id: Some("cause'1 \"2\"\nthree".into()),
        who: Some("O'Brien <alice@example.com>".into()),
        source: Some("conformance".into()),
        commentary: Some("line one, 'quoted', \"double\" & more\nünï ✓".into()),
        schema_version: Some(u32::MAX),
        idempotency_key: Some("8e03978e-40d5 \\ \"k\" ~".into()),
        request_hash: Some("ab".repeat(32)),
    };
    let partial = EventMetadata {
        schema_version: Some(0),
        ..EventMetadata::default()
    };
    let longest_type = format!("T{}", "x".repeat(MAX_EVENT_TYPE_LEN - 1));
    let written: Vec<NewEvent> = texts
        .iter()
        .enumerate()
        .map(|(i, text)| match i % 3 {
            0 => event("Stored.v1-x_y", text).with_metadata(full.clone()),
            1 => event(&longest_type, text).with_metadata(partial.clone()),
            _ => event("S", text),
        })
        .collect();
    f.store.append(&s, NoStream, written.clone()).await.unwrap();
    for store in f.views() {
        let slice = store.read(&s, ReadRequest::all()).await.unwrap();
        assert_eq!(slice.events.len(), written.len());
        for (read, written) in slice.events.iter().zip(&written) {
            assert_eq!(read.data.get(), written.data.get(), "data byte for byte");
            assert_eq!(read.event_id, written.event_id);
            assert_eq!(read.event_type, written.event_type);
            assert_eq!(read.metadata, written.metadata);
        }
    }
}

pub async fn the_largest_event_fits_and_the_next_is_refused(f: &Fixture) {
    let Some(limit) = &f.event_limit else {
        return; // no per-event limit on this backend
    };
    let s = stream("largest");
    let fits = |e: &NewEvent| (limit.size)(&s, e) <= limit.bytes;
    let largest_len = largest_fitting(fits, 64 * 1024 * 1024);
    let refused = sized_event(largest_len + 1);
    let assert_too_large = |result: Result<_, StoreError>| match result {
        Err(StoreError::EventTooLarge {
            event_id,
            size,
            limit: reported,
        }) => {
            assert_eq!(event_id, refused.event_id);
            assert_eq!(reported, limit.bytes);
            assert_eq!(size, (limit.size)(&s, &refused));
            assert!(size > reported);
        }
        other => panic!("expected EventTooLarge, got {other:?}"),
    };
    assert_too_large(f.store.append(&s, NoStream, vec![refused.clone()]).await);
    assert_eq!(f.store.version(&s).await.unwrap(), 0);

    let largest = sized_event(largest_len);
    f.store
        .append(&s, NoStream, vec![largest.clone()])
        .await
        .unwrap();
    let slice = (f.reopen)().read(&s, ReadRequest::all()).await.unwrap();
    assert_eq!(slice.events[0].data.get(), largest.data.get());
    // Refused with a small event beside it: the append as a whole.
    let beside = vec![event("Small", "{}"), refused.clone()];
    assert_too_large(f.store.append(&s, Exact(1), beside).await);
    assert_eq!(f.store.version(&s).await.unwrap(), 1);
}

pub async fn invalid_appends_write_nothing(f: &Fixture) {
    let store = &f.store;
    let s = stream("invalid");
    assert!(matches!(
        store.append(&s, Any, vec![]).await,
        Err(StoreError::EmptyAppend)
    ));
    let too_long_type = "T".repeat(MAX_EVENT_TYPE_LEN + 1);
    for bad_type in ["bad type", "1st", too_long_type.as_str()] {
        let batch = vec![event("Good", "{}"), event(bad_type, "{}")];
        match store.append(&s, Any, batch.clone()).await {
            Err(StoreError::InvalidEvent { event_id, .. }) => {
                assert_eq!(event_id, batch[1].event_id, "{bad_type:?}")
            }
            other => panic!("{bad_type:?}: expected InvalidEvent, got {other:?}"),
        }
    }
    let e = event("Twice", "{}");
    assert!(matches!(
        store.append(&s, Any, vec![e.clone(), e]).await,
        Err(StoreError::InvalidEvent { .. })
    ));
    assert_eq!(store.version(&s).await.unwrap(), 0);
    assert!(listed(&**store).await.is_empty());
    // Keys are validated before a stream id exists at all.
    let too_long = "x".repeat(MAX_INSTANCE_KEY_BYTES + 1);
    for bad in [
        "a/b",
        "a\\b",
        "a#b",
        "a?b",
        "a\u{0}b",
        "a\u{7f}b",
        "",
        " a",
        too_long.as_str(),
    ] {
        assert!(StreamId::new(DOMAIN, ENTITY, bad).is_err(), "{bad:?}");
    }
}

pub async fn awkward_keys_are_distinct_streams(f: &Fixture) {
    let longest = "ü".repeat(MAX_INSTANCE_KEY_BYTES / 2);
    let keys = [
        "O'Brien",
        "'",
        "''",
        "50%",
        "%25",
        "%41",
        "a%2Fb",
        "a+b c",
        "x&y=z",
        "x~y=z&w;v",
        "e=mc²;",
        "ünï",
        "日本",
        "emoji 🦀",
        "Abc",
        "abc",
        "A",
        "a.b",
        ".hidden.",
        "..",
        "~tilde",
        "(1)",
        "(x),y",
        longest.as_str(),
    ];
    // Each key gets its own number of events, so a mix-up shows as a wrong version.
    for (i, key) in keys.iter().enumerate() {
        let s = stream(key);
        let n = i as u64 + 1;
        let data = format!(r#"{{"key":{}}}"#, serde_json::to_string(key).unwrap());
        let first: Vec<NewEvent> = (0..n).map(|_| event("Keyed", &data)).collect();
        let created = f.store.append(&s, NoStream, first.clone()).await.unwrap();
        assert_eq!((created.version, created.created), (n, true), "{key:?}");
        let exact = f.store.append(&s, Exact(n), events(1)).await.unwrap();
        assert_eq!(exact.version, n + 1, "{key:?}");
        assert_eq!(
            f.store.append(&s, Any, events(1)).await.unwrap().version,
            n + 2
        );
        let retry = f.store.append(&s, Exact(0), first).await.unwrap();
        assert!(retry.duplicate, "{key:?}");
        assert_wrong_version(
            f.store.append(&s, Exact(n + 1), events(1)).await,
            Exact(n + 1),
            n + 2,
        );
    }
    for store in f.views() {
        for (i, key) in keys.iter().enumerate() {
            let s = stream(key);
            let n = i as u64 + 1;
            assert_eq!(store.version(&s).await.unwrap(), n + 2, "{key:?}");
            let slice = store.read(&s, ReadRequest::range(2, None)).await.unwrap();
            assert_eq!(
                (slice.version, slice.events.len() as u64),
                (n + 2, n + 1),
                "{key:?}"
            );
            let first = store
                .read(&s, ReadRequest::range(1, Some(1)))
                .await
                .unwrap();
            let data: serde_json::Value = serde_json::from_str(first.events[0].data.get()).unwrap();
            assert_eq!(data["key"], *key);
        }
        // Listed once each, in pages (not necessarily in key order: see the backends' docs).
        let listed = all_pages(&*store, DOMAIN, ENTITY, 4).await.concat();
        let unique: BTreeSet<String> = listed.iter().cloned().collect();
        assert_eq!(unique.len(), listed.len(), "an instance listed twice");
        assert_eq!(unique, keys.iter().map(|k| k.to_string()).collect());
    }
}

pub async fn listing_pages_through_one_entity_type(f: &Fixture) {
    let store = &*f.store;
    assert!(
        listed(store).await.is_empty(),
        "nothing is listed before any write"
    );
    let names: Vec<String> = (0..7).map(|i| format!("cart-{i}")).collect();
    for name in &names {
        store
            .append(&stream(name), NoStream, events(2))
            .await
            .unwrap();
    }
    // Neighbours whose names share a prefix must not show up.
    for (domain, entity) in [
        ("Shop", "Order"),
        ("Shop", "Carts"),
        ("Shop", "Car"),
        ("Shops", "Cart"),
        ("Sho", "Cart"),
        ("Bank", "Cart"),
    ] {
        let other = StreamId::new(domain, entity, "cart-0").unwrap();
        store.append(&other, NoStream, events(1)).await.unwrap();
    }
    let views = f.views();
    for store in views.iter().map(|s| &**s) {
        let pages = all_pages(store, DOMAIN, ENTITY, 3).await;
        assert_eq!(
            pages,
            vec![
                names[..3].to_vec(),
                names[3..6].to_vec(),
                names[6..].to_vec()
            ]
        );
        for size in [7, 100] {
            let one = store
                .list_streams(&entity_type(), None, size)
                .await
                .unwrap();
            assert_eq!(
                (one.instances, one.continuation),
                (names.clone(), None),
                "{size}"
            );
        }
        let order = store
            .list_streams(&EntityType::from_static("Shop", "Order"), None, 10)
            .await
            .unwrap();
        assert_eq!(order.instances, vec!["cart-0".to_owned()]);
        assert!(all_pages(store, "Nope", ENTITY, 10)
            .await
            .concat()
            .is_empty());
        // A name no stream can have is no entity type: it never reaches a backend.
        for (domain, entity) in [
            ("Shop|Cart", "x"),
            ("Shop", "Cart/cart-0"),
            ("Shop", "Cart|"),
            ("", ENTITY),
        ] {
            assert!(
                EntityType::new(domain, entity).is_err(),
                "{domain:?} {entity:?}"
            );
        }
        // A continuation no page could have returned is refused, not passed on to storage.
        for token in ["bad\u{1}token".to_owned(), "x".repeat(5_000)] {
            match store.list_streams(&entity_type(), Some(&token), 10).await {
                Err(StoreError::InvalidContinuation { continuation, .. }) => {
                    assert_eq!(continuation, token)
                }
                other => panic!("continuation {token:?}: {other:?}"),
            }
        }
    }
}

/// Many writers in several processes, each appending with the version it just read: every
/// acknowledged event is stored once, at the sequence it was acknowledged with, and nothing
/// else is stored.
pub async fn concurrent_exact_writers_leave_no_gap(f: &Fixture) {
    const VIEWS: usize = 4;
    const WRITERS: usize = 32;
    const APPENDS: usize = 2;
    const MAX_TRIES: usize = 500;
    let s = stream("contended");
    let views: Vec<Arc<dyn EventStore>> = (0..VIEWS).map(|_| (f.reopen)()).collect();
    let mut tasks = Vec::new();
    for writer in 0..WRITERS {
        let store = views[writer % VIEWS].clone();
        let s = s.clone();
        tasks.push(tokio::spawn(async move {
            let mut acked = Vec::new();
            for n in 0..APPENDS {
                let e = event("Tick", &format!(r#"{{"writer":{writer},"n":{n}}}"#));
                for tries in 1.. {
                    assert!(tries <= MAX_TRIES, "writer {writer} starved");
                    let v = store.version(&s).await.unwrap();
                    match store.append(&s, Exact(v), vec![e.clone()]).await {
                        Ok(outcome) => {
                            assert!(!outcome.duplicate);
                            assert_eq!((outcome.first_sequence, outcome.version), (v + 1, v + 1));
                            acked.push((e.event_id, outcome.version));
                            break;
                        }
                        Err(StoreError::WrongExpectedVersion { actual, .. }) => {
                            assert_ne!(actual, v, "refused although at the expected version")
                        }
                        Err(other) => panic!("writer {writer}: {other:?}"),
                    }
                }
            }
            acked
        }));
    }
    let mut acked: HashMap<Uuid, u64> = HashMap::new();
    for t in tasks {
        for (id, sequence) in t.await.unwrap() {
            assert!(acked.insert(id, sequence).is_none());
        }
    }
    let total = (WRITERS * APPENDS) as u64;
    let slice = (f.reopen)().read(&s, ReadRequest::all()).await.unwrap();
    assert_eq!(
        (slice.version, sequences(&slice)),
        (total, (1..=total).collect())
    );
    let stored: HashMap<Uuid, u64> = slice
        .events
        .iter()
        .map(|e| (e.event_id, e.sequence))
        .collect();
    assert_eq!(
        stored.len(),
        slice.events.len(),
        "an event id is stored twice"
    );
    assert_eq!(stored, acked);
}

/// Appends without an exact expectation (`Any`, `Exists`) from several processes at once, many
/// more than any store could serve without conflicts: every one lands, once, its events
/// together at the sequences it was acknowledged with, and the times recorded never go back.
pub async fn concurrent_any_appends_all_land_once(f: &Fixture) {
    const VIEWS: usize = 4;
    const WRITERS: usize = 96;
    let s = stream("any");
    f.store.append(&s, NoStream, events(1)).await.unwrap();
    let views: Vec<Arc<dyn EventStore>> = std::iter::once(f.store.clone())
        .chain((1..VIEWS).map(|_| (f.reopen)()))
        .collect();
    let mut tasks = Vec::new();
    for writer in 0..WRITERS {
        let store = views[writer % VIEWS].clone();
        let s = s.clone();
        let expected = if writer % 3 == 0 { Exists } else { Any };
        tasks.push(tokio::spawn(async move {
            let batch = events(1 + writer % 3);
            let ids = ids(&batch);
            let outcome = store.append(&s, expected, batch).await;
            (writer, ids, outcome)
        }));
    }
    let mut acked = Vec::new();
    for t in tasks {
        let (writer, ids, outcome) = t.await.unwrap();
        let outcome = outcome.unwrap_or_else(|e| panic!("writer {writer}: {e:?}"));
        assert!(!outcome.duplicate && !outcome.created, "writer {writer}");
        assert_eq!(
            outcome.version - outcome.first_sequence + 1,
            ids.len() as u64
        );
        acked.push((outcome.first_sequence, ids));
    }
    let total = 1 + acked.iter().map(|(_, ids)| ids.len()).sum::<usize>();
    let reader = (f.reopen)();
    let stored = contiguous(&*reader, &s).await;
    assert_eq!(stored.len(), total, "every append landed once");
    for (first, ids) in acked {
        let at = first as usize - 1;
        assert_eq!(stored[at..at + ids.len()], ids[..], "the append at {first}");
    }
    let slice = reader.read(&s, ReadRequest::all()).await.unwrap();
    assert!(slice
        .events
        .windows(2)
        .all(|w| w[0].timestamp <= w[1].timestamp));
}

/// Reads in other processes while a writer appends: every read sees events 1..=version (or,
/// catching up, the events after the last one it saw), never a gap, never a version that goes
/// back.
pub async fn reads_racing_appends_see_events_one_to_version(f: &Fixture) {
    const APPENDS: u64 = 40;
    let s = stream("racing");
    let writer = {
        let (store, s) = (f.store.clone(), s.clone());
        tokio::spawn(async move {
            for version in 0..APPENDS {
                store.append(&s, Exact(version), events(1)).await.unwrap();
            }
        })
    };
    let (whole, catching_up) = ((f.reopen)(), (f.reopen)());
    let (mut last_version, mut seen) = (0, 0);
    loop {
        let finished = writer.is_finished();
        let slice = whole.read(&s, ReadRequest::all()).await.unwrap();
        assert_eq!(sequences(&slice), (1..=slice.version).collect::<Vec<_>>());
        assert!(slice.version >= last_version, "the version went back");
        last_version = slice.version;
        let version = whole.version(&s).await.unwrap();
        assert!(version >= last_version, "the version went back");

        let tail = catching_up
            .read(&s, ReadRequest::after(seen))
            .await
            .unwrap();
        assert!(tail.version >= seen, "the version went back");
        assert_eq!(
            sequences(&tail),
            (seen + 1..=tail.version).collect::<Vec<_>>()
        );
        seen = tail.version;
        if finished {
            break;
        }
        tokio::task::yield_now().await;
    }
    writer.await.unwrap();
    assert_eq!((last_version, seen), (APPENDS, APPENDS));
}

/// The errors of an append refused by a tombstone.
fn assert_erased(result: Result<streamfold::stream::AppendOutcome, StoreError>, what: &str) {
    match result {
        Err(StoreError::StreamErased { .. }) => {}
        other => panic!("{what}: expected StreamErased, got {other:?}"),
    }
}

pub async fn an_erased_stream_is_gone_and_its_tombstone_refuses_every_writer(f: &Fixture) {
    use streamfold::stream::Erasure;
    let s = stream("erased");
    let kept = stream("kept");
    let first = events(2);
    f.store.append(&s, NoStream, first.clone()).await.unwrap();
    f.store.append(&s, Exact(2), events(3)).await.unwrap();
    f.store.append(&kept, NoStream, events(1)).await.unwrap();
    // Another process that read the stream before it was erased, and keeps what it learnt.
    let stale = (f.reopen)();
    assert_eq!(stale.read(&s, ReadRequest::all()).await.unwrap().version, 5);

    assert_eq!(
        f.store.erase(&s).await.unwrap(),
        Erasure::Erased {
            version: 5,
            resumed: false
        }
    );
    for store in f.views().into_iter().chain([stale.clone()]) {
        assert!(store.is_erased(&s).await.unwrap());
        assert!(!store.is_erased(&kept).await.unwrap());
        assert_eq!(store.version(&s).await.unwrap(), 0, "readers see no stream");
        let slice = store.read(&s, ReadRequest::all()).await.unwrap();
        assert_eq!((slice.version, slice.events.len()), (0, 0));
        let as_of = ReadRequest::all().as_of(time::OffsetDateTime::now_utc());
        assert_eq!(store.read(&s, as_of).await.unwrap().events.len(), 0);
        assert_eq!(listed(&*store).await, vec!["kept".to_owned()]);
        for expected in [NoStream, Exact(0), Exact(5), Exact(2), Any, Exists] {
            assert_erased(
                store.append(&s, expected, events(1)).await,
                &format!("{expected}"),
            );
        }
        // Not even a retry of the stream's first append brings it back.
        assert_erased(store.append(&s, NoStream, first.clone()).await, "retry");
        assert_eq!(store.version(&s).await.unwrap(), 0);
    }
    // Asked again (an erasure that was interrupted, or a retried request): finished, the same.
    assert_eq!(
        (f.reopen)().erase(&s).await.unwrap(),
        Erasure::Erased {
            version: 5,
            resumed: true
        }
    );
    // Other streams are untouched; a stream that never existed is not found, and stays free.
    assert_eq!(contiguous(&*f.store, &kept).await.len(), 1);
    let never = stream("never");
    assert_eq!(f.store.erase(&never).await.unwrap(), Erasure::NotFound);
    assert!(!f.store.is_erased(&never).await.unwrap());
    f.store.append(&never, NoStream, events(1)).await.unwrap();
}

pub async fn erasing_a_long_stream_leaves_nothing_of_it(f: &Fixture) {
    use streamfold::stream::Erasure;
    let s = stream("long");
    // More rows than one query page and one transaction hold (Table: two rows per event).
    let mut version = 0;
    while version < 600 {
        let outcome = f
            .store
            .append(&s, Exact(version), events(40))
            .await
            .unwrap();
        version = outcome.version;
    }
    assert_eq!(
        f.store.erase(&s).await.unwrap(),
        Erasure::Erased {
            version,
            resumed: false
        }
    );
    for store in f.views() {
        assert_eq!(store.read(&s, ReadRequest::all()).await.unwrap().version, 0);
        assert_erased(store.append(&s, Any, events(1)).await, "any");
    }
}
