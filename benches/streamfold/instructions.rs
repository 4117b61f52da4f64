//! Section 7, instructions per append: a figure that does not move with the machine's load,
//! counted by valgrind's callgrind (`perf stat -e instructions` needs hardware counters, which
//! virtual machines often lack), along three paths:
//!
//! - **library**: this benchmark's own binary, as a driver process that appends in process
//!   (`EventStore::append`, Table storage, one event with a known version);
//! - **handler**: the release handler under callgrind, appends sent to its own port;
//! - **full**: the same handler process, appends sent through the host simulator (the
//!   simulator runs in the benchmark's process, as the Functions host runs outside ours: its
//!   instructions are not counted);
//! - **host**: the host simulator's own process on the full path, the other side of the same
//!   appends: this binary as a second driver that runs the simulator in process, with the
//!   handler it starts running natively (valgrind follows no child without
//!   `--trace-children`), so the count is the simulator's forward alone, the Functions host's
//!   share of the full path as far as the simulator stands in for it.
//!
//! Each process runs under `valgrind --tool=callgrind`; after a warm-up its counters are zeroed
//! (`callgrind_control -z`), N appends run, and the counters are dumped (`callgrind_control
//! -d`): the dump's total instructions (`Ir`) over N, so start-up and warm-up are not counted.
//! Every thread of the process is counted (the runtime's, hyper's connection tasks). Azurite
//! runs natively and is not counted. The per-function breakdown of the same dumps is
//! `scripts/instructions.sh`'s (it builds with symbols; this section only needs totals).
//!
//! Without valgrind the rows are `n/a` with the reason; the run does not fail.

use std::io::{BufRead, BufReader, Write as _};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context};
use streamfold::storage::{StorageAccount, TableStore};
use streamfold::stream::{EventStore, ExpectedVersion, StreamId};
use streamfold_testbed::hostsim::{HostConfig, HostSim};

use crate::env::{self, HttpStream, DOMAIN, NOTIFICATIONS_OFF, TABLE_ENTITY};
use crate::report::Row;
use crate::writers::library_event;
use crate::Plan;

const SECTION: &str = "instructions";
/// The argument that turns this binary into the library path's driver.
pub const DRIVER_ARG: &str = "--instructions-driver";
/// The argument that turns this binary into the host path's driver (the host simulator).
pub const HOST_DRIVER_ARG: &str = "--host-driver";
/// What the host driver prints before its base URL once the simulator serves (the
/// simulator prints its own lines on the same stdout).
const HOST_READY: &str = "host-driver ready ";
/// Environment variable naming a folder where the dumps are kept (for the script's breakdown);
/// without it they go to a temporary folder.
pub const KEEP_ENV: &str = "STREAMFOLD_CALLGRIND_DIR";
/// Appends before the counters are zeroed (connections opened, caches warm).
const WARMUP: usize = 20;
/// Longest wait for a process under valgrind to start answering.
const START_TIMEOUT: Duration = Duration::from_secs(120);

/// Appends counted per path.
fn counted(plan: &Plan) -> usize {
    if plan.short {
        20
    } else {
        200
    }
}

/// Whether valgrind and callgrind_control can be run here.
fn valgrind_missing() -> Option<String> {
    for tool in ["valgrind", "callgrind_control"] {
        let ok = Command::new(tool)
            .arg("--version")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        if !ok {
            return Some(format!(
                "{tool} is not installed (Debian: apt-get install valgrind)"
            ));
        }
    }
    None
}

fn callgrind(pid: u32, option: &str) -> anyhow::Result<()> {
    let status = Command::new("callgrind_control")
        .arg(option)
        .arg(pid.to_string())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .context("running callgrind_control")?;
    if !status.success() {
        bail!("callgrind_control {option} {pid} failed: {status}");
    }
    Ok(())
}

