//! The infrastructure every section measures on: a real Azurite, the function app staged and
//! run under the Functions host simulator, HTTP clients for it, and readings of a process from
//! `/proc`.
//!
//! Guarantees:
//! - the app is the release `handler` binary Cargo built for this benchmark
//!   (`CARGO_BIN_EXE_handler`), staged with `host.json` and every `function.json`, exactly as
//!   `scripts/assemble.sh` lays it out;
//! - the app can be reached two ways: through the host simulator (the full path a client of a
//!   Function App takes) and directly on the handler's port (to tell the simulator's share of a
//!   latency from ours);
//! - every process started here (Azurite, simulator, handler) is stopped when its value is
//!   dropped.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{bail, Context};
use serde_json::{json, Value};
use streamfold::storage::StorageAccount;
use streamfold_testbed::hostsim::{HostConfig, HostSim};
use streamfold_testbed::Azurite;

/// The handler binary built for this benchmark (release profile under `cargo bench`).
pub const HANDLER_EXE: &str = env!("CARGO_BIN_EXE_handler");
/// The repository root.
pub const REPO_ROOT: &str = env!("CARGO_MANIFEST_DIR");
/// The domain of every stream the benchmark writes through the generic stream API.
pub const DOMAIN: &str = "Bench";
/// Entity type whose streams live in Table storage (the default backend).
pub const TABLE_ENTITY: &str = "Table";
/// Entity type configured as Append Blob.
pub const BLOB_ENTITY: &str = "Blob";
/// The bank's stream coordinates (the bank lives in the binary; these are its public names).
pub const BANK_DOMAIN: &str = "Bank";
pub const BANK_ENTITY: &str = "Account";
/// Event types the bank writes, used to build long account streams directly.
pub const ACCOUNT_OPENED: &str = "AccountOpened";
pub const MONEY_DEPOSITED: &str = "MoneyDeposited";
/// The data of every benchmark event: a deposit as the bank writes it, plus a note, about
/// 100 bytes of JSON.
pub const EVENT_DATA: &str =
    r#"{"amount":"12.50","note":"benchmark deposit, about one hundred bytes of JSON data in all"}"#;
/// Settings that turn Event Grid notifications off (outside Azure they are on by default and
/// go to `localhost:7071`, where nothing listens during the benchmark).
pub const NOTIFICATIONS_OFF: [(&str, &str); 2] = [
    ("RaiseEntityCreationNotification", "false"),
    ("RaiseEventNotification", "false"),
];
/// How long one HTTP request of the benchmark may take before the run fails.
const HTTP_TIMEOUT: Duration = Duration::from_secs(60);
/// The app setting that puts `Bench/Blob` streams in append blobs on the default account.
const BLOB_SETTING: (&str, &str) = ("Streamfold__Bench__Blob", "AppendBlob;AzureWebJobsStorage");

/// The release handler's path, checked.
pub fn handler_exe() -> anyhow::Result<PathBuf> {
    let path = PathBuf::from(HANDLER_EXE);
    if !path.is_file() {
        bail!(
            "the handler binary {} is missing: run `cargo bench --bench streamfold`, which builds \
             it",
            path.display()
        );
    }
    Ok(path)
}

/// Copies host.json, every function folder's function.json and the handler into `dir`.
pub fn assemble_app(dir: &Path) -> anyhow::Result<()> {
    let root = Path::new(REPO_ROOT);
    std::fs::copy(root.join("host.json"), dir.join("host.json")).context("copying host.json")?;
    for entry in std::fs::read_dir(root.join("functions")).context("reading functions/")? {
        let entry = entry?;
        let function_json = entry.path().join("function.json");
        if function_json.is_file() {
            let target = dir.join(entry.file_name());
            std::fs::create_dir_all(&target)?;
            std::fs::copy(&function_json, target.join("function.json"))?;
        }
    }
    std::fs::copy(handler_exe()?, dir.join("handler")).context("copying the handler")?;
    Ok(())
}

/// An HTTP client for the benchmark: keep-alive, no proxy, enough pooled connections for 32
/// concurrent clients.
pub fn http_client() -> anyhow::Result<reqwest::Client> {
    Ok(reqwest::Client::builder()
        .no_proxy()
        .timeout(HTTP_TIMEOUT)
        .pool_max_idle_per_host(64)
        .build()?)
}

/// The function app running under the host simulator.
pub struct App {
    pub host: HostSim,
    _dir: tempfile::TempDir,
}

impl App {
    /// Stages the app and starts it with `AzureWebJobsStorage = connection`, `Bench/Blob` on
    /// append blobs and notifications off (sections 1-5 measure the event store alone).
    pub async fn start(connection: String) -> anyhow::Result<Self> {
        let settings = NOTIFICATIONS_OFF
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Self::start_with(connection, settings, 0).await
    }

    /// The same with `settings` added, the simulator on `port` (0: any free port).
    pub async fn start_with(
        connection: String,
        settings: Vec<(String, String)>,
        port: u16,
    ) -> anyhow::Result<Self> {
        let dir = tempfile::tempdir()?;
        assemble_app(dir.path())?;
        let mut config = HostConfig::new(dir.path());
        config.port = port;
        config.settings = vec![
            ("AzureWebJobsStorage".into(), connection),
            (BLOB_SETTING.0.into(), BLOB_SETTING.1.into()),
            ("RUST_LOG".into(), "warn".into()),
        ];
        config.settings.extend(settings);
        config.run_timers = false;
        let host = HostSim::start(config)
            .await
            .context("starting the app under the host simulator")?;
        Ok(Self { host, _dir: dir })
    }

