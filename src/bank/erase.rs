//! `POST /api/DeleteAccount/{accountnumber}` (the seed's route): erases the account's stream
//! and everything derived from it (its read-model row, snapshots, cached states) through the
//! library's erasure (`streamfold::erasure`), raising `Bank.Account.DeletedEntity` when
//! `RaiseEntityDeletionNotification` is on.
//!
//! 200 with what was erased; 404 `account-not-found` for an account that was never opened.
//! Repeating it for an erased account finishes an interrupted erasure and answers 200 again
//! (`resumed: true`). Afterwards commands on the account are 410 `stream-erased` (the number
//! can never be opened again) and queries are 404 `account-not-found`.

use std::sync::Arc;

use streamfold::app::App;
use streamfold::erasure::{erase_stream, ErasureError};
use streamfold::functions::filters;
use streamfold::functions::problem::{json_response, reject, Problem};
use streamfold::stream::{StoreError, StreamId};
use warp::filters::BoxedFilter;
use warp::http::StatusCode;
use warp::reply::Response;
use warp::{Filter, Rejection};

use super::{DOMAIN, ENTITY};

/// The function's name and route (as in its function.json).
pub const FUNCTION: &str = "DeleteAccount";
pub const ROUTE: &str = "DeleteAccount/{accountnumber}";

/// The route of this module.
pub fn routes(app: Arc<App>) -> BoxedFilter<(Response,)> {
    let with_app = warp::any().map(move || app.clone());
    warp::post()
        .and(warp::path("api"))
        .and(warp::path(FUNCTION))
        .and(filters::decoded_segment())
        .and(warp::path::end())
        .and(with_app)
        .and_then(delete_account)
        .boxed()
}

async fn delete_account(account: String, app: Arc<App>) -> Result<Response, Rejection> {
    let stream = StreamId::new(DOMAIN, ENTITY, &account)
        .map_err(|e| reject(Problem::from(StoreError::from(e))))?;
    match erase_stream(&app, &stream).await {
        Ok(report) => Ok(json_response(StatusCode::OK, &report)),
        Err(ErasureError::NotFound(_)) => Err(reject(
            Problem::not_found(
                "account-not-found",
                format!("account {account} does not exist"),
            )
            .with("accountNumber", account),
        )),
        Err(error) => Err(reject(error)),
    }
}
