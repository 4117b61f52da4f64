//! Publishing notifications over HTTP to an Event Grid topic, or to a Functions host's Event
//! Grid webhook during local development.
//!
//! Guarantees:
//! - **Within Event Grid's limits.** Notifications are encoded once, then packed in order into
//!   requests of at most [`MAX_EVENTS_PER_REQUEST`] events and [`MAX_REQUEST_BYTES`] bytes of
//!   body. A notification too large to send alone is refused before anything is sent
//!   ([`PublishError::EventTooLarge`]); [`Notification::build`] never makes one.
//! - **In order, stopping at the first failure.** Requests are sent one after another; when
//!   one fails for good, later ones are not sent, and the error says which notifications were
//!   in the failed request (`batch`, indexes into the slice given) and how many before it were
//!   accepted ([`PublishError::published`]). Resending everything is always safe: ids are
//!   deterministic, so receivers drop what they already have.
//! - **Bounded retries.** 5xx, 408, 429, timeouts and connection errors are retried on the
//!   [`RetryPolicy`] (exponential backoff with jitter, bounded attempts and time).
//! - **Refusals say what was refused.** Any other 4xx but 401 and 403 (400, 404, 413, ...) is
//!   final for that request ([`PublishError::Rejected`], with the request's `batch`): the topic
//!   refused its content, and sending it again cannot help. The caller decides what to do with
//!   it (the dispatcher splits the batch until it has the single notification that is refused,
//!   and dead-letters it: see [`super::dispatch`]).
//! - **A refused key pauses the whole publisher.** 401 and 403 mean the key (or the endpoint's
//!   access) is wrong: every later request would be refused too. The publisher stops sending for
//!   a pause ([`AUTH_PAUSE_INITIAL`], doubling up to [`AUTH_PAUSE_MAX`] while the topic keeps
//!   refusing it), logs one error line when the pause starts (and one info line when the topic
//!   accepts again), and answers every publish in between at once with
//!   [`PublishError::Paused`], no request made. Clones of a publisher share the pause, so the
//!   background publishes of every backend and the `NotificationSweep` all wait on it.
//! - **The key stays secret.** It is only ever put in the `aeg-sas-key` header; errors and logs
//!   show the endpoint without its query string. A topic set by its endpoint alone is published
//!   to with a token of the app's managed identity (`Authorization: Bearer`, from
//!   `crate::identity`, cached and renewed there); a failure to get one is retried like an
//!   unreachable topic, and the identity logs why.

use std::fmt;
use std::ops::Range;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use bytes::Bytes;
use reqwest::header::{HeaderValue, AUTHORIZATION, CONTENT_TYPE, RETRY_AFTER};
use reqwest::{StatusCode, Url};

use super::notification::{Notification, MAX_EVENT_BYTES};
use super::retry::{random_unit, RetryPolicy, DEFAULT_CONNECT_TIMEOUT};
use super::schema::{join_array, NotificationSchema};
use super::settings::{without_query, NotificationSettings, NotificationTarget, TopicKey};
use super::sink::NotificationSink;
use crate::identity::{ManagedIdentity, EVENT_GRID_RESOURCE};
pub use crate::stream::PublishError;

/// Largest request body, in bytes (Event Grid: 1 MB per request).
pub const MAX_REQUEST_BYTES: usize = MAX_EVENT_BYTES;
/// Most events in one request (Event Grid: 5,000).
pub const MAX_EVENTS_PER_REQUEST: usize = 5_000;
/// Query parameter every topic request carries.
pub const API_VERSION_PARAMETER: &str = "api-version";
/// The Event Grid data-plane API version used.
pub const API_VERSION: &str = "2018-01-01";
/// Header carrying the topic key.
pub const SAS_KEY_HEADER: &str = "aeg-sas-key";
/// Header a Functions host's Event Grid webhook requires.
pub const EVENT_TYPE_HEADER: &str = "aeg-event-type";
/// Its value for a delivery of events.
pub const NOTIFICATION_EVENT_TYPE: &str = "Notification";
/// Longest part of an error response body kept in a [`PublishError`], in characters.
pub const MAX_ERROR_BODY_CHARS: usize = 1_024;
/// How long publishing pauses after the topic first refused the key (401, 403).
pub const AUTH_PAUSE_INITIAL: Duration = Duration::from_secs(30);
/// Longest pause: each time the topic refuses the key again after a pause, the next pause is
/// twice as long, up to this.
pub const AUTH_PAUSE_MAX: Duration = Duration::from_secs(600);

