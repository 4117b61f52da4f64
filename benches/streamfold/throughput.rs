//! Section 2, append throughput: 1, 8 and 32 concurrent clients, each appending one event at a
//! time with a known version to its own stream, for a fixed time, along every path of
//! [`crate::writers`] (Table storage).
//!
//! Each path runs alone (they would compete for the same two cores otherwise), on streams
//! created for it, and the order of the paths rotates with the concurrency so none always
//! runs first; the whole sweep is repeated for several rounds and the median round counts, so a
//! burst of load from elsewhere on the machine moves one round, not the result. Throughput is
//! completed appends divided by the time until the last client finished. The target (streamfold ≥ 0.8× raw) applies to the full path.

use std::time::{Duration, Instant};

use anyhow::Context;
use futures::future::try_join_all;

use crate::env::Env;
use crate::report::{Row, Target};
use crate::writers::{self, Backend, Targets, Variant, Writer};
use crate::Plan;

/// The target: streamfold's throughput at least this fraction of raw.
pub const TARGET_RATIO: f64 = 0.8;
/// Concurrent clients measured.
pub const CONCURRENCY: [usize; 3] = [1, 8, 32];
const SECTION: &str = "append throughput";

pub async fn run(env: &Env, plan: &Plan) -> anyhow::Result<Vec<Row>> {
    let backend = Backend::Table;
    let targets = writers::targets(env, backend).await?;
    let paths = Variant::ALL.len();
    // rates[concurrency][path]: one rate per round.
    let mut rates = vec![vec![Vec::new(); paths]; CONCURRENCY.len()];
    for round in 0..plan.throughput_rounds {
        for (c, clients) in CONCURRENCY.into_iter().enumerate() {
            for k in 0..paths {
                let index = (round + c + k) % paths;
                let variant = Variant::ALL[index];
                let rate = measure(
                    &targets,
                    backend,
                    variant,
                    clients,
                    plan.throughput_time,
                    round,
                )
                .await
                .with_context(|| format!("{clients} clients, {}", variant.describe()))?;
                rates[c][index].push(rate);
            }
        }
    }
    let mut rows = Vec::new();
    for (c, clients) in CONCURRENCY.into_iter().enumerate() {
        let raw = median(&rates[c][paths - 1]);
        for (index, variant) in Variant::ALL.iter().enumerate().take(paths - 1) {
            let row = Row::compare(
                format!("throughput.append.table.{}.c{clients}", variant.key()),
                SECTION,
                format!(
                    "appends/s, {clients} client{}, Table: {}",
                    if clients == 1 { "" } else { "s" },
                    variant.describe()
                ),
                "ops/s",
                median(&rates[c][index]),
                Some(raw),
                "Table: one entity group transaction of the same 4 operations and bytes \
                 (azure_data_tables 0.21, direct); the same number of concurrent clients, each \
                 on its own partition",
            )
            .note(format!(
                "{} clients, {}: median of {} rounds of {:.0} s; streamfold {}, raw {}",
                clients,
                variant.describe(),
                plan.throughput_rounds,
                plan.throughput_time.as_secs_f64(),
                list(&rates[c][index]),
                list(&rates[c][paths - 1])
            ));
            rows.push(if *variant == Variant::Full {
                row.target(Target::RatioAtLeast(TARGET_RATIO))
            } else {
                row
            });
        }
    }
    Ok(rows)
}

/// The median of `values` (the lower middle one for an even count); 0 for none.
fn median(values: &[f64]) -> f64 {
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    sorted
        .get(sorted.len().saturating_sub(1) / 2)
        .copied()
        .unwrap_or_default()
}

fn list(values: &[f64]) -> String {
    values
        .iter()
        .map(|v| format!("{v:.0}"))
        .collect::<Vec<_>>()
        .join("/")
}

/// Runs `clients` writers along `variant` for `duration`; returns appends per second.
async fn measure(
    targets: &Targets,
    backend: Backend,
    variant: Variant,
    clients: usize,
    duration: Duration,
    round: usize,
) -> anyhow::Result<f64> {
    let writers = try_join_all((0..clients).map(|client| {
        let instance = format!("throughput-{round}-{clients}-{}-{client}", variant.key());
        async move { Writer::create(targets, backend, variant, &instance).await }
    }))
    .await?;
    let started = Instant::now();
    let deadline = started + duration;
    let tasks = writers.into_iter().map(|mut writer| {
        tokio::spawn(async move {
            let mut appended = 0_u64;
            while Instant::now() < deadline {
                writer.append().await?;
                appended += 1;
            }
            Ok::<u64, anyhow::Error>(appended)
        })
    });
    let mut total = 0;
    for result in futures::future::join_all(tasks).await {
        total += result.context("a client task panicked")??;
    }
    Ok(total as f64 / started.elapsed().as_secs_f64())
}
