//! The account: its state folded from its events, and the rules every command is checked
//! against. Everything here is pure: no storage, no HTTP.
//!
//! The rules (the seed's bank, made exact):
//! - an account is opened once, with an overdraft limit ≥ 0 (default 0);
//! - a closed account refuses deposits, withdrawals and limit changes;
//! - a withdrawal needs balance + overdraft limit ≥ amount;
//! - a new overdraft limit is refused when the balance is already below minus that limit;
//! - an account closes only at a zero balance.

use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};
use streamfold::projection::{ApplyError, Projection};
use streamfold::stream::RecordedEvent;

use super::events::*;
use super::money::format_money;

/// Where an account is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum Status {
    /// No AccountOpened event (yet, as of the point asked about).
    #[default]
    NotOpened,
    Open,
    Closed,
}

/// The state of one account.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Account {
    pub status: Status,
    #[serde(with = "rust_decimal::serde::str")]
    pub balance: Decimal,
    #[serde(with = "rust_decimal::serde::str")]
    pub overdraft_limit: Decimal,
}

/// A command refused by a business rule (the state is as the command saw it).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    #[error("the account does not exist")]
    NotOpened,
    #[error("the account is closed")]
    Closed,
    #[error("insufficient funds: {} is available (balance {} + overdraft limit {})", format_money(*available), format_money(*balance), format_money(*overdraft_limit))]
    InsufficientFunds {
        available: Decimal,
        balance: Decimal,
        overdraft_limit: Decimal,
    },
    #[error("the balance {} is already below minus the new limit {}", format_money(*balance), format_money(*limit))]
    LimitBelowBalance { balance: Decimal, limit: Decimal },
    #[error("an account closes only at a zero balance; the balance is {}", format_money(*balance))]
    BalanceNotZero { balance: Decimal },
}

impl Account {
    /// What can be withdrawn now.
    pub fn available(&self) -> Decimal {
        self.balance + self.overdraft_limit
    }

    pub fn in_overdraft(&self) -> bool {
        self.balance < Decimal::ZERO
    }

    fn must_be_open(&self) -> Result<(), Refusal> {
        match self.status {
            Status::NotOpened => Err(Refusal::NotOpened),
            Status::Closed => Err(Refusal::Closed),
            Status::Open => Ok(()),
        }
    }

    pub fn deposit(&self, amount: Decimal) -> Result<AccountEvent, Refusal> {
        self.must_be_open()?;
        Ok(AccountEvent::Deposited(MoneyMoved { amount }))
    }

    pub fn withdraw(&self, amount: Decimal) -> Result<AccountEvent, Refusal> {
        self.must_be_open()?;
        if self.available() < amount {
            return Err(Refusal::InsufficientFunds {
                available: self.available(),
                balance: self.balance,
                overdraft_limit: self.overdraft_limit,
            });
        }
        Ok(AccountEvent::Withdrawn(MoneyMoved { amount }))
    }

    pub fn set_overdraft_limit(&self, limit: Decimal) -> Result<AccountEvent, Refusal> {
        self.must_be_open()?;
        if self.balance < -limit {
            return Err(Refusal::LimitBelowBalance {
                balance: self.balance,
                limit,
            });
        }
        Ok(AccountEvent::OverdraftLimitSet(OverdraftLimitSet { limit }))
    }

    pub fn close(&self) -> Result<AccountEvent, Refusal> {
        self.must_be_open()?;
        if !self.balance.is_zero() {
            return Err(Refusal::BalanceNotZero {
                balance: self.balance,
            });
        }
        Ok(AccountEvent::Closed(AccountClosed {}))
    }

    /// Folds one decided event into the state.
    pub fn evolve(&mut self, event: &AccountEvent) {
        match event {
            AccountEvent::Opened(e) => {
                self.status = Status::Open;
                self.overdraft_limit = e.overdraft_limit;
            }
            AccountEvent::Deposited(e) => self.balance += e.amount,
            AccountEvent::Withdrawn(e) => self.balance -= e.amount,
            AccountEvent::OverdraftLimitSet(e) => self.overdraft_limit = e.limit,
            AccountEvent::Closed(_) => self.status = Status::Closed,
        }
    }

    /// Folds one stored event into the state; unknown event types change nothing.
    pub fn apply(&mut self, event: &RecordedEvent) -> Result<(), ApplyError> {
        if let Some(event) = AccountEvent::decode(event)? {
            self.evolve(&event);
        }
        Ok(())
    }
}

/// The account state as a projection (snapshotted on long streams).
pub struct AccountProjection;

/// Name of [`AccountProjection`] in the generic projection API.
pub const ACCOUNT_PROJECTION: &str = "account";

impl Projection for AccountProjection {
    type State = Account;

    fn name(&self) -> &str {
        ACCOUNT_PROJECTION
    }

    fn version(&self) -> u32 {
        1
    }

    fn initial(&self) -> Account {
        Account::default()
    }

    fn apply(&self, state: &mut Account, event: &RecordedEvent) -> Result<(), ApplyError> {
        state.apply(event)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dec(s: &str) -> Decimal {
        s.parse().unwrap()
    }

    fn open(balance: &str, limit: &str) -> Account {
        Account {
            status: Status::Open,
            balance: dec(balance),
            overdraft_limit: dec(limit),
        }
    }

    #[test]
    fn withdrawals_need_balance_plus_overdraft() {
        assert!(open("10", "5").withdraw(dec("15")).is_ok());
        let refused = open("10", "5").withdraw(dec("15.01")).unwrap_err();
        assert_eq!(
            refused,
            Refusal::InsufficientFunds {
                available: dec("15"),
                balance: dec("10"),
                overdraft_limit: dec("5")
            }
        );
    }

    #[test]
    fn limits_cannot_go_below_the_balance() {
        assert!(open("-10", "20").set_overdraft_limit(dec("10")).is_ok());
        assert!(open("-10", "20").set_overdraft_limit(dec("9.99")).is_err());
    }

    #[test]
    fn closing_needs_zero_and_closed_accounts_refuse_money() {
        assert!(open("0.01", "0").close().is_err());
        assert!(open("0", "0").close().is_ok());
        let closed = Account {
            status: Status::Closed,
            ..Account::default()
        };
        assert_eq!(closed.deposit(dec("1")).unwrap_err(), Refusal::Closed);
        assert_eq!(
            Account::default().deposit(dec("1")).unwrap_err(),
            Refusal::NotOpened
        );
    }
}