/// Why and until when publishing is paused.
#[derive(Debug, Clone)]
struct Pause {
    status: u16,
    body: String,
    until: Instant,
    length: Duration,
}

/// The pause a refused key starts, shared by the clones of a publisher.
#[derive(Debug)]
struct AuthPause {
    initial: Duration,
    max: Duration,
    /// The latest pause, kept after it ended until a publish succeeds (so that a key refused
    /// again pauses for longer).
    latest: Mutex<Option<Pause>>,
}

impl AuthPause {
    fn new(initial: Duration, max: Duration) -> Self {
        Self {
            initial,
            max: max.max(initial),
            latest: Mutex::new(None),
        }
    }

    fn latest(&self) -> MutexGuard<'_, Option<Pause>> {
        // Every update replaces the whole value, so a panic cannot leave it half-written.
        self.latest
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// The pause under way, if any.
    fn current(&self) -> Option<Pause> {
        let now = Instant::now();
        self.latest().clone().filter(|pause| now < pause.until)
    }

    /// The topic refused the key: pause (longer when the previous pause ended the same way).
    fn refused(&self, status: u16, body: &str, endpoint: &str) {
        let mut latest = self.latest();
        let now = Instant::now();
        if latest.as_ref().is_some_and(|pause| now < pause.until) {
            // Requests already in flight when the pause started: one pause is enough.
            return;
        }
        let length = match latest.as_ref() {
            Some(previous) => previous.length.saturating_mul(2).min(self.max),
            None => self.initial,
        };
        if latest.is_none() {
            tracing::error!(
                endpoint,
                status,
                body,
                pause_s = length.as_secs(),
                "the notification topic refused the key: publishing paused (notifications stay \
                 pending); check the topic key setting"
            );
        } else {
            tracing::debug!(
                endpoint,
                status,
                pause_s = length.as_secs(),
                "the notification topic still refuses the key: publishing paused again"
            );
        }
        *latest = Some(Pause {
            status,
            body: body.to_owned(),
            until: now + length,
            length,
        });
    }

    /// A publish went through: the pause is over for good.
    fn accepted(&self, endpoint: &str) {
        let mut latest = self.latest();
        if latest.take().is_some() {
            tracing::info!(
                endpoint,
                "the notification topic accepts the key again: publishing resumed"
            );
        }
    }
}

/// How requests prove they may publish.
#[derive(Debug, Clone)]
enum Auth {
    /// The topic's access key, in `aeg-sas-key`.
    Key(TopicKey),
    /// A token of the app's managed identity, in `Authorization: Bearer`.
    Identity(ManagedIdentity),
    /// A Functions host's local webhook: no key, `aeg-event-type: Notification`.
    Webhook,
}

/// Publishes notifications to one target in one schema.
#[derive(Clone)]
pub struct Publisher {
    client: reqwest::Client,
    url: Url,
    auth: Auth,
    schema: NotificationSchema,
    retry: RetryPolicy,
    pause: Arc<AuthPause>,
}

impl fmt::Debug for Publisher {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Publisher")
            .field("url", &without_query(&self.url))
            .field("auth", &self.auth)
            .field("schema", &self.schema)
            .field("retry", &self.retry)
            .finish_non_exhaustive()
    }
}

