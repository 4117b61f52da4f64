//! Section 2b, one hot stream: bank `Deposit` commands from 1, 8 and 32 concurrent clients, all
//! on ONE account, through the full path (HTTP -> host simulator -> one handler), on Table
//! storage and on Append Blobs; beside the raw append at the same concurrency (each raw client
//! on its own stream: what the storage does when nothing has to be ordered).
//!
//! Rows (ids `hot.*`): commands/s that succeeded (raw column: raw appends/s), the share of
//! commands answered 200 (a 409 or 503 under contention counts as not succeeded; the run goes
//! on), and the command latency p50/p99 (raw column: the raw append's at the same
//! concurrency). The ratio row `hot.deposit.<backend>.c32.vs_streams` compares the hot
//! account's commands/s with full-path appends/s of 32 clients on 32 separate streams (issue
//! 14's target: at least 0.5).
//!
//! The hot account's app is one of its own (one handler: "one instance"), with the settings of
//! [`SETTINGS_ENV`] added, so the same build measures group commit off and on.
//!
//! As in [`crate::throughput`], the paths take turns in short time slices, so that a slower
//! Azurite later in the run affects all of them alike; only completed requests count.

use std::time::{Duration, Instant};

use anyhow::Context;
use futures::future::try_join_all;
use serde_json::json;

use crate::env::{expect_status, App, Env, BANK_DOMAIN, NOTIFICATIONS_OFF};
use crate::report::{Row, Samples, Target};
use crate::writers::{self, Backend, Variant, Writer};
use crate::Plan;

/// Concurrent clients measured.
pub const CONCURRENCY: [usize; 3] = [1, 8, 32];
/// Issue 14's target: the hot account's commands/s at least this fraction of the appends/s
/// of as many clients on separate streams.
pub const TARGET_VS_STREAMS: f64 = 0.5;
/// The amount of every deposit (the account only grows, so no command is refused).
const DEPOSIT: &str = "1.00";
const SECTION: &str = "hot stream";

/// One client's way to storage in this section.
enum Client {
    /// Deposits to the hot account over HTTP.
    Deposit { http: reqwest::Client, url: String },
    /// Appends along one of [`crate::writers`]' paths to its own stream.
    Append(Writer),
}

/// What a fleet of clients did in its slices.
#[derive(Default)]
struct Tally {
    succeeded: u64,
    attempted: u64,
    seconds: f64,
    latencies: Samples,
    /// HTTP statuses of the commands that did not succeed, with their counts.
    refused: Vec<(u16, u64)>,
}

impl Tally {
    fn rate(&self) -> f64 {
        self.succeeded as f64 / self.seconds.max(f64::EPSILON)
    }

    fn refused(&mut self, status: u16) {
        match self.refused.iter_mut().find(|(s, _)| *s == status) {
            Some((_, n)) => *n += 1,
            None => self.refused.push((status, 1)),
        }
    }
}

impl Client {
    /// One request; `Some(status)` when a command was answered with anything but 200.
    async fn send(&mut self) -> anyhow::Result<Option<u16>> {
        match self {
            Self::Deposit { http, url } => {
                let response = http
                    .post(url.as_str())
                    .json(&json!({ "amount": DEPOSIT }))
                    .send()
                    .await
                    .with_context(|| format!("POST {url}"))?;
                let status = response.status().as_u16();
                // Read the body: the answer is complete when the client has it.
                response.bytes().await?;
                Ok((status != 200).then_some(status))
            }
            Self::Append(writer) => writer.append().await.map(|()| None),
        }
    }
}

/// Environment variable with app settings for the hot section's apps, `NAME=VALUE` pairs
/// separated by commas (`StreamfoldGroupCommit=false` measures commands one at a time).
pub const SETTINGS_ENV: &str = "STREAMFOLD_BENCH_HOT_SETTINGS";

/// An app of its own for the hot account, on the environment's Azurite, with `Bank/Account`
/// on `backend` and the settings of [`SETTINGS_ENV`].
async fn bank_app(env: &Env, backend: Backend) -> anyhow::Result<App> {
    let mut settings: Vec<(String, String)> = NOTIFICATIONS_OFF
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    if backend == Backend::Blob {
        settings.push((
            format!("Streamfold__{BANK_DOMAIN}__{}", crate::env::BANK_ENTITY),
            "AppendBlob;AzureWebJobsStorage".into(),
        ));
    }
    if let Ok(extra) = std::env::var(SETTINGS_ENV) {
        for pair in extra.split(',').filter(|p| !p.trim().is_empty()) {
            let (name, value) = pair
                .split_once('=')
                .with_context(|| format!("{SETTINGS_ENV}: {pair:?} is not NAME=VALUE"))?;
            settings.push((name.trim().to_owned(), value.trim().to_owned()));
        }
    }
    App::start_with(env.azurite.connection_string(), settings, 0).await
}

pub async fn run(env: &Env, plan: &Plan) -> anyhow::Result<Vec<Row>> {
    let mut rows = Vec::new();
    for backend in [Backend::Table, Backend::Blob] {
        rows.extend(
            backend_rows(env, plan, backend)
                .await
                .with_context(|| format!("hot stream, {}", backend.name()))?,
        );
    }
    Ok(rows)
}

