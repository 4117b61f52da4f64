//! Section 5, start-up and footprint of the release handler, spawned directly (no simulator):
//!
//! - start to ready: from `spawn` to the first HTTP answer to `GET /` (what the Functions host
//!   polls), polled as fast as a connection can be tried;
//! - idle RSS: `VmRSS` of a freshly started handler after a short pause;
//! - under load: `VmRSS` sampled while 32 clients append (known versions, distinct streams,
//!   Table storage) straight to the handler, the peak (`VmHWM`), the RSS once idle again, and
//!   the handler's CPU time per append (user + system, from `/proc/{pid}/stat`), which is our
//!   cost alone, whatever the storage's speed;
//! - the binary's size on disk (the release profile strips symbols).
//!
//! Every process started here is killed before the section returns.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use futures::future::try_join_all;

use crate::env::{
    handler_exe, http_client, mib, proc, HttpStream, NOTIFICATIONS_OFF, TABLE_ENTITY,
};
use crate::report::{Row, Samples, Target};
use crate::Plan;

const SECTION: &str = "start-up and footprint";
/// The target for start to ready, in milliseconds.
pub const START_TARGET_MS: f64 = 20.0;
/// The target for idle RSS, in MiB.
pub const IDLE_RSS_TARGET_MIB: f64 = 20.0;
/// Clients appending during the load phase.
const LOAD_CLIENTS: usize = 32;
/// How long a start may take before the run fails.
const START_TIMEOUT: Duration = Duration::from_secs(30);
/// Pause between connection attempts while waiting for the handler.
const POLL_PAUSE: Duration = Duration::from_micros(200);
/// How long the handler sits idle before its RSS is read.
const IDLE_PAUSE: Duration = Duration::from_millis(500);
/// How often RSS is sampled under load.
const RSS_SAMPLE_EVERY: Duration = Duration::from_millis(50);

/// A handler process started here; killed when dropped.
struct Handler {
    child: Child,
    port: u16,
}

impl Handler {
    fn spawn(connection: &str) -> anyhow::Result<(Self, Instant)> {
        let port = streamfold_testbed::free_port()?;
        let started = Instant::now();
        let child = Command::new(handler_exe()?)
            .envs(NOTIFICATIONS_OFF)
            .env("FUNCTIONS_CUSTOMHANDLER_PORT", port.to_string())
            .env("FUNCTIONS_WORKER_RUNTIME", "custom")
            .env("AzureWebJobsStorage", connection)
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("spawning the handler")?;
        Ok((Self { child, port }, started))
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Polls `GET /` until an HTTP answer arrives; returns when it did.
    fn wait_ready(&mut self) -> anyhow::Result<Instant> {
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            if answers_get_root(self.port) {
                return Ok(Instant::now());
            }
            if let Some(status) = self.child.try_wait()? {
                bail!("the handler exited before it was ready: {status}");
            }
            if Instant::now() > deadline {
                bail!("the handler did not answer GET / within {START_TIMEOUT:?}");
            }
            std::thread::sleep(POLL_PAUSE);
        }
    }
}

