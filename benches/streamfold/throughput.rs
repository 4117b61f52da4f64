//! Section 2, append throughput: 1, 8 and 32 concurrent clients, each appending one event at a
//! time with a known version to its own stream, along every path of [`crate::writers`] (Table
//! storage).
//!
//! Paths never run at the same time (they would compete for the same two cores), but they are
//! interleaved finely: each path's clients run for one short time slice, then the next path's,
//! round-robin with a rotating start, for many slices. Azurite slows down as its table grows
//! and other work on the machine comes and goes; slicing spreads both over every path alike,
//! where measuring one path after the other would hand the later paths a slower Azurite. A
//! path's throughput is its completed appends divided by the time its slices took (each slice
//! ends when the last client's last append finished). The target (streamfold ≥ 0.8× raw)
//! applies to the full path.

use std::time::{Duration, Instant};

use anyhow::Context;
use futures::future::try_join_all;

use crate::env::Env;
use crate::report::{Row, Target};
use crate::writers::{self, Backend, Variant, Writer};
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
    let mut rows = Vec::new();
    for clients in CONCURRENCY {
        let mut fleets = Vec::with_capacity(paths);
        for variant in Variant::ALL {
            fleets.push(
                try_join_all((0..clients).map(|client| {
                    let instance = format!("throughput-{clients}-{}-{client}", variant.key());
                    let targets = &targets;
                    async move { Writer::create(targets, backend, variant, &instance).await }
                }))
                .await?,
            );
        }
        let mut appends = vec![0_u64; paths];
        let mut seconds = vec![0_f64; paths];
        for slice in 0..plan.throughput_slices {
            for k in 0..paths {
                let index = (slice + k) % paths;
                let fleet = std::mem::take(&mut fleets[index]);
                let (fleet, count, elapsed) = run_slice(fleet, plan.throughput_slice)
                    .await
                    .with_context(|| {
                        format!("{clients} clients, {}", Variant::ALL[index].describe())
                    })?;
                fleets[index] = fleet;
                appends[index] += count;
                seconds[index] += elapsed.as_secs_f64();
            }
        }
        let rate = |index: usize| appends[index] as f64 / seconds[index].max(f64::EPSILON);
        let raw = rate(paths - 1);
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
                rate(index),
                Some(raw),
                "Table: one entity group transaction of the same 4 operations and bytes \
                 (azure_data_tables 0.21, direct); the same number of concurrent clients, each \
                 on its own partition",
            )
            .note(format!(
                "{clients} clients, {}: {} appends in {:.1} s vs raw {} in {:.1} s, {} slices \
                 of {:.1} s per path",
                variant.describe(),
                appends[index],
                seconds[index],
                appends[paths - 1],
                seconds[paths - 1],
                plan.throughput_slices,
                plan.throughput_slice.as_secs_f64()
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

/// Runs every writer of `fleet` concurrently, appending until `duration` has passed; returns
/// the writers, the appends completed and the time until the last one finished.
async fn run_slice(
    fleet: Vec<Writer>,
    duration: Duration,
) -> anyhow::Result<(Vec<Writer>, u64, Duration)> {
    let started = Instant::now();
    let deadline = started + duration;
    let tasks = fleet.into_iter().map(|mut writer| {
        tokio::spawn(async move {
            let mut appended = 0_u64;
            while Instant::now() < deadline {
                writer.append().await?;
                appended += 1;
            }
            Ok::<(Writer, u64), anyhow::Error>((writer, appended))
        })
    });
    let mut fleet = Vec::new();
    let mut total = 0;
    for result in futures::future::join_all(tasks).await {
        let (writer, appended) = result.context("a client task panicked")??;
        fleet.push(writer);
        total += appended;
    }
    Ok((fleet, total, started.elapsed()))
}
