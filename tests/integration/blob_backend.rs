//! What the Append Blob backend adds to the storage contract, against a real Azurite: the
//! layout (newline-delimited JSON any tool can read), one block per append, segment rollover,
//! what an append costs on a long stream (requests and bytes, through a counting proxy),
//! segment metadata that is only a hint, a lost append response, a wrong key and an outage.
//! The contract itself is checked by the conformance suite (`tests/contracts/conformance_blob.rs`).
//! Each test starts its own Azurite and uses its own container.

use crate::conformance;
use crate::support::CountedStorage;

use conformance::helpers::{
    assert_misconfigured_everywhere, assert_unavailable_in_bounded_time, assert_wrong_version,
    contiguous, event, events, ids, sized_event, stream, wrong_key_account, DOMAIN, ENTITY,
};
use futures::StreamExt;
use streamfold::storage::blob::{
    escape_instance, record_size_bound, BlobStore, HINT_INTERVAL_BYTES, MAX_BLOCK_BYTES,
};
use streamfold::storage::StorageAccount;
use streamfold::stream::{
    EntityType, EventStore, ExpectedVersion, NewEvent, ReadRequest, StoreError,
};
use streamfold::testing::RawClients;
use streamfold_testbed::proxy::Fault;
use streamfold_testbed::Azurite;
use uuid::Uuid;

use ExpectedVersion::{Any, Exact, Exists, NoStream};

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

/// A stream is newline-delimited JSON in `{domain}/{entity}/{escaped instance}/000000.jsonl`,
/// `000001.jsonl`, ...: one record per event, the data embedded as given where it fits on one
/// line. A refused append creates no blob.
#[tokio::test]
async fn streams_are_json_lines_any_tool_can_read() {
    let setup = Setup::new().await;
    let store = &setup.store;
    for expected in [Exists, Exact(1)] {
        let refused = store.append(&stream("missing"), expected, events(1)).await;
        assert_wrong_version(refused, expected, 0);
    }
    assert!(setup.blob_names(&format!("{DOMAIN}/")).await.is_empty());

    let s = stream("layout");
    let datas = [
        r#"{"amount":"0.10","exact":0.10000000000000000001,"big":123456789012345678901234567890}"#,
        "{\n  \"pretty\": true\n}",
        "  \"surrounded by spaces\"\t",
        "null",
    ];
    let batch: Vec<NewEvent> = datas.iter().map(|d| event("Deposited", d)).collect();
    store.append(&s, NoStream, batch.clone()).await.unwrap();
    let name = "Shop/Cart/layout/000000.jsonl";
    assert_eq!(setup.blob_names("Shop/Cart/layout/").await, vec![name]);
    let text = String::from_utf8(setup.blob_content(name).await).unwrap();
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

    // Instance keys are escaped in blob names, and case matters: two virtual directories.
    for key in ["50%", "Abc", "abc"] {
        store
            .append(&stream(key), NoStream, events(1))
            .await
            .unwrap();
    }
    assert_eq!(setup.blob_names("Shop/Cart/Abc/").await.len(), 1);
    assert_eq!(setup.blob_names("Shop/Cart/abc/").await.len(), 1);
    assert_eq!(
        setup
            .blob_names(&format!("Shop/Cart/{}/", escape_instance("50%")))
            .await,
        vec!["Shop/Cart/50%25/000000.jsonl"]
    );
}