impl Publisher {
    /// A publisher to `target` with the default [`RetryPolicy`].
    pub fn new(
        target: NotificationTarget,
        schema: NotificationSchema,
    ) -> Result<Self, PublishError> {
        let client = reqwest::Client::builder()
            .connect_timeout(DEFAULT_CONNECT_TIMEOUT)
            .build()
            .map_err(|e| PublishError::Client(e.to_string()))?;
        let with_version = |mut endpoint: Url| {
            let has_version = endpoint
                .query_pairs()
                .any(|(name, _)| name == API_VERSION_PARAMETER);
            if !has_version {
                endpoint
                    .query_pairs_mut()
                    .append_pair(API_VERSION_PARAMETER, API_VERSION);
            }
            endpoint
        };
        let (url, auth) = match target {
            NotificationTarget::Topic { endpoint, key } => (with_version(endpoint), Auth::Key(key)),
            NotificationTarget::TopicWithIdentity {
                endpoint,
                identity,
                client_id,
            } => (
                with_version(endpoint),
                Auth::Identity(ManagedIdentity::new(&identity, client_id)),
            ),
            NotificationTarget::LocalWebhook { url } => (url, Auth::Webhook),
        };
        Ok(Self {
            client,
            url,
            auth,
            schema,
            retry: RetryPolicy::default(),
            pause: Arc::new(AuthPause::new(AUTH_PAUSE_INITIAL, AUTH_PAUSE_MAX)),
        })
    }

    /// The publisher the settings describe; `None` when notifications are off.
    pub fn from_settings(settings: &NotificationSettings) -> Result<Option<Self>, PublishError> {
        match &settings.target {
            Some(target) if settings.raise.any() => {
                Self::new(target.clone(), settings.schema).map(Some)
            }
            _ => Ok(None),
        }
    }

    /// Replaces the retry schedule (tests shorten it).
    pub fn with_retry_policy(mut self, retry: RetryPolicy) -> Self {
        self.retry = retry;
        self
    }

    /// Replaces the pause after a refused key: `initial` the first time, doubling up to `max`
    /// (tests shorten it). The publisher gets a pause of its own, no longer shared with the
    /// clones made before.
    pub fn with_auth_pause(mut self, initial: Duration, max: Duration) -> Self {
        self.pause = Arc::new(AuthPause::new(initial, max));
        self
    }

    /// Why publishing is paused and for how much longer, when it is (see the module
    /// documentation).
    pub fn paused(&self) -> Option<String> {
        self.pause.current().map(|pause| {
            let remaining = pause.until.saturating_duration_since(Instant::now());
            format!(
                "publishing to {} is paused for another {}s: the topic refused the key with {}",
                self.shown_endpoint(),
                remaining.as_secs(),
                pause.status
            )
        })
    }

    /// The URL requests go to (with `api-version` for a topic).
    pub fn url(&self) -> &Url {
        &self.url
    }

    pub fn schema(&self) -> NotificationSchema {
        self.schema
    }

    pub fn retry_policy(&self) -> &RetryPolicy {
        &self.retry
    }

    /// Publishes `notifications` in order, in as few requests as Event Grid's limits allow;
    /// sends nothing while publishing is paused.
    pub async fn publish(&self, notifications: &[Notification]) -> Result<(), PublishError> {
        if let Some(pause) = self.pause.current() {
            return Err(PublishError::Paused {
                status: pause.status,
                body: pause.body,
                endpoint: self.shown_endpoint(),
                remaining: pause.until.saturating_duration_since(Instant::now()),
                batch: 0..notifications.len(),
            });
        }
        let result = self.publish_now(notifications).await;
        match &result {
            // A refused content is an answer to an accepted key (and an empty publish sends
            // nothing, so it says nothing about the key).
            Ok(()) | Err(PublishError::Rejected { .. }) if !notifications.is_empty() => {
                self.pause.accepted(&self.shown_endpoint())
            }
            Err(PublishError::Unauthorized {
                status,
                body,
                endpoint,
                ..
            }) => self.pause.refused(*status, body, endpoint),
            Ok(()) | Err(_) => {}
        }
        result
    }

    async fn publish_now(&self, notifications: &[Notification]) -> Result<(), PublishError> {
        let encoded = self.encode_all(notifications)?;
        let sizes: Vec<usize> = encoded.iter().map(Vec::len).collect();
        for batch in plan_batches(&sizes) {
            let body = join_array(encoded[batch.clone()].iter().map(Vec::as_slice));
            self.send(Bytes::from(body), batch).await?;
        }
        Ok(())
    }

    fn encode_all(&self, notifications: &[Notification]) -> Result<Vec<Vec<u8>>, PublishError> {
        notifications
            .iter()
            .enumerate()
            .map(|(index, n)| {
                let bytes = self.schema.encode(n).map_err(|e| PublishError::Encode {
                    index,
                    id: n.id,
                    reason: e.to_string(),
                })?;
                if request_size(bytes.len(), 1) > MAX_REQUEST_BYTES {
                    return Err(PublishError::EventTooLarge {
                        index,
                        id: n.id,
                        bytes: bytes.len(),
                    });
                }
                Ok(bytes)
            })
            .collect()
    }

