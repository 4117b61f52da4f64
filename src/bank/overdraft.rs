//! The seed's classification "in overdraft": an account is in the group while its balance is
//! below zero. Each money movement decides membership from the running balance, which is kept
//! in the classification's state (and so in its snapshots). Amounts are checked and the sum is
//! checked arithmetic: a stored event outside the rules is an error naming it, never a panic.

use rust_decimal::Decimal;
use streamfold::projection::{ApplyError, Classified, StatefulClassification};
use streamfold::stream::RecordedEvent;

use super::events::AccountEvent;
use super::money::{check_amount, Sign};

/// Name of the classification in the generic projection API.
pub const IN_OVERDRAFT: &str = "in-overdraft";

pub struct InOverdraft;

impl StatefulClassification for InOverdraft {
    /// The running balance.
    type Memo = Decimal;

    fn name(&self) -> &str {
        IN_OVERDRAFT
    }

    /// 2 since amounts are checked and the sum is checked arithmetic.
    fn version(&self) -> u32 {
        2
    }

    fn classify_with(
        &self,
        balance: &mut Decimal,
        event: &RecordedEvent,
    ) -> Result<Classified, ApplyError> {
        let fail = |reason: String| ApplyError::new(event, reason);
        let moved = match AccountEvent::decode(event)? {
            Some(AccountEvent::Deposited(e)) => check_amount("amount", e.amount, Sign::Positive),
            Some(AccountEvent::Withdrawn(e)) => {
                check_amount("amount", e.amount, Sign::Positive).map(|amount| -amount)
            }
            _ => return Ok(Classified::Unchanged),
        }
        .map_err(|e| fail(e.to_string()))?;
        *balance = balance
            .checked_add(moved)
            .ok_or_else(|| fail("the running balance leaves the range it can hold".into()))?;
        Ok(if *balance < Decimal::ZERO {
            Classified::Include
        } else {
            Classified::Exclude
        })
    }
}
