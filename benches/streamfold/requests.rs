//! Section 3, storage requests per operation, counted by
//! `streamfold_testbed::proxy::CountingProxy` in front of Azurite's table and blob endpoints
//! while the app runs on them under the host simulator.
//!
//! Counts are exact, not timed, so this section says the same in short and full mode. The
//! first request of a handler process creates the table and the container; each operation is
//! counted after a warm-up that did this. The "raw" column is the seed library's design (see
//! /work/shared/reference/prior-art.md): an append there is three requests (read the header,
//! bump it with If-Match, insert the event row).
//!
//! The Projector's cost is counted too: one notification delivered to the host's Event Grid
//! webhook for an account whose read-model row is behind, then the same one again.
//!
//! GetBalance "with a snapshot" is counted only if a snapshot is actually used: the second
//! GetBalance of a stream longer than the snapshot interval must read far fewer bytes than the
//! first. If it does not, the backends do not persist snapshots yet and the row says so.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use serde_json::json;
use streamfold::notify::{Notification, NotificationSchema};
use streamfold::storage::TableStore;
use streamfold::stream::{EventStore, ExpectedVersion, NewEvent, ReadRequest, StreamId};
use streamfold_testbed::proxy::CountingProxy;
use streamfold_testbed::Azurite;

use crate::env::{
    expect_status, http_client, App, HttpStream, ACCOUNT_OPENED, BANK_DOMAIN, BANK_ENTITY,
    BLOB_ENTITY, MONEY_DEPOSITED, TABLE_ENTITY,
};
use crate::report::{Row, Target};

const SECTION: &str = "storage requests";
/// Storage requests of one append in the seed library's design.
pub const SEED_REQUESTS_PER_APPEND: f64 = 3.0;
const SEED: &str = "seed library's design: 3 requests per append (read header, bump it with If-Match, insert event)";
/// Events past the snapshot interval (100 by default) in the stream GetBalance reads twice.
const SNAPSHOT_STREAM_EVENTS: u64 = 250;
/// Events per in-process append when building that stream (the Table backend's limit is 48).
const BUILD_BATCH: u64 = 48;
/// No storage request for this long: the app's background work is done.
const QUIET: Duration = Duration::from_millis(300);
/// Longest wait for the app's background work to finish.
const SETTLE_LIMIT: Duration = Duration::from_secs(10);
/// The second read must fetch less than this fraction of the first's bytes to count as
/// resumed from a snapshot.
const SNAPSHOT_BYTES_FRACTION: f64 = 0.5;

/// What later sections need to know from this one.
#[derive(Debug, Clone, Copy, Default)]
pub struct Findings {
    /// Whether GetBalance resumed from a persisted snapshot (`None`: not measured).
    pub snapshots_persisted: Option<bool>,
}

/// Both proxies, counted together.
struct Counter {
    table: CountingProxy,
    blob: CountingProxy,
}

/// What one operation cost: the requests made before its answer arrived, and those made
/// after it (work the app does in the background, such as publishing notifications).
struct Count {
    in_path: usize,
    in_path_log: Vec<String>,
    background: usize,
    background_log: Vec<String>,
    /// Response body bytes read from storage, both phases.
    bytes: u64,
}

impl Counter {
    fn total(&self) -> usize {
        self.table.requests() + self.blob.requests()
    }

    /// Waits until no request has arrived for [`QUIET`] (at most [`SETTLE_LIMIT`]).
    async fn settle(&self) {
        let deadline = Instant::now() + SETTLE_LIMIT;
        let mut seen = self.total();
        loop {
            tokio::time::sleep(QUIET).await;
            let now = self.total();
            if now == seen || Instant::now() > deadline {
                return;
            }
            seen = now;
        }
    }

    /// Counts the storage requests of `operation`, alone: earlier background work is waited
    /// out first, and the background work it starts is waited out after its answer.
    async fn count<F: std::future::Future<Output = anyhow::Result<()>>>(
        &self,
        operation: F,
    ) -> anyhow::Result<Count> {
        self.settle().await;
        self.table.reset();
        self.blob.reset();
        operation.await?;
        let (table_log, blob_log) = (self.table.log(), self.blob.log());
        self.settle().await;
        let background_log: Vec<String> = (self.table.log().into_iter().skip(table_log.len()))
            .chain(self.blob.log().into_iter().skip(blob_log.len()))
            .collect();
        let in_path_log: Vec<String> = table_log.into_iter().chain(blob_log).collect();
        Ok(Count {
            in_path: in_path_log.len(),
            background: background_log.len(),
            in_path_log,
            background_log,
            bytes: self.table.bytes_received_from_upstream()
                + self.blob.bytes_received_from_upstream(),
        })
    }
}

fn describe(log: &[String]) -> String {
    if log.is_empty() {
        return "no storage request".to_owned();
    }
    log.iter()
        .map(|line| {
            // `POST /devstoreaccount1/$batch` → `POST $batch`; keep queries short.
            let line = line.replace("/devstoreaccount1/", "");
            let (head, query) = line.split_once('?').unwrap_or((&line, ""));
            let shown: String = query.chars().take(40).collect();
            if query.is_empty() {
                head.to_owned()
            } else {
                format!("{head}?{shown}…")
            }
        })
        .collect::<Vec<_>>()
        .join(", ")
}

