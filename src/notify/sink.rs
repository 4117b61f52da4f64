//! Where published notifications go, as a trait: the outbox drains into a
//! [`NotificationSink`] and does not care whether it is Event Grid ([`super::Publisher`]) or a
//! test's [`MemorySink`].
//!
//! Contract of `publish`: either every notification of the slice was accepted (`Ok`), or the
//! error says how many from the front were ([`PublishError::published`]); accepting one twice is
//! allowed (receivers deduplicate by id), losing one is not. An error that refuses some
//! notifications for good says which ([`PublishError::refused`]); one that stops publishing for
//! now says so ([`PublishError::stops_publishing`]), and [`NotificationSink::paused`] tells,
//! before anything is read to publish, that such a stop is under way.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use uuid::Uuid;

use super::error::PublishError;
use super::notification::Notification;

/// Something notifications can be published to.
#[async_trait]
pub trait NotificationSink: Send + Sync {
    /// Publishes `batch` in order (see the module documentation for the contract).
    async fn publish(&self, batch: &[Notification]) -> Result<(), PublishError>;

    /// Why publishing is paused, while it is (a publish now would send nothing).
    fn paused(&self) -> Option<String> {
        None
    }
}

#[async_trait]
impl<S: NotificationSink + ?Sized> NotificationSink for Arc<S> {
    async fn publish(&self, batch: &[Notification]) -> Result<(), PublishError> {
        (**self).publish(batch).await
    }

    fn paused(&self) -> Option<String> {
        (**self).paused()
    }
}

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

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

#[async_trait]
impl NotificationSink for MemorySink {
    async fn publish(&self, batch: &[Notification]) -> Result<(), PublishError> {
        let failing = self
            .failures
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
            .is_ok();
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
