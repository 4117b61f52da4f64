//! Reading one header of an azure_core request or answer. `Headers::get_str` and the other
//! `get_*` methods format an error message on every call, even when the header is there and
//! the caller throws the error away (azure_core's `ResultExt::with_context` builds its message
//! eagerly): about 2,800 instructions per lookup. This one walks the few headers instead.

use azure_core::headers::{HeaderName, Headers};

/// The value of header `name` (a lowercase name, as every `HeaderName` is), if present.
pub(crate) fn header_value<'a>(headers: &'a Headers, name: &HeaderName) -> Option<&'a str> {
    headers
        .iter()
        .find(|(candidate, _)| *candidate == name)
        .map(|(_, value)| value.as_str())
}

#[cfg(test)]
mod tests {
    use azure_core::headers::HeaderValue;
    use proptest::prelude::*;

    use super::*;

    proptest! {
        /// The same answer as the crate's own lookup, for any headers and any name asked.
        #[test]
        fn finds_what_the_crates_lookup_finds(
            present in proptest::collection::hash_map("[a-z-]{1,6}", "[ -~]{0,8}", 0..8),
            asked in "[a-z-]{1,6}",
        ) {
            let mut headers = Headers::new();
            for (name, value) in &present {
                headers.insert(HeaderName::from(name.clone()), HeaderValue::from(value.clone()));
            }
            for name in present.keys().chain(std::iter::once(&asked)) {
                let name = HeaderName::from(name.clone());
                prop_assert_eq!(header_value(&headers, &name), headers.get_optional_str(&name));
            }
        }
    }
}