pub async fn run() -> anyhow::Result<(Vec<Row>, Findings)> {
    let azurite = Azurite::start().await.context("starting Azurite")?;
    let counter = Counter {
        table: CountingProxy::start(&format!("http://127.0.0.1:{}", azurite.table_port)).await?,
        blob: CountingProxy::start(&format!("http://127.0.0.1:{}", azurite.blob_port)).await?,
    };
    let connection = Azurite::connection_string_for(
        &format!(
            "{}/{}",
            counter.blob.url(),
            streamfold_testbed::azurite::ACCOUNT
        ),
        &format!(
            "{}/{}",
            counter.table.url(),
            streamfold_testbed::azurite::ACCOUNT
        ),
    );
    let app = App::start(connection.clone()).await?;
    let http = http_client()?;
    let front = app.front_url();
    let api = |path: &str| format!("{front}/api/{path}");

    // Warm-up: this handler process creates its tables (events, snapshots) and container.
    HttpStream::create(&http, &front, TABLE_ENTITY, "warm-up").await?;
    HttpStream::create(&http, &front, BLOB_ENTITY, "warm-up").await?;
    expect_status(
        http.post(api("OpenAccount/W-1")).json(&json!({})),
        201,
        "OpenAccount",
    )
    .await?;
    expect_status(http.get(api("GetBalance/W-1")), 200, "GetBalance").await?;

    let mut rows = Vec::new();
    let seed = Some(SEED_REQUESTS_PER_APPEND);

    // Table, generic stream API.
    let mut created = None;
    let count = counter
        .count(async {
            created = Some(HttpStream::create(&http, &front, TABLE_ENTITY, "counted").await?);
            Ok(())
        })
        .await?;
    let mut table_stream = created.context("the counted Table stream")?;
    rows.extend(counted(
        "append.new.table",
        "append to a new stream (noStream), Table",
        count,
        seed,
    ));
    let count = counter.count(table_stream.append(&http)).await?;
    rows.extend(counted(
        "append.known.table",
        "append with a known version, Table",
        count,
        seed,
    ));
    let count = counter
        .count(append_any(&http, &front, TABLE_ENTITY, "counted"))
        .await?;
    rows.extend(counted(
        "append.any.table",
        "append with no expectation (any), Table",
        count,
        seed,
    ));

    // Append Blob, generic stream API (this process's tail cache is warm after the create).
    let mut blob_stream = HttpStream::create(&http, &front, BLOB_ENTITY, "counted").await?;
    let count = counter.count(blob_stream.append(&http)).await?;
    rows.extend(counted(
        "append.known.blob",
        "append with a known version, Append Blob (warm tail cache)",
        count,
        seed,
    ));
    let count = counter
        .count(append_any(&http, &front, BLOB_ENTITY, "counted"))
        .await?;
    rows.extend(counted(
        "append.any.blob",
        "append with no expectation (any), Append Blob",
        count,
        seed,
    ));

    // The bank.
    let count = counter
        .count(ok(expect_status(
            http.post(api("OpenAccount/B-1")).json(&json!({})),
            201,
            "OpenAccount",
        )))
        .await?;
    rows.extend(counted("bank.open", "OpenAccount", count, seed));
    let count = counter
        .count(ok(expect_status(
            http.post(api("Deposit/B-1"))
                .json(&json!({"amount": "10.00"})),
            200,
            "Deposit",
        )))
        .await?;
    rows.extend(counted(
        "bank.deposit",
        "Deposit (read the account, append)",
        count,
        None,
    ));
    let count = counter
        .count(ok(expect_status(
            http.get(api("GetBalance/B-1")),
            200,
            "GetBalance",
        )))
        .await?;
    rows.extend(counted(
        "bank.balance.cold",
        "GetBalance, 2-event stream, first read",
        count,
        None,
    ));

    // The Projector: one notification (the last event of B-1) delivered as Event Grid
    // delivers it, then the same notification again (Event Grid delivers at least once).
    let account = streamfold::storage::StorageAccount::from_connection_string(&connection)?;
    let store: Arc<dyn EventStore> = Arc::new(TableStore::new(account));
    let b1 = StreamId::new(BANK_DOMAIN, BANK_ENTITY, "B-1")?;
    let slice = store.read(&b1, ReadRequest::all()).await?;
    let last = slice.events.last().context("account B-1 has no events")?;
    let notification: serde_json::Value = serde_json::from_slice(
        &NotificationSchema::EventGridEvent.encode(&Notification::new_event(&b1, last))?,
    )?;
    let webhook = format!("{front}/runtime/webhooks/EventGrid?functionName=Projector");
    let deliver = || {
        let request = http
            .post(&webhook)
            .header("aeg-event-type", "Notification")
            .json(&json!([notification]));
        async move {
            let status = request.send().await?.status().as_u16();
            if !(200..=202).contains(&status) {
                bail!("the Projector webhook answered {status}");
            }
            Ok(())
        }
    };
    let count = counter.count(deliver()).await?;
    rows.extend(counted(
        "projector.apply",
        "Projector: apply one notification (the row is behind)",
        count,
        None,
    ));
    let count = counter.count(deliver()).await?;
    rows.extend(counted(
        "projector.duplicate",
        "Projector: the same notification again (row already there)",
        count,
        None,
    ));

    // GetBalance twice on a stream past the snapshot interval.
    let stream = StreamId::new(BANK_DOMAIN, BANK_ENTITY, "B-snapshot")?;
    write_account(&store, &stream, SNAPSHOT_STREAM_EVENTS).await?;
    let balance = || {
        ok(expect_status(
            http.get(api("GetBalance/B-snapshot")),
            200,
            "GetBalance",
        ))
    };
    let first = counter.count(balance()).await?;
    let second = counter.count(balance()).await?;
    let snapshots_persisted = (second.bytes as f64) < SNAPSHOT_BYTES_FRACTION * first.bytes as f64;
    let (second_requests, second_bytes) = (second.in_path, second.bytes);
    rows.extend(counted(
        "bank.balance.long",
        &format!("GetBalance, {SNAPSHOT_STREAM_EVENTS}-event stream, first read"),
        first,
        None,
    ));
    if snapshots_persisted {
        rows.extend(counted(
            "bank.balance.snapshot",
            &format!(
                "GetBalance with a snapshot ({SNAPSHOT_STREAM_EVENTS}-event stream, second read)"
            ),
            second,
            None,
        ));
    } else {
        rows.push(Row::not_available(
            "requests.bank.balance.snapshot.in_path",
            SECTION,
            "GetBalance with a snapshot",
            "requests",
            format!(
                "snapshots are not persisted by the backends yet: a second GetBalance of the \
                 {SNAPSHOT_STREAM_EVENTS}-event stream read {second_bytes} bytes in \
                 {second_requests} requests again"
            ),
        ));
    }
    drop(app);
    Ok((
        rows,
        Findings {
            snapshots_persisted: Some(snapshots_persisted),
        },
    ))
}

