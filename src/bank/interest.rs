//! Interest: accrued once per account per UTC day on the balance at the start of that day,
//! and paid into the balance on request.
//!
//! Guarantees:
//! - **the bank's rates, never the caller's**: the annual credit rate (on balances ≥ 0) and
//!   debit rate (on balances < 0) are settings ([`InterestRates`], read once at start); a
//!   request can carry a commentary, nothing else;
//! - **at most once per account per UTC day, decided in the append**: an `InterestAccrued` event
//!   names its day, the account's fold keeps the last day accrued and refuses a day that is not
//!   later ([`super::account::Account::accept`]), and the command appends at the exact version
//!   its decision read (the library's command executor). Two instances, a retried timer and a
//!   client calling twice can therefore never accrue one day twice: the second decision sees
//!   the first event, or its append loses the race and is decided again on the state that has
//!   it. A second call the same day writes nothing and answers 200 with `alreadyAccrued: true`;
//! - **the day's balance is an as-of-time projection**: the balance of the account as of 00:00
//!   UTC of the day (events recorded at or before that instant), which no later event changes;
//!   the event records that balance and the rate, so the fold checks the amount exactly;
//! - **exact arithmetic**: one day's interest is `balance × annual rate / 100 / 365` (Actual/365
//!   Fixed, every day a 365th of the year, leap years included), rounded half to even to
//!   [`INTEREST_DECIMALS`] places; accrued interest keeps those places (it is not money yet);
//!   paying rounds it half to even to the currency's places ([`payable`]) and zeroes it (the
//!   sub-cent remainder is dropped, never carried);
//! - **debit interest never breaks the overdraft rule silently**: when paying debit interest
//!   would take the balance below minus the overdraft limit, the same atomic append first
//!   extends the limit to exactly what the payment needs (an `OverdraftLimitSet` whose
//!   commentary says why), as the seed's `ExtendOverdraftForInterest` does; the answer says
//!   `overdraftExtended`.

use std::sync::OnceLock;

use rust_decimal::{Decimal, RoundingStrategy};
use serde::{Deserialize, Deserializer, Serializer};
use streamfold::config::ConfigError;
use streamfold::functions::CommandContext;
use streamfold::projection::{AsOf, CommandExecutor, CommandOptions};
use time::{Date, OffsetDateTime};

use super::account::{Account, AccountProjection, Refusal, Status};
use super::events::{AccountEvent, InterestAccrued, InterestPaid, OverdraftLimitSet};
use super::money::{format_money, CURRENCY_DECIMALS};
use super::service::{to_new_event, AccountView, Bank, BankError};
use super::ACCOUNTS;

/// Places of accrued interest.
pub const INTEREST_DECIMALS: u32 = 6;
/// Places an annual rate (in percent) may have.
pub const RATE_DECIMALS: u32 = 4;
/// Days per year of the day count (Actual/365 Fixed).
pub const DAYS_PER_YEAR: u32 = 365;
/// Largest annual rate, in percent.
pub const MAX_RATE_PERCENT: u32 = 100;
/// Most digits before the point of a stored balance or interest amount.
const MAX_INTEGER_DIGITS: usize = 20;

/// Setting: the annual credit rate in percent, paid on balances ≥ 0.
pub const CREDIT_RATE_SETTING: &str = "BankCreditInterestRate";
/// Setting: the annual debit rate in percent, charged on balances < 0.
pub const DEBIT_RATE_SETTING: &str = "BankDebitInterestRate";
/// Setting: whole days added to the UTC date the bank accrues for (default 0). A testing and
/// demonstration aid: with 1, "today" is tomorrow, so its start-of-day balance includes what
/// was just done. Never set it in production.
pub const DAY_OFFSET_SETTING: &str = "BankInterestDayOffset";
/// Default annual credit rate, in percent.
pub const DEFAULT_CREDIT_RATE: &str = "1.5";
/// Default annual debit rate, in percent.
pub const DEFAULT_DEBIT_RATE: &str = "18";

/// The bank's interest settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct InterestRates {
    /// Annual percent on balances ≥ 0.
    pub credit: Decimal,
    /// Annual percent on balances < 0.
    pub debit: Decimal,
    /// Days added to today's UTC date (see [`DAY_OFFSET_SETTING`]).
    pub day_offset: i64,
}

