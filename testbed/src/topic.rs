//! An Event Grid custom topic on a free loopback port: it checks what publishers send as
//! strictly as Event Grid does, records what it accepts, and delivers it to one webhook
//! subscription the way Event Grid does — at least once, in no particular order, with retries.
//!
//! Publishing (`POST {endpoint}`, `endpoint()` = `http://127.0.0.1:{port}/api/events`), checks
//! in this order:
//! 1. down ([`TopicSim::set_down`]): connection refused, or 503;
//! 2. a stall ([`TopicSim::stall_next`]): no answer at all (recorded with status 0) until
//!    [`TopicSim::release_stalls`], the topic going down or being dropped, then 503 — a hung
//!    server, to test publishers' timeouts;
//! 3. an injected failure ([`TopicSim::fail_next`]): that status;
//! 4. anything but `POST /api/events` → 404;
//! 5. `aeg-sas-key` missing or wrong, or the key revoked ([`TopicSim::revoke_key`], as a key
//!    rotated on the topic) → 401; on a topic that takes Entra tokens
//!    ([`TopicConfig::accept_bearer`]), an `Authorization: Bearer` token the fake identity
//!    issued for Event Grid and not expired is accepted instead of the key (and a bad one → 401);
//! 6. no `api-version` query parameter → 400;
//! 7. body over [`MAX_REQUEST_BYTES`] → 413;
//! 8. content type: `application/json` for an Event Grid schema topic;
//!    `application/cloudevents-batch+json` (an array) or `application/cloudevents+json` (one
//!    event) for a CloudEvents topic → else 400;
//! 9. not JSON, or not an array (object for a single CloudEvent) → 400; more than
//!    [`MAX_EVENTS_PER_REQUEST`] events → 413; an event over [`MAX_EVENT_BYTES`] (its bytes as
//!    sent) → 413;
//! 10. every event against the topic's schema → 400 naming the event index and the problem
//!     (EventGridEvent: `id`, `subject`, `eventType`, `eventTime` (RFC 3339), `data`,
//!     `dataVersion` required, `topic` omitted or equal to this topic's resource id — so an
//!     explicit `"topic": null` is refused, `metadataVersion` omitted or `"1"`; CloudEvents 1.0:
//!     `specversion` `"1.0"`, non-empty `id`, `source`, `type`, an RFC 3339 `time` when present,
//!     string `subject`/`datacontenttype`/`dataschema`, not both `data` and `data_base64`,
//!     attribute names of lower-case letters and digits);
//! 11. an event whose JSON text contains a marker given to [`TopicSim::refuse_matching`] → that
//!     marker's status (400 say), every time, naming the event index: a notification the topic
//!     refuses for good, until [`TopicSim::accept_all`].
//!
//! A request is all-or-nothing: one bad event refuses the whole request, as Event Grid does.
//! Every request and its status is recorded ([`TopicSim::requests`]); accepted events are
//! recorded as sent ([`TopicSim::received`]).
//!
//! Delivery (when [`TopicConfig::subscription`] is set): each accepted event is POSTed alone,
//! with `aeg-event-type: Notification` and `aeg-delivery-count` (0 on the first attempt); an
//! Event Grid schema event goes as a one-element array with `topic` and `metadataVersion`
//! stamped, a CloudEvent as a single object (`application/cloudevents+json`). A 200-204 answer
//! delivers it; 400 and 413 drop it; anything else, a timeout or a connection error is retried
//! after Event Grid's schedule (10 s, 30 s, 1 min, 5 min, ...) divided by [`TIME_SCALE`], with
//! jitter, up to `max_attempts`, then dropped. Chaos ([`Chaos`]) adds duplicates, reordering
//! (a random delay before the first attempt) and transient failures injected before an
//! attempt (no request is made; the attempt counts as failed). All random choices come from a
//! seeded generator derived per event from (seed, acceptance index, copy), so with sequential
//! publishes a chaos run makes the same choices every time.

use crate::raw::RawRequest;
use crate::rng::SplitMix64;
use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use anyhow::{bail, Context};
use bytes::Bytes;
use serde_json::{Map, Value};
use tokio::sync::{oneshot, watch};
use tokio::task::{JoinHandle, JoinSet};
use warp::http::{HeaderMap, Method, StatusCode};
use warp::Filter;

