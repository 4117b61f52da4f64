//! The body of the `amount` fuzz target (`fuzz/fuzz_targets/amount.rs`), and the replay of its
//! committed corpus (`fuzz/corpus/amount/`) as a unit test of the handler binary, on stable.
//! The bank lives in this binary, which the fuzz crate cannot link, so the fuzz target compiles
//! this file and `bank/money.rs` from their paths; here they are the binary's own modules.
//!
//! An input is the JSON text of an amount field as a command body carries it. The promises
//! checked: parsing never panics; what is accepted has the currency's places, the sign asked
//! for and at most `MAX_AMOUNT`; it was written as plain digits (a leading `-`, one `.`; no
//! `_`, exponent, hex, `+` or spaces); and the money text the bank answers with is accepted
//! again, as a string and as a number, as the same value.

use rust_decimal::Decimal;
use serde_json::value::RawValue;

use crate::bank::money::{format_money, parse_amount, Sign, CURRENCY_DECIMALS, MAX_AMOUNT};

/// Runs one input (see the module documentation); panics when a promise does not hold.
pub fn amount(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(raw) = RawValue::from_string(text.to_owned()) else {
        return;
    };
    for sign in [Sign::Positive, Sign::NonNegative] {
        let Ok(value) = parse_amount("amount", &raw, sign) else {
            continue;
        };
        assert_eq!(value.scale(), CURRENCY_DECIMALS, "{text}: places");
        assert!(value <= MAX_AMOUNT, "{text}: above the maximum");
        match sign {
            Sign::Positive => assert!(value > Decimal::ZERO, "{text}: not positive"),
            Sign::NonNegative => assert!(value >= Decimal::ZERO, "{text}: negative"),
        }
        let written = text.trim();
        let digits = match serde_json::from_str::<String>(written) {
            Ok(inner) => inner,
            Err(_) => written.to_owned(),
        };
        assert!(
            digits
                .chars()
                .enumerate()
                .all(|(i, c)| c.is_ascii_digit() || c == '.' || (c == '-' && i == 0)),
            "{text}: accepted although not plain digits"
        );
        let money = format_money(value);
        for again in [format!("\"{money}\""), money.clone()] {
            let raw = RawValue::from_string(again.clone()).expect("money is JSON");
            assert_eq!(
                parse_amount("amount", &raw, sign).ok(),
                Some(value),
                "{text}: the answer's {again} is not accepted as the same amount"
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use std::panic::{catch_unwind, AssertUnwindSafe};
    use std::path::Path;

    /// Fewest files the committed corpus must have.
    const MIN_CORPUS_FILES: usize = 12;

    #[test]
    fn the_amount_fuzz_corpus_replays() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus/amount");
        let mut files: Vec<_> = std::fs::read_dir(&dir)
            .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
            .map(|entry| entry.expect("a directory entry").path())
            .filter(|path| path.is_file())
            .collect();
        files.sort();
        assert!(files.len() >= MIN_CORPUS_FILES, "{} files", files.len());
        let failed: Vec<String> = files
            .iter()
            .filter(|file| {
                let data = std::fs::read(file).expect("a readable corpus file");
                catch_unwind(AssertUnwindSafe(|| super::amount(&data))).is_err()
            })
            .map(|file| file.display().to_string())
            .collect();
        assert!(failed.is_empty(), "corpus inputs failed: {failed:?}");
    }
}
