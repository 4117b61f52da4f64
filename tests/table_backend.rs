//! The Table storage backend against a real Azurite: expectations, atomicity, idempotent
//! retries, reads, data fidelity, size limits, awkward keys, listing, an outage and concurrent
//! writers. Each test starts its own Azurite and uses its own table.

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;
use std::time::Duration;

use serde_json::value::RawValue;
use streamfold::storage::table::{
    TableStore, MAX_ENTITY_BYTES, MAX_EVENTS_PER_APPEND, MAX_TRANSACTION_BYTES,
};
use streamfold::storage::StorageAccount;
use streamfold::stream::{
    EventMetadata, EventStore, ExpectedVersion, NewEvent, ReadRequest, StoreError, StreamId,
};
use streamfold_testbed::Azurite;
use uuid::Uuid;

use ExpectedVersion::{Any, Exact, Exists, NoStream};

/// Generous bound on an operation against a stopped emulator: it must fail, not hang.
const OUTAGE_BOUND: Duration = Duration::from_secs(30);

async fn setup() -> (Azurite, TableStore) {
    let azurite = Azurite::start().await.expect("Azurite starts");
    let account = StorageAccount::from_connection_string(&azurite.connection_string()).unwrap();
    let table = format!("t{}", Uuid::new_v4().simple());
    (azurite, TableStore::new(account).with_table_name(table))
}

fn stream(instance: &str) -> StreamId {
    StreamId::new("Bank", "Account", instance).unwrap()
}

fn event(data: &str) -> NewEvent {
    NewEvent::from_raw("Deposited", RawValue::from_string(data.to_owned()).unwrap())
}