/// The total instructions of the newest dump of process `pid` in `dir` (files
/// `<prefix>.<pid>.<n>`), waiting for callgrind to write it.
fn dumped_instructions(dir: &Path, prefix: &str, pid: u32, dump: usize) -> anyhow::Result<u64> {
    let path = dir.join(format!("{prefix}.{pid}.{dump}"));
    for _ in 0..200 {
        if let Ok(text) = std::fs::read_to_string(&path) {
            if let Some(total) = text
                .lines()
                .find_map(|line| {
                    line.strip_prefix("totals:")
                        .or(line.strip_prefix("summary:"))
                })
                .and_then(|rest| rest.split_whitespace().next()?.parse().ok())
            {
                return Ok(total);
            }
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    bail!("callgrind wrote no totals to {}", path.display())
}

/// Where the dumps go.
fn dump_dir() -> anyhow::Result<(PathBuf, Option<tempfile::TempDir>)> {
    match std::env::var_os(KEEP_ENV) {
        Some(dir) => {
            let dir = PathBuf::from(dir);
            std::fs::create_dir_all(&dir)?;
            Ok((dir, None))
        }
        None => {
            let temp = tempfile::tempdir()?;
            Ok((temp.path().to_owned(), Some(temp)))
        }
    }
}

fn valgrind_args(dir: &Path, prefix: &str) -> Vec<String> {
    vec![
        "--tool=callgrind".into(),
        format!("--callgrind-out-file={}/{prefix}.%p", dir.display()),
    ]
}

fn row(path: &str, what: &str, instructions: u64, appends: usize, note: String) -> Row {
    Row::compare(
        format!("instructions.append.table.{path}"),
        SECTION,
        format!("instructions per append, Table: {what}"),
        "instr",
        instructions as f64 / appends.max(1) as f64,
        None,
        "",
    )
    .note(note)
}

pub async fn run(connection: &str, plan: &Plan) -> anyhow::Result<Vec<Row>> {
    let ids = [
        ("library", "library in-process (EventStore::append)"),
        ("handler", "handler process, HTTP straight to its port"),
        ("full", "handler process, HTTP through the host simulator"),
        (
            "host",
            "host simulator process, forwarding the full path's appends",
        ),
    ];
    if let Some(reason) = valgrind_missing() {
        return Ok(ids
            .iter()
            .map(|(path, what)| {
                Row::not_available(
                    format!("instructions.append.table.{path}"),
                    SECTION,
                    format!("instructions per append, Table: {what}"),
                    "instr",
                    reason.clone(),
                )
            })
            .collect());
    }
    let (dir, _temp) = dump_dir()?;
    let n = counted(plan);
    let mut rows = Vec::new();
    let library = tokio::task::spawn_blocking({
        let dir = dir.clone();
        let connection = connection.to_owned();
        move || library_instructions(&dir, &connection, n)
    })
    .await??;
    rows.push(row(
        ids[0].0,
        ids[0].1,
        library,
        n,
        format!(
            "callgrind, {n} appends after {WARMUP} of warm-up, every thread of the driver process"
        ),
    ));
    let (handler, full) = handler_instructions(&dir, connection, n).await?;
    rows.push(row(
        ids[1].0,
        ids[1].1,
        handler,
        n,
        format!("callgrind, {n} appends after {WARMUP} of warm-up, the handler process"),
    ));
    rows.push(row(
        ids[2].0,
        ids[2].1,
        full,
        n,
        format!(
            "callgrind, {n} appends through the host simulator, the handler process (the \
             simulator, standing in for the Functions host, is not counted)"
        ),
    ));
    let host = host_instructions(&dir, connection, n).await?;
    rows.push(row(
        ids[3].0,
        ids[3].1,
        host,
        n,
        format!(
            "callgrind, {n} appends after {WARMUP} of warm-up, the host simulator's process \
             (every thread; the handler it starts runs natively and is not counted)"
        ),
    ));
    Ok(rows)
}

/// The library path: this binary as a driver under callgrind.
fn library_instructions(dir: &Path, connection: &str, n: usize) -> anyhow::Result<u64> {
    let exe = std::env::current_exe()?;
    let mut child = Command::new("valgrind")
        .args(valgrind_args(dir, "library"))
        .arg(&exe)
        .arg(DRIVER_ARG)
        .arg(n.to_string())
        .env("STREAMFOLD_BENCH_CONNECTION", connection)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .context("starting the driver under valgrind")?;
    let pid = child.id();
    let mut stdin = child.stdin.take().context("driver stdin")?;
    let mut lines = BufReader::new(child.stdout.take().context("driver stdout")?).lines();
    let mut expect = |word: &str| -> anyhow::Result<()> {
        match lines.next() {
            Some(Ok(line)) if line == word => Ok(()),
            other => bail!("the driver said {other:?}, expected {word:?}"),
        }
    };
    expect("ready")?;
    callgrind(pid, "-z")?;
    writeln!(stdin, "go")?;
    expect("done")?;
    callgrind(pid, "-d")?;
    let total = dumped_instructions(dir, "library", pid, 1)?;
    drop(stdin);
    let _ = child.wait();
    Ok(total)
}

/// The driver (this binary with [`DRIVER_ARG`]): warms up, says `ready`, waits for a line,
/// appends N events one at a time in process, says `done`, waits for stdin to close.
pub fn driver(args: &[String]) -> anyhow::Result<()> {
    let n: usize = args
        .first()
        .context("the driver needs a number of appends")?
        .parse()?;
    let connection = std::env::var("STREAMFOLD_BENCH_CONNECTION")?;
    let runtime = tokio::runtime::Runtime::new()?;
    runtime.block_on(async {
        let account = StorageAccount::from_connection_string(&connection)?;
        let store: Arc<dyn EventStore> = Arc::new(TableStore::new(account));
        let stream = StreamId::new(
            DOMAIN,
            TABLE_ENTITY,
            format!("instructions-{}", std::process::id()),
        )?;
        let version = appends(&*store, &stream, 0, WARMUP).await?;
        let stdin = std::io::stdin();
        println!("ready");
        let mut line = String::new();
        stdin.read_line(&mut line)?;
        appends(&*store, &stream, version, n).await?;
        println!("done");
        line.clear();
        stdin.read_line(&mut line)?;
        Ok(())
    })
}

/// `n` appends of one event to `stream`, each expecting the version the one before left.
async fn appends(
    store: &dyn EventStore,
    stream: &StreamId,
    mut version: u64,
    n: usize,
) -> anyhow::Result<u64> {
    for _ in 0..n {
        let expected = if version == 0 {
            ExpectedVersion::NoStream
        } else {
            ExpectedVersion::Exact(version)
        };
        version = store
            .append(stream, expected, vec![library_event()?])
            .await?
            .version;
    }
    Ok(version)
}

/// How the handler, full and host paths run the app in `app_dir` (assembled by
/// [`env::assemble_app`]): on the storage of `connection`, notifications and timers off, the
/// start-up timeout long enough for a handler under valgrind.
fn host_config(app_dir: &Path, connection: &str) -> HostConfig {
    let mut config = HostConfig::new(app_dir);
    config.settings = vec![
        ("AzureWebJobsStorage".into(), connection.to_owned()),
        ("RUST_LOG".into(), "warn".into()),
    ];
    config.settings.extend(
        NOTIFICATIONS_OFF
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string())),
    );
    config.run_timers = false;
    config.startup_timeout = START_TIMEOUT;
    config
}