/// Event Grid's request limit ("1 MB", taken as 1 MiB: the most Event Grid could mean).
pub const MAX_REQUEST_BYTES: usize = 1_048_576;
/// Event Grid's event limit.
pub const MAX_EVENT_BYTES: usize = 1_048_576;
/// Event Grid's limit on events per request.
pub const MAX_EVENTS_PER_REQUEST: usize = 5_000;
/// The publish path.
pub const EVENTS_PATH: &str = "/api/events";
/// The key header.
pub const SAS_KEY_HEADER: &str = "aeg-sas-key";
/// The query parameter Event Grid requires.
pub const API_VERSION_PARAMETER: &str = "api-version";
/// Header of a delivery saying what it is.
pub const EVENT_TYPE_HEADER: &str = "aeg-event-type";
/// Its value for events.
pub const NOTIFICATION: &str = "Notification";
/// Header of a delivery counting earlier attempts.
pub const DELIVERY_COUNT_HEADER: &str = "aeg-delivery-count";
/// Header of a delivery naming the subscription.
pub const SUBSCRIPTION_NAME_HEADER: &str = "aeg-subscription-name";
/// Header of a delivery with the event's metadata version.
pub const METADATA_VERSION_HEADER: &str = "aeg-metadata-version";
/// The metadata version Event Grid stamps.
pub const METADATA_VERSION: &str = "1";
/// The CloudEvents version accepted.
pub const CLOUDEVENTS_SPEC_VERSION: &str = "1.0";
/// Content type of an Event Grid schema request.
pub const JSON_CONTENT_TYPE: &str = "application/json";
/// Content type of a CloudEvents batch.
pub const CLOUDEVENTS_BATCH_CONTENT_TYPE: &str = "application/cloudevents-batch+json";
/// Content type of one CloudEvent (structured mode).
pub const CLOUDEVENT_CONTENT_TYPE: &str = "application/cloudevents+json";
/// Event Grid's delivery retry schedule, in seconds (then every 12 h until 24 h).
pub const EVENT_GRID_RETRY_SECONDS: [u64; 10] =
    [10, 30, 60, 300, 600, 1_800, 3_600, 10_800, 21_600, 43_200];
/// Event Grid's delivery schedule is divided by this here (10 s → 10 ms).
pub const TIME_SCALE: u32 = 1_000;
/// Delivery attempts per event by default (Event Grid: 30; the scaled schedule reaches
/// 6.4 s by the 8th).
pub const DEFAULT_DELIVERY_ATTEMPTS: u32 = 8;
/// How long a webhook may take to answer (Event Grid: 30 s).
pub const DEFAULT_DELIVERY_TIMEOUT: Duration = Duration::from_secs(10);
/// Jitter added to each retry wait, as a fraction of it.
pub const DEFAULT_RETRY_JITTER: f64 = 0.2;
/// Longest random delay before a reordered delivery, by default.
pub const DEFAULT_MAX_REORDER_DELAY: Duration = Duration::from_millis(50);
/// Largest body read at all (bigger is refused by the HTTP layer, with 413).
const MAX_BODY_READ: u64 = 16 * 1_048_576;
/// Prefix of the topic's resource id; the topic name follows.
const RESOURCE_ID_PREFIX: &str =
    "/subscriptions/00000000-0000-0000-0000-000000000000/resourceGroups/streamfold/providers/Microsoft.EventGrid/topics/";
/// Attempts to bind the port again after being down.
const REBIND_ATTEMPTS: u32 = 50;
const REBIND_PAUSE: Duration = Duration::from_millis(20);

/// The schema a topic accepts (fixed when a topic is created, as in Event Grid).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum InputSchema {
    #[default]
    EventGridEvent,
    CloudEvent,
}

/// What a [`TopicSim`] is.
#[derive(Debug, Clone)]
pub struct TopicConfig {
    /// The topic's name (in its resource id).
    pub name: String,
    /// The access key publishers must send.
    pub key: String,
    pub schema: InputSchema,
    /// Where accepted events are delivered; none by default.
    pub subscription: Option<Subscription>,
    /// Entra tokens accepted besides the key (Event Grid's `Authorization: Bearer`).
    pub bearer: Option<crate::identity::TokenCheck>,
}

impl Default for TopicConfig {
    /// An Event Grid schema topic named `streamfold` with a random key and no subscription.
    fn default() -> Self {
        Self {
            name: "streamfold".into(),
            key: uuid::Uuid::new_v4().simple().to_string(),
            schema: InputSchema::EventGridEvent,
            subscription: None,
            bearer: None,
        }
    }
}

impl TopicConfig {
    /// The default topic with `schema`.
    pub fn with_schema(schema: InputSchema) -> Self {
        Self {
            schema,
            ..Self::default()
        }
    }

    /// The same topic, also taking bearer tokens that pass `check` (a managed identity's, for
    /// `https://eventgrid.azure.net/`).
    pub fn accept_bearer(mut self, check: crate::identity::TokenCheck) -> Self {
        self.bearer = Some(check);
        self
    }

    /// The same topic with a webhook subscription.
    pub fn subscribe(mut self, subscription: Subscription) -> Self {
        self.subscription = Some(subscription);
        self
    }
}

/// A webhook subscription of the topic.
#[derive(Debug, Clone)]
pub struct Subscription {
    /// Where events are POSTed, e.g. a host simulator's
    /// `http://127.0.0.1:P/runtime/webhooks/EventGrid?functionName=Projector`.
    pub url: String,
    /// Its name (header `aeg-subscription-name`, upper-cased as Event Grid does).
    pub name: String,
    pub chaos: Chaos,
    pub retry: DeliveryRetry,
}

impl Subscription {
    /// A subscription to `url` with no chaos and the scaled-down Event Grid retry schedule.
    pub fn new(url: impl Into<String>) -> Self {
        Self {
            url: url.into(),
            name: "projector".into(),
            chaos: Chaos::default(),
            retry: DeliveryRetry::default(),
        }
    }

    pub fn with_chaos(mut self, chaos: Chaos) -> Self {
        self.chaos = chaos;
        self
    }

    pub fn with_retry(mut self, retry: DeliveryRetry) -> Self {
        self.retry = retry;
        self
    }
}

