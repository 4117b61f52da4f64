//! The subscription's deliveries, the way Event Grid delivers.
//!
//! Delivery (when [`TopicConfig::subscription`](super::TopicConfig::subscription) is set): each
//! accepted event is POSTed alone, with `aeg-event-type: Notification` and `aeg-delivery-count` (0
//! on the first attempt); an Event Grid schema event goes as a one-element array with `topic` and
//! `metadataVersion` stamped, a CloudEvent as a single object (`application/cloudevents+json`). A
//! 200-204 answer delivers it; 400 and 413 drop it; anything else, a timeout or a connection error
//! is retried after Event Grid's schedule (10 s, 30 s, 1 min, 5 min, ...) divided by
//! [`TIME_SCALE`], with jitter, up to `max_attempts`, then dropped. Chaos ([`Chaos`]) adds
//! duplicates, reordering (a random delay before the first attempt) and transient failures injected
//! before an attempt (no request is made; the attempt counts as failed). All random choices come
//! from a seeded generator derived per event from (seed, acceptance index, copy), so with
//! sequential publishes a chaos run makes the same choices every time.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;

use super::{lock, resource_id, InputSchema, State};
use crate::rng::SplitMix64;

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
pub(super) fn accept(state: &Arc<State>, events: Vec<Value>) {
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
