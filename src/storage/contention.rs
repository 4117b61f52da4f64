//! How a backend retries an append that lost a race with concurrent appends but whose
//! expectation still allows it (`Any`, `Exists`, or an exact version the stream has just
//! reached): an append that states no expectation has nothing to conflict with, so it is
//! retried inside the store until it lands, never answered with a failure while storage is
//! healthy.
//!
//! Guarantees:
//! - each retry is again one atomic attempt (the backend's transaction or conditional block);
//!   nothing is written twice, whatever the number of attempts;
//! - within one store (one process), such appends to one stream take turns ([`Turns`], first
//!   come first served), so they never race each other: only other processes contend, and the
//!   attempts wasted on lost races do not grow with the number of concurrent callers;
//! - attempts are spread with jittered exponential backoff ("full jitter": a random wait
//!   between zero and [`FIRST_BACKOFF`] doubled per attempt, at most [`MAX_BACKOFF`]), so that
//!   writers that collided do not collide again in step;
//! - the retries are bounded by [`CONTENTION_DEADLINE`], counted from the append's first
//!   attempt: only an append still losing every race after it is answered `Unavailable` (a
//!   contention no healthy store reaches: 96 writers on one stream land within a few seconds).
//!   An outage is not contention: a request that fails is answered at once, as before.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::{Mutex as AsyncMutex, OwnedMutexGuard};
use uuid::Uuid;

use crate::stream::{StoreError, StreamId};

/// How long an append keeps retrying after conflicts with concurrent appends.
pub const CONTENTION_DEADLINE: Duration = Duration::from_secs(30);
/// The longest wait after the first conflict.
pub const FIRST_BACKOFF: Duration = Duration::from_millis(4);
/// The longest wait between two attempts.
pub const MAX_BACKOFF: Duration = Duration::from_millis(200);

/// The retries of one append.
#[derive(Debug)]
pub struct Contention {
    started: Instant,
    conflicts: u32,
}

impl Default for Contention {
    fn default() -> Self {
        Self::new()
    }
}

impl Contention {
    pub fn new() -> Self {
        Self {
            started: Instant::now(),
            conflicts: 0,
        }
    }

    /// Conflicts met so far.
    pub fn conflicts(&self) -> u32 {
        self.conflicts
    }

    /// After a conflict: waits a jittered, growing time and answers `true` (try again), or
    /// answers `false` at once when that wait would end past [`CONTENTION_DEADLINE`].
    pub async fn wait(&mut self) -> bool {
        self.conflicts = self.conflicts.saturating_add(1);
        let wait = backoff(self.conflicts, random_unit());
        if self.started.elapsed().saturating_add(wait) > CONTENTION_DEADLINE {
            return false;
        }
        tokio::time::sleep(wait).await;
        true
    }

    /// The error of an append that gave up: storage is answering, but this append lost every
    /// race for [`CONTENTION_DEADLINE`]; nothing was written by it.
    pub fn gave_up(&self, what: &str) -> StoreError {
        StoreError::Unavailable {
            message: format!(
                "stream {what}: {} attempts in {:?} all conflicted with concurrent appends",
                self.conflicts.saturating_add(1),
                self.started.elapsed()
            ),
            maybe_applied: false,
        }
    }
}

/// The queues of one store's appends, one per stream that has appends in flight.
#[derive(Debug, Default)]
pub struct Turns {
    queues: Mutex<HashMap<StreamId, Arc<AsyncMutex<()>>>>,
}

/// One append's turn on its stream: the next append's turn starts when this is dropped.
#[derive(Debug)]
pub struct Turn {
    turns: Arc<Turns>,
    stream: StreamId,
    guard: Option<OwnedMutexGuard<()>>,
}

impl Turns {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<StreamId, Arc<AsyncMutex<()>>>> {
        // The map only holds queues; a panic elsewhere leaves it consistent.
        self.queues
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Waits for the turn of an append to `stream` (after the appends that asked before it).
    pub async fn take(self: &Arc<Self>, stream: &StreamId) -> Turn {
        let queue = self.lock().entry(stream.clone()).or_default().clone();
        let guard = queue.lock_owned().await;
        Turn {
            turns: self.clone(),
            stream: stream.clone(),
            guard: Some(guard),
        }
    }

    /// Streams with appends in flight or queued.
    pub fn streams(&self) -> usize {
        self.lock().len()
    }
}

impl Drop for Turn {
    fn drop(&mut self) {
        drop(self.guard.take());
        let mut queues = self.turns.lock();
        // Nobody else holds or waits for this queue: forget it.
        if queues
            .get(&self.stream)
            .is_some_and(|queue| Arc::strong_count(queue) == 1)
        {
            queues.remove(&self.stream);
        }
    }
}

/// The wait before attempt `conflicts + 1`: `unit` (in [0, 1)) of the exponential bound.
fn backoff(conflicts: u32, unit: f64) -> Duration {
    let doublings = conflicts.saturating_sub(1).min(16);
    let bound = FIRST_BACKOFF
        .saturating_mul(1u32 << doublings)
        .min(MAX_BACKOFF);
    bound.mul_f64(unit.clamp(0.0, 1.0))
}

/// A uniformly random number in [0, 1) (from the operating system's generator, through v4
/// UUIDs: no other source of randomness is in the tree).
fn random_unit() -> f64 {
    let bits = (Uuid::new_v4().as_u128() as u64) >> 11;
    bits as f64 / (1u64 << 53) as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn appends_to_one_stream_take_turns() {
        let turns = Arc::new(Turns::default());
        let a = StreamId::new("Shop", "Cart", "a").unwrap();
        let b = StreamId::new("Shop", "Cart", "b").unwrap();
        let first = turns.take(&a).await;
        let other = turns.take(&b).await;
        let waiting = {
            let turns = turns.clone();
            let a = a.clone();
            tokio::spawn(async move { turns.take(&a).await })
        };
        tokio::task::yield_now().await;
        assert!(!waiting.is_finished(), "a second append to a stream waits");
        drop(first);
        let second = waiting.await.unwrap();
        assert_eq!(turns.streams(), 2);
        drop((second, other));
        assert_eq!(turns.streams(), 0, "idle streams are forgotten");
    }

    #[test]
    fn backoff_grows_to_its_bound_and_is_jittered() {
        assert_eq!(backoff(1, 0.999_999), FIRST_BACKOFF.mul_f64(0.999_999));
        assert_eq!(backoff(2, 0.5), FIRST_BACKOFF);
        assert_eq!(backoff(40, 1.0), MAX_BACKOFF);
        assert_eq!(backoff(u32::MAX, 0.0), Duration::ZERO);
        let unit = random_unit();
        assert!((0.0..1.0).contains(&unit));
    }
}