/// Misbehaviour injected into deliveries; probabilities in `[0, 1]`.
#[derive(Debug, Clone, PartialEq)]
pub struct Chaos {
    /// Seed of every random choice.
    pub seed: u64,
    /// Chance that an event is delivered twice (two independent deliveries).
    pub duplicate: f64,
    /// Chance that a delivery waits a random time up to `max_delay` before its first attempt.
    pub reorder: f64,
    pub max_delay: Duration,
    /// Chance that an attempt fails before any request is made (then retried as usual).
    pub transient_failure: f64,
}

impl Default for Chaos {
    /// No chaos.
    fn default() -> Self {
        Self {
            seed: 0x5eed,
            duplicate: 0.0,
            reorder: 0.0,
            max_delay: DEFAULT_MAX_REORDER_DELAY,
            transient_failure: 0.0,
        }
    }
}

/// How deliveries are retried.
#[derive(Debug, Clone, PartialEq)]
pub struct DeliveryRetry {
    /// Wait after failed attempt `n` is `schedule[n-1]` (the last entry repeats), plus jitter.
    pub schedule: Vec<Duration>,
    /// Attempts per delivery, the first included.
    pub max_attempts: u32,
    /// Per-attempt timeout.
    pub timeout: Duration,
    /// Jitter, as a fraction of each wait (added, never subtracted).
    pub jitter: f64,
}

impl Default for DeliveryRetry {
    /// Event Grid's schedule divided by [`TIME_SCALE`], [`DEFAULT_DELIVERY_ATTEMPTS`] attempts.
    fn default() -> Self {
        Self {
            schedule: EVENT_GRID_RETRY_SECONDS
                .iter()
                .map(|s| Duration::from_secs(*s) / TIME_SCALE)
                .collect(),
            max_attempts: DEFAULT_DELIVERY_ATTEMPTS,
            timeout: DEFAULT_DELIVERY_TIMEOUT,
            jitter: DEFAULT_RETRY_JITTER,
        }
    }
}

/// How the topic is down.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DownMode {
    /// The port is closed: connections are refused.
    Refuse,
    /// Every request gets 503.
    Unavailable,
}

/// One publish request and what the topic answered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PublishRecord {
    pub status: u16,
    /// Events in the body (0 when it was not parsed).
    pub events: usize,
    /// Body size in bytes.
    pub bytes: usize,
    pub content_type: Option<String>,
    /// Why it was refused, as told to the publisher.
    pub reason: Option<String>,
}

/// Counters of deliveries. `delivered + dropped == accepted + duplicated` once idle.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DeliveryStats {
    /// Events accepted by the topic.
    pub accepted: u64,
    /// Deliveries answered 200-204 (a duplicate counts separately).
    pub delivered: u64,
    /// Extra deliveries injected by [`Chaos::duplicate`].
    pub duplicated: u64,
    /// Deliveries that waited before their first attempt ([`Chaos::reorder`]).
    pub delayed: u64,
    /// Attempts that failed, injected ones included.
    pub failed_attempts: u64,
    /// Attempts failed by [`Chaos::transient_failure`].
    pub injected_failures: u64,
    /// Deliveries given up (400/413, or attempts exhausted).
    pub dropped: u64,
    /// Deliveries still under way.
    pub pending: u64,
}

/// What one delivery attempt came to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AttemptOutcome {
    /// The webhook's status.
    Status(u16),
    /// No answer: a timeout or a connection error.
    Error(String),
    /// Failed by chaos before a request was made.
    Injected,
}

/// One delivery attempt, in the order attempts finished.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeliveryAttempt {
    pub event_id: String,
    /// 0 for the original delivery, 1 for a duplicate.
    pub copy: u32,
    /// 1-based.
    pub attempt: u32,
    pub outcome: AttemptOutcome,
}

struct State {
    name: String,
    key: String,
    schema: InputSchema,
    subscription: Option<Subscription>,
    bearer: Option<crate::identity::TokenCheck>,
    client: reqwest::Client,
    received: Mutex<Vec<Value>>,
    requests: Mutex<Vec<PublishRecord>>,
    injected: Mutex<VecDeque<u16>>,
    stalls: Mutex<usize>,
    /// Bumped to release every stalled request.
    release: watch::Sender<u64>,
    down: Mutex<Option<DownMode>>,
    /// Markers whose events are refused, with the status.
    refusals: Mutex<Vec<(String, u16)>>,
    /// While true, every key is refused (401).
    revoked: Mutex<bool>,
    stats: Mutex<DeliveryStats>,
    log: Mutex<Vec<DeliveryAttempt>>,
    next_index: AtomicU64,
    pending: watch::Sender<u64>,
    deliveries: Mutex<JoinSet<()>>,
}

struct Server {
    shutdown: oneshot::Sender<()>,
    task: JoinHandle<()>,
}

