//! Section 4, replay: a projection run (`ProjectionRunner`, in process) over a long account
//! stream, in events per second, against raw reads of the same stored data; and GetBalance on
//! that stream against one point read: through the app (a warm instance, whose state cache
//! holds the account), and as a cold instance runs it (the persistent snapshot and the header).
//!
//! - Table: the runner reads the header and the event rows (paged queries, 1,000 rows a page)
//!   and decodes and folds every event; raw is the crate's paged query of the same rows.
//! - Append Blob: the runner, on a fresh store each time (cold: a listing, then the segment),
//!   reads, parses and folds; raw is one open-ended download of the same segment.
//!
//! Runs alternate (streamfold, raw, streamfold, ...) and the medians are compared. The stream
//! is written in process in appends of 48 events (the Table backend's most per append). The
//! fold is the bank's balance: a sum of decimal amounts, so decoding the data is included.

use std::sync::Arc;
use std::time::Instant;

use anyhow::bail;
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};
use streamfold::projection::{decode_data, ApplyError, AsOf, Projection, ProjectionRunner};
use streamfold::storage::{blob, table, BlobStore, TableStore};
use streamfold::stream::{EventStore, RecordedEvent, StreamId};

use streamfold_testbed::proxy::CountingProxy;
use streamfold_testbed::Azurite;

use crate::env::{expect_status, Env, BANK_DOMAIN, BANK_ENTITY, MONEY_DEPOSITED};
use crate::raw::{RawBlobs, RawTable};
use crate::report::{Row, Samples, Target};
use crate::requests::{write_account, Findings};
use crate::Plan;

const SECTION: &str = "replay";
/// The target: replay at least this fraction of raw reads.
pub const TARGET_RATIO: f64 = 0.8;
/// The target: GetBalance with a snapshot within this multiple of one point read.
pub const SNAPSHOT_TARGET_RATIO: f64 = 2.0;
/// The account whose stream is replayed.
const INSTANCE: &str = "R-1";
/// RowKey of the stream header (the Table backend's layout).
const HEADER_ROW_KEY: &str = "HEAD";
/// The bank's account projection, whose snapshot GetBalance reads.
const ACCOUNT_PROJECTION: &str = "account";
/// A short account in the same table, to show what a range query costs whatever the stream.
const SMALL_INSTANCE: &str = "R-small";
/// The Append Blob stream's entity type (the app keeps `Bench/Blob` in append blobs).
const BLOB_DOMAIN: &str = crate::env::DOMAIN;

/// The bank's balance, folded the way the bank folds it (decimal amounts from the data).
struct Balance;

#[derive(Debug, Clone, Serialize, Deserialize, Default)]
struct BalanceState {
    balance: Decimal,
}

#[derive(Deserialize)]
struct Amount {
    #[serde(with = "rust_decimal::serde::str")]
    amount: Decimal,
}

impl Projection for Balance {
    type State = BalanceState;

    fn name(&self) -> &str {
        "benchbalance"
    }

    fn version(&self) -> u32 {
        1
    }

    fn initial(&self) -> BalanceState {
        BalanceState::default()
    }

    fn apply(&self, state: &mut BalanceState, event: &RecordedEvent) -> Result<(), ApplyError> {
        if event.event_type == MONEY_DEPOSITED {
            state.balance += decode_data::<Amount>(event)?.amount;
        }
        Ok(())
    }
}

