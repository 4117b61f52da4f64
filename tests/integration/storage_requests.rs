//! What one operation costs in storage requests, counted by a proxy in front of Azurite: an
//! append with a known expected version is exactly one request (the seed's design costs
//! three).

use crate::support;

use serde_json::json;
use streamfold::notify::{Notification, NotificationSchema};
use streamfold::readmodel::{DEFAULT_READ_MODEL_TABLE, GUESS_FROM};
use streamfold::stream::StreamId;
use streamfold_testbed::hostsim::HostSim;
use streamfold_testbed::proxy::ProxiedRequest;
use streamfold_testbed::Azurite;
use support::{start_host, Client, CountedStorage};

/// The app under the host simulator, its default storage a `CountedStorage` in front of a
/// fresh Azurite, and a client of it (fields drop client first, Azurite last).
struct CountedApp {
    c: Client,
    _host: HostSim,
    _dir: tempfile::TempDir,
    counted: CountedStorage,
    _azurite: Azurite,
}

impl CountedApp {
    async fn start() -> Self {
        let azurite = Azurite::start().await.unwrap();
        let counted = CountedStorage::start(&azurite).await;
        let (host, dir) = start_host(vec![(
            "AzureWebJobsStorage".into(),
            counted.connection.clone(),
        )])
        .await;
        Self {
            c: Client::new(host.base_url()),
            _host: host,
            _dir: dir,
            counted,
            _azurite: azurite,
        }
    }
}

#[tokio::test]
async fn an_append_with_a_known_version_is_one_table_request() {
    let app = CountedApp::start().await;
    let (proxy, c) = (&app.counted.tables, &app.c);
    let path = "/api/streams/Shop/Cart/c1";

    // The first request of the process creates the table; not counted.
    c.post(
        path,
        &json!({"expectedVersion": "noStream", "events": [{"eventType": "Created", "data": {}}]}),
    )
    .await
    .ok(201);

    proxy.reset();
    c.post(
        path,
        &json!({"expectedVersion": 1, "events": [{"eventType": "Added", "data": {"sku": "a"}}]}),
    )
    .await
    .ok(201);
    assert_eq!(
        proxy.requests(),
        1,
        "append with a known version: {:?}",
        proxy.log()
    );

    // A refused append: the failed transaction, then two reads to tell an idempotent retry (the
    // event ids) and an erased stream (its tombstone row) from a conflict and to report the
    // actual version (the header, in the same query as the tombstone row). Only the failure
    // path pays for them.
    proxy.reset();
    c.post(
        path,
        &json!({"expectedVersion": "noStream", "events": [{"eventType": "Created", "data": {}}]}),
    )
    .await
    .problem(409);
    assert_eq!(proxy.requests(), 3, "refused append: {:?}", proxy.log());

    proxy.reset();
    c.post(
        "/api/streams/Shop/Cart/c2",
        &json!({"expectedVersion": "noStream", "events": [{"eventType": "Created", "data": {}}]}),
    )
    .await
    .ok(201);
    assert_eq!(proxy.requests(), 1, "new stream: {:?}", proxy.log());

    proxy.reset();
    c.post("/api/OpenAccount/A-1", &json!({})).await.ok(201);
    assert_eq!(proxy.requests(), 1, "open account: {:?}", proxy.log());
}