/// A running topic simulator; stops (and abandons pending deliveries) when dropped.
pub struct TopicSim {
    state: Arc<State>,
    addr: SocketAddr,
    server: tokio::sync::Mutex<Option<Server>>,
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl TopicSim {
    /// Starts the topic on a free port of 127.0.0.1.
    pub async fn start(config: TopicConfig) -> anyhow::Result<Self> {
        let client = reqwest::Client::builder()
            .no_proxy()
            .build()
            .context("building the delivery client")?;
        let (pending, _) = watch::channel(0);
        let state = Arc::new(State {
            name: config.name,
            key: config.key,
            schema: config.schema,
            subscription: config.subscription,
            bearer: config.bearer,
            client,
            received: Mutex::default(),
            requests: Mutex::default(),
            injected: Mutex::default(),
            stalls: Mutex::default(),
            release: watch::channel(0).0,
            down: Mutex::default(),
            refusals: Mutex::default(),
            revoked: Mutex::default(),
            stats: Mutex::default(),
            log: Mutex::default(),
            next_index: AtomicU64::new(0),
            pending,
            deliveries: Mutex::new(JoinSet::new()),
        });
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", 0))
            .await
            .context("binding the topic simulator")?;
        let addr = listener.local_addr()?;
        let server = serve(listener, state.clone());
        Ok(Self {
            state,
            addr,
            server: tokio::sync::Mutex::new(Some(server)),
        })
    }

    /// `http://127.0.0.1:{port}/api/events`.
    pub fn endpoint(&self) -> String {
        format!("http://{}{EVENTS_PATH}", self.addr)
    }

    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    /// The key publishers must send in `aeg-sas-key`.
    pub fn key(&self) -> &str {
        &self.state.key
    }

    /// The topic's resource id (what deliveries carry as `topic`).
    pub fn resource_id(&self) -> String {
        resource_id(&self.state.name)
    }

    /// Every accepted event, as sent, in acceptance order.
    pub fn received(&self) -> Vec<Value> {
        lock(&self.state.received).clone()
    }

    /// Every publish request and its answer, in order.
    pub fn requests(&self) -> Vec<PublishRecord> {
        lock(&self.state.requests).clone()
    }

    /// Makes the next `count` publish requests fail with `status` (e.g. 503, 500, 429).
    pub fn fail_next(&self, count: usize, status: u16) {
        lock(&self.state.injected).extend(std::iter::repeat_n(status, count));
    }

    /// Refuses for good, with `status` (a 4xx, say 400), every request holding an event whose
    /// JSON text contains `marker` (a request is all-or-nothing: the whole request is refused,
    /// the answer naming the event), until [`Self::accept_all`].
    pub fn refuse_matching(&self, marker: impl Into<String>, status: u16) {
        lock(&self.state.refusals).push((marker.into(), status));
    }

    /// Stops refusing events by [`Self::refuse_matching`].
    pub fn accept_all(&self) {
        lock(&self.state.refusals).clear();
    }

    /// Refuses every key with 401 while `revoked` (as a topic whose key was rotated), or
    /// accepts the topic's key again.
    pub fn revoke_key(&self, revoked: bool) {
        *lock(&self.state.revoked) = revoked;
    }

    /// Makes the next `count` publish requests hang without an answer (see the module
    /// documentation).
    pub fn stall_next(&self, count: usize) {
        *lock(&self.state.stalls) += count;
    }

    /// Answers every stalled request (503).
    pub fn release_stalls(&self) {
        self.state
            .release
            .send_modify(|generation| *generation += 1);
    }

    /// Takes the topic down: connections refused (the port is closed) or 503 to everything.
    pub async fn set_down(&self, mode: DownMode) -> anyhow::Result<()> {
        *lock(&self.state.down) = Some(mode);
        if mode == DownMode::Refuse {
            self.release_stalls();
            if let Some(server) = self.server.lock().await.take() {
                let _ = server.shutdown.send(());
                server.task.await.context("stopping the topic server")?;
            }
        }
        Ok(())
    }

    /// Brings the topic back up on the same port.
    pub async fn set_up(&self) -> anyhow::Result<()> {
        *lock(&self.state.down) = None;
        let mut server = self.server.lock().await;
        if server.is_none() {
            let mut last = None;
            for _ in 0..REBIND_ATTEMPTS {
                match tokio::net::TcpListener::bind(self.addr).await {
                    Ok(listener) => {
                        *server = Some(serve(listener, self.state.clone()));
                        return Ok(());
                    }
                    Err(e) => last = Some(e),
                }
                tokio::time::sleep(REBIND_PAUSE).await;
            }
            bail!("could not bind {} again: {last:?}", self.addr);
        }
        Ok(())
    }

    /// Delivery counters.
    pub fn stats(&self) -> DeliveryStats {
        let mut stats = *lock(&self.state.stats);
        stats.pending = *self.state.pending.borrow();
        stats
    }

    /// Every delivery attempt so far.
    pub fn delivery_log(&self) -> Vec<DeliveryAttempt> {
        lock(&self.state.log).clone()
    }

    /// Waits until no delivery is under way; an error after `timeout`.
    pub async fn wait_idle(&self, timeout: Duration) -> anyhow::Result<()> {
        let mut pending = self.state.pending.subscribe();
        let waited = tokio::time::timeout(timeout, async {
            pending.wait_for(|p| *p == 0).await.map(|_| ())
        })
        .await;
        match waited {
            Ok(Ok(())) => Ok(()),
            Ok(Err(_)) => bail!("the topic simulator stopped"),
            Err(_) => bail!(
                "deliveries still pending after {timeout:?}: {:?}",
                self.stats()
            ),
        }
    }
}

impl Drop for TopicSim {
    fn drop(&mut self) {
        self.release_stalls();
        if let Ok(mut server) = self.server.try_lock() {
            if let Some(server) = server.take() {
                let _ = server.shutdown.send(());
                server.task.abort();
            }
        }
        lock(&self.state.deliveries).abort_all();
    }
}

fn resource_id(name: &str) -> String {
    format!("{RESOURCE_ID_PREFIX}{name}")
}

fn serve(listener: tokio::net::TcpListener, state: Arc<State>) -> Server {
    let (shutdown, signal) = oneshot::channel::<()>();
    let routes = crate::raw::request_within(MAX_BODY_READ).then(move |raw: RawRequest| {
        let state = state.clone();
        async move {
            if let Some(reply) = stall(&state, &raw.headers, raw.body.len()).await {
                return reply;
            }
            let (status, reason) = publish(
                &state,
                &raw.method,
                &raw.path,
                raw.query.as_deref(),
                &raw.headers,
                &raw.body,
            );
            crate::raw::response(status, HeaderMap::new(), reason.unwrap_or_default())
        }
    });
    let task = tokio::spawn(
        warp::serve(routes)
            .incoming(listener)
            .graceful(async move {
                let _ = signal.await;
            })
            .run(),
    );
    Server { shutdown, task }
}

/// When a stall is due: records the request, waits for a release, and answers 503.
async fn stall(state: &State, headers: &HeaderMap, bytes: usize) -> Option<warp::reply::Response> {
    if lock(&state.down).is_some() {
        return None;
    }
    {
        let mut stalls = lock(&state.stalls);
        if *stalls == 0 {
            return None;
        }
        *stalls -= 1;
    }
    let mut release = state.release.subscribe();
    let generation = *release.borrow_and_update();
    lock(&state.requests).push(PublishRecord {
        status: 0,
        events: 0,
        bytes,
        content_type: content_type(headers),
        reason: Some("stalled: no answer".into()),
    });
    let _ = release.wait_for(|g| *g > generation).await;
    Some(crate::raw::response(
        StatusCode::SERVICE_UNAVAILABLE,
        HeaderMap::new(),
        "released after a stall",
    ))
}

fn content_type(headers: &HeaderMap) -> Option<String> {
    headers
        .get(warp::http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
}

/// Handles one publish request; the status and, when refused, why.
fn publish(
    state: &Arc<State>,
    method: &Method,
    path: &str,
    query: Option<&str>,
    headers: &HeaderMap,
    body: &Bytes,
) -> (StatusCode, Option<String>) {
    let content_type = content_type(headers);
    let (status, events, reason) = match check(
        state,
        method,
        path,
        query,
        headers,
        body,
        content_type.as_deref(),
    ) {
        Ok(events) => {
            let count = events.len();
            accept(state, events);
            (StatusCode::OK, count, None)
        }
        Err(Refusal {
            status,
            events,
            reason,
        }) => (status, events, Some(reason)),
    };
    lock(&state.requests).push(PublishRecord {
        status: status.as_u16(),
        events,
        bytes: body.len(),
        content_type,
        reason: reason.clone(),
    });
    (status, reason)
}

struct Refusal {
    status: StatusCode,
    events: usize,
    reason: String,
}

fn refuse(status: StatusCode, reason: impl Into<String>) -> Refusal {
    Refusal {
        status,
        events: 0,
        reason: reason.into(),
    }
}

/// The checks of the module documentation, in order; the accepted events.
fn check(
    state: &State,
    method: &Method,
    path: &str,
    query: Option<&str>,
    headers: &HeaderMap,
    body: &[u8],
    content_type: Option<&str>,
) -> Result<Vec<Value>, Refusal> {
    if lock(&state.down).is_some() {
        return Err(refuse(StatusCode::SERVICE_UNAVAILABLE, "the topic is down"));
    }
    if let Some(status) = lock(&state.injected).pop_front() {
        let status = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        return Err(refuse(status, "injected failure"));
    }
    if method != Method::POST || path != EVENTS_PATH {
        return Err(refuse(
            StatusCode::NOT_FOUND,
            format!("no resource at {method} {path}"),
        ));
    }
    let authorization = headers.get("authorization").and_then(|v| v.to_str().ok());
    if let (Some(check), Some(_)) = (&state.bearer, authorization) {
        if let Err(why) = check.check(authorization) {
            return Err(refuse(StatusCode::UNAUTHORIZED, why));
        }
    } else if headers.get(SAS_KEY_HEADER).and_then(|v| v.to_str().ok()) != Some(state.key.as_str())
    {
        return Err(refuse(
            StatusCode::UNAUTHORIZED,
            format!("{SAS_KEY_HEADER} is missing or wrong"),
        ));
    }
    if *lock(&state.revoked) {
        return Err(refuse(
            StatusCode::UNAUTHORIZED,
            "the key was revoked (rotated on the topic)",
        ));
    }
    let has_version = query.unwrap_or_default().split('&').any(|pair| {
        pair.split_once('=')
            .is_some_and(|(name, value)| name == API_VERSION_PARAMETER && !value.is_empty())
    });
    if !has_version {
        return Err(refuse(
            StatusCode::BAD_REQUEST,
            format!("the {API_VERSION_PARAMETER} query parameter is required"),
        ));
    }
    if body.len() > MAX_REQUEST_BYTES {
        return Err(refuse(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!(
                "request is {} bytes, over the {MAX_REQUEST_BYTES}-byte limit",
                body.len()
            ),
        ));
    }
    let media_type = content_type
        .and_then(|c| c.split(';').next())
        .map(|m| m.trim().to_ascii_lowercase())
        .unwrap_or_default();
    let single = match (state.schema, media_type.as_str()) {
        (InputSchema::EventGridEvent, JSON_CONTENT_TYPE) => false,
        (InputSchema::CloudEvent, CLOUDEVENTS_BATCH_CONTENT_TYPE) => false,
        (InputSchema::CloudEvent, CLOUDEVENT_CONTENT_TYPE) => true,
        (schema, _) => {
            return Err(refuse(
                StatusCode::BAD_REQUEST,
                format!("content type {content_type:?} is not accepted by a {schema:?} topic"),
            ))
        }
    };
    let parsed: Value = serde_json::from_slice(body)
        .map_err(|e| refuse(StatusCode::BAD_REQUEST, format!("body is not JSON: {e}")))?;
    let (events, spans) = match (single, parsed) {
        (true, Value::Object(map)) => (vec![Value::Object(map)], vec![body.len()]),
        (true, _) => {
            return Err(refuse(
                StatusCode::BAD_REQUEST,
                "a single CloudEvent must be a JSON object",
            ))
        }
        (false, Value::Array(events)) => {
            let sizes = element_sizes(body);
            (events, sizes)
        }
        (false, _) => {
            return Err(refuse(
                StatusCode::BAD_REQUEST,
                "body must be a JSON array of events",
            ))
        }
    };
    let count = events.len();
    let with_count = |mut r: Refusal| {
        r.events = count;
        r
    };
    if count > MAX_EVENTS_PER_REQUEST {
        return Err(with_count(refuse(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("{count} events, over the limit of {MAX_EVENTS_PER_REQUEST} per request"),
        )));
    }
    if let Some((i, size)) = spans
        .iter()
        .enumerate()
        .find(|(_, s)| **s > MAX_EVENT_BYTES)
    {
        return Err(with_count(refuse(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("event {i} is {size} bytes, over the {MAX_EVENT_BYTES}-byte event limit"),
        )));
    }
    for (i, event) in events.iter().enumerate() {
        let problem = match state.schema {
            InputSchema::EventGridEvent => check_event_grid_event(event, &resource_id(&state.name)),
            InputSchema::CloudEvent => check_cloud_event(event),
        };
        if let Err(problem) = problem {
            return Err(with_count(refuse(
                StatusCode::BAD_REQUEST,
                format!("event {i}: {problem}"),
            )));
        }
    }
    let refusals = lock(&state.refusals).clone();
    for (i, event) in events.iter().enumerate() {
        let text = event.to_string();
        if let Some((marker, status)) = refusals.iter().find(|(m, _)| text.contains(m.as_str())) {
            let status = StatusCode::from_u16(*status).unwrap_or(StatusCode::BAD_REQUEST);
            return Err(with_count(refuse(
                status,
                format!("event {i}: refused for good (it matches {marker:?})"),
            )));
        }
    }
    Ok(events)
}

/// Sizes in bytes of the elements of a JSON array given as (valid) text, whitespace around
/// them excluded.
fn element_sizes(body: &[u8]) -> Vec<usize> {
    let mut sizes = Vec::new();
    let mut depth = 0usize;
    let mut in_string = false;
    let mut escaped = false;
    let mut start: Option<usize> = None;
    let mut end = 0usize;
    for (i, &b) in body.iter().enumerate() {
        if in_string {
            end = i + 1;
            match (escaped, b) {
                (true, _) => escaped = false,
                (false, b'\\') => escaped = true,
                (false, b'"') => in_string = false,
                _ => {}
            }
            continue;
        }
        match b {
            b' ' | b'\t' | b'\n' | b'\r' => continue,
            b'[' | b'{' if depth == 0 => depth = 1,
            b',' | b']' if depth == 1 => {
                if let Some(s) = start.take() {
                    sizes.push(end - s);
                }
                if b == b']' {
                    depth = 0;
                }
            }
            _ => {
                if depth == 1 && start.is_none() {
                    start = Some(i);
                }
                match b {
                    b'[' | b'{' => depth += 1,
                    b']' | b'}' => depth = depth.saturating_sub(1),
                    b'"' => in_string = true,
                    _ => {}
                }
                end = i + 1;
            }
        }
    }
    sizes
}

/// A non-empty string field.
fn required_string<'a>(event: &'a Map<String, Value>, field: &str) -> Result<&'a str, String> {
    match event.get(field) {
        None => Err(format!("{field} is required")),
        Some(Value::String(s)) if !s.is_empty() => Ok(s),
        Some(Value::String(_)) => Err(format!("{field} must not be empty")),
        Some(_) => Err(format!("{field} must be a string")),
    }
}

