//! `GET /api/notifications/recent?after=N` (function `RecentNotifications`): the notifications
//! this process received lately ([`crate::notify::recent`]), after position `after`, for a page
//! that shows them as they arrive by asking again every few seconds. A cheap read of memory:
//! no storage is touched, so polling it costs nothing but the request.

use std::sync::Arc;

use warp::filters::BoxedFilter;
use warp::http::StatusCode;
use warp::reply::Response;
use warp::{Filter, Rejection};

use super::filters::{self, only_known_params, u64_param};
use super::problem::{json_response, reject};
use crate::app::App;

/// The function's name (its folder under `functions/`).
pub const RECENT_FUNCTION: &str = "RecentNotifications";
/// Its route (under `/api`).
pub const RECENT_ROUTE: &str = "notifications/recent";

/// `GET /api/notifications/recent`.
pub fn routes(app: Arc<App>) -> BoxedFilter<(Response,)> {
    let with_app = warp::any().map(move || app.clone());
    warp::get()
        .and(warp::path!("api" / "notifications" / "recent"))
        .and(filters::query_pairs())
        .and(with_app)
        .and_then(recent_handler)
        .boxed()
}

async fn recent_handler(
    query: Vec<(String, String)>,
    app: Arc<App>,
) -> Result<Response, Rejection> {
    only_known_params(&query, &["after"]).map_err(reject)?;
    let after = u64_param(&query, "after").map_err(reject)?.unwrap_or(0);
    Ok(json_response(
        StatusCode::OK,
        &app.recent_notifications().after(after),
    ))
}