/// A warm instance: a command starts from the state its last command left cached (so it reads
/// only the stream's version), and a query after it reads nothing else either. Both backends.
async fn commands_on_a_warm_instance(backend: &str) {
    let azurite = Azurite::start().await.unwrap();
    let counted = CountedStorage::start(&azurite).await;
    let settings = vec![
        ("AzureWebJobsStorage".into(), counted.connection.clone()),
        (
            "Bank.Account".into(),
            format!("{backend};AzureWebJobsStorage"),
        ),
    ];
    let (host, _dir) = start_host(settings).await;
    let c = Client::new(host.base_url());
    let requests = || counted.tables.requests() + counted.blobs.requests();
    let log = || format!("{:?} {:?}", counted.tables.log(), counted.blobs.log());
    let reset = || {
        counted.tables.reset();
        counted.blobs.reset();
    };

    c.post("/api/OpenAccount/W-1", &json!({})).await.ok(201);
    // The first command reads the account (and makes the process's one-off table checks).
    c.post("/api/Deposit/W-1", &json!({"amount": 5}))
        .await
        .ok(200);

    reset();
    let second = c.post("/api/Deposit/W-1", &json!({"amount": 7})).await;
    assert_eq!(second.ok(200)["balance"], "12.00");
    assert_eq!(requests(), 2, "the version, then the append: {}", log());

    reset();
    let balance = c.get("/api/GetBalance/W-1").await;
    assert_eq!(balance.ok(200)["balance"], "12.00");
    assert_eq!(balance.body["sequence"], 3);
    assert_eq!(requests(), 1, "the version alone: {}", log());

    // Another writer moves the stream: the next command reads what it wrote, and is right.
    reset();
    c.post(
        "/api/streams/Bank/Account/W-1",
        &json!({"expectedVersion": 3, "events": [{"eventType": "MoneyDeposited", "data": {"amount": "100.00"}}]}),
    )
    .await
    .ok(201);
    let third = c.post("/api/Withdraw/W-1", &json!({"amount": 112})).await;
    assert_eq!(third.ok(200)["balance"], "0.00");
    let balance = c.get("/api/GetBalance/W-1").await;
    assert_eq!(balance.ok(200)["balance"], "0.00");
    assert_eq!(balance.body["sequence"], 5);
}

#[tokio::test]
async fn commands_on_a_warm_instance_read_only_the_version_on_table_storage() {
    commands_on_a_warm_instance("Table").await;
}

#[tokio::test]
async fn commands_on_a_warm_instance_read_only_the_version_on_append_blobs() {
    commands_on_a_warm_instance("AppendBlob").await;
}

/// The notification of event `sequence` of account `account`, as Event Grid delivers it.
async fn projector_notification(c: &Client, account: &str, sequence: u64) -> serde_json::Value {
    let events = support::recorded_events(c, "Bank", "Account", account, sequence).await;
    let stream = StreamId::new("Bank", "Account", account).unwrap();
    let notification = Notification::new_event(&stream, &events[0]);
    let event: serde_json::Value = serde_json::from_slice(
        &NotificationSchema::EventGridEvent
            .encode(&notification)
            .unwrap(),
    )
    .unwrap();
    json!([event])
}

/// The Projector's one write of a notification: a row save, as a single-entity request of
/// `method` on the read-model table (`/{account}/streamfoldreadmodels`, the entity's own URL
/// for a merge), never an entity group transaction (`$batch`).
fn assert_one_row_write(log: &[ProxiedRequest], method: &str, on_entity: bool) {
    let writes: Vec<&ProxiedRequest> = log.iter().filter(|r| r.method != "GET").collect();
    assert_eq!(writes.len(), 1, "one write, the row's save: {log:?}");
    let write = writes[0];
    assert_eq!(write.method, method, "{write}");
    let table = write
        .path
        .rsplit('/')
        .next()
        .unwrap_or_default()
        .split('(')
        .next()
        .unwrap_or_default();
    assert_eq!(table, DEFAULT_READ_MODEL_TABLE, "{write}");
    assert_eq!(
        write.path.ends_with("RowKey='P-1')"),
        on_entity,
        "the entity's URL only for a merge: {write}"
    );
}