impl Default for InterestRates {
    fn default() -> Self {
        Self {
            credit: Decimal::new(15, 1),
            debit: Decimal::from(18),
            day_offset: 0,
        }
    }
}

static RATES: OnceLock<InterestRates> = OnceLock::new();

impl InterestRates {
    /// Reads the settings from name/value pairs; a rate that is not a decimal with at most
    /// [`RATE_DECIMALS`] places between 0 and [`MAX_RATE_PERCENT`] is an error naming it.
    pub fn from_pairs<'a>(
        mut get: impl FnMut(&str) -> Option<&'a str>,
    ) -> Result<Self, ConfigError> {
        let rate = |name: &str, text: Option<&str>, default: &str| {
            let text = text
                .map(str::trim)
                .filter(|t| !t.is_empty())
                .unwrap_or(default);
            parse_plain(text, RATE_DECIMALS)
                .ok()
                .filter(|r| *r >= Decimal::ZERO && *r <= Decimal::from(MAX_RATE_PERCENT))
                .ok_or_else(|| {
                    config_error(
                        name,
                        format!(
                            "must be an annual rate in percent from 0 to {MAX_RATE_PERCENT} with \
                             at most {RATE_DECIMALS} decimal places, not {text:?}"
                        ),
                    )
                })
        };
        let credit = rate(
            CREDIT_RATE_SETTING,
            get(CREDIT_RATE_SETTING),
            DEFAULT_CREDIT_RATE,
        )?;
        let debit = rate(
            DEBIT_RATE_SETTING,
            get(DEBIT_RATE_SETTING),
            DEFAULT_DEBIT_RATE,
        )?;
        let day_offset = match get(DAY_OFFSET_SETTING)
            .map(str::trim)
            .filter(|t| !t.is_empty())
        {
            None => 0,
            Some(text) => text
                .parse::<i64>()
                .ok()
                .filter(|d| d.abs() <= 3650)
                .ok_or_else(|| {
                    config_error(
                        DAY_OFFSET_SETTING,
                        format!("must be a whole number of days within ±3650, not {text:?}"),
                    )
                })?,
        };
        Ok(Self {
            credit,
            debit,
            day_offset,
        })
    }

    /// Reads the process environment and keeps the result for [`InterestRates::current`]
    /// (the first successful call wins; settings do not change while a process runs).
    pub fn init_from_env() -> Result<Self, ConfigError> {
        let env: std::collections::HashMap<String, String> = std::env::vars().collect();
        let rates = Self::from_pairs(|name| env.get(name).map(String::as_str))?;
        Ok(*RATES.get_or_init(|| rates))
    }

    /// The rates read at start ([`InterestRates::init_from_env`]), or the defaults.
    pub fn current() -> Self {
        RATES.get().copied().unwrap_or_default()
    }

    /// The annual rate that applies to `balance`.
    pub fn for_balance(&self, balance: Decimal) -> Decimal {
        if balance < Decimal::ZERO {
            self.debit
        } else {
            self.credit
        }
    }

    /// The UTC day the bank accrues for at `now`.
    pub fn day_at(&self, now: OffsetDateTime) -> Date {
        let today = now.date();
        today
            .checked_add(time::Duration::days(self.day_offset))
            .unwrap_or(today)
    }
}

fn config_error(setting: &str, reason: String) -> ConfigError {
    ConfigError::new(setting, reason)
}

/// One day's interest on `balance` at `annual_rate` percent: `balance × rate / 100 / 365`,
/// rounded half to even to [`INTEREST_DECIMALS`] places (negative on a negative balance).
pub fn daily_interest(balance: Decimal, annual_rate: Decimal) -> Result<Decimal, Refusal> {
    let per_year = Decimal::from(MAX_RATE_PERCENT)
        .checked_mul(Decimal::from(DAYS_PER_YEAR))
        .ok_or(Refusal::OutOfRange)?;
    let mut amount = balance
        .checked_mul(annual_rate)
        .and_then(|x| x.checked_div(per_year))
        .ok_or(Refusal::OutOfRange)?
        .round_dp_with_strategy(INTEREST_DECIMALS, RoundingStrategy::MidpointNearestEven);
    amount.rescale(INTEREST_DECIMALS);
    Ok(amount)
}

