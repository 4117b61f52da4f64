//! `POST /api/DeleteAccount/{accountnumber}` (the seed's route): erases the account's stream
//! and everything derived from it (its read-model row, snapshots, cached states) through the
//! library's erasure (`streamfold::erasure`), raising `Bank.Account.DeletedEntity` when
//! `RaiseEntityDeletionNotification` is on.
//!
//! 200 with what was erased; 404 `account-not-found` for an account that was never opened.
//! Repeating it for an erased account finishes an interrupted erasure and answers 200 again
//! (`resumed: true`). Afterwards commands on the account are 410 `stream-erased` (the number
//! can never be opened again) and queries are 404 `account-not-found`.

use streamfold::erasure::{erase_stream, ErasureError};
use streamfold::functions::{with_state, DomainApi, Problem, Reply, Request};
use streamfold::stream::{StoreError, StreamId};

use super::service::Bank;
use super::{DOMAIN, ENTITY};

/// The function's name and route (as in its function.json).
pub const FUNCTION: &str = "DeleteAccount";
pub const ROUTE: &str = "DeleteAccount/{accountnumber}";

/// The route of this module.
pub fn routes(api: DomainApi, bank: &Bank) -> DomainApi {
    api.post(FUNCTION, ROUTE, with_state(bank, delete_account))
}

async fn delete_account(bank: Bank, request: Request) -> Result<Reply, Problem> {
    let account = super::http::account_number(&request);
    let stream =
        StreamId::new(DOMAIN, ENTITY, &account).map_err(|e| Problem::from(StoreError::from(e)))?;
    match erase_stream(bank.app(), &stream).await {
        Ok(report) => Reply::ok(&report),
        Err(ErasureError::NotFound(_)) => Err(Problem::not_found(
            "account-not-found",
            format!("account {account} does not exist"),
        )
        .with("accountNumber", account)),
        Err(error) => Err(Problem::from(error)),
    }
}