/// The Projector applying a notification to an account without a row: the row and the events
/// are read at the same time, and without the stream's header (the notification proves its
/// event is stored; the events read end where the stored ones end), then the row is saved with
/// one Insert Entity — three requests, as the same work done directly costs. The same
/// notification again costs none (this process saw the row at that event); the next event's
/// costs two, the events' read and one Merge Entity on the ETag the insert answered.
#[tokio::test]
async fn the_projector_applies_a_notification_with_three_table_requests() {
    let app = CountedApp::start().await;
    let (proxy, c) = (&app.counted.tables, &app.c);
    for account in ["W-1", "P-1"] {
        c.post(&format!("/api/OpenAccount/{account}"), &json!({}))
            .await
            .ok(201);
    }
    c.post("/api/Deposit/P-1", &json!({"amount": 5}))
        .await
        .ok(200);
    // The process's one-off check of the read-model table; not counted.
    let warm_up = projector_notification(c, "W-1", 1).await;
    assert_eq!(c.deliver_to_projector(warm_up.to_string()).await, 202);

    let notification = projector_notification(c, "P-1", 2).await;
    proxy.reset();
    assert_eq!(c.deliver_to_projector(notification.to_string()).await, 202);
    let log = proxy.log();
    assert_eq!(
        log.len(),
        3,
        "the row and the events together, the save: {log:?}"
    );
    assert!(
        !log.iter().any(|line| line.contains("RowKey='HEAD'")),
        "no header read: {log:?}"
    );
    assert_one_row_write(&proxy.entries(), "POST", false);

    proxy.reset();
    assert_eq!(c.deliver_to_projector(notification.to_string()).await, 202);
    assert_eq!(proxy.requests(), 0, "{:?}", proxy.log());

    // The next event's: the process kept the row it saved, with the ETag the insert answered,
    // so the events after it and one Merge Entity on that ETag, no read of the row.
    c.post("/api/Deposit/P-1", &json!({"amount": 2}))
        .await
        .ok(200);
    let next = projector_notification(c, "P-1", 3).await;
    proxy.reset();
    assert_eq!(c.deliver_to_projector(next.to_string()).await, 202);
    assert_eq!(proxy.requests(), 2, "{:?}", proxy.log());
    assert_one_row_write(&proxy.entries(), "MERGE", true);

    let reply = c.get("/api/Accounts").await;
    let p1 = reply.ok(200)["accounts"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["accountNumber"] == "P-1")
        .cloned()
        .unwrap();
    assert_eq!(p1["balance"], "7.00", "{p1}");
}

/// Once the process has found the rows of enough new streams absent, a new stream's
/// notification skips the row's point read: the events' query and the row's insert, two
/// requests. The row is the same as after three.
#[tokio::test]
async fn the_projector_inserts_a_new_streams_row_without_reading_it_once_new_rows_are_the_rule() {
    let app = CountedApp::start().await;
    let (proxy, c) = (&app.counted.tables, &app.c);
    // One read model (the account): each new account is one row found absent.
    for i in 0..GUESS_FROM {
        let account = format!("N-{i}");
        c.post(&format!("/api/OpenAccount/{account}"), &json!({}))
            .await
            .ok(201);
        let notification = projector_notification(c, &account, 1).await;
        assert_eq!(c.deliver_to_projector(notification.to_string()).await, 202);
    }
    c.post("/api/OpenAccount/G-1", &json!({})).await.ok(201);
    c.post("/api/Deposit/G-1", &json!({"amount": 5}))
        .await
        .ok(200);
    let notification = projector_notification(c, "G-1", 2).await;
    proxy.reset();
    assert_eq!(c.deliver_to_projector(notification.to_string()).await, 202);
    let log = proxy.log();
    assert_eq!(log.len(), 2, "the events, the insert: {log:?}");
    assert!(
        !log.iter()
            .any(|line| line.contains(DEFAULT_READ_MODEL_TABLE) && line.starts_with("GET")),
        "no read of the row: {log:?}"
    );
    assert_one_row_write(&proxy.entries(), "POST", false);

    let reply = c.get("/api/Accounts").await;
    let g1 = reply.ok(200)["accounts"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["accountNumber"] == "G-1")
        .cloned()
        .unwrap();
    assert_eq!(g1["balance"], "5.00", "{g1}");
}
