//! The account: its state folded from its events, and the rules every command is checked
//! against. Everything here is pure: no storage, no HTTP.
//!
//! The rules (the seed's bank, made exact):
//! - an account is opened once, with an overdraft limit ≥ 0 (default 0);
//! - a closed account refuses deposits, withdrawals and limit changes;
//! - a withdrawal needs balance + overdraft limit ≥ amount;
//! - a new overdraft limit is refused when the balance is already below minus that limit;
//! - an account closes only at a zero balance;
//! - every amount and limit is a valid amount of the currency ([`super::money::check_amount`]);
//! - interest accrues on an open account at most once per UTC day, days in increasing order,
//!   each day's amount exactly the balance × rate of the event ([`super::interest`]); paying it
//!   moves exactly the accrued interest rounded to the currency, within the overdraft limit;
//! - money transferred out obeys the withdrawal rule, money transferred in the deposit rule; a
//!   transfer's refund is credited even to an account closed since the debit (the money is the
//!   holder's; the account stays closed, holding it).
//!
//! [`Account::accept`] is the one place where an event meets the state: it checks the event
//! against these rules (as the command that would have decided it does) and computes the next
//! state with checked arithmetic. Commands, the fold of stored events and the guard of the
//! generic API ([`super::guard`]) all go through it, so a stream can only ever hold what the
//! commands could have written, and a stream that holds anything else (written before the
//! guard existed, or by another tool straight to storage) fails its fold with an error naming
//! the event, never a panic or a state outside the rules.

use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};
use streamfold::projection::{ApplyError, Projection};
use streamfold::stream::RecordedEvent;

use super::events::*;
use super::money::{check_amount, format_money, AmountError, Sign};

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
    /// Interest accrued and not paid yet (signed, [`super::interest::INTEREST_DECIMALS`] places).
    #[serde(default, with = "rust_decimal::serde::str")]
    pub accrued_interest: Decimal,
    /// The last UTC day interest was accrued for.
    #[serde(
        default,
        with = "super::interest::stored_day_opt",
        skip_serializing_if = "Option::is_none"
    )]
    pub last_accrual_day: Option<time::Date>,
}

/// An event refused by a business rule (the state is as the command or the fold saw it).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    #[error("the account does not exist")]
    NotOpened,
    #[error("the account is already open")]
    AlreadyOpened,
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
    #[error(transparent)]
    InvalidAmount(#[from] AmountError),
    #[error("the balance would leave the range an account can hold")]
    OutOfRange,
    #[error("interest was already accrued for {day} (the last day accrued is {last})")]
    AlreadyAccrued { day: time::Date, last: time::Date },
    #[error("the interest event does not add up: {0}")]
    InterestMismatch(String),
}

impl Account {
    /// What can be withdrawn now; `None` when it is out of range (a state no fold of valid
    /// events makes, e.g. a hand-edited snapshot or row).
    pub fn available(&self) -> Option<Decimal> {
        self.balance.checked_add(self.overdraft_limit)
    }

    pub fn in_overdraft(&self) -> bool {
        self.balance < Decimal::ZERO
    }

    /// The balance with `amount` added, when it is within range.
    fn credited(&self, amount: Decimal) -> Result<Decimal, Refusal> {
        self.balance.checked_add(amount).ok_or(Refusal::OutOfRange)
    }

    fn must_be_open(&self) -> Result<(), Refusal> {
        match self.status {
            Status::NotOpened => Err(Refusal::NotOpened),
            Status::Closed => Err(Refusal::Closed),
            Status::Open => Ok(()),
        }
    }

    pub fn open(&self, overdraft_limit: Decimal) -> Result<AccountEvent, Refusal> {
        if self.status != Status::NotOpened {
            return Err(Refusal::AlreadyOpened);
        }
        Ok(AccountEvent::Opened(AccountOpened { overdraft_limit }))
    }

    pub fn deposit(&self, amount: Decimal) -> Result<AccountEvent, Refusal> {
        self.must_be_open()?;
        Ok(AccountEvent::Deposited(MoneyMoved { amount }))
    }

    pub fn withdraw(&self, amount: Decimal) -> Result<AccountEvent, Refusal> {
        self.must_be_open()?;
        let available = self.available().ok_or(Refusal::OutOfRange)?;
        if available < amount {
            return Err(Refusal::InsufficientFunds {
                available,
                balance: self.balance,
                overdraft_limit: self.overdraft_limit,
            });
        }
        Ok(AccountEvent::Withdrawn(MoneyMoved { amount }))
    }

