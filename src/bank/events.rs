//! The bank account's events: what happened to an account, in the words of the business.
//!
//! Amounts are stored as strings with the currency's decimal places (`"12.50"`), so any reader
//! of the stream gets them exactly, and are read back only in the strict grammar of
//! [`super::money`]. Decoding says nothing of the rules (a negative deposit decodes); the
//! account's fold ([`super::account`]) checks every value and transition.

use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};
use streamfold::projection::{decode_data, ApplyError};
use streamfold::stream::RecordedEvent;

pub const ACCOUNT_OPENED: &str = "AccountOpened";
pub const MONEY_DEPOSITED: &str = "MoneyDeposited";
pub const MONEY_WITHDRAWN: &str = "MoneyWithdrawn";
pub const OVERDRAFT_LIMIT_SET: &str = "OverdraftLimitSet";
pub const ACCOUNT_CLOSED: &str = "AccountClosed";
pub const INTEREST_ACCRUED: &str = "InterestAccrued";
pub const INTEREST_PAID: &str = "InterestPaid";
pub const MONEY_TRANSFERRED_OUT: &str = "MoneyTransferredOut";
pub const MONEY_TRANSFERRED_IN: &str = "MoneyTransferredIn";
pub const TRANSFER_REFUNDED: &str = "MoneyTransferRefunded";

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AccountOpened {
    #[serde(with = "super::money::stored")]
    pub overdraft_limit: Decimal,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct MoneyMoved {
    #[serde(with = "super::money::stored")]
    pub amount: Decimal,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct OverdraftLimitSet {
    #[serde(with = "super::money::stored")]
    pub limit: Decimal,
}

#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct AccountClosed {}

/// One UTC day's interest (see [`super::interest`]): the balance at 00:00 UTC of `day`, the
/// annual rate in percent applied to it, and the interest (signed: negative is owed by the
/// holder) with [`super::interest::INTEREST_DECIMALS`] places.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct InterestAccrued {
    #[serde(with = "super::interest::stored_day")]
    pub day: time::Date,
    #[serde(with = "super::interest::stored_balance")]
    pub balance: Decimal,
    #[serde(with = "super::interest::stored_rate")]
    pub annual_rate: Decimal,
    #[serde(with = "super::interest::stored_interest")]
    pub amount: Decimal,
}

/// Accrued interest paid into the balance: `amount` (signed, rounded to the currency) for the
/// `accrued` interest it zeroes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct InterestPaid {
    #[serde(with = "super::interest::stored_balance")]
    pub amount: Decimal,
    #[serde(with = "super::interest::stored_interest")]
    pub accrued: Decimal,
}

/// Money leaving or entering the account for a transfer (see [`super::transfer`]): the
/// transfer's id, the other account, the amount.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct MoneyTransferred {
    pub transfer_id: String,
    /// The other account (the target of money out, the source of money in).
    pub account: String,
    #[serde(with = "super::money::stored")]
    pub amount: Decimal,
}

/// A transfer's debit given back to its source account (the credit could not be made).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TransferRefunded {
    pub transfer_id: String,
    #[serde(with = "super::money::stored")]
    pub amount: Decimal,
}

/// An event of the account stream, decided by a command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AccountEvent {
    Opened(AccountOpened),
    Deposited(MoneyMoved),
    Withdrawn(MoneyMoved),
    OverdraftLimitSet(OverdraftLimitSet),
    Closed(AccountClosed),
    InterestAccrued(InterestAccrued),
    InterestPaid(InterestPaid),
    TransferredOut(MoneyTransferred),
    TransferredIn(MoneyTransferred),
    TransferRefunded(TransferRefunded),
}

