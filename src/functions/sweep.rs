//! The `NotificationSweep` timer function, and the two admin functions over the dead letters
//! of notifications.
//!
//! `NotificationSweep` publishes whatever the notification outbox of every configured backend
//! still holds (appends whose background publish failed, or whose process died before it), so
//! every acknowledged append is notified at least once. The host posts `POST
//! /NotificationSweep` with the JSON invocation payload (the timer's `TimerInfo` in
//! `Data.timer`, which is not needed). Each backend is swept once, at most
//! `StreamfoldNotificationSweepLimit` pending streams, starting after the last stream the
//! previous run took (see [`crate::notify::dispatch`] for the other bounds); what is left is
//! taken by the next run. The answer's `Logs` and `ReturnValue` give the counts, dead-lettered
//! notifications, busy streams and unreadable outbox entries included. The invocation fails
//! (500, so the host records a failed run) when a backend's outbox could not be searched, a
//! pending stream could not be published, or publishing is paused (the topic refused the key):
//! those notifications stay pending for the next run. A notification the topic refused for good
//! (dead-lettered), a stream that moved on while it was swept, and an unreadable outbox entry
//! are reported, not failures. With notifications off it does nothing.
//!
//! The admin functions (`authLevel: admin`; routes under `notifications/`, since the Functions
//! host reserves every route that starts with `admin`):
//! - `DeadLetters`, `GET /api/notifications/deadletters?pageSize=&continuation=`: the dead
//!   letters of every backend, in backend then id order, paged;
//! - `RedriveDeadLetters`, `POST /api/notifications/deadletters/redrive` with an optional body
//!   `{"ids": [...]}`: publishes those dead letters again (all of them, up to
//!   [`MAX_REDRIVE_PER_BACKEND`] per backend and call, without `ids`); the ones the topic
//!   accepts are forgotten, the ones it refuses again are kept with the new reason. 503
//!   `notifications-unavailable` when the topic could not be reached (or refuses the key): what
//!   was not attempted stays.

use std::sync::Arc;

use bytes::Bytes;
use serde::Deserialize;
use serde_json::{json, Value};
use uuid::Uuid;
use warp::filters::BoxedFilter;
use warp::http::StatusCode;
use warp::reply::Response;
use warp::{Filter, Rejection, Reply};

use super::filters::{self, only_known_params, u64_param};
use super::invocation::InvocationResponse;
use super::problem::{json_response, parse_json, reject, Problem};
use crate::app::App;
use crate::notify::dispatch::{sweep_all, RedriveReport};

/// The timer-triggered function (its folder name, and the path the host posts to).
pub const SWEEP_FUNCTION: &str = "NotificationSweep";
/// The function listing dead letters.
pub const DEAD_LETTERS_FUNCTION: &str = "DeadLetters";
/// Its route (under the `api` prefix).
pub const DEAD_LETTERS_ROUTE: &str = "notifications/deadletters";
/// The function re-driving dead letters.
pub const REDRIVE_FUNCTION: &str = "RedriveDeadLetters";
/// Its route (under the `api` prefix).
pub const REDRIVE_ROUTE: &str = "notifications/deadletters/redrive";
/// Dead letters per page unless `pageSize` says otherwise.
pub const DEFAULT_DEAD_LETTER_PAGE: usize = 100;
/// Largest `pageSize`, and most ids in one re-drive.
pub const MAX_DEAD_LETTER_PAGE: usize = 1_000;
/// Most dead letters one re-drive without ids publishes per backend.
pub const MAX_REDRIVE_PER_BACKEND: usize = 1_000;
/// Separates the backend's position from the last id in a listing continuation.
const CONTINUATION_SEPARATOR: char = '.';

