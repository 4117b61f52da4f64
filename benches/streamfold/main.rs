//! The streamfold benchmark: one command that starts Azurite and the function app (the release
//! handler under the Functions host simulator) and measures, in the same run, streamfold
//! against the raw storage operations it is built on. It prints one table (operation,
//! streamfold, raw, ratio, target) and writes it as JSON for comparisons between commits.
//!
//! ```sh
//! cargo bench --bench streamfold                 # full mode (several minutes of measuring)
//! cargo bench --bench streamfold -- --short      # under a minute; what .ci/run runs
//! cargo bench --bench streamfold -- --json out.json --baseline bench-results/earlier.json
//! ```
//!
//! Guarantees:
//! - targets are reported (met / missed / n/a), never asserted: the run exits 0 whatever the
//!   timings, and fails only when something does not work (an append refused, Azurite or the
//!   handler not starting), so the short mode in CI keeps the benchmark from rotting without
//!   making builds depend on a shared machine's speed;
//! - streamfold and raw are measured in the same run on the same Azurite, interleaved where
//!   they can be, and compared as ratios: absolute times on Azurite and a shared 2-core machine
//!   drift, ratios much less;
//! - nothing is invented: what cannot be measured yet is a row marked n/a with the reason.
//!
//! Sections (see each module): [`latency`], [`throughput`], [`hot`], [`requests`], [`replay`],
//! [`footprint`], [`projector`], [`instructions`]. The report and its JSON are in [`report`].

mod env;
mod footprint;
mod hot;
mod instructions;
mod latency;
mod projector;
mod raw;
mod replay;
mod report;
mod requests;
mod throughput;
mod writers;

use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use serde_json::json;

use report::{Report, RunInfo};

/// Where results go unless `--json` names another file too (gitignored).
const RESULTS_DIR: &str = "bench-results";
/// Every section, in the order they run.
const SECTIONS: [&str; 8] = [
    "latency",
    "throughput",
    "hot",
    "requests",
    "replay",
    "footprint",
    "projector",
    "instructions",
];

/// Whether this benchmark (and the handler Cargo built with it) is an optimised build. CI runs
/// the short mode on the test suite's debug build, only to keep the benchmark working; its
/// numbers say nothing about speed, and the report says which build made them.
pub const BUILD: &str = if cfg!(debug_assertions) {
    "debug"
} else {
    "optimised"
};

const USAGE: &str = "usage: cargo bench --bench streamfold -- [--short] [--json PATH] \
                     [--baseline PATH] [--only SECTION[,SECTION...]]
  --short      small counts, under a minute of measuring (CI); leaves out `instructions`
               unless --only names it
  --json PATH  also write the results to PATH (they always go to bench-results/<timestamp>.json)
  --baseline PATH  compare this run's ratios with an earlier run's JSON
  --only LIST  run only these sections: latency, throughput, hot, requests, replay, footprint,
               projector, instructions";

/// How much to measure.
#[derive(Debug, Clone)]
pub struct Plan {
    pub short: bool,
    pub latency_warmup: usize,
    pub latency_samples: usize,
    /// Length of one throughput time slice, and slices per path and concurrency.
    pub throughput_slice: Duration,
    pub throughput_slices: usize,
    /// Slices per path and concurrency of the hot-stream section (of `throughput_slice` each).
    pub hot_slices: usize,
    pub replay_events: u64,
    pub replay_runs: usize,
    pub balance_samples: usize,
    pub starts: usize,
    pub load_time: Duration,
    pub projector_lag_samples: usize,
    pub projector_notifications: usize,
    /// MiB of the stream whose reading the footprint section measures.
    pub large_read_mib: u64,
}

impl Plan {
    fn short() -> Self {
        Self {
            short: true,
            latency_warmup: 5,
            latency_samples: 40,
            throughput_slice: Duration::from_millis(500),
            throughput_slices: 2,
            hot_slices: 1,
            replay_events: 2_000,
            replay_runs: 3,
            balance_samples: 5,
            starts: 5,
            load_time: Duration::from_secs(2),
            projector_lag_samples: 10,
            projector_notifications: 100,
            large_read_mib: 16,
        }
    }

