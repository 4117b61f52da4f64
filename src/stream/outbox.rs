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

/// An outbox entry a sweep could not read (a row or marker that is not what the backend
/// writes): reported and skipped, so it cannot stop the sweep of every other stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnreadableEntry {
    /// Where it is (a row's keys, a blob's name).
    pub key: String,
    /// What is wrong with it.
    pub detail: String,
}

/// What one search of the outbox found.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PendingScan {
    /// Pending streams, in the order a sweep should take them.
    pub streams: Vec<PendingStream>,
    /// Entries met on the way that could not be read.
    pub unreadable: Vec<UnreadableEntry>,
}

/// A backend's outbox.
#[async_trait]
pub trait Outbox: Send + Sync + 'static {
    /// Up to `limit` streams with pending events (a sweep over the whole store), in the
    /// backend's own order of streams **rotated to start after `after`**: the streams past it
    /// first, then from the beginning up to it (included). A sweep that passes the last stream
    /// it took the previous time therefore reaches every pending stream over its runs, however
    /// many streams sort before the others and keep failing. Unreadable entries are reported
    /// in the scan, never an error of the whole search.
    async fn pending(
        &self,
        after: Option<&StreamId>,
        limit: usize,
    ) -> Result<PendingScan, StoreError>;

    /// The pending events of one stream, if it has any (used right after an append).
    async fn pending_for(&self, stream: &StreamId) -> Result<Option<PendingStream>, StoreError>;

    /// Records that events up to `pending.version` were published. `Ok(false)` when the mark
    /// changed since it was read (a concurrent append or dispatcher): nothing is changed and a
    /// later sweep sees the stream again.
    async fn mark_notified(&self, pending: &PendingStream) -> Result<bool, StoreError>;
}
