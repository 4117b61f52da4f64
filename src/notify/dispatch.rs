//! Draining the notification outbox: publish what a stream's outbox says is pending, then move
//! its notified mark. This is what turns "stored" into "notified, at least once".
//!
//! Guarantees:
//! - **Publish before marking.** Notifications for events `(notified, version]` are published
//!   through the [`NotificationSink`] first; the mark moves only after the sink accepted all of
//!   them (or each one it refused for good is a dead letter, below). A crash, a failed publish
//!   or a failed mark in between leaves the stream pending, and a later dispatch publishes the
//!   same notifications again (same ids: receivers drop duplicates). Nothing is ever marked
//!   that was not published or dead-lettered, so delivery is at-least-once, never at-most-once.
//! - **A refused notification never blocks its stream.** When the sink refuses some
//!   notifications for good ([`PublishError::refused`]: a 4xx other than 401, 403, 408 and 429,
//!   413 included), the refused request is split in halves and each half published on its own,
//!   down to the single notification that is refused; that one is written to the
//!   [`DeadLetterStore`] with the status, the topic's error text and the time, and the stream's
//!   later notifications go on. The count is in [`DispatchOutcome::dead_lettered`] and the
//!   sweep's report, and each letter is logged. [`Dispatcher::redrive`] publishes dead letters
//!   again (rebuilt from the stored events) and forgets those the topic accepts.
//! - **The mark never hides newer events.** The mark is moved with the outbox's concurrency
//!   token ([`Outbox::mark_notified`]); when it changed (a concurrent append on Table storage, or
//!   another dispatcher), the stream is read again and the events it does not know were
//!   published are published before it tries again ([`MAX_MARK_ROUNDS`] times). A stream that
//!   keeps moving on under its dispatch is *busy*, not failed: everything the dispatch saw was
//!   published, and the appends that moved it on start dispatches of their own (or the next
//!   sweep takes them).
//! - **Appends never wait.** [`NotifyingStore`] wraps a backend: after an append that wrote
//!   something (not an idempotent retry) it starts a dispatch of that stream in the background
//!   and answers at once; the dispatch's failures are logged and left to the sweep. Per stream
//!   one background dispatch runs at a time (a later append asks it to run once more), at most
//!   [`MAX_BACKGROUND_STREAMS`] streams are dispatched in the background at once, and after the
//!   sink stopped publishing (unavailable, or the key refused), background dispatches pause for
//!   [`SINK_COOLDOWN`] so that an outage does not start a retry schedule per append. Work in
//!   flight when the process stops is simply redone by the sweep.
//! - **Bounded and fair sweeps.** [`Dispatcher::sweep`] dispatches at most `limit` pending
//!   streams, [`SWEEP_CONCURRENCY`] at a time; it starts no new dispatch after the sink stopped
//!   publishing (the rest waits for the next sweep) or after [`SWEEP_TIME_BUDGET`], and none at
//!   all while the sink is paused ([`NotificationSink::paused`]: the topic refused the key).
//!   Each sweep starts after the last stream the previous sweep of this dispatcher took
//!   ([`Outbox::pending`] rotates the streams), so streams that keep failing, or that sort
//!   first, cannot take every run. Outbox entries that cannot be read are reported (logged and
//!   counted in [`SweepReport::unreadable`]) and skipped.
//! - **Bounded memory.** Events are read and published [`READ_CHUNK_EVENTS`] at a time, however
//!   long the stream was pending.

use std::collections::HashMap;
use std::ops::Range;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use futures::StreamExt;
use serde::Serialize;
use uuid::Uuid;

use super::notification::Notification;
use super::publisher::PublishError;
use super::raise::{notifications_for, RaiseSwitches};
use super::sink::NotificationSink;
use crate::stream::{
    AppendOutcome, EntityType, EventStore, ExpectedVersion, NewEvent, Outbox, PendingStream,
    ReadRequest, RecordedEvent, StoreError, StreamId, StreamPage, StreamSlice,
};
use crate::stream::{DeadLetter, DeadLetterPage, DeadLetterStore};

/// Pending streams one sweep dispatches unless told otherwise.
pub const DEFAULT_SWEEP_LIMIT: usize = 500;
/// Streams a sweep dispatches at the same time.
pub const SWEEP_CONCURRENCY: usize = 8;
/// A sweep starts no new dispatch after running this long (a timer invocation must end well
/// within the Functions host's timeout, 5 minutes by default on the Consumption plan).
pub const SWEEP_TIME_BUDGET: Duration = Duration::from_secs(120);
/// Events read (and their notifications published) at a time.
pub const READ_CHUNK_EVENTS: u64 = 500;
/// Times one dispatch re-reads a stream whose mark moved under it before leaving it pending.
pub const MAX_MARK_ROUNDS: usize = 3;
/// Most streams dispatched in the background at once; appends to further streams are left to
/// the sweep.
pub const MAX_BACKGROUND_STREAMS: usize = 1_024;
/// How long background dispatches pause after the sink stopped publishing.
pub const SINK_COOLDOWN: Duration = Duration::from_secs(30);

