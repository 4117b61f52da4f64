//! An Event Grid custom topic on a free loopback port: it checks what publishers send as
//! strictly as Event Grid does, records what it accepts, and delivers it to one webhook
//! subscription the way Event Grid does — at least once, in no particular order, with retries.
//!
//! This file is the topic itself: its configuration, its state and the [`TopicSim`] handle that
//! starts, stops and inspects it. Each concept of its behaviour has its own file:
//! - `publish.rs`: the HTTP server and the checks of a publish request, in Event Grid's order;
//! - `schema.rs`: the validation of each event against the topic's schema (EventGridEvent,
//!   CloudEvents 1.0);
//! - `delivery.rs`: the subscription's deliveries: retries on Event Grid's schedule, and
//!   seeded chaos (duplicates, reordering, transient failures).

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use anyhow::{bail, Context};
use serde_json::Value;
use tokio::sync::watch;
use tokio::task::JoinSet;

use crate::raw::Serving;

mod delivery;
mod publish;
mod schema;

pub use delivery::{
    AttemptOutcome, Chaos, DeliveryAttempt, DeliveryRetry, DeliveryStats, Subscription,
    DEFAULT_DELIVERY_ATTEMPTS, DEFAULT_DELIVERY_TIMEOUT, DEFAULT_MAX_REORDER_DELAY,
    DEFAULT_RETRY_JITTER, DELIVERY_COUNT_HEADER, EVENT_GRID_RETRY_SECONDS, EVENT_TYPE_HEADER,
    METADATA_VERSION, METADATA_VERSION_HEADER, NOTIFICATION, SUBSCRIPTION_NAME_HEADER, TIME_SCALE,
};
pub use publish::{
    API_VERSION_PARAMETER, CLOUDEVENTS_BATCH_CONTENT_TYPE, CLOUDEVENT_CONTENT_TYPE, EVENTS_PATH,
    JSON_CONTENT_TYPE, MAX_EVENTS_PER_REQUEST, MAX_EVENT_BYTES, MAX_REQUEST_BYTES, SAS_KEY_HEADER,
};
pub use schema::CLOUDEVENTS_SPEC_VERSION;

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

/// A running topic simulator; stops (and abandons pending deliveries) when dropped.
pub struct TopicSim {
    state: Arc<State>,
    addr: SocketAddr,
    server: tokio::sync::Mutex<Option<Serving>>,
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
        let server = publish::serve(listener, state.clone());
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
                server.stop().await.context("stopping the topic server")?;
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
                        *server = Some(publish::serve(listener, self.state.clone()));
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
            server.take();
        }
        lock(&self.state.deliveries).abort_all();
    }
}

fn resource_id(name: &str) -> String {
    format!("{RESOURCE_ID_PREFIX}{name}")
}
