//! How a backend retries an append that lost a race with concurrent appends but whose
//! expectation still allows it (`Any`, `Exists`, or an exact version the stream has just
//! reached): an append that states no expectation has nothing to conflict with, so it is
//! retried inside the store until it lands, never answered with a failure while storage is
//! healthy.
//!
//! Guarantees:
//! - each retry is again one atomic attempt (the backend's transaction or conditional block);
//!   nothing is written twice, whatever the number of attempts;
//! - within one store (one process), such appends to one stream take turns ([`StreamTurns`](crate::stream::StreamTurns), first
//!   come first served), so they never race each other: only other processes contend, and the
//!   attempts wasted on lost races do not grow with the number of concurrent callers;
//! - attempts are spread with jittered exponential backoff ("full jitter": a random wait
//!   between zero and [`FIRST_BACKOFF`] doubled per attempt, at most [`MAX_BACKOFF`]), so that
//!   writers that collided do not collide again in step;
//! - the retries are bounded by [`CONTENTION_DEADLINE`], counted from the append's first
//!   attempt: only an append still losing every race after it is answered `Unavailable` (a
//!   contention no healthy store reaches: 96 writers on one stream land within a few seconds).
//!   An outage is not contention: a request that fails is answered at once, as before.

use std::time::{Duration, Instant};

use crate::stream::{random_unit, StoreError};
#[cfg(test)]
use crate::stream::{StreamId, StreamTurns};
#[cfg(test)]
use std::sync::Arc;

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

/// The wait before attempt `conflicts + 1`: `unit` (in [0, 1)) of the exponential bound.
fn backoff(conflicts: u32, unit: f64) -> Duration {
    let doublings = conflicts.saturating_sub(1).min(16);
    let bound = FIRST_BACKOFF
        .saturating_mul(1u32 << doublings)
        .min(MAX_BACKOFF);
    bound.mul_f64(unit.clamp(0.0, 1.0))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn appends_to_one_stream_take_turns() {
        let turns = Arc::new(StreamTurns::new());
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
        assert_eq!(turns.len(), 2);
        drop((second, other));
        assert_eq!(turns.len(), 0, "idle streams are forgotten");
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
