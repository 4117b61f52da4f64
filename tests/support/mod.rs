//! What the integration tests share: the function app assembled in a temporary folder (as
//! `scripts/assemble.sh` does), run under the Functions host simulator against a real Azurite,
//! and a small HTTP client that checks problem responses.
#![allow(dead_code)]

pub mod kills;
pub mod seen;

use std::path::{Path, PathBuf};
use std::time::Duration;

use reqwest::StatusCode;
use serde_json::Value;
use streamfold_testbed::hostsim::{HostConfig, HostSim, InvocationRecord};
use streamfold_testbed::proxy::CountingProxy;
use streamfold_testbed::topic::TopicSim;
use streamfold_testbed::Azurite;

/// The fields an `Accounts` row shares with `GetBalance`.
pub const ACCOUNT_FIELDS: [&str; 6] = [
    "balance",
    "overdraftLimit",
    "available",
    "status",
    "inOverdraft",
    "sequence",
];

/// Asserts that an `Accounts` read-model row says what `GetBalance` (a replay) says.
pub fn assert_row_matches_replay(account: &str, row: &Value, replay: &Value) {
    for field in ACCOUNT_FIELDS {
        assert_eq!(
            row[field], replay[field],
            "{account}.{field}: row {row} replay {replay}"
        );
    }
}

/// The timer function that publishes pending notifications.
pub const SWEEP_FUNCTION: &str = "NotificationSweep";

/// Runs the `NotificationSweep` timer function now, through the host's admin endpoint, waits
/// until the host has recorded `nth` sweeps in all (1 for the first), and returns the latest.
pub async fn run_sweep(
    client: &Client,
    host: &HostSim,
    nth: usize,
    timeout: Duration,
) -> InvocationRecord {
    run_timer(client, host, SWEEP_FUNCTION, nth, timeout).await
}

/// Runs the timer function `function` now, through the host's admin endpoint (which must
/// accept it, 202), waits until the host has recorded `nth` runs of it in all (1 for the
/// first), and returns the latest.
pub async fn run_timer(
    client: &Client,
    host: &HostSim,
    function: &str,
    nth: usize,
    timeout: Duration,
) -> InvocationRecord {
    let accepted = client
        .http()
        .post(client.url(&format!("/admin/functions/{function}")))
        .json(&serde_json::json!({"input": ""}))
        .send()
        .await
        .unwrap();
    assert_eq!(accepted.status().as_u16(), 202);
    host.wait_for_invocations(function, nth, timeout)
        .await
        .unwrap()
        .pop()
        .unwrap()
}

/// The repository root.
pub fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Whether the shipped host.json has the host proxy HTTP requests to the handler
/// (`enableProxyingHttpRequest`, docs/host-modes.md), as every test app here runs; else it
/// forwards them. A few answers differ: through the proxy, a key written `a%2Fb` or with escapes
/// of bytes that are not UTF-8 arrives as that literal text.
pub fn proxying() -> bool {
    let text = std::fs::read_to_string(repo_root().join("host.json")).unwrap();
    let host: Value = serde_json::from_str(&text).unwrap();
    host["customHandler"]["enableProxyingHttpRequest"] == true
}

/// Assembles the app into `dir`: host.json, every function folder, the handler binary.
pub fn assemble_app(dir: &Path) {
    let root = repo_root();
    std::fs::copy(root.join("host.json"), dir.join("host.json")).unwrap();
    for entry in std::fs::read_dir(root.join("functions")).unwrap() {
        let entry = entry.unwrap();
        let function_json = entry.path().join("function.json");
        if function_json.exists() {
            let target = dir.join(entry.file_name());
            std::fs::create_dir_all(&target).unwrap();
            std::fs::copy(&function_json, target.join("function.json")).unwrap();
        }
    }
    std::fs::copy(env!("CARGO_BIN_EXE_handler"), dir.join("handler")).unwrap();
}

/// Azurite plus one function app on it.
pub struct TestApp {
    pub azurite: Azurite,
    pub host: HostSim,
    pub client: Client,
    _app_dir: tempfile::TempDir,
}