/// Drops the answer of a request that must succeed.
async fn ok(
    request: impl std::future::Future<Output = anyhow::Result<serde_json::Value>>,
) -> anyhow::Result<()> {
    request.await.map(|_| ())
}

/// The rows of one counted operation: the requests before its answer (the target of "one
/// request per append with a known version" applies to these) and, when there were any, the
/// requests it caused after its answer.
fn counted(id: &str, operation: &str, count: Count, seed: Option<f64>) -> Vec<Row> {
    let mut in_path = Row::compare(
        format!("requests.{id}.in_path"),
        SECTION,
        operation,
        "requests",
        count.in_path as f64,
        seed,
        if seed.is_some() { SEED } else { "" },
    )
    .note(format!("{operation}: {}", describe(&count.in_path_log)));
    if id.starts_with("append.known") {
        in_path = in_path.target(Target::Exactly(1.0));
    }
    let mut rows = vec![in_path];
    if count.background > 0 {
        rows.push(
            Row::compare(
                format!("requests.{id}.background"),
                SECTION,
                format!("  {operation}: more requests after the answer (background)"),
                "requests",
                count.background as f64,
                None,
                "",
            )
            .note(format!(
                "{operation}, after the answer: {}",
                describe(&count.background_log)
            )),
        );
    }
    rows
}

async fn append_any(
    http: &reqwest::Client,
    front: &str,
    entity: &str,
    instance: &str,
) -> anyhow::Result<()> {
    let body = json!({"events": [{"eventType": MONEY_DEPOSITED, "data": {"amount": "1.00"}}]});
    expect_status(
        http.post(format!(
            "{front}{}",
            crate::env::stream_path(crate::env::DOMAIN, entity, instance)
        ))
        .json(&body),
        201,
        "append with no expectation",
    )
    .await?;
    Ok(())
}

/// Writes an account stream directly: AccountOpened, then `events - 1` deposits of 1.00, in
/// appends of [`BUILD_BATCH`] events with known versions.
pub async fn write_account(
    store: &Arc<dyn EventStore>,
    stream: &StreamId,
    events: u64,
) -> anyhow::Result<()> {
    let opened = NewEvent::new(ACCOUNT_OPENED, &json!({"overdraftLimit": "0.00"}))?;
    let mut version = store
        .append(stream, ExpectedVersion::NoStream, vec![opened])
        .await?
        .version;
    while version < events {
        let batch = BUILD_BATCH.min(events - version);
        let deposits = (0..batch)
            .map(|_| NewEvent::new(MONEY_DEPOSITED, &json!({"amount": "1.00"})))
            .collect::<Result<Vec<_>, _>>()?;
        version = store
            .append(stream, ExpectedVersion::Exact(version), deposits)
            .await
            .with_context(|| format!("writing {stream} at version {version}"))?
            .version;
    }
    Ok(())
}
