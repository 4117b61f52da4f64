//! Section 1, append latency: one event with a known expected version, p50 and p99, along
//! every path of [`crate::writers`], for Table storage and Append Blobs.
//!
//! The paths are sampled round-robin (the starting path rotates every round), so a drift of
//! the shared machine during the run affects every path alike; the ratios, not the absolute
//! milliseconds, are what to compare. The target (streamfold ≤ 1.3× raw) applies to the full
//! path; the other paths show where the difference comes from.
//!
//! The host's hop alone, in the same rounds as the Table appends: a POST of an append's body to
//! a path no function serves, answered by our handler at once (404 `no-such-route`, decided by
//! its route table before any function or storage runs), sent through the host simulator and
//! straight to the handler's port. `p50(via host) − p50(direct)` is the simulator's forward
//! with a handler that does nothing, to hold against the Table append's `p50(full) −
//! p50(handler)`. Our handler's route rather than the test bed's echo-handler: that binary is
//! built for the test bed's own tests and Cargo gives this benchmark no path to it, and this
//! way the hop is measured to the very handler process, port and connections the appends use.

use std::time::Instant;

use anyhow::{bail, Context};
use serde_json::json;

use crate::env::{self, Env};
use crate::report::{Row, Samples, Target};
use crate::writers::{self, Backend, Targets, Variant, Writer};
use crate::Plan;

/// The target: streamfold's append latency at most this multiple of raw.
pub const TARGET_RATIO: f64 = 1.3;
const SECTION: &str = "append latency";
/// The hop probe's path: under the route prefix, matched by no function but the app's
/// catch-all `NotFound` (so the host forwards it), answered 404 by the handler's route table.
const HOP_PATH: &str = "/api/bench-hop/none";
/// The problem type the handler answers the hop probe with (`problem::no_such_route`).
const NO_SUCH_ROUTE: &str = "no-such-route";

pub async fn run(env: &Env, plan: &Plan) -> anyhow::Result<Vec<Row>> {
    let mut rows = Vec::new();
    for backend in [Backend::Table, Backend::Blob] {
        rows.extend(backend_rows(env, plan, backend).await?);
    }
    Ok(rows)
}

fn raw_what(backend: Backend) -> &'static str {
    match backend {
        Backend::Table => {
            "Table: one entity group transaction of the same 4 operations and bytes (azure_data_tables 0.21, direct)"
        }
        Backend::Blob => {
            "Append Blob: one Append Block of the same size with x-ms-blob-condition-appendpos (azure_storage_blobs 0.21, direct)"
        }
    }
}

/// Where a hop probe goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Hop {
    ViaHost,
    Direct,
}

/// The hop probe along one way: a POST the handler answers without doing anything.
struct HopProbe {
    http: reqwest::Client,
    url: String,
    body: String,
}

impl HopProbe {
    fn new(targets: &Targets, hop: Hop) -> anyhow::Result<Self> {
        let base = match hop {
            Hop::ViaHost => &targets.front_url,
            Hop::Direct => &targets.handler_url,
        };
        Ok(Self {
            http: targets.http.clone(),
            url: format!("{base}{HOP_PATH}"),
            body: env::append_body(&json!(1)),
        })
    }

    /// Sends the probe; fails unless the handler's `no-such-route` comes back (so the host
    /// did forward it, and nothing else answered).
    async fn send(&self) -> anyhow::Result<()> {
        let response = self
            .http
            .post(&self.url)
            .header("content-type", "application/json")
            .body(self.body.clone())
            .send()
            .await
            .with_context(|| format!("POST {}", self.url))?;
        let status = response.status();
        let bytes = response.bytes().await?;
        let text = String::from_utf8_lossy(&bytes);
        if status.as_u16() != 404 || !text.contains(NO_SUCH_ROUTE) {
            bail!(
                "POST {} answered {status}: {text} (expected the handler's 404 {NO_SUCH_ROUTE})",
                self.url
            );
        }
        Ok(())
    }
}

/// One thing timed every round.
enum Probe {
    Append(Variant, Writer),
    Hop(Hop, HopProbe),
}

impl Probe {
    async fn run(&mut self) -> anyhow::Result<()> {
        match self {
            Self::Append(_, writer) => writer.append().await,
            Self::Hop(_, probe) => probe.send().await,
        }
    }
}