impl TestApp {
    /// The app on a fresh Azurite, with default settings (Table storage on AzureWebJobsStorage).
    pub async fn start() -> Self {
        Self::start_with(&[]).await
    }

    /// The app on a fresh Azurite with extra settings.
    pub async fn start_with(settings: &[(&str, &str)]) -> Self {
        Self::start_on(0, owned(settings)).await
    }

    /// The same, with the host simulator on `port` (0 = a free one), for tests that must tell
    /// another component the host's address before it starts.
    pub async fn start_on(port: u16, settings: Vec<(String, String)>) -> Self {
        let azurite = Azurite::start().await.expect("start Azurite");
        let connection = azurite.connection_string();
        let mut all = vec![("AzureWebJobsStorage".to_owned(), connection)];
        all.extend(settings);
        let (host, app_dir) = start_host_on(port, all).await;
        let client = Client::new(host.base_url());
        Self {
            azurite,
            host,
            client,
            _app_dir: app_dir,
        }
    }
}

fn owned(settings: &[(&str, &str)]) -> Vec<(String, String)> {
    settings
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// Settings that publish the app's notifications, both kinds, to the topic simulator.
pub fn publishing_to(topic: &TopicSim) -> Vec<(String, String)> {
    let mut settings = owned(&[
        ("RaiseEntityCreationNotification", "true"),
        ("RaiseEventNotification", "true"),
    ]);
    settings.push(("EventGridTopicEndpoint".into(), topic.endpoint()));
    settings.push(("EventGridKeyValue".into(), topic.key().to_owned()));
    settings
}

/// Counting proxies in front of Azurite's table and blob endpoints, and a connection string
/// that sends every storage request through them.
pub struct CountedStorage {
    pub tables: CountingProxy,
    pub blobs: CountingProxy,
    pub connection: String,
}

impl CountedStorage {
    pub async fn start(azurite: &Azurite) -> Self {
        let tables = CountingProxy::start(&azurite.table_endpoint())
            .await
            .unwrap();
        let blobs = CountingProxy::start(&azurite.blob_endpoint())
            .await
            .unwrap();
        let connection = Azurite::connection_string_for(
            &format!("{}/{}", blobs.url(), streamfold_testbed::azurite::ACCOUNT),
            &format!("{}/{}", tables.url(), streamfold_testbed::azurite::ACCOUNT),
        );
        Self {
            tables,
            blobs,
            connection,
        }
    }
}

/// Settings every test app starts with unless the test sets them itself: notifications off.
/// With no topic configured they would default to the local loop on `localhost:7071`, which is
/// not the test's simulator (and the background publish would add storage requests to the
/// tests that count them).
pub const TEST_DEFAULT_SETTINGS: [(&str, &str); 2] = [
    ("RaiseEntityCreationNotification", "false"),
    ("RaiseEventNotification", "false"),
];

/// Starts one host simulator (with its own handler process) with these settings, on top of
/// [`TEST_DEFAULT_SETTINGS`].
pub async fn start_host(settings: Vec<(String, String)>) -> (HostSim, tempfile::TempDir) {
    start_host_on(0, settings).await
}

/// `count` host simulators, one after the other, each with its own handler process and these
/// settings (on one storage, so they act as the processes of one app), and a client for each.
pub async fn start_hosts(
    count: usize,
    settings: Vec<(String, String)>,
) -> (Vec<(HostSim, tempfile::TempDir)>, Vec<Client>) {
    let mut hosts = Vec::with_capacity(count);
    for _ in 0..count {
        hosts.push(start_host(settings.clone()).await);
    }
    let clients = hosts
        .iter()
        .map(|(host, _)| Client::new(host.base_url()))
        .collect();
    (hosts, clients)
}

/// Settings that put every stream of the app on `backend` (`Table` or `AppendBlob`) in this
/// Azurite's account.
pub fn all_streams_on(azurite: &Azurite, backend: &str) -> Vec<(String, String)> {
    vec![
        ("AzureWebJobsStorage".into(), azurite.connection_string()),
        ("ALL.ALL".into(), format!("{backend};AzureWebJobsStorage")),
    ]
}

/// [`start_host`] on a given port (0 = a free one).
pub async fn start_host_on(
    port: u16,
    settings: Vec<(String, String)>,
) -> (HostSim, tempfile::TempDir) {
    try_start_host_on(port, settings)
        .await
        .expect("start the host simulator")
}

/// [`start_host_on`], with the simulator's error instead of a panic (for callers that pick the
/// port themselves and may try another: a port found free can be taken by another process,
/// for example as a connection's source port, before the simulator binds it).
pub async fn try_start_host_on(
    port: u16,
    settings: Vec<(String, String)>,
) -> anyhow::Result<(HostSim, tempfile::TempDir)> {
    let app_dir = tempfile::tempdir().unwrap();
    assemble_app(app_dir.path());
    let mut config = HostConfig::new(app_dir.path());
    config.port = port;
    // Later settings win (the simulator collects them into a map in order).
    config.settings = TEST_DEFAULT_SETTINGS
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .chain(settings)
        .collect();
    config.settings.push(("RUST_LOG".into(), "warn".into()));
    config.run_timers = false;
    let host = HostSim::start(config).await?;
    Ok((host, app_dir))
}

/// A response, decoded.
#[derive(Debug)]
pub struct Reply {
    pub status: StatusCode,
    pub content_type: String,
    pub headers: reqwest::header::HeaderMap,
    pub body: Value,
}

impl Reply {
    /// Asserts a problem response with this status, and returns its body.
    pub fn problem(&self, status: u16) -> &Value {
        assert_eq!(self.status.as_u16(), status, "body: {}", self.body);
        assert_eq!(
            self.content_type, "application/problem+json",
            "body: {}",
            self.body
        );
        assert_eq!(self.body["status"], status);
        assert!(self.body["type"]
            .as_str()
            .unwrap()
            .starts_with("urn:streamfold:problem:"));
        assert!(!self.body["detail"].as_str().unwrap().is_empty());
        &self.body
    }

    /// The problem's `type` slug.
    pub fn slug(&self) -> &str {
        self.body["type"]
            .as_str()
            .unwrap_or("")
            .trim_start_matches("urn:streamfold:problem:")
    }

    pub fn ok(&self, status: u16) -> &Value {
        assert_eq!(self.status.as_u16(), status, "body: {}", self.body);
        &self.body
    }
}

/// A JSON-over-HTTP client for one base URL.
#[derive(Clone)]
pub struct Client {
    base: String,
    http: reqwest::Client,
}

impl Client {
    /// Delivers `body` (a JSON array of events, as text: it may be anything a test sends) to
    /// the host's Event Grid webhook for the Projector, as Event Grid does; the host's status
    /// (202 when every invocation succeeded).
    pub async fn deliver_to_projector(&self, body: String) -> u16 {
        self.http()
            .post(self.url(&event_grid_webhook_path("Projector")))
            .header("aeg-event-type", "Notification")
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await
            .unwrap()
            .status()
            .as_u16()
    }

    pub fn new(base: impl Into<String>) -> Self {
        Self {
            base: base.into(),
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(60))
                .build()
                .unwrap(),
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.base, path)
    }

    pub async fn send(&self, request: reqwest::RequestBuilder) -> Reply {
        let response = request.send().await.expect("request");
        let status = response.status();
        let headers = response.headers().clone();
        let content_type = headers
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_owned();
        let bytes = response.bytes().await.unwrap();
        let body = serde_json::from_slice(&bytes)
            .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into_owned()));
        Reply {
            status,
            content_type,
            headers,
            body,
        }
    }

    pub async fn get(&self, path: &str) -> Reply {
        self.send(self.http.get(self.url(path))).await
    }

    pub async fn post(&self, path: &str, body: &Value) -> Reply {
        self.send(self.http.post(self.url(path)).json(body)).await
    }

    /// POST with a raw body (for malformed input).
    pub async fn post_raw(&self, path: &str, body: impl Into<reqwest::Body>) -> Reply {
        self.send(
            self.http
                .post(self.url(path))
                .header("content-type", "application/json")
                .body(body),
        )
        .await
    }

    pub fn http(&self) -> &reqwest::Client {
        &self.http
    }

    /// The bank's OpenAccount for `account` with `body` (e.g. `{"overdraftLimit": "100"}`),
    /// which must answer 201.
    pub async fn open_account(&self, account: &str, body: &Value) {
        self.post(&format!("/api/OpenAccount/{account}"), body)
            .await
            .ok(201);
    }

    /// The bank's Deposit of `amount` to `account`, which must answer 200.
    pub async fn deposit(&self, account: &str, amount: &str) {
        self.amount_command("Deposit", account, amount).await;
    }

    /// The bank's Withdraw of `amount` from `account`, which must answer 200.
    pub async fn withdraw(&self, account: &str, amount: &str) {
        self.amount_command("Withdraw", account, amount).await;
    }

    /// The bank's `command` (Deposit, Withdraw) of `amount` on `account`, which must answer 200.
    async fn amount_command(&self, command: &str, account: &str, amount: &str) {
        self.post(
            &format!("/api/{command}/{account}"),
            &serde_json::json!({ "amount": amount }),
        )
        .await
        .ok(200);
    }
}

