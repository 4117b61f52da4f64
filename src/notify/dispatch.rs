//! Draining the notification outbox: publish what a stream's outbox says is pending, then move
//! its notified mark. This is what turns "stored" into "notified, at least once".
//!
//! Guarantees:
//! - **Publish before marking.** Notifications for events `(notified, version]` are published
//!   through the [`NotificationSink`] first; the mark moves only after the sink accepted all of
//!   them. A crash, a failed publish or a failed mark in between leaves the stream pending, and
//!   a later dispatch publishes the same notifications again (same ids: receivers drop
//!   duplicates). Nothing is ever marked that was not published, so delivery is at-least-once,
//!   never at-most-once.
//! - **The mark never hides newer events.** The mark is moved with the outbox's concurrency
//!   token ([`Outbox::mark_notified`]); when it changed (a concurrent append on Table storage, or
//!   another dispatcher), the stream is read again and the events it does not know were
//!   published are published before it tries again ([`MAX_MARK_ROUNDS`] times, then the sweep
//!   takes over).
//! - **Appends never wait.** [`NotifyingStore`] wraps a backend: after an append that wrote
//!   something (not an idempotent retry) it starts a dispatch of that stream in the background
//!   and answers at once; the dispatch's failures are logged and left to the sweep. Per stream
//!   one background dispatch runs at a time (a later append asks it to run once more), at most
//!   [`MAX_BACKGROUND_STREAMS`] streams are dispatched in the background at once, and after the
//!   sink failed for good, background dispatches pause for [`SINK_COOLDOWN`] so that an outage
//!   does not start a retry schedule per append. Work in flight when the process stops is
//!   simply redone by the sweep.
//! - **Bounded sweeps.** [`Dispatcher::sweep`] dispatches at most `limit` pending streams,
//!   [`SWEEP_CONCURRENCY`] at a time; it starts no new dispatch after the sink failed for good
//!   (the rest waits for the next sweep) or after [`SWEEP_TIME_BUDGET`].
//! - **Bounded memory.** Events are read and published [`READ_CHUNK_EVENTS`] at a time, however
//!   long the stream was pending.
//!
//! A notification the receiver refuses for good (400/413, or a wrong key) is not marked either:
//! the stream stays pending and every sweep logs the error until the cause is fixed.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use futures::StreamExt;
use serde::Serialize;

use super::notification::{notifications_for, RaiseSwitches};
use super::publisher::PublishError;
use super::sink::NotificationSink;
use crate::stream::{
    AppendOutcome, EventStore, ExpectedVersion, NewEvent, Outbox, PendingStream, ReadRequest,
    RecordedEvent, StoreError, StreamId, StreamPage, StreamSlice,
};

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
/// How long background dispatches pause after the sink failed for good.
pub const SINK_COOLDOWN: Duration = Duration::from_secs(30);

/// Why a dispatch did not finish. The stream stays pending either way.
#[derive(Debug, thiserror::Error)]
pub enum DispatchError {
    /// The outbox or the stream could not be read, or the mark not written.
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
}

impl DispatchError {
    /// True when the sink itself is unavailable (later publishes would fail too, for now).
    pub fn is_sink_unavailable(&self) -> bool {
        matches!(self, Self::Publish { source, .. } if source.is_transient())
    }
}

/// What one dispatch did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct DispatchOutcome {
    /// Notifications the sink accepted.
    pub published: usize,
    /// Whether the mark now covers every event seen pending (false: the stream is left pending
    /// for a later dispatch because its mark kept moving).
    pub marked: bool,
}

/// What one sweep did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct SweepReport {
    /// Streams found pending (at most the limit).
    pub pending: usize,
    /// Streams whose mark now covers what was pending.
    pub dispatched: usize,
    /// Notifications the sink accepted.
    pub published: usize,
    /// Streams left pending because their dispatch failed.
    pub failed: usize,
    /// Streams not attempted (the sink failed for good, or the time budget ran out).
    pub skipped: usize,
}

impl SweepReport {
    fn add(&mut self, other: &SweepReport) {
        self.pending += other.pending;
        self.dispatched += other.dispatched;
        self.published += other.published;
        self.failed += other.failed;
        self.skipped += other.skipped;
    }
}

/// Publishes the pending notifications of one backend.
pub struct Dispatcher {
    /// Names the backend in logs.
    name: String,
    store: Arc<dyn EventStore>,
    outbox: Arc<dyn Outbox>,
    sink: Arc<dyn NotificationSink>,
    raise: RaiseSwitches,
    background: Mutex<Background>,
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

impl Dispatcher {
    /// A dispatcher of `outbox` (the outbox of `store`, which it reads events from) into
    /// `sink`, raising the notifications `raise` switches on. `name` names the backend in logs.
    pub fn new(
        name: impl Into<String>,
        store: Arc<dyn EventStore>,
        outbox: Arc<dyn Outbox>,
        sink: Arc<dyn NotificationSink>,
        raise: RaiseSwitches,
    ) -> Self {
        Self {
            name: name.into(),
            store,
            outbox,
            sink,
            raise,
            background: Mutex::new(Background::default()),
        }
    }

    /// The backend's name (for logs).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Publishes what is pending for `stream` (nothing when nothing is).
    pub async fn dispatch(&self, stream: &StreamId) -> Result<DispatchOutcome, DispatchError> {
        match self.read_pending(stream).await? {
            Some(pending) => self.drain(pending).await,
            None => Ok(DispatchOutcome {
                published: 0,
                marked: true,
            }),
        }
    }