impl Drop for Handler {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Whether `GET /` on the port gets an HTTP status line back.
fn answers_get_root(port: u16) -> bool {
    let Ok(mut stream) = TcpStream::connect(("127.0.0.1", port)) else {
        return false;
    };
    let _ = stream.set_read_timeout(Some(Duration::from_secs(2)));
    if stream
        .write_all(b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
        .is_err()
    {
        return false;
    }
    let mut head = [0_u8; 12];
    matches!(stream.read(&mut head), Ok(n) if n >= 5 && head.starts_with(b"HTTP/"))
}

pub async fn run(connection: &str, plan: &Plan) -> anyhow::Result<Vec<Row>> {
    let mut rows = Vec::new();
    let exe = handler_exe()?;
    let size = std::fs::metadata(&exe)?.len();
    rows.push(
        Row::compare(
            "footprint.binary",
            SECTION,
            "release handler binary size",
            "MiB",
            size as f64 / (1024.0 * 1024.0),
            None,
            "",
        )
        .note(format!(
            "binary: {} (release profile of Cargo.toml: thin LTO, symbols stripped)",
            exe.display()
        )),
    );

    // Start to ready, and idle RSS of the first process.
    let connection_owned = connection.to_owned();
    let starts = plan.starts;
    let (start_samples, idle_rss) = tokio::task::spawn_blocking(move || {
        let mut samples = Samples::with_capacity(starts);
        let mut idle_rss = None;
        for i in 0..starts {
            let (mut handler, spawned) = Handler::spawn(&connection_owned)?;
            let ready = handler.wait_ready()?;
            samples.push(ready - spawned);
            if i == 0 {
                std::thread::sleep(IDLE_PAUSE);
                idle_rss = proc::rss_kib(handler.pid());
            }
        }
        Ok::<_, anyhow::Error>((samples, idle_rss))
    })
    .await??;
    rows.push(
        Row::compare(
            "footprint.start.p50",
            SECTION,
            format!("handler start to ready (spawn -> first answer to GET /), p50 of {starts}"),
            "ms",
            start_samples.median_ms().unwrap_or_default(),
            None,
            "",
        )
        .target(Target::AtMost(START_TARGET_MS)),
    );
    rows.push(Row::compare(
        "footprint.start.max",
        SECTION,
        format!("handler start to ready, slowest of {starts}"),
        "ms",
        start_samples.percentile_ms(100.0).unwrap_or_default(),
        None,
        "",
    ));
    match idle_rss {
        Some(kib) => rows.push(
            Row::compare(
                "footprint.rss.idle",
                SECTION,
                "handler RSS at idle (just started)",
                "MiB",
                mib(kib),
                None,
                "",
            )
            .target(Target::AtMost(IDLE_RSS_TARGET_MIB)),
        ),
        None => rows.push(Row::not_available(
            "footprint.rss.idle",
            SECTION,
            "handler RSS at idle (just started)",
            "MiB",
            "/proc/PID/status could not be read",
        )),
    }

    rows.extend(under_load(connection, plan).await?);
    Ok(rows)
}

async fn under_load(connection: &str, plan: &Plan) -> anyhow::Result<Vec<Row>> {
    let (mut handler, _) = Handler::spawn(connection)?;
    let handler =
        tokio::task::spawn_blocking(move || handler.wait_ready().map(|_| handler)).await??;
    let pid = handler.pid();
    let base = format!("http://127.0.0.1:{}", handler.port);
    let http = http_client()?;
    let mut writers = try_join_all((0..LOAD_CLIENTS).map(|i| {
        let (http, base) = (http.clone(), base.clone());
        async move { HttpStream::create(&http, &base, TABLE_ENTITY, &format!("load-{i}")).await }
    }))
    .await?;

    let stop = Arc::new(AtomicBool::new(false));
    let max_rss = Arc::new(AtomicU64::new(0));
    let sampler = {
        let (stop, max_rss) = (stop.clone(), max_rss.clone());
        tokio::spawn(async move {
            while !stop.load(Ordering::SeqCst) {
                if let Some(kib) = proc::rss_kib(pid) {
                    max_rss.fetch_max(kib, Ordering::SeqCst);
                }
                tokio::time::sleep(RSS_SAMPLE_EVERY).await;
            }
        })
    };
    let cpu_before = proc::cpu_ticks(pid);
    let deadline = Instant::now() + plan.load_time;
    let tasks = writers.drain(..).map(|mut writer| {
        let http = http.clone();
        tokio::spawn(async move {
            let mut appended = 0_u64;
            while Instant::now() < deadline {
                writer.append(&http).await?;
                appended += 1;
            }
            Ok::<u64, anyhow::Error>(appended)
        })
    });
    let mut appends = 0;
    for result in futures::future::join_all(tasks).await {
        appends += result.context("a client task panicked")??;
    }
    let cpu_after = proc::cpu_ticks(pid);
    stop.store(true, Ordering::SeqCst);
    let _ = sampler.await;
    let peak = proc::peak_rss_kib(pid);
    tokio::time::sleep(Duration::from_secs(1)).await;
    let after = proc::rss_kib(pid);
    drop(handler);

    let mut rows = vec![Row::compare(
        "footprint.rss.load",
        SECTION,
        format!("handler RSS under load ({LOAD_CLIENTS} clients appending), highest sample"),
        "MiB",
        mib(max_rss.load(Ordering::SeqCst)),
        None,
        "",
    )];
    if let Some(kib) = peak {
        rows.push(Row::compare(
            "footprint.rss.peak",
            SECTION,
            "handler peak RSS (VmHWM) after the load",
            "MiB",
            mib(kib),
            None,
            "",
        ));
    }
    if let Some(kib) = after {
        rows.push(Row::compare(
            "footprint.rss.after",
            SECTION,
            "handler RSS idle again, 1 s after the load",
            "MiB",
            mib(kib),
            None,
            "",
        ));
    }
    if let (Some(before), Some(after)) = (cpu_before, cpu_after) {
        if appends > 0 {
            let ms = (after - before) as f64 / proc::TICKS_PER_SECOND * 1000.0 / appends as f64;
            rows.push(
                Row::compare(
                    "footprint.cpu.append",
                    SECTION,
                    "handler CPU time per append (HTTP in, one Table transaction out)",
                    "ms",
                    ms,
                    None,
                    "",
                )
                .note(format!(
                    "{appends} appends by {LOAD_CLIENTS} clients; user+system time from \
                     /proc/PID/stat (10 ms ticks)"
                )),
            );
        }
    }
    Ok(rows)
}
