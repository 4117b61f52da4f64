//! The storage contract, written once and run against every backend (memory, Table storage,
//! Append Blobs — see `tests/conformance_*.rs`). A backend is conformant when every case here
//! passes on a fresh, empty store.
#![allow(dead_code)]

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;
use std::time::Duration;

use serde_json::value::RawValue;
use streamfold::stream::ExpectedVersion::{self, Any, Exact, Exists, NoStream};
use streamfold::stream::{EventMetadata, EventStore, NewEvent, ReadRequest, StoreError, StreamId};

/// Whether one event fits a backend's per-event limit (computed, no I/O).
pub type Fits = Box<dyn Fn(&StreamId, &NewEvent) -> bool + Send + Sync>;

/// A fresh, empty store of one backend, and what the cases need to know of its limits.
pub struct Fixture {
    pub store: Arc<dyn EventStore>,
    /// The backend's per-event limit; `None` = no limit.
    pub fits: Option<Fits>,
    /// Whatever must live as long as the store (an Azurite process).
    pub guard: Box<dyn std::any::Any + Send>,
}

/// Expands to one `#[tokio::test]` per case for the fixture made by `$make` (an async fn).
#[macro_export]
macro_rules! conformance_suite {
    ($make:path) => {
        $crate::conformance_suite!(@cases $make;
            expectations_against_a_missing_stream,
            expectations_against_an_existing_stream,
            multi_event_appends_are_atomic,
            retries_with_the_same_event_ids_are_idempotent,
            reads_by_range_and_as_of_a_time,
            data_and_metadata_round_trip_exactly,
            the_largest_event_fits_and_the_next_is_refused,
            invalid_appends_write_nothing,
            awkward_keys_are_distinct_streams,
            listing_pages_through_one_entity_type,
            concurrent_exact_writers_leave_no_gap,
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

pub fn stream(instance: &str) -> StreamId {
    StreamId::new("Shop", "Cart", instance).unwrap()
}

pub fn event(event_type: &str, data: &str) -> NewEvent {
    NewEvent::from_raw(event_type, RawValue::from_string(data.to_owned()).unwrap())
}

fn events(n: usize) -> Vec<NewEvent> {
    (0..n)
        .map(|i| event("Added", &format!(r#"{{"i":{i}}}"#)))
        .collect()
}

fn assert_wrong_version(
    result: Result<impl std::fmt::Debug, StoreError>,
    expected: ExpectedVersion,
    actual: u64,
) {
    match result {
        Err(StoreError::WrongExpectedVersion {
            expected: e,
            actual: a,
            ..
        }) => {
            assert_eq!(e, expected);
            assert_eq!(a, actual, "actual version reported for {expected}");
        }
        other => panic!("expected WrongExpectedVersion({expected}, {actual}), got {other:?}"),
    }
}

async fn version(f: &Fixture, s: &StreamId) -> u64 {
    f.store.version(s).await.unwrap()
}

pub async fn expectations_against_a_missing_stream(f: &Fixture) {
    let store = &f.store;
    let s = stream("missing");
    assert_wrong_version(store.append(&s, Exists, events(1)).await, Exists, 0);
    assert_wrong_version(store.append(&s, Exact(3), events(1)).await, Exact(3), 0);
    assert_eq!(version(f, &s).await, 0, "refused appends wrote nothing");

    let created = store.append(&s, NoStream, events(2)).await.unwrap();
    assert_eq!((created.first_sequence, created.version), (1, 2));
    assert!(created.created && !created.duplicate);

    let s2 = stream("missing-any");
    let any = store.append(&s2, Any, events(1)).await.unwrap();
    assert_eq!(any.version, 1);
    assert!(any.created);
    let s3 = stream("missing-exact-zero");
    assert_eq!(
        store
            .append(&s3, Exact(0), events(1))
            .await
            .unwrap()
            .version,
        1
    );
}

pub async fn expectations_against_an_existing_stream(f: &Fixture) {
    let store = &f.store;
    let s = stream("existing");
    store.append(&s, NoStream, events(2)).await.unwrap();
    assert_wrong_version(store.append(&s, NoStream, events(1)).await, NoStream, 2);
    assert_wrong_version(store.append(&s, Exact(0), events(1)).await, Exact(0), 2);
    assert_wrong_version(store.append(&s, Exact(1), events(1)).await, Exact(1), 2);
    assert_wrong_version(store.append(&s, Exact(5), events(1)).await, Exact(5), 2);
    assert_eq!(version(f, &s).await, 2);

    let exact = store.append(&s, Exact(2), events(1)).await.unwrap();
    assert_eq!(
        (exact.first_sequence, exact.version, exact.created),
        (3, 3, false)
    );
    assert_eq!(
        store.append(&s, Exists, events(1)).await.unwrap().version,
        4
    );
    assert_eq!(store.append(&s, Any, events(2)).await.unwrap().version, 6);
    let slice = store.read(&s, ReadRequest::all()).await.unwrap();
    let sequences: Vec<u64> = slice.events.iter().map(|e| e.sequence).collect();
    assert_eq!(sequences, vec![1, 2, 3, 4, 5, 6]);
}

pub async fn multi_event_appends_are_atomic(f: &Fixture) {
    let store = &f.store;
    let s = stream("atomic");
    let outcome = store.append(&s, NoStream, events(5)).await.unwrap();
    assert_eq!((outcome.first_sequence, outcome.version), (1, 5));
    // A conflicting multi-event append writes none of its events.
    assert_wrong_version(store.append(&s, Exact(3), events(4)).await, Exact(3), 5);
    let slice = store.read(&s, ReadRequest::all()).await.unwrap();
    assert_eq!(slice.version, 5);
    assert_eq!(slice.events.len(), 5);
    let next = store.append(&s, Exact(5), events(3)).await.unwrap();
    assert_eq!((next.first_sequence, next.version), (6, 8));
    let all = store.read(&s, ReadRequest::all()).await.unwrap();
    for (i, e) in all.events.iter().enumerate() {
        assert_eq!(e.sequence, i as u64 + 1);
    }
    // One append shares one timestamp.
    assert!(all.events[5..]
        .iter()
        .all(|e| e.timestamp == all.events[5].timestamp));
}

pub async fn retries_with_the_same_event_ids_are_idempotent(f: &Fixture) {
    let store = &f.store;
    let s = stream("idempotent");
    store.append(&s, NoStream, events(1)).await.unwrap();
    let batch = events(2);
    let first = store.append(&s, Exact(1), batch.clone()).await.unwrap();
    assert_eq!(
        (first.first_sequence, first.version, first.duplicate),
        (2, 3, false)
    );
    // The retry of a timed-out call: same ids, same (now stale) expectation.
    let retry = store.append(&s, Exact(1), batch.clone()).await.unwrap();
    assert_eq!(
        (retry.first_sequence, retry.version, retry.duplicate),
        (2, 3, true)
    );
    let retry_any = store.append(&s, Any, batch.clone()).await.unwrap();
    assert!(retry_any.duplicate);
    assert_eq!(version(f, &s).await, 3, "stored once");

    // Reusing one id of an earlier append for something else is refused.
    let mut reuse = events(2);
    reuse[0].event_id = batch[0].event_id;
    match store.append(&s, Any, reuse).await {
        Err(StoreError::EventIdReused { event_id, .. }) => assert_eq!(event_id, batch[0].event_id),
        other => panic!("expected EventIdReused, got {other:?}"),
    }
    let part = vec![batch[1].clone()];
    assert!(matches!(
        store.append(&s, Any, part).await,
        Err(StoreError::EventIdReused { .. })
    ));
    assert_eq!(version(f, &s).await, 3);
}

pub async fn reads_by_range_and_as_of_a_time(f: &Fixture) {
    let store = &f.store;
    let s = stream("reads");
    store.append(&s, NoStream, events(3)).await.unwrap();
    tokio::time::sleep(Duration::from_millis(30)).await;
    let between = time::OffsetDateTime::now_utc();
    tokio::time::sleep(Duration::from_millis(30)).await;
    store.append(&s, Exact(3), events(3)).await.unwrap();

    let seqs = |slice: &streamfold::stream::StreamSlice| -> Vec<u64> {
        slice.events.iter().map(|e| e.sequence).collect()
    };
    let range = store
        .read(&s, ReadRequest::range(2, Some(4)))
        .await
        .unwrap();
    assert_eq!((range.version, seqs(&range)), (6, vec![2, 3, 4]));
    let tail = store.read(&s, ReadRequest::after(4)).await.unwrap();
    assert_eq!(seqs(&tail), vec![5, 6]);
    let past = store.read(&s, ReadRequest::after(6)).await.unwrap();
    assert_eq!((past.version, past.events.len()), (6, 0));
    let far = store.read(&s, ReadRequest::range(100, None)).await.unwrap();
    assert_eq!((far.version, far.events.len()), (6, 0));
    let as_of = store
        .read(&s, ReadRequest::all().as_of(between))
        .await
        .unwrap();
    assert_eq!(seqs(&as_of), vec![1, 2, 3]);
    let long_ago = time::OffsetDateTime::UNIX_EPOCH;
    assert!(store
        .read(&s, ReadRequest::all().as_of(long_ago))
        .await
        .unwrap()
        .events
        .is_empty());
    let missing = store
        .read(&stream("nobody"), ReadRequest::all())
        .await
        .unwrap();
    assert_eq!((missing.version, missing.events.len()), (0, 0));
}

pub async fn data_and_metadata_round_trip_exactly(f: &Fixture) {
    let store = &f.store;
    let s = stream("exact");
    let texts = [
        r#"{"amount": 0.10000000000000000001, "big": 123456789012345678901234567890}"#,
        r#"{"nested":{"list":[1,"two",{"three":3.0}],"unicode":"ünïcödé ✓ \u00e9"},"empty":{}}"#,
        r#"[1, 2, 3]"#,
        r#""a string""#,
        r#"null"#,
    ];
    let metadata = EventMetadata {
        correlation_id: Some("corr-1".into()),
        causation_id: Some("cause-1".into()),
        who: Some("alice@example.com".into()),
        source: Some("conformance".into()),
        commentary: Some("line one, 'quoted', \"double\" & more".into()),
        schema_version: Some(3),
    };
    let written: Vec<NewEvent> = texts
        .iter()
        .map(|t| event("Stored.v1-x_y", t).with_metadata(metadata.clone()))
        .collect();
    store.append(&s, NoStream, written.clone()).await.unwrap();
    let slice = store.read(&s, ReadRequest::all()).await.unwrap();
    for (read, written) in slice.events.iter().zip(&written) {
        assert_eq!(read.data.get(), written.data.get(), "data byte for byte");
        assert_eq!(read.event_id, written.event_id);
        assert_eq!(read.event_type, "Stored.v1-x_y");
        assert_eq!(read.metadata, metadata);
    }
}

pub async fn the_largest_event_fits_and_the_next_is_refused(f: &Fixture) {
    let Some(fits) = &f.fits else {
        return; // no per-event limit on this backend
    };
    let s = stream("largest");
    let sized = |len: usize| event("Big", &format!("\"{}\"", "x".repeat(len.saturating_sub(2))));
    let (mut lo, mut hi) = (2usize, 64 * 1024 * 1024);
    assert!(!fits(&s, &sized(hi)), "the limit is below 64 MiB");
    while lo + 1 < hi {
        let mid = (lo + hi) / 2;
        if fits(&s, &sized(mid)) {
            lo = mid;
        } else {
            hi = mid;
        }
    }
    let largest = sized(lo);
    f.store
        .append(&s, NoStream, vec![largest.clone()])
        .await
        .unwrap();
    let slice = f.store.read(&s, ReadRequest::all()).await.unwrap();
    assert_eq!(slice.events[0].data.get(), largest.data.get());
    match f.store.append(&s, Exact(1), vec![sized(hi)]).await {
        Err(StoreError::EventTooLarge { size, limit, .. }) => assert!(size > limit),
        other => panic!("expected EventTooLarge, got {other:?}"),
    }
    assert_eq!(version(f, &s).await, 1);
}

pub async fn invalid_appends_write_nothing(f: &Fixture) {
    let store = &f.store;
    let s = stream("invalid");
    assert!(matches!(
        store.append(&s, Any, vec![]).await,
        Err(StoreError::EmptyAppend)
    ));
    let bad_type = vec![event("Good", "{}"), event("bad type", "{}")];
    assert!(matches!(
        store.append(&s, Any, bad_type).await,
        Err(StoreError::InvalidEvent { .. })
    ));
    let e = event("Twice", "{}");
    assert!(matches!(
        store.append(&s, Any, vec![e.clone(), e]).await,
        Err(StoreError::InvalidEvent { .. })
    ));
    assert_eq!(version(f, &s).await, 0);
    assert!(store
        .list_streams("Shop", "Cart", None, 10)
        .await
        .unwrap()
        .instances
        .is_empty());
    // Keys are validated before a stream id exists at all.
    for bad in ["a/b", "a\\b", "a#b", "a?b", "a\u{0}b", "a\u{7f}b", ""] {
        assert!(StreamId::new("Shop", "Cart", bad).is_err(), "{bad:?}");
    }
}

pub async fn awkward_keys_are_distinct_streams(f: &Fixture) {
    let store = &f.store;
    let keys = [
        "O'Brien",
        "''",
        "50%",
        "%25",
        "a+b c",
        "x&y=z",
        "ünï",
        "Abc",
        "abc",
        "a.b",
        "~tilde",
        "(1)",
        "emoji 🦀",
    ];
    for (i, key) in keys.iter().enumerate() {
        let s = stream(key);
        let data = format!(r#"{{"key":{}}}"#, serde_json::to_string(key).unwrap());
        let n = i + 1;
        let batch: Vec<NewEvent> = (0..n).map(|_| event("Keyed", &data)).collect();
        store.append(&s, NoStream, batch).await.unwrap();
    }
    for (i, key) in keys.iter().enumerate() {
        let slice = store.read(&stream(key), ReadRequest::all()).await.unwrap();
        assert_eq!(slice.version, i as u64 + 1, "{key:?} is its own stream");
        let data: serde_json::Value = serde_json::from_str(slice.events[0].data.get()).unwrap();
        assert_eq!(data["key"], *key);
    }
    let mut listed = BTreeSet::new();
    let mut continuation = None;
    loop {
        let page = store
            .list_streams("Shop", "Cart", continuation.as_deref(), 4)
            .await
            .unwrap();
        listed.extend(page.instances);
        match page.continuation {
            Some(c) => continuation = Some(c),
            None => break,
        }
    }
    let expected: BTreeSet<String> = keys.iter().map(|k| k.to_string()).collect();
    assert_eq!(listed, expected);
}

pub async fn listing_pages_through_one_entity_type(f: &Fixture) {
    let store = &f.store;
    for i in 0..7 {
        store
            .append(&stream(&format!("cart-{i}")), NoStream, events(1))
            .await
            .unwrap();
    }
    for (domain, entity) in [
        ("Shop", "Order"),
        ("Shop", "Carts"),
        ("Shops", "Cart"),
        ("Bank", "Cart"),
    ] {
        let other = StreamId::new(domain, entity, "x").unwrap();
        store.append(&other, NoStream, events(1)).await.unwrap();
    }
    let mut pages = Vec::new();
    let mut continuation = None;
    loop {
        let page = store
            .list_streams("Shop", "Cart", continuation.as_deref(), 3)
            .await
            .unwrap();
        assert!(page.instances.len() <= 3);
        pages.push(page.instances);
        match page.continuation {
            Some(c) => continuation = Some(c),
            None => break,
        }
    }
    let all: Vec<String> = pages.concat();
    let expected: Vec<String> = (0..7).map(|i| format!("cart-{i}")).collect();
    let mut sorted = all.clone();
    sorted.sort();
    assert_eq!(
        sorted, expected,
        "every instance once, no other entity type's"
    );
    assert!(pages.len() >= 3);
    let one = store.list_streams("Shop", "Order", None, 10).await.unwrap();
    assert_eq!(one.instances, vec!["x".to_owned()]);
    assert!(one.continuation.is_none());
}

pub async fn concurrent_exact_writers_leave_no_gap(f: &Fixture) {
    const WRITERS: usize = 16;
    const APPENDS: usize = 3;
    let s = stream("contended");
    let mut tasks = Vec::new();
    for _ in 0..WRITERS {
        let store = f.store.clone();
        let s = s.clone();
        tasks.push(tokio::spawn(async move {
            let mut acked = HashMap::new();
            while acked.len() < APPENDS {
                let v = store.version(&s).await.unwrap();
                let e = event("Tick", "{}");
                let id = e.event_id;
                match store.append(&s, Exact(v), vec![e]).await {
                    Ok(outcome) => {
                        assert_eq!(outcome.version, v + 1);
                        acked.insert(id, outcome.version);
                    }
                    Err(StoreError::WrongExpectedVersion { .. }) => {}
                    Err(other) => panic!("{other:?}"),
                }
            }
            acked
        }));
    }
    let mut acked = HashMap::new();
    for t in tasks {
        acked.extend(t.await.unwrap());
    }
    let slice = f.store.read(&s, ReadRequest::all()).await.unwrap();
    assert_eq!(slice.events.len(), WRITERS * APPENDS);
    for (i, e) in slice.events.iter().enumerate() {
        assert_eq!(e.sequence, i as u64 + 1);
        assert_eq!(acked.get(&e.event_id), Some(&e.sequence));
    }
}
