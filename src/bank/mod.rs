//! The retail bank account: the seed's example, written as a user of streamfold would write
//! it, against the library's public API only (it lives in the binary, not the library).
//!
//! - [`money`]: exact decimal amounts;
//! - [`events`]: what can happen to an account;
//! - [`account`]: the state, the rules, the projection;
//! - [`interest`]: daily accrual once per UTC day and payment of interest;
//! - [`interest_http`]: AccrueInterest, PayInterest and the daily AccrueInterestTimer;
//! - [`interest_timer`]: the daily run over every account, resumable;
//! - [`overdraft`]: the "in overdraft" classification;
//! - [`service`]: commands decided on fresh state, appended with its exact version;
//! - [`http`]: the HTTP functions;
//! - [`seed`]: the seed's own routes and bodies, as aliases of the bank's functions;
//! - [`readmodels`]: the account rows kept from notifications, `Accounts`, `RebuildReadModels`;
//! - [`transfer`]: transfers between accounts, exactly once, each with its own stream;
//! - [`transfer_http`]: TransferMoney, GetTransferState, CancelMoneyTransfer, TransferSweep;
//! - [`guard`]: the bank's rules for events other writers append to its streams;
//! - [`erase`]: `DeleteAccount`, erasing an account's stream and what is derived from it.
//! - [`web`]: the web front end (static files compiled in) and the balance series it charts.
//!
//! Streams: domain `Bank`, entity type `Account`, instance key = the account number. The bank
//! owns them: the generic AppendEvents API writes to them only what [`guard::AccountGuard`]
//! accepts, i.e. what the bank's commands could have written.

pub mod account;
pub mod erase;
pub mod events;
pub mod guard;
pub mod http;
pub mod interest;
pub mod interest_http;
pub mod interest_timer;
pub mod money;
pub mod overdraft;
pub mod readmodels;
pub mod seed;
pub mod service;
pub mod transfer;
pub mod transfer_http;
pub mod web;

use std::sync::Arc;

use streamfold::app::App;
use streamfold::functions::{DomainApi, DomainApiError};
use streamfold::projection::StatefulClassifier;
use streamfold::stream::EntityType;

pub use service::Bank;

pub const DOMAIN: &str = "Bank";
pub const ENTITY: &str = "Account";
/// The bank's streams: one per account.
pub const ACCOUNTS: EntityType = EntityType::from_static(DOMAIN, ENTITY);
/// The `source` stored in the metadata of every event the bank writes.
pub const SOURCE: &str = "streamfold-bank";

/// Registers the bank's projections so the generic projection API can run them, and makes
/// the bank the owner of its streams (its guard checks what other writers append).
/// Reads the bank's interest settings ([`interest::InterestRates`]); an invalid one fails.
pub fn register(app: &mut App) -> anyhow::Result<()> {
    interest::InterestRates::init_from_env()?;
    app.guard_streams(&ACCOUNTS, guard::AccountGuard)?;
    app.projections_mut()
        .register(&ACCOUNTS, account::AccountProjection)?
        .register(&ACCOUNTS, StatefulClassifier::new(overdraft::InOverdraft))?;
    readmodels::register(app)?;
    Ok(())
}

/// The bank's part of the app's OpenAPI document (merged with the library's).
pub const OPENAPI: &str = include_str!("openapi.json");

/// The bank's HTTP API as the app registers it: its functions and its OpenAPI part.
pub fn api(app: Arc<App>) -> Result<DomainApi, DomainApiError> {
    DomainApi::new().functions(routes(app)).openapi(OPENAPI)
}

/// The bank's HTTP functions, with their routes (as in their function.json files).
pub fn routes(app: Arc<App>) -> streamfold::functions::Functions {
    use streamfold::functions::{Functions, RouteTable};
    use warp::http::Method;
    use warp::Filter;
    let table = RouteTable::new()
        .http(
            "OpenAccount",
            &[Method::POST],
            "OpenAccount/{accountnumber}",
        )
        .http("Deposit", &[Method::POST], "Deposit/{accountnumber}")
        .http("Withdraw", &[Method::POST], "Withdraw/{accountnumber}")
        .http(
            "SetOverdraftLimit",
            &[Method::POST],
            "SetOverdraftLimit/{accountnumber}",
        )
        .http(
            "CloseAccount",
            &[Method::POST],
            "CloseAccount/{accountnumber}",
        )
        .http("GetBalance", &[Method::GET], "GetBalance/{accountnumber}")
        .http(
            "GetAccountHistory",
            &[Method::GET],
            "GetAccountHistory/{accountnumber}",
        )
        .http(
            interest_http::ACCRUE_FUNCTION,
            &[Method::POST],
            "AccrueInterest/{accountnumber}",
        )
        .http(
            interest_http::PAY_FUNCTION,
            &[Method::POST],
            "PayInterest/{accountnumber}",
        )
        .invocation(interest_timer::TIMER_FUNCTION)
        .http(
            transfer_http::TRANSFER_FUNCTION,
            &[Method::POST],
            "TransferMoney/{transferId?}",
        )
        .http(
            transfer_http::STATE_FUNCTION,
            &[Method::GET],
            "GetTransferState/{transferId}",
        )
        .http(
            transfer_http::CANCEL_FUNCTION,
            &[Method::POST],
            "CancelMoneyTransfer/{transferId}",
        )
        .invocation(transfer_http::SWEEP_FUNCTION)
        .http("Accounts", &[Method::GET], "Accounts")
        .http("RebuildReadModels", &[Method::POST], "RebuildReadModels")
        .http(erase::FUNCTION, &[Method::POST], erase::ROUTE)
        .http("DepositMoney", &[Method::POST], seed::DEPOSIT_MONEY_ROUTE)
        .http("WithdrawMoney", &[Method::POST], seed::WITHDRAW_MONEY_ROUTE)
        .http(
            "GetBalanceAsOfDate",
            &[Method::GET],
            seed::GET_BALANCE_AS_OF_ROUTE,
        )
        .http(
            "GetAllAccounts",
            &[Method::GET],
            seed::GET_ALL_ACCOUNTS_ROUTE,
        )
        .http("Web", &[Method::GET], web::WEB_ROUTE)
        .http("BalanceSeries", &[Method::GET], web::SERIES_ROUTE);
    let filter = http::routes(Bank::new(app.clone()))
        .or(interest_http::routes(Bank::new(app.clone())))
        .unify()
        .or(transfer_http::routes(Bank::new(app.clone())))
        .unify()
        .or(readmodels::routes(app.clone()))
        .unify()
        .or(erase::routes(app.clone()))
        .unify()
        .or(seed::routes(Bank::new(app.clone())))
        .unify()
        .or(web::routes(Bank::new(app)))
        .unify()
        .boxed();
    Functions::new(table, filter)
}