fn check_event_grid_event(event: &Value, topic: &str) -> Result<(), String> {
    let Value::Object(event) = event else {
        return Err("an event must be a JSON object".into());
    };
    for field in ["id", "subject", "eventType"] {
        required_string(event, field)?;
    }
    let time = required_string(event, "eventTime")?;
    if !is_rfc3339(time) {
        return Err(format!("eventTime {time:?} is not an RFC 3339 date-time"));
    }
    if !event.contains_key("data") {
        return Err("data is required".into());
    }
    match event.get("dataVersion") {
        Some(Value::String(_)) => {}
        None => return Err("dataVersion is required".into()),
        Some(_) => return Err("dataVersion must be a string".into()),
    }
    match event.get("topic") {
        None => {}
        Some(Value::String(t)) if t.eq_ignore_ascii_case(topic) => {}
        Some(other) => {
            return Err(format!(
                "topic must be omitted or equal to {topic:?}, not {other}"
            ))
        }
    }
    match event.get("metadataVersion") {
        None => {}
        Some(Value::String(v)) if v == METADATA_VERSION => {}
        Some(other) => {
            return Err(format!(
                "metadataVersion must be omitted or \"1\", not {other}"
            ))
        }
    }
    Ok(())
}

fn check_cloud_event(event: &Value) -> Result<(), String> {
    let Value::Object(event) = event else {
        return Err("an event must be a JSON object".into());
    };
    match event.get("specversion") {
        Some(Value::String(v)) if v == CLOUDEVENTS_SPEC_VERSION => {}
        None => return Err("specversion is required".into()),
        Some(other) => return Err(format!("specversion must be \"1.0\", not {other}")),
    }
    for field in ["id", "source", "type"] {
        required_string(event, field)?;
    }
    if let Some(time) = event.get("time") {
        match time {
            Value::String(t) if is_rfc3339(t) => {}
            other => return Err(format!("time {other} is not an RFC 3339 date-time")),
        }
    }
    for field in ["subject", "datacontenttype", "dataschema"] {
        if let Some(value) = event.get(field) {
            if !value.is_string() {
                return Err(format!("{field} must be a string"));
            }
        }
    }
    if event.contains_key("data") && event.contains_key("data_base64") {
        return Err("data and data_base64 must not both be present".into());
    }
    if let Some(name) = event.keys().find(|k| {
        *k != "data_base64"
            && (k.is_empty()
                || !k
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit()))
    }) {
        return Err(format!(
            "attribute name {name:?} must be lower-case letters and digits"
        ));
    }
    Ok(())
}

