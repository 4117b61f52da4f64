//! The handler layer: the Azure Functions custom-handler protocol over HTTP, served by warp.
//!
//! This is the only part of the library that knows an HTTP framework. It provides the filters
//! every function shares (bounded JSON bodies, decoded path keys, correlation ids), the
//! generic event-stream API, the JSON invocation payload of non-HTTP triggers, and [`serve`],
//! which adds request tracing with the host's invocation id and the one [`problem::recover`].

pub mod filters;
pub mod invocation;
pub mod openapi;
pub mod problem;
pub mod projections;
pub mod server;
pub mod streams;
pub mod sweep;
pub mod webhook;

pub use problem::{Problem, PROBLEM_CONTENT_TYPE};
pub use server::serve;

/// Largest request body accepted (an append of events is bounded by storage limits well below).
pub const MAX_BODY_BYTES: u64 = 5 * 1024 * 1024;

/// Largest oversized body read to its end (and dropped) before the 413 is sent. Answering
/// while the sender is still writing makes the connection close with unread data, which resets
/// it: the Functions host then sees a broken connection instead of our 413 and answers 500.
/// Draining avoids that; the bound is the host's own default request limit
/// (`FUNCTIONS_REQUEST_BODY_SIZE_LIMIT`, 100 MiB), so anything the host forwards is drained,
/// over loopback. Beyond it the connection is simply closed.
pub const MAX_DRAINED_BODY_BYTES: u64 = 100 * 1024 * 1024;

/// Every generic function of the library (the event-stream and projection API, the Event Grid
/// entry points of the read-model projector, the notification sweep).
pub fn routes(
    app: std::sync::Arc<crate::app::App>,
) -> warp::filters::BoxedFilter<(warp::reply::Response,)> {
    use warp::Filter;
    streams::routes(app.clone())
        .or(projections::routes(app.clone()))
        .unify()
        .or(webhook::routes(app.clone()))
        .unify()
        .or(sweep::routes(app))
        .unify()
        .or(openapi::routes())
        .unify()
        .boxed()
}
