//! The event store decorator that notifies: after every append that wrote events (not an
//! idempotent retry) it starts a background dispatch of that stream
//! ([`Dispatcher::trigger`]) and answers at once. Everything else is the wrapped store's.

use std::sync::Arc;

use async_trait::async_trait;

use super::dispatch::Dispatcher;
use crate::stream::{
    AppendOutcome, EventStore, ExpectedVersion, NewEvent, StoreDecorator, StoreError, StreamId,
};

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
impl StoreDecorator for NotifyingStore {
    fn inner(&self) -> &dyn EventStore {
        self.inner.as_ref()
    }

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
}