/// `YYYY-MM-DDTHH:MM:SS[.fraction](Z|±HH:MM)`, with field ranges checked.
fn is_rfc3339(text: &str) -> bool {
    let b = text.as_bytes();
    let digits = |range: std::ops::Range<usize>| -> Option<u32> {
        let part = b.get(range)?;
        if !part.iter().all(u8::is_ascii_digit) {
            return None;
        }
        part.iter()
            .try_fold(0u32, |n, d| Some(n * 10 + u32::from(d - b'0')))
    };
    let fields = (|| {
        let date_ok = b.get(4) == Some(&b'-') && b.get(7) == Some(&b'-');
        let t_ok = matches!(b.get(10), Some(b'T' | b't' | b' '));
        let time_ok = b.get(13) == Some(&b':') && b.get(16) == Some(&b':');
        if !(date_ok && t_ok && time_ok) {
            return None;
        }
        let (month, day) = (digits(5..7)?, digits(8..10)?);
        let (hour, minute, second) = (digits(11..13)?, digits(14..16)?, digits(17..19)?);
        digits(0..4)?;
        let ranges_ok = (1..=12).contains(&month)
            && (1..=31).contains(&day)
            && hour <= 23
            && minute <= 59
            && second <= 60;
        ranges_ok.then_some(())
    })();
    if fields.is_none() {
        return false;
    }
    let mut rest = &b[19..];
    if let Some(fraction) = rest.strip_prefix(b".") {
        let n = fraction.iter().take_while(|c| c.is_ascii_digit()).count();
        if n == 0 {
            return false;
        }
        rest = &fraction[n..];
    }
    match rest {
        [b'Z' | b'z'] => true,
        [b'+' | b'-', h1, h2, b':', m1, m2] => {
            [h1, h2, m1, m2].iter().all(|c| c.is_ascii_digit())
                && (h1 - b'0') * 10 + (h2 - b'0') <= 23
                && (m1 - b'0') * 10 + (m2 - b'0') <= 59
        }
        _ => false,
    }
}

