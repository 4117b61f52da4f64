//! The notification outbox contract: how a backend remembers which appended events have not
//! been published yet, so that no acknowledged event is ever left unnotified.
//!
//! A backend with its outbox enabled records "this stream has events past its notified mark"
//! atomically with every append (Table storage: a row written in the append's transaction;
//! Append Blobs: the blob's length past a per-stream "notified up to" mark). A dispatcher
//! publishes the pending events and then moves the mark with a concurrency token, so a mark
//! never skips events a concurrent append added. Publishing happens before marking: a crash in
//! between publishes again (at-least-once, never at-most-once).

use async_trait::async_trait;

use super::{StoreError, StreamId};

/// A stream with events appended past its notified mark.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PendingStream {
    pub stream: StreamId,
    /// Events `1..=notified` have been published.
    pub notified: u64,
    /// Events up to here are pending (the stream's version when the outbox was read).
    pub version: u64,
    /// Opaque concurrency token of the mark (an ETag), passed back to `mark_notified`.
    pub token: String,
}

/// A backend's outbox.
#[async_trait]
pub trait Outbox: Send + Sync + 'static {
    /// Up to `limit` streams with pending events (a sweep over the whole store).
    async fn pending(&self, limit: usize) -> Result<Vec<PendingStream>, StoreError>;

    /// The pending events of one stream, if it has any (used right after an append).
    async fn pending_for(&self, stream: &StreamId) -> Result<Option<PendingStream>, StoreError>;

    /// Records that events up to `pending.version` were published. `Ok(false)` when the mark
    /// changed since it was read (a concurrent append or dispatcher): nothing is changed and a
    /// later sweep sees the stream again.
    async fn mark_notified(&self, pending: &PendingStream) -> Result<bool, StoreError>;
}
