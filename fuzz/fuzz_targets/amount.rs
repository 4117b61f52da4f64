//! libFuzzer target `amount`: amounts of money as the bank's commands receive them. The bank
//! lives in the handler binary, which no other crate can link, so this target compiles the
//! binary's own `src/bank/money.rs` and the shared body `src/fuzz_amount.rs` from their files
//! (nothing copied); the binary's unit tests replay the corpus with the same body on stable.
#![no_main]

#[allow(dead_code)]
#[path = "../../src/bank/money.rs"]
mod money;
/// The path the body uses in the binary (`crate::bank::money`).
mod bank {
    pub(crate) use crate::money;
}
#[path = "../../src/fuzz_amount.rs"]
mod fuzz_amount;

libfuzzer_sys::fuzz_target!(|data: &[u8]| fuzz_amount::amount(data));
