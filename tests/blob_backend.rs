//! The Append Blob backend against a real Azurite: expectations, atomicity, idempotent retries,
//! reads, data fidelity, size limits, awkward keys, listing, segment rollover, concurrent
//! writers, an outage, and what an append costs (requests and bytes, through a counting proxy).
//! Each test starts its own Azurite and uses its own container.

use std::collections::{BTreeSet, HashMap};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use serde_json::value::RawValue;
use streamfold::storage::blob::{
    escape_instance, record_size_bound, BlobStore, HINT_INTERVAL_BYTES, MAX_BLOCK_BYTES,
};
use streamfold::storage::StorageAccount;
use streamfold::stream::{
    EventMetadata, EventStore, ExpectedVersion, NewEvent, ReadRequest, StoreError, StreamId,
    MAX_INSTANCE_KEY_BYTES,
};
use streamfold_testbed::{Azurite, CountingProxy};
use uuid::Uuid;

use ExpectedVersion::{Any, Exact, Exists, NoStream};

/// Generous bound on an operation against a stopped emulator: it must fail, not hang.
const OUTAGE_BOUND: Duration = Duration::from_secs(30);

struct Setup {
    azurite: Azurite,
    account: StorageAccount,
    container: String,
    store: BlobStore,
}

impl Setup {
    async fn new() -> Self {
        let azurite = Azurite::start().await.expect("Azurite starts");
        let account = StorageAccount::from_connection_string(&azurite.connection_string()).unwrap();
        let container = format!("c{}", Uuid::new_v4().simple());
        let store = BlobStore::new(account.clone()).with_container(&container);
        Self {
            azurite,
            account,
            container,
            store,
        }
    }

    /// Another process: same container, its own (cold) cache.
    fn fresh_store(&self) -> BlobStore {
        BlobStore::new(self.account.clone())
            .with_container(&self.container)
            .with_max_blocks_per_segment(self.store.max_blocks_per_segment())
    }

    fn container_client(&self) -> azure_storage_blobs::prelude::ContainerClient {
        self.account
            .blob_service_client()
            .unwrap()
            .container_client(&self.container)
    }

    /// The names of every blob whose name starts with `prefix`.
    async fn blob_names(&self, prefix: &str) -> Vec<String> {
        let mut pages = self
            .container_client()
            .list_blobs()
            .prefix(prefix.to_owned())
            .into_stream();
        let mut names = Vec::new();
        while let Some(page) = pages.next().await {
            names.extend(page.unwrap().blobs.blobs().map(|b| b.name.clone()));
        }
        names
    }