/// Why a dispatch did not finish. The stream stays pending either way.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DispatchError {
    /// The outbox or the stream could not be read, or the mark or a dead letter not written.
    #[error("stream {stream}: {source}")]
    Store {
        stream: String,
        #[source]
        source: StoreError,
    },
    /// The outbox could not be searched for pending streams.
    #[error("finding pending notifications: {0}")]
    Pending(#[source] StoreError),
    /// The sink did not accept the notifications.
    #[error("stream {stream}: publishing notifications failed: {source}")]
    Publish {
        stream: String,
        #[source]
        source: PublishError,
    },
    /// The dead letters could not be read.
    #[error("reading the dead letters: {0}")]
    DeadLetters(#[source] StoreError),
}

impl DispatchError {
    /// True when the sink itself cannot publish now (unavailable, or the key refused): later
    /// publishes would fail too, for now.
    pub fn is_sink_unavailable(&self) -> bool {
        matches!(self, Self::Publish { source, .. } if source.stops_publishing())
    }
}

/// What one dispatch did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct DispatchOutcome {
    /// Notifications the sink accepted.
    pub published: usize,
    /// Notifications the sink refused for good, now dead letters.
    pub dead_lettered: usize,
    /// Whether the mark now covers every event seen pending (false: the stream kept moving on
    /// while it was dispatched, and is left pending for the dispatch of its newer events).
    pub marked: bool,
}

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

/// What one re-drive of dead letters did.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RedriveReport {
    /// Letters published, and forgotten.
    pub redriven: usize,
    /// Letters the sink refused again (kept, with the new reason and time).
    pub refused: usize,
    /// Letters that could not be re-driven (their event could not be read): kept.
    pub failed: usize,
    /// Letters not attempted: the sink stopped publishing, or more letters than the limit.
    pub remaining: usize,
    /// Rows of the dead letters that could not be read.
    pub unreadable: usize,
    /// Why publishing stopped, when it did.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stopped: Option<String>,
}

impl RedriveReport {
    /// Adds the counts of `other` (the first stop reason is kept).
    pub fn add(&mut self, other: &RedriveReport) {
        self.redriven += other.redriven;
        self.refused += other.refused;
        self.failed += other.failed;
        self.remaining += other.remaining;
        self.unreadable += other.unreadable;
        if self.stopped.is_none() {
            self.stopped.clone_from(&other.stopped);
        }
    }
}

/// What publishing a list of notifications came to.
#[derive(Debug, Clone, Copy, Default)]
struct Delivered {
    published: usize,
    dead_lettered: usize,
}

/// Publishes the pending notifications of one backend.
pub struct Dispatcher {
    /// Names the backend in logs.
    name: String,
    store: Arc<dyn EventStore>,
    outbox: Arc<dyn Outbox>,
    sink: Arc<dyn NotificationSink>,
    dead_letters: Arc<dyn DeadLetterStore>,
    raise: RaiseSwitches,
    background: Mutex<Background>,
    /// The last stream the latest sweep took: the next sweep starts after it.
    cursor: Mutex<Option<StreamId>>,
}

/// State of the background dispatches.
#[derive(Default)]
struct Background {
    /// Streams being dispatched; `true` when an append asked for one more run.
    running: HashMap<StreamId, bool>,
    /// No background dispatch starts before this.
    paused_until: Option<Instant>,
}

impl std::fmt::Debug for Dispatcher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Dispatcher")
            .field("name", &self.name)
            .field("raise", &self.raise)
            .finish_non_exhaustive()
    }
}