/// `POST /NotificationSweep`, `GET /api/notifications/deadletters` and
/// `POST /api/notifications/deadletters/redrive`.
pub fn routes(app: Arc<App>) -> BoxedFilter<(Response,)> {
    let with_app = warp::any().map(move || app.clone());
    let sweep = warp::post()
        .and(warp::path(SWEEP_FUNCTION))
        .and(warp::path::end())
        .and(filters::invocation_id())
        .and(with_app.clone())
        .then(sweep_handler);
    let list = warp::get()
        .and(warp::path!("api" / "notifications" / "deadletters"))
        .and(filters::query_pairs())
        .and(with_app.clone())
        .and_then(list_handler);
    let redrive = warp::post()
        .and(warp::path!(
            "api" / "notifications" / "deadletters" / "redrive"
        ))
        .and(filters::query_pairs())
        .and(filters::body())
        .and(with_app)
        .and_then(redrive_handler);
    sweep.or(list).unify().or(redrive).unify().boxed()
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
        "{} pending stream(s) found, {} dispatched, {} notification(s) published, {} \
         dead-lettered, {} busy (moved on while swept), {} unreadable outbox entr(ies) skipped, \
         {} failed, {} left for the next run",
        report.pending,
        report.dispatched,
        report.published,
        report.dead_lettered,
        report.busy,
        report.unreadable,
        report.failed,
        report.skipped
    ));
    if report.dead_lettered > 0 {
        tracing::warn!(%invocation_id, dead_lettered = report.dead_lettered,
            "notifications refused for good by the topic were dead-lettered");
    }
    if report.unreadable > 0 {
        tracing::warn!(%invocation_id, unreadable = report.unreadable,
            "unreadable notification outbox entries were skipped");
    }
    if let Some(reason) = &report.paused {
        response.log(format!("publishing is paused: {reason}"));
    }
    for (backend, error) in &errors {
        tracing::error!(%invocation_id, %backend, %error, "notification sweep failed");
        response.log(format!("backend {backend}: {error}"));
    }
    response.return_value = json!(report);
    if errors.is_empty() && report.failed == 0 && report.paused.is_none() {
        return json_response(StatusCode::OK, &response);
    }
    tracing::error!(
        %invocation_id,
        failed = report.failed,
        paused = report.paused.is_some(),
        backends_failed = errors.len(),
        "notifications remain pending after the sweep"
    );
    let detail = match &report.paused {
        Some(reason) => format!("{reason}; notifications stay pending until it accepts the key"),
        None => format!(
            "{} stream(s) could not be published and {} backend(s) could not be searched; \
             their notifications stay pending for the next run",
            report.failed,
            errors.len()
        ),
    };
    Problem::new(
        StatusCode::INTERNAL_SERVER_ERROR,
        "notification-sweep-failed",
        detail,
    )
    .with("published", report.published)
    .with("deadLettered", report.dead_lettered)
    .with("failed", report.failed)
    .into_response()
}

/// A listing continuation: the backend's position among the app's dispatchers and the last id
/// of the page before. Anything else is 400 `invalid-continuation`.
fn parse_continuation(text: &str, backends: usize) -> Result<(usize, Uuid), Problem> {
    let invalid = || {
        Problem::bad_request(
            "invalid-continuation",
            format!("{text:?} is not a continuation this listing returned"),
        )
        .with("parameter", "continuation")
    };
    let (index, id) = text
        .split_once(CONTINUATION_SEPARATOR)
        .ok_or_else(invalid)?;
    let index = filters::parse_whole_number(index)
        .and_then(|i| usize::try_from(i).ok())
        .filter(|i| *i < backends)
        .ok_or_else(invalid)?;
    let id = Uuid::parse_str(id).map_err(|_| invalid())?;
    Ok((index, id))
}

