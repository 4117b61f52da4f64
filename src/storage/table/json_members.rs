//! Entity properties written as JSON text straight from typed values, for the rows an append
//! writes (module `append_rows`): the members of a JSON object, `"Name":value` separated by
//! commas, without building a [`super::entity::Properties`] map first.
//!
//! Guarantees:
//! - string values are byte for byte what `serde_json` writes: copied between quotes when they
//!   hold none of the characters it escapes (`"`, `\` and control characters; other characters
//!   stay raw UTF-8), else escaped by `serde_json` itself; so the text is the one `serde_json`
//!   writes for the same map, up to the order of the properties;
//! - `Edm.Int64` and `Edm.DateTime` values are strings preceded by their `@odata.type`
//!   annotation, exactly as [`super::entity::set_int64`] and [`super::entity::set_time`] set
//!   them;
//! - property names are written as given: they are this backend's constants (ASCII letters and
//!   digits, checked in debug builds), which JSON does not escape;
//! - the `*_BYTES_BOUND` functions are never below the length of what the matching writer
//!   writes.

use std::ops::Range;

use time::OffsetDateTime;
use uuid::fmt::Hyphenated;
use uuid::Uuid;

use super::digits::{Digits, MAX_U64_DIGITS};
use super::entity::{self, EDM_DATETIME, EDM_INT64, ODATA_TYPE_SUFFIX};

/// Longest `Edm.DateTime` text ([`entity::format_time`] of year -9999 is 29 bytes).
const MAX_TIME_TEXT_BYTES: usize = 32;
/// The punctuation of a member with a string value: two pairs of quotes, the colon and the
/// comma before the next member.
const STRING_MEMBER_FRAMING_BYTES: usize = 6;

/// Longest member of an `Edm.Int64` property `name` (annotation and value) with its commas.
pub const fn int64_bytes_bound(name: &str) -> usize {
    annotated_bytes_bound(name, EDM_INT64, MAX_U64_DIGITS)
}

/// Longest member of an `Edm.DateTime` property `name` (annotation and value) with its commas.
pub const fn time_bytes_bound(name: &str) -> usize {
    annotated_bytes_bound(name, EDM_DATETIME, MAX_TIME_TEXT_BYTES)
}

const fn annotated_bytes_bound(name: &str, edm_type: &str, value_bytes: usize) -> usize {
    2 * STRING_MEMBER_FRAMING_BYTES
        + 2 * name.len()
        + ODATA_TYPE_SUFFIX.len()
        + edm_type.len()
        + value_bytes
}

/// An upper bound of the JSON length of `text` as a string member's value (quotes included):
/// each byte that JSON escapes counted at its longest escape (`\u001f`). Counted without
/// branches, so that it costs a fraction of the escaping it sizes for.
pub fn string_bytes_bound(text: &str) -> usize {
    let escapes: usize = text
        .bytes()
        .map(|byte| {
            usize::from(byte == b'"') + usize::from(byte == b'\\') + 5 * usize::from(byte < 0x20)
        })
        .sum();
    text.len() + escapes + 2
}

/// Bytes [`is_plain`] checks at once: a block compiles to a few vector comparisons, and text
/// that needs escaping (JSON data, full of quotes) is found out in its first block.
const PLAIN_CHECK_BLOCK: usize = 32;

/// Whether JSON writes `text` as it is: no `"`, `\` or control character (what `serde_json`
/// escapes; it leaves every other character, DEL and non-ASCII included, raw).
fn is_plain(text: &str) -> bool {
    text.as_bytes().chunks(PLAIN_CHECK_BLOCK).all(|block| {
        !block.iter().fold(false, |special, &byte| {
            special | (byte == b'"') | (byte == b'\\') | (byte < 0x20)
        })
    })
}

/// Writes the members of one JSON object after whatever `out` holds.
pub struct Members<'a> {
    out: &'a mut Vec<u8>,
    /// Whether no member was written yet (the next needs no comma before it).
    empty: bool,
}

impl<'a> Members<'a> {
    /// Members written to the end of `out`, the first one without a comma before it.
    pub fn new(out: &'a mut Vec<u8>) -> Self {
        Self { out, empty: true }
    }

    /// The comma before a member, unless it is the first.
    fn separate(&mut self) {
        if !self.empty {
            self.out.push(b',');
        }
        self.empty = false;
    }