/// Locks a mutex whose every update replaces whole values, so that a panic cannot have left
/// one half-written.
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl Dispatcher {
    /// A dispatcher of `outbox` (the outbox of `store`, which it reads events from) into
    /// `sink`, raising the notifications `raise` switches on, keeping the notifications the sink
    /// refuses for good in `dead_letters`. `name` names the backend in logs.
    pub fn new(
        name: impl Into<String>,
        store: Arc<dyn EventStore>,
        outbox: Arc<dyn Outbox>,
        sink: Arc<dyn NotificationSink>,
        dead_letters: Arc<dyn DeadLetterStore>,
        raise: RaiseSwitches,
    ) -> Self {
        Self {
            name: name.into(),
            store,
            outbox,
            sink,
            dead_letters,
            raise,
            background: Mutex::new(Background::default()),
            cursor: Mutex::new(None),
        }
    }

    /// The backend's name (for logs).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The backend's outbox (operators list and purge pending notifications through it).
    pub fn outbox(&self) -> &Arc<dyn Outbox> {
        &self.outbox
    }

    /// Where this backend's dead letters are kept.
    pub fn dead_letter_store(&self) -> &Arc<dyn DeadLetterStore> {
        &self.dead_letters
    }

    /// Publishes what is pending for `stream` (nothing when nothing is).
    pub async fn dispatch(&self, stream: &StreamId) -> Result<DispatchOutcome, DispatchError> {
        match self.read_pending(stream).await? {
            Some(pending) => self.drain(pending).await,
            None => Ok(DispatchOutcome {
                marked: true,
                ..DispatchOutcome::default()
            }),
        }
    }

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

    /// Up to `limit` dead letters of this backend with an id after `after`, in id order.
    pub async fn dead_letters(
        &self,
        after: Option<Uuid>,
        limit: usize,
    ) -> Result<DeadLetterPage, DispatchError> {
        self.dead_letters
            .list(after, limit)
            .await
            .map_err(DispatchError::DeadLetters)
    }

    /// Publishes dead letters again: those of `ids` that are this backend's (the others are
    /// not found here and ignored), or when `ids` is `None` up to `limit` of them in id order.
    /// A letter the sink accepts is forgotten; one it refuses again is kept with the new reason.
    /// Stops at the first failure of the sink itself (unavailable, key refused). Returns the
    /// report and the ids of `ids` found here.
    pub async fn redrive(
        &self,
        ids: Option<&[Uuid]>,
        limit: usize,
    ) -> Result<(RedriveReport, Vec<Uuid>), DispatchError> {
        let mut report = RedriveReport::default();
        let mut letters = Vec::new();
        match ids {
            Some(ids) => {
                for id in ids {
                    let letter = self
                        .dead_letters
                        .get(*id)
                        .await
                        .map_err(DispatchError::DeadLetters)?;
                    letters.extend(letter);
                }
            }
            None => {
                let page = self.dead_letters(None, limit).await?;
                report.unreadable = page.unreadable.len();
                if page.next.is_some() {
                    // At least one more than the page: the exact count would need a scan.
                    report.remaining = 1;
                }
                letters = page.letters;
            }
        }
        let found: Vec<Uuid> = letters.iter().map(|l| l.id).collect();
        if let Some(reason) = self.sink.paused() {
            report.remaining += letters.len();
            report.stopped = Some(reason);
            return Ok((report, found));
        }
        let total = letters.len();
        for (done, letter) in letters.into_iter().enumerate() {
            match self.redrive_one(&letter).await {
                Ok(Redriven::Published) => report.redriven += 1,
                Ok(Redriven::Refused) => report.refused += 1,
                Ok(Redriven::Failed) => report.failed += 1,
                Err(error) if error.is_sink_unavailable() => {
                    report.remaining += total - done;
                    report.stopped = Some(error.to_string());
                    break;
                }
                Err(error) => return Err(error),
            }
        }
        tracing::info!(backend = %self.name, redriven = report.redriven, refused = report.refused,
            failed = report.failed, remaining = report.remaining, "dead letters re-driven");
        Ok((report, found))
    }

    async fn redrive_one(&self, letter: &DeadLetter) -> Result<Redriven, DispatchError> {
        let stream = match letter.stream() {
            Ok(stream) => stream,
            Err(error) => {
                tracing::warn!(backend = %self.name, id = %letter.id, %error,
                    "dead letter of no stream: kept");
                return Ok(Redriven::Failed);
            }
        };
        let store_error = |source| DispatchError::Store {
            stream: stream.to_string(),
            source,
        };
        let sequence = letter.sequence_number;
        let slice = match self
            .store
            .read(&stream, ReadRequest::range(sequence, Some(sequence)))
            .await
        {
            Ok(slice) => slice,
            Err(error @ StoreError::Unavailable { .. }) => return Err(store_error(error)),
            Err(error) => {
                tracing::warn!(backend = %self.name, id = %letter.id, stream = %stream,
                    %error, "dead letter whose event cannot be read: kept");
                return Ok(Redriven::Failed);
            }
        };
        let Some(event) = slice.events.iter().find(|e| e.sequence == sequence) else {
            tracing::warn!(backend = %self.name, id = %letter.id, stream = %stream, sequence,
                "dead letter of an event the stream does not have: kept");
            return Ok(Redriven::Failed);
        };
        let notification = Notification::build(letter.notification_kind, &stream, event);
        match self.sink.publish(std::slice::from_ref(&notification)).await {
            Ok(()) => {
                self.dead_letters
                    .remove(letter.id)
                    .await
                    .map_err(store_error)?;
                Ok(Redriven::Published)
            }
            Err(error) if error.refused().is_some() => {
                let again = DeadLetter::new(&notification, &error);
                tracing::warn!(backend = %self.name, id = %letter.id, stream = %stream,
                    status = ?again.status, reason = %again.reason,
                    "dead letter refused again: kept");
                self.dead_letters.put(&again).await.map_err(store_error)?;
                Ok(Redriven::Refused)
            }
            Err(source) => Err(DispatchError::Publish {
                stream: stream.to_string(),
                source,
            }),
        }
    }

    /// Starts a dispatch of `stream` in the background (see the module documentation); never
    /// waits and never fails. Needs a Tokio runtime.
    pub fn trigger(self: &Arc<Self>, stream: &StreamId) {
        if !self.raise.any() {
            return;
        }
        {
            let mut background = self.background();
            if background
                .paused_until
                .is_some_and(|until| Instant::now() < until)
            {
                tracing::debug!(backend = %self.name, stream = %stream,
                    "the sink failed recently: notifications left for the sweep");
                return;
            }
            if let Some(again) = background.running.get_mut(stream) {
                *again = true;
                return;
            }
            if background.running.len() >= MAX_BACKGROUND_STREAMS {
                tracing::debug!(backend = %self.name, stream = %stream,
                    "too many background dispatches: notifications left for the sweep");
                return;
            }
            background.running.insert(stream.clone(), false);
        }
        let this = self.clone();
        let stream = stream.clone();
        tokio::spawn(async move {
            loop {
                let failed = match this.dispatch(&stream).await {
                    Ok(outcome) => {
                        tracing::debug!(backend = %this.name, stream = %stream,
                            published = outcome.published,
                            dead_lettered = outcome.dead_lettered, marked = outcome.marked,
                            "notifications dispatched");
                        false
                    }
                    Err(error) => {
                        if error.is_sink_unavailable() {
                            this.background().paused_until = Some(Instant::now() + SINK_COOLDOWN);
                        }
                        // A paused sink has said why once already (the publisher's own line).
                        if this.sink.paused().is_some() {
                            tracing::debug!(backend = %this.name, stream = %stream,
                                error = %error, "notifications left pending for the sweep");
                        } else {
                            tracing::warn!(backend = %this.name, stream = %stream,
                                error = %error, "notifications left pending for the sweep");
                        }
                        true
                    }
                };
                let mut background = this.background();
                match background.running.get_mut(&stream) {
                    Some(again) if *again && !failed => *again = false,
                    _ => {
                        background.running.remove(&stream);
                        return;
                    }
                }
            }
        });
    }

    fn background(&self) -> MutexGuard<'_, Background> {
        lock(&self.background)
    }

    async fn read_pending(
        &self,
        stream: &StreamId,
    ) -> Result<Option<PendingStream>, DispatchError> {
        self.outbox
            .pending_for(stream)
            .await
            .map_err(|source| DispatchError::Store {
                stream: stream.to_string(),
                source,
            })
    }

    /// Publishes `pending` and marks it, re-reading when the mark moved (see the module
    /// documentation).
    async fn drain(&self, mut pending: PendingStream) -> Result<DispatchOutcome, DispatchError> {
        let stream = pending.stream.clone();
        let store_error = |source| DispatchError::Store {
            stream: stream.to_string(),
            source,
        };
        // Events up to here are published (by this call, or before it).
        let mut published_to = pending.notified;
        let mut outcome = DispatchOutcome::default();
        for _ in 0..MAX_MARK_ROUNDS {
            let from = published_to.max(pending.notified);
            if pending.version > from {
                let delivered = self.publish_range(&stream, from, pending.version).await?;
                outcome.published += delivered.published;
                outcome.dead_lettered += delivered.dead_lettered;
                published_to = pending.version;
            }
            if self
                .outbox
                .mark_notified(&pending)
                .await
                .map_err(store_error)?
            {
                outcome.marked = true;
                return Ok(outcome);
            }
            match self.read_pending(&stream).await? {
                Some(again) => pending = again,
                None => {
                    outcome.marked = true;
                    return Ok(outcome);
                }
            }
        }
        Ok(outcome)
    }

    /// Publishes the notifications of events `(after, to]`.
    async fn publish_range(
        &self,
        stream: &StreamId,
        after: u64,
        to: u64,
    ) -> Result<Delivered, DispatchError> {
        // Only the first event raises anything when per-event notifications are off.
        let to = if self.raise.event { to } else { to.min(1) };
        let mut delivered = Delivered::default();
        let mut next = after.saturating_add(1);
        while next <= to {
            let end = to.min(next.saturating_add(READ_CHUNK_EVENTS - 1));
            let slice = self
                .store
                .read(stream, ReadRequest::range(next, Some(end)))
                .await
                .map_err(|source| DispatchError::Store {
                    stream: stream.to_string(),
                    source,
                })?;
            let expected = end - next + 1;
            if slice.events.len() as u64 != expected {
                return Err(DispatchError::Store {
                    stream: stream.to_string(),
                    source: StoreError::Corrupt {
                        stream: stream.to_string(),
                        detail: format!(
                            "the outbox says events {next}..={end} are pending, but {} of them \
                             were read (stream version {})",
                            slice.events.len(),
                            slice.version
                        ),
                    },
                });
            }
            let notifications = notifications_for(stream, &slice.events, self.raise);
            let chunk = self.deliver(stream, &notifications).await?;
            delivered.published += chunk.published;
            delivered.dead_lettered += chunk.dead_lettered;
            next = end.saturating_add(1);
        }
        Ok(delivered)
    }

    /// Publishes `notifications` in order, dead-lettering each one the sink refuses for good
    /// (found by splitting the refused request in halves, see the module documentation).
    async fn deliver(
        &self,
        stream: &StreamId,
        notifications: &[Notification],
    ) -> Result<Delivered, DispatchError> {
        let mut delivered = Delivered::default();
        // Ranges still to publish; the next one is last.
        let mut todo: Vec<Range<usize>> = Vec::new();
        todo.push(0..notifications.len());
        while let Some(range) = todo.pop() {
            let Some(slice) = notifications.get(range.clone()).filter(|s| !s.is_empty()) else {
                continue;
            };
            let error = match self.sink.publish(slice).await {
                Ok(()) => {
                    delivered.published += slice.len();
                    continue;
                }
                Err(error) => error,
            };
            // The refused part, as indexes into `notifications`, when it lies within the range.
            let refused = error
                .refused()
                .map(|r| (range.start + r.start)..(range.start + r.end))
                .filter(|r| !r.is_empty() && r.end <= range.end);
            let Some(refused) = refused else {
                return Err(DispatchError::Publish {
                    stream: stream.to_string(),
                    source: error,
                });
            };
            let accepted = error.published().min(refused.start - range.start);
            delivered.published += accepted;
            // In the order they are to be published (pushed in reverse): what was not sent
            // before the refused part, the refused part (halved, or one notification that is
            // dead-lettered), and the rest.
            todo.push(refused.end..range.end);
            if refused.len() == 1 {
                if let Some(notification) = notifications.get(refused.start) {
                    self.dead_letter(stream, notification, &error).await?;
                    delivered.dead_lettered += 1;
                }
            } else {
                let middle = refused.start + refused.len() / 2;
                todo.push(middle..refused.end);
                todo.push(refused.start..middle);
            }
            todo.push((range.start + accepted)..refused.start);
        }
        Ok(delivered)
    }

    async fn dead_letter(
        &self,
        stream: &StreamId,
        notification: &Notification,
        error: &PublishError,
    ) -> Result<(), DispatchError> {
        let letter = DeadLetter::new(notification, error);
        tracing::warn!(backend = %self.name, stream = %stream,
            sequence = letter.sequence_number, id = %letter.id, status = ?letter.status,
            reason = %letter.reason,
            "notification refused for good by the topic: dead-lettered, the stream goes on");
        self.dead_letters
            .put(&letter)
            .await
            .map_err(|source| DispatchError::Store {
                stream: stream.to_string(),
                source,
            })
    }
}

