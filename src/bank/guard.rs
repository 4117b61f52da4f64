//! The bank's guard of its streams: what another writer (the generic AppendEvents API) may
//! append to `Bank/Account` streams — exactly what the bank's own commands could have written
//! after the stream's current state.
//!
//! The library folds the stream with [`AccountProjection`] and calls [`AccountGuard`] for each
//! new event against the state before it (see `streamfold::projection::StreamGuard`):
//! - the event type must be one of the account's, and its data an object with exactly that
//!   type's fields, amounts as strings in the stored form ([`AccountEvent::decode_exact`]);
//! - [`Account::accept`] must accept it: amounts positive (limits ≥ 0) with at most the
//!   currency's places and at most [`super::money::MAX_AMOUNT`], opened once, no money
//!   movement or limit change on an account not open, withdrawals within the available amount,
//!   limits not below the balance, closing at zero, no overflow.
//!
//! Anything else is refused with 422 `invalid-domain-event` naming the event and the reason,
//! and nothing is written; so no API can write a stream the bank's fold refuses later.

use streamfold::projection::StreamGuard;
use streamfold::stream::RecordedEvent;

use super::account::{Account, AccountProjection};
use super::events::AccountEvent;

/// Checks other writers' events to account streams by the bank's rules.
pub struct AccountGuard;

impl StreamGuard for AccountGuard {
    type Projection = AccountProjection;

    fn projection(&self) -> &AccountProjection {
        &AccountProjection
    }

    fn check(&self, account: &Account, event: &RecordedEvent) -> Result<(), String> {
        let decoded = AccountEvent::decode_exact(event)?;
        account
            .accept(&decoded)
            .map(|_| ())
            .map_err(|refusal| refusal.to_string())
    }
}
