//! Section 6, the Projector: how fast it applies notifications to the bank's read model, and
//! how long an acknowledged append takes to show in the read model.
//!
//! The app runs with notifications on, published to the Event Grid topic simulator
//! (`streamfold_testbed::topic`), which delivers each event alone to the host simulator's
//! Event Grid webhook for the `Projector` function, as Event Grid and the Functions host do.
//!
//! - Lag: one Deposit at a time; from its HTTP answer (the append is acknowledged) until the
//!   account's read-model row, polled directly in storage every [`POLL_EVERY`], holds the
//!   deposit's sequence. It includes the handler's background publish, the topic's delivery,
//!   the host's invocation and the Projector's work; it is bounded below by the poll interval.
//! - Rate: accounts written in process (so the app publishes nothing for them), then one
//!   notification per account (its last event) delivered straight to the webhook by
//!   [`RATE_CLIENTS`] concurrent clients, as Event Grid delivers; each delivery is answered
//!   once its invocation finished, and each applies real work (no row existed). Raw is the
//!   storage work of one row update done directly at the same concurrency: a point read of the
//!   row, a query of the stream's events, an insert of the row (`projector.rate`); and the
//!   requests the Projector itself makes for a new stream's row once it skips the point read
//!   (`readmodel::FirstRowOdds`), a query and an insert (`projector.rate.same_requests`), which
//!   leaves the delivery as the difference. The three sides take turns over slices of the
//!   accounts.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use futures::future::try_join_all;
use serde_json::{json, Value};
use streamfold::notify::{Notification, NotificationSchema};
use streamfold::readmodel::{ReadModelStore, TableReadModelStore};
use streamfold::storage::{table, StorageAccount, TableStore};
use streamfold::stream::{EventStore, ExpectedVersion, NewEvent, ReadRequest, StreamId};
use streamfold_testbed::topic::{Subscription, TopicConfig, TopicSim};
use streamfold_testbed::Azurite;

use crate::env::{
    expect_status, http_client, App, ACCOUNT_OPENED, BANK_DOMAIN, BANK_ENTITY, MONEY_DEPOSITED,
};
use crate::raw::RawTable;
use crate::report::{Row, Samples};
use crate::Plan;

const SECTION: &str = "projector";
/// The bank's read model (the account projection).
const MODEL: &str = "account";
/// How often the lag measurement polls the read-model row.
const POLL_EVERY: Duration = Duration::from_millis(2);
/// Longest wait for a read-model row before the run fails.
const LAG_LIMIT: Duration = Duration::from_secs(60);
/// Concurrent deliveries in the rate measurement.
const RATE_CLIENTS: usize = 8;
/// The table the raw row updates that read the row first write to.
const RAW_MODEL_TABLE: &str = "benchrawreadmodels";
/// The table the raw row updates that only insert write to.
const RAW_INSERT_TABLE: &str = "benchrawinsertmodels";
/// Rounds of the rate measurement: each side (the Projector, and the two direct row updates)
/// runs once per round over its slice of the accounts.
const RATE_ROUNDS: usize = 5;

pub async fn run(plan: &Plan) -> anyhow::Result<Vec<Row>> {
    let azurite = Azurite::start().await.context("starting Azurite")?;
    let port = streamfold_testbed::free_port()?;
    let webhook =
        format!("http://127.0.0.1:{port}/runtime/webhooks/EventGrid?functionName=Projector");
    let topic = TopicSim::start(TopicConfig::default().subscribe(Subscription::new(&webhook)))
        .await
        .context("starting the Event Grid topic simulator")?;
    let app = App::start_with(
        azurite.connection_string(),
        vec![
            ("EventGridTopicEndpoint".into(), topic.endpoint()),
            ("EventGridKeyValue".into(), topic.key().to_owned()),
        ],
        port,
    )
    .await?;
    let account = StorageAccount::from_connection_string(&azurite.connection_string())?;
    let models = TableReadModelStore::new(&account);
    let http = http_client()?;

    let mut rows = lag(&app, &http, &models, plan).await?;
    rows.extend(rate(&app, &http, &account, &models, plan).await?);
    drop(app);
    drop(topic);
    Ok(rows)
}