/// The handler and full paths: the release handler under callgrind, started by the host
/// simulator through a wrapper script; the counters zeroed and dumped around each path's
/// appends.
async fn handler_instructions(
    dir: &Path,
    connection: &str,
    n: usize,
) -> anyhow::Result<(u64, u64)> {
    let app_dir = tempfile::tempdir()?;
    env::assemble_app(app_dir.path())?;
    let real = app_dir.path().join("handler.real");
    std::fs::rename(app_dir.path().join("handler"), &real)?;
    let script = format!(
        "#!/bin/sh\nexec valgrind {} {} \"$@\"\n",
        valgrind_args(dir, "handler").join(" "),
        real.display()
    );
    let wrapper = app_dir.path().join("handler");
    std::fs::write(&wrapper, script)?;
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&wrapper, std::fs::Permissions::from_mode(0o755))?;
    }
    let host = HostSim::start(host_config(app_dir.path(), connection))
        .await
        .context("starting the handler under valgrind")?;
    let pid = host
        .handler_pid()
        .context("the host simulator knows no handler process")?;
    let http = env::http_client()?;
    let handler_url = format!("http://127.0.0.1:{}", host.handler_port());
    let mut totals = Vec::new();
    for (dump, base) in [(1, handler_url), (2, host.base_url())] {
        let instance = format!("instructions-{dump}-{pid}");
        totals
            .push(counted_appends(&http, &base, &instance, n, (dir, "handler", pid, dump)).await?);
    }
    drop(host);
    match totals[..] {
        [handler, full] => Ok((handler, full)),
        _ => bail!("expected two dumps"),
    }
}