async fn backend_rows(env: &Env, plan: &Plan, backend: Backend) -> anyhow::Result<Vec<Row>> {
    let app = bank_app(env, backend).await?;
    let front = app.front_url();
    let targets = writers::targets(env, backend).await?;
    let mut rows = Vec::new();
    for clients in CONCURRENCY {
        let account = format!("HOT-{}-{clients}", backend.key().to_uppercase());
        expect_status(
            env.http
                .post(format!("{front}/api/OpenAccount/{account}"))
                .json(&json!({})),
            201,
            "OpenAccount",
        )
        .await?;
        let url = format!("{front}/api/Deposit/{account}");
        let hot: Vec<Client> = (0..clients)
            .map(|_| Client::Deposit {
                http: env.http.clone(),
                url: url.clone(),
            })
            .collect();
        let mut variants = vec![Variant::Raw];
        if clients == 32 {
            variants.push(Variant::Full);
        }
        let mut fleets = vec![hot];
        for variant in &variants {
            fleets.push(
                try_join_all((0..clients).map(|client| {
                    let instance = format!("hot-{clients}-{}-{client}", variant.key());
                    let targets = &targets;
                    async move {
                        Writer::create(targets, backend, *variant, &instance)
                            .await
                            .map(Client::Append)
                    }
                }))
                .await?,
            );
        }
        let mut tallies: Vec<Tally> = fleets.iter().map(|_| Tally::default()).collect();
        for slice in 0..plan.hot_slices {
            for k in 0..fleets.len() {
                let index = (slice + k) % fleets.len();
                let fleet = std::mem::take(&mut fleets[index]);
                fleets[index] = run_slice(fleet, plan.throughput_slice, &mut tallies[index])
                    .await
                    .with_context(|| format!("{clients} clients, fleet {index}"))?;
            }
        }
        rows.extend(concurrency_rows(plan, backend, clients, &tallies));
    }
    drop(app);
    Ok(rows)
}

fn concurrency_rows(plan: &Plan, backend: Backend, clients: usize, tallies: &[Tally]) -> Vec<Row> {
    let (hot, raw) = (&tallies[0], &tallies[1]);
    let id = format!("hot.deposit.{}.c{clients}", backend.key());
    let who = format!(
        "{clients} client{} on ONE account, {}",
        if clients == 1 { "" } else { "s" },
        backend.name()
    );
    let raw_what = format!(
        "{}: raw appends at the same concurrency, each client on its own stream (as in the \
         throughput section)",
        backend.name()
    );
    let refused = if hot.refused.is_empty() {
        "none refused".to_owned()
    } else {
        let list: Vec<String> = hot
            .refused
            .iter()
            .map(|(status, n)| format!("{n} answered {status}"))
            .collect();
        list.join(", ")
    };
    let mut rows = vec![Row::compare(
        id.clone(),
        SECTION,
        format!("Deposit commands/s, {who}: full path"),
        "ops/s",
        hot.rate(),
        Some(raw.rate()),
        raw_what.clone(),
    )
    .note(format!(
        "{clients} clients on one account: {} of {} deposits succeeded in {:.1} s ({refused}) vs \
         raw {} appends in {:.1} s; {} slices of {:.1} s per path",
        hot.succeeded,
        hot.attempted,
        hot.seconds,
        raw.succeeded,
        raw.seconds,
        plan.hot_slices,
        plan.throughput_slice.as_secs_f64()
    ))];
    let success = hot.succeeded as f64 / (hot.attempted.max(1)) as f64;
    rows.push(Row::compare(
        format!("{id}.success"),
        SECTION,
        format!("  share of those deposits answered 200, {who}"),
        "ratio",
        success,
        None,
        "",
    ));
    for (percentile, label) in [(50.0, "p50"), (99.0, "p99")] {
        if let Some(value) = hot.latencies.percentile_ms(percentile) {
            rows.push(Row::compare(
                format!("{id}.{label}"),
                SECTION,
                format!("  Deposit latency {label}, {who}"),
                "ms",
                value,
                raw.latencies.percentile_ms(percentile),
                raw_what.clone(),
            ));
        }
    }
    if let Some(streams) = tallies.get(2) {
        rows.push(
            Row::compare(
                format!("{id}.vs_streams"),
                SECTION,
                format!(
                    "  hot account's commands/s over full-path appends/s on {clients} separate \
                     streams, {}",
                    backend.name()
                ),
                "ops/s",
                hot.rate(),
                Some(streams.rate()),
                format!(
                    "{}: full-path appends (HTTP -> host sim -> handler), {clients} clients each \
                     on its own stream",
                    backend.name()
                ),
            )
            .target(Target::RatioAtLeast(TARGET_VS_STREAMS))
            .note(format!(
                "{} deposits on one account in {:.1} s vs {} appends on {clients} streams in \
                 {:.1} s",
                hot.succeeded, hot.seconds, streams.succeeded, streams.seconds
            )),
        );
    }
    rows
}

/// Runs every client of `fleet` concurrently until `duration` has passed, adding to `tally`.
async fn run_slice(
    fleet: Vec<Client>,
    duration: Duration,
    tally: &mut Tally,
) -> anyhow::Result<Vec<Client>> {
    let started = Instant::now();
    let deadline = started + duration;
    let tasks = fleet.into_iter().map(|mut client| {
        tokio::spawn(async move {
            let mut done = Vec::new();
            while Instant::now() < deadline {
                let sent = Instant::now();
                let refused = client.send().await?;
                done.push((sent.elapsed(), refused));
            }
            Ok::<_, anyhow::Error>((client, done))
        })
    });
    let mut fleet = Vec::new();
    for result in futures::future::join_all(tasks).await {
        let (client, done) = result.context("a client task panicked")??;
        fleet.push(client);
        for (latency, refused) in done {
            tally.attempted += 1;
            match refused {
                None => {
                    tally.succeeded += 1;
                    tally.latencies.push(latency);
                }
                Some(status) => tally.refused(status),
            }
        }
    }
    tally.seconds += started.elapsed().as_secs_f64();
    Ok(fleet)
}
