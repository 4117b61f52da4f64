//! The bank's web front end, served by the function app itself: `GET /api/web/` and its files
//! (function `Web`, route `web/{*path}`, authLevel anonymous: only static files, compiled into
//! the binary, no CDN or network at run time), and the one query it needs that the other
//! functions do not answer: `GET /api/BalanceSeries/{accountnumber}` (authLevel function), the
//! balance after every event of the account's stream, for the page's chart.
//!
//! The page calls the API functions (accounts, balance as of a sequence, history, commands,
//! notifications) with the function key the user gives it, in the `x-functions-key` header;
//! the static files carry no data and need no key (README, "The web front end").

use rust_decimal::Decimal;
use serde::Serialize;
use streamfold::functions::{with_state, DomainApi, Problem, Reply, Request};
use streamfold::projection::{Projection, ProjectionError};
use streamfold::stream::StreamId;
use time::OffsetDateTime;

use super::account::{Account, AccountProjection};
use super::money::format_money;
use super::service::{Bank, BankError};

/// The `Web` function's route.
pub const WEB_ROUTE: &str = "web/{*path}";
/// The `BalanceSeries` function's route.
pub const SERIES_ROUTE: &str = "BalanceSeries/{accountnumber}";
/// Events read per page while folding the series.
const SERIES_READ_PAGE: u64 = 1000;
/// Most points one series holds; a longer stream is sampled evenly (its last event always in).
pub const MAX_SERIES_POINTS: usize = 2000;
/// Who may frame or feed the page: itself only (no inline script, no other origin).
const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; script-src 'self'; style-src 'self'; \
     connect-src 'self'; img-src 'self' data:; form-action 'self'; frame-ancestors 'none'; \
     base-uri 'none'";

/// One file of the page.
struct Asset {
    name: &'static str,
    content_type: &'static str,
    body: &'static [u8],
}

/// The page's files, compiled in. `""` is the page itself.
const ASSETS: &[Asset] = &[
    Asset {
        name: "",
        content_type: "text/html; charset=utf-8",
        body: include_bytes!("web/index.html"),
    },
    Asset {
        name: "app.js",
        content_type: "text/javascript; charset=utf-8",
        body: include_bytes!("web/app.js"),
    },
    Asset {
        name: "style.css",
        content_type: "text/css; charset=utf-8",
        body: include_bytes!("web/style.css"),
    },
];

/// `GET /api/web/{*path}` and `GET /api/BalanceSeries/{accountnumber}`.
pub fn routes(api: DomainApi, bank: &Bank) -> DomainApi {
    api.get("Web", WEB_ROUTE, serve_asset).get(
        "BalanceSeries",
        SERIES_ROUTE,
        with_state(bank, balance_series),
    )
}

async fn serve_asset(request: Request) -> Result<Reply, Problem> {
    let name = request.param("path").unwrap_or_default();
    let name = name.trim_end_matches('/');
    let name = if name == "index.html" { "" } else { name };
    let asset = ASSETS.iter().find(|a| a.name == name).ok_or_else(|| {
        Problem::not_found(
            "no-such-file",
            format!("the web front end has no file {name:?}"),
        )
    })?;
    Ok(Reply::bytes(200, asset.content_type, asset.body)
        .with_header("cache-control", "no-cache")
        .with_header("content-security-policy", CONTENT_SECURITY_POLICY)
        .with_header("x-content-type-options", "nosniff"))
}

/// The balance right after one event.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Point {
    sequence: u64,
    event_type: String,
    #[serde(with = "time::serde::rfc3339")]
    time: OffsetDateTime,
    balance: String,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct SeriesBody<'a> {
    account_number: &'a str,
    version: u64,
    /// True when the stream has more events than points (evenly sampled, the last one kept).
    sampled: bool,
    points: Vec<Point>,
}

/// Folds the whole stream once with the account's own fold, keeping the balance after each
/// event.
async fn balance_series(bank: Bank, request: Request) -> Result<Reply, Problem> {
    request.only_known_params(&[])?;
    let account_number = super::http::account_number(&request);
    let stream: StreamId = Bank::stream(&account_number)?;
    let mut account = Account::default();
    let mut all: Vec<(u64, String, OffsetDateTime, Decimal)> = Vec::new();
    let mut from = 1;
    let mut version = 0;
    loop {
        let page = bank
            .history(&account_number, from, SERIES_READ_PAGE)
            .await?;
        version = version.max(page.version);
        for event in &page.events {
            account.apply(event).map_err(|e| {
                let error = ProjectionError::apply(&stream, AccountProjection.name(), e);
                Problem::from(BankError::Projection(error))
            })?;
            all.push((
                event.sequence,
                event.event_type.clone(),
                event.timestamp,
                account.balance,
            ));
        }
        match page.next {
            Some(next) => from = next,
            None => break,
        }
    }
    let step = all.len().div_ceil(MAX_SERIES_POINTS).max(1);
    let last = all.len().saturating_sub(1);
    let points: Vec<Point> = all
        .into_iter()
        .enumerate()
        .filter(|(index, _)| index % step == 0 || *index == last)
        .map(|(_, (sequence, event_type, time, balance))| Point {
            sequence,
            event_type,
            time,
            balance: format_money(balance),
        })
        .collect();
    Reply::ok(&SeriesBody {
        account_number: &account_number,
        version,
        sampled: step > 1,
        points,
    })
}
