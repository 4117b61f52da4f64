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

/// The bank's HTTP API as the app registers it: its functions (each with its route, as in its
/// function.json) and its OpenAPI part, registered as any domain registers them.
pub fn api(app: Arc<App>) -> Result<DomainApi, DomainApiError> {
    let bank = Bank::new(app);
    let api = http::routes(DomainApi::new(), &bank);
    let api = interest_http::routes(api, &bank);
    let api = transfer_http::routes(api, &bank);
    let api = readmodels::routes(api, &bank);
    let api = erase::routes(api, &bank);
    let api = seed::routes(api, &bank);
    web::routes(api, &bank).openapi(OPENAPI)
}
