//! The notification outbox against a real Azurite, where a backend adds to the contract (the
//! contract itself — pending until marked, marks that never hide a racing append, rotation,
//! other processes — is the suite in `tests/contracts/outbox.rs`, run on both backends): a
//! Table store with its outbox off writes no row, and with it on an append with a known version
//! is still ONE storage request; a Table stream that moves on under every mark is busy, not
//! failed; unreadable outbox entries planted in storage are reported and skipped.
//!
//! The app half runs the assembled app under the host simulator with
//! `streamfold_testbed::topic::TopicSim` as the Event Grid topic: an append publishes right
//! away; with the topic down appends still succeed and nothing is lost: the `NotificationSweep`
//! function publishes everything once the topic is back, and a second sweep publishes nothing.

use crate::support;

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use serde_json::value::RawValue;
use serde_json::{json, Value};
use streamfold::notify::dispatch::Dispatcher;
use streamfold::notify::retry::DEFAULT_MAX_ATTEMPTS;
use streamfold::notify::{
    notification_id, DeadLetterStore, NotificationKind, NotificationSink, RaiseSwitches,
};
use streamfold::storage::table::TableStore;
use streamfold::storage::MemoryDeadLetters;
use streamfold::storage::{BlobStore, StorageAccount};
use streamfold::stream::{EventStore, ExpectedVersion, NewEvent, Outbox, StreamId};
use streamfold::testing::RawClients;
use streamfold::testing::{MemorySink, RacingSink};
use streamfold_testbed::hostsim::{HostConfig, HostSim, InvocationRecord};
use streamfold_testbed::topic::{DownMode, TopicConfig, TopicSim};
use streamfold_testbed::Azurite;
use support::{publishing_to, CountedStorage, TestApp};
use uuid::Uuid;

use ExpectedVersion::{Exact, NoStream};

fn stream(instance: &str) -> StreamId {
    StreamId::new("Bank", "Account", instance).unwrap()
}