pub async fn run(env: &Env, plan: &Plan, findings: Findings) -> anyhow::Result<Vec<Row>> {
    let events = plan.replay_events;
    let mut rows = Vec::new();

    // Table.
    let table_store: Arc<dyn EventStore> = Arc::new(TableStore::new(env.account.clone()));
    let stream = StreamId::new(BANK_DOMAIN, BANK_ENTITY, INSTANCE)?;
    let started = Instant::now();
    write_account(&table_store, &stream, events).await?;
    let write_rate = events as f64 / started.elapsed().as_secs_f64();
    let raw_table = RawTable::new(&env.account, table::DEFAULT_TABLE_NAME)?;
    let partition_key = format!("{BANK_DOMAIN}|{BANK_ENTITY}|{INSTANCE}");
    let mut ours = Samples::default();
    let mut raw = Samples::default();
    for _ in 0..plan.replay_runs {
        let runner = ProjectionRunner::new(Arc::new(TableStore::new(env.account.clone())));
        let t = Instant::now();
        let projected = runner.run(&stream, &Balance, AsOf::Latest).await?;
        ours.push(t.elapsed());
        check_replay(projected.events_read, projected.state.balance, events)?;
        let t = Instant::now();
        let rows_read = raw_table.read_event_rows(&partition_key).await?;
        raw.push(t.elapsed());
        if rows_read as u64 != events {
            bail!("the raw query read {rows_read} rows, expected {events}");
        }
    }
    rows.push(rate_row(
        "replay.table",
        &format!("replay {events} events, Table: ProjectionRunner (read, decode, fold)"),
        events,
        &ours,
        &raw,
        "Table replay: the crate's paged query of the same event rows (1,000 a page), no decoding",
    ));
    rows.push(
        Row::compare(
            "replay.table.write",
            SECTION,
            "writing that stream in process, 48 events per append (Table)",
            "events/s",
            write_rate,
            None,
            "",
        )
        .note("setup of the replay, for scale: one entity group transaction per 48 events"),
    );

    // GetBalance on the long Table stream against one point read.
    let balance_url = format!("{}/api/GetBalance/{INSTANCE}", env.app.front_url());
    expect_status(env.http.get(&balance_url), 200, "GetBalance").await?;
    let raw_snapshots = RawTable::new(&env.account, table::DEFAULT_SNAPSHOT_TABLE)?;
    let small = StreamId::new(BANK_DOMAIN, BANK_ENTITY, SMALL_INSTANCE)?;
    write_account(&table_store, &small, 2).await?;
    let small_key = format!("{BANK_DOMAIN}|{BANK_ENTITY}|{SMALL_INSTANCE}");
    let mut small_query = Samples::default();
    let mut balance = Samples::default();
    let mut point = Samples::default();
    let mut same_reads = Samples::default();
    let mut cold = Samples::default();
    // A cold instance's runner: the persistent snapshot, no state cached in process. Its first
    // run leaves a snapshot of the bench's balance projection at the head.
    let cold_runner = ProjectionRunner::new(Arc::new(TableStore::new(env.account.clone())))
        .with_snapshots(
            Arc::new(table::TableSnapshotStore::new(env.account.clone())),
            0,
        );
    cold_runner.run(&stream, &Balance, AsOf::Latest).await?;
    for _ in 0..plan.balance_samples {
        let t = Instant::now();
        expect_status(env.http.get(&balance_url), 200, "GetBalance").await?;
        balance.push(t.elapsed());
        let t = Instant::now();
        raw_table.point_read(&partition_key, HEADER_ROW_KEY).await?;
        point.push(t.elapsed());
        let t = Instant::now();
        let projected = cold_runner.run(&stream, &Balance, AsOf::Latest).await?;
        cold.push(t.elapsed());
        if projected.snapshot_sequence != Some(events) || projected.events_read != 0 {
            bail!("the cold run did not start from the snapshot at the head: {projected:?}");
        }
        // The reads a cold run makes at the head, sent directly: the snapshot row and the
        // header together.
        let t = Instant::now();
        let (snapshot, header) = futures::join!(
            raw_snapshots.point_read_optional(&partition_key, ACCOUNT_PROJECTION),
            raw_table.point_read(&partition_key, HEADER_ROW_KEY),
        );
        snapshot?;
        header?;
        same_reads.push(t.elapsed());
        let t = Instant::now();
        raw_table.read_event_rows_from(&small_key, 3).await?;
        small_query.push(t.elapsed());
    }
    let point_what = "one point read of a row (the stream header), direct";
    let (operation, missing) = match findings.snapshots_persisted {
        Some(true) => (
            format!(
                "GetBalance, {events}-event stream, warm instance (state cached), full path p50"
            ),
            None,
        ),
        Some(false) => (
            format!("GetBalance, {events}-event stream, no snapshot (full replay), full path p50"),
            Some("snapshots are not persisted by the backends yet (see the storage requests section)"),
        ),
        None => (
            format!("GetBalance, {events}-event stream, full path p50"),
            Some("whether a snapshot was used is known only with the storage requests section"),
        ),
    };
    let mut row = Row::compare(
        "replay.balance.snapshot.p50",
        SECTION,
        operation,
        "ms",
        balance.median_ms().unwrap_or_default(),
        point.median_ms(),
        point_what,
    );
    match missing {
        None => row = row.target(Target::RatioAtMost(SNAPSHOT_TARGET_RATIO)),
        Some(reason) => rows.push(Row::not_available(
            "replay.balance.snapshot.target",
            SECTION,
            format!("GetBalance with a snapshot, {events}-event stream"),
            "ms",
            reason,
        )),
    }
    rows.push(row);
    rows.push(
        Row::compare(
            "replay.balance.cold.p50",
            SECTION,
            "  the same run on a cold instance (persistent snapshot at the head), in process p50",
            "ms",
            cold.median_ms().unwrap_or_default(),
            point.median_ms(),
            point_what,
        )
        .target(Target::RatioAtMost(SNAPSHOT_TARGET_RATIO))
        .note(
            "ProjectionRunner with the Table snapshot store and no state cache: the snapshot row \
             and the stream header, read together; no events past the snapshot",
        ),
    );
    rows.push(Row::compare(
        "replay.balance.snapshot.rawreads.p50",
        SECTION,
        "  those two reads sent directly (snapshot row and header together), p50",
        "ms",
        same_reads.median_ms().unwrap_or_default(),
        point.median_ms(),
        point_what,
    ));
    rows.push(Row::compare(
        "replay.balance.smallquery.p50",
        SECTION,
        "  for scale: the empty query past the end of a 2-event stream in the same table, p50",
        "ms",
        small_query.median_ms().unwrap_or_default(),
        point.median_ms(),
        point_what,
    )
    .note(
        "Azurite evaluates a query's filter against the rows of the whole table (LokiJS), so a \
         range query costs about the same on a 2-event stream as on the long one; Table \
         storage serves it from the partition's index",
    ));

    // Append Blob.
    let blob_stream = StreamId::new(BLOB_DOMAIN, crate::env::BLOB_ENTITY, INSTANCE)?;
    let blob_store: Arc<dyn EventStore> = Arc::new(BlobStore::new(env.account.clone()));
    write_account(&blob_store, &blob_stream, events).await?;
    let raw_blobs = RawBlobs::new(&env.account, blob::DEFAULT_CONTAINER)?;
    let prefix = format!(
        "{BLOB_DOMAIN}/{}/{}/",
        crate::env::BLOB_ENTITY,
        blob::escape_instance(INSTANCE)
    );
    let mut ours = Samples::default();
    let mut raw = Samples::default();
    for _ in 0..plan.replay_runs {
        let runner = ProjectionRunner::new(Arc::new(BlobStore::new(env.account.clone())));
        let t = Instant::now();
        let projected = runner.run(&blob_stream, &Balance, AsOf::Latest).await?;
        ours.push(t.elapsed());
        check_replay(projected.events_read, projected.state.balance, events)?;
        let t = Instant::now();
        let mut lines = 0;
        for name in &raw_blobs.names(&prefix).await? {
            let bytes = raw_blobs.download(name).await?;
            lines += bytes.iter().filter(|&&b| b == b'\n').count();
        }
        raw.push(t.elapsed());
        if lines as u64 != events {
            bail!("the raw download held {lines} records, expected {events}");
        }
    }
    rows.push(rate_row(
        "replay.blob",
        &format!("replay {events} events, Append Blob: ProjectionRunner, cold store"),
        events,
        &ours,
        &raw,
        "Append Blob replay: a listing of the stream's segments and one open-ended download of each, records counted",
    ));
    rows.extend(replay_requests(env, &stream, &blob_stream, &partition_key, &prefix).await?);
    Ok(rows)
}

