//! Where published notifications go, as a trait: the outbox drains into a
//! [`NotificationSink`] and does not care whether it is Event Grid ([`super::Publisher`]) or a
//! test's [`MemorySink`].
//!
//! Contract of `publish`: either every notification of the slice was accepted (`Ok`), or the
//! error says how many from the front were ([`PublishError::published`]); accepting one twice is
//! allowed (receivers deduplicate by id), losing one is not.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use async_trait::async_trait;

use super::notification::Notification;
use super::publisher::PublishError;

/// Something notifications can be published to.
#[async_trait]
pub trait NotificationSink: Send + Sync {
    /// Publishes `batch` in order (see the module documentation for the contract).
    async fn publish(&self, batch: &[Notification]) -> Result<(), PublishError>;
}

#[async_trait]
impl<S: NotificationSink + ?Sized> NotificationSink for Arc<S> {
    async fn publish(&self, batch: &[Notification]) -> Result<(), PublishError> {
        (**self).publish(batch).await
    }
}

/// The endpoint name a [`MemorySink`] reports in its errors.
pub const MEMORY_SINK_ENDPOINT: &str = "memory";

/// Keeps what is published, in order; can be told to fail (for tests of the callers).
#[derive(Debug, Default)]
pub struct MemorySink {
    published: Mutex<Vec<Notification>>,
    failures: AtomicUsize,
}

impl MemorySink {
    pub fn new() -> Self {
        Self::default()
    }

    /// Everything accepted so far, in order.
    pub fn published(&self) -> Vec<Notification> {
        self.published
            .lock()
            .map(|p| p.clone())
            .unwrap_or_else(|poisoned| poisoned.into_inner().clone())
    }

    /// Makes the next `count` calls of `publish` fail with [`PublishError::Unavailable`],
    /// accepting nothing.
    pub fn fail_next(&self, count: usize) {
        self.failures.store(count, Ordering::SeqCst);
    }
}

#[async_trait]
impl NotificationSink for MemorySink {
    async fn publish(&self, batch: &[Notification]) -> Result<(), PublishError> {
        let failing = self
            .failures
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
            .is_ok();
        if failing {
            return Err(PublishError::Unavailable {
                attempts: 1,
                last: "injected failure".into(),
                endpoint: MEMORY_SINK_ENDPOINT.into(),
                batch: 0..batch.len(),
            });
        }
        let mut published = self
            .published
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        published.extend_from_slice(batch);
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