    /// The host simulator's address (the full path).
    pub fn front_url(&self) -> String {
        self.host.base_url()
    }

    /// The handler's own address (bypassing the simulator).
    pub fn handler_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.host.handler_port())
    }
}

/// Azurite, the app on it (direct, no proxy), and the account for in-process and raw clients.
pub struct Env {
    pub azurite: Azurite,
    pub account: StorageAccount,
    pub app: App,
    pub http: reqwest::Client,
}

impl Env {
    pub async fn start() -> anyhow::Result<Self> {
        let azurite = Azurite::start().await.context("starting Azurite")?;
        let connection = azurite.connection_string();
        let account = StorageAccount::from_connection_string(&connection)?;
        let app = App::start(connection).await?;
        Ok(Self {
            azurite,
            account,
            app,
            http: http_client()?,
        })
    }
}

/// The URL path of a stream in the generic stream API.
pub fn stream_path(domain: &str, entity: &str, instance: &str) -> String {
    format!("/api/streams/{domain}/{entity}/{instance}")
}

/// The body of every append the benchmark sends over HTTP: one `MoneyDeposited` event of
/// [`EVENT_DATA`], expecting `expected`.
pub fn append_body(expected: &Value) -> String {
    format!(
        r#"{{"expectedVersion":{expected},"events":[{{"eventType":"{MONEY_DEPOSITED}","data":{EVENT_DATA}}}]}}"#
    )
}

/// A stream written over HTTP with known expected versions.
#[derive(Debug, Clone)]
pub struct HttpStream {
    url: String,
    pub version: u64,
}

impl HttpStream {
    /// Creates the stream (expectation "noStream") with one event.
    pub async fn create(
        http: &reqwest::Client,
        base: &str,
        entity: &str,
        instance: &str,
    ) -> anyhow::Result<Self> {
        let mut stream = Self {
            url: format!("{base}{}", stream_path(DOMAIN, entity, instance)),
            version: 0,
        };
        stream.append_with(http, json!("noStream")).await?;
        Ok(stream)
    }

    /// Appends one event expecting the version this stream was last seen at.
    pub async fn append(&mut self, http: &reqwest::Client) -> anyhow::Result<()> {
        self.append_with(http, json!(self.version)).await
    }

    async fn append_with(&mut self, http: &reqwest::Client, expected: Value) -> anyhow::Result<()> {
        let body = append_body(&expected);
        let response = http
            .post(&self.url)
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await
            .with_context(|| format!("POST {}", self.url))?;
        let status = response.status();
        let bytes = response.bytes().await?;
        if status.as_u16() != 201 {
            bail!(
                "POST {} answered {status}: {}",
                self.url,
                String::from_utf8_lossy(&bytes)
            );
        }
        let answer: Value = serde_json::from_slice(&bytes)?;
        self.version = answer["version"]
            .as_u64()
            .with_context(|| format!("POST {} answered without a version: {answer}", self.url))?;
        Ok(())
    }
}

/// Sends a request and fails unless it answers `expected`; returns the body.
pub async fn expect_status(
    request: reqwest::RequestBuilder,
    expected: u16,
    what: &str,
) -> anyhow::Result<Value> {
    let response = request.send().await.with_context(|| what.to_owned())?;
    let status = response.status().as_u16();
    let bytes = response.bytes().await?;
    if status != expected {
        bail!(
            "{what}: expected HTTP {expected}, got {status}: {}",
            String::from_utf8_lossy(&bytes)
        );
    }
    Ok(serde_json::from_slice(&bytes).unwrap_or(Value::Null))
}

/// Readings of a process from `/proc/{pid}`.
pub mod proc {
    /// Clock ticks per second of `/proc/{pid}/stat` times (USER_HZ: 100 on Linux, fixed by
    /// the kernel ABI).
    pub const TICKS_PER_SECOND: f64 = 100.0;

    fn status_kib(pid: u32, field: &str) -> Option<u64> {
        let text = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
        text.lines()
            .find_map(|line| line.strip_prefix(field))
            .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse().ok())
    }

    /// Resident set size now, in KiB.
    pub fn rss_kib(pid: u32) -> Option<u64> {
        status_kib(pid, "VmRSS:")
    }

    /// Peak resident set size since the process started, in KiB.
    pub fn peak_rss_kib(pid: u32) -> Option<u64> {
        status_kib(pid, "VmHWM:")
    }

    /// User plus system CPU time used so far, in clock ticks.
    pub fn cpu_ticks(pid: u32) -> Option<u64> {
        let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
        // The command name (field 2) is in parentheses and may contain spaces.
        let after = &text[text.rfind(')')? + 2..];
        let fields: Vec<&str> = after.split_whitespace().collect();
        // Fields 14 and 15 of stat (utime, stime) are 11 and 12 after the command name.
        let utime: u64 = fields.get(11)?.parse().ok()?;
        let stime: u64 = fields.get(12)?.parse().ok()?;
        Some(utime + stime)
    }
}

/// Mebibytes from KiB.
pub fn mib(kib: u64) -> f64 {
    kib as f64 / 1024.0
}
