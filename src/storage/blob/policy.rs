//! A pipeline policy that hands back the raw response headers of one request.
//!
//! Why: the typed `append_block` response of `azure_storage_blobs` 0.21 drops the ETag, the
//! append offset and the committed block count, and the typed `get_blob` response drops the
//! total length from `Content-Range`. The store needs all four to know where a segment ends
//! without reading it again.
//!
//! How: a request that wants its headers carries a [`Captured`] slot in its `Context`; the
//! [`CapturePolicy`] (a per-retry policy, right before the transport) writes the status and
//! headers of every attempt into that slot, so after the call the slot holds the *last*
//! attempt's response, also when that response was an error status (which the crate turns into
//! an error without its headers). Requests without a slot are not touched. Slots are per
//! request, so concurrent requests never see each other's headers.

use std::sync::{Arc, Mutex, MutexGuard};

use async_trait::async_trait;

use crate::storage::connection::{self, send_next};
use azure_core::headers::{HeaderName, Headers};
use azure_core::{Context, Policy, PolicyResult, Request, StatusCode};

/// The blob's ETag after the request.
pub const ETAG: HeaderName = HeaderName::from_static("etag");
/// Where the appended block starts.
pub const APPEND_OFFSET: HeaderName = HeaderName::from_static("x-ms-blob-append-offset");
/// Blocks committed to the append blob after the request.
pub const COMMITTED_BLOCK_COUNT: HeaderName =
    HeaderName::from_static("x-ms-blob-committed-block-count");
/// `bytes a-b/total` (or `bytes */total` on 416).
pub const CONTENT_RANGE: HeaderName = HeaderName::from_static("content-range");

/// The status and headers of the last attempt of one request.
#[derive(Debug, Clone, Default)]
pub struct Captured(Arc<Mutex<Option<(StatusCode, Headers)>>>);

impl Captured {
    pub fn new() -> Self {
        Self::default()
    }

    /// `context` with this slot added.
    pub fn in_context(&self, mut context: Context) -> Context {
        context.insert(self.clone());
        context
    }

    fn slot(&self) -> MutexGuard<'_, Option<(StatusCode, Headers)>> {
        // The slot only ever holds a finished value; a panic elsewhere cannot tear it.
        self.0
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn set(&self, value: Option<(StatusCode, Headers)>) {
        *self.slot() = value;
    }

    fn header(&self, name: &HeaderName) -> Option<String> {
        self.slot()
            .as_ref()
            .and_then(|(_, headers)| connection::header_value(headers, name).map(str::to_owned))
    }

    fn number(&self, name: &HeaderName) -> Option<u64> {
        self.header(name).and_then(|v| v.trim().parse().ok())
    }

    pub fn etag(&self) -> Option<String> {
        self.header(&ETAG)
    }

    pub fn append_offset(&self) -> Option<u64> {
        self.number(&APPEND_OFFSET)
    }

    pub fn committed_block_count(&self) -> Option<u64> {
        self.number(&COMMITTED_BLOCK_COUNT)
    }

    /// The blob's total length from `Content-Range: bytes a-b/total` (or `bytes */total`).
    pub fn total_length(&self) -> Option<u64> {
        self.header(&CONTENT_RANGE).and_then(|range| {
            range
                .rsplit_once('/')
                .and_then(|(_, t)| t.trim().parse().ok())
        })
    }

    /// The first byte of a ranged response, from `Content-Range: bytes a-b/total`.
    pub fn range_start(&self) -> Option<u64> {
        self.header(&CONTENT_RANGE).and_then(|range| {
            let spec = range.trim().strip_prefix("bytes")?.trim();
            spec.split_once('-')
                .and_then(|(a, _)| a.trim().parse().ok())
        })
    }
}

/// Writes each attempt's status and headers into the request's [`Captured`] slot, if any.
#[derive(Debug, Default)]
pub struct CapturePolicy;

#[async_trait]
impl Policy for CapturePolicy {
    async fn send(
        &self,
        ctx: &Context,
        request: &mut Request,
        next: &[Arc<dyn Policy>],
    ) -> PolicyResult {
        let result = send_next(ctx, request, next, "header capture").await;
        if let Some(captured) = ctx.get::<Captured>() {
            captured.set(
                result
                    .as_ref()
                    .ok()
                    .map(|response| (response.status(), response.headers().clone())),
            );
        }
        result
    }
}