async fn backend_rows(env: &Env, plan: &Plan, backend: Backend) -> anyhow::Result<Vec<Row>> {
    let targets = writers::targets(env, backend).await?;
    let mut probes = Vec::new();
    for variant in Variant::ALL {
        let instance = format!("latency-{}", variant.key());
        probes.push(Probe::Append(
            variant,
            Writer::create(&targets, backend, variant, &instance).await?,
        ));
    }
    if backend == Backend::Table {
        for hop in [Hop::ViaHost, Hop::Direct] {
            probes.push(Probe::Hop(hop, HopProbe::new(&targets, hop)?));
        }
    }
    for _ in 0..plan.latency_warmup {
        for probe in probes.iter_mut() {
            probe.run().await?;
        }
    }
    let n = probes.len();
    let mut samples = vec![Samples::with_capacity(plan.latency_samples); n];
    for round in 0..plan.latency_samples {
        for k in 0..n {
            let index = (round + k) % n;
            let started = Instant::now();
            probes[index].run().await?;
            samples[index].push(started.elapsed());
        }
    }

    let find = |wanted: Variant| {
        probes
            .iter()
            .position(|probe| matches!(probe, Probe::Append(variant, _) if *variant == wanted))
    };
    let raw_index = find(Variant::Raw).context("no raw writer")?;
    let mut rows = Vec::new();
    for (percentile, label) in [(50.0, "p50"), (99.0, "p99")] {
        let raw = samples[raw_index].percentile_ms(percentile);
        for (index, probe) in probes.iter().enumerate() {
            let Probe::Append(variant, _) = probe else {
                continue;
            };
            if *variant == Variant::Raw {
                continue;
            }
            let Some(value) = samples[index].percentile_ms(percentile) else {
                continue;
            };
            let row = Row::compare(
                format!("latency.append.{}.{}.{label}", backend.key(), variant.key()),
                SECTION,
                format!(
                    "append 1 event, known version, {}: {} {label}",
                    backend.name(),
                    variant.describe()
                ),
                "ms",
                value,
                raw,
                raw_what(backend),
            );
            rows.push(if *variant == Variant::Full {
                row.target(Target::RatioAtMost(TARGET_RATIO))
            } else {
                row
            });
        }
    }
    rows.sort_by_key(|row| {
        let variant = Variant::ALL
            .iter()
            .position(|v| row.id.contains(&format!(".{}.", v.key())))
            .unwrap_or(0);
        (variant, row.id.ends_with("p99"))
    });
    let hop = |wanted: Hop| {
        probes
            .iter()
            .position(|probe| matches!(probe, Probe::Hop(hop, _) if *hop == wanted))
            .map(|index| &samples[index])
    };
    if let (Some(via_host), Some(direct)) = (hop(Hop::ViaHost), hop(Hop::Direct)) {
        let full = find(Variant::Full).map(|index| &samples[index]);
        let handler = find(Variant::Handler).map(|index| &samples[index]);
        rows.extend(hop_rows(via_host, direct, full.zip(handler)));
    }
    Ok(rows)
}

/// A figure of a set of samples, in milliseconds.
type Statistic = fn(&Samples) -> Option<f64>;

/// The hop probe's rows: its p50 and p99 through the host simulator against straight to the
/// handler, and the hop (the difference of the p50s, then of the means) against the append's
/// full-path extra (`appends`: the full and handler paths' samples of the same rounds).
fn hop_rows(
    via_host: &Samples,
    direct: &Samples,
    appends: Option<(&Samples, &Samples)>,
) -> Vec<Row> {
    let mut rows = Vec::new();
    for (percentile, label) in [(50.0, "p50"), (99.0, "p99")] {
        let Some(value) = via_host.percentile_ms(percentile) else {
            continue;
        };
        let row = Row::compare(
            format!("latency.hop.post.{label}"),
            SECTION,
            format!("host's hop: POST the handler answers at once, host sim -> handler {label}"),
            "ms",
            value,
            direct.percentile_ms(percentile),
            "host's hop: the same POST straight to the handler's port",
        );
        rows.push(if label == "p50" {
            row.note(format!(
                "POST {HOP_PATH} with an append's body, through the app's catch-all NotFound \
                 function; our handler's route table answers {NO_SUCH_ROUTE} before any \
                 function runs (the test bed's echo-handler is not reachable from this \
                 benchmark); sampled in the Table rounds"
            ))
        } else {
            row
        });
    }
    // The p50s compare the typical request; the means compare what one client's rate is the
    // inverse of (appends/s with one client = 1 / mean latency), tail included.
    let statistics: [(&str, Statistic); 2] =
        [("p50", Samples::median_ms), ("mean", Samples::mean_ms)];
    for (label, statistic) in statistics {
        let difference = |a: &Samples, b: &Samples| Some(statistic(a)? - statistic(b)?);
        let Some(hop) = difference(via_host, direct) else {
            continue;
        };
        let extra = appends.and_then(|(full, handler)| difference(full, handler));
        rows.push(
            Row::compare(
                format!("latency.hop.extra.{label}"),
                SECTION,
                format!("host's hop in ms: {label}(via host) - {label}(direct) of that POST"),
                "ms",
                hop,
                extra,
                format!(
                    "the Table append's {label}(full path) - {label}(handler path), same rounds"
                ),
            )
            .note(
                "ratio near 1: the full path's extra over the handler path is the host \
                 simulator's forward; well below 1: some of it is the append's own",
            ),
        );
    }
    rows
}