async fn list_handler(query: Vec<(String, String)>, app: Arc<App>) -> Result<Response, Rejection> {
    only_known_params(&query, &["continuation", "pageSize"]).map_err(reject)?;
    let page_size = u64_param(&query, "pageSize")
        .map_err(reject)?
        .map_or(Some(DEFAULT_DEAD_LETTER_PAGE), |n| usize::try_from(n).ok())
        .filter(|n| (1..=MAX_DEAD_LETTER_PAGE).contains(n))
        .ok_or_else(|| {
            reject(
                Problem::bad_request(
                    "invalid-page-size",
                    format!("pageSize must be between 1 and {MAX_DEAD_LETTER_PAGE}"),
                )
                .with("parameter", "pageSize"),
            )
        })?;
    let dispatchers = app.dispatchers();
    let start = match filters::query_param(&query, "continuation").filter(|c| !c.is_empty()) {
        Some(text) => {
            let (index, id) = parse_continuation(text, dispatchers.len()).map_err(reject)?;
            Some((index, id))
        }
        None => None,
    };
    let first = start.map_or(0, |(index, _)| index);
    let mut letters: Vec<Value> = Vec::new();
    let mut unreadable = 0;
    let mut continuation = None;
    for (index, dispatcher) in dispatchers.iter().enumerate().skip(first) {
        let left = page_size.saturating_sub(letters.len());
        if left == 0 {
            // The page is full at a backend boundary: the next one starts here.
            continuation = Some(format!("{index}{CONTINUATION_SEPARATOR}{}", Uuid::nil()));
            break;
        }
        let after = start.filter(|(i, _)| *i == index).map(|(_, id)| id);
        let page = dispatcher
            .dead_letters(after, left)
            .await
            .map_err(|e| reject(dispatch_problem(e)))?;
        unreadable += page.unreadable.len();
        for letter in page.letters {
            let mut value = json!(letter);
            if let Value::Object(map) = &mut value {
                map.insert("backend".into(), Value::from(dispatcher.name()));
            }
            letters.push(value);
        }
        if let Some(next) = page.next {
            continuation = Some(format!("{index}{CONTINUATION_SEPARATOR}{next}"));
            break;
        }
    }
    Ok(json_response(
        StatusCode::OK,
        &json!({
            "deadLetters": letters,
            "count": letters.len(),
            "unreadable": unreadable,
            "continuation": continuation,
        }),
    ))
}

/// Body of a re-drive.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RedriveBody {
    #[serde(default)]
    ids: Option<Vec<Uuid>>,
}

async fn redrive_handler(
    query: Vec<(String, String)>,
    body: Bytes,
    app: Arc<App>,
) -> Result<Response, Rejection> {
    only_known_params(&query, &[]).map_err(reject)?;
    let body: RedriveBody = parse_json(&body).map_err(reject)?;
    if let Some(ids) = &body.ids {
        if ids.is_empty() || ids.len() > MAX_DEAD_LETTER_PAGE {
            return Err(reject(
                Problem::bad_request(
                    "invalid-body",
                    format!("ids must list 1 to {MAX_DEAD_LETTER_PAGE} notification ids"),
                )
                .with("field", "ids"),
            ));
        }
    }
    let mut total = RedriveReport::default();
    let mut found: Vec<Uuid> = Vec::new();
    for dispatcher in app.dispatchers() {
        if total.stopped.is_some() {
            break;
        }
        let (report, here) = dispatcher
            .redrive(body.ids.as_deref(), MAX_REDRIVE_PER_BACKEND)
            .await
            .map_err(|e| reject(dispatch_problem(e)))?;
        total.add(&report);
        found.extend(here);
    }
    let not_found: Vec<Uuid> = body
        .ids
        .iter()
        .flatten()
        .filter(|id| !found.contains(id))
        .copied()
        .collect();
    if let Some(reason) = &total.stopped {
        return Ok(Problem::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "notifications-unavailable",
            format!("re-driving stopped: {reason}; the dead letters not re-driven are kept"),
        )
        .with("redriven", total.redriven)
        .with("refused", total.refused)
        .with("remaining", total.remaining)
        .into_response());
    }
    let mut answer = json!(total);
    if let Value::Object(map) = &mut answer {
        map.insert("notFound".into(), json!(not_found));
    }
    Ok(json_response(StatusCode::OK, &answer))
}

/// The problem of a failed dead-letter operation: the store's, or 503 when the topic stopped.
fn dispatch_problem(error: crate::notify::dispatch::DispatchError) -> Problem {
    use crate::notify::dispatch::DispatchError;
    match error {
        DispatchError::Store { source, .. }
        | DispatchError::Pending(source)
        | DispatchError::DeadLetters(source) => Problem::from(source),
        error @ DispatchError::Publish { .. } => Problem::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "notifications-unavailable",
            error.to_string(),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn continuations_are_checked() {
        let id = Uuid::new_v4();
        assert_eq!(parse_continuation(&format!("1.{id}"), 2).unwrap(), (1, id));
        for bad in [
            format!("2.{id}"),
            format!("x.{id}"),
            format!("-1.{id}"),
            "1.nope".to_owned(),
            id.to_string(),
            String::new(),
        ] {
            let problem = parse_continuation(&bad, 2).unwrap_err();
            assert_eq!(problem.status(), StatusCode::BAD_REQUEST, "{bad}");
        }
    }
}