/// Waits until the read-model row of `stream` is at `sequence` or later.
async fn wait_for_row(
    models: &TableReadModelStore,
    stream: &StreamId,
    sequence: u64,
) -> anyhow::Result<Instant> {
    let deadline = Instant::now() + LAG_LIMIT;
    loop {
        let row = models.load(MODEL, stream).await?;
        if row.is_some_and(|r| r.checkpoint.sequence >= sequence) {
            return Ok(Instant::now());
        }
        if Instant::now() > deadline {
            bail!("the read-model row of {stream} did not reach {sequence} within {LAG_LIMIT:?}");
        }
        tokio::time::sleep(POLL_EVERY).await;
    }
}

async fn lag(
    app: &App,
    http: &reqwest::Client,
    models: &TableReadModelStore,
    plan: &Plan,
) -> anyhow::Result<Vec<Row>> {
    let front = app.front_url();
    let number = "LAG-1";
    let stream = StreamId::new(BANK_DOMAIN, BANK_ENTITY, number)?;
    expect_status(
        http.post(format!("{front}/api/OpenAccount/{number}"))
            .json(&json!({})),
        201,
        "OpenAccount",
    )
    .await?;
    wait_for_row(models, &stream, 1).await?;
    let mut samples = Samples::with_capacity(plan.projector_lag_samples);
    for _ in 0..plan.projector_lag_samples {
        let answer = expect_status(
            http.post(format!("{front}/api/Deposit/{number}"))
                .json(&json!({"amount": "1.00"})),
            200,
            "Deposit",
        )
        .await?;
        let acknowledged = Instant::now();
        let sequence = answer["sequence"]
            .as_u64()
            .with_context(|| format!("Deposit answered without a sequence: {answer}"))?;
        let seen = wait_for_row(models, &stream, sequence).await?;
        samples.push(seen - acknowledged);
    }
    let what = "append acknowledged (Deposit answered) -> read-model row at its sequence; \
                via handler publish, topic simulator, host webhook, Projector";
    Ok(vec![
        Row::compare(
            "projector.lag.p50",
            SECTION,
            "Projector: lag from append to read-model update, p50",
            "ms",
            samples.median_ms().unwrap_or_default(),
            None,
            "",
        )
        .note(format!(
            "{what}; {} deposits, polled every {POLL_EVERY:?}",
            samples.len()
        )),
        Row::compare(
            "projector.lag.p99",
            SECTION,
            "Projector: lag from append to read-model update, p99",
            "ms",
            samples.percentile_ms(99.0).unwrap_or_default(),
            None,
            "",
        ),
    ])
}

async fn rate(
    app: &App,
    http: &reqwest::Client,
    account: &StorageAccount,
    models: &TableReadModelStore,
    plan: &Plan,
) -> anyhow::Result<Vec<Row>> {
    let store: Arc<dyn EventStore> = Arc::new(TableStore::new(account.clone()));
    let accounts = plan.projector_notifications;
    // Accounts with two events each, written in process: no notification is published.
    let mut notifications = Vec::with_capacity(accounts);
    for i in 0..accounts {
        let stream = StreamId::new(BANK_DOMAIN, BANK_ENTITY, format!("RATE-{i}"))?;
        let events = vec![
            NewEvent::new(ACCOUNT_OPENED, &json!({"overdraftLimit": "0.00"}))?,
            NewEvent::new(MONEY_DEPOSITED, &json!({"amount": "1.00"}))?,
        ];
        store
            .append(&stream, ExpectedVersion::NoStream, events)
            .await?;
        let slice = store.read(&stream, ReadRequest::all()).await?;
        let last = slice.events.last().context("the account stream is empty")?;
        let encoded =
            NotificationSchema::EventGridEvent.encode(&Notification::new_event(&stream, last))?;
        let event: Value = serde_json::from_slice(&encoded)?;
        notifications.push((stream, json!([event])));
    }

    let url = format!(
        "{}/runtime/webhooks/EventGrid?functionName=Projector",
        app.front_url()
    );
    let raw_table = RawTable::new(account, table::DEFAULT_TABLE_NAME)?;
    let raw_read_first = RawTable::new(account, RAW_MODEL_TABLE)?;
    let raw_insert_only = RawTable::new(account, RAW_INSERT_TABLE)?;
    raw_read_first.ensure_table().await?;
    raw_insert_only.ensure_table().await?;

    // The three sides take turns over slices of the accounts, the side that goes first
    // rotating, so a drift of the shared machine (or of Azurite's tables growing) falls on
    // all of them alike.
    let mut elapsed = [Duration::ZERO; 3];
    let slice_len = accounts.div_ceil(RATE_ROUNDS).max(1);
    for (round, slice) in notifications.chunks(slice_len).enumerate() {
        for turn in 0..3 {
            let side = (round + turn) % 3;
            let started = Instant::now();
            match side {
                0 => deliver(http, &url, slice).await?,
                1 => update_directly(&raw_table, &raw_read_first, slice, true).await?,
                _ => update_directly(&raw_table, &raw_insert_only, slice, false).await?,
            }
            if let Some(total) = elapsed.get_mut(side) {
                *total += started.elapsed();
            }
        }
    }
    for (stream, _) in &notifications {
        let row = models.load(MODEL, stream).await?;
        if row.is_none_or(|r| r.checkpoint.sequence != 2) {
            bail!("the read-model row of {stream} was not brought to sequence 2");
        }
    }
    let per_second = |time: Duration| accounts as f64 / time.as_secs_f64().max(f64::EPSILON);
    let [ours, read_first, insert_only] = elapsed.map(per_second);
    let note = format!(
        "{accounts} notifications, one per account (each a real update), delivered to the host \
         simulator's Event Grid webhook as Event Grid delivers them; {RATE_ROUNDS} rounds, each \
         side in turn"
    );
    let operation = format!(
        "Projector: notifications applied per second ({RATE_CLIENTS} concurrent deliveries)"
    );
    Ok(vec![
        Row::compare(
            "projector.rate",
            SECTION,
            operation.clone(),
            "notif/s",
            ours,
            Some(read_first),
            "Projector: the storage work of one row update done directly at the same concurrency (point read of the row, query of the stream's events, insert of the row)",
        )
        .note(note.clone()),
        Row::compare(
            "projector.rate.same_requests",
            SECTION,
            operation,
            "notif/s",
            ours,
            Some(insert_only),
            "Projector: the requests it makes for a new row (query of the stream's events, insert of the row), done directly at the same concurrency",
        )
        .note(note),
    ])
}

