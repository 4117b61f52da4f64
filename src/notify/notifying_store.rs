//! The event store decorator that notifies: after every append that wrote events (not an
//! idempotent retry) it starts a background dispatch of that stream
//! ([`Dispatcher::trigger`]) and answers at once. Everything else is the wrapped store's.

use std::sync::Arc;

use async_trait::async_trait;

use super::dispatch::Dispatcher;
use crate::stream::{
    AppendOutcome, EntityType, EventStore, ExpectedVersion, NewEvent, ReadRequest, RecordedEvent,
    StoreError, StreamId, StreamPage, StreamSlice,
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

    async fn read_stored(
        &self,
        stream: &StreamId,
        request: ReadRequest,
    ) -> Result<Vec<RecordedEvent>, StoreError> {
        self.inner.read_stored(stream, request).await
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