    async fn blob_content(&self, name: &str) -> Vec<u8> {
        self.container_client()
            .blob_client(name)
            .get_content()
            .await
            .unwrap()
    }
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

/// An event whose data is a JSON string of `len` characters.
fn sized_event(len: usize) -> NewEvent {
    event(&format!("\"{}\"", "x".repeat(len)))
}

fn ids(events: &[NewEvent]) -> Vec<Uuid> {
    events.iter().map(|e| e.event_id).collect()
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

/// Reads the whole stream and checks that it is 1..=version without gaps.
async fn contiguous(store: &BlobStore, s: &StreamId) -> Vec<Uuid> {
    let slice = store.read(s, ReadRequest::all()).await.unwrap();
    let sequences: Vec<u64> = slice.events.iter().map(|e| e.sequence).collect();
    assert_eq!(sequences, (1..=slice.version).collect::<Vec<_>>());
    slice.events.iter().map(|e| e.event_id).collect()
}

#[tokio::test]
async fn expectations_against_a_missing_stream() {
    let setup = Setup::new().await;
    let store = &setup.store;
    let s = stream("missing");
    for expected in [Exists, Exact(1), Exact(5)] {
        assert_wrong(store.append(&s, expected, events(1)).await, expected, 0);
    }
    assert_eq!(store.version(&s).await.unwrap(), 0);
    let slice = store.read(&s, ReadRequest::all()).await.unwrap();
    assert_eq!((slice.version, slice.events.len()), (0, 0));
    // Nothing was created by the refused appends.
    assert!(setup.blob_names("Bank/").await.is_empty());

    for (instance, expected) in [("a", NoStream), ("b", Exact(0)), ("c", Any)] {
        let outcome = store
            .append(&stream(instance), expected, events(2))
            .await
            .unwrap();
        assert_eq!(outcome.first_sequence, 1, "{expected}");
        assert_eq!(outcome.version, 2);
        assert!(outcome.created && !outcome.duplicate);
        assert_eq!(store.version(&stream(instance)).await.unwrap(), 2);
        assert_eq!(
            setup
                .fresh_store()
                .version(&stream(instance))
                .await
                .unwrap(),
            2
        );
    }
    assert_eq!(
        setup.blob_names("Bank/Account/a/").await,
        vec!["Bank/Account/a/000000.jsonl"]
    );
}

#[tokio::test]
async fn expectations_against_an_existing_stream() {
    let setup = Setup::new().await;
    let s = stream("existing");
    setup.store.append(&s, NoStream, events(2)).await.unwrap();
    // The same answers from the writer's warm cache and from a cold one.
    for store in [setup.store.clone(), setup.fresh_store()] {
        let base = store.version(&s).await.unwrap();
        for expected in [NoStream, Exact(0), Exact(1), Exact(base + 1), Exact(100)] {
            assert_wrong(store.append(&s, expected, events(1)).await, expected, base);
        }
        let outcome = store.append(&s, Exact(base), events(1)).await.unwrap();
        assert_eq!(
            (outcome.first_sequence, outcome.version),
            (base + 1, base + 1)
        );
        assert!(!outcome.created && !outcome.duplicate);
        let outcome = store.append(&s, Any, events(2)).await.unwrap();
        assert_eq!(
            (outcome.first_sequence, outcome.version),
            (base + 2, base + 3)
        );
        let outcome = store.append(&s, Exists, events(1)).await.unwrap();
        assert_eq!(outcome.version, base + 4);
        assert_wrong(
            store.append(&s, Exact(base + 3), events(1)).await,
            Exact(base + 3),
            base + 4,
        );
    }
    // A writer whose cache is stale is refused by storage, and learns the new version.
    let stale = setup.fresh_store();
    let v = stale.version(&s).await.unwrap();
    setup.store.append(&s, Exact(v), events(1)).await.unwrap();
    assert_wrong(stale.append(&s, Exact(v), events(1)).await, Exact(v), v + 1);
    assert_eq!(
        stale
            .append(&s, Exact(v + 1), events(1))
            .await
            .unwrap()
            .version,
        v + 2
    );

    assert_eq!(contiguous(&setup.store, &s).await.len() as u64, v + 2);
}

#[tokio::test]
async fn appends_are_atomic_and_leave_no_gap() {
    let setup = Setup::new().await;
    let store = &setup.store;
    let s = stream("atomic");
    let first = events(5);
    let outcome = store.append(&s, NoStream, first.clone()).await.unwrap();
    assert_eq!((outcome.first_sequence, outcome.version), (1, 5));

    assert_wrong(store.append(&s, Exact(3), events(4)).await, Exact(3), 5);
    assert_wrong(store.append(&s, Exact(7), events(4)).await, Exact(7), 5);
    // An append whose last event reuses an id fails as a whole.
    let mut mixed = events(3);
    mixed[2].event_id = first[0].event_id;
    assert!(matches!(
        store.append(&s, Exact(5), mixed).await,
        Err(StoreError::EventIdReused { event_id, .. }) if event_id == first[0].event_id
    ));
    // Ids repeated inside one append are refused before any I/O.
    let mut twice = events(2);
    twice[1].event_id = twice[0].event_id;
    assert!(matches!(
        store.append(&s, Exact(5), twice).await,
        Err(StoreError::InvalidEvent { .. })
    ));
    assert!(matches!(
        store.append(&s, Exact(5), Vec::new()).await,
        Err(StoreError::EmptyAppend)
    ));

    let outcome = store.append(&s, Exact(5), events(3)).await.unwrap();
    assert_eq!((outcome.first_sequence, outcome.version), (6, 8));
    let stored = contiguous(store, &s).await;
    assert_eq!(stored.len(), 8);
    assert_eq!(&stored[..5], &ids(&first)[..]);
}

#[tokio::test]
async fn retries_with_the_same_ids_are_idempotent() {
    let setup = Setup::new().await;
    let s = stream("idempotent");
    let batch = events(3);
    let outcome = setup
        .store
        .append(&s, NoStream, batch.clone())
        .await
        .unwrap();
    assert!(!outcome.duplicate);

    for store in [setup.store.clone(), setup.fresh_store()] {
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
    }
    let later = setup.store.append(&s, Exact(3), events(2)).await.unwrap();
    assert_eq!(later.version, 5);
    for store in [setup.store.clone(), setup.fresh_store()] {
        let retry = store.append(&s, Exact(0), batch.clone()).await.unwrap();
        assert_eq!(
            (retry.first_sequence, retry.version, retry.duplicate),
            (1, 3, true)
        );
    }

    // Overlapping ids: part of an earlier append, or mixed with new ones.
    let mut overlap = events(2);
    overlap[0].event_id = batch[2].event_id;
    for attempt in [
        overlap,
        batch[..2].to_vec(),
        vec![batch[1].clone(), batch[0].clone(), batch[2].clone()],
    ] {
        for store in [setup.store.clone(), setup.fresh_store()] {
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
    }
    assert_eq!(setup.store.version(&s).await.unwrap(), 5);
    // The ids belong to this stream only: another stream may use them.
    let other = setup
        .store
        .append(&stream("other"), NoStream, batch)
        .await
        .unwrap();
    assert!(!other.duplicate);
}

#[tokio::test]
async fn range_and_as_of_reads() {
    let setup = Setup::new().await;
    let store = &setup.store;
    let s = stream("reads");
    store.append(&s, NoStream, events(2)).await.unwrap();
    tokio::time::sleep(Duration::from_millis(20)).await;
    store.append(&s, Exact(2), events(2)).await.unwrap();
    tokio::time::sleep(Duration::from_millis(20)).await;
    store.append(&s, Exact(4), events(2)).await.unwrap();

    for reader in [store.clone(), setup.fresh_store()] {
        let all = reader.read(&s, ReadRequest::all()).await.unwrap();
        assert_eq!(all.version, 6);
        assert_eq!(all.events.len(), 6);
        let seqs = |slice: &streamfold::stream::StreamSlice| {
            slice.events.iter().map(|e| e.sequence).collect::<Vec<_>>()
        };
        let middle = reader
            .read(&s, ReadRequest::range(2, Some(4)))
            .await
            .unwrap();
        assert_eq!((middle.version, seqs(&middle)), (6, vec![2, 3, 4]));
        let after = reader.read(&s, ReadRequest::after(4)).await.unwrap();
        assert_eq!(seqs(&after), vec![5, 6]);
        let beyond = reader.read(&s, ReadRequest::after(6)).await.unwrap();
        assert_eq!((beyond.version, beyond.events.len()), (6, 0));
        let far = reader.read(&s, ReadRequest::range(9, None)).await.unwrap();
        assert_eq!((far.version, far.events.len()), (6, 0));

        // Every event of one append shares its timestamp; appends are ordered in time.
        assert_eq!(all.events[0].timestamp, all.events[1].timestamp);
        assert!(all.events[1].timestamp < all.events[2].timestamp);
        let as_of = all.events[3].timestamp;
        let past = reader
            .read(&s, ReadRequest::all().as_of(as_of))
            .await
            .unwrap();
        assert_eq!((past.version, seqs(&past)), (6, vec![1, 2, 3, 4]));
        let before = all.events[0].timestamp - time::Duration::nanoseconds(1);
        let nothing = reader
            .read(&s, ReadRequest::all().as_of(before))
            .await
            .unwrap();
        assert!(nothing.events.is_empty());
        let both = reader
            .read(&s, ReadRequest::range(2, None).as_of(as_of))
            .await
            .unwrap();
        assert_eq!(seqs(&both), vec![2, 3, 4]);
    }
}

#[tokio::test]
async fn data_and_metadata_are_preserved_byte_for_byte() {
    let setup = Setup::new().await;
    let s = stream("fidelity");
    let datas = [
        r#"{"amount":"0.10","exact":0.10000000000000000001,"big":123456789012345678901234567890}"#,
        r#"{ "spaced" :  [1, 2 ,3] ,"unicode":"ünï \u00e9 😀 \"quoted\"" }"#,
        "{\n  \"pretty\": true\n}",
        "  \"surrounded by spaces\"\t",
        "null",
        "[]",
        "-0.0e+00",
    ];
    let mut batch: Vec<NewEvent> = datas.iter().map(|d| event(d)).collect();
    batch[0].metadata = EventMetadata {
        correlation_id: Some("corr-1".into()),
        causation_id: Some("cause\n\"2\"".into()),
        who: Some("O'Brien".into()),
        source: Some("tests".into()),
        commentary: Some("ünï".into()),
        schema_version: Some(u32::MAX),
    };
    setup
        .store
        .append(&s, NoStream, batch.clone())
        .await
        .unwrap();
    for reader in [setup.store.clone(), setup.fresh_store()] {
        let slice = reader.read(&s, ReadRequest::all()).await.unwrap();
        for (read, written) in slice.events.iter().zip(&batch) {
            assert_eq!(read.data.get(), written.data.get());
            assert_eq!(read.metadata, written.metadata);
            assert_eq!(read.event_id, written.event_id);
            assert_eq!(read.event_type, written.event_type);
        }
    }

    // The blob is newline-delimited JSON that any tool can read: one record per line.
    let content = setup
        .blob_content("Bank/Account/fidelity/000000.jsonl")
        .await;
    let text = String::from_utf8(content).unwrap();
    assert!(text.ends_with('\n'));
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), batch.len());
    for (index, line) in lines.iter().enumerate() {
        let record: serde_json::Value = serde_json::from_str(line).unwrap();
        assert_eq!(record["sequence"], index as u64 + 1);
        assert_eq!(record["eventId"], batch[index].event_id.to_string());
        assert_eq!(record["eventType"], "Deposited");
        assert!(record["timestamp"].is_string());
        assert!(record.get("data").is_some() || record.get("dataText").is_some());
    }
    assert!(lines[0].ends_with(&format!(r#""data":{}}}"#, datas[0])));
}

#[tokio::test]
async fn the_largest_event_fits_and_the_next_is_refused() {
    let setup = Setup::new().await;
    let store = &setup.store;
    let s = stream("large");
    let bound = |len: usize| record_size_bound(&sized_event(len)).unwrap();
    let (mut fits, mut too_big) = (1, MAX_BLOCK_BYTES);
    while too_big - fits > 1 {
        let mid = (fits + too_big) / 2;
        if bound(mid) <= MAX_BLOCK_BYTES {
            fits = mid;
        } else {
            too_big = mid;
        }
    }
    assert_eq!(bound(fits), MAX_BLOCK_BYTES);
    let refused = sized_event(too_big);
    match store.append(&s, NoStream, vec![refused.clone()]).await {
        Err(StoreError::EventTooLarge {
            event_id,
            size,
            limit,
        }) => {
            assert_eq!(event_id, refused.event_id);
            assert_eq!(limit, MAX_BLOCK_BYTES);
            assert_eq!(size, MAX_BLOCK_BYTES + 1);
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(store.version(&s).await.unwrap(), 0);

    let largest = sized_event(fits);
    store
        .append(&s, NoStream, vec![largest.clone()])
        .await
        .unwrap();
    let slice = setup
        .fresh_store()
        .read(&s, ReadRequest::all())
        .await
        .unwrap();
    assert_eq!(slice.events[0].data.get(), largest.data.get());

    // Two events that each fit but not together: refused whole, before any write.
    let half = fits / 2 + 1;
    match store
        .append(&s, Exact(1), vec![sized_event(half), sized_event(half)])
        .await
    {
        Err(StoreError::AppendTooLarge { events, bytes, .. }) => {
            assert_eq!(events, 2);
            assert!(bytes > MAX_BLOCK_BYTES);
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(store.version(&s).await.unwrap(), 1);
}

#[tokio::test]
async fn awkward_instance_keys_are_distinct_streams() {
    let setup = Setup::new().await;
    let longest = "ü".repeat(MAX_INSTANCE_KEY_BYTES / 2);
    let keys = [
        "O'Brien",
        "50%",
        "a+b c",
        "ünï",
        "Abc",
        "abc",
        ".hidden.",
        "..",
        "%41",
        "A",
        "x~y=z&w;v",
        longest.as_str(),
    ];
    for (index, key) in keys.iter().enumerate() {
        let outcome = setup
            .store
            .append(&stream(key), NoStream, events(index + 1))
            .await
            .unwrap_or_else(|e| panic!("{key:?}: {e:?}"));
        assert!(outcome.created, "{key:?}");
    }
    for reader in [setup.store.clone(), setup.fresh_store()] {
        for (index, key) in keys.iter().enumerate() {
            let slice = reader.read(&stream(key), ReadRequest::all()).await.unwrap();
            assert_eq!(slice.version, index as u64 + 1, "{key:?}");
            assert_eq!(
                reader.version(&stream(key)).await.unwrap(),
                index as u64 + 1
            );
        }
    }
    let listed = setup
        .store
        .list_streams("Bank", "Account", None, 100)
        .await
        .unwrap();
    let listed: BTreeSet<String> = listed.instances.into_iter().collect();
    let expected: BTreeSet<String> = keys.iter().map(|k| k.to_string()).collect();
    assert_eq!(listed, expected);
    // Case matters in blob names: two virtual directories.
    assert_eq!(setup.blob_names("Bank/Account/Abc/").await.len(), 1);
    assert_eq!(setup.blob_names("Bank/Account/abc/").await.len(), 1);
    assert_eq!(
        setup
            .blob_names(&format!("Bank/Account/{}/", escape_instance("50%")))
            .await,
        vec!["Bank/Account/50%25/000000.jsonl"]
    );
}

#[tokio::test]
async fn listing_pages_through_one_entity_type() {
    let setup = Setup::new().await;
    let store = &setup.store;
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
    // A stream with several segments is listed once.
    let segmented = setup.fresh_store().with_max_blocks_per_segment(1);
    for n in 0..3 {
        segmented
            .append(&stream("acc-3"), Any, events(1))
            .await
            .unwrap_or_else(|e| panic!("{n}: {e:?}"));
    }
    assert!(setup.blob_names("Bank/Account/acc-3/").await.len() > 1);

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
    // Listing a container that does not exist yet is empty, not an error.
    let empty = setup.fresh_store().with_container("never-created");
    assert!(empty
        .list_streams("Bank", "Account", None, 10)
        .await
        .unwrap()
        .instances
        .is_empty());
}

#[tokio::test]
async fn streams_roll_over_into_new_segments() {
    const MAX_BLOCKS: u32 = 3;
    let mut setup = Setup::new().await;
    setup.store = setup.store.clone().with_max_blocks_per_segment(MAX_BLOCKS);
    let store = setup.store.clone();
    let s = stream("rolling");
    let mut written = Vec::new();
    for n in 0..10u64 {
        let batch = events(2);
        written.extend(ids(&batch));
        let outcome = store.append(&s, Exact(2 * n), batch).await.unwrap();
        assert_eq!(
            (outcome.first_sequence, outcome.version),
            (2 * n + 1, 2 * n + 2)
        );
    }
    let names = setup.blob_names("Bank/Account/rolling/").await;
    assert_eq!(
        names,
        (0..4)
            .map(|n| format!("Bank/Account/rolling/{n:06}.jsonl"))
            .collect::<Vec<_>>()
    );
    // Each full segment holds exactly MAX_BLOCKS appends; the next starts with the next event.
    let second = String::from_utf8(setup.blob_content(&names[1]).await).unwrap();
    let first_record: serde_json::Value =
        serde_json::from_str(second.lines().next().unwrap()).unwrap();
    assert_eq!(first_record["sequence"], 2 * u64::from(MAX_BLOCKS) + 1);
    assert_eq!(second.lines().count(), 2 * MAX_BLOCKS as usize);

    // Readers cross segments transparently, warm or cold, from any starting point.
    for reader in [store.clone(), setup.fresh_store()] {
        assert_eq!(contiguous(&reader, &s).await, written);
        assert_eq!(reader.version(&s).await.unwrap(), 20);
        let from_middle = reader
            .read(&s, ReadRequest::range(8, Some(14)))
            .await
            .unwrap();
        let seqs: Vec<u64> = from_middle.events.iter().map(|e| e.sequence).collect();
        assert_eq!(
            (from_middle.version, seqs),
            (20, (8..=14).collect::<Vec<_>>())
        );
        let after = reader.read(&s, ReadRequest::after(17)).await.unwrap();
        assert_eq!(after.events.len(), 3);
    }

    // A cold writer continues where the stream is, and retries across a segment boundary are
    // still recognised (the last append of segment 2 while segment 3 is current).
    let cold = setup.fresh_store();
    let outcome = cold.append(&s, Exact(20), events(1)).await.unwrap();
    assert_eq!(outcome.version, 21);
    let boundary_retry = events(1);
    let fresh = setup.fresh_store();
    fresh
        .append(&s, Exact(21), boundary_retry.clone())
        .await
        .unwrap();
    fresh.append(&s, Exact(22), events(1)).await.unwrap();
    fresh.append(&s, Exact(23), events(1)).await.unwrap();
    assert_eq!(setup.blob_names("Bank/Account/rolling/").await.len(), 5);
    for retrier in [fresh.clone(), setup.fresh_store()] {
        let retry = retrier
            .append(&s, Exact(21), boundary_retry.clone())
            .await
            .unwrap();
        assert_eq!((retry.first_sequence, retry.duplicate), (22, true));
    }

    // Two writers race to roll over a full segment: exactly one wins each version.
    let (a, b) = (setup.fresh_store(), setup.fresh_store());
    let mut version = a.version(&s).await.unwrap();
    assert_eq!(b.version(&s).await.unwrap(), version);
    for _ in 0..6 {
        let (x, y) = (events(1), events(1));
        let (ra, rb) = tokio::join!(
            a.append(&s, Exact(version), x),
            b.append(&s, Exact(version), y)
        );
        match (ra, rb) {
            (Ok(won), Err(lost)) | (Err(lost), Ok(won)) => {
                assert_eq!(won.version, version + 1);
                assert_wrong(Err::<(), _>(lost), Exact(version), version + 1);
            }
            other => panic!("both or neither won: {other:?}"),
        }
        version += 1;
        // Both learn the new version before the next race.
        assert_eq!(a.version(&s).await.unwrap(), version);
        assert_eq!(b.version(&s).await.unwrap(), version);
    }
    let (ra, rb) = tokio::join!(a.append(&s, Any, events(1)), b.append(&s, Any, events(1)));
    let mut landed = vec![ra.unwrap().version, rb.unwrap().version];
    landed.sort();
    assert_eq!(landed, vec![version + 1, version + 2]);
    assert_eq!(contiguous(&store, &s).await.len() as u64, version + 2);
}

#[tokio::test]
async fn concurrent_exact_appends_stay_contiguous() {
    const TASKS: usize = 32;
    const STORES: usize = 4;
    const APPENDS_PER_TASK: usize = 2;
    const MAX_TRIES: usize = 500;
    let setup = Setup::new().await;
    // Several processes (stores with their own caches), and a small segment so that the race
    // also crosses segment boundaries.
    let stores: Vec<Arc<BlobStore>> = (0..STORES)
        .map(|_| Arc::new(setup.fresh_store().with_max_blocks_per_segment(8)))
        .collect();
    let s = stream("contended");

    let mut handles = Vec::new();
    for task in 0..TASKS {
        let store = stores[task % STORES].clone();
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
    let reader = setup.fresh_store().with_max_blocks_per_segment(8);
    let slice = reader.read(&s, ReadRequest::all()).await.unwrap();
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
    assert_eq!(
        setup.blob_names("Bank/Account/contended/").await.len(),
        (total as usize).div_ceil(8)
    );
}

#[tokio::test]
async fn concurrent_any_appends_all_land_once() {
    const TASKS: usize = 8;
    let setup = Setup::new().await;
    let s = stream("any");
    let mut handles = Vec::new();
    for task in 0..TASKS {
        let store = if task % 2 == 0 {
            setup.store.clone()
        } else {
            setup.fresh_store()
        };
        let s = s.clone();
        handles.push(tokio::spawn(async move {
            let batch = events(3);
            let ids = ids(&batch);
            let outcome = store.append(&s, Any, batch).await;
            (task, ids, outcome)
        }));
    }
    let mut expected_ids = BTreeSet::new();
    for handle in handles {
        let (task, ids, outcome) = handle.await.unwrap();
        let outcome = outcome.unwrap_or_else(|e| panic!("task {task}: {e:?}"));
        assert_eq!(outcome.version - outcome.first_sequence, 2);
        assert!(!outcome.duplicate);
        expected_ids.extend(ids);
    }
    let stored: BTreeSet<Uuid> = contiguous(&setup.store, &s).await.into_iter().collect();
    assert_eq!(stored.len(), TASKS * 3);
    assert_eq!(stored, expected_ids);
}

#[tokio::test]
async fn a_storage_outage_gives_unavailable_in_bounded_time() {
    let mut setup = Setup::new().await;
    let store = setup.store.clone();
    let s = stream("outage");
    store.append(&s, NoStream, events(1)).await.unwrap();
    setup.azurite.stop().await;

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
    let list = tokio::time::timeout(OUTAGE_BOUND, store.list_streams("Bank", "Account", None, 5))
        .await
        .expect("a listing during an outage must not hang");
    assert!(matches!(list, Err(StoreError::Unavailable { .. })));

    // A new store (container not yet created in this process) fails the same way.
    let fresh = setup.fresh_store().with_container("fresh-container");
    let result = tokio::time::timeout(OUTAGE_BOUND, fresh.append(&s, Any, events(1)))
        .await
        .expect("must not hang");
    assert!(
        matches!(result, Err(StoreError::Unavailable { .. })),
        "{result:?}"
    );
}

#[tokio::test]
async fn a_wrong_key_is_misconfigured() {
    let azurite = Azurite::start().await.unwrap();
    let wrong_key = "d3Jvbmcta2V5LXdyb25nLWtleS13cm9uZy1rZXktd3Jvbmcta2V5LXdyb25nLWtleQ==";
    let connection = azurite
        .connection_string()
        .replace(streamfold_testbed::azurite::KEY, wrong_key);
    let account = StorageAccount::from_connection_string(&connection).unwrap();
    let store = BlobStore::new(account).with_container("wrongkey");
    for result in [
        store.version(&stream("x")).await.map(|_| ()),
        store.append(&stream("x"), Any, events(1)).await.map(|_| ()),
    ] {
        match result {
            Err(StoreError::Misconfigured(message)) => assert!(!message.contains(wrong_key)),
            other => panic!("{other:?}"),
        }
    }
    let bad_name = BlobStore::new(
        StorageAccount::from_connection_string(&azurite.connection_string()).unwrap(),
    )
    .with_container("Not_Valid");
    assert!(matches!(
        bad_name.version(&stream("x")).await,
        Err(StoreError::Misconfigured(_))
    ));
}

/// THE cost test: on a 5,000-event stream, a writer with a cold cache reads only the tail
/// after the segment's hint (not the blob), and a warm writer's append is one request.
#[tokio::test]
async fn appends_read_only_the_tail_and_warm_appends_cost_one_request() {
    const EVENTS: usize = 5_000;
    const PER_APPEND: usize = 500;
    let azurite = Azurite::start().await.unwrap();
    let proxy = CountingProxy::start(&azurite.blob_endpoint())
        .await
        .unwrap();
    let connection = Azurite::connection_string_for(
        &format!("{}/{}", proxy.url(), streamfold_testbed::azurite::ACCOUNT),
        &azurite.table_endpoint(),
    );
    let account = StorageAccount::from_connection_string(&connection).unwrap();
    let container = "costs";
    let builder = BlobStore::new(account.clone()).with_container(container);
    let s = stream("long");
    let padding = "p".repeat(200);
    for n in 0..EVENTS / PER_APPEND {
        let batch: Vec<NewEvent> = (0..PER_APPEND)
            .map(|i| {
                event(&format!(
                    r#"{{"n":{},"pad":"{padding}"}}"#,
                    n * PER_APPEND + i
                ))
            })
            .collect();
        builder
            .append(&s, Exact((n * PER_APPEND) as u64), batch)
            .await
            .unwrap();
    }
    let blob = "Bank/Account/long/000000.jsonl";
    let blob_len = account
        .blob_service_client()
        .unwrap()
        .container_client(container)
        .blob_client(blob)
        .get_properties()
        .await
        .unwrap()
        .blob
        .properties
        .content_length;
    assert!(blob_len > 1_000_000, "{blob_len}");
    // Each build append was larger than the hint interval, so the hint is at the end.
    assert!((PER_APPEND * 200) as u64 > HINT_INTERVAL_BYTES);

    // A cold writer (a new process) appends with a known version.
    let cold = BlobStore::new(account.clone()).with_container(container);
    proxy.reset();
    let outcome = cold
        .append(&s, Exact(EVENTS as u64), events(1))
        .await
        .unwrap();
    assert_eq!(outcome.version, EVENTS as u64 + 1);
    let cold_bytes = proxy.bytes_received_from_upstream();
    eprintln!(
        "cold append: {} requests, {cold_bytes} response bytes; blob {blob_len} bytes: {:?}",
        proxy.requests(),
        proxy.log()
    );
    assert!(
        cold_bytes < 16 * 1024,
        "a cold append read {cold_bytes} bytes of a {blob_len}-byte blob: {:?}",
        proxy.log()
    );

    // The same writer again: its cache matches, one request (the conditional append).
    proxy.reset();
    let outcome = cold
        .append(&s, Exact(EVENTS as u64 + 1), events(1))
        .await
        .unwrap();
    assert_eq!(outcome.version, EVENTS as u64 + 2);
    assert_eq!(proxy.requests(), 1, "{:?}", proxy.log());

    // A reader catching up reads only what is new: one request, a few bytes.
    proxy.reset();
    let caught_up = cold
        .read(&s, ReadRequest::after(EVENTS as u64))
        .await
        .unwrap();
    assert_eq!(caught_up.events.len(), 2);
    assert_eq!(proxy.requests(), 1, "{:?}", proxy.log());
    assert!(proxy.bytes_received_from_upstream() < 4 * 1024);

    // The counter does see whole-blob reads: a full read by a cold reader fetches it all.
    let reader = BlobStore::new(account).with_container(container);
    proxy.reset();
    let all = reader.read(&s, ReadRequest::all()).await.unwrap();
    assert_eq!(all.events.len(), EVENTS + 2);
    assert!(proxy.bytes_received_from_upstream() >= blob_len);
}

/// Metadata is a hint: a wrong one is detected against the content and ignored. Content that
/// breaks the sequence is reported as `Corrupt`, never skipped over.
#[tokio::test]
async fn hints_are_checked_and_broken_streams_are_reported() {
    let setup = Setup::new().await;
    let s = stream("hinted");
    setup.store.append(&s, NoStream, events(3)).await.unwrap();
    let name = "Bank/Account/hinted/000000.jsonl";
    let content = setup.blob_content(name).await;
    let first_record_end = content.iter().position(|&b| b == b'\n').unwrap() + 1;
    let blob = setup.container_client().blob_client(name);
    let set_hint = |version: u64, length: usize| {
        let mut metadata = azure_core::prelude::Metadata::new();
        metadata.insert("firstsequence", "1");
        metadata.insert("version", version.to_string());
        metadata.insert("length", length.to_string());
        metadata.insert("blocks", "1");
        blob.set_metadata().metadata(metadata)
    };

    // An offset inside a record; a record boundary with the wrong version; past the end.
    let mut version = 3;
    for (hinted_version, length) in [
        (1, first_record_end - 3),
        (2, first_record_end),
        (9, content.len() + 1_000),
    ] {
        set_hint(hinted_version, length).await.unwrap();
        assert_eq!(
            setup.fresh_store().version(&s).await.unwrap(),
            version,
            "hint ({hinted_version}, {length})"
        );
        let outcome = setup
            .fresh_store()
            .append(&s, Exact(version), events(1))
            .await
            .unwrap();
        assert_eq!(outcome.first_sequence, version + 1);
        version += 1;
    }
    assert_eq!(contiguous(&setup.store, &s).await.len() as u64, version);

    // A segment that does not continue the stream: its first record repeats event 1.
    let bogus = setup
        .container_client()
        .blob_client("Bank/Account/hinted/000001.jsonl");
    bogus.put_append_blob().await.unwrap();
    bogus
        .append_block(content[..first_record_end].to_vec())
        .await
        .unwrap();
    let reader = setup.fresh_store();
    let results = [
        reader.read(&s, ReadRequest::all()).await.map(|_| ()),
        setup.fresh_store().version(&s).await.map(|_| ()),
    ];
    for result in results {
        match result {
            Err(StoreError::Corrupt { stream, detail }) => {
                assert_eq!(stream, "Bank/Account/hinted");
                assert!(detail.contains("segment 1"), "{detail}");
            }
            other => panic!("{other:?}"),
        }
    }
}

/// A proxy in front of Azurite's blob service that forwards every request, but answers the
/// next `n` append-block requests with 500 whatever storage did with them: a response lost
/// after the write was applied (or not).
struct LossyProxy {
    port: u16,
    lose: Arc<AtomicUsize>,
    task: tokio::task::JoinHandle<()>,
}

impl LossyProxy {
    /// Headers that belong to one connection, not forwarded either way.
    const HOP_BY_HOP: [&'static str; 4] = ["host", "connection", "transfer-encoding", "keep-alive"];

    async fn start(upstream_origin: String) -> Self {
        use warp::http::{HeaderMap, Method, StatusCode};
        use warp::Filter;

        let client = reqwest::Client::builder()
            .no_proxy()
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .unwrap();
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", 0))
            .await
            .unwrap();
        let port = listener.local_addr().unwrap().port();
        let lose = Arc::new(AtomicUsize::new(0));
        let shared = lose.clone();
        let query = warp::query::raw()
            .map(Some)
            .or(warp::any().map(|| None))
            .unify();
        let routes = warp::method()
            .and(warp::path::full())
            .and(query)
            .and(warp::header::headers_cloned())
            .and(warp::body::bytes())
            .then(
                move |method: Method,
                      path: warp::path::FullPath,
                      query: Option<String>,
                      headers: HeaderMap,
                      body: bytes::Bytes| {
                    let (client, origin, lose) =
                        (client.clone(), upstream_origin.clone(), shared.clone());
                    async move {
                        let url = match &query {
                            Some(q) => format!("{origin}{}?{q}", path.as_str()),
                            None => format!("{origin}{}", path.as_str()),
                        };
                        let mut forwarded = HeaderMap::new();
                        for (name, value) in &headers {
                            if !Self::HOP_BY_HOP.contains(&name.as_str()) {
                                forwarded.append(name.clone(), value.clone());
                            }
                        }
                        let response = client
                            .request(method, &url)
                            .headers(forwarded)
                            .body(body)
                            .send()
                            .await
                            .unwrap();
                        let is_append = query
                            .as_deref()
                            .is_some_and(|q| q.contains("comp=appendblock"));
                        let lost = is_append
                            && lose
                                .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| {
                                    n.checked_sub(1)
                                })
                                .is_ok();
                        if lost {
                            let mut reply = warp::reply::Response::new(bytes::Bytes::new().into());
                            *reply.status_mut() = StatusCode::INTERNAL_SERVER_ERROR;
                            return reply;
                        }
                        let status = response.status();
                        let mut reply_headers = HeaderMap::new();
                        for (name, value) in response.headers() {
                            if !Self::HOP_BY_HOP.contains(&name.as_str()) {
                                reply_headers.append(name.clone(), value.clone());
                            }
                        }
                        let body = response.bytes().await.unwrap();
                        let mut reply = warp::reply::Response::new(body.into());
                        *reply.status_mut() = status;
                        *reply.headers_mut() = reply_headers;
                        reply
                    }
                },
            );
        let task = tokio::spawn(warp::serve(routes).incoming(listener).run());
        Self { port, lose, task }
    }

    fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Loses the responses of the next `n` append-block requests.
    fn lose(&self, n: usize) {
        self.lose.store(n, Ordering::SeqCst);
    }
}

impl Drop for LossyProxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// A write whose response is lost is never written twice: the client's own retry (412) is
/// recognised as this append, and when every response is lost the caller is told the write
/// may have been applied, and its retry with the same ids is answered as a duplicate.
#[tokio::test]
async fn a_lost_append_response_never_writes_twice() {
    let azurite = Azurite::start().await.unwrap();
    let proxy = LossyProxy::start(format!("http://127.0.0.1:{}", azurite.blob_port)).await;
    let connection = Azurite::connection_string_for(
        &format!("{}/{}", proxy.url(), streamfold_testbed::azurite::ACCOUNT),
        &azurite.table_endpoint(),
    );
    let account = StorageAccount::from_connection_string(&connection).unwrap();
    let store = BlobStore::new(account.clone()).with_container("lossy");
    let s = stream("lossy");
    store.append(&s, NoStream, events(2)).await.unwrap();

    // One lost response: the transport's retry gets 412, and the events found at the position
    // this call wrote them are reported as written now.
    proxy.lose(1);
    let batch = events(3);
    let outcome = store.append(&s, Exact(2), batch.clone()).await.unwrap();
    assert_eq!(
        (outcome.first_sequence, outcome.version, outcome.duplicate),
        (3, 5, false)
    );
    assert_eq!(contiguous(&store, &s).await[2..], ids(&batch)[..]);

    // Every response lost: the outcome is unknown, and said to be.
    proxy.lose(usize::MAX);
    let unknown = events(2);
    match store.append(&s, Exact(5), unknown.clone()).await {
        Err(StoreError::Unavailable { maybe_applied, .. }) => assert!(maybe_applied),
        other => panic!("{other:?}"),
    }
    proxy.lose(0);
    let cold = BlobStore::new(account).with_container("lossy");
    for retrier in [store.clone(), cold] {
        let retry = retrier.append(&s, Exact(5), unknown.clone()).await.unwrap();
        assert_eq!(
            (retry.first_sequence, retry.version, retry.duplicate),
            (6, 7, true)
        );
    }
    let stored = contiguous(&store, &s).await;
    assert_eq!(stored.len(), 7);
    assert_eq!(stored[5..], ids(&unknown)[..]);
}
