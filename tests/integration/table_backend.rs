//! What the Table storage backend adds to the storage contract, against a real Azurite: the limits
//! of one entity group transaction (48 events, 4 MiB), what each operation costs in requests, a
//! transaction whose response is lost, reads past one 1,000-row page, a wrong key and an outage.
//! The contract itself is checked by the conformance suite
//! (`tests/contracts/conformance_table.rs`). Each test starts its own Azurite and uses its own
//! table.

use crate::conformance;
use crate::support::CountedStorage;

use conformance::helpers::{
    assert_misconfigured_everywhere, assert_unavailable_in_bounded_time, assert_wrong_version,
    contiguous, events, largest_fitting, sequences, sized_event, stream, wrong_key_account, DOMAIN,
    ENTITY,
};
use streamfold::storage::table::{
    TableStore, MAX_ENTITY_BYTES, MAX_EVENTS_PER_APPEND, MAX_TRANSACTION_BYTES,
};
use streamfold::storage::StorageAccount;
use streamfold::stream::{
    EntityType, EventStore, ExpectedVersion, NewEvent, ReadRequest, StoreError,
};
use streamfold::testing::RawClients;
use streamfold_testbed::proxy::Fault;
use streamfold_testbed::Azurite;
use uuid::Uuid;

use ExpectedVersion::{Any, Exact, NoStream};

async fn setup() -> (Azurite, TableStore) {
    let azurite = Azurite::start().await.expect("Azurite starts");
    let account = StorageAccount::from_connection_string(&azurite.connection_string()).unwrap();
    let table = format!("t{}", Uuid::new_v4().simple());
    (azurite, TableStore::new(account).with_table_name(table))
}

#[tokio::test]
async fn more_than_48_events_are_refused_before_any_write() {
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
        .list_streams(&EntityType::from_static(DOMAIN, ENTITY), None, 10)
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
}