/// Appends to a new stream `instance` at `base`: [`WARMUP`] of them, then `n` between
/// zeroing and dumping the counters of the process under callgrind (`dump`: the dumps' folder,
/// prefix, the process id and the dump's number); returns the dump's total.
async fn counted_appends(
    http: &reqwest::Client,
    base: &str,
    instance: &str,
    n: usize,
    dump: (&Path, &'static str, u32, usize),
) -> anyhow::Result<u64> {
    let (dir, prefix, pid, number) = dump;
    let mut stream = HttpStream::create(http, base, TABLE_ENTITY, instance).await?;
    for _ in 0..WARMUP {
        stream.append(http).await?;
    }
    tokio::task::spawn_blocking(move || callgrind(pid, "-z")).await??;
    for _ in 0..n {
        stream.append(http).await?;
    }
    tokio::task::spawn_blocking(move || callgrind(pid, "-d")).await??;
    let dir = dir.to_owned();
    tokio::task::spawn_blocking(move || dumped_instructions(&dir, prefix, pid, number)).await?
}

/// The host path: this binary as the host driver under callgrind (the simulator in process,
/// the native handler its child), appends sent to the simulator's address; the counters
/// zeroed and dumped around the counted appends.
async fn host_instructions(dir: &Path, connection: &str, n: usize) -> anyhow::Result<u64> {
    use tokio::io::AsyncBufReadExt as _;

    let exe = std::env::current_exe()?;
    let mut child = tokio::process::Command::new("valgrind")
        .args(valgrind_args(dir, "host"))
        .arg(&exe)
        .arg(HOST_DRIVER_ARG)
        .env("STREAMFOLD_BENCH_CONNECTION", connection)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .context("starting the host driver under valgrind")?;
    let pid = child.id().context("the host driver has no pid")?;
    let stdin = child.stdin.take().context("host driver stdin")?;
    let mut lines =
        tokio::io::BufReader::new(child.stdout.take().context("host driver stdout")?).lines();
    let base = tokio::time::timeout(START_TIMEOUT, async {
        while let Some(line) = lines.next_line().await? {
            if let Some(url) = line.strip_prefix(HOST_READY) {
                return Ok(url.to_owned());
            }
        }
        bail!("the host driver ended before it was ready")
    })
    .await
    .context("the host driver did not start in time")??;
    // The simulator prints a line per invocation: read them all, or the pipe fills and the
    // driver blocks.
    let drain = tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
    let http = env::http_client()?;
    let instance = format!("instructions-host-{pid}");
    let total = counted_appends(&http, &base, &instance, n, (dir, "host", pid, 1)).await?;
    // Closing stdin tells the driver to stop the simulator (and the handler with it).
    drop(stdin);
    if tokio::time::timeout(START_TIMEOUT, child.wait())
        .await
        .is_err()
    {
        child.kill().await?;
    }
    drain.abort();
    Ok(total)
}

/// The host driver (this binary with [`HOST_DRIVER_ARG`]): starts the host simulator on the
/// app as the full path runs it (the handler natively, as its child), prints [`HOST_READY`]
/// and the simulator's address, and serves until stdin closes.
pub fn host_driver() -> anyhow::Result<()> {
    let connection = std::env::var("STREAMFOLD_BENCH_CONNECTION")?;
    let runtime = tokio::runtime::Runtime::new()?;
    runtime.block_on(async {
        let app_dir = tempfile::tempdir()?;
        env::assemble_app(app_dir.path())?;
        let host = HostSim::start(host_config(app_dir.path(), &connection))
            .await
            .context("starting the host simulator")?;
        println!("{HOST_READY}{}", host.base_url());
        tokio::task::spawn_blocking(|| {
            let mut line = String::new();
            while std::io::stdin()
                .read_line(&mut line)
                .is_ok_and(|read| read > 0)
            {
                line.clear();
            }
        })
        .await?;
        host.shutdown().await?;
        Ok(())
    })
}