/// Reads the stream at `path` (the generic API, one page) and checks that it holds exactly the
/// `acked` events (event id → the sequence its append was answered with): as many as acked,
/// contiguous from 1, each at its acknowledged sequence.
pub async fn assert_stream_holds_exactly(
    client: &Client,
    path: &str,
    acked: &std::collections::HashMap<uuid::Uuid, u64>,
) {
    let stream = client.get(&format!("{path}?pageSize=1000")).await;
    let body = stream.ok(200);
    let events = body["events"].as_array().unwrap();
    assert_eq!(body["version"].as_u64().unwrap() as usize, acked.len());
    assert_eq!(
        events.len(),
        acked.len(),
        "no more and no fewer events than acknowledged"
    );
    for (i, event) in events.iter().enumerate() {
        let sequence = event["sequence"].as_u64().unwrap();
        assert_eq!(sequence, i as u64 + 1, "contiguous from 1");
        let id = uuid::Uuid::parse_str(event["eventId"].as_str().unwrap()).unwrap();
        assert_eq!(
            acked.get(&id),
            Some(&sequence),
            "acknowledged at this sequence"
        );
    }
}

/// The path of the simulator's Event Grid webhook for `function` (what an Event Grid
/// subscription to a locally running app targets).
pub fn event_grid_webhook_path(function: &str) -> String {
    format!("/runtime/webhooks/EventGrid?functionName={function}")
}

