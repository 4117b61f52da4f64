//! The seed's classification "in overdraft": an account is in the group while its balance is
//! below zero. Each money movement decides membership from the running balance, which is kept
//! in the classification's state (and so in its snapshots).

use rust_decimal::Decimal;
use streamfold::projection::{ApplyError, Classified, StatefulClassification};
use streamfold::stream::RecordedEvent;

use super::events::AccountEvent;

/// Name of the classification in the generic projection API.
pub const IN_OVERDRAFT: &str = "in-overdraft";

pub struct InOverdraft;

impl StatefulClassification for InOverdraft {
    /// The running balance.
    type Memo = Decimal;

    fn name(&self) -> &str {
        IN_OVERDRAFT
    }

    fn version(&self) -> u32 {
        1
    }

    fn classify_with(
        &self,
        balance: &mut Decimal,
        event: &RecordedEvent,
    ) -> Result<Classified, ApplyError> {
        let moved = match AccountEvent::decode(event)? {
            Some(AccountEvent::Deposited(e)) => e.amount,
            Some(AccountEvent::Withdrawn(e)) => -e.amount,
            _ => return Ok(Classified::Unchanged),
        };
        *balance += moved;
        Ok(if *balance < Decimal::ZERO {
            Classified::Include
        } else {
            Classified::Exclude
        })
    }
}
