//! Serving: the readiness answer, request tracing with the Functions host's invocation id, the
//! one `recover`, one access-log line per request, and graceful shutdown.
//!
//! Every request runs in a `request` span (method, path, the host's invocation id), so each log
//! line of an invocation carries them; when it is answered, one line records its status and
//! duration (`warn` for a server error, `info` otherwise). warp's own request logging is turned
//! off in [`crate::telemetry`]: two lines per request, without the duration, on the hot path.
//!
//! The host polls `GET /` until it gets any answer, with a 30 s limit, so [`serve`] answers it
//! from the moment the listener is bound: no storage I/O happens before that.

use std::future::Future;

use tokio::net::TcpListener;
use warp::filters::BoxedFilter;
use warp::reply::Response;
use warp::{Filter, Reply};

use super::filters::INVOCATION_ID_HEADER;
use super::problem::recover;

/// Serves `routes` (plus `GET /` for readiness) on `listener` until `shutdown` completes; then
/// stops accepting and lets requests in flight finish.
pub async fn serve(
    listener: TcpListener,
    routes: BoxedFilter<(Response,)>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) {
    let readiness = warp::get()
        .and(warp::path::end())
        .map(|| warp::reply::json(&serde_json::json!({"status": "ready"})).into_response());
    let app = readiness
        .or(routes)
        .unify()
        .recover(recover)
        .unify()
        .with(warp::log::custom(access_log))
        .with(warp::trace(|info| {
            let invocation_id = info
                .request_headers()
                .get(INVOCATION_ID_HEADER)
                .and_then(|v| v.to_str().ok())
                .unwrap_or("")
                .to_owned();
            tracing::info_span!(
                "request",
                method = %info.method(),
                path = %info.path(),
                invocation_id = %invocation_id,
            )
        }));
    warp::serve(app)
        .incoming(listener)
        .graceful(shutdown)
        .run()
        .await;
}

/// The one line logged when a request is answered (inside its `request` span).
fn access_log(info: warp::log::Info<'_>) {
    let status = info.status().as_u16();
    let elapsed_ms = info.elapsed().as_micros() as f64 / 1000.0;
    if info.status().is_server_error() {
        tracing::warn!(status, elapsed_ms, "answered");
    } else {
        tracing::info!(status, elapsed_ms, "answered");
    }
}
