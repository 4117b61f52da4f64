//! Section 1, append latency: one event with a known expected version, p50 and p99, along
//! every path of [`crate::writers`], for Table storage and Append Blobs.
//!
//! The paths are sampled round-robin (the starting path rotates every round), so a drift of
//! the shared machine during the run affects every path alike; the ratios, not the absolute
//! milliseconds, are what to compare. The target (streamfold ≤ 1.3× raw) applies to the full
//! path; the other paths show where the difference comes from.

use std::time::Instant;

use crate::env::Env;
use crate::report::{Row, Samples, Target};
use crate::writers::{self, Backend, Variant, Writer};
use crate::Plan;

/// The target: streamfold's append latency at most this multiple of raw.
pub const TARGET_RATIO: f64 = 1.3;
const SECTION: &str = "append latency";

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

async fn backend_rows(env: &Env, plan: &Plan, backend: Backend) -> anyhow::Result<Vec<Row>> {
    let targets = writers::targets(env, backend).await?;
    let mut writers = Vec::new();
    for variant in Variant::ALL {
        let instance = format!("latency-{}", variant.key());
        writers.push((
            variant,
            Writer::create(&targets, backend, variant, &instance).await?,
        ));
    }
    for _ in 0..plan.latency_warmup {
        for (_, writer) in writers.iter_mut() {
            writer.append().await?;
        }
    }
    let n = writers.len();
    let mut samples = vec![Samples::with_capacity(plan.latency_samples); n];
    for round in 0..plan.latency_samples {
        for k in 0..n {
            let index = (round + k) % n;
            let started = Instant::now();
            writers[index].1.append().await?;
            samples[index].push(started.elapsed());
        }
    }

    let raw_index = n - 1;
    let mut rows = Vec::new();
    for (percentile, label) in [(50.0, "p50"), (99.0, "p99")] {
        let raw = samples[raw_index].percentile_ms(percentile);
        for (index, (variant, _)) in writers.iter().enumerate().take(raw_index) {
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
    Ok(rows)
}
