//! Sweeps: dispatching every stream its outbox still says is pending (after a crash, or while the
//! topic was down), from the `NotificationSweep` timer function.
//!
//! Guarantees (**bounded and fair**):
//! - [`Dispatcher::sweep`] dispatches at most `limit` pending streams, [`SWEEP_CONCURRENCY`] at a
//!   time; it starts no new dispatch after the sink stopped publishing (the rest waits for the next
//!   sweep) or after [`SWEEP_TIME_BUDGET`], and none at all while the sink is paused
//!   ([`NotificationSink::paused`](crate::notify::NotificationSink::paused): the topic refused the
//!   key). Each sweep starts after the last stream the previous sweep of this dispatcher took
//!   ([`Outbox::pending`](crate::stream::Outbox::pending) rotates the streams), so streams that
//!   keep failing, or that sort first, cannot take every run. Outbox entries that cannot be read
//!   are reported (logged and counted in [`SweepReport::unreadable`]) and skipped.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt;
use serde::Serialize;

use super::{lock, DispatchError, Dispatcher};

/// Pending streams one sweep dispatches unless told otherwise.
pub const DEFAULT_SWEEP_LIMIT: usize = 500;
/// Streams a sweep dispatches at the same time.
pub const SWEEP_CONCURRENCY: usize = 8;
/// A sweep starts no new dispatch after running this long (a timer invocation must end well
/// within the Functions host's timeout, 5 minutes by default on the Consumption plan).
pub const SWEEP_TIME_BUDGET: Duration = Duration::from_secs(120);

/// What one sweep did.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct SweepReport {
    /// Streams found pending (at most the limit).
    pub pending: usize,
    /// Streams whose mark now covers what was pending.
    pub dispatched: usize,
    /// Notifications the sink accepted.
    pub published: usize,
    /// Notifications the sink refused for good, now dead letters.
    pub dead_lettered: usize,
    /// Streams whose every notification seen was published, but which moved on (new appends)
    /// while they were dispatched: left pending for their newer events, not a failure.
    pub busy: usize,
    /// Outbox entries that could not be read: reported and skipped.
    pub unreadable: usize,
    /// Streams left pending because their dispatch failed.
    pub failed: usize,
    /// Streams not attempted (the sink stopped publishing, or the time budget ran out).
    pub skipped: usize,
    /// Why publishing is paused, when it is (the topic refused the key): nothing was
    /// attempted after that.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub paused: Option<String>,
}

impl SweepReport {
    /// Adds the counts of `other` (the first pause reason is kept).
    pub fn add(&mut self, other: &SweepReport) {
        self.pending += other.pending;
        self.dispatched += other.dispatched;
        self.published += other.published;
        self.dead_lettered += other.dead_lettered;
        self.busy += other.busy;
        self.unreadable += other.unreadable;
        self.failed += other.failed;
        self.skipped += other.skipped;
        if self.paused.is_none() {
            self.paused.clone_from(&other.paused);
        }
    }
}

impl Dispatcher {
    /// Dispatches up to `limit` pending streams (see the module documentation for the bounds
    /// and the order).
    pub async fn sweep(&self, limit: usize) -> Result<SweepReport, DispatchError> {
        if let Some(reason) = self.sink.paused() {
            tracing::warn!(backend = %self.name, %reason, "sweep: nothing attempted");
            return Ok(SweepReport {
                paused: Some(reason),
                ..SweepReport::default()
            });
        }
        let started = Instant::now();
        let after = lock(&self.cursor).clone();
        let scan = self
            .outbox
            .pending(after.as_ref(), limit)
            .await
            .map_err(DispatchError::Pending)?;
        for entry in &scan.unreadable {
            tracing::warn!(backend = %self.name, entry = %entry.key, detail = %entry.detail,
                "sweep: an outbox entry that cannot be read was skipped");
        }
        let streams = scan.streams;
        let stop = AtomicBool::new(false);
        // One past the index of the last stream started (0: none).
        let taken = AtomicUsize::new(0);
        let (stop, taken) = (&stop, &taken);
        let results: Vec<SweepReport> = futures::stream::iter(streams.iter().cloned().enumerate())
            .map(|(index, pending)| async move {
                let mut report = SweepReport {
                    pending: 1,
                    ..SweepReport::default()
                };
                if stop.load(Ordering::SeqCst) || started.elapsed() > SWEEP_TIME_BUDGET {
                    report.skipped = 1;
                    return report;
                }
                taken.fetch_max(index + 1, Ordering::SeqCst);
                let stream = pending.stream.clone();
                match self.drain(pending).await {
                    Ok(outcome) => {
                        report.published = outcome.published;
                        report.dead_lettered = outcome.dead_lettered;
                        if outcome.marked {
                            report.dispatched = 1;
                        } else {
                            tracing::info!(backend = %self.name, stream = %stream,
                                "sweep: the stream moved on while it was dispatched; its newer \
                                 events are left to their own dispatch");
                            report.busy = 1;
                        }
                    }
                    Err(error) => {
                        if error.is_sink_unavailable() {
                            stop.store(true, Ordering::SeqCst);
                        }
                        tracing::warn!(
                            backend = %self.name,
                            stream = %stream,
                            error = %error,
                            "sweep: notifications left pending"
                        );
                        report.failed = 1;
                    }
                }
                report
            })
            .buffer_unordered(SWEEP_CONCURRENCY)
            .collect()
            .await;
        let mut total = SweepReport {
            unreadable: scan.unreadable.len(),
            ..SweepReport::default()
        };
        for report in &results {
            total.add(report);
        }
        let taken = taken.load(Ordering::SeqCst);
        if let Some(last) = taken.checked_sub(1).and_then(|i| streams.get(i)) {
            *lock(&self.cursor) = Some(last.stream.clone());
        }
        if stop.load(Ordering::SeqCst) {
            total.paused = self.sink.paused();
        }
        if total.dispatched > 0 {
            self.background().paused_until = None;
        }
        Ok(total)
    }
}

/// Sweeps every dispatcher in turn; the first error of each is logged and counted as a failure
/// of the whole sweep (the report still covers the others).
pub async fn sweep_all(
    dispatchers: &[Arc<Dispatcher>],
    limit: usize,
) -> (SweepReport, Vec<(String, DispatchError)>) {
    let mut total = SweepReport::default();
    let mut errors = Vec::new();
    for dispatcher in dispatchers {
        match dispatcher.sweep(limit).await {
            Ok(report) => total.add(&report),
            Err(error) => errors.push((dispatcher.name().to_owned(), error)),
        }
    }
    (total, errors)
}