    fn full() -> Self {
        Self {
            short: false,
            latency_warmup: 30,
            latency_samples: 500,
            throughput_slice: Duration::from_secs(1),
            throughput_slices: 10,
            hot_slices: 5,
            replay_events: 10_000,
            replay_runs: 5,
            balance_samples: 20,
            starts: 20,
            load_time: Duration::from_secs(8),
            projector_lag_samples: 100,
            projector_notifications: 1_000,
            large_read_mib: 200,
        }
    }

    fn settings(&self) -> serde_json::Map<String, serde_json::Value> {
        let value = json!({
            "mode": if self.short { "short" } else { "full" },
            "build": BUILD,
            "latencyWarmup": self.latency_warmup,
            "latencySamples": self.latency_samples,
            "throughputSliceSeconds": self.throughput_slice.as_secs_f64(),
            "throughputSlicesPerPath": self.throughput_slices,
            "throughputConcurrency": throughput::CONCURRENCY,
            "hotSlicesPerPath": self.hot_slices,
            "hotConcurrency": hot::CONCURRENCY,
            "replayEvents": self.replay_events,
            "replayRuns": self.replay_runs,
            "balanceSamples": self.balance_samples,
            "starts": self.starts,
            "loadSeconds": self.load_time.as_secs_f64(),
            "projectorLagSamples": self.projector_lag_samples,
            "projectorNotifications": self.projector_notifications,
            "largeReadMiB": self.large_read_mib,
        });
        match value {
            serde_json::Value::Object(map) => map,
            _ => serde_json::Map::new(),
        }
    }
}

struct Args {
    plan: Plan,
    json: Option<PathBuf>,
    baseline: Option<PathBuf>,
    only: Vec<String>,
    /// Whether `--only` named the sections.
    chosen: bool,
}

fn parse_args() -> anyhow::Result<Args> {
    let mut args = Args {
        plan: Plan::full(),
        json: None,
        baseline: None,
        only: SECTIONS.iter().map(|s| s.to_string()).collect(),
        chosen: false,
    };
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        match arg.as_str() {
            // Cargo passes --bench to every bench target.
            "--bench" => {}
            "--short" => args.plan = Plan::short(),
            "--json" => args.json = Some(it.next().context(USAGE)?.into()),
            "--baseline" => args.baseline = Some(it.next().context(USAGE)?.into()),
            "--only" => {
                let list = it.next().context(USAGE)?;
                args.only = list.split(',').map(|s| s.trim().to_owned()).collect();
                args.chosen = true;
                if let Some(bad) = args.only.iter().find(|s| !SECTIONS.contains(&s.as_str())) {
                    bail!("unknown section {bad:?}\n{USAGE}");
                }
            }
            "-h" | "--help" => {
                println!("{USAGE}");
                std::process::exit(0);
            }
            other => bail!("unknown argument {other:?}\n{USAGE}"),
        }
    }
    if args.plan.short && !args.chosen {
        // Valgrind multiplies the handler's start and every append; CI's short run leaves it
        // out unless asked for by name.
        args.only.retain(|s| s != "instructions");
    }
    Ok(args)
}

fn git(args: &[&str]) -> Option<String> {
    let output = std::process::Command::new("git")
        .args(args)
        .current_dir(env::REPO_ROOT)
        .output()
        .ok()?;
    output
        .status
        .success()
        .then(|| String::from_utf8_lossy(&output.stdout).trim().to_owned())
}

fn run_info() -> RunInfo {
    let now = time::OffsetDateTime::now_utc();
    RunInfo {
        timestamp: now
            .format(&time::format_description::well_known::Rfc3339)
            .unwrap_or_default(),
        commit: git(&["rev-parse", "--short=12", "HEAD"]),
        dirty: git(&["status", "--porcelain", "--untracked-files=no"])
            .is_some_and(|s| !s.is_empty()),
        cpus: std::thread::available_parallelism().map_or(0, usize::from),
    }
}