/// What re-driving one dead letter came to.
enum Redriven {
    Published,
    Refused,
    Failed,
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

/// An event store that starts a background dispatch of a stream after every append that wrote
/// events to it (see the module documentation). Everything else is the wrapped store's.
pub struct NotifyingStore {
    inner: Arc<dyn EventStore>,
    dispatcher: Arc<Dispatcher>,
}

impl NotifyingStore {
    /// Wraps `inner`, whose outbox `dispatcher` drains.
    pub fn new(inner: Arc<dyn EventStore>, dispatcher: Arc<Dispatcher>) -> Self {
        Self { inner, dispatcher }
    }

    pub fn dispatcher(&self) -> &Arc<Dispatcher> {
        &self.dispatcher
    }
}

#[async_trait]
impl EventStore for NotifyingStore {
    async fn append(
        &self,
        stream: &StreamId,
        expected: ExpectedVersion,
        events: Vec<NewEvent>,
    ) -> Result<AppendOutcome, StoreError> {
        let outcome = self.inner.append(stream, expected, events).await?;
        if !outcome.duplicate {
            self.dispatcher.trigger(stream);
        }
        Ok(outcome)
    }

    async fn read(
        &self,
        stream: &StreamId,
        request: ReadRequest,
    ) -> Result<StreamSlice, StoreError> {
        self.inner.read(stream, request).await
    }

