//! An event store wrapper that counts what is read through it, so a test can check what a
//! projection run (or a whole HTTP request) costs in storage reads, whatever the backend.
//!
//! It forwards every call unchanged ([`StoreDecorator`]); counting is the only thing it adds.

use std::sync::atomic::{AtomicU64, Ordering};

use async_trait::async_trait;

use crate::stream::{
    EventStore, ReadRequest, RecordedEvent, StoreDecorator, StoreError, StreamId, StreamSlice,
};

/// Wraps an [`EventStore`] and counts its reads.
pub struct CountingStore<S> {
    inner: S,
    reads: AtomicU64,
    events_read: AtomicU64,
}

impl<S: EventStore> CountingStore<S> {
    pub fn new(inner: S) -> Self {
        Self {
            inner,
            reads: AtomicU64::new(0),
            events_read: AtomicU64::new(0),
        }
    }

    /// Calls to `read`, `read_known` and `read_stored` that succeeded.
    pub fn reads(&self) -> u64 {
        self.reads.load(Ordering::Relaxed)
    }

    /// Events returned by successful calls to `read`, `read_known` and `read_stored`.
    pub fn events_read(&self) -> u64 {
        self.events_read.load(Ordering::Relaxed)
    }

    /// Sets both counters back to zero.
    pub fn reset(&self) {
        self.reads.store(0, Ordering::Relaxed);
        self.events_read.store(0, Ordering::Relaxed);
    }

    fn count(&self, events: usize) {
        self.reads.fetch_add(1, Ordering::Relaxed);
        self.events_read.fetch_add(events as u64, Ordering::Relaxed);
    }

    pub fn inner(&self) -> &S {
        &self.inner
    }
}

#[async_trait]
impl<S: EventStore> StoreDecorator for CountingStore<S> {
    fn inner(&self) -> &dyn EventStore {
        &self.inner
    }

    async fn read(
        &self,
        stream: &StreamId,
        request: ReadRequest,
    ) -> Result<StreamSlice, StoreError> {
        let slice = self.inner.read(stream, request).await?;
        self.count(slice.events.len());
        Ok(slice)
    }

    async fn read_known(
        &self,
        stream: &StreamId,
        request: ReadRequest,
        version: u64,
    ) -> Result<Vec<RecordedEvent>, StoreError> {
        let events = self.inner.read_known(stream, request, version).await?;
        self.count(events.len());
        Ok(events)
    }

    async fn read_stored(
        &self,
        stream: &StreamId,
        request: ReadRequest,
    ) -> Result<Vec<RecordedEvent>, StoreError> {
        let events = self.inner.read_stored(stream, request).await?;
        self.count(events.len());
        Ok(events)
    }
}