impl AccountEvent {
    /// The stored event type.
    pub fn event_type(&self) -> &'static str {
        match self {
            Self::Opened(_) => ACCOUNT_OPENED,
            Self::Deposited(_) => MONEY_DEPOSITED,
            Self::Withdrawn(_) => MONEY_WITHDRAWN,
            Self::OverdraftLimitSet(_) => OVERDRAFT_LIMIT_SET,
            Self::Closed(_) => ACCOUNT_CLOSED,
            Self::InterestAccrued(_) => INTEREST_ACCRUED,
            Self::InterestPaid(_) => INTEREST_PAID,
            Self::TransferredOut(_) => MONEY_TRANSFERRED_OUT,
            Self::TransferredIn(_) => MONEY_TRANSFERRED_IN,
            Self::TransferRefunded(_) => TRANSFER_REFUNDED,
        }
    }

    /// The stored event data.
    pub fn to_raw(&self) -> Result<Box<serde_json::value::RawValue>, serde_json::Error> {
        match self {
            Self::Opened(e) => serde_json::value::to_raw_value(e),
            Self::Deposited(e) | Self::Withdrawn(e) => serde_json::value::to_raw_value(e),
            Self::OverdraftLimitSet(e) => serde_json::value::to_raw_value(e),
            Self::Closed(e) => serde_json::value::to_raw_value(e),
            Self::InterestAccrued(e) => serde_json::value::to_raw_value(e),
            Self::InterestPaid(e) => serde_json::value::to_raw_value(e),
            Self::TransferredOut(e) | Self::TransferredIn(e) => serde_json::value::to_raw_value(e),
            Self::TransferRefunded(e) => serde_json::value::to_raw_value(e),
        }
    }

    /// The data fields an event type has, exactly; `None` for types the account does not know.
    pub fn fields(event_type: &str) -> Option<&'static [&'static str]> {
        Some(match event_type {
            ACCOUNT_OPENED => &["overdraftLimit"],
            MONEY_DEPOSITED | MONEY_WITHDRAWN => &["amount"],
            OVERDRAFT_LIMIT_SET => &["limit"],
            ACCOUNT_CLOSED => &[],
            INTEREST_ACCRUED => &["day", "balance", "annualRate", "amount"],
            INTEREST_PAID => &["amount", "accrued"],
            MONEY_TRANSFERRED_OUT | MONEY_TRANSFERRED_IN => &["transferId", "account", "amount"],
            TRANSFER_REFUNDED => &["transferId", "amount"],
            _ => return None,
        })
    }

    /// Reads an event offered by another writer, as strictly as the bank writes them: a known
    /// event type, and data that is a JSON object with exactly that type's fields (no field
    /// missing, none unknown), each in the stored form. The reason says what is wrong.
    pub fn decode_exact(event: &RecordedEvent) -> Result<Self, String> {
        let Some(fields) = Self::fields(&event.event_type) else {
            return Err(format!(
                "{:?} is not an event type of the account (known: {ACCOUNT_OPENED}, \
                 {MONEY_DEPOSITED}, {MONEY_WITHDRAWN}, {OVERDRAFT_LIMIT_SET}, {ACCOUNT_CLOSED}, \
                 {INTEREST_ACCRUED}, {INTEREST_PAID}, {MONEY_TRANSFERRED_OUT}, \
                 {MONEY_TRANSFERRED_IN}, {TRANSFER_REFUNDED})",
                event.event_type
            ));
        };
        let object: serde_json::Map<String, serde_json::Value> =
            serde_json::from_str(event.data.get())
                .map_err(|_| "its data must be a JSON object".to_owned())?;
        if let Some(unknown) = object.keys().find(|k| !fields.contains(&k.as_str())) {
            return Err(format!(
                "its data has a field {unknown:?} that {} does not have (fields: {fields:?})",
                event.event_type
            ));
        }
        match Self::decode(event) {
            Ok(Some(decoded)) => Ok(decoded),
            Ok(None) => Err(format!(
                "{:?} is not an event type of the account",
                event.event_type
            )),
            Err(e) => Err(e.reason),
        }
    }

    /// Reads a stored event; `None` for event types the account does not know. Fields it does
    /// not know are ignored (a later writer may add some); amounts must be in the stored form.
    pub fn decode(event: &RecordedEvent) -> Result<Option<Self>, ApplyError> {
        Ok(Some(match event.event_type.as_str() {
            ACCOUNT_OPENED => Self::Opened(decode_data(event)?),
            MONEY_DEPOSITED => Self::Deposited(decode_data(event)?),
            MONEY_WITHDRAWN => Self::Withdrawn(decode_data(event)?),
            OVERDRAFT_LIMIT_SET => Self::OverdraftLimitSet(decode_data(event)?),
            ACCOUNT_CLOSED => Self::Closed(decode_data(event)?),
            INTEREST_ACCRUED => Self::InterestAccrued(decode_data(event)?),
            INTEREST_PAID => Self::InterestPaid(decode_data(event)?),
            MONEY_TRANSFERRED_OUT => Self::TransferredOut(decode_data(event)?),
            MONEY_TRANSFERRED_IN => Self::TransferredIn(decode_data(event)?),
            TRANSFER_REFUNDED => Self::TransferRefunded(decode_data(event)?),
            _ => return Ok(None),
        }))
    }
}