    /// The endpoint as shown in errors and logs: no query string (it may carry a key).
    fn shown_endpoint(&self) -> String {
        without_query(&self.url)
    }

    /// Sends one request body, retrying transient failures.
    async fn send(&self, body: Bytes, batch: Range<usize>) -> Result<(), PublishError> {
        let started = Instant::now();
        let mut attempts = 0u32;
        loop {
            attempts += 1;
            let (last, retry_after) = match self.attempt(body.clone()).await {
                Attempt::Accepted => {
                    tracing::debug!(
                        endpoint = %self.shown_endpoint(),
                        notifications = batch.len(),
                        bytes = body.len(),
                        attempts,
                        "published notifications"
                    );
                    return Ok(());
                }
                Attempt::Final { status, body } => {
                    let endpoint = self.shown_endpoint();
                    return Err(if matches!(status, 401 | 403) {
                        PublishError::Unauthorized {
                            status,
                            body,
                            endpoint,
                            batch,
                        }
                    } else {
                        PublishError::Rejected {
                            status,
                            body,
                            endpoint,
                            batch,
                        }
                    });
                }
                Attempt::Transient { what, retry_after } => (what, retry_after),
            };
            let wait = self.retry.backoff(attempts, random_unit(), retry_after);
            if attempts >= self.retry.max_attempts.max(1)
                || started.elapsed() + wait > self.retry.max_elapsed
            {
                return Err(PublishError::Unavailable {
                    attempts,
                    last,
                    endpoint: self.shown_endpoint(),
                    batch,
                });
            }
            tracing::warn!(
                endpoint = %self.shown_endpoint(),
                attempt = attempts,
                wait_ms = wait.as_millis() as u64,
                error = %last,
                "publishing notifications failed; retrying"
            );
            tokio::time::sleep(wait).await;
        }
    }

    async fn attempt(&self, body: Bytes) -> Attempt {
        let mut request = self
            .client
            .post(self.url.clone())
            .timeout(self.retry.request_timeout)
            .header(
                CONTENT_TYPE,
                HeaderValue::from_static(self.schema.batch_content_type()),
            )
            .body(body);
        request = match &self.auth {
            Auth::Identity(identity) => match identity.token(EVENT_GRID_RESOURCE).await {
                // The identity logs why it has no token; the publish is retried, then fails
                // as the topic being unreachable (503 for a caller that waits on it).
                Err(why) => {
                    return Attempt::Transient {
                        what: format!("no managed identity token for the topic: {why}"),
                        retry_after: None,
                    }
                }
                Ok(token) => match HeaderValue::from_str(&format!("Bearer {}", token.secret())) {
                    Ok(mut value) => {
                        value.set_sensitive(true);
                        request.header(AUTHORIZATION, value)
                    }
                    Err(_) => {
                        return Attempt::Final {
                            status: StatusCode::UNAUTHORIZED.as_u16(),
                            body: "the managed identity token is not a valid header value".into(),
                        }
                    }
                },
            },
            Auth::Key(key) => match HeaderValue::from_str(key.expose()) {
                Ok(mut value) => {
                    value.set_sensitive(true);
                    request.header(SAS_KEY_HEADER, value)
                }
                Err(_) => {
                    return Attempt::Final {
                        status: StatusCode::UNAUTHORIZED.as_u16(),
                        body: "the topic key is not a valid header value".into(),
                    }
                }
            },
            Auth::Webhook => request.header(EVENT_TYPE_HEADER, NOTIFICATION_EVENT_TYPE),
        };
        let response = match request.send().await {
            Ok(response) => response,
            Err(e) => {
                return Attempt::Transient {
                    what: describe(&e),
                    retry_after: None,
                }
            }
        };
        let status = response.status();
        if status.is_success() {
            return Attempt::Accepted;
        }
        let retry_after = response
            .headers()
            .get(RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u64>().ok())
            .map(Duration::from_secs);
        let text = response.text().await.unwrap_or_default();
        let body: String = text.chars().take(MAX_ERROR_BODY_CHARS).collect();
        if status.is_server_error()
            || status == StatusCode::TOO_MANY_REQUESTS
            || status == StatusCode::REQUEST_TIMEOUT
        {
            Attempt::Transient {
                what: format!("{status}: {body}"),
                retry_after,
            }
        } else {
            Attempt::Final {
                status: status.as_u16(),
                body,
            }
        }
    }
}