/// Accrued interest plus one day's, checked.
pub fn add_interest(accrued: Decimal, amount: Decimal) -> Result<Decimal, Refusal> {
    let mut sum = accrued.checked_add(amount).ok_or(Refusal::OutOfRange)?;
    sum.rescale(INTEREST_DECIMALS);
    Ok(sum)
}

/// What paying `accrued` interest moves: rounded half to even to the currency's places.
pub fn payable(accrued: Decimal) -> Decimal {
    let mut amount =
        accrued.round_dp_with_strategy(CURRENCY_DECIMALS, RoundingStrategy::MidpointNearestEven);
    amount.rescale(CURRENCY_DECIMALS);
    amount
}

/// Formats accrued interest with exactly [`INTEREST_DECIMALS`] places.
pub fn format_interest(value: Decimal) -> String {
    let mut v = value;
    v.rescale(INTEREST_DECIMALS);
    v.to_string()
}

/// Parses a plain decimal: an optional `-`, digits without leading zeros, and optionally a
/// point followed by 1 to `places` digits. Nothing else (no spaces, exponent or `+`).
pub fn parse_plain(text: &str, places: u32) -> Result<Decimal, String> {
    let refuse = || {
        Err(format!(
            "must be a decimal number with at most {places} decimal places, not {text:?}"
        ))
    };
    let unsigned = text.strip_prefix('-').unwrap_or(text);
    let (integer, fraction) = match unsigned.split_once('.') {
        Some((i, f)) => (i, Some(f)),
        None => (unsigned, None),
    };
    if integer.is_empty()
        || integer.len() > MAX_INTEGER_DIGITS
        || !integer.bytes().all(|b| b.is_ascii_digit())
        || (integer.len() > 1 && integer.starts_with('0'))
    {
        return refuse();
    }
    if let Some(fraction) = fraction {
        if fraction.is_empty()
            || fraction.len() > places as usize
            || !fraction.bytes().all(|b| b.is_ascii_digit())
        {
            return refuse();
        }
    }
    Decimal::from_str_exact(text).or_else(|_| refuse())
}

/// Writes a day `YYYY-MM-DD`.
pub fn format_day(day: Date) -> String {
    format!(
        "{:04}-{:02}-{:02}",
        day.year(),
        u8::from(day.month()),
        day.day()
    )
}

/// Parses a day written `YYYY-MM-DD`.
pub fn parse_day(text: &str) -> Result<Date, String> {
    let format = time::macros::format_description!("[year]-[month]-[day]");
    Date::parse(text, &format)
        .map_err(|_| format!("must be a day written YYYY-MM-DD, not {text:?}"))
}

/// Serde for a day in stored data: `"2026-12-02"`.
pub mod stored_day {
    use super::*;

    pub fn serialize<S: Serializer>(value: &Date, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&format_day(*value))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Date, D::Error> {
        let text = <std::borrow::Cow<'de, str>>::deserialize(deserializer)?;
        parse_day(&text).map_err(serde::de::Error::custom)
    }
}

/// Serde for an optional day in a state.
pub mod stored_day_opt {
    use super::*;

