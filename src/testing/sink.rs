//! A [`NotificationSink`] that keeps what is published in memory and can be told to fail or
//! refuse, so the callers' handling of each outcome of the sink's contract can be tested; and
//! one that appends to a stream while it publishes ([`RacingSink`]), for the race between a
//! dispatch and an append.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use serde_json::value::RawValue;
use uuid::Uuid;

use crate::notify::{Notification, NotificationSink, PublishError};
use crate::stream::{EventStore, ExpectedVersion, NewEvent, StreamId};

/// The endpoint name a [`MemorySink`] reports in its errors.
pub const MEMORY_SINK_ENDPOINT: &str = "memory";

/// Keeps what is published, in order; can be told to fail (for tests of the callers).
#[derive(Debug, Default)]
pub struct MemorySink {
    published: Mutex<Vec<Notification>>,
    failures: AtomicUsize,
    /// Ids refused for good, with the status: a slice holding one is refused whole (as Event
    /// Grid refuses a whole request).
    refused: Mutex<HashMap<Uuid, u16>>,
    /// Slices handed to `publish`, refused ones included.
    calls: AtomicUsize,
}

/// The error text of a [`MemorySink`] refusal.
pub const MEMORY_SINK_REFUSAL: &str = "refused by the memory sink";

impl MemorySink {
    pub fn new() -> Self {
        Self::default()
    }

    /// Everything accepted so far, in order.
    pub fn published(&self) -> Vec<Notification> {
        lock(&self.published).clone()
    }

    /// Makes the next `count` calls of `publish` fail with [`PublishError::Unavailable`],
    /// accepting nothing.
    pub fn fail_next(&self, count: usize) {
        self.failures.store(count, Ordering::SeqCst);
    }

    /// Refuses for good, with `status`, every call whose slice holds the notification `id`
    /// ([`PublishError::Rejected`] for the whole slice, nothing accepted).
    pub fn refuse(&self, id: Uuid, status: u16) {
        lock(&self.refused).insert(id, status);
    }

    /// Accepts every notification again.
    pub fn accept_all(&self) {
        lock(&self.refused).clear();
    }

    /// Calls of `publish` so far.
    pub fn calls(&self) -> usize {
        self.calls.load(Ordering::SeqCst)
    }
}

/// Takes one from `count` if it is above zero; says whether it was.
fn take_one(count: &AtomicUsize) -> bool {
    count
        .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
        .is_ok()
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

#[async_trait]
impl NotificationSink for MemorySink {
    async fn publish(&self, batch: &[Notification]) -> Result<(), PublishError> {
        let failing = take_one(&self.failures);
        self.calls.fetch_add(1, Ordering::SeqCst);
        if failing {
            return Err(PublishError::Unavailable {
                attempts: 1,
                last: "injected failure".into(),
                endpoint: MEMORY_SINK_ENDPOINT.into(),
                batch: 0..batch.len(),
            });
        }
        let refusal = {
            let refused = lock(&self.refused);
            batch.iter().find_map(|n| refused.get(&n.id).copied())
        };
        if let Some(status) = refusal {
            return Err(PublishError::Rejected {
                status,
                body: MEMORY_SINK_REFUSAL.into(),
                endpoint: MEMORY_SINK_ENDPOINT.into(),
                batch: 0..batch.len(),
            });
        }
        lock(&self.published).extend_from_slice(batch);
        Ok(())
    }
}

/// A sink that appends to a stream while it publishes: before each of its first `races`
/// publishes (`usize::MAX`: every one) it appends one event ([`RACING_EVENT_TYPE`], data `{}`)
/// to `stream` through `store`, with no expectation, then hands the batch to its
/// [`MemorySink`]. An append racing a dispatch, between the dispatch's read and its mark. A
/// failed append fails the publish ([`PublishError::Unavailable`]).
pub struct RacingSink {
    memory: Arc<MemorySink>,
    store: Arc<dyn EventStore>,
    stream: StreamId,
    races: AtomicUsize,
}

/// The event type of what a [`RacingSink`] appends.
pub const RACING_EVENT_TYPE: &str = "Raced";

impl RacingSink {
    /// Races the first `races` publishes (see the type's documentation).
    pub fn new(store: Arc<dyn EventStore>, stream: StreamId, races: usize) -> Self {
        Self {
            memory: Arc::new(MemorySink::new()),
            store,
            stream,
            races: AtomicUsize::new(races),
        }
    }

    /// The sink that keeps what was published.
    pub fn memory(&self) -> &Arc<MemorySink> {
        &self.memory
    }
}

#[async_trait]
impl NotificationSink for RacingSink {
    async fn publish(&self, batch: &[Notification]) -> Result<(), PublishError> {
        let race = take_one(&self.races);
        if race {
            let event = NewEvent::from_raw(RACING_EVENT_TYPE, empty_object());
            self.store
                .append(&self.stream, ExpectedVersion::Any, vec![event])
                .await
                .map_err(|e| PublishError::Unavailable {
                    attempts: 1,
                    last: e.to_string(),
                    endpoint: MEMORY_SINK_ENDPOINT.into(),
                    batch: 0..batch.len(),
                })?;
        }
        self.memory.publish(batch).await
    }
}

fn empty_object() -> Box<RawValue> {
    RawValue::from_string("{}".to_owned()).unwrap_or_else(|_| unreachable!("{{}} is JSON"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn memory_sink_records_and_fails_on_demand() {
        let sink = Arc::new(MemorySink::new());
        sink.fail_next(1);
        assert!(sink.publish(&[]).await.unwrap_err().is_transient());
        sink.publish(&[]).await.unwrap();
        assert!(sink.published().is_empty());
    }
}