fn events(n: usize) -> Vec<NewEvent> {
    (0..n)
        .map(|i| {
            NewEvent::from_raw(
                "Deposited",
                RawValue::from_string(format!(r#"{{"n":{i}}}"#)).unwrap(),
            )
        })
        .collect()
}

fn account(azurite: &Azurite) -> StorageAccount {
    StorageAccount::from_connection_string(&azurite.connection_string()).unwrap()
}

fn table_store(account: StorageAccount) -> TableStore {
    TableStore::new(account).with_table_name(format!("t{}", Uuid::new_v4().simple()))
}

/// The backend under test, as both an event store and an outbox.
#[derive(Clone)]
struct Backend {
    store: Arc<dyn EventStore>,
    outbox: Arc<dyn Outbox>,
}

impl Backend {
    fn table(store: TableStore) -> Self {
        let store = Arc::new(store.with_outbox(true));
        Self {
            store: store.clone(),
            outbox: store,
        }
    }

    fn dispatcher(&self, sink: Arc<dyn NotificationSink>) -> Dispatcher {
        self.dispatcher_with(sink, Arc::new(MemoryDeadLetters::new()))
    }

    fn dispatcher_with(
        &self,
        sink: Arc<dyn NotificationSink>,
        dead_letters: Arc<dyn DeadLetterStore>,
    ) -> Dispatcher {
        Dispatcher::new(
            "test",
            self.store.clone(),
            self.outbox.clone(),
            sink,
            dead_letters,
            RaiseSwitches::ALL,
        )
    }
}

/// (sequence, kind) of what a sink received, in order.
fn published(sink: &MemorySink) -> Vec<(u64, NotificationKind)> {
    sink.published()
        .iter()
        .map(|n| (n.data.sequence_number, n.kind()))
        .collect()
}

#[tokio::test]
async fn table_outbox_off_writes_no_row() {
    let azurite = Azurite::start().await.unwrap();
    let plain = table_store(account(&azurite));
    let s = stream("old");
    plain.append(&s, NoStream, events(2)).await.unwrap();
    assert!(plain.pending_for(&s).await.unwrap().is_none());
    assert!(plain.pending(None, 100).await.unwrap().streams.is_empty());

    // Turned on later: the next append makes the whole stream pending (its history was never
    // published).
    let with_outbox = plain.clone().with_outbox(true);
    with_outbox.append(&s, Exact(2), events(1)).await.unwrap();
    let pending = with_outbox.pending_for(&s).await.unwrap().unwrap();
    assert_eq!((pending.notified, pending.version), (0, 3));
}

#[tokio::test]
async fn table_append_with_outbox_is_one_request() {
    let azurite = Azurite::start().await.unwrap();
    let counted = CountedStorage::start(&azurite).await;
    let (proxy, connection) = (&counted.tables, counted.connection.clone());
    let store =
        table_store(StorageAccount::from_connection_string(&connection).unwrap()).with_outbox(true);
    let s = stream("count");
    // The first request of the store creates the table: not counted.
    store.append(&s, NoStream, events(1)).await.unwrap();
    proxy.reset();
    store.append(&s, Exact(1), events(3)).await.unwrap();
    assert_eq!(proxy.requests(), 1, "{:?}", proxy.log());
    proxy.reset();
    store
        .append(&stream("count-2"), NoStream, events(2))
        .await
        .unwrap();
    assert_eq!(proxy.requests(), 1, "{:?}", proxy.log());
    // And that one request recorded the pending notifications.
    let pending = store.pending_for(&s).await.unwrap().unwrap();
    assert_eq!((pending.notified, pending.version), (0, 4));

    // What publishing them costs, measured: the outbox row, the events (header and rows,
    // read concurrently) and the mark.
    let backend = Backend::table(store);
    let sink = Arc::new(MemorySink::new());
    proxy.reset();
    backend.dispatcher(sink.clone()).dispatch(&s).await.unwrap();
    println!("a dispatch of 4 pending events: {:?}", proxy.log());
    assert_eq!(sink.published().len(), 5);
    assert!(proxy.requests() <= 4, "{:?}", proxy.log());
}

/// Through the app, with notifications on: an append with a known version is still one
/// storage request. Counted: every request to the Table endpoint between the reset and the
/// append's answer, at a moment when background dispatches are paused (the topic has just
/// failed for good), so the append is the only thing that can make a request.
#[tokio::test]
async fn table_append_through_the_app_is_one_request_with_notifications_on() {
    let azurite = Azurite::start().await.unwrap();
    let counted = CountedStorage::start(&azurite).await;
    let (proxy, connection) = (&counted.tables, counted.connection.clone());
    let topic = TopicSim::start(TopicConfig::default()).await.unwrap();
    topic.set_down(DownMode::Unavailable).await.unwrap();
    let (host, _dir) = support::start_host(vec![
        ("AzureWebJobsStorage".into(), connection),
        ("EventGridTopicEndpoint".into(), topic.endpoint()),
        ("EventGridKeyValue".into(), topic.key().to_owned()),
        ("RaiseEntityCreationNotification".into(), "true".into()),
        ("RaiseEventNotification".into(), "true".into()),
    ])
    .await;
    let c = support::Client::new(host.base_url());
    let path = "/api/streams/Shop/Cart/c1";
    let append = |expected: Value| json!({"expectedVersion": expected, "events": [{"eventType": "ItemAdded", "data": {}}]});

    // The first append creates the table; its background dispatch reads the outbox and the
    // events, then fails to publish through the publisher's whole retry schedule.
    c.post(path, &append(json!("noStream"))).await.ok(201);
    let waited = tokio::time::timeout(PATIENCE, async {
        while topic.requests().len() < DEFAULT_MAX_ATTEMPTS as usize {
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    })
    .await;
    assert!(waited.is_ok(), "{:?}", topic.requests());

    proxy.reset();
    c.post(path, &append(json!(1))).await.ok(201);
    assert_eq!(proxy.requests(), 1, "{:?}", proxy.log());
    assert!(proxy.log()[0].starts_with("POST ") && proxy.log()[0].ends_with("$batch"));

    // That one request recorded the notifications as pending: the sweep publishes them.
    topic.set_up().await.unwrap();
    let sweep = support::run_sweep(&c, &host, 1, PATIENCE).await;
    assert!(sweep.succeeded, "{sweep:?}");
    let received: BTreeSet<String> = topic
        .received()
        .iter()
        .map(|e| e["id"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(received, expected_ids("c1", 2));
}

// ---------------------------------------------------------------------------------------------
// The assembled app under the host simulator, publishing to a topic simulator.

/// How long the tests wait for something that should happen within a second or two.
const PATIENCE: Duration = Duration::from_secs(60);

/// A function app whose notifications go to a topic simulator, on Azurite.
struct NotifyingApp {
    topic: TopicSim,
    app: TestApp,
    sweeps: usize,
    /// The app's outbox, read directly (the app's default table or container).
    outbox: Arc<dyn Outbox>,
}

impl NotifyingApp {
    /// Every stream lives on `backend` (`Table` or `AppendBlob`); both notification kinds on.
    async fn start(backend: &str) -> Self {
        let topic = TopicSim::start(TopicConfig::default()).await.unwrap();
        let mut settings = publishing_to(&topic);
        settings.push(("ALL.ALL".into(), format!("{backend};AzureWebJobsStorage")));
        let app = TestApp::start_on(0, settings).await;
        let account = account(&app.azurite);
        let outbox: Arc<dyn Outbox> = match backend {
            "Table" => Arc::new(TableStore::new(account)),
            _ => Arc::new(BlobStore::new(account)),
        };
        Self {
            topic,
            app,
            sweeps: 0,
            outbox,
        }
    }

    /// Waits until nothing of `Shop/Cart/{instance}` is pending (its dispatch has marked).
    async fn wait_marked(&self, instance: &str) {
        let stream = StreamId::new("Shop", "Cart", instance).unwrap();
        let waited = tokio::time::timeout(PATIENCE, async {
            while self.outbox.pending_for(&stream).await.unwrap().is_some() {
                tokio::time::sleep(Duration::from_millis(25)).await;
            }
        })
        .await;
        assert!(waited.is_ok(), "{instance} is still pending");
    }

    /// Appends `n` events to `Shop/Cart/{instance}` with `expected`; returns the new version.
    async fn append(&self, instance: &str, expected: Value, n: usize) -> u64 {
        let events: Vec<Value> = (0..n)
            .map(|i| json!({"eventType": "ItemAdded", "data": {"i": i}}))
            .collect();
        let reply = self
            .app
            .client
            .post(
                &format!("/api/streams/Shop/Cart/{instance}"),
                &json!({"expectedVersion": expected, "events": events}),
            )
            .await;
        reply.ok(201)["version"].as_u64().unwrap()
    }

    /// Runs the `NotificationSweep` function through the simulator's admin endpoint and waits
    /// for it; returns its invocation.
    async fn sweep(&mut self) -> InvocationRecord {
        self.sweeps += 1;
        support::run_sweep(&self.app.client, &self.app.host, self.sweeps, PATIENCE).await
    }

    /// The ids of every event the topic accepted (duplicates included).
    fn received(&self) -> Vec<String> {
        self.topic
            .received()
            .iter()
            .map(|event| event["id"].as_str().unwrap().to_owned())
            .collect()
    }

    /// Waits until the topic has accepted every id of `expected`.
    async fn wait_received(&self, expected: &BTreeSet<String>) {
        let waited = tokio::time::timeout(PATIENCE, async {
            loop {
                let received: BTreeSet<String> = self.received().into_iter().collect();
                if expected.is_subset(&received) {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(25)).await;
            }
        })
        .await;
        let received: BTreeSet<String> = self.received().into_iter().collect();
        assert!(
            waited.is_ok(),
            "not published: {:?}",
            expected.difference(&received).collect::<Vec<_>>()
        );
    }

    /// Waits until the topic has answered `count` publish requests.
    async fn wait_requests(&self, count: usize) {
        let waited = tokio::time::timeout(PATIENCE, async {
            while self.topic.requests().len() < count {
                tokio::time::sleep(Duration::from_millis(25)).await;
            }
        })
        .await;
        assert!(
            waited.is_ok(),
            "{} publish request(s), expected {count}",
            self.topic.requests().len()
        );
    }
}

/// The ids of the notifications of events `1..=version` of `Shop/Cart/{instance}`.
fn expected_ids(instance: &str, version: u64) -> BTreeSet<String> {
    let s = StreamId::new("Shop", "Cart", instance).unwrap();
    let mut ids = BTreeSet::from([notification_id(&s, 1, NotificationKind::NewEntity).to_string()]);
    for sequence in 1..=version {
        ids.insert(notification_id(&s, sequence, NotificationKind::NewEvent).to_string());
    }
    ids
}

fn report(invocation: &InvocationRecord) -> (u64, u64) {
    assert!(invocation.succeeded, "{invocation:?}");
    let value = &invocation.return_value;
    (
        value["pending"].as_u64().unwrap(),
        value["published"].as_u64().unwrap(),
    )
}

/// An append publishes its notifications right away, with the deterministic ids, once each;
/// a sweep then finds nothing to do.
async fn publishes_right_away(backend: &str) {
    let mut app = NotifyingApp::start(backend).await;
    let version = app.append("c1", json!("noStream"), 2).await;
    app.wait_received(&expected_ids("c1", version)).await;
    let version = app.append("c1", json!(version), 1).await;
    let expected = expected_ids("c1", version);
    app.wait_received(&expected).await;
    // The background dispatch marks right after the topic accepted its publish.
    app.wait_marked("c1").await;
    assert_eq!(report(&app.sweep().await), (0, 0));
    let received = app.received();
    assert_eq!(received.len(), expected.len(), "duplicates: {received:?}");
    // The topic's own checks (key, schema, limits) accepted every request.
    assert!(app.topic.requests().iter().all(|r| r.status == 200));
}

#[tokio::test]
async fn table_append_publishes_right_away() {
    publishes_right_away("Table").await;
}

#[tokio::test]
async fn blob_append_publishes_right_away() {
    publishes_right_away("AppendBlob").await;
}

/// With the topic down, appends succeed and their background publishes fail for good; once the
/// topic is back, one sweep publishes everything and a second one publishes nothing.
async fn nothing_is_lost_while_the_topic_is_down(backend: &str) {
    let mut app = NotifyingApp::start(backend).await;
    app.topic.set_down(DownMode::Unavailable).await.unwrap();
    let streams = [("c1", 2), ("c2", 1), ("c3", 3)];
    let mut versions = Vec::new();
    for (instance, n) in streams {
        versions.push((instance, app.append(instance, json!("noStream"), n).await));
    }
    // Each stream's background dispatch tried its publisher's full retry schedule and gave up
    // (so the sweep below is what publishes).
    app.wait_requests(streams.len() * DEFAULT_MAX_ATTEMPTS as usize)
        .await;
    assert!(app.received().is_empty());
    assert!(app.topic.requests().iter().all(|r| r.status == 503));
    // A sweep while the topic is still down fails (the host records a failed run) and leaves
    // everything pending.
    let failed = app.sweep().await;
    assert!(!failed.succeeded, "{failed:?}");
    assert!(app.received().is_empty());

    app.topic.set_up().await.unwrap();
    let expected: BTreeSet<String> = versions
        .iter()
        .flat_map(|(instance, version)| expected_ids(instance, *version))
        .collect();

    let (pending, published) = report(&app.sweep().await);
    assert_eq!(pending, streams.len() as u64);
    assert!(published > 0);
    let received: BTreeSet<String> = app.received().into_iter().collect();
    assert_eq!(received, expected);
    assert_eq!(report(&app.sweep().await), (0, 0));
    let received: BTreeSet<String> = app.received().into_iter().collect();
    assert_eq!(received, expected);
}

#[tokio::test]
async fn table_notifications_survive_a_topic_outage() {
    nothing_is_lost_while_the_topic_is_down("Table").await;
}

#[tokio::test]
async fn blob_notifications_survive_a_topic_outage() {
    nothing_is_lost_while_the_topic_is_down("AppendBlob").await;
}

/// With no topic configured, notifications go to the Functions host's own Event Grid webhook
/// (the local development loop): open an account, deposit, and the `Projector` brings the
/// read model along — through the outbox, the dispatcher and the host simulator.
#[tokio::test]
async fn the_local_loop_delivers_to_the_projector() {
    let azurite = Azurite::start().await.unwrap();
    let port = streamfold_testbed::free_port().unwrap();
    let app_dir = tempfile::tempdir().unwrap();
    support::assemble_app(app_dir.path());
    let mut config = HostConfig::new(app_dir.path());
    config.port = port;
    config.run_timers = false;
    config.settings = vec![
        ("AzureWebJobsStorage".into(), azurite.connection_string()),
        (
            "StreamfoldLocalEventGridUrl".into(),
            format!(
                "http://127.0.0.1:{port}{}",
                support::event_grid_webhook_path("Projector")
            ),
        ),
        ("RUST_LOG".into(), "warn".into()),
    ];
    let host = HostSim::start(config).await.unwrap();
    let c = support::Client::new(host.base_url());
    c.post("/api/OpenAccount/L-1", &json!({})).await.ok(201);
    c.post("/api/Deposit/L-1", &json!({"amount": "25.50"}))
        .await
        .ok(200);
    let waited = tokio::time::timeout(PATIENCE, async {
        loop {
            let accounts = c.get("/api/Accounts").await;
            let row = accounts.ok(200)["accounts"]
                .as_array()
                .unwrap()
                .iter()
                .find(|row| row["accountNumber"] == "L-1")
                .cloned();
            if row.as_ref().is_some_and(|row| row["balance"] == "25.50") {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await;
    assert!(waited.is_ok(), "the read model did not follow");
    // NewEntity + OpenAccount's event + the deposit, one invocation each.
    host.wait_for_invocations("Projector", 3, PATIENCE)
        .await
        .unwrap();
}

// ---------------------------------------------------------------------------------------------
// Notifications never block (issue 11): fair sweeps, busy streams, unreadable entries, a
// refused key.

/// On Table storage every append changes the outbox row's ETag, so the mark of a stream that
/// keeps moving loses every round. That is a busy stream, not a failed sweep: everything seen
/// was published, and the newer events are pending for their own dispatch.
#[tokio::test]
async fn a_stream_that_moves_on_while_swept_is_busy_not_failed() {
    let azurite = Azurite::start().await.unwrap();
    let backend = Backend::table(table_store(account(&azurite)));
    let s = stream("busy");
    backend.store.append(&s, NoStream, events(1)).await.unwrap();
    // One event appended to the stream every time it publishes: a stream so busy that its
    // outbox row changes under every mark.
    let sink = Arc::new(RacingSink::new(
        backend.store.clone(),
        s.clone(),
        usize::MAX,
    ));
    let memory = sink.memory().clone();
    let report = backend.dispatcher(sink).sweep(10).await.unwrap();
    assert_eq!(
        (
            report.pending,
            report.failed,
            report.busy,
            report.dispatched
        ),
        (1, 0, 1, 0),
        "{report:?}"
    );
    // Every event seen was published; the ones appended since are still pending.
    let pending = backend.outbox.pending_for(&s).await.unwrap().unwrap();
    let published: BTreeSet<u64> = published(&memory).iter().map(|(q, _)| *q).collect();
    assert_eq!(published, (1..=pending.version - 1).collect());
    // Once the stream is quiet, it is dispatched.
    let report = backend
        .dispatcher(Arc::new(MemorySink::new()))
        .sweep(10)
        .await
        .unwrap();
    assert_eq!((report.dispatched, report.failed), (1, 0));
}

/// Writes an entity straight into a table of Azurite (an outbox row no store wrote).
async fn plant_row(azurite: &Azurite, table: &str, entity: Value) {
    let client = account(azurite)
        .table_service_client()
        .unwrap()
        .table_client(table.to_owned());
    let partition = entity["PartitionKey"].as_str().unwrap().to_owned();
    let answer = client
        .partition_key_client(partition)
        .transaction()
        .insert(entity)
        .unwrap()
        .await
        .unwrap();
    assert_eq!(u16::from(answer.operation_responses[0].status_code), 201);
}

/// An `OUTBOX` row that no store wrote (a `Version` that is no number; a partition that is no
/// stream's), planted straight in Azurite: the sweep reports and skips both, publishes the
/// pending stream next to them, and succeeds.
#[tokio::test]
async fn table_unreadable_outbox_rows_are_reported_and_skipped() {
    let mut app = NotifyingApp::start("Table").await;
    // Events appended by another process (no background publish): pending in the outbox.
    let writer = TableStore::new(account(&app.app.azurite)).with_outbox(true);
    let table = writer.table_name().to_owned();
    let s = StreamId::new("Shop", "Cart", "c1").unwrap();
    writer.append(&s, NoStream, events(2)).await.unwrap();
    plant_row(
        &app.app.azurite,
        &table,
        json!({"PartitionKey": "Shop|Cart|bad", "RowKey": "OUTBOX", "Pending": true,
               "Version": "banana"}),
    )
    .await;
    plant_row(
        &app.app.azurite,
        &table,
        json!({"PartitionKey": "no stream here", "RowKey": "OUTBOX", "Pending": true,
               "Version@odata.type": "Edm.Int64", "Version": "3"}),
    )
    .await;

    let sweep = app.sweep().await;
    assert!(sweep.succeeded, "{sweep:?}");
    assert_eq!(sweep.return_value["unreadable"], 2, "{sweep:?}");
    assert_eq!(sweep.return_value["published"], 3, "{sweep:?}");
    assert!(
        sweep.logs.iter().any(|l| l.contains("2 unreadable")),
        "{:?}",
        sweep.logs
    );
    app.wait_received(&expected_ids("c1", 2)).await;
}

/// The same on Append Blobs: a stream whose segment is not a stream's records, and a blob under
/// the marker prefix whose name is no stream's.
#[tokio::test]
async fn blob_unreadable_outbox_entries_are_reported_and_skipped() {
    let mut app = NotifyingApp::start("AppendBlob").await;
    let writer = BlobStore::new(account(&app.app.azurite));
    let s = StreamId::new("Shop", "Cart", "c1").unwrap();
    writer.append(&s, NoStream, events(2)).await.unwrap();
    let container = account(&app.app.azurite)
        .blob_service_client()
        .unwrap()
        .container_client(writer.container_name().to_owned());
    let broken = container.blob_client("Shop/Cart/broken/000000.jsonl");
    broken.put_append_blob().await.unwrap();
    broken
        .append_block(b"this is not a record\n".to_vec())
        .await
        .unwrap();
    container
        .blob_client("_outbox/not-a-stream")
        .put_block_blob(Vec::new())
        .await
        .unwrap();

    let sweep = app.sweep().await;
    assert!(sweep.succeeded, "{sweep:?}");
    assert_eq!(sweep.return_value["unreadable"], 2, "{sweep:?}");
    assert_eq!(sweep.return_value["published"], 3, "{sweep:?}");
    app.wait_received(&expected_ids("c1", 2)).await;
}

/// A key rotated on the topic (every publish answered 401): the first refusal pauses the whole
/// publisher, so the appends after it and the sweep send nothing to the topic; the sweep fails
/// (the host records a failed run).
#[tokio::test]
async fn a_refused_key_pauses_publishing() {
    let mut app = NotifyingApp::start("Table").await;
    app.topic.revoke_key(true);
    app.append("c1", json!("noStream"), 1).await;
    app.wait_requests(1).await;
    for instance in ["c2", "c3", "c4"] {
        app.append(instance, json!("noStream"), 2).await;
    }
    let sweep = app.sweep().await;
    assert!(!sweep.succeeded, "{sweep:?}");
    let requests = app.topic.requests();
    assert_eq!(requests.len(), 1, "one request, then a pause: {requests:?}");
    assert_eq!(requests[0].status, 401);
    assert!(app.received().is_empty());
}
