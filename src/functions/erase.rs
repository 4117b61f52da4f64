//! Erasing a stream over HTTP: `DELETE /api/streams/{domain}/{entity}/{instance}` (function
//! `DeleteStream`, authLevel `admin`), for any stream, domain-owned or not.
//!
//! Answers 200 with what was done (`crate::erasure::ErasureReport`: the erased version,
//! whether an earlier erasure was finished, the read models cleared, whether `DeletedEntity`
//! was published); 404 `stream-not-found` for a stream that was never written (nothing is
//! written). Asking again for an erased stream finishes anything an interrupted erasure left
//! and answers 200 with `resumed: true`, so a client retries a failed DELETE as it is.
//! Afterwards a writer gets 410 `stream-erased`; a reader gets what a stream that never
//! existed gives (404 on reads of one stream, absent from listings).

use std::sync::Arc;

use warp::filters::BoxedFilter;
use warp::http::StatusCode;
use warp::reply::Response;
use warp::{Filter, Rejection};

use super::filters::{self, only_known_params, StreamSegments};
use super::problem::{json_response, reject};
use crate::app::App;
use crate::erasure::erase_stream;

/// The function's name (its folder under `functions/`).
pub const DELETE_STREAM_FUNCTION: &str = "DeleteStream";
/// Its route (the same path as `ReadStream` and `AppendEvents`, method DELETE).
pub const DELETE_STREAM_ROUTE: &str = "streams/{domain}/{entity}/{instance}";

/// The routes of this module.
pub fn routes(app: Arc<App>) -> BoxedFilter<(Response,)> {
    let with_app = warp::any().map(move || app.clone());
    warp::delete()
        .and(warp::path!("api" / "streams" / ..))
        .and(filters::stream_segments())
        .and(warp::path::end())
        .and(filters::query_pairs())
        .and(with_app)
        .and_then(delete_handler)
        .boxed()
}

async fn delete_handler(
    segments: StreamSegments,
    query: Vec<(String, String)>,
    app: Arc<App>,
) -> Result<Response, Rejection> {
    only_known_params(&query, &[]).map_err(reject)?;
    let stream = segments.stream_id().map_err(reject)?;
    let report = erase_stream(&app, &stream).await.map_err(reject)?;
    Ok(json_response(StatusCode::OK, &report))
}