/// The chaos generator of one delivery (see [`SplitMix64`]).
#[derive(Debug, Clone)]
struct Rng(SplitMix64);

impl Rng {
    /// A generator for one (event index, copy) of a run seeded with `seed`.
    fn for_delivery(seed: u64, index: u64, copy: u32) -> Self {
        let seed = seed
            ^ index.wrapping_mul(0x9E37_79B9_7F4A_7C15)
            ^ u64::from(copy).wrapping_mul(0xD1B5_4A32_D192_ED03);
        let mut rng = SplitMix64::new(seed);
        rng.next_u64();
        Self(rng)
    }

    /// Uniform in `[0, 1)`.
    fn unit(&mut self) -> f64 {
        self.0.unit()
    }

    fn chance(&mut self, probability: f64) -> bool {
        probability > 0.0 && self.unit() < probability
    }
}

/// Records accepted events and starts their deliveries.
fn accept(state: &Arc<State>, events: Vec<Value>) {
    lock(&state.received).extend(events.iter().cloned());
    lock(&state.stats).accepted += events.len() as u64;
    let Some(subscription) = &state.subscription else {
        return;
    };
    for event in events {
        let index = state.next_index.fetch_add(1, Ordering::SeqCst);
        let mut decide = Rng::for_delivery(subscription.chaos.seed, index, u32::MAX);
        let copies = if decide.chance(subscription.chaos.duplicate) {
            lock(&state.stats).duplicated += 1;
            2
        } else {
            1
        };
        let delivered = stamp(state, event);
        for copy in 0..copies {
            state.pending.send_modify(|p| *p += 1);
            let rng = Rng::for_delivery(subscription.chaos.seed, index, copy);
            let task_state = state.clone();
            let event = delivered.clone();
            lock(&state.deliveries).spawn(async move {
                deliver(&task_state, event, rng, copy).await;
                task_state.pending.send_modify(|p| *p = p.saturating_sub(1));
            });
        }
    }
}