    pub fn serialize<S: Serializer>(
        value: &Option<Date>,
        serializer: S,
    ) -> Result<S::Ok, S::Error> {
        match value {
            Some(day) => serializer.serialize_str(&format_day(*day)),
            None => serializer.serialize_none(),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(
        deserializer: D,
    ) -> Result<Option<Date>, D::Error> {
        let text = <Option<std::borrow::Cow<'de, str>>>::deserialize(deserializer)?;
        text.map(|t| parse_day(&t).map_err(serde::de::Error::custom))
            .transpose()
    }
}

macro_rules! stored_decimal {
    ($name:ident, $places:expr, $doc:literal) => {
        #[doc = $doc]
        pub mod $name {
            use super::*;

            pub fn serialize<S: Serializer>(
                value: &Decimal,
                serializer: S,
            ) -> Result<S::Ok, S::Error> {
                let mut v = *value;
                v.rescale($places);
                serializer.serialize_str(&v.to_string())
            }

            pub fn deserialize<'de, D: Deserializer<'de>>(
                deserializer: D,
            ) -> Result<Decimal, D::Error> {
                let text = <std::borrow::Cow<'de, str>>::deserialize(deserializer)?;
                parse_plain(&text, $places).map_err(serde::de::Error::custom)
            }
        }
    };
}

stored_decimal!(
    stored_balance,
    CURRENCY_DECIMALS,
    "Serde for a signed amount of money in stored data (`\"-12.50\"`)."
);
stored_decimal!(
    stored_rate,
    RATE_DECIMALS,
    "Serde for an annual rate in percent in stored data (`\"1.5000\"`)."
);
stored_decimal!(
    stored_interest,
    INTEREST_DECIMALS,
    "Serde for interest in stored data (`\"0.041096\"`)."
);

/// What AccrueInterest did.
#[derive(Debug, Clone)]
pub struct Accrual {
    /// The account after the call (with the day's accrual, whenever it was made).
    pub view: AccountView,
    /// The UTC day accrued for.
    pub day: Date,
    /// The accrual this call made; `None` when the day had been accrued before.
    pub accrued: Option<InterestAccrued>,
}

/// What PayInterest did.
#[derive(Debug, Clone)]
pub struct Payment {
    pub view: AccountView,
    /// Moved into the balance (signed; zero when nothing was accrued).
    pub paid: Decimal,
    /// The accrued interest it zeroed.
    pub accrued: Decimal,
    /// The new overdraft limit, when paying debit interest needed one.
    pub overdraft_extended: Option<Decimal>,
    pub correlation_id: Option<String>,
    pub replayed: bool,
}

impl Bank {
    /// Accrues `day`'s interest on the account (see the module): at most once per day,
    /// decided on the account's state in the append itself.
    pub async fn accrue_interest(
        &self,
        account_number: &str,
        day: Date,
        rates: &InterestRates,
        context: &CommandContext,
    ) -> Result<Accrual, BankError> {
        let stream = Self::stream(account_number)?;
        let runner = self.app().runner(&ACCOUNTS)?;
        let start = day.midnight().assume_utc();
        let at_start = runner
            .run(&stream, &AccountProjection, AsOf::Time(start))
            .await?;
        let balance = match at_start.state.status {
            Status::Open => at_start.state.balance,
            _ => Decimal::ZERO,
        };
        let annual_rate = rates.for_balance(balance);
        let accrual = InterestAccrued {
            day,
            balance,
            annual_rate,
            amount: daily_interest(balance, annual_rate)?,
        };
        let executor =
            CommandExecutor::new(&runner, &AccountProjection, self.app().command_policy());
        let executed = executor
            .execute(
                &stream,
                CommandOptions::default(),
                |account: &Account, _version| {
                    if account.status == Status::NotOpened {
                        return Err(BankError::NotFound(account_number.to_owned()));
                    }
                    if account.status == Status::Closed {
                        return Err(Refusal::Closed.into());
                    }
                    if account.last_accrual_day.is_some_and(|last| last >= day) {
                        return Ok(Vec::new());
                    }
                    let event = AccountEvent::InterestAccrued(accrual.clone());
                    account.accept(&event)?;
                    Ok(vec![to_new_event(&event, context)?])
                },
            )
            .await?;
        let made = !executed.events.is_empty();
        Ok(Accrual {
            view: AccountView {
                account: executed.state,
                sequence: executed.outcome.version,
            },
            day,
            accrued: made.then_some(accrual),
        })
    }

    /// Pays the accrued interest into the balance and zeroes it (see the module), extending
    /// the overdraft limit in the same append when debit interest needs it.
    pub async fn pay_interest(
        &self,
        account_number: &str,
        context: &CommandContext,
    ) -> Result<Payment, BankError> {
        let stream = Self::stream(account_number)?;
        let runner = self.app().runner(&ACCOUNTS)?;
        let executor =
            CommandExecutor::new(&runner, &AccountProjection, self.app().command_policy());
        let idempotency = context.idempotency("PayInterest", None)?;
        let executed = executor
            .execute(
                &stream,
                CommandOptions::with_key(idempotency),
                |account: &Account, _version| {
                    if account.status == Status::NotOpened {
                        return Err(BankError::NotFound(account_number.to_owned()));
                    }
                    if account.status == Status::Closed {
                        return Err(Refusal::Closed.into());
                    }
                    pay_events(account, context)
                },
            )
            .await?;
        let replayed = executed.replayed();
        let mut payment = Payment {
            view: AccountView {
                account: executed.state,
                sequence: executed.outcome.version,
            },
            paid: Decimal::ZERO,
            accrued: Decimal::ZERO,
            overdraft_extended: None,
            correlation_id: executed
                .events
                .first()
                .and_then(|e| e.metadata.correlation_id.clone()),
            replayed,
        };
        payment.paid.rescale(CURRENCY_DECIMALS);
        for event in &executed.events {
            // The command's own events, just folded by the executor: they decode.
            match AccountEvent::decode(event).ok().flatten() {
                Some(AccountEvent::InterestPaid(paid)) => {
                    payment.paid = paid.amount;
                    payment.accrued = paid.accrued;
                }
                Some(AccountEvent::OverdraftLimitSet(set)) => {
                    payment.overdraft_extended = Some(set.limit)
                }
                _ => {}
            }
        }
        Ok(payment)
    }
}

/// The events that pay `account`'s accrued interest: none when nothing is accrued; the
/// payment, preceded by an overdraft extension when debit interest would break the limit.
fn pay_events(
    account: &Account,
    context: &CommandContext,
) -> Result<Vec<streamfold::stream::NewEvent>, BankError> {
    if account.accrued_interest.is_zero() {
        return Ok(Vec::new());
    }
    let amount = payable(account.accrued_interest);
    let mut events = Vec::new();
    let mut state = account.clone();
    let after = account
        .balance
        .checked_add(amount)
        .ok_or(Refusal::OutOfRange)?;
    let limit_needed = Decimal::ZERO
        .checked_sub(after)
        .ok_or(Refusal::OutOfRange)?;
    if amount < Decimal::ZERO && limit_needed > account.overdraft_limit {
        let extension = AccountEvent::OverdraftLimitSet(OverdraftLimitSet {
            limit: limit_needed,
        });
        state = state.accept(&extension)?;
        let why = CommandContext {
            commentary: Some(format!(
                "overdraft limit extended from {} to {} to pay debit interest of {}",
                format_money(account.overdraft_limit),
                format_money(limit_needed),
                format_money(amount)
            )),
            ..context.clone()
        };
        events.push(to_new_event(&extension, &why)?);
    }
    let paid = AccountEvent::InterestPaid(InterestPaid {
        amount,
        accrued: account.accrued_interest,
    });
    state.accept(&paid)?;
    events.push(to_new_event(&paid, context)?);
    Ok(events)
}

#[cfg(test)]
mod tests {
    use super::super::account::tests::{dec, open};
    use super::*;

    #[test]
    fn one_day_is_a_365th_of_the_annual_rate_rounded_half_to_even() {
        assert_eq!(
            format_interest(daily_interest(dec("1000"), dec("1.5")).unwrap()),
            "0.041096"
        );
        assert_eq!(
            format_interest(daily_interest(dec("-250.00"), dec("18")).unwrap()),
            "-0.123288"
        );
        assert_eq!(daily_interest(dec("0"), dec("18")).unwrap(), Decimal::ZERO);
        // 0.0000005 exactly: half to even goes down to 0.000000, 0.0000015 up to 0.000002.
        assert_eq!(
            daily_interest(dec("0.01"), dec("1.825")).unwrap(),
            dec("0.000000")
        );
        assert_eq!(
            daily_interest(dec("0.03"), dec("1.825")).unwrap(),
            dec("0.000002")
        );
    }

    #[test]
    fn paying_rounds_to_the_currency_half_to_even() {
        assert_eq!(format_money(payable(dec("0.125000"))), "0.12");
        assert_eq!(format_money(payable(dec("0.135000"))), "0.14");
        assert_eq!(format_money(payable(dec("-0.123288"))), "-0.12");
        assert_eq!(payable(dec("0.004999")), Decimal::ZERO);
    }

    #[test]
    fn rates_are_settings_with_defaults_and_strict_values() {
        let none = InterestRates::from_pairs(|_| None).unwrap();
        assert_eq!(none, InterestRates::default());
        let set = InterestRates::from_pairs(|n| match n {
            CREDIT_RATE_SETTING => Some("2.25"),
            DEBIT_RATE_SETTING => Some("0"),
            DAY_OFFSET_SETTING => Some("1"),
            _ => None,
        })
        .unwrap();
        assert_eq!(
            (set.credit, set.debit, set.day_offset),
            (dec("2.25"), dec("0"), 1)
        );
        for bad in ["-1", "100.01", "1e2", "abc", "1.00001"] {
            assert!(
                InterestRates::from_pairs(|n| (n == CREDIT_RATE_SETTING).then_some(bad)).is_err(),
                "{bad}"
            );
        }
        assert_eq!(set.for_balance(dec("-0.01")), dec("0"));
        assert_eq!(set.for_balance(dec("0")), dec("2.25"));
    }

    fn accrued(day: &str, balance: &str, rate: &str) -> AccountEvent {
        let (balance, annual_rate) = (dec(balance), dec(rate));
        AccountEvent::InterestAccrued(InterestAccrued {
            day: parse_day(day).unwrap(),
            balance,
            annual_rate,
            amount: daily_interest(balance, annual_rate).unwrap(),
        })
    }

    #[test]
    fn a_day_accrues_once_and_only_in_order() {
        let a = open("1000", "0");
        let once = a.accept(&accrued("2026-12-02", "1000", "1.5")).unwrap();
        assert_eq!(format_interest(once.accrued_interest), "0.041096");
        assert!(matches!(
            once.accept(&accrued("2026-12-02", "1000", "1.5")),
            Err(Refusal::AlreadyAccrued { .. })
        ));
        assert!(matches!(
            once.accept(&accrued("2026-12-01", "1000", "1.5")),
            Err(Refusal::AlreadyAccrued { .. })
        ));
        let twice = once.accept(&accrued("2026-12-03", "1000", "1.5")).unwrap();
        assert_eq!(format_interest(twice.accrued_interest), "0.082192");
        // An amount that is not the balance times the rate is refused.
        let AccountEvent::InterestAccrued(mut wrong) = accrued("2026-12-04", "1000", "1.5") else {
            unreachable!()
        };
        wrong.amount = dec("5.000000");
        assert!(matches!(
            twice.accept(&AccountEvent::InterestAccrued(wrong)),
            Err(Refusal::InterestMismatch(_))
        ));
    }

    #[test]
    fn debit_interest_beyond_the_limit_extends_it_in_the_same_append() {
        let mut a = open("-100", "100");
        a.accrued_interest = dec("-1.234567");
        let events = pay_events(&a, &CommandContext::default()).unwrap();
        assert_eq!(
            events
                .iter()
                .map(|e| e.event_type.as_str())
                .collect::<Vec<_>>(),
            ["OverdraftLimitSet", "InterestPaid"]
        );
        assert!(events[1].data.get().contains("\"-1.23\""));
        // Within the limit: the payment alone.
        let mut b = open("-100", "200");
        b.accrued_interest = dec("-1.234567");
        assert_eq!(pay_events(&b, &CommandContext::default()).unwrap().len(), 1);
        // Without the extension, the rules refuse it.
        let paid = AccountEvent::InterestPaid(InterestPaid {
            amount: dec("-1.23"),
            accrued: dec("-1.234567"),
        });
        assert!(matches!(
            a.accept(&paid),
            Err(Refusal::InsufficientFunds { .. })
        ));
        let after = b.accept(&paid).unwrap();
        assert_eq!(after.balance, dec("-101.23"));
        assert!(after.accrued_interest.is_zero());
        // Nothing accrued: nothing to write.
        assert!(pay_events(&open("5", "0"), &CommandContext::default())
            .unwrap()
            .is_empty());
    }

    #[test]
    fn stored_forms_are_strict() {
        assert_eq!(parse_plain("-0.041096", 6).unwrap(), dec("-0.041096"));
        for bad in ["", "-", "01", "1.", ".5", "1e2", " 1", "+1", "0.0000001"] {
            assert!(parse_plain(bad, 6).is_err(), "{bad}");
        }
        assert!(parse_day("2026-12-02").is_ok());
        assert!(parse_day("2026-13-02").is_err());
        assert_eq!(format_day(parse_day("0999-01-05").unwrap()), "0999-01-05");
    }
}
