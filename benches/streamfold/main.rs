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
//! - nothing is invented: what cannot be measured yet is a row marked n/a with the reason;
//! - a section that fails (an error or a panic) is reported with its whole chain of causes as
//!   soon as it fails, the other sections still run, and the results are written after every
//!   section (`failedSections` and `pendingSections` in the JSON), so nothing measured is lost;
//!   the run then exits non-zero.
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

use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context};
use futures::FutureExt;
use serde_json::json;

use report::{Report, Row, RunInfo};

/// The handler's allocator (see `src/main.rs`), so that the library path and the raw storage
/// paths measured in this process allocate as the handler does.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

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
    if argv.first().map(String::as_str) == Some(instructions::HOST_DRIVER_ARG) {
        // A child process of the instructions section (the host simulator under valgrind).
        return instructions::host_driver();
    }
    tokio::runtime::Runtime::new()?.block_on(bench())
}

/// The run's results, written out (to `bench-results/` and `--json`) after every section, so a
/// section that fails, or a run that is stopped, keeps what the others measured.
struct Results {
    report: Report,
    run: RunInfo,
    paths: Vec<PathBuf>,
}

impl Results {
    /// Records what `section` gave (its rows, or its failure with every cause, printed at once)
    /// and writes the results so far.
    fn record(&mut self, section: &str, result: anyhow::Result<Vec<Row>>) {
        self.report.pending.retain(|s| s != section);
        match result {
            Ok(rows) => self.report.extend(rows),
            Err(error) => {
                progress(&format!("section {section} FAILED: {error:?}"));
                self.report.fail(section, format!("{error:#}"));
            }
        }
        self.write();
    }

    fn write(&self) {
        let value = self.report.to_json(&self.run);
        for path in &self.paths {
            if let Err(error) = report::write_json(path, &value) {
                progress(&format!("results not written: {error:#}"));
            }
        }
    }
}

/// Runs one section's measurement; a panic in it is one more way for the section to fail.
async fn guarded(
    what: &str,
    measure: impl Future<Output = anyhow::Result<Vec<Row>>>,
) -> anyhow::Result<Vec<Row>> {
    match AssertUnwindSafe(measure).catch_unwind().await {
        Ok(result) => result.context(what.to_owned()),
        Err(panic) => {
            let message = panic
                .downcast_ref::<String>()
                .map(String::as_str)
                .or_else(|| panic.downcast_ref::<&str>().copied())
                .unwrap_or("(no message)");
            Err(anyhow!("{what}: panicked: {message}"))
        }
    }
}

async fn bench() -> anyhow::Result<()> {
    let args = parse_args()?;
    let plan = args.plan.clone();
    let wants = |section: &str| args.only.iter().any(|s| s == section);
    let run = run_info();
    let stamp = run.timestamp.replace([':', '-'], "");
    let default_path = PathBuf::from(env::REPO_ROOT)
        .join(RESULTS_DIR)
        .join(format!("{stamp}.json"));
    let mut results = Results {
        report: Report {
            settings: plan.settings(),
            pending: args.only.clone(),
            ..Report::default()
        },
        run: run.clone(),
        paths: std::iter::once(default_path.clone())
            .chain(args.json.clone())
            .collect(),
    };
    let started = Instant::now();
    progress(&format!(
        "{} mode; {BUILD} build; handler {}",
        if plan.short { "short" } else { "full" },
        env::HANDLER_EXE
    ));

    let shared = ["latency", "throughput", "hot"];
    if shared.iter().any(|s| wants(s)) {
        // Latency, throughput and the hot stream share one Azurite and app.
        match env::Env::start().await {
            Ok(env) => {
                if wants("latency") {
                    progress("append latency");
                    results.report.note_load("latency");
                    let rows = guarded("append latency", latency::run(&env, &plan)).await;
                    results.record("latency", rows);
                }
                if wants("throughput") {
                    progress("append throughput");
                    results.report.note_load("throughput");
                    let rows = guarded("append throughput", throughput::run(&env, &plan)).await;
                    results.record("throughput", rows);
                }
                if wants("hot") {
                    progress("one hot stream");
                    results.report.note_load("hot");
                    let rows = guarded("hot stream", hot::run(&env, &plan)).await;
                    results.record("hot", rows);
                }
            }
            Err(error) => {
                for section in shared.into_iter().filter(|s| wants(s)) {
                    results.record(section, Err(anyhow!("starting the app: {error:#}")));
                }
            }
        }
    }
    let mut findings = requests::Findings::default();
    if wants("requests") {
        progress("storage requests per operation");
        results.report.note_load("requests");
        let mut found = None;
        let rows = guarded("storage requests", async {
            let (rows, findings) = requests::run().await?;
            found = Some(findings);
            Ok(rows)
        })
        .await;
        findings = found.unwrap_or_default();
        results.record("requests", rows);
    }
    let shared = ["replay", "footprint"];
    if shared.iter().any(|s| wants(s)) {
        match env::Env::start().await {
            Ok(env) => {
                if wants("replay") {
                    progress("replay");
                    results.report.note_load("replay");
                    let rows = guarded("replay", replay::run(&env, &plan, findings)).await;
                    results.record("replay", rows);
                }
                if wants("footprint") {
                    progress("start-up and footprint");
                    results.report.note_load("footprint");
                    let connection = env.azurite.connection_string();
                    let rows =
                        guarded("start-up and footprint", footprint::run(&connection, &plan)).await;
                    results.record("footprint", rows);
                }
            }
            Err(error) => {
                for section in shared.into_iter().filter(|s| wants(s)) {
                    results.record(section, Err(anyhow!("starting the app: {error:#}")));
                }
            }
        }
    }
    if wants("projector") {
        progress("projector");
        results.report.note_load("projector");
        let rows = guarded("projector", projector::run(&plan)).await;
        results.record("projector", rows);
    }
    if wants("instructions") {
        progress("instructions per append (callgrind)");
        results.report.note_load("instructions");
        let rows = guarded("instructions per append", async {
            let azurite = streamfold_testbed::Azurite::start()
                .await
                .context("starting Azurite")?;
            instructions::run(&azurite.connection_string(), &plan).await
        })
        .await;
        results.record("instructions", rows);
    }
    progress(&format!(
        "measured in {:.0} s",
        started.elapsed().as_secs_f64()
    ));

    let report = &results.report;
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
    print!("{}", report.failures_text());

    println!();
    for path in &results.paths {
        println!("results: {}", path.display());
    }
    if let Some(path) = &args.baseline {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("reading the baseline {}", path.display()))?;
        let baseline: serde_json::Value = serde_json::from_str(&text)?;
        println!();
        print!("{}", report.compare_with(&baseline));
    }
    if !report.failures.is_empty() {
        let failed: Vec<&str> = report.failures.iter().map(|(s, _)| s.as_str()).collect();
        bail!(
            "{} section(s) failed: {} (the others' results are written)",
            failed.len(),
            failed.join(", ")
        );
    }
    Ok(())
}