/// Runs `work` on every (stream, notification) of `slice`, [`RATE_CLIENTS`] clients at a time,
/// each client taking its share one after another.
async fn by_clients<'a, F, Fut>(slice: &'a [(StreamId, Value)], work: F) -> anyhow::Result<()>
where
    F: Fn(&'a StreamId, &'a Value) -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<()>>,
{
    let work = &work;
    try_join_all(
        chunk(slice.iter().collect(), RATE_CLIENTS)
            .into_iter()
            .map(|share| async move {
                for (stream, body) in share {
                    work(stream, body).await?;
                }
                Ok::<(), anyhow::Error>(())
            }),
    )
    .await?;
    Ok(())
}

/// Delivers each notification of `slice` to the Projector's webhook, [`RATE_CLIENTS`] at a
/// time, each answered once its invocation finished.
async fn deliver(
    http: &reqwest::Client,
    url: &str,
    slice: &[(StreamId, Value)],
) -> anyhow::Result<()> {
    by_clients(slice, |_, body| async move {
        let response = http
            .post(url)
            .header("aeg-event-type", "Notification")
            .json(body)
            .send()
            .await?;
        let status = response.status().as_u16();
        if !(200..=202).contains(&status) {
            bail!("the Projector webhook answered {status}");
        }
        Ok(())
    })
    .await
}

/// The storage work of one row update per stream of `slice`, done directly, [`RATE_CLIENTS`]
/// at a time: (a point read of the row when `read_first`,) a query of the stream's events, an
/// insert of the row into `rows`.
async fn update_directly(
    events: &RawTable,
    rows: &RawTable,
    slice: &[(StreamId, Value)],
    read_first: bool,
) -> anyhow::Result<()> {
    by_clients(slice, |stream, _| async move {
        let partition_key = format!("{BANK_DOMAIN}|{BANK_ENTITY}|{}", stream.instance());
        if read_first {
            rows.point_read_optional(MODEL, stream.instance()).await?;
        }
        let read = events.read_event_rows(&partition_key).await?;
        rows.insert_row(MODEL, stream.instance(), read as u64)
            .await?;
        Ok(())
    })
    .await
}

/// Splits `items` round-robin into `n` lists.
fn chunk<T>(items: Vec<T>, n: usize) -> Vec<Vec<T>> {
    let mut lists: Vec<Vec<T>> = (0..n).map(|_| Vec::new()).collect();
    for (i, item) in items.into_iter().enumerate() {
        lists[i % n].push(item);
    }
    lists
}