/// An append is one block: two events that each fit, but not together, are refused whole
/// before any write.
#[tokio::test]
async fn an_append_over_one_block_is_refused_whole() {
    let setup = Setup::new().await;
    let s = stream("large");
    setup.store.append(&s, NoStream, events(1)).await.unwrap();
    let half = sized_event(MAX_BLOCK_BYTES / 2);
    assert!(record_size_bound(&half).unwrap() <= MAX_BLOCK_BYTES);
    let pair = vec![half.clone(), sized_event(MAX_BLOCK_BYTES / 2)];
    match setup.store.append(&s, Exact(1), pair).await {
        Err(StoreError::AppendTooLarge { events, bytes, .. }) => {
            assert_eq!(events, 2);
            assert!(bytes > MAX_BLOCK_BYTES);
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(setup.store.version(&s).await.unwrap(), 1);
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
    let names = setup.blob_names("Shop/Cart/rolling/").await;
    assert_eq!(
        names,
        (0..4)
            .map(|n| format!("Shop/Cart/rolling/{n:06}.jsonl"))
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
    assert_eq!(setup.blob_names("Shop/Cart/rolling/").await.len(), 5);
    // A stream of several segments is listed once.
    let listed = store
        .list_streams(&EntityType::from_static(DOMAIN, ENTITY), None, 10)
        .await
        .unwrap();
    assert_eq!(listed.instances, vec!["rolling".to_owned()]);
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
                assert_wrong_version(Err::<(), _>(lost), Exact(version), version + 1);
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

/// THE cost test: on a 5,000-event stream, a writer with a cold cache reads only the tail
/// after the segment's hint (not the blob), and a warm writer's append is one request.
#[tokio::test]
async fn appends_read_only_the_tail_and_warm_appends_cost_one_request() {
    const EVENTS: usize = 5_000;
    const PER_APPEND: usize = 500;
    let azurite = Azurite::start().await.unwrap();
    let counted = CountedStorage::start(&azurite).await;
    let (proxy, connection) = (&counted.blobs, counted.connection.clone());
    // The event-id index is in Table storage: counted apart.
    let tables = &counted.tables;
    let account = StorageAccount::from_connection_string(&connection).unwrap();
    let container = "costs";
    let builder = BlobStore::new(account.clone()).with_container(container);
    let s = stream("long");
    let padding = "p".repeat(200);
    for n in 0..EVENTS / PER_APPEND {
        let batch: Vec<NewEvent> = (0..PER_APPEND)
            .map(|i| {
                event(
                    "Deposited",
                    &format!(r#"{{"n":{},"pad":"{padding}"}}"#, n * PER_APPEND + i),
                )
            })
            .collect();
        builder
            .append(&s, Exact((n * PER_APPEND) as u64), batch)
            .await
            .unwrap();
    }
    let blob = "Shop/Cart/long/000000.jsonl";
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
    tables.reset();
    let outcome = cold
        .append(&s, Exact(EVENTS as u64), events(1))
        .await
        .unwrap();
    assert_eq!(outcome.version, EVENTS as u64 + 1);
    let cold_bytes = proxy.bytes_received_from_upstream();
    eprintln!(
        "cold append: {} requests, {cold_bytes} response bytes; blob {blob_len} bytes: {:?}; \
         event-id index: {} requests, {} response bytes",
        proxy.requests(),
        proxy.log(),
        tables.requests(),
        tables.bytes_received_from_upstream(),
    );
    // The writer kept the index up: the cold writer learns every id from one row of
    // fingerprints (4 bytes an event) and reads no event after it (plus the process's check
    // that the index table exists).
    assert!(tables.requests() <= 2, "{:?}", tables.log());
    assert!(tables.bytes_received_from_upstream() < 64 * 1024);
    assert!(
        cold_bytes < 16 * 1024,
        "a cold append read {cold_bytes} bytes of a {blob_len}-byte blob: {:?}",
        proxy.log()
    );

    // The same writer again: its cache matches and it vouches for the new id, so one request
    // (the conditional append) and no index lookup.
    proxy.reset();
    tables.reset();
    let outcome = cold
        .append(&s, Exact(EVENTS as u64 + 1), events(1))
        .await
        .unwrap();
    assert_eq!(outcome.version, EVENTS as u64 + 2);
    assert_eq!(proxy.requests(), 1, "{:?}", proxy.log());
    assert_eq!(tables.requests(), 0, "{:?}", tables.log());

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
    let name = "Shop/Cart/hinted/000000.jsonl";
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
        .blob_client("Shop/Cart/hinted/000001.jsonl");
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
                assert_eq!(stream, "Shop/Cart/hinted");
                assert!(detail.contains("segment 1"), "{detail}");
            }
            other => panic!("{other:?}"),
        }
    }
}

/// What an append-block request's query holds.
const APPEND_BLOCK: &str = "comp=appendblock";

/// A write whose response is lost is never written twice: the client's own retry (412) is
/// recognised as this append, and when every response is lost the caller is told the write
/// may have been applied, and its retry with the same ids is answered as a duplicate.
#[tokio::test]
async fn a_lost_append_response_never_writes_twice() {
    let azurite = Azurite::start().await.unwrap();
    let counted = CountedStorage::start(&azurite).await;
    let (proxy, connection) = (&counted.blobs, counted.connection.clone());
    let account = StorageAccount::from_connection_string(&connection).unwrap();
    let store = BlobStore::new(account.clone()).with_container("lossy");
    let s = stream("lossy");
    store.append(&s, NoStream, events(2)).await.unwrap();

    // One lost response (the block is appended, the answer replaced by a 500): the transport's
    // retry gets 412, and the events found at the position this call wrote them are reported
    // as written now.
    proxy.inject(Fault::answer_lost(APPEND_BLOCK, 500, "InternalError").times(1));
    let batch = events(3);
    let outcome = store.append(&s, Exact(2), batch.clone()).await.unwrap();
    assert_eq!(
        (outcome.first_sequence, outcome.version, outcome.duplicate),
        (3, 5, false)
    );
    assert_eq!(contiguous(&store, &s).await[2..], ids(&batch)[..]);

    // Every response lost: the outcome is unknown, and said to be.
    proxy.inject(Fault::answer_lost(APPEND_BLOCK, 500, "InternalError"));
    let unknown = events(2);
    match store.append(&s, Exact(5), unknown.clone()).await {
        Err(StoreError::Unavailable { maybe_applied, .. }) => assert!(maybe_applied),
        other => panic!("{other:?}"),
    }
    proxy.clear_faults();
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

#[tokio::test]
async fn a_wrong_key_is_misconfigured() {
    let azurite = Azurite::start().await.unwrap();
    assert_misconfigured_everywhere(
        &BlobStore::new(wrong_key_account(&azurite)).with_container("wrongkey"),
    )
    .await;
    let account = StorageAccount::from_connection_string(&azurite.connection_string()).unwrap();
    let bad_name = BlobStore::new(account).with_container("Not_Valid");
    assert!(matches!(
        bad_name.version(&stream("x")).await,
        Err(StoreError::Misconfigured(_))
    ));
}

#[tokio::test]
async fn a_storage_outage_gives_unavailable_in_bounded_time() {
    let mut setup = Setup::new().await;
    let s = stream("outage");
    setup.store.append(&s, NoStream, events(1)).await.unwrap();
    setup.azurite.stop().await;
    assert_unavailable_in_bounded_time(&setup.store, &s, 1).await;
    // A new store (container not yet created in this process) fails the same way.
    let fresh = setup.fresh_store().with_container("fresh-container");
    assert_unavailable_in_bounded_time(&fresh, &s, 1).await;
}