    /// `"name":`, after a comma unless it is the first member.
    fn name(&mut self, name: &str) {
        debug_assert!(
            name.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'@' || b == b'.'),
            "a property name JSON would escape: {name:?}"
        );
        self.separate();
        self.out.push(b'"');
        self.out.extend_from_slice(name.as_bytes());
        self.out.extend_from_slice(b"\":");
    }

    /// `"text"` for a text JSON does not escape (digits, times, UUIDs).
    fn plain(&mut self, text: &[u8]) {
        self.out.push(b'"');
        self.out.extend_from_slice(text);
        self.out.push(b'"');
    }

    /// A string property: copied between quotes when JSON escapes none of its characters (keys,
    /// types, most metadata), else escaped by `serde_json`.
    pub fn string(&mut self, name: &str, value: &str) -> Result<(), serde_json::Error> {
        self.name(name);
        if is_plain(value) {
            self.plain(value.as_bytes());
            Ok(())
        } else {
            serde_json::to_writer(&mut *self.out, value)
        }
    }

    /// A string property holding a UUID's hyphenated text.
    pub fn uuid(&mut self, name: &str, value: &Uuid) {
        self.name(name);
        let mut text = [0u8; Hyphenated::LENGTH];
        self.plain(value.hyphenated().encode_lower(&mut text).as_bytes());
    }

    /// The `@odata.type` annotation of property `name`.
    fn annotation(&mut self, name: &str, edm_type: &str) {
        self.separate();
        self.out.push(b'"');
        self.out.extend_from_slice(name.as_bytes());
        self.out.extend_from_slice(ODATA_TYPE_SUFFIX.as_bytes());
        self.out.extend_from_slice(b"\":");
        self.plain(edm_type.as_bytes());
    }

    /// An `Edm.Int64` property (its annotation, then the number as a string).
    pub fn int64(&mut self, name: &str, value: u64) {
        self.annotation(name, EDM_INT64);
        self.name(name);
        self.plain(Digits::new(value, 1).as_bytes());
    }

    /// An `Edm.DateTime` property (its annotation, then the time's text); where in `out` the
    /// time's text is, for rewriting it in place.
    pub fn time(&mut self, name: &str, time: OffsetDateTime) -> Range<usize> {
        self.annotation(name, EDM_DATETIME);
        self.name(name);
        let start = self.out.len() + 1;
        match entity::time_text(time) {
            Some(text) => self.plain(&text),
            None => self.plain(entity::format_time(time).as_bytes()),
        }
        start..self.out.len().saturating_sub(1)
    }

    /// Members written before by another [`Members`] (the text between an object's braces).
    pub fn raw(&mut self, members: &[u8]) {
        if members.is_empty() {
            return;
        }
        self.separate();
        self.out.extend_from_slice(members);
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;
    use serde_json::Value;

    use super::*;
    use crate::storage::table::entity::Properties;

    fn object(write: impl FnOnce(&mut Members<'_>)) -> Properties {
        let mut out = vec![b'{'];
        write(&mut Members::new(&mut out));
        out.push(b'}');
        match serde_json::from_slice(&out) {
            Ok(Value::Object(map)) => map,
            other => panic!("not an object: {other:?} {}", String::from_utf8_lossy(&out)),
        }
    }

    #[test]
    fn typed_values_are_the_setters() {
        let time = time::macros::datetime!(2024-02-29 23:59:58.123456789 UTC);
        let early = time::macros::datetime!(-0042-01-02 03:04:05 UTC);
        let id = Uuid::from_u128(0x0123_4567_89ab_cdef_0123_4567_89ab_cdef);
        let written = object(|m| {
            m.int64("Version", u64::MAX);
            m.int64("Zero", 0);
            m.time("Recorded", time);
            m.time("Early", early);
            m.uuid("EventId", &id);
        });
        let mut expected = Properties::new();
        entity::set_int64(&mut expected, "Version", u64::MAX);
        entity::set_int64(&mut expected, "Zero", 0);
        entity::set_time(&mut expected, "Recorded", time);
        entity::set_time(&mut expected, "Early", early);
        expected.insert("EventId".into(), id.hyphenated().to_string().into());
        assert_eq!(written, expected);
    }

    #[test]
    fn bounds_hold_for_the_longest_values() {
        let mut out = Vec::new();
        Members::new(&mut out).int64("Version", u64::MAX);
        assert_eq!(out.len() + 1, int64_bytes_bound("Version"));
        for time in [
            time::PrimitiveDateTime::MIN.assume_utc(),
            time::PrimitiveDateTime::MAX.assume_utc(),
        ] {
            let mut out = Vec::new();
            Members::new(&mut out).time("LastRecorded", time);
            assert!(out.len() < time_bytes_bound("LastRecorded"));
        }
    }

    #[test]
    fn the_time_range_is_the_time_text() {
        let time = time::macros::datetime!(2024-02-29 23:59:58.1234567 UTC);
        let mut out = Vec::new();
        let mut members = Members::new(&mut out);
        members.int64("Version", 3);
        let range = members.time("Recorded", time);
        assert_eq!(&out[range], entity::format_time(time).as_bytes());
    }

    proptest! {
        /// Strings come out byte for byte as `serde_json` writes them, and with pre-written
        /// members as it reads them, whatever they hold (quotes, backslashes, controls, DEL,
        /// any Unicode, long plain runs and escapes after them); the bound of a string's JSON
        /// length holds.
        #[test]
        fn strings_are_serde_jsons(
            values in proptest::collection::vec(
                "\\PC*|[\"\\\\\u{0}-\u{1f}\u{7f}a-z€😀]{0,24}|[a-z]{30,70}[\"\\\\\u{0}-\u{1f}]?[a-z]{0,40}",
                1..4,
            ),
            raw in "\\PC{0,12}",
        ) {
            let names = ["A", "B", "C", "D"];
            let mut inner = Vec::new();
            Members::new(&mut inner).string("Inner", &raw).unwrap();
            let written = object(|m| {
                m.raw(b"");
                for (name, value) in names.iter().zip(&values) {
                    m.string(name, value).unwrap();
                }
                m.raw(&inner);
            });
            for value in &values {
                let mut ours = Vec::new();
                Members::new(&mut ours).string("A", value).unwrap();
                let mut theirs = b"\"A\":".to_vec();
                serde_json::to_writer(&mut theirs, value).unwrap();
                prop_assert_eq!(ours, theirs, "{:?}", value);
            }
            let mut expected = Properties::new();
            for (name, value) in names.iter().zip(&values) {
                expected.insert((*name).to_owned(), Value::String(value.clone()));
                prop_assert!(
                    string_bytes_bound(value) >= serde_json::to_vec(value).unwrap().len()
                );
            }
            expected.insert("Inner".into(), Value::String(raw.clone()));
            prop_assert_eq!(written, expected);
        }
    }
}
