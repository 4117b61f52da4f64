//! The bank's read models, kept up to date by the `Projector` from Event Grid notifications
//! (see `streamfold::readmodel`), and the functions that serve them:
//!
//! - `GET /api/Accounts[?pageSize=N&continuation=X&inOverdraft=true|false]` (function folder
//!   `Accounts`): a page of the account rows, in account-number order, from the read-model
//!   table — no event stream is read;
//! - `POST /api/RebuildReadModels` (function folder `RebuildReadModels`): recomputes every row
//!   from the streams and answers with counts.
//!
//! `Accounts` pages the way `ListStreams` does (same parameter names, default and largest page
//! size, problem slugs): each answer holds the rows of one read of at most `pageSize` rows
//! (default [`DEFAULT_PAGE_SIZE`], at most [`MAX_PAGE_SIZE`]) and, when more rows may follow,
//! a `continuation` to pass back for the next page; an answer without one is the last page.
//! The `inOverdraft` filter is applied to the rows of that read, not before it (as is the
//! leaving out of rows written by another projection version), so a page may hold fewer than
//! `pageSize` accounts — even none — while more follow: clients must follow `continuation`
//! until it is absent, not stop at a short page. The read cannot filter: the balance is
//! inside the row's state, which storage cannot query.
//!
//! The read model is the account projection itself ([`AccountProjection`], `account`): one row
//! per account with its status, balance and overdraft limit, and the sequence number it is as
//! of. So a row is exactly what `GetBalance` (or `RunProjection .../account`) returns as of
//! that sequence.
//!
//! A row the projector marked failed (its stream holds an event the account projection
//! refuses: see `streamfold::readmodel`) is listed under `unreadable` with the refused
//! event's sequence and the reason, not under `accounts`; the other rows of the page are
//! answered as usual. `RebuildReadModels` counts such streams in `unreadable` (and describes
//! the first few in `unreadableStreams`) and still answers 200: the rows were written, marked.
//!
//! The accounts-in-overdraft group is derived from each row's balance (`balance < 0`) rather
//! than kept as a second read model of the `in-overdraft` classification: membership there
//! changes only on money movements, to "balance < 0 after it", and the balance changes only on
//! money movements, so both always agree — and deriving it from the same row means an
//! account's balance and its group membership can never be at different sequences.

use serde::Serialize;
use streamfold::app::App;
use streamfold::functions::streams::MAX_PAGE_SIZE;
use streamfold::functions::{with_state, DomainApi, Problem, Reply, Request};
use streamfold::projection::{Projection, RegistryError};
use streamfold::readmodel::{rebuild, ReadModelError};
use streamfold::stream::{validate_instance_key, DEFAULT_PAGE_SIZE};

use super::account::{Account, AccountProjection, Status, ACCOUNT_PROJECTION};
use super::money::format_money;
use super::service::Bank;
use super::ACCOUNTS;

/// The query parameter that filters `Accounts` by overdraft.
pub const IN_OVERDRAFT_PARAMETER: &str = "inOverdraft";
/// The query parameter with the number of rows to read for a page (as `ListStreams`).
pub const PAGE_SIZE_PARAMETER: &str = "pageSize";
/// The query parameter with the continuation of the previous page (as `ListStreams`).
pub const CONTINUATION_PARAMETER: &str = "continuation";

/// Registers the bank's read models.
pub fn register(app: &mut App) -> Result<(), RegistryError> {
    app.read_models_mut()
        .register(&ACCOUNTS, AccountProjection)?;
    Ok(())
}

