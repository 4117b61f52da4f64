//! Decimal text of an unsigned integer, zero-padded to a width, written on the stack: the
//! append's row keys and `Edm.Int64` values are written this way, as `format!` writes
//! `{value:0width$}`, at a fraction of its cost.

/// Decimal digits of the largest `u64`.
pub const MAX_U64_DIGITS: usize = 20;

/// The decimal digits of one number.
pub struct Digits {
    buffer: [u8; MAX_U64_DIGITS],
    start: usize,
}

impl Digits {
    /// `value` in decimal with at least `width` digits, zeros in front (a width over
    /// [`MAX_U64_DIGITS`] counts as that).
    pub fn new(value: u64, width: usize) -> Self {
        let mut buffer = [b'0'; MAX_U64_DIGITS];
        let mut used = 0;
        let mut rest = value;
        for slot in buffer.iter_mut().rev() {
            // `rest % 10` is a single digit.
            *slot = b'0' + (rest % 10) as u8;
            rest /= 10;
            used += 1;
            if rest == 0 && used >= width {
                break;
            }
        }
        Self {
            buffer,
            start: MAX_U64_DIGITS.saturating_sub(used),
        }
    }

    pub fn as_bytes(&self) -> &[u8] {
        self.buffer.get(self.start..).unwrap_or_default()
    }

    pub fn as_str(&self) -> &str {
        // ASCII digits only.
        std::str::from_utf8(self.as_bytes()).unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    proptest::proptest! {
        /// `format!`'s text, for every number and width.
        #[test]
        fn digits_are_the_formatted_number(
            value in proptest::prop_oneof![0u64..1000, proptest::num::u64::ANY],
            width in 0usize..=MAX_U64_DIGITS,
        ) {
            let digits = Digits::new(value, width);
            proptest::prop_assert_eq!(digits.as_str(), format!("{value:0width$}"));
        }
    }
}