    async fn version(&self, stream: &StreamId) -> Result<u64, StoreError> {
        self.inner.version(stream).await
    }

    async fn read_known(
        &self,
        stream: &StreamId,
        request: ReadRequest,
        version: u64,
    ) -> Result<Vec<RecordedEvent>, StoreError> {
        self.inner.read_known(stream, request, version).await
    }

    async fn list_streams(
        &self,
        entity_type: &EntityType,
        continuation: Option<&str>,
        page_size: usize,
    ) -> Result<StreamPage, StoreError> {
        self.inner
            .list_streams(entity_type, continuation, page_size)
            .await
    }

    async fn erase(&self, stream: &StreamId) -> Result<crate::stream::Erasure, StoreError> {
        self.inner.erase(stream).await
    }

    async fn is_erased(&self, stream: &StreamId) -> Result<bool, StoreError> {
        self.inner.is_erased(stream).await
    }

    async fn verify(&self, stream: &StreamId) -> Result<Vec<String>, StoreError> {
        self.inner.verify(stream).await
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::notify::notification::{notification_id, NotificationKind};
    use crate::storage::MemoryDeadLetters;
    use crate::storage::MemoryStore;
    use crate::testing::MemorySink;
    use std::collections::BTreeMap;

    /// An outbox over a [`MemoryStore`]: pending = version past the mark; the token is the
    /// mark's own change counter (so, like the Blob outbox, appends do not change it). A stream
    /// in `poisoned` claims one event more than it has, so its every dispatch fails.
    #[derive(Default)]
    pub(crate) struct MemoryOutbox {
        store: Arc<MemoryStore>,
        marks: Mutex<BTreeMap<StreamId, (u64, u64)>>,
        poisoned: Mutex<Vec<StreamId>>,
    }

    impl MemoryOutbox {
        pub(crate) fn new(store: Arc<MemoryStore>) -> Self {
            Self {
                store,
                ..Self::default()
            }
        }
    }

    #[async_trait]
    impl Outbox for MemoryOutbox {
        async fn pending(
            &self,
            after: Option<&StreamId>,
            limit: usize,
        ) -> Result<crate::stream::PendingScan, StoreError> {
            let page = self
                .store
                .list_streams(&EntityType::from_static("Bank", "Account"), None, 1000)
                .await?;
            let mut streams: Vec<StreamId> = page
                .instances
                .into_iter()
                .map(|instance| StreamId::new("Bank", "Account", instance).unwrap())
                .collect();
            streams.sort();
            if let Some(after) = after {
                let split = streams.partition_point(|s| s <= after);
                streams.rotate_left(split);
            }
            let mut scan = crate::stream::PendingScan::default();
            for stream in streams {
                if let Some(p) = self.pending_for(&stream).await? {
                    scan.streams.push(p);
                }
            }
            scan.streams.truncate(limit);
            Ok(scan)
        }

        async fn pending_for(
            &self,
            stream: &StreamId,
        ) -> Result<Option<PendingStream>, StoreError> {
            let mut version = self.store.version(stream).await?;
            if self.poisoned.lock().unwrap().contains(stream) {
                version += 1;
            }
            let (notified, changes) = self
                .marks
                .lock()
                .unwrap()
                .get(stream)
                .copied()
                .unwrap_or_default();
            Ok((version > notified).then(|| PendingStream {
                stream: stream.clone(),
                notified,
                version,
                token: changes.to_string(),
            }))
        }

        async fn mark_notified(&self, pending: &PendingStream) -> Result<bool, StoreError> {
            let mut marks = self.marks.lock().unwrap();
            let entry = marks.entry(pending.stream.clone()).or_default();
            if entry.1.to_string() != pending.token {
                return Ok(false);
            }
            *entry = (pending.version, entry.1 + 1);
            Ok(true)
        }
    }

    fn stream(instance: &str) -> StreamId {
        StreamId::new("Bank", "Account", instance).unwrap()
    }

    fn events(n: usize) -> Vec<NewEvent> {
        (0..n)
            .map(|i| NewEvent::new("Deposited", &serde_json::json!({ "i": i })).unwrap())
            .collect()
    }

    fn setup(sink: Arc<MemorySink>, raise: RaiseSwitches) -> (Arc<MemoryStore>, Arc<Dispatcher>) {
        let (store, _, _, dispatcher) = setup_with_outbox(sink, raise);
        (store, dispatcher)
    }

    fn setup_with_outbox(
        sink: Arc<MemorySink>,
        raise: RaiseSwitches,
    ) -> (
        Arc<MemoryStore>,
        Arc<MemoryOutbox>,
        Arc<MemoryDeadLetters>,
        Arc<Dispatcher>,
    ) {
        let store = Arc::new(MemoryStore::new());
        let outbox = Arc::new(MemoryOutbox::new(store.clone()));
        let dead_letters = Arc::new(MemoryDeadLetters::new());
        let dispatcher = Arc::new(Dispatcher::new(
            "memory",
            store.clone(),
            outbox.clone(),
            sink,
            dead_letters.clone(),
            raise,
        ));
        (store, outbox, dead_letters, dispatcher)
    }

    fn ids(sink: &MemorySink) -> Vec<uuid::Uuid> {
        sink.published().iter().map(|n| n.id).collect()
    }

    #[tokio::test]
    async fn dispatch_publishes_then_marks_and_a_second_dispatch_publishes_nothing() {
        let sink = Arc::new(MemorySink::new());
        let (store, dispatcher) = setup(sink.clone(), RaiseSwitches::ALL);
        let s = stream("1");
        store
            .append(&s, ExpectedVersion::NoStream, events(2))
            .await
            .unwrap();
        let outcome = dispatcher.dispatch(&s).await.unwrap();
        assert_eq!(
            outcome,
            DispatchOutcome {
                published: 3,
                dead_lettered: 0,
                marked: true
            }
        );
        assert_eq!(
            ids(&sink),
            vec![
                notification_id(&s, 1, NotificationKind::NewEntity),
                notification_id(&s, 1, NotificationKind::NewEvent),
                notification_id(&s, 2, NotificationKind::NewEvent),
            ]
        );
        assert_eq!(dispatcher.dispatch(&s).await.unwrap().published, 0);
        store
            .append(&s, ExpectedVersion::Exact(2), events(1))
            .await
            .unwrap();
        assert_eq!(dispatcher.dispatch(&s).await.unwrap().published, 1);
        assert_eq!(
            ids(&sink)[3],
            notification_id(&s, 3, NotificationKind::NewEvent)
        );
    }

    #[tokio::test]
    async fn a_failed_publish_marks_nothing() {
        let sink = Arc::new(MemorySink::new());
        let (store, dispatcher) = setup(sink.clone(), RaiseSwitches::ALL);
        let s = stream("1");
        store
            .append(&s, ExpectedVersion::NoStream, events(1))
            .await
            .unwrap();
        sink.fail_next(1);
        let error = dispatcher.dispatch(&s).await.unwrap_err();
        assert!(error.is_sink_unavailable(), "{error}");
        assert!(sink.published().is_empty());
        let report = dispatcher.sweep(10).await.unwrap();
        assert_eq!(
            (report.pending, report.dispatched, report.published),
            (1, 1, 2)
        );
    }

    #[tokio::test]
    async fn only_the_switched_on_kinds_are_raised() {
        let sink = Arc::new(MemorySink::new());
        let only_new = RaiseSwitches {
            entity_creation: true,
            event: false,
        };
        let (store, dispatcher) = setup(sink.clone(), only_new);
        let s = stream("1");
        store
            .append(&s, ExpectedVersion::NoStream, events(3))
            .await
            .unwrap();
        assert_eq!(dispatcher.dispatch(&s).await.unwrap().published, 1);
        store
            .append(&s, ExpectedVersion::Exact(3), events(1))
            .await
            .unwrap();
        assert_eq!(
            dispatcher.dispatch(&s).await.unwrap(),
            DispatchOutcome {
                published: 0,
                dead_lettered: 0,
                marked: true
            }
        );
        assert_eq!(
            ids(&sink),
            vec![notification_id(&s, 1, NotificationKind::NewEntity)]
        );
    }

    #[tokio::test]
    async fn long_pending_ranges_are_published_in_chunks() {
        let sink = Arc::new(MemorySink::new());
        let (store, dispatcher) = setup(
            sink.clone(),
            RaiseSwitches {
                entity_creation: false,
                event: true,
            },
        );
        let s = stream("1");
        let total = READ_CHUNK_EVENTS as usize + 7;
        for chunk in events(total).chunks(40) {
            store
                .append(&s, ExpectedVersion::Any, chunk.to_vec())
                .await
                .unwrap();
        }
        assert_eq!(dispatcher.dispatch(&s).await.unwrap().published, total);
        let sequences: Vec<u64> = sink
            .published()
            .iter()
            .map(|n| n.data.sequence_number)
            .collect();
        assert_eq!(sequences, (1..=total as u64).collect::<Vec<_>>());
    }

    /// A sink that appends to the stream while it publishes (an append racing a dispatch).
    struct RacingSink {
        inner: Arc<MemorySink>,
        store: Arc<MemoryStore>,
        stream: StreamId,
        races: Mutex<usize>,
    }

    #[async_trait]
    impl NotificationSink for RacingSink {
        async fn publish(&self, batch: &[super::super::Notification]) -> Result<(), PublishError> {
            let race = {
                let mut races = self.races.lock().unwrap();
                let race = *races > 0;
                *races = races.saturating_sub(1);
                race
            };
            if race {
                self.store
                    .append(&self.stream, ExpectedVersion::Any, events(1))
                    .await
                    .unwrap();
            }
            self.inner.publish(batch).await
        }
    }

    #[tokio::test]
    async fn an_append_racing_a_dispatch_stays_pending() {
        let memory = Arc::new(MemorySink::new());
        let store = Arc::new(MemoryStore::new());
        let s = stream("1");
        let sink = Arc::new(RacingSink {
            inner: memory.clone(),
            store: store.clone(),
            stream: s.clone(),
            races: Mutex::new(1),
        });
        let outbox = Arc::new(MemoryOutbox::new(store.clone()));
        let dispatcher = Dispatcher::new(
            "memory",
            store.clone(),
            outbox.clone(),
            sink,
            Arc::new(MemoryDeadLetters::new()),
            RaiseSwitches::ALL,
        );
        store
            .append(&s, ExpectedVersion::NoStream, events(1))
            .await
            .unwrap();
        dispatcher.dispatch(&s).await.unwrap();
        // Event 2 arrived while event 1 was being published: the mark stops at 1.
        let pending = outbox.pending_for(&s).await.unwrap().unwrap();
        assert_eq!((pending.notified, pending.version), (1, 2));
        dispatcher.dispatch(&s).await.unwrap();
        assert!(outbox.pending_for(&s).await.unwrap().is_none());
        let sequences: Vec<u64> = memory
            .published()
            .iter()
            .map(|n| n.data.sequence_number)
            .collect();
        assert_eq!(sequences, vec![1, 1, 2]);
    }

    #[tokio::test]
    async fn the_notifying_store_dispatches_in_the_background() {
        let sink = Arc::new(MemorySink::new());
        let (store, dispatcher) = setup(sink.clone(), RaiseSwitches::ALL);
        let notifying = NotifyingStore::new(store.clone(), dispatcher);
        let s = stream("1");
        let first = notifying
            .append(&s, ExpectedVersion::NoStream, events(1))
            .await
            .unwrap();
        notifying
            .append(&s, ExpectedVersion::Exact(1), events(1))
            .await
            .unwrap();
        for _ in 0..200 {
            if sink.published().len() >= 3 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert_eq!(sink.published().len(), 3);
        assert_eq!(first.version, 1);
    }
    fn new_event_id(s: &StreamId, sequence: u64) -> uuid::Uuid {
        notification_id(s, sequence, NotificationKind::NewEvent)
    }

    #[tokio::test]
    async fn a_refused_notification_is_dead_lettered_and_the_stream_goes_on() {
        let sink = Arc::new(MemorySink::new());
        let (store, _, dead_letters, dispatcher) =
            setup_with_outbox(sink.clone(), RaiseSwitches::ALL);
        let s = stream("1");
        let refused = new_event_id(&s, 3);
        sink.refuse(refused, 400);
        store
            .append(&s, ExpectedVersion::NoStream, events(5))
            .await
            .unwrap();
        let outcome = dispatcher.dispatch(&s).await.unwrap();
        assert_eq!(
            outcome,
            DispatchOutcome {
                published: 5,
                dead_lettered: 1,
                marked: true
            }
        );
        assert!(!ids(&sink).contains(&refused));
        let letters = dead_letters.all();
        assert_eq!(letters.len(), 1);
        assert_eq!(letters[0].id, refused);
        assert_eq!(letters[0].sequence_number, 3);
        assert_eq!(letters[0].status, Some(400));
        assert_eq!(letters[0].reason, crate::testing::MEMORY_SINK_REFUSAL);
        // Later events go on.
        store
            .append(&s, ExpectedVersion::Exact(5), events(1))
            .await
            .unwrap();
        assert_eq!(dispatcher.dispatch(&s).await.unwrap().published, 1);
        assert!(ids(&sink).contains(&new_event_id(&s, 6)));

        // Re-driven while still refused: kept; once accepted: published and forgotten.
        let (report, found) = dispatcher.redrive(None, 10).await.unwrap();
        assert_eq!((report.redriven, report.refused), (0, 1));
        assert_eq!(found, vec![refused]);
        assert_eq!(dead_letters.all().len(), 1);
        sink.accept_all();
        let (report, _) = dispatcher.redrive(Some(&[refused]), 10).await.unwrap();
        assert_eq!((report.redriven, report.refused, report.failed), (1, 0, 0));
        assert!(dead_letters.all().is_empty());
        assert_eq!(ids(&sink).last(), Some(&refused));
    }

    #[tokio::test]
    async fn splitting_finds_every_refused_notification_and_keeps_the_order() {
        let sink = Arc::new(MemorySink::new());
        let only_events = RaiseSwitches {
            entity_creation: false,
            event: true,
        };
        let (store, _, dead_letters, dispatcher) = setup_with_outbox(sink.clone(), only_events);
        let s = stream("1");
        store
            .append(&s, ExpectedVersion::NoStream, events(40))
            .await
            .unwrap();
        for sequence in [1, 2, 17, 40] {
            sink.refuse(new_event_id(&s, sequence), 413);
        }
        let outcome = dispatcher.dispatch(&s).await.unwrap();
        assert_eq!((outcome.published, outcome.dead_lettered), (36, 4));
        let sequences: Vec<u64> = sink
            .published()
            .iter()
            .map(|n| n.data.sequence_number)
            .collect();
        let expected: Vec<u64> = (1..=40).filter(|q| ![1, 2, 17, 40].contains(q)).collect();
        assert_eq!(sequences, expected, "in order, each once");
        let letters: Vec<u64> = dead_letters
            .all()
            .iter()
            .map(|l| l.sequence_number)
            .collect::<std::collections::BTreeSet<_>>()
            .into_iter()
            .collect();
        assert_eq!(letters, vec![1, 2, 17, 40]);
        // Halving: a few calls per refused notification, not one per notification.
        assert!(sink.calls() < 40, "{} calls", sink.calls());
    }

    #[tokio::test]
    async fn sweeps_take_turns_so_failing_streams_cannot_starve_the_rest() {
        let sink = Arc::new(MemorySink::new());
        let (store, outbox, _, dispatcher) = setup_with_outbox(sink.clone(), RaiseSwitches::ALL);
        // Five streams that sort first and fail every time, then one healthy stream.
        for name in ["a0", "a1", "a2", "a3", "a4", "b"] {
            store
                .append(&stream(name), ExpectedVersion::NoStream, events(1))
                .await
                .unwrap();
        }
        for name in ["a0", "a1", "a2", "a3", "a4"] {
            outbox.poisoned.lock().unwrap().push(stream(name));
        }
        let first = dispatcher.sweep(5).await.unwrap();
        assert_eq!((first.pending, first.failed, first.dispatched), (5, 5, 0));
        let second = dispatcher.sweep(5).await.unwrap();
        assert_eq!(second.dispatched, 1, "{second:?}");
        assert!(sink.published().iter().any(|n| n.data.instance == "b"));
    }

    /// A sink that says it is paused.
    struct PausedSink;

    #[async_trait]
    impl NotificationSink for PausedSink {
        async fn publish(&self, _: &[super::super::Notification]) -> Result<(), PublishError> {
            panic!("a paused sink is not asked to publish");
        }

        fn paused(&self) -> Option<String> {
            Some("the topic refused the key with 401".into())
        }
    }

    #[tokio::test]
    async fn a_paused_sink_is_not_swept() {
        let store = Arc::new(MemoryStore::new());
        let outbox = Arc::new(MemoryOutbox::new(store.clone()));
        let dispatcher = Dispatcher::new(
            "memory",
            store.clone(),
            outbox,
            Arc::new(PausedSink),
            Arc::new(MemoryDeadLetters::new()),
            RaiseSwitches::ALL,
        );
        store
            .append(&stream("1"), ExpectedVersion::NoStream, events(1))
            .await
            .unwrap();
        let report = dispatcher.sweep(10).await.unwrap();
        assert_eq!(report.pending, 0);
        assert!(report.paused.unwrap().contains("401"));
    }
}