/// The event as Event Grid delivers it: `topic` and `metadataVersion` stamped on the Event
/// Grid schema.
fn stamp(state: &State, mut event: Value) -> Value {
    if state.schema == InputSchema::EventGridEvent {
        if let Value::Object(map) = &mut event {
            map.insert("topic".into(), Value::String(resource_id(&state.name)));
            map.entry("metadataVersion")
                .or_insert_with(|| Value::String(METADATA_VERSION.into()));
        }
    }
    event
}

/// One delivery of one event, with retries.
async fn deliver(state: &State, event: Value, mut rng: Rng, copy: u32) {
    let Some(subscription) = &state.subscription else {
        return;
    };
    let chaos = &subscription.chaos;
    let retry = &subscription.retry;
    if rng.chance(chaos.reorder) {
        lock(&state.stats).delayed += 1;
        tokio::time::sleep(chaos.max_delay.mul_f64(rng.unit())).await;
    }
    let event_id = event
        .get("id")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_owned();
    let (body, content_type) = match state.schema {
        InputSchema::EventGridEvent => (
            Value::Array(vec![event]).to_string(),
            "application/json; charset=utf-8",
        ),
        InputSchema::CloudEvent => (
            event.to_string(),
            "application/cloudevents+json; charset=utf-8",
        ),
    };
    let attempts = retry.max_attempts.max(1);
    for attempt in 1..=attempts {
        let outcome = if rng.chance(chaos.transient_failure) {
            AttemptOutcome::Injected
        } else {
            let sent = state
                .client
                .post(&subscription.url)
                .timeout(retry.timeout)
                .header(warp::http::header::CONTENT_TYPE, content_type)
                .header(EVENT_TYPE_HEADER, NOTIFICATION)
                .header(DELIVERY_COUNT_HEADER, (attempt - 1).to_string())
                .header(SUBSCRIPTION_NAME_HEADER, subscription.name.to_uppercase())
                .header(METADATA_VERSION_HEADER, METADATA_VERSION)
                .body(body.clone())
                .send()
                .await;
            match sent {
                Ok(response) => AttemptOutcome::Status(response.status().as_u16()),
                Err(e) => AttemptOutcome::Error(e.to_string()),
            }
        };
        lock(&state.log).push(DeliveryAttempt {
            event_id: event_id.clone(),
            copy,
            attempt,
            outcome: outcome.clone(),
        });
        match outcome {
            AttemptOutcome::Status(200..=204) => {
                lock(&state.stats).delivered += 1;
                return;
            }
            AttemptOutcome::Status(400 | 413) => {
                let mut stats = lock(&state.stats);
                stats.failed_attempts += 1;
                stats.dropped += 1;
                return;
            }
            AttemptOutcome::Injected => {
                let mut stats = lock(&state.stats);
                stats.failed_attempts += 1;
                stats.injected_failures += 1;
            }
            _ => lock(&state.stats).failed_attempts += 1,
        }
        if attempt < attempts {
            let step = (attempt as usize - 1).min(retry.schedule.len().saturating_sub(1));
            let base = retry.schedule.get(step).copied().unwrap_or_default();
            let wait = base + base.mul_f64(retry.jitter.max(0.0) * rng.unit());
            tokio::time::sleep(wait).await;
        }
    }
    lock(&state.stats).dropped += 1;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc3339() {
        for ok in [
            "2024-05-01T10:00:00Z",
            "2024-05-01T10:00:00.123456789Z",
            "2024-05-01t10:00:00+02:00",
            "2024-12-31T23:59:60-11:30",
        ] {
            assert!(is_rfc3339(ok), "{ok}");
        }
        for bad in [
            "",
            "2024-05-01",
            "2024-05-01T10:00:00",
            "2024-13-01T10:00:00Z",
            "2024-05-01T24:00:00Z",
            "2024-05-01T10:00:00.Z",
            "2024-05-01T10:00:00+0200",
            "2024-05-01T10:00Z",
            "yesterday",
        ] {
            assert!(!is_rfc3339(bad), "{bad}");
        }
    }

    #[test]
    fn element_sizes_are_exact() {
        let body = br#" [ {"a":"x,]}\"y"} , [1,[2]],"s" ,3 ] "#;
        assert_eq!(element_sizes(body), [15, 7, 3, 1]);
        assert!(element_sizes(b"[]").is_empty());
        assert_eq!(element_sizes(b"[{}]"), [2]);
    }

    #[test]
    fn rng_is_reproducible() {
        let a: Vec<u64> = (0..4)
            .map(|_| Rng::for_delivery(7, 3, 0).0.next_u64())
            .collect();
        assert!(a.windows(2).all(|w| w[0] == w[1]));
        assert_ne!(
            Rng::for_delivery(7, 3, 0).0.next_u64(),
            Rng::for_delivery(7, 3, 1).0.next_u64()
        );
        let mut rng = Rng::for_delivery(1, 1, 0);
        let hits = (0..10_000).filter(|_| rng.chance(0.25)).count();
        assert!((2_000..3_000).contains(&hits), "{hits}");
    }
}