/// Every event of a stream from `from_sequence` on, read over the generic HTTP API page by
/// page (following `nextFromSequence`) and decoded from the response text (so event data
/// stays byte for byte). Empty when the stream does not exist.
pub async fn recorded_events(
    client: &Client,
    domain: &str,
    entity: &str,
    instance: &str,
    from_sequence: u64,
) -> Vec<streamfold::stream::RecordedEvent> {
    #[derive(serde::Deserialize)]
    #[serde(rename_all = "camelCase")]
    struct Slice {
        events: Vec<streamfold::stream::RecordedEvent>,
        next_from_sequence: Option<u64>,
    }
    let instance =
        percent_encoding::utf8_percent_encode(instance, percent_encoding::NON_ALPHANUMERIC);
    let mut events = Vec::new();
    let mut from = Some(from_sequence);
    while let Some(from_sequence) = from {
        let url = client.url(&format!(
            "/api/streams/{domain}/{entity}/{instance}?fromSequence={from_sequence}&pageSize=1000"
        ));
        let response = client
            .http()
            .get(url)
            .send()
            .await
            .expect("read the stream");
        match response.status().as_u16() {
            404 => return Vec::new(),
            200 => {
                let text = response.text().await.unwrap();
                let page = serde_json::from_str::<Slice>(&text).unwrap();
                events.extend(page.events);
                from = page.next_from_sequence;
            }
            other => panic!(
                "reading {domain}/{entity}/{instance}: {other} {}",
                response.text().await.unwrap_or_default()
            ),
        }
    }
    events
}
