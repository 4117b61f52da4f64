//! The bank account's events: what happened to an account, in the words of the business.
//!
//! Amounts are stored as strings with the currency's decimal places (`"12.50"`), so any reader
//! of the stream gets them exactly.

use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};
use streamfold::projection::{decode_data, ApplyError};
use streamfold::stream::RecordedEvent;

pub const ACCOUNT_OPENED: &str = "AccountOpened";
pub const MONEY_DEPOSITED: &str = "MoneyDeposited";
pub const MONEY_WITHDRAWN: &str = "MoneyWithdrawn";
pub const OVERDRAFT_LIMIT_SET: &str = "OverdraftLimitSet";
pub const ACCOUNT_CLOSED: &str = "AccountClosed";

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AccountOpened {
    #[serde(with = "rust_decimal::serde::str")]
    pub overdraft_limit: Decimal,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct MoneyMoved {
    #[serde(with = "rust_decimal::serde::str")]
    pub amount: Decimal,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct OverdraftLimitSet {
    #[serde(with = "rust_decimal::serde::str")]
    pub limit: Decimal,
}

#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct AccountClosed {}

/// An event of the account stream, decided by a command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AccountEvent {
    Opened(AccountOpened),
    Deposited(MoneyMoved),
    Withdrawn(MoneyMoved),
    OverdraftLimitSet(OverdraftLimitSet),
    Closed(AccountClosed),
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
        }
    }

    /// The stored event data.
    pub fn to_raw(&self) -> Result<Box<serde_json::value::RawValue>, serde_json::Error> {
        match self {
            Self::Opened(e) => serde_json::value::to_raw_value(e),
            Self::Deposited(e) | Self::Withdrawn(e) => serde_json::value::to_raw_value(e),
            Self::OverdraftLimitSet(e) => serde_json::value::to_raw_value(e),
            Self::Closed(e) => serde_json::value::to_raw_value(e),
        }
    }

    /// Reads a stored event; `None` for event types the account does not know.
    pub fn decode(event: &RecordedEvent) -> Result<Option<Self>, ApplyError> {
        Ok(Some(match event.event_type.as_str() {
            ACCOUNT_OPENED => Self::Opened(decode_data(event)?),
            MONEY_DEPOSITED => Self::Deposited(decode_data(event)?),
            MONEY_WITHDRAWN => Self::Withdrawn(decode_data(event)?),
            OVERDRAFT_LIMIT_SET => Self::OverdraftLimitSet(decode_data(event)?),
            ACCOUNT_CLOSED => Self::Closed(decode_data(event)?),
            _ => return Ok(None),
        }))
    }
}
