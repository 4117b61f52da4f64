//! The `NotificationSweep` timer function: publishes whatever the notification outbox of every
//! configured backend still holds (appends whose background publish failed, or whose process
//! died before it), so every acknowledged append is notified at least once.
//!
//! The host posts `POST /NotificationSweep` with the JSON invocation payload (the timer's
//! `TimerInfo` in `Data.timer`, which is not needed). Each backend is swept once, at most
//! `StreamfoldNotificationSweepLimit` pending streams (see [`crate::notify::dispatch`] for the
//! other bounds); what is left is taken by the next run. The answer's `Logs` and `ReturnValue`
//! give the counts. The invocation fails (500, so the host records a failed run) when a
//! backend's outbox could not be searched or a pending stream could not be published: those
//! notifications stay pending for the next run. With notifications off it does nothing.

use std::sync::Arc;

use serde_json::json;
use warp::filters::BoxedFilter;
use warp::http::StatusCode;
use warp::reply::Response;
use warp::{Filter, Reply};

use super::filters::INVOCATION_ID_HEADER;
use super::invocation::InvocationResponse;
use super::problem::{json_response, Problem};
use crate::app::App;
use crate::notify::dispatch::sweep_all;

/// The timer-triggered function (its folder name, and the path the host posts to).
pub const SWEEP_FUNCTION: &str = "NotificationSweep";

/// `POST /NotificationSweep`.
pub fn routes(app: Arc<App>) -> BoxedFilter<(Response,)> {
    let with_app = warp::any().map(move || app.clone());
    warp::post()
        .and(warp::path(SWEEP_FUNCTION))
        .and(warp::path::end())
        .and(
            warp::header::optional::<String>(INVOCATION_ID_HEADER)
                .map(|id: Option<String>| id.unwrap_or_default()),
        )
        .and(with_app)
        .then(sweep_handler)
        .boxed()
}

async fn sweep_handler(invocation_id: String, app: Arc<App>) -> Response {
    let mut response = InvocationResponse::default();
    let dispatchers = app.dispatchers();
    if dispatchers.is_empty() {
        response.log("notifications are off: nothing to sweep");
        return json_response(StatusCode::OK, &response);
    }
    let limit = app.settings().notification_sweep_limit;
    let (report, errors) = sweep_all(dispatchers, limit).await;
    response.log(format!(
        "{} pending stream(s) found, {} dispatched, {} notification(s) published, {} failed, \
         {} left for the next run",
        report.pending, report.dispatched, report.published, report.failed, report.skipped
    ));
    for (backend, error) in &errors {
        tracing::error!(%invocation_id, %backend, %error, "notification sweep failed");
        response.log(format!("backend {backend}: {error}"));
    }
    response.return_value = json!(report);
    if errors.is_empty() && report.failed == 0 {
        return json_response(StatusCode::OK, &response);
    }
    tracing::error!(
        %invocation_id,
        failed = report.failed,
        backends_failed = errors.len(),
        "notifications remain pending after the sweep"
    );
    Problem::new(
        StatusCode::INTERNAL_SERVER_ERROR,
        "notification-sweep-failed",
        format!(
            "{} stream(s) could not be published and {} backend(s) could not be searched; \
             their notifications stay pending for the next run",
            report.failed,
            errors.len()
        ),
    )
    .with("published", report.published)
    .with("failed", report.failed)
    .into_response()
}