#[async_trait]
impl NotificationSink for Publisher {
    async fn publish(&self, batch: &[Notification]) -> Result<(), PublishError> {
        Publisher::publish(self, batch).await
    }

    fn paused(&self) -> Option<String> {
        Publisher::paused(self)
    }
}

/// The outcome of one HTTP attempt.
enum Attempt {
    Accepted,
    Final {
        status: u16,
        body: String,
    },
    Transient {
        what: String,
        retry_after: Option<Duration>,
    },
}

/// A transport error without its URL (which `reqwest` includes, query string and all).
fn describe(error: &reqwest::Error) -> String {
    let kind = if error.is_timeout() {
        "timed out"
    } else if error.is_connect() {
        "connection failed"
    } else {
        "request failed"
    };
    let mut text = kind.to_owned();
    let mut source = std::error::Error::source(error);
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

/// Bytes of a JSON array body holding `count` events of `event_bytes` bytes in all.
fn request_size(event_bytes: usize, count: usize) -> usize {
    event_bytes + count.saturating_sub(1) + 2
}

/// Splits events of the given encoded sizes, in order, into requests within
/// [`MAX_EVENTS_PER_REQUEST`] and [`MAX_REQUEST_BYTES`]. An event too large for any request
/// gets a request of its own (callers refuse such events first).
pub fn plan_batches(sizes: &[usize]) -> Vec<Range<usize>> {
    let mut batches = Vec::new();
    let mut start = 0;
    let mut bytes = 0;
    for (i, &size) in sizes.iter().enumerate() {
        let count = i - start;
        let fits = count < MAX_EVENTS_PER_REQUEST
            && request_size(bytes + size, count + 1) <= MAX_REQUEST_BYTES;
        if count > 0 && !fits {
            batches.push(start..i);
            start = i;
            bytes = 0;
        }
        bytes += size;
    }
    if start < sizes.len() {
        batches.push(start..sizes.len());
    }
    batches
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(sizes: &[usize]) -> Vec<Range<usize>> {
        let batches = plan_batches(sizes);
        let mut next = 0;
        for b in &batches {
            assert_eq!(b.start, next, "batches are contiguous and in order");
            assert!(!b.is_empty());
            assert!(b.len() <= MAX_EVENTS_PER_REQUEST);
            let body = request_size(sizes[b.clone()].iter().sum(), b.len());
            assert!(body <= MAX_REQUEST_BYTES || b.len() == 1, "{b:?}: {body}");
            next = b.end;
        }
        assert_eq!(next, sizes.len());
        batches
    }

    #[test]
    fn packs_by_bytes() {
        assert!(check(&[]).is_empty());
        assert_eq!(check(&[10, 10]), vec![Range { start: 0, end: 2 }]);
        let half = MAX_REQUEST_BYTES / 2;
        // Two halves plus brackets and a comma are 3 bytes too many.
        assert_eq!(check(&[half, half, 1]), [0..1, 1..3]);
        assert_eq!(
            check(&[half - 2, half - 1]),
            vec![Range { start: 0, end: 2 }]
        );
        assert_eq!(check(&[half - 1, half - 1]), [0..1, 1..2]);
        assert_eq!(check(&[MAX_REQUEST_BYTES - 2, 1]), [0..1, 1..2]);
    }

    #[test]
    fn packs_by_count() {
        let sizes = vec![100; MAX_EVENTS_PER_REQUEST * 2 + 1];
        assert_eq!(check(&sizes), [0..5_000, 5_000..10_000, 10_000..10_001]);
    }

    #[test]
    fn published_counts_the_requests_before_the_failure() {
        let e = PublishError::Unavailable {
            attempts: 3,
            last: "503".into(),
            endpoint: "x".into(),
            batch: 7..9,
        };
        assert_eq!(e.published(), 7);
        assert!(e.is_transient());
    }
}