/// Every event read and every deposit of 1.00 summed.
fn check_replay(events_read: u64, balance: Decimal, events: u64) -> anyhow::Result<()> {
    let deposits = Decimal::from(events.saturating_sub(1));
    if events_read != events || balance != deposits {
        bail!(
            "the replay read {events_read} events with balance {balance}; expected {events} \
             events and {deposits}"
        );
    }
    Ok(())
}

fn rate_row(
    id: &str,
    operation: &str,
    events: u64,
    ours: &Samples,
    raw: &Samples,
    raw_what: &str,
) -> Row {
    let rate = |s: &Samples| {
        s.median_ms()
            .filter(|ms| *ms > 0.0)
            .map(|ms| events as f64 / (ms / 1000.0))
    };
    Row::compare(
        id,
        SECTION,
        operation,
        "events/s",
        rate(ours).unwrap_or_default(),
        rate(raw),
        raw_what,
    )
    .target(Target::RatioAtLeast(TARGET_RATIO))
    .note(format!(
        "{operation}: median of {} runs, {:.0} ms vs {:.0} ms raw",
        ours.len(),
        ours.median_ms().unwrap_or_default(),
        raw.median_ms().unwrap_or_default()
    ))
}

/// Counts the storage requests of one replay (and of its raw counterpart) on each backend,
/// through counting proxies in front of the same Azurite.
async fn replay_requests(
    env: &Env,
    table_stream: &StreamId,
    blob_stream: &StreamId,
    partition_key: &str,
    blob_prefix: &str,
) -> anyhow::Result<Vec<Row>> {
    let table_proxy =
        CountingProxy::start(&format!("http://127.0.0.1:{}", env.azurite.table_port)).await?;
    let blob_proxy =
        CountingProxy::start(&format!("http://127.0.0.1:{}", env.azurite.blob_port)).await?;
    let account = streamfold::storage::StorageAccount::from_connection_string(
        &Azurite::connection_string_for(
            &format!(
                "{}/{}",
                blob_proxy.url(),
                streamfold_testbed::azurite::ACCOUNT
            ),
            &format!(
                "{}/{}",
                table_proxy.url(),
                streamfold_testbed::azurite::ACCOUNT
            ),
        ),
    )?;

    let table_store = Arc::new(TableStore::new(account.clone()));
    // A first request makes this store create (find) its table: not part of a replay.
    table_store.version(table_stream).await?;
    table_proxy.reset();
    ProjectionRunner::new(table_store)
        .run(table_stream, &Balance, AsOf::Latest)
        .await?;
    let table_ours = table_proxy.requests();
    table_proxy.reset();
    RawTable::new(&account, table::DEFAULT_TABLE_NAME)?
        .read_event_rows(partition_key)
        .await?;
    let table_raw = table_proxy.requests();

    blob_proxy.reset();
    ProjectionRunner::new(Arc::new(BlobStore::new(account.clone())))
        .run(blob_stream, &Balance, AsOf::Latest)
        .await?;
    let blob_ours = blob_proxy.requests();
    let blob_log = blob_proxy.log().join(", ");
    blob_proxy.reset();
    let raw_blobs = RawBlobs::new(&account, blob::DEFAULT_CONTAINER)?;
    for name in raw_blobs.names(blob_prefix).await? {
        raw_blobs.download(&name).await?;
    }
    let blob_raw = blob_proxy.requests();
    Ok(vec![
        Row::compare(
            "replay.table.requests",
            SECTION,
            "  storage requests of one Table replay",
            "requests",
            table_ours as f64,
            Some(table_raw as f64),
            "Table replay: the crate's paged query of the same event rows (1,000 a page), no decoding",
        ),
        Row::compare(
            "replay.blob.requests",
            SECTION,
            "  storage requests of one Append Blob replay (cold store)",
            "requests",
            blob_ours as f64,
            Some(blob_raw as f64),
            "Append Blob replay: a listing of the stream's segments and one open-ended download of each, records counted",
        )
        .note(format!("Append Blob replay, cold store: {blob_log}")),
    ])
}
