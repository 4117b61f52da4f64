//! Section 5, start-up and footprint of the release handler, spawned directly (no simulator):
//!
//! - start to ready: from `spawn` to the first HTTP answer to `GET /` (what the Functions host
//!   polls), polled as fast as a connection can be tried;
//! - idle RSS: `VmRSS` of a freshly started handler after a short pause;
//! - under load: `VmRSS` sampled while 32 clients append (known versions, distinct streams,
//!   Table storage) straight to the handler, the peak (`VmHWM`), the RSS once idle again, and
//!   the handler's CPU time per append (user + system, from `/proc/{pid}/stat`), which is our
//!   cost alone, whatever the storage's speed;
//! - the binary's size on disk (the release profile strips symbols);
//! - reading a long stream: the handler's peak RSS (`VmHWM`, and the highest `VmRSS` sample)
//!   while a client walks a stream of [`crate::Plan::large_read_mib`] MiB (at least 200 MB in
//!   full mode, 16 MiB in short mode) page by page through `ReadStream`, from Append Blobs: what
//!   the handler holds does not grow with the stream (one page, about one ranged GET).
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
    handler_exe, http_client, mib, proc, stream_path, HttpStream, BLOB_ENTITY, DOMAIN,
    MONEY_DEPOSITED, NOTIFICATIONS_OFF, TABLE_ENTITY,
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
/// The app setting that puts `Bench/Blob` streams in append blobs (as `crate::env` sets it
/// for the app under the simulator).
const BLOB_SETTING: (&str, &str) = ("Streamfold__Bench__Blob", "AppendBlob;AzureWebJobsStorage");
/// Bytes of data per event of the long stream (a record is about 24 KiB). Events this large
/// keep the event count, and with it the Blob backend's event-id index rows, to about 8,500
/// for 200 MB: Azurite's Table emulator rewrites its whole database file as it grows, and
/// 170,000 index rows of 1 KiB events kept it busy for over 20 minutes.
const LARGE_EVENT_DATA_BYTES: usize = 24_000;
/// Events per append while writing the long stream (one block each, under 4 MiB).
const LARGE_APPEND_EVENTS: u64 = 150;
/// Events per `ReadStream` page while reading it back: about 1.2 MB of records, what a page of
/// 1,000 events of 1 KiB holds.
const LARGE_PAGE_SIZE: u64 = 50;
/// What the issue asks for in full mode: a stream of at least this many bytes.
const LARGE_MIN_FULL_BYTES: u64 = 200_000_000;
/// Our bound on the handler's peak RSS while it reads a long stream page by page, in MiB:
/// a few pages and ranges, whatever the stream's length (the stream is over 200 MB).
pub const LARGE_READ_RSS_TARGET_MIB: f64 = 64.0;

/// Samples a process's resident set every [`RSS_SAMPLE_EVERY`] in the background, keeping the
/// highest sample, until stopped.
struct RssSampler {
    stop: Arc<AtomicBool>,
    max_kib: Arc<AtomicU64>,
    task: tokio::task::JoinHandle<()>,
}

impl RssSampler {
    fn start(pid: u32) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let max_kib = Arc::new(AtomicU64::new(0));
        let task = {
            let (stop, max_kib) = (stop.clone(), max_kib.clone());
            tokio::spawn(async move {
                while !stop.load(Ordering::SeqCst) {
                    if let Some(kib) = proc::rss_kib(pid) {
                        max_kib.fetch_max(kib, Ordering::SeqCst);
                    }
                    tokio::time::sleep(RSS_SAMPLE_EVERY).await;
                }
            })
        };
        Self {
            stop,
            max_kib,
            task,
        }
    }

    /// Stops sampling; the highest sample in KiB (0 when none was taken).
    async fn stop(self) -> u64 {
        self.stop.store(true, Ordering::SeqCst);
        let _ = self.task.await;
        self.max_kib.load(Ordering::SeqCst)
    }
}

/// A handler process started here; killed when dropped.
struct Handler {
    child: Child,
    port: u16,
}

impl Handler {
    fn spawn(connection: &str) -> anyhow::Result<(Self, Instant)> {
        Self::spawn_with(connection, &[])
    }

