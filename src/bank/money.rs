//! Money: exact decimals with the currency's number of decimal places.
//!
//! An amount arrives as a JSON number or a JSON string (`12.5`, `"12.50"`); either way the
//! characters the client wrote are checked against one strict grammar and parsed as a decimal,
//! never through a floating-point number. Stored event data holds amounts as strings in the
//! same grammar (`"12.50"`), and is read back by the same parser.
//!
//! The grammar (the JSON number grammar without an exponent, and at most the currency's
//! places):
//!
//! ```text
//! decimal  = [ "-" ] integer [ "." fraction ]
//! integer  = "0" / ( %x31-39 *DIGIT )      ; no leading zeros: "0", "7", "120"
//! fraction = 1*2DIGIT                      ; one or two places: "12.5", "12.50"
//! ```
//!
//! So `_`, exponents (`1e2`, in strings and in JSON numbers), hex, a leading `+`, spaces
//! (leading, trailing or inner, inside a string), an empty string, `.5`, `5.`, `007` and
//! `1.001` or `12.500` (more than two places written) are all refused, each with a reason that
//! names the field. A value is then checked for its sign ([`Sign`]) and against
//! [`MAX_AMOUNT`], so every amount that passes fits far inside `Decimal`'s range and sums of
//! them are checked, never wrapped or panicking.

use rust_decimal::Decimal;
use serde::{Deserialize, Deserializer, Serializer};
use serde_json::value::RawValue;

/// Decimal places of the account currency.
pub const CURRENCY_DECIMALS: u32 = 2;
/// Largest amount of one operation and largest overdraft limit (keeps sums far from overflow).
pub const MAX_AMOUNT: Decimal = Decimal::from_parts(2_764_472_320, 232_830, 0, false, 0); // 10^15
/// Most digits before the point of an amount within [`MAX_AMOUNT`] (10^15 has 16).
const MAX_INTEGER_DIGITS: usize = 16;

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

/// Parses the JSON text of an amount field: a number or a string holding a decimal in the
/// module's grammar, then checked by [`check_amount`]. The result has exactly
/// [`CURRENCY_DECIMALS`] places.
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
    let value = parse_decimal(&digits).map_err(fail)?;
    check_amount(field, value, sign)
}

/// Parses text in the module's grammar (nothing around it, not even spaces). The reason names
/// what is wrong, for a message that starts with the field's name.
pub fn parse_decimal(text: &str) -> Result<Decimal, String> {
    let refuse = |why: &str| {
        Err(format!(
            "must be a decimal number with at most {CURRENCY_DECIMALS} decimal places \
             such as 12.50 ({why}), not {text:?}"
        ))
    };
    let unsigned = text.strip_prefix('-').unwrap_or(text);
    let (integer, fraction) = match unsigned.split_once('.') {
        Some((integer, fraction)) => (integer, Some(fraction)),
        None => (unsigned, None),
    };
    if text.is_empty() {
        return refuse("it is empty");
    }
    if integer.is_empty() || !integer.bytes().all(|b| b.is_ascii_digit()) {
        return refuse(
            "digits must come first, with no sign other than a leading -, spaces, `_` or exponent",
        );
    }
    if integer.len() > 1 && integer.starts_with('0') {
        return refuse("no leading zeros");
    }
    if let Some(fraction) = fraction {
        if fraction.is_empty() || !fraction.bytes().all(|b| b.is_ascii_digit()) {
            return refuse("the point must be followed by digits only");
        }
        if fraction.len() > CURRENCY_DECIMALS as usize {
            return Err(format!(
                "{text} has more than {CURRENCY_DECIMALS} decimal places"
            ));
        }
    }
    if integer.len() > MAX_INTEGER_DIGITS {
        return Err(format!("must be at most {MAX_AMOUNT}, not {text}"));
    }
    // At most 16 + 2 digits: always within Decimal's 28.
    Decimal::from_str_exact(text).or_else(|_| refuse("out of range"))
}

