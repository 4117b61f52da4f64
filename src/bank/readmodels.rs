//! The bank's read models, kept up to date by the `Projector` from Event Grid notifications
//! (see `streamfold::readmodel`), and the functions that serve them:
//!
//! - `GET /api/Accounts[?inOverdraft=true|false]` (function folder `Accounts`): every account
//!   row, or only the accounts in (or not in) overdraft, from the read-model table — no event
//!   stream is read;
//! - `POST /api/RebuildReadModels` (function folder `RebuildReadModels`): recomputes every row
//!   from the streams and answers with counts.
//!
//! The read model is the account projection itself ([`AccountProjection`], `account`): one row
//! per account with its status, balance and overdraft limit, and the sequence number it is as
//! of. So a row is exactly what `GetBalance` (or `RunProjection .../account`) returns as of
//! that sequence.
//!
//! The accounts-in-overdraft group is derived from each row's balance (`balance < 0`) rather
//! than kept as a second read model of the `in-overdraft` classification: membership there
//! changes only on money movements, to "balance < 0 after it", and the balance changes only on
//! money movements, so both always agree — and deriving it from the same row means an
//! account's balance and its group membership can never be at different sequences.

use std::sync::Arc;

use serde::Serialize;
use streamfold::app::App;
use streamfold::functions::filters::{self, only_known_params, query_param};
use streamfold::functions::problem::{json_response, reject, Problem};
use streamfold::projection::{Projection, RegistryError};
use streamfold::readmodel::{projector_for, rebuild, ReadModelError};
use warp::filters::BoxedFilter;
use warp::http::StatusCode;
use warp::reply::Response;
use warp::{Filter, Rejection};

use super::account::{Account, AccountProjection, Status, ACCOUNT_PROJECTION};
use super::money::format_money;
use super::{DOMAIN, ENTITY};

/// The query parameter that filters `Accounts` by overdraft.
pub const IN_OVERDRAFT_PARAMETER: &str = "inOverdraft";

/// Registers the bank's read models.
pub fn register(app: &mut App) -> Result<(), RegistryError> {
    app.read_models_mut()
        .register(DOMAIN, ENTITY, AccountProjection)?;
    Ok(())
}

/// `GET /api/Accounts` and `POST /api/RebuildReadModels`.
pub fn routes(app: Arc<App>) -> BoxedFilter<(Response,)> {
    let with_app = warp::any().map(move || app.clone());
    let accounts = warp::get()
        .and(warp::path!("api" / "Accounts"))
        .and(filters::query_pairs())
        .and(with_app.clone())
        .and_then(accounts_handler);
    let rebuild = warp::post()
        .and(warp::path!("api" / "RebuildReadModels"))
        .and(filters::body())
        .and(with_app)
        .and_then(|_body: bytes::Bytes, app: Arc<App>| rebuild_handler(app));
    accounts.or(rebuild).unify().boxed()
}

/// One account row as clients see it.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct AccountRow {
    account_number: String,
    status: Status,
    balance: String,
    overdraft_limit: String,
    available: String,
    in_overdraft: bool,
    /// The sequence number of the last event the row includes.
    sequence: u64,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct AccountsBody {
    count: usize,
    accounts: Vec<AccountRow>,
}

fn in_overdraft_filter(query: &[(String, String)]) -> Result<Option<bool>, Problem> {
    only_known_params(query, &[IN_OVERDRAFT_PARAMETER])?;
    match query_param(query, IN_OVERDRAFT_PARAMETER).map(str::trim) {
        None => Ok(None),
        Some(v) if v.eq_ignore_ascii_case("true") => Ok(Some(true)),
        Some(v) if v.eq_ignore_ascii_case("false") => Ok(Some(false)),
        Some(v) => Err(Problem::bad_request(
            "invalid-query-parameter",
            format!("{IN_OVERDRAFT_PARAMETER} must be true or false, not {v:?}"),
        )
        .with("parameter", IN_OVERDRAFT_PARAMETER)),
    }
}

async fn accounts_handler(
    query: Vec<(String, String)>,
    app: Arc<App>,
) -> Result<Response, Rejection> {
    let filter = in_overdraft_filter(&query).map_err(reject)?;
    let store = app.read_model_store().map_err(reject)?;
    let rows = store
        .list(ACCOUNT_PROJECTION, DOMAIN, ENTITY)
        .await
        .map_err(|e| reject(Problem::from(e)))?;
    let version = Projection::version(&AccountProjection);
    let mut accounts = Vec::with_capacity(rows.len());
    for row in rows {
        let decoded = (row.checkpoint.projection_version == version)
            .then(|| serde_json::from_str::<Account>(row.checkpoint.state.get()).ok())
            .flatten();
        let Some(account) = decoded else {
            // Written by another projection version: recomputed by the next notification
            // or rebuild; until then it is not shown rather than shown wrong.
            tracing::warn!(
                account = row.instance,
                row_version = row.checkpoint.projection_version,
                "account row is not readable by this version; left out"
            );
            continue;
        };
        if filter.is_some_and(|wanted| account.in_overdraft() != wanted) {
            continue;
        }
        accounts.push(AccountRow {
            account_number: row.instance,
            status: account.status,
            balance: format_money(account.balance),
            overdraft_limit: format_money(account.overdraft_limit),
            available: format_money(account.available()),
            in_overdraft: account.in_overdraft(),
            sequence: row.checkpoint.sequence,
        });
    }
    Ok(json_response(
        StatusCode::OK,
        &AccountsBody {
            count: accounts.len(),
            accounts,
        },
    ))
}

async fn rebuild_handler(app: Arc<App>) -> Result<Response, Rejection> {
    let projector = projector_for(&app, DOMAIN, ENTITY)
        .map_err(|e: ReadModelError| reject(Problem::from(e)))?;
    let report = rebuild(&projector, DOMAIN, ENTITY)
        .await
        .map_err(|e| reject(Problem::from(e)))?;
    let mut body = serde_json::to_value(&report).map_err(|e| {
        reject(Problem::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            e.to_string(),
        ))
    })?;
    body["domain"] = DOMAIN.into();
    body["entity"] = ENTITY.into();
    body["models"] = projector.models().into();
    if report.failed > 0 {
        let mut problem = Problem::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "rebuild-incomplete",
            format!(
                "{} of {} streams could not be rebuilt; the others were",
                report.failed,
                report.failed + report.streams
            ),
        );
        if let serde_json::Value::Object(fields) = body {
            for (key, value) in fields {
                problem = problem.with(&key, value);
            }
        }
        return Err(reject(problem));
    }
    Ok(json_response(StatusCode::OK, &body))
}
