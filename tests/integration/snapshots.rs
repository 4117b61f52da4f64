//! GetBalance on a 10,000-event account reads the snapshot and only the events after it, on
//! each backend, and a warm instance asked again reads only the stream's version (counted by
//! proxies in front of Azurite's table and blob endpoints).

use crate::support;

use serde_json::json;
use streamfold_testbed::Azurite;
use support::{start_host, Client, CountedStorage};

const EVENTS: usize = 10_000;
const BATCH: usize = 40;

async fn long_account_reads_only_the_tail(backend: Option<&str>) {
    let azurite = Azurite::start().await.unwrap();
    let CountedStorage {
        tables,
        blobs,
        connection,
    } = CountedStorage::start(&azurite).await;
    let mut settings = vec![("AzureWebJobsStorage".to_owned(), connection)];
    if let Some(backend) = backend {
        settings.push((
            "Bank.Account".into(),
            format!("{backend};AzureWebJobsStorage"),
        ));
    }
    let (host, _dir) = start_host(settings).await;
    let c = Client::new(host.base_url());

    c.post("/api/OpenAccount/LONG-1", &json!({})).await.ok(201);
    let deposit = json!({"eventType": "MoneyDeposited", "data": {"amount": "1.00"}});
    let mut version = 1;
    while version < EVENTS as u64 {
        let n = BATCH.min(EVENTS - version as usize);
        let reply = c
            .post(
                "/api/streams/Bank/Account/LONG-1",
                &json!({"expectedVersion": version, "events": vec![deposit.clone(); n]}),
            )
            .await;
        version = reply.ok(201)["version"].as_u64().unwrap();
    }

    // The first GetBalance replays everything and leaves a snapshot behind.
    let full = c.get("/api/GetBalance/LONG-1").await;
    assert_eq!(full.ok(200)["balance"], "9999.00");
    assert_eq!(full.body["sequence"], EVENTS as u64);

    for _ in 0..3 {
        c.post("/api/Deposit/LONG-1", &json!({"amount": 1}))
            .await
            .ok(200);
    }

    // A cold instance (the handler restarted: no state or tail cached in process) reads the
    // snapshot and only what follows it.
    host.kill_handler().await.unwrap();
    host.wait_until_ready(std::time::Duration::from_secs(60))
        .await
        .unwrap();
    // (The new process's one-off table checks are made by another account's read.)
    c.get("/api/GetBalance/NOBODY").await.problem(404);
    tables.reset();
    blobs.reset();
    let after = c.get("/api/GetBalance/LONG-1").await;
    assert_eq!(after.ok(200)["balance"], "10002.00");
    assert_eq!(after.body["sequence"], EVENTS as u64 + 3);
    let requests = tables.requests() + blobs.requests();
    let bytes = tables.bytes_received_from_upstream() + blobs.bytes_received_from_upstream();
    // The snapshot, then the events after it (plus the stream's version): a handful of
    // requests and a few KiB, where a replay reads 10,000 rows in ten pages (megabytes).
    assert!(
        requests <= 4,
        "requests: {:?} {:?}",
        tables.log(),
        blobs.log()
    );
    assert!(
        bytes < 64 * 1024,
        "read {bytes} bytes: {:?} {:?}",
        tables.log(),
        blobs.log()
    );

    // The same answer as a replay without the snapshot (as of a sequence past the snapshot's
    // would use it too, so compare with the history's own sum instead).
    // Asked again, the now warm instance starts from the state it ended with, and the stream
    // has not moved: reading its version is all it costs.
    tables.reset();
    blobs.reset();
    let again = c.get("/api/GetBalance/LONG-1").await;
    assert_eq!(again.ok(200)["balance"], "10002.00");
    assert_eq!(
        tables.requests() + blobs.requests(),
        1,
        "requests: {:?} {:?}",
        tables.log(),
        blobs.log()
    );

    let history = c
        .get(&format!(
            "/api/GetAccountHistory/LONG-1?fromSequence={}",
            EVENTS + 1
        ))
        .await;
    assert_eq!(history.ok(200)["events"].as_array().unwrap().len(), 3);
}

#[tokio::test]
async fn a_long_table_stream_reads_the_snapshot_and_the_tail() {
    long_account_reads_only_the_tail(None).await;
}

#[tokio::test]
async fn a_long_blob_stream_reads_the_snapshot_and_the_tail() {
    long_account_reads_only_the_tail(Some("AppendBlob")).await;
}