/// Checks a decimal as an amount of this currency: at most [`CURRENCY_DECIMALS`] places, the
/// sign `sign` asks for, at most [`MAX_AMOUNT`]. Returns it with exactly the currency's places.
/// Used on what clients send and on what stored events hold.
pub fn check_amount(
    field: &'static str,
    value: Decimal,
    sign: Sign,
) -> Result<Decimal, AmountError> {
    let fail = |reason: String| Err(AmountError { field, reason });
    if value.normalize().scale() > CURRENCY_DECIMALS {
        return fail(format!(
            "{value} has more than {CURRENCY_DECIMALS} decimal places"
        ));
    }
    match sign {
        Sign::Positive if value <= Decimal::ZERO => {
            return fail(format!("must be greater than zero, not {value}"))
        }
        Sign::NonNegative if value < Decimal::ZERO => {
            return fail(format!("must not be negative, not {value}"))
        }
        _ => {}
    }
    if value > MAX_AMOUNT {
        return fail(format!("must be at most {MAX_AMOUNT}, not {value}"));
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

/// Serde for amounts in stored event data: written as a string with the currency's places
/// (`"12.50"`), read back only from a string in the module's grammar (a number, `"1_000"` or
/// `"1e2"` in stored data is unreadable, not guessed at). Use with `#[serde(with = ...)]`.
pub mod stored {
    use super::*;

    pub fn serialize<S: Serializer>(value: &Decimal, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&format_money(*value))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Decimal, D::Error> {
        let text = <std::borrow::Cow<'de, str>>::deserialize(deserializer)?;
        parse_decimal(&text).map_err(serde::de::Error::custom)
    }
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
        assert_eq!(format_money(parse("100").unwrap()), "100.00");
        assert_eq!(format_money(parse("\"0.01\"").unwrap()), "0.01");
        assert_eq!(
            format_money(parse("999999999999999").unwrap()),
            "999999999999999.00"
        );
        assert_eq!(
            format_money(parse("\"1000000000000000.00\"").unwrap()),
            "1000000000000000.00"
        );
        assert_eq!(parse("12.5").unwrap().scale(), CURRENCY_DECIMALS);
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

    /// Each form outside the grammar is refused, as a string and (where JSON allows it) as a
    /// number, with a reason.
    #[test]
    fn the_grammar_is_strict() {
        for (bad, why) in [
            ("\"1_000\"", "underscore"),
            ("\"1e2\"", "exponent in a string"),
            ("1e2", "exponent in a number"),
            ("1E2", "capital exponent in a number"),
            ("1.5e1", "fraction and exponent"),
            ("\"1e-2\"", "negative exponent"),
            ("\"0x10\"", "hex"),
            ("\"1 000\"", "inner space"),
            ("\"+5\"", "leading plus"),
            ("\" 5\"", "leading space inside the string"),
            ("\"5 \"", "trailing space inside the string"),
            ("\"\\t5\"", "tab inside the string"),
            ("\"\"", "empty string"),
            ("\".5\"", "no digit before the point"),
            ("\"5.\"", "no digit after the point"),
            ("\"007\"", "leading zeros"),
            ("\"12.500\"", "three places written"),
            ("12.500", "three places written, as a number"),
            ("\"1.001\"", "three places"),
            ("\"5.-1\"", "sign in the fraction"),
            ("\"--5\"", "double sign"),
            ("\"-\"", "sign alone"),
            ("\"1.2.3\"", "two points"),
            ("\"NaN\"", "not a number"),
            ("\"Infinity\"", "infinity"),
            ("\"１\"", "non-ASCII digit"),
            ("\"99999999999999999999999999999999\"", "huge"),
            ("\"79228162514264337593543950335\"", "Decimal's maximum"),
        ] {
            let err = parse(bad).expect_err(why);
            assert_eq!(err.field, "amount", "{why}");
            assert!(!err.reason.is_empty(), "{why}");
        }
    }

    #[test]
    fn the_grammar_accepts_what_it_says() {
        for (good, expected) in [
            ("0", "0.00"),
            ("7", "7.00"),
            ("120", "120.00"),
            ("0.5", "0.50"),
            ("12.50", "12.50"),
            ("-3.25", "-3.25"),
        ] {
            assert_eq!(
                format_money(parse_decimal(good).unwrap()),
                expected,
                "{good}"
            );
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

    #[test]
    fn checked_values_keep_to_the_rules() {
        let dec = |s: &str| s.parse::<Decimal>().unwrap();
        assert!(check_amount("amount", dec("-500"), Sign::Positive).is_err());
        assert!(check_amount("amount", dec("0"), Sign::Positive).is_err());
        assert!(check_amount("limit", dec("0"), Sign::NonNegative).is_ok());
        assert!(check_amount("limit", dec("-0.01"), Sign::NonNegative).is_err());
        assert!(check_amount("amount", dec("0.001"), Sign::Positive).is_err());
        assert!(check_amount("amount", Decimal::MAX, Sign::Positive).is_err());
        assert_eq!(
            check_amount("amount", dec("1.500"), Sign::Positive)
                .unwrap()
                .to_string(),
            "1.50"
        );
    }

    #[test]
    fn format_money_never_panics_at_the_edges() {
        for value in [
            Decimal::MAX,
            Decimal::MIN,
            Decimal::ZERO,
            Decimal::new(1, 28),
        ] {
            assert!(!format_money(value).is_empty());
        }
    }

    #[test]
    fn stored_amounts_round_trip_and_are_read_strictly() {
        #[derive(serde::Serialize, serde::Deserialize, Debug, PartialEq)]
        struct Data {
            #[serde(with = "stored")]
            amount: Decimal,
        }
        let written = serde_json::to_string(&Data {
            amount: Decimal::new(125, 1),
        })
        .unwrap();
        assert_eq!(written, r#"{"amount":"12.50"}"#);
        assert_eq!(
            serde_json::from_str::<Data>(&written).unwrap().amount,
            Decimal::new(1250, 2)
        );
        for bad in [
            r#"{"amount":12.5}"#,
            r#"{"amount":"1_000"}"#,
            r#"{"amount":"1e2"}"#,
            r#"{"amount":" 1"}"#,
        ] {
            assert!(serde_json::from_str::<Data>(bad).is_err(), "{bad}");
        }
    }
}