/// `GET /api/Accounts` and `POST /api/RebuildReadModels`.
pub fn routes(api: DomainApi, bank: &Bank) -> DomainApi {
    api.get("Accounts", "Accounts", with_state(bank, accounts_handler))
        .post(
            "RebuildReadModels",
            "RebuildReadModels",
            with_state(bank, rebuild_handler),
        )
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

/// A row of the page whose account cannot be shown: its stream holds an event the account
/// projection refuses (the projector marked the row), or its state is out of range.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct UnreadableRow {
    account_number: String,
    /// The refused event's sequence (or the row's, for a state out of range).
    sequence: u64,
    /// Why, in words.
    reason: String,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct AccountsBody {
    count: usize,
    accounts: Vec<AccountRow>,
    /// The page's rows that cannot be shown as accounts (left out of `accounts`, not of the
    /// page); empty when every row reads.
    unreadable: Vec<UnreadableRow>,
    /// Present only when more rows may follow.
    #[serde(skip_serializing_if = "Option::is_none")]
    continuation: Option<String>,
}

/// What a request for `Accounts` asks for.
#[derive(Debug, PartialEq)]
struct AccountsQuery {
    in_overdraft: Option<bool>,
    page_size: usize,
    continuation: Option<String>,
}

fn accounts_query(query: &Request) -> Result<AccountsQuery, Problem> {
    query.only_known_params(&[
        IN_OVERDRAFT_PARAMETER,
        PAGE_SIZE_PARAMETER,
        CONTINUATION_PARAMETER,
    ])?;
    Ok(AccountsQuery {
        in_overdraft: query.bool_param(IN_OVERDRAFT_PARAMETER)?,
        page_size: page_size(query)?,
        continuation: continuation(query)?,
    })
}

/// `pageSize`, checked as `ListStreams` checks it (same slugs), naming the parameter.
fn page_size(query: &Request) -> Result<usize, Problem> {
    let Some(asked) = query.u64_param(PAGE_SIZE_PARAMETER)? else {
        return Ok(DEFAULT_PAGE_SIZE);
    };
    match usize::try_from(asked) {
        Ok(n) if (1..=MAX_PAGE_SIZE).contains(&n) => Ok(n),
        _ => Err(Problem::bad_request(
            "invalid-page-size",
            format!("{PAGE_SIZE_PARAMETER} must be between 1 and {MAX_PAGE_SIZE}"),
        )
        .with("parameter", PAGE_SIZE_PARAMETER)),
    }
}

/// `continuation`: absent or empty starts from the first row; otherwise it must be what an
/// earlier page returned, an account number.
fn continuation(query: &Request) -> Result<Option<String>, Problem> {
    let Some(given) = query
        .query_param(CONTINUATION_PARAMETER)
        .filter(|c| !c.is_empty())
    else {
        return Ok(None);
    };
    validate_instance_key(given).map_err(|e| {
        Problem::bad_request(
            "invalid-continuation",
            format!(
                "{CONTINUATION_PARAMETER} must be the continuation of an earlier page: {}",
                e.reason
            ),
        )
        .with("parameter", CONTINUATION_PARAMETER)
    })?;
    Ok(Some(given.to_owned()))
}

async fn accounts_handler(bank: Bank, request: Request) -> Result<Reply, Problem> {
    let query = accounts_query(&request)?;
    let store = bank.app().read_model_store()?;
    let page = store
        .list(
            ACCOUNT_PROJECTION,
            &ACCOUNTS,
            query.continuation.as_deref(),
            query.page_size,
        )
        .await
        .map_err(Problem::from)?;
    let version = Projection::version(&AccountProjection);
    let mut accounts = Vec::with_capacity(page.rows.len());
    let mut unreadable = Vec::new();
    for row in page.rows {
        if let Some(failure) = row
            .checkpoint
            .failure
            .as_ref()
            .filter(|_| row.checkpoint.projection_version == version)
        {
            unreadable.push(UnreadableRow {
                account_number: row.instance,
                sequence: failure.sequence,
                reason: failure.reason.clone(),
            });
            continue;
        }
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
        let Some(available) = account.available() else {
            // Only a hand-edited row can hold a state no fold of valid events makes.
            tracing::warn!(
                account = row.instance,
                "account row is out of range; reported as unreadable"
            );
            unreadable.push(UnreadableRow {
                account_number: row.instance,
                sequence: row.checkpoint.sequence,
                reason: "the row's balance and overdraft limit are out of range".into(),
            });
            continue;
        };
        if query
            .in_overdraft
            .is_some_and(|wanted| account.in_overdraft() != wanted)
        {
            continue;
        }
        accounts.push(AccountRow {
            account_number: row.instance,
            status: account.status,
            balance: format_money(account.balance),
            overdraft_limit: format_money(account.overdraft_limit),
            available: format_money(available),
            in_overdraft: account.in_overdraft(),
            sequence: row.checkpoint.sequence,
        });
    }
    Reply::ok(&AccountsBody {
        count: accounts.len(),
        accounts,
        unreadable,
        continuation: page.continuation,
    })
}

async fn rebuild_handler(bank: Bank, _request: Request) -> Result<Reply, Problem> {
    let projector = bank
        .app()
        .read_model_projector(&ACCOUNTS)
        .map_err(|e: ReadModelError| Problem::from(e))?;
    let report = rebuild(&projector, &ACCOUNTS)
        .await
        .map_err(Problem::from)?;
    let mut body =
        serde_json::to_value(&report).map_err(|e| Problem::internal("internal", e.to_string()))?;
    body["domain"] = ACCOUNTS.domain().into();
    body["entity"] = ACCOUNTS.entity().into();
    body["models"] = projector.models().into();
    if report.failed > 0 {
        let mut problem = Problem::internal(
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
        return Err(problem);
    }
    Reply::ok(&body)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pairs(raw: &[(&str, &str)]) -> Request {
        Request::default().with_query(raw.iter().copied())
    }

    /// The problem of a refused query, as JSON, with its status checked.
    fn refused(raw: &[(&str, &str)]) -> serde_json::Value {
        let problem = accounts_query(&pairs(raw)).unwrap_err();
        assert_eq!(problem.status().as_u16(), 400, "{raw:?}");
        serde_json::to_value(problem).unwrap()
    }

    #[test]
    fn paging_parameters_default_and_are_checked() {
        assert_eq!(
            accounts_query(&pairs(&[])).unwrap(),
            AccountsQuery {
                in_overdraft: None,
                page_size: DEFAULT_PAGE_SIZE,
                continuation: None,
            }
        );
        let asked = pairs(&[
            ("PAGESIZE", "3"),
            ("continuation", "O'Brien"),
            ("inOverdraft", "true"),
        ]);
        assert_eq!(
            accounts_query(&asked).unwrap(),
            AccountsQuery {
                in_overdraft: Some(true),
                page_size: 3,
                continuation: Some("O'Brien".into()),
            }
        );
        let empty = accounts_query(&pairs(&[("continuation", "")])).unwrap();
        assert_eq!(empty.continuation, None);
        let largest = MAX_PAGE_SIZE.to_string();
        assert_eq!(
            accounts_query(&pairs(&[("pageSize", &largest)]))
                .unwrap()
                .page_size,
            MAX_PAGE_SIZE
        );

        let too_large = (MAX_PAGE_SIZE + 1).to_string();
        for (bad, slug) in [
            ("0", "invalid-page-size"),
            (too_large.as_str(), "invalid-page-size"),
            ("18446744073709551615", "invalid-page-size"),
            ("-1", "invalid-query-parameter"),
            ("ten", "invalid-query-parameter"),
            ("1.5", "invalid-query-parameter"),
        ] {
            let problem = refused(&[("pageSize", bad)]);
            assert_eq!(problem["type"], format!("urn:streamfold:problem:{slug}"));
            assert_eq!(problem["parameter"], PAGE_SIZE_PARAMETER, "{bad}");
        }
        for bad in ["a/b", "#", "x\u{7}"] {
            let problem = refused(&[("continuation", bad)]);
            assert_eq!(
                problem["type"],
                "urn:streamfold:problem:invalid-continuation"
            );
            assert_eq!(problem["parameter"], CONTINUATION_PARAMETER, "{bad:?}");
        }
        assert!(accounts_query(&pairs(&[("page", "1")])).is_err());
    }
}