    pub fn set_overdraft_limit(&self, limit: Decimal) -> Result<AccountEvent, Refusal> {
        self.must_be_open()?;
        // balance < -limit, without negating or wrapping: a sum too large to hold is positive.
        if self
            .balance
            .checked_add(limit)
            .is_some_and(|covered| covered < Decimal::ZERO)
        {
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

    /// The state after `event`, when the rules allow `event` after this state: its amounts
    /// are valid amounts of the currency, the command that makes it would decide it here,
    /// and the new balance is within range. Never panics.
    pub fn accept(&self, event: &AccountEvent) -> Result<Account, Refusal> {
        let mut next = self.clone();
        match event {
            AccountEvent::Opened(e) => {
                let limit = check_amount("overdraftLimit", e.overdraft_limit, Sign::NonNegative)?;
                self.open(limit)?;
                next.status = Status::Open;
                next.overdraft_limit = limit;
            }
            // Money in and out: a transfer's leg is decided as a deposit or a withdrawal is.
            AccountEvent::Deposited(MoneyMoved { amount })
            | AccountEvent::TransferredIn(MoneyTransferred { amount, .. }) => {
                let amount = check_amount("amount", *amount, Sign::Positive)?;
                self.deposit(amount)?;
                next.balance = self.credited(amount)?;
            }
            AccountEvent::Withdrawn(MoneyMoved { amount })
            | AccountEvent::TransferredOut(MoneyTransferred { amount, .. }) => {
                let amount = check_amount("amount", *amount, Sign::Positive)?;
                self.withdraw(amount)?;
                next.balance = self
                    .balance
                    .checked_sub(amount)
                    .ok_or(Refusal::OutOfRange)?;
            }
            AccountEvent::OverdraftLimitSet(e) => {
                let limit = check_amount("limit", e.limit, Sign::NonNegative)?;
                self.set_overdraft_limit(limit)?;
                next.overdraft_limit = limit;
            }
            AccountEvent::Closed(_) => {
                self.close()?;
                next.status = Status::Closed;
            }
            AccountEvent::TransferRefunded(e) => {
                let amount = check_amount("amount", e.amount, Sign::Positive)?;
                if self.status == Status::NotOpened {
                    return Err(Refusal::NotOpened);
                }
                next.balance = self.credited(amount)?;
            }
            AccountEvent::InterestAccrued(e) => {
                self.must_be_open()?;
                if let Some(last) = self.last_accrual_day.filter(|last| *last >= e.day) {
                    return Err(Refusal::AlreadyAccrued { day: e.day, last });
                }
                let expected = super::interest::daily_interest(e.balance, e.annual_rate)?;
                if expected != e.amount {
                    return Err(Refusal::InterestMismatch(format!(
                        "one day at {}% on {} is {}, not {}",
                        e.annual_rate, e.balance, expected, e.amount
                    )));
                }
                next.accrued_interest =
                    super::interest::add_interest(self.accrued_interest, e.amount)?;
                next.last_accrual_day = Some(e.day);
            }
            AccountEvent::InterestPaid(e) => {
                self.must_be_open()?;
                if e.accrued != self.accrued_interest {
                    return Err(Refusal::InterestMismatch(format!(
                        "it pays {} of accrued interest, but {} is accrued",
                        e.accrued, self.accrued_interest
                    )));
                }
                let amount = super::interest::payable(e.accrued);
                if amount != e.amount {
                    return Err(Refusal::InterestMismatch(format!(
                        "{} of accrued interest pays {}, not {}",
                        e.accrued, amount, e.amount
                    )));
                }
                let balance = self.credited(amount)?;
                if amount < Decimal::ZERO {
                    let available = self.available().ok_or(Refusal::OutOfRange)?;
                    if available
                        .checked_add(amount)
                        .is_none_or(|left| left < Decimal::ZERO)
                    {
                        return Err(Refusal::InsufficientFunds {
                            available,
                            balance: self.balance,
                            overdraft_limit: self.overdraft_limit,
                        });
                    }
                }
                next.balance = balance;
                next.accrued_interest = Decimal::ZERO;
            }
        }
        Ok(next)
    }

    /// Folds one stored event into the state; unknown event types change nothing. An event
    /// that does not decode, or that the rules refuse after this state, is an error naming it
    /// (and the state is left as it was).
    pub fn apply(&mut self, event: &RecordedEvent) -> Result<(), ApplyError> {
        if let Some(decoded) = AccountEvent::decode(event)? {
            *self = self
                .accept(&decoded)
                .map_err(|refusal| ApplyError::new(event, refusal.to_string()))?;
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

    /// 2 since the fold checks amounts and transitions (1 folded whatever was stored): a
    /// snapshot or read-model row of version 1 may hold a state folded past an event version 2
    /// refuses, so none is resumed from (rows are recomputed by the next notification or
    /// `RebuildReadModels`).
    /// 3 since interest, 4 since transfers (an older fold skipped those events: none of its
    /// states is resumed from).
    fn version(&self) -> u32 {
        4
    }

    fn initial(&self) -> Account {
        Account::default()
    }

    fn apply(&self, state: &mut Account, event: &RecordedEvent) -> Result<(), ApplyError> {
        state.apply(event)
    }
}

/// Fixtures of the bank's unit tests.
#[cfg(test)]
pub(super) mod tests {
    use super::*;

    pub(crate) fn dec(s: &str) -> Decimal {
        s.parse().unwrap()
    }

    /// An open account with `balance` and overdraft `limit`.
    pub(crate) fn open(balance: &str, limit: &str) -> Account {
        Account {
            status: Status::Open,
            balance: dec(balance),
            overdraft_limit: dec(limit),
            ..Account::default()
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

    fn deposited(amount: &str) -> AccountEvent {
        AccountEvent::Deposited(MoneyMoved {
            amount: dec(amount),
        })
    }

    #[test]
    fn accept_checks_amounts_and_transitions() {
        let limit = |l: &str| {
            AccountEvent::Opened(AccountOpened {
                overdraft_limit: dec(l),
            })
        };
        let opened = Account::default().accept(&limit("10")).unwrap();
        assert_eq!(opened, open("0", "10"));
        assert_eq!(
            opened.accept(&limit("10")).unwrap_err(),
            Refusal::AlreadyOpened
        );
        for bad in ["79228162514264337593543950335", "-1", "0.001"] {
            assert!(matches!(
                Account::default().accept(&limit(bad)),
                Err(Refusal::InvalidAmount(_))
            ));
        }
        for bad in ["-500", "0", "0.001", "1000000000000000.01"] {
            assert!(matches!(
                opened.accept(&deposited(bad)),
                Err(Refusal::InvalidAmount(_))
            ));
        }
        assert_eq!(
            Account::default().accept(&deposited("1")).unwrap_err(),
            Refusal::NotOpened
        );
        let withdrawn = AccountEvent::Withdrawn(MoneyMoved { amount: dec("11") });
        assert!(matches!(
            opened.accept(&withdrawn),
            Err(Refusal::InsufficientFunds { .. })
        ));
        let closed = opened
            .accept(&AccountEvent::Closed(AccountClosed {}))
            .unwrap();
        assert_eq!(closed.status, Status::Closed);
        assert_eq!(closed.accept(&deposited("1")).unwrap_err(), Refusal::Closed);
    }

    /// States no valid history makes (hand-edited snapshots or rows) never panic.
    #[test]
    fn arithmetic_at_the_edges_is_checked() {
        let huge = Account {
            status: Status::Open,
            balance: Decimal::MAX,
            overdraft_limit: Decimal::MAX,
            ..Account::default()
        };
        assert_eq!(huge.available(), None);
        assert_eq!(
            huge.accept(&deposited("1")).unwrap_err(),
            Refusal::OutOfRange
        );
        assert_eq!(huge.withdraw(dec("1")).unwrap_err(), Refusal::OutOfRange);
        assert!(huge.set_overdraft_limit(Decimal::MAX).is_ok());
        let deep = Account {
            status: Status::Open,
            balance: Decimal::MIN,
            overdraft_limit: Decimal::MAX,
            ..Account::default()
        };
        let withdrawn = AccountEvent::Withdrawn(MoneyMoved { amount: dec("1") });
        assert!(deep.accept(&withdrawn).is_err());
        assert!(deep.set_overdraft_limit(dec("0")).is_err());
    }
}
