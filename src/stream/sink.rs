//! Where published notifications go, as a trait: the outbox drains into a
//! [`NotificationSink`] and does not care whether it is Event Grid (`crate::notify::Publisher`) or a
//! test's memory sink (`streamfold::testing::MemorySink`, feature `testing`).
//!
//! Contract of `publish`: either every notification of the slice was accepted (`Ok`), or the
//! error says how many from the front were ([`PublishError::published`]); accepting one twice is
//! allowed (receivers deduplicate by id), losing one is not. An error that refuses some
//! notifications for good says which ([`PublishError::refused`]); one that stops publishing for
//! now says so ([`PublishError::stops_publishing`]), and [`NotificationSink::paused`] tells,
//! before anything is read to publish, that such a stop is under way.

use std::sync::Arc;

use super::notification::Notification;
use super::publish_error::PublishError;
use async_trait::async_trait;

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