fn events(n: usize) -> Vec<NewEvent> {
    (0..n).map(|i| event(&format!(r#"{{"n":{i}}}"#))).collect()
}

#[track_caller]
fn assert_wrong(
    result: Result<impl std::fmt::Debug, StoreError>,
    want: ExpectedVersion,
    have: u64,
) {
    match result {
        Err(StoreError::WrongExpectedVersion {
            expected, actual, ..
        }) => {
            assert_eq!(expected, want);
            assert_eq!(actual, have);
        }
        other => panic!("expected WrongExpectedVersion({want}, {have}), got {other:?}"),
    }
}

#[tokio::test]
async fn expectations_against_a_missing_stream() {
    let (_azurite, store) = setup().await;
    let s = stream("missing");
    for expected in [Exists, Exact(1), Exact(5)] {
        assert_wrong(store.append(&s, expected, events(1)).await, expected, 0);
    }
    assert_eq!(store.version(&s).await.unwrap(), 0);
    let slice = store.read(&s, ReadRequest::all()).await.unwrap();
    assert_eq!((slice.version, slice.events.len()), (0, 0));

    for (instance, expected) in [("a", NoStream), ("b", Exact(0)), ("c", Any)] {
        let outcome = store
            .append(&stream(instance), expected, events(2))
            .await
            .unwrap();
        assert_eq!(outcome.first_sequence, 1, "{expected}");
        assert_eq!(outcome.version, 2);
        assert!(outcome.created && !outcome.duplicate);
        assert_eq!(store.version(&stream(instance)).await.unwrap(), 2);
    }
}

#[tokio::test]
async fn expectations_against_an_existing_stream() {
    let (_azurite, store) = setup().await;
    let s = stream("existing");
    store.append(&s, NoStream, events(2)).await.unwrap();
    for expected in [NoStream, Exact(0), Exact(1), Exact(3), Exact(100)] {
        assert_wrong(store.append(&s, expected, events(1)).await, expected, 2);
    }
    let outcome = store.append(&s, Exact(2), events(1)).await.unwrap();
    assert_eq!((outcome.first_sequence, outcome.version), (3, 3));
    assert!(!outcome.created && !outcome.duplicate);
    let outcome = store.append(&s, Any, events(2)).await.unwrap();
    assert_eq!((outcome.first_sequence, outcome.version), (4, 5));
    let outcome = store.append(&s, Exists, events(1)).await.unwrap();
    assert_eq!((outcome.first_sequence, outcome.version), (6, 6));
    assert_wrong(store.append(&s, Exact(5), events(1)).await, Exact(5), 6);

    let slice = store.read(&s, ReadRequest::all()).await.unwrap();
    assert_eq!(slice.version, 6);
    let sequences: Vec<u64> = slice.events.iter().map(|e| e.sequence).collect();
    assert_eq!(sequences, (1..=6).collect::<Vec<_>>());
}

#[tokio::test]
async fn appends_are_atomic_and_leave_no_gap() {
    let (_azurite, store) = setup().await;
    let s = stream("atomic");
    let first = events(5);
    let outcome = store.append(&s, NoStream, first.clone()).await.unwrap();
    assert_eq!((outcome.first_sequence, outcome.version), (1, 5));

    // Conflicting appends of several events write nothing.
    assert_wrong(store.append(&s, Exact(3), events(4)).await, Exact(3), 5);
    assert_wrong(store.append(&s, Exact(7), events(4)).await, Exact(7), 5);
    // An append whose last event reuses an id fails as a whole.
    let mut mixed = events(3);
    mixed[2].event_id = first[0].event_id;
    assert!(matches!(
        store.append(&s, Exact(5), mixed).await,
        Err(StoreError::EventIdReused { event_id, .. }) if event_id == first[0].event_id
    ));

    let outcome = store.append(&s, Exact(5), events(3)).await.unwrap();
    assert_eq!((outcome.first_sequence, outcome.version), (6, 8));
    let slice = store.read(&s, ReadRequest::all()).await.unwrap();
    let sequences: Vec<u64> = slice.events.iter().map(|e| e.sequence).collect();
    assert_eq!(sequences, (1..=8).collect::<Vec<_>>());
    // Events of one append share one timestamp.
    assert!(slice.events[..5]
        .iter()
        .all(|e| e.timestamp == slice.events[0].timestamp));
}

#[tokio::test]
async fn retries_with_the_same_ids_are_idempotent() {
    let (_azurite, store) = setup().await;
    let s = stream("idempotent");
    let batch = events(3);
    let outcome = store.append(&s, NoStream, batch.clone()).await.unwrap();
    assert!(!outcome.duplicate);

    for expected in [NoStream, Exact(0), Exact(3), Any, Exists] {
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
    }
    let later = store.append(&s, Exact(3), events(2)).await.unwrap();
    assert_eq!(later.version, 5);
    let retry = store.append(&s, Exact(0), batch.clone()).await.unwrap();
    assert_eq!(
        (retry.first_sequence, retry.version, retry.duplicate),
        (1, 3, true)
    );

    // Overlapping ids: part of an earlier append, or mixed with new ones.
    let mut overlap = events(2);
    overlap[0].event_id = batch[2].event_id;
    for attempt in [overlap, batch[..2].to_vec()] {
        for expected in [Exact(5), Any] {
            assert!(
                matches!(
                    store.append(&s, expected, attempt.clone()).await,
                    Err(StoreError::EventIdReused { .. })
                ),
                "{expected}"
            );
        }
    }
    assert_eq!(store.version(&s).await.unwrap(), 5);
    // The ids belong to this stream only: another stream may use them.
    let other = store
        .append(&stream("other"), NoStream, batch)
        .await
        .unwrap();
    assert!(!other.duplicate);
}

#[tokio::test]
async fn range_and_as_of_reads() {
    let (_azurite, store) = setup().await;
    let s = stream("reads");
    store.append(&s, NoStream, events(2)).await.unwrap();
    tokio::time::sleep(Duration::from_millis(20)).await;
    store.append(&s, Exact(2), events(2)).await.unwrap();
    tokio::time::sleep(Duration::from_millis(20)).await;
    store.append(&s, Exact(4), events(2)).await.unwrap();

    let all = store.read(&s, ReadRequest::all()).await.unwrap();
    assert_eq!(all.version, 6);
    let seqs = |r: &streamfold::stream::StreamSlice| {
        r.events.iter().map(|e| e.sequence).collect::<Vec<_>>()
    };
    let range = store
        .read(&s, ReadRequest::range(2, Some(4)))
        .await
        .unwrap();
    assert_eq!((range.version, seqs(&range)), (6, vec![2, 3, 4]));
    let after = store.read(&s, ReadRequest::after(4)).await.unwrap();
    assert_eq!(seqs(&after), vec![5, 6]);
    let beyond = store.read(&s, ReadRequest::range(7, None)).await.unwrap();
    assert_eq!((beyond.version, seqs(&beyond)), (6, vec![]));
    let inverted = store
        .read(&s, ReadRequest::range(5, Some(2)))
        .await
        .unwrap();
    assert_eq!((inverted.version, seqs(&inverted)), (6, vec![]));

    let second_append = all.events[2].timestamp;
    assert!(all.events[1].timestamp < second_append && second_append < all.events[4].timestamp);
    let as_of = store
        .read(&s, ReadRequest::all().as_of(second_append))
        .await
        .unwrap();
    assert_eq!((as_of.version, seqs(&as_of)), (6, vec![1, 2, 3, 4]));
    let as_of_range = store
        .read(&s, ReadRequest::range(2, Some(3)).as_of(second_append))
        .await
        .unwrap();
    assert_eq!(seqs(&as_of_range), vec![2, 3]);
    let before = store
        .read(
            &s,
            ReadRequest::all().as_of(all.events[0].timestamp - Duration::from_millis(1)),
        )
        .await
        .unwrap();
    assert_eq!((before.version, seqs(&before)), (6, vec![]));
    // Timestamps read back are the stored ones: reading again gives the same values.
    let again = store.read(&s, ReadRequest::all()).await.unwrap();
    let times = |r: &streamfold::stream::StreamSlice| {
        r.events.iter().map(|e| e.timestamp).collect::<Vec<_>>()
    };
    assert_eq!(times(&all), times(&again));
}

#[tokio::test]
async fn data_and_metadata_are_preserved_byte_for_byte() {
    let (_azurite, store) = setup().await;
    let s = stream("fidelity");
    let exact = r#"{"amount": 0.10000000000000000001,  "big": 123456789012345678901234567890, "s": "tab\there \"q\" ünï 😀"}"#;
    let large = format!(
        r#"{{"blob": "{}", "tail": 1e-400}}"#,
        "ab\u{e9}c".repeat(200 * 1024 / 5)
    );
    assert!(large.len() > 200 * 1024);
    let metadata = EventMetadata {
        correlation_id: Some("corr-1".into()),
        causation_id: Some("cause'1".into()),
        who: Some("O'Brien".into()),
        source: Some("tests".into()),
        commentary: Some("multi\nline ünï".into()),
        schema_version: Some(u32::MAX),
    };
    let sent = vec![
        event(exact).with_metadata(metadata.clone()),
        event(&large),
        event("[]"),
        event("\"\""),
    ];
    store.append(&s, NoStream, sent.clone()).await.unwrap();
    let slice = store.read(&s, ReadRequest::all()).await.unwrap();
    assert_eq!(slice.events.len(), sent.len());
    for (got, want) in slice.events.iter().zip(&sent) {
        assert_eq!(got.data.get(), want.data.get());
        assert_eq!(got.event_id, want.event_id);
        assert_eq!(got.event_type, want.event_type);
        assert_eq!(got.metadata, want.metadata);
    }
    assert_eq!(slice.events[0].metadata, metadata);
}

/// Data of `len` bytes: a JSON string of ASCII letters.
fn sized_event(len: usize) -> NewEvent {
    event(&format!("\"{}\"", "x".repeat(len - 2)))
}

#[tokio::test]
async fn the_largest_event_fits_and_the_next_is_refused() {
    let (_azurite, store) = setup().await;
    let s = stream("large");
    // The largest data length whose entity fits, by bisection over the size function.
    let (mut fits, mut too_big) = (2, 2 * MAX_ENTITY_BYTES);
    while too_big - fits > 1 {
        let mid = (fits + too_big) / 2;
        if TableStore::event_entity_size(&s, &sized_event(mid)) <= MAX_ENTITY_BYTES {
            fits = mid;
        } else {
            too_big = mid;
        }
    }
    let refused = sized_event(too_big);
    match store.append(&s, NoStream, vec![refused.clone()]).await {
        Err(StoreError::EventTooLarge {
            event_id,
            size,
            limit,
        }) => {
            assert_eq!(event_id, refused.event_id);
            assert_eq!(limit, MAX_ENTITY_BYTES);
            assert!(size > limit);
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(store.version(&s).await.unwrap(), 0);

    let largest = sized_event(fits);
    store
        .append(&s, NoStream, vec![largest.clone()])
        .await
        .unwrap();
    let slice = store.read(&s, ReadRequest::all()).await.unwrap();
    assert_eq!(slice.events[0].data.get(), largest.data.get());

    // Several large events: over the transaction's byte limit, refused whole.
    let count = MAX_TRANSACTION_BYTES / fits + 1;
    let heavy: Vec<NewEvent> = (0..count).map(|_| sized_event(fits)).collect();
    match store.append(&s, Exact(1), heavy).await {
        Err(StoreError::AppendTooLarge { events, bytes, .. }) => {
            assert_eq!(events, count);
            assert!(bytes > MAX_TRANSACTION_BYTES);
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(store.version(&s).await.unwrap(), 1);
}

#[tokio::test]
async fn too_many_events_are_refused_before_any_write() {
    let (_azurite, store) = setup().await;
    let s = stream("many");
    match store
        .append(&s, NoStream, events(MAX_EVENTS_PER_APPEND + 1))
        .await
    {
        Err(StoreError::AppendTooLarge { events, .. }) => {
            assert_eq!(events, MAX_EVENTS_PER_APPEND + 1)
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(store.version(&s).await.unwrap(), 0);
    let page = store
        .list_streams("Bank", "Account", None, 10)
        .await
        .unwrap();
    assert!(page.instances.is_empty());

    let outcome = store
        .append(&s, NoStream, events(MAX_EVENTS_PER_APPEND))
        .await
        .unwrap();
    assert_eq!(outcome.version, MAX_EVENTS_PER_APPEND as u64);
    // A retry of the full-size append is recognised (the id lookup is split into queries).
    let mut retry = events(MAX_EVENTS_PER_APPEND);
    let slice = store.read(&s, ReadRequest::all()).await.unwrap();
    for (r, e) in retry.iter_mut().zip(&slice.events) {
        r.event_id = e.event_id;
    }
    assert!(store.append(&s, Any, retry).await.unwrap().duplicate);

    assert!(matches!(
        store.append(&s, Any, vec![]).await,
        Err(StoreError::EmptyAppend)
    ));
    let twice = event("1");
    assert!(matches!(
        store.append(&s, Any, vec![twice.clone(), twice]).await,
        Err(StoreError::InvalidEvent { .. })
    ));
}

#[tokio::test]
async fn awkward_instance_keys_work_everywhere() {
    let (_azurite, store) = setup().await;
    let keys = [
        "O'Brien", "50%", "a+b c", "x&y=z", "ünï", "'", "''", "%25", "a%2Fb", "(x),y", "日本",
        "e=mc²;",
    ];
    for key in keys {
        let s = stream(key);
        let first = events(1);
        store.append(&s, NoStream, first.clone()).await.unwrap();
        let second = store.append(&s, Exact(1), events(1)).await.unwrap();
        assert_eq!(second.version, 2, "{key}");
        assert_eq!(store.append(&s, Any, events(1)).await.unwrap().version, 3);
        assert!(
            store.append(&s, Exact(0), first).await.unwrap().duplicate,
            "{key}"
        );
        assert_wrong(store.append(&s, Exact(2), events(1)).await, Exact(2), 3);
        assert_eq!(store.version(&s).await.unwrap(), 3, "{key}");
        let slice = store.read(&s, ReadRequest::range(2, None)).await.unwrap();
        assert_eq!(slice.events.len(), 2, "{key}");
    }
    let mut listed = Vec::new();
    let mut continuation = None;
    loop {
        let page = store
            .list_streams("Bank", "Account", continuation.as_deref(), 5)
            .await
            .unwrap();
        listed.extend(page.instances);
        match page.continuation {
            Some(c) => continuation = Some(c),
            None => break,
        }
    }
    let listed: BTreeSet<String> = listed.into_iter().collect();
    let expected: BTreeSet<String> = keys.iter().map(|k| k.to_string()).collect();
    assert_eq!(listed, expected);
}

#[tokio::test]
async fn listing_pages_through_one_entity_type() {
    let (_azurite, store) = setup().await;
    let names: Vec<String> = (0..7).map(|i| format!("acc-{i}")).collect();
    for name in &names {
        store
            .append(&stream(name), NoStream, events(2))
            .await
            .unwrap();
    }
    // Neighbours that share a prefix must not show up.
    for (domain, entity) in [
        ("Bank", "Accounts"),
        ("Bank", "Accoun"),
        ("Bank2", "Account"),
    ] {
        let other = StreamId::new(domain, entity, "acc-0").unwrap();
        store.append(&other, NoStream, events(1)).await.unwrap();
    }

    let mut pages = Vec::new();
    let mut continuation = None;
    loop {
        let page = store
            .list_streams("Bank", "Account", continuation.as_deref(), 3)
            .await
            .unwrap();
        pages.push(page.instances.clone());
        match page.continuation {
            Some(c) => continuation = Some(c),
            None => break,
        }
    }
    assert_eq!(
        pages.iter().map(Vec::len).collect::<Vec<_>>(),
        vec![3, 3, 1]
    );
    assert_eq!(pages.concat(), names);
    let one_page = store
        .list_streams("Bank", "Account", None, 100)
        .await
        .unwrap();
    assert_eq!(one_page.instances, names);
    assert!(one_page.continuation.is_none());
    let exact = store
        .list_streams("Bank", "Account", None, 7)
        .await
        .unwrap();
    assert_eq!((exact.instances.len(), exact.continuation), (7, None));
    assert!(store
        .list_streams("Nope", "Account", None, 10)
        .await
        .unwrap()
        .instances
        .is_empty());
    assert!(matches!(
        store.list_streams("Bad|", "Account", None, 10).await,
        Err(StoreError::InvalidKey(_))
    ));
}

#[tokio::test]
async fn a_storage_outage_gives_unavailable_in_bounded_time() {
    let (mut azurite, store) = setup().await;
    let s = stream("outage");
    store.append(&s, NoStream, events(1)).await.unwrap();
    azurite.stop().await;

    let append = tokio::time::timeout(OUTAGE_BOUND, store.append(&s, Exact(1), events(1)))
        .await
        .expect("an append during an outage must not hang");
    match append {
        Err(StoreError::Unavailable { maybe_applied, .. }) => {
            assert!(
                !maybe_applied,
                "a refused connection cannot have applied the write"
            )
        }
        other => panic!("{other:?}"),
    }
    let read = tokio::time::timeout(OUTAGE_BOUND, store.read(&s, ReadRequest::all()))
        .await
        .expect("a read during an outage must not hang");
    assert!(
        matches!(read, Err(StoreError::Unavailable { .. })),
        "{read:?}"
    );
    let version = tokio::time::timeout(OUTAGE_BOUND, store.version(&s))
        .await
        .expect("a version read during an outage must not hang");
    assert!(matches!(version, Err(StoreError::Unavailable { .. })));

    // A new store (table not yet created in this process) fails the same way.
    let fresh = store.clone().with_table_name("freshtable");
    let result = tokio::time::timeout(OUTAGE_BOUND, fresh.version(&s))
        .await
        .expect("must not hang");
    assert!(matches!(result, Err(StoreError::Unavailable { .. })));
}

#[tokio::test]
async fn a_wrong_key_is_misconfigured() {
    let azurite = Azurite::start().await.unwrap();
    let wrong_key = "d3Jvbmcta2V5LXdyb25nLWtleS13cm9uZy1rZXktd3Jvbmcta2V5LXdyb25nLWtleQ==";
    let connection = azurite
        .connection_string()
        .replace(streamfold_testbed::azurite::KEY, wrong_key);
    let account = StorageAccount::from_connection_string(&connection).unwrap();
    let store = TableStore::new(account).with_table_name("wrongkey");
    match store.version(&stream("x")).await {
        Err(StoreError::Misconfigured(message)) => assert!(!message.contains(wrong_key)),
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn concurrent_exact_appends_stay_contiguous() {
    const TASKS: usize = 32;
    const APPENDS_PER_TASK: usize = 2;
    const MAX_TRIES: usize = 500;
    let (_azurite, store) = setup().await;
    let store = Arc::new(store);
    let s = stream("contended");

    let mut handles = Vec::new();
    for task in 0..TASKS {
        let store = store.clone();
        let s = s.clone();
        handles.push(tokio::spawn(async move {
            let mut acknowledged = Vec::new();
            for n in 0..APPENDS_PER_TASK {
                let e = event(&format!(r#"{{"task":{task},"n":{n}}}"#));
                let mut tries = 0;
                loop {
                    tries += 1;
                    assert!(tries <= MAX_TRIES, "task {task} starved");
                    let version = store.version(&s).await.unwrap();
                    match store.append(&s, Exact(version), vec![e.clone()]).await {
                        Ok(outcome) => {
                            assert!(!outcome.duplicate);
                            assert_eq!(outcome.first_sequence, version + 1);
                            acknowledged.push((e.event_id, outcome.first_sequence));
                            break;
                        }
                        Err(StoreError::WrongExpectedVersion { actual, .. }) => {
                            assert_ne!(actual, version);
                        }
                        Err(other) => panic!("task {task}: {other:?}"),
                    }
                }
            }
            acknowledged
        }));
    }
    let mut acknowledged: HashMap<Uuid, u64> = HashMap::new();
    for handle in handles {
        for (id, sequence) in handle.await.unwrap() {
            assert!(acknowledged.insert(id, sequence).is_none());
        }
    }
    let total = (TASKS * APPENDS_PER_TASK) as u64;
    let slice = store.read(&s, ReadRequest::all()).await.unwrap();
    assert_eq!(slice.version, total);
    let sequences: Vec<u64> = slice.events.iter().map(|e| e.sequence).collect();
    assert_eq!(sequences, (1..=total).collect::<Vec<_>>());
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
    assert_eq!(stored, acknowledged);
}

#[tokio::test]
async fn concurrent_any_appends_all_land_once() {
    const TASKS: usize = 8;
    let (_azurite, store) = setup().await;
    let store = Arc::new(store);
    let s = stream("any");
    let mut handles = Vec::new();
    for task in 0..TASKS {
        let store = store.clone();
        let s = s.clone();
        handles.push(tokio::spawn(async move {
            let batch = events(3);
            let ids: Vec<Uuid> = batch.iter().map(|e| e.event_id).collect();
            let outcome = store.append(&s, Any, batch).await;
            (task, ids, outcome)
        }));
    }
    let mut expected_ids = BTreeSet::new();
    for handle in handles {
        let (task, ids, outcome) = handle.await.unwrap();
        let outcome = outcome.unwrap_or_else(|e| panic!("task {task}: {e:?}"));
        assert_eq!(outcome.version - outcome.first_sequence, 2);
        expected_ids.extend(ids);
    }
    let slice = store.read(&s, ReadRequest::all()).await.unwrap();
    assert_eq!(slice.version, (TASKS * 3) as u64);
    let stored: BTreeSet<Uuid> = slice.events.iter().map(|e| e.event_id).collect();
    assert_eq!(stored, expected_ids);
}

#[tokio::test]
async fn request_counts_of_each_operation() {
    let azurite = Azurite::start().await.unwrap();
    let proxy = streamfold_testbed::CountingProxy::start(&azurite.table_endpoint())
        .await
        .unwrap();
    let connection = Azurite::connection_string_for(
        &azurite.blob_endpoint(),
        &format!("{}/{}", proxy.url(), streamfold_testbed::azurite::ACCOUNT),
    );
    let account = StorageAccount::from_connection_string(&connection).unwrap();
    let store = TableStore::new(account).with_table_name("counted");
    let s = stream("counted");

    // First use creates the table once; the append itself is one request.
    store.append(&s, NoStream, events(3)).await.unwrap();
    assert_eq!(proxy.requests(), 2, "{:?}", proxy.log());
    let cost = |label: &str, expected: usize| {
        assert_eq!(proxy.requests(), expected, "{label}: {:?}", proxy.log());
        proxy.reset();
    };
    cost("create + first append", 2);

    store
        .append(&stream("new"), NoStream, events(2))
        .await
        .unwrap();
    cost("NoStream append", 1);
    store.append(&s, Exact(3), events(48)).await.unwrap();
    cost("Exact append", 1);
    store.append(&s, Any, events(1)).await.unwrap();
    cost("Any append: header read + transaction", 2);
    store.version(&s).await.unwrap();
    cost("version", 1);
    store.read(&s, ReadRequest::all()).await.unwrap();
    cost("read: header + query", 2);

    let batch = events(2);
    store.append(&s, Exact(52), batch.clone()).await.unwrap();
    proxy.reset();
    assert!(store.append(&s, Exact(52), batch).await.unwrap().duplicate);
    cost("retry: transaction + id query", 2);
    assert_wrong(store.append(&s, Exact(1), events(1)).await, Exact(1), 54);
    cost("conflict: transaction + id query + header read", 3);
}

#[tokio::test]
async fn reads_during_appends_see_every_event_up_to_their_version() {
    const APPENDS: u64 = 40;
    let (_azurite, store) = setup().await;
    let store = Arc::new(store);
    let s = stream("racing");
    let writer = {
        let store = store.clone();
        let s = s.clone();
        tokio::spawn(async move {
            for version in 0..APPENDS {
                store.append(&s, Exact(version), events(1)).await.unwrap();
            }
        })
    };
    let mut last_version = 0;
    while !writer.is_finished() {
        let slice = store.read(&s, ReadRequest::all()).await.unwrap();
        let sequences: Vec<u64> = slice.events.iter().map(|e| e.sequence).collect();
        assert_eq!(sequences, (1..=slice.version).collect::<Vec<_>>());
        assert!(slice.version >= last_version);
        last_version = slice.version;
    }
    writer.await.unwrap();
    assert_eq!(store.version(&s).await.unwrap(), APPENDS);
}

/// A loopback proxy that forwards every request to `upstream_port` but, for entity group
/// transactions (`$batch`), closes the client's connection as soon as the answer starts: the
/// write reaches storage, its response is lost.
async fn start_response_losing_proxy(upstream_port: u16) -> (u16, tokio::task::JoinHandle<()>) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::{TcpListener, TcpStream};

    async fn relay(mut client: TcpStream, upstream_port: u16) -> std::io::Result<()> {
        loop {
            // One request: the head, then Content-Length bytes of body.
            let mut request = Vec::new();
            let mut byte = [0u8; 1];
            while !request.ends_with(b"\r\n\r\n") {
                if client.read(&mut byte).await? == 0 {
                    return Ok(());
                }
                request.push(byte[0]);
            }
            let head = String::from_utf8_lossy(&request).to_string();
            let length: usize = head
                .lines()
                .find_map(|l| {
                    let (name, value) = l.split_once(':')?;
                    name.eq_ignore_ascii_case("content-length")
                        .then(|| value.trim().parse().ok())?
                })
                .unwrap_or(0);
            let mut body = vec![0u8; length];
            client.read_exact(&mut body).await?;
            request.extend_from_slice(&body);
            let lose_response = head.lines().next().is_some_and(|l| l.contains("$batch"));

            let mut upstream = TcpStream::connect(("127.0.0.1", upstream_port)).await?;
            upstream.write_all(&request).await?;
            let mut response = vec![0u8; 1 << 20];
            let n = upstream.read(&mut response).await?;
            if lose_response || n == 0 {
                return Ok(()); // drops the client connection mid-answer
            }
            // Forward the rest of this response: read until the upstream has sent it all
            // (Azurite answers small non-batch requests in one or two reads here).
            let mut answer = response[..n].to_vec();
            let header_end = loop {
                if let Some(i) = answer.windows(4).position(|w| w == b"\r\n\r\n") {
                    break i + 4;
                }
                let n = upstream.read(&mut response).await?;
                if n == 0 {
                    return Ok(());
                }
                answer.extend_from_slice(&response[..n]);
            };
            let head = String::from_utf8_lossy(&answer[..header_end]).to_string();
            let length: usize = head
                .lines()
                .find_map(|l| {
                    let (name, value) = l.split_once(':')?;
                    name.eq_ignore_ascii_case("content-length")
                        .then(|| value.trim().parse().ok())?
                })
                .unwrap_or(0);
            while answer.len() < header_end + length {
                let n = upstream.read(&mut response).await?;
                if n == 0 {
                    return Ok(());
                }
                answer.extend_from_slice(&response[..n]);
            }
            client.write_all(&answer).await?;
        }
    }

    let listener = TcpListener::bind(("127.0.0.1", 0)).await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let task = tokio::spawn(async move {
        while let Ok((client, _)) = listener.accept().await {
            tokio::spawn(relay(client, upstream_port));
        }
    });
    (port, task)
}

#[tokio::test]
async fn a_lost_response_is_maybe_applied_and_a_retry_is_a_duplicate() {
    let (azurite, direct) = setup().await;
    let (port, proxy) = start_response_losing_proxy(azurite.table_port).await;
    let connection = Azurite::connection_string_for(
        &azurite.blob_endpoint(),
        &format!(
            "http://127.0.0.1:{port}/{}",
            streamfold_testbed::azurite::ACCOUNT
        ),
    );
    let lossy = TableStore::new(StorageAccount::from_connection_string(&connection).unwrap())
        .with_table_name(direct.table_name().to_owned());
    let s = stream("lost");
    let batch = events(2);

    match lossy.append(&s, NoStream, batch.clone()).await {
        Err(StoreError::Unavailable { maybe_applied, .. }) => assert!(maybe_applied),
        other => panic!("{other:?}"),
    }
    // It was applied, once; the retry with the same ids says so.
    assert_eq!(direct.version(&s).await.unwrap(), 2);
    let retry = direct.append(&s, NoStream, batch).await.unwrap();
    assert!(retry.duplicate);
    assert_eq!((retry.first_sequence, retry.version), (1, 2));
    // Reads through the proxy are unaffected.
    assert_eq!(lossy.version(&s).await.unwrap(), 2);
    proxy.abort();
}

#[tokio::test]
async fn reads_follow_continuation_tokens_past_a_page() {
    const APPENDS: u64 = 24;
    let (_azurite, store) = setup().await;
    let s = stream("long");
    let per_append = MAX_EVENTS_PER_APPEND as u64;
    for n in 0..APPENDS {
        store
            .append(&s, Exact(n * per_append), events(MAX_EVENTS_PER_APPEND))
            .await
            .unwrap();
    }
    let total = APPENDS * per_append;
    assert!(total > 1_000, "more than one query page");
    let slice = store.read(&s, ReadRequest::all()).await.unwrap();
    assert_eq!(slice.version, total);
    let sequences: Vec<u64> = slice.events.iter().map(|e| e.sequence).collect();
    assert_eq!(sequences, (1..=total).collect::<Vec<_>>());
    let tail = store
        .read(&s, ReadRequest::range(995, Some(1_005)))
        .await
        .unwrap();
    assert_eq!(
        tail.events.iter().map(|e| e.sequence).collect::<Vec<_>>(),
        (995..=1_005).collect::<Vec<_>>()
    );
}
