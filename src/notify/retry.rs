//! How long the publisher keeps trying one request: bounded attempts, bounded total time,
//! exponential backoff with jitter.
//!
//! Guarantees: a request is sent at most `max_attempts` times, and no retry is started once
//! the time since the first attempt plus the coming wait would pass `max_elapsed` (so a publish
//! never holds a function invocation much longer than `max_elapsed` + one `request_timeout`).
//! The wait before retry `n` (1-based) is drawn uniformly from `[base/2, base]` with
//! `base = min(initial_backoff * 2^(n-1), max_backoff)` ("equal jitter"): many instances that
//! failed together do not retry together, and every wait is at least half the nominal one.
//! A server's `Retry-After` (in seconds) lengthens the wait, capped at `max_backoff`.

use std::time::Duration;

/// Attempts per request, the first included.
pub const DEFAULT_MAX_ATTEMPTS: u32 = 6;
/// Nominal wait before the first retry.
pub const DEFAULT_INITIAL_BACKOFF: Duration = Duration::from_millis(250);
/// Longest nominal wait between two attempts.
pub const DEFAULT_MAX_BACKOFF: Duration = Duration::from_secs(8);
/// No retry starts after this much time since the first attempt.
pub const DEFAULT_MAX_ELAPSED: Duration = Duration::from_secs(30);
/// Timeout of one request, connection included.
pub const DEFAULT_REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// Timeout of establishing a connection.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// The retry schedule of one publish request. `Default` is the production schedule; tests
/// shorten it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Attempts per request, the first included (at least 1 is always made).
    pub max_attempts: u32,
    pub initial_backoff: Duration,
    pub max_backoff: Duration,
    pub max_elapsed: Duration,
    /// Timeout of each attempt.
    pub request_timeout: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            max_attempts: DEFAULT_MAX_ATTEMPTS,
            initial_backoff: DEFAULT_INITIAL_BACKOFF,
            max_backoff: DEFAULT_MAX_BACKOFF,
            max_elapsed: DEFAULT_MAX_ELAPSED,
            request_timeout: DEFAULT_REQUEST_TIMEOUT,
        }
    }
}

impl RetryPolicy {
    /// The wait before retry `retry` (1 for the first retry), given `unit` in `[0, 1)` drawn at
    /// random, and the server's `Retry-After` if any.
    pub fn backoff(&self, retry: u32, unit: f64, retry_after: Option<Duration>) -> Duration {
        let exponent = retry.saturating_sub(1).min(31);
        let base = self
            .initial_backoff
            .saturating_mul(1u32 << exponent)
            .min(self.max_backoff);
        let unit = unit.clamp(0.0, 1.0);
        let jittered = base.div_f64(2.0) + base.div_f64(2.0).mul_f64(unit);
        match retry_after {
            Some(asked) => jittered.max(asked.min(self.max_backoff)),
            None => jittered,
        }
    }
}

pub use crate::stream::random_unit;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_within_jitter_bounds_and_caps() {
        let p = RetryPolicy::default();
        assert_eq!(p.backoff(1, 0.0, None), Duration::from_millis(125));
        assert_eq!(p.backoff(1, 1.0, None), Duration::from_millis(250));
        assert_eq!(p.backoff(3, 1.0, None), Duration::from_millis(1000));
        assert_eq!(p.backoff(30, 1.0, None), DEFAULT_MAX_BACKOFF);
        assert_eq!(p.backoff(u32::MAX, 0.0, None), DEFAULT_MAX_BACKOFF / 2);
    }

    #[test]
    fn retry_after_lengthens_but_is_capped() {
        let p = RetryPolicy::default();
        assert_eq!(
            p.backoff(1, 0.0, Some(Duration::from_secs(2))),
            Duration::from_secs(2)
        );
        assert_eq!(
            p.backoff(1, 0.0, Some(Duration::from_secs(3600))),
            DEFAULT_MAX_BACKOFF
        );
    }
}