#[tokio::test]
async fn an_append_over_the_transaction_byte_limit_is_refused_whole() {
    let (_azurite, store) = setup().await;
    let s = stream("heavy");
    store.append(&s, NoStream, events(1)).await.unwrap();
    // Events that each fit, together more than one transaction carries.
    let fits = |e: &NewEvent| TableStore::event_entity_size(&s, e) <= MAX_ENTITY_BYTES;
    let largest = largest_fitting(fits, 2 * MAX_ENTITY_BYTES);
    let count = MAX_TRANSACTION_BYTES / largest + 1;
    assert!(count <= MAX_EVENTS_PER_APPEND);
    let heavy: Vec<NewEvent> = (0..count).map(|_| sized_event(largest)).collect();
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
async fn request_counts_of_each_operation() {
    let azurite = Azurite::start().await.unwrap();
    let counted = CountedStorage::start(&azurite).await;
    let (proxy, connection) = (&counted.tables, counted.connection.clone());
    let account = StorageAccount::from_connection_string(&connection).unwrap();
    let store = TableStore::new(account.clone()).with_table_name("counted");
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
    store
        .read_known(&s, ReadRequest::after(50), 52)
        .await
        .unwrap();
    cost("read up to a known version: query", 1);

    let batch = events(2);
    store.append(&s, Exact(52), batch.clone()).await.unwrap();
    proxy.reset();
    assert!(store.append(&s, Exact(52), batch).await.unwrap().duplicate);
    cost("retry: header read (not at 52) + id query", 2);
    assert_wrong_version(store.append(&s, Exact(1), events(1)).await, Exact(1), 54);
    cost("conflict: header read + id query", 2);
    assert_wrong_version(store.append(&s, NoStream, events(1)).await, NoStream, 54);
    cost(
        "conflict: transaction + id query + header and tombstone row in one query",
        3,
    );

    // Another process appends at a version it has never seen: it reads the header for the
    // time of the event it follows, then appends; its next append is one request again.
    let other = TableStore::new(account).with_table_name("counted");
    other.append(&s, Exact(54), events(1)).await.unwrap();
    cost("table check + header read + transaction", 3);
    other.append(&s, Exact(55), events(1)).await.unwrap();
    cost("Exact append after its own", 1);
    // A process that read the version (as a command does) appends in one request.
    store.version(&s).await.unwrap();
    proxy.reset();
    store.append(&s, Exact(56), events(1)).await.unwrap();
    cost("Exact append after a version read", 1);

    // An erased stream refuses its writers with the same reads as any conflict: the header and
    // the tombstone row come in the one query that tells the actual version.
    store.erase(&s).await.unwrap();
    proxy.reset();
    let erased = |result: Result<streamfold::stream::AppendOutcome, StoreError>| {
        assert!(
            matches!(result, Err(StoreError::StreamErased { .. })),
            "{result:?}"
        )
    };
    erased(store.append(&s, NoStream, events(1)).await);
    cost(
        "erased, create: transaction + id query + header/tombstone query",
        3,
    );
    erased(store.append(&s, Exact(57), events(1)).await);
    cost(
        "erased, known version: transaction + id query + header/tombstone query",
        3,
    );
}

/// The inserts of a transaction ask storage not to echo the rows back (`204` instead of `201`
/// with the entity): the same insert answered to the crate's `TransactionBuilder` (no such
/// header) and to the backend's own `$batch` encoder, against Azurite.
#[tokio::test]
async fn transaction_inserts_ask_for_no_echo() {
    let azurite = Azurite::start().await.unwrap();
    let account = StorageAccount::from_connection_string(&azurite.connection_string()).unwrap();
    let entity = || {
        let row = Uuid::new_v4().to_string();
        serde_json::from_value::<serde_json::Map<String, serde_json::Value>>(
            serde_json::json!({"PartitionKey": "p", "RowKey": row, "Data": "x".repeat(1000)}),
        )
        .unwrap()
    };
    let table = account
        .table_service_client_with_options(account.client_options().unwrap())
        .unwrap()
        .table_client("echo");
    table.create().await.unwrap();
    let by_crate = table
        .partition_key_client("p")
        .transaction()
        .insert(entity())
        .unwrap()
        .await
        .unwrap();
    assert_eq!(u16::from(by_crate.operation_responses[0].status_code), 201);
    let own =
        streamfold::testing::azure::own_transaction(&account, "echo", "p", vec![entity()], vec![])
            .await
            .unwrap();
    assert_eq!(own, [204]);

    // And the store's own appends succeed with it (the conformance suite covers the rest).
    let store = TableStore::new(account).with_table_name("quiet");
    let s = stream("quiet");
    store.append(&s, NoStream, events(3)).await.unwrap();
    assert_eq!(contiguous(&store, &s).await.len(), 3);
}

#[tokio::test]
async fn a_lost_response_is_maybe_applied_and_a_retry_is_a_duplicate() {
    let (azurite, direct) = setup().await;
    // Every entity group transaction (`$batch`) reaches storage, and then the connection drops
    // before its answer: the write is applied, its response lost.
    let counted = CountedStorage::start(&azurite).await;
    counted.tables.inject(Fault::connection_lost("$batch"));
    let connection = counted.connection.clone();
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
    assert_eq!(contiguous(&store, &s).await.len() as u64, total);
    let across = store
        .read(&s, ReadRequest::range(995, Some(1_005)))
        .await
        .unwrap();
    assert_eq!(sequences(&across), (995..=1_005).collect::<Vec<_>>());
}

#[tokio::test]
async fn a_wrong_key_is_misconfigured() {
    let azurite = Azurite::start().await.unwrap();
    assert_misconfigured_everywhere(
        &TableStore::new(wrong_key_account(&azurite)).with_table_name("wrongkey"),
    )
    .await;
}

#[tokio::test]
async fn a_storage_outage_gives_unavailable_in_bounded_time() {
    let (mut azurite, store) = setup().await;
    let s = stream("outage");
    store.append(&s, NoStream, events(1)).await.unwrap();
    azurite.stop().await;
    assert_unavailable_in_bounded_time(&store, &s, 1).await;
    // A new store (table not yet created in this process) fails the same way.
    let fresh = store.clone().with_table_name("freshtable");
    assert_unavailable_in_bounded_time(&fresh, &s, 1).await;
}

/// Rows stored by an older version (or another tool) whose recorded times go back: reads
/// report each event's time as at least its predecessor's, and a read as of a time ends at the
/// first event recorded after it, from any first sequence — never a later event without the
/// one before it. (New appends cannot store such rows: each records at least its predecessor's
/// time, see the conformance suite.)
#[tokio::test]
async fn stored_times_that_go_back_read_as_a_prefix() {
    let azurite = Azurite::start().await.unwrap();
    let account = StorageAccount::from_connection_string(&azurite.connection_string()).unwrap();
    let store = TableStore::new(account.clone()).with_table_name("older");
    let s = stream("older");
    for version in 0..3 {
        store.append(&s, Exact(version), events(1)).await.unwrap();
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
    let stored = store.read(&s, ReadRequest::all()).await.unwrap().events;
    let (t1, t3) = (stored[0].timestamp, stored[2].timestamp);
    // Event 2 as a writer whose clock was a second behind stored it.
    let earlier = t1 - time::Duration::seconds(1);
    let text = earlier
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap();
    let partition = format!("{DOMAIN}|{ENTITY}|older");
    let answer = account
        .table_service_client()
        .unwrap()
        .table_client("older")
        .partition_key_client(partition)
        .entity_client("E-0000000002")
        .merge(
            serde_json::json!({"Recorded": text, "Recorded@odata.type": "Edm.DateTime"}),
            azure_data_tables::prelude::IfMatchCondition::Any,
        )
        .unwrap()
        .await;
    assert!(answer.is_ok(), "{answer:?}");

    for reader in [
        store.clone(),
        TableStore::new(account).with_table_name("older"),
    ] {
        let all = reader.read(&s, ReadRequest::all()).await.unwrap();
        let times: Vec<_> = all.events.iter().map(|e| e.timestamp).collect();
        assert_eq!(
            times,
            vec![t1, t1, t3],
            "event 2 reads as recorded with event 1"
        );
        let as_of = |from: u64, t: time::OffsetDateTime| {
            let reader = reader.clone();
            let s = s.clone();
            async move {
                let read = reader
                    .read(&s, ReadRequest::range(from, None).as_of(t))
                    .await
                    .unwrap();
                let known = reader
                    .read_known(&s, ReadRequest::range(from, None).as_of(t), 3)
                    .await
                    .unwrap();
                assert_eq!(
                    sequences(&read),
                    known.iter().map(|e| e.sequence).collect::<Vec<_>>()
                );
                sequences(&read)
            }
        };
        // Before event 1: nothing, though event 2 was stored with an earlier time.
        assert_eq!(as_of(1, earlier).await, Vec::<u64>::new());
        assert_eq!(as_of(2, earlier).await, Vec::<u64>::new());
        assert_eq!(as_of(1, t1).await, vec![1, 2]);
        assert_eq!(as_of(2, t1).await, vec![2]);
        assert_eq!(as_of(3, t1).await, Vec::<u64>::new());
        assert_eq!(as_of(2, t3).await, vec![2, 3]);
    }
}

/// The backend writes its transactions with its own `$batch` encoder: the same entity inserted
/// and then merged by `azure_data_tables`' `TransactionBuilder` and by that encoder reads back
/// with every property, value and `@odata.type` equal (full metadata), so rows written before
/// and after the change are the same rows.
#[tokio::test]
async fn rows_written_by_the_crate_and_by_the_own_encoder_are_identical() {
    use azure_data_tables::prelude::IfMatchCondition;
    type Entity = serde_json::Map<String, serde_json::Value>;

    let azurite = Azurite::start().await.unwrap();
    let account = StorageAccount::from_connection_string(&azurite.connection_string()).unwrap();
    let table_name = format!("t{}", Uuid::new_v4().simple());
    let table = account
        .table_service_client()
        .unwrap()
        .table_client(table_name.clone());
    table.create().await.unwrap();
    let partition_key = "Bank|Account|O'Brien ü 50% a+b";
    let quoted = partition_key.replace('\'', "''");
    let entity = |row_key: &str| -> Entity {
        serde_json::from_value(serde_json::json!({
            "PartitionKey": partition_key,
            "RowKey": row_key,
            "EventId": Uuid::nil().to_string(),
            "EventType": "Deposited",
            "Recorded@odata.type": "Edm.DateTime",
            "Recorded": "2026-12-02T06:00:00.1234567Z",
            "SchemaVersion@odata.type": "Edm.Int64",
            "SchemaVersion": "9999999999",
            "Who": "O'Brien \"the\" <admin> \\ 𝄞",
            "Data": "{\"amount\":\"10.50\",\"note\":\"line\\nbreak\"}",
        }))
        .unwrap()
    };
    let merge: Entity = serde_json::from_value(serde_json::json!({
        "Version@odata.type": "Edm.Int64",
        "Version": "42",
        "LastRecorded@odata.type": "Edm.DateTime",
        "LastRecorded": "2026-12-02T06:00:01.0000001Z",
    }))
    .unwrap();

    // One row may appear once per transaction: the insert and the merge are two of them.
    let batch = || table.partition_key_client(quoted.clone()).transaction();
    for answer in [
        batch().insert(entity("by-crate")).unwrap().await.unwrap(),
        batch()
            .merge("by-crate", merge.clone(), Some(IfMatchCondition::Any))
            .unwrap()
            .await
            .unwrap(),
    ] {
        assert!(answer
            .operation_responses
            .iter()
            .all(|r| r.status_code.is_success()));
    }
    let own = |inserts, merges| {
        streamfold::testing::azure::own_transaction(
            &account,
            &table_name,
            partition_key,
            inserts,
            merges,
        )
    };
    // One operation each, answered 204: an insert without its echo, a merge.
    assert_eq!(
        own(vec![entity("by-own-encoder")], vec![]).await.unwrap(),
        [204]
    );
    assert_eq!(
        own(vec![], vec![("by-own-encoder".to_owned(), merge)])
            .await
            .unwrap(),
        [204]
    );

    let read = |row_key: &'static str| {
        let client = table
            .partition_key_client(quoted.clone())
            .entity_client(row_key);
        async move {
            let mut row = client.get::<Entity>().await.unwrap().entity;
            row.retain(|name, _| {
                !(name.starts_with("odata.") || name.starts_with("Timestamp") || name == "RowKey")
            });
            row
        }
    };
    let by_crate = read("by-crate").await;
    let by_own = read("by-own-encoder").await;
    assert_eq!(by_crate["SchemaVersion@odata.type"], "Edm.Int64");
    assert_eq!(by_crate["Version@odata.type"], "Edm.Int64");
    assert_eq!(by_crate["Recorded@odata.type"], "Edm.DateTime");
    assert_eq!(by_crate.len(), 13, "{by_crate:?}");
    assert_eq!(by_own, by_crate);
}
