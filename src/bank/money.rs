//! Money: exact decimals with the currency's number of decimal places.
//!
//! An amount arrives as a JSON number or a JSON string (`12.5`, `"12.50"`); either way the digits
//! the client wrote are parsed as a decimal, never through a floating-point number, and an
//! amount with more decimal places than the currency has is refused rather than rounded.

use rust_decimal::Decimal;
use serde_json::value::RawValue;

/// Decimal places of the account currency.
pub const CURRENCY_DECIMALS: u32 = 2;
/// Largest amount of one operation and largest overdraft limit (keeps sums far from overflow).
pub const MAX_AMOUNT: Decimal = Decimal::from_parts(2_764_472_320, 232_830, 0, false, 0); // 10^15

/// Why an amount was refused; the text names the field.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field} {reason}")]
pub struct AmountError {
    pub field: &'static str,
    pub reason: String,
}

/// How an amount may be signed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sign {
    /// Strictly greater than zero (deposits, withdrawals).
    Positive,
    /// Zero or more (overdraft limits).
    NonNegative,
}

/// Parses the JSON text of an amount field: a number or a string holding a decimal.
pub fn parse_amount(
    field: &'static str,
    raw: &RawValue,
    sign: Sign,
) -> Result<Decimal, AmountError> {
    let fail = |reason: String| AmountError { field, reason };
    let text = raw.get().trim();
    let digits: String = if text.starts_with('"') {
        serde_json::from_str::<String>(text).map_err(|_| fail("must be a decimal number".into()))?
    } else if text.starts_with(|c: char| c == '-' || c.is_ascii_digit()) {
        text.to_owned()
    } else {
        return Err(fail(format!(
            "must be a decimal number (a JSON number or a string such as \"12.50\"), not {text}"
        )));
    };
    let digits = digits.trim();
    let value = if digits.contains(['e', 'E']) {
        Decimal::from_scientific(digits)
    } else {
        Decimal::from_str_exact(digits)
    }
    .map_err(|_| fail(format!("{digits:?} is not a decimal number")))?;
    if value.normalize().scale() > CURRENCY_DECIMALS {
        return Err(fail(format!(
            "{digits} has more than {CURRENCY_DECIMALS} decimal places"
        )));
    }
    match sign {
        Sign::Positive if value <= Decimal::ZERO => {
            return Err(fail(format!("must be greater than zero, not {digits}")))
        }
        Sign::NonNegative if value < Decimal::ZERO => {
            return Err(fail(format!("must not be negative, not {digits}")))
        }
        _ => {}
    }
    if value > MAX_AMOUNT {
        return Err(fail(format!("must be at most {MAX_AMOUNT}")));
    }
    let mut exact = value;
    exact.rescale(CURRENCY_DECIMALS);
    Ok(exact)
}

/// Formats money with exactly the currency's decimal places (`12.5` → `"12.50"`).
pub fn format_money(value: Decimal) -> String {
    let mut v = value.round_dp(CURRENCY_DECIMALS);
    v.rescale(CURRENCY_DECIMALS);
    v.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(json: &str) -> Result<Decimal, AmountError> {
        let raw = RawValue::from_string(json.to_owned()).unwrap();
        parse_amount("amount", &raw, Sign::Positive)
    }

    #[test]
    fn numbers_and_strings_parse_exactly() {
        assert_eq!(format_money(parse("12.5").unwrap()), "12.50");
        assert_eq!(format_money(parse("\"12.50\"").unwrap()), "12.50");
        assert_eq!(format_money(parse("0.1").unwrap()), "0.10");
        assert_eq!(format_money(parse("1e2").unwrap()), "100.00");
        assert_eq!(
            format_money(parse("999999999999999").unwrap()),
            "999999999999999.00"
        );
        assert_eq!(format_money(parse("12.500").unwrap()), "12.50");
    }

    #[test]
    fn bad_amounts_are_named() {
        for bad in [
            "0",
            "-1",
            "\"abc\"",
            "true",
            "null",
            "{}",
            "1.001",
            "\"1.001\"",
            "1e400",
            "1000000000000001",
            "\"\"",
        ] {
            let err = parse(bad).unwrap_err();
            assert_eq!(err.field, "amount", "{bad}");
        }
    }

    #[test]
    fn max_amount_is_one_quadrillion() {
        assert_eq!(MAX_AMOUNT, Decimal::from(1_000_000_000_000_000u64));
    }

    #[test]
    fn overdraft_limits_may_be_zero() {
        let raw = RawValue::from_string("0".into()).unwrap();
        assert_eq!(
            parse_amount("limit", &raw, Sign::NonNegative).unwrap(),
            Decimal::ZERO
        );
    }
}