    /// Dispatches up to `limit` pending streams (see the module documentation for the bounds).
    pub async fn sweep(&self, limit: usize) -> Result<SweepReport, DispatchError> {
        let started = Instant::now();
        let pending = self
            .outbox
            .pending(limit)
            .await
            .map_err(DispatchError::Pending)?;
        let stop = std::sync::atomic::AtomicBool::new(false);
        let stop = &stop;
        let results: Vec<SweepReport> = futures::stream::iter(pending)
            .map(|pending| async move {
                use std::sync::atomic::Ordering;
                let mut report = SweepReport {
                    pending: 1,
                    ..SweepReport::default()
                };
                if stop.load(Ordering::SeqCst) || started.elapsed() > SWEEP_TIME_BUDGET {
                    report.skipped = 1;
                    return report;
                }
                let stream = pending.stream.clone();
                match self.drain(pending).await {
                    Ok(outcome) => {
                        report.published = outcome.published;
                        if outcome.marked {
                            report.dispatched = 1;
                        } else {
                            report.failed = 1;
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
        let mut total = SweepReport::default();
        for report in &results {
            total.add(report);
        }
        if total.dispatched > 0 {
            self.background().paused_until = None;
        }
        Ok(total)
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
                            published = outcome.published, marked = outcome.marked,
                            "notifications dispatched");
                        false
                    }
                    Err(error) => {
                        if error.is_sink_unavailable() {
                            this.background().paused_until = Some(Instant::now() + SINK_COOLDOWN);
                        }
                        tracing::warn!(backend = %this.name, stream = %stream, error = %error,
                            "notifications left pending for the sweep");
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
        // Every update replaces whole values, so a panic cannot leave one half-written.
        self.background
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
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
        let mut published = 0;
        for _ in 0..MAX_MARK_ROUNDS {
            let from = published_to.max(pending.notified);
            if pending.version > from {
                published += self.publish_range(&stream, from, pending.version).await?;
                published_to = pending.version;
            }
            if self
                .outbox
                .mark_notified(&pending)
                .await
                .map_err(store_error)?
            {
                return Ok(DispatchOutcome {
                    published,
                    marked: true,
                });
            }
            match self.read_pending(&stream).await? {
                Some(again) => pending = again,
                None => {
                    return Ok(DispatchOutcome {
                        published,
                        marked: true,
                    })
                }
            }
        }
        Ok(DispatchOutcome {
            published,
            marked: false,
        })
    }

    /// Publishes the notifications of events `(after, to]`; returns how many.
    async fn publish_range(
        &self,
        stream: &StreamId,
        after: u64,
        to: u64,
    ) -> Result<usize, DispatchError> {
        // Only the first event raises anything when per-event notifications are off.
        let to = if self.raise.event { to } else { to.min(1) };
        let mut published = 0;
        let mut next = after + 1;
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
            if !notifications.is_empty() {
                self.sink.publish(&notifications).await.map_err(|source| {
                    DispatchError::Publish {
                        stream: stream.to_string(),
                        source,
                    }
                })?;
                published += notifications.len();
            }
            next = end + 1;
        }
        Ok(published)
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
        domain: &str,
        entity: &str,
        continuation: Option<&str>,
        page_size: usize,
    ) -> Result<StreamPage, StoreError> {
        self.inner
            .list_streams(domain, entity, continuation, page_size)
            .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::notify::notification::{notification_id, NotificationKind};
    use crate::notify::sink::MemorySink;
    use crate::storage::MemoryStore;
    use std::collections::BTreeMap;

    /// An outbox over a [`MemoryStore`]: pending = version past the mark; the token is the
    /// mark's own change counter (so, like the Blob outbox, appends do not change it).
    struct MemoryOutbox {
        store: Arc<MemoryStore>,
        marks: Mutex<BTreeMap<StreamId, (u64, u64)>>,
    }

    #[async_trait]
    impl Outbox for MemoryOutbox {
        async fn pending(&self, limit: usize) -> Result<Vec<PendingStream>, StoreError> {
            let page = self
                .store
                .list_streams("Bank", "Account", None, 1000)
                .await?;
            let mut out = Vec::new();
            for instance in page.instances {
                let stream = StreamId::new("Bank", "Account", instance).unwrap();
                if let Some(p) = self.pending_for(&stream).await? {
                    out.push(p);
                }
            }
            out.truncate(limit);
            Ok(out)
        }

        async fn pending_for(
            &self,
            stream: &StreamId,
        ) -> Result<Option<PendingStream>, StoreError> {
            let version = self.store.version(stream).await?;
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
        let store = Arc::new(MemoryStore::new());
        let outbox = Arc::new(MemoryOutbox {
            store: store.clone(),
            marks: Mutex::default(),
        });
        let dispatcher = Arc::new(Dispatcher::new(
            "memory",
            store.clone(),
            outbox,
            sink,
            raise,
        ));
        (store, dispatcher)
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
        let outbox = Arc::new(MemoryOutbox {
            store: store.clone(),
            marks: Mutex::default(),
        });
        let dispatcher = Dispatcher::new(
            "memory",
            store.clone(),
            outbox.clone(),
            sink,
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
}