fn progress(message: &str) {
    eprintln!("[bench] {message}");
}

fn main() -> anyhow::Result<()> {
    let argv: Vec<String> = std::env::args().skip(1).collect();
    if argv.first().map(String::as_str) == Some(instructions::DRIVER_ARG) {
        // A child process of the instructions section (under valgrind).
        return instructions::driver(&argv[1..]);
    }
    tokio::runtime::Runtime::new()?.block_on(bench())
}

async fn bench() -> anyhow::Result<()> {
    let args = parse_args()?;
    let plan = args.plan.clone();
    let wants = |section: &str| args.only.iter().any(|s| s == section);
    let run = run_info();
    let mut report = Report {
        settings: plan.settings(),
        ..Report::default()
    };
    let started = Instant::now();
    progress(&format!(
        "{} mode; {BUILD} build; handler {}",
        if plan.short { "short" } else { "full" },
        env::HANDLER_EXE
    ));

    if wants("latency") || wants("throughput") || wants("hot") {
        // Latency, throughput and the hot stream share one Azurite and app.
        let env = env::Env::start().await?;
        if wants("latency") {
            progress("append latency");
            report.note_load("latency");
            report.extend(latency::run(&env, &plan).await.context("append latency")?);
        }
        if wants("throughput") {
            progress("append throughput");
            report.note_load("throughput");
            report.extend(
                throughput::run(&env, &plan)
                    .await
                    .context("append throughput")?,
            );
        }
        if wants("hot") {
            progress("one hot stream");
            report.note_load("hot");
            report.extend(hot::run(&env, &plan).await.context("hot stream")?);
        }
    }
    let mut findings = requests::Findings::default();
    if wants("requests") {
        progress("storage requests per operation");
        report.note_load("requests");
        let (rows, found) = requests::run().await.context("storage requests")?;
        report.extend(rows);
        findings = found;
    }
    if wants("replay") || wants("footprint") {
        let env = env::Env::start().await?;
        if wants("replay") {
            progress("replay");
            report.note_load("replay");
            report.extend(replay::run(&env, &plan, findings).await.context("replay")?);
        }
        if wants("footprint") {
            progress("start-up and footprint");
            report.note_load("footprint");
            report.extend(
                footprint::run(&env.azurite.connection_string(), &plan)
                    .await
                    .context("start-up and footprint")?,
            );
        }
    }
    if wants("projector") {
        progress("projector");
        report.note_load("projector");
        report.extend(projector::run(&plan).await.context("projector")?);
    }
    if wants("instructions") {
        progress("instructions per append (callgrind)");
        report.note_load("instructions");
        let azurite = streamfold_testbed::Azurite::start()
            .await
            .context("starting Azurite")?;
        report.extend(
            instructions::run(&azurite.connection_string(), &plan)
                .await
                .context("instructions per append")?,
        );
    }
    progress(&format!(
        "measured in {:.0} s",
        started.elapsed().as_secs_f64()
    ));

    println!();
    println!(
        "streamfold benchmark, {} mode, {BUILD} build, commit {}{}, {} CPUs, {}",
        if plan.short { "short" } else { "full" },
        run.commit.as_deref().unwrap_or("unknown"),
        if run.dirty {
            " (with uncommitted changes)"
        } else {
            ""
        },
        run.cpus,
        run.timestamp
    );
    println!();
    print!("{}", report.table());

    let value = report.to_json(&run);
    let stamp = run.timestamp.replace([':', '-'], "");
    let default_path = PathBuf::from(env::REPO_ROOT)
        .join(RESULTS_DIR)
        .join(format!("{stamp}.json"));
    report::write_json(&default_path, &value)?;
    println!("\nresults: {}", default_path.display());
    if let Some(path) = &args.json {
        report::write_json(path, &value)?;
        println!("results: {}", path.display());
    }
    if let Some(path) = &args.baseline {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("reading the baseline {}", path.display()))?;
        let baseline: serde_json::Value = serde_json::from_str(&text)?;
        println!();
        print!("{}", report.compare_with(&baseline));
    }
    Ok(())
}