    fn spawn_with(connection: &str, settings: &[(&str, &str)]) -> anyhow::Result<(Self, Instant)> {
        let port = streamfold_testbed::free_port()?;
        let started = Instant::now();
        let child = Command::new(handler_exe()?)
            .envs(NOTIFICATIONS_OFF)
            .envs(settings.iter().copied())
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
        .note(if crate::BUILD == "debug" {
            format!(
                "binary: {} (a debug build: its size says nothing)",
                exe.display()
            )
        } else {
            format!(
                "binary: {} (release profile of Cargo.toml: thin LTO, symbols stripped)",
                exe.display()
            )
        }),
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
    rows.extend(
        read_large(connection, plan)
            .await
            .context("reading a long stream")?,
    );
    Ok(rows)
}

/// Writes a stream of `plan.large_read_mib` MiB to append blobs (straight through the library,
/// as any writer could), then walks it with `ReadStream` pages on a freshly started handler,
/// sampling the handler's RSS; its peak is the row.
async fn read_large(connection: &str, plan: &Plan) -> anyhow::Result<Vec<Row>> {
    use streamfold::storage::blob::BlobStore;
    use streamfold::storage::StorageAccount;
    use streamfold::stream::{EventStore, ExpectedVersion, NewEvent, StreamId};

    let target_bytes = plan.large_read_mib * 1024 * 1024;
    let instance = "large-read";
    let stream = StreamId::new(DOMAIN, BLOB_ENTITY, instance)?;
    let store = BlobStore::new(StorageAccount::from_connection_string(connection)?);
    let data = serde_json::value::to_raw_value(&serde_json::json!({
        "amount": "1.00",
        "note": "n".repeat(LARGE_EVENT_DATA_BYTES),
    }))?;
    let mut version = 0_u64;
    let mut written_bytes = 0_u64;
    while written_bytes < target_bytes {
        let events: Vec<NewEvent> = (0..LARGE_APPEND_EVENTS)
            .map(|_| NewEvent::from_raw(MONEY_DEPOSITED, data.clone()))
            .collect();
        let outcome = store
            .append(&stream, ExpectedVersion::Exact(version), events)
            .await?;
        version = outcome.version;
        written_bytes = store_bytes(&store, &stream).await?.max(written_bytes);
    }

    let (handler, _) = Handler::spawn_with(connection, &[BLOB_SETTING])?;
    let mut handler = handler;
    let handler =
        tokio::task::spawn_blocking(move || handler.wait_ready().map(|_| handler)).await??;
    let pid = handler.pid();
    let url = format!(
        "http://127.0.0.1:{}{}",
        handler.port,
        stream_path(DOMAIN, BLOB_ENTITY, instance)
    );
    let http = http_client()?;
    let sampler = RssSampler::start(pid);
    let started = Instant::now();
    let mut from = Some(1_u64);
    let (mut events, mut pages, mut answer_bytes) = (0_u64, 0_u64, 0_u64);
    while let Some(first) = from {
        let response = http
            .get(format!(
                "{url}?fromSequence={first}&pageSize={LARGE_PAGE_SIZE}"
            ))
            .send()
            .await?;
        let status = response.status();
        let body = response.bytes().await?;
        if !status.is_success() {
            bail!(
                "ReadStream page from {first} answered {status}: {}",
                String::from_utf8_lossy(&body)
            );
        }
        let page: serde_json::Value = serde_json::from_slice(&body)?;
        events += page["events"].as_array().map_or(0, |e| e.len() as u64);
        pages += 1;
        answer_bytes += body.len() as u64;
        from = page["nextFromSequence"].as_u64();
    }
    let elapsed = started.elapsed();
    let max_rss = sampler.stop().await;
    let peak = proc::peak_rss_kib(pid);
    drop(handler);
    if events != version {
        bail!("walking the pages gave {events} events of {version}");
    }

    let mb = written_bytes as f64 / 1e6;
    let mode = if written_bytes >= LARGE_MIN_FULL_BYTES {
        String::new()
    } else {
        format!(
            " (short mode: under the {} MB of full mode)",
            LARGE_MIN_FULL_BYTES / 1_000_000
        )
    };
    let note = format!(
        "{version} events, {mb:.0} MB of records in append blobs, read as {pages} pages of \
         {LARGE_PAGE_SIZE} ({:.0} MB of answers) in {:.1} s{mode}",
        answer_bytes as f64 / 1e6,
        elapsed.as_secs_f64()
    );
    let mut rows = Vec::new();
    match peak {
        Some(kib) => rows.push(
            Row::compare(
                "footprint.rss.read_large",
                SECTION,
                format!("handler peak RSS (VmHWM) reading a {mb:.0} MB stream page by page"),
                "MiB",
                mib(kib),
                None,
                "",
            )
            .note(note)
            .target(Target::AtMost(LARGE_READ_RSS_TARGET_MIB)),
        ),
        None => rows.push(Row::not_available(
            "footprint.rss.read_large",
            SECTION,
            "handler peak RSS reading a long stream page by page",
            "MiB",
            "/proc/PID/status could not be read",
        )),
    }
    rows.push(Row::compare(
        "footprint.rss.read_large.sampled",
        SECTION,
        format!("handler RSS reading the {mb:.0} MB stream, highest sample"),
        "MiB",
        mib(max_rss),
        None,
        "",
    ));
    Ok(rows)
}

/// Bytes of the stream's segments (the listing's lengths).
async fn store_bytes(
    store: &streamfold::storage::blob::BlobStore,
    stream: &streamfold::stream::StreamId,
) -> anyhow::Result<u64> {
    use streamfold::testing::RawClients;
    let container = store
        .account()
        .blob_service_client()?
        .container_client(store.container_name());
    let prefix = format!(
        "{}/{}/{}/",
        stream.domain(),
        stream.entity(),
        stream.instance()
    );
    let mut pages = container
        .list_blobs()
        .prefix(azure_core::prelude::Prefix::from(prefix))
        .into_stream();
    let mut bytes = 0;
    while let Some(page) = futures::StreamExt::next(&mut pages).await {
        for blob in page?.blobs.blobs() {
            bytes += blob.properties.content_length;
        }
    }
    Ok(bytes)
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

    let sampler = RssSampler::start(pid);
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
    let max_rss = sampler.stop().await;
    let peak = proc::peak_rss_kib(pid);
    tokio::time::sleep(Duration::from_secs(1)).await;
    let after = proc::rss_kib(pid);
    drop(handler);

    let mut rows = vec![Row::compare(
        "footprint.rss.load",
        SECTION,
        format!("handler RSS under load ({LOAD_CLIENTS} clients appending), highest sample"),
        "MiB",
        mib(max_rss),
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
