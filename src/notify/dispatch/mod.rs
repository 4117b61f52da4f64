//! The outbox dispatcher: what turns "stored" into "notified, at least once". One
//! [`Dispatcher`] per backend publishes what a stream's outbox says is pending into a
//! [`NotificationSink`], then moves the stream's notified mark. Each way of running it has its
//! own file, with its guarantees:
//! - [`drain`]: one stream's dispatch: publish before marking, a refused notification never
//!   blocks its stream (dead letters), the mark never hides newer events, bounded memory;
//! - [`background`]: a dispatch started after an append, which never makes the append wait;
//! - [`sweep`]: bounded and fair sweeps of every pending stream (the `NotificationSweep` timer);
//! - [`redrive`]: listing dead letters and publishing them again.
//!
//! The event store decorator that starts background dispatches after appends is
//! [`NotifyingStore`](crate::notify::NotifyingStore).

use std::sync::{Arc, Mutex, MutexGuard};

use super::publisher::PublishError;
use super::raise::RaiseSwitches;
use super::sink::NotificationSink;
use crate::stream::{DeadLetterStore, EventStore, Outbox, StoreError, StreamId};

pub mod background;
pub mod drain;
pub mod redrive;
pub mod sweep;
#[cfg(test)]
pub(crate) mod tests;

pub use background::{MAX_BACKGROUND_STREAMS, SINK_COOLDOWN};
pub use drain::{DispatchOutcome, MAX_MARK_ROUNDS, READ_CHUNK_EVENTS};
pub use redrive::RedriveReport;
pub use sweep::{
    sweep_all, SweepReport, DEFAULT_SWEEP_LIMIT, SWEEP_CONCURRENCY, SWEEP_TIME_BUDGET,
};

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

/// Publishes the pending notifications of one backend.
pub struct Dispatcher {
    /// Names the backend in logs.
    name: String,
    store: Arc<dyn EventStore>,
    outbox: Arc<dyn Outbox>,
    sink: Arc<dyn NotificationSink>,
    dead_letters: Arc<dyn DeadLetterStore>,
    raise: RaiseSwitches,
    background: Mutex<background::Background>,
    /// The last stream the latest sweep took: the next sweep starts after it.
    cursor: Mutex<Option<StreamId>>,
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
pub(crate) fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
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
            background: Mutex::new(background::Background::default()),
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
}
