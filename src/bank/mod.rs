//! The retail bank account: the seed's example, written as a user of streamfold would write
//! it, against the library's public API only (it lives in the binary, not the library).
//!
//! - [`money`]: exact decimal amounts;
//! - [`events`]: what can happen to an account;
//! - [`account`]: the state, the rules, the projection;
//! - [`overdraft`]: the "in overdraft" classification;
//! - [`service`]: commands decided on fresh state, appended with its exact version;
//! - [`http`]: the HTTP functions;
//! - [`readmodels`]: the account rows kept from notifications, `Accounts`, `RebuildReadModels`;
//! - [`guard`]: the bank's rules for events other writers append to its streams.
//!
//! Streams: domain `Bank`, entity type `Account`, instance key = the account number. The bank
//! owns them: the generic AppendEvents API writes to them only what [`guard::AccountGuard`]
//! accepts, i.e. what the bank's commands could have written.

pub mod account;
pub mod events;
pub mod guard;
pub mod http;
pub mod money;
pub mod overdraft;
pub mod readmodels;
pub mod service;

use std::sync::Arc;

use streamfold::app::App;
use streamfold::projection::{RegistryError, StatefulClassifier};

pub use service::Bank;

pub const DOMAIN: &str = "Bank";
pub const ENTITY: &str = "Account";
/// The `source` stored in the metadata of every event the bank writes.
pub const SOURCE: &str = "streamfold-bank";

/// Registers the bank's projections so the generic projection API can run them, and makes
/// the bank the owner of its streams (its guard checks what other writers append).
pub fn register(app: &mut App) -> Result<(), RegistryError> {
    app.guard_streams(DOMAIN, ENTITY, guard::AccountGuard)?;
    app.projections_mut()
        .register(DOMAIN, ENTITY, account::AccountProjection)?
        .register(
            DOMAIN,
            ENTITY,
            StatefulClassifier::new(overdraft::InOverdraft),
        )?;
    readmodels::register(app)?;
    Ok(())
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
        .http("Accounts", &[Method::GET], "Accounts")
        .http("RebuildReadModels", &[Method::POST], "RebuildReadModels");
    let filter = http::routes(Bank::new(app.clone()))
        .or(readmodels::routes(app))
        .unify()
        .boxed();
    Functions::new(table, filter)
}
