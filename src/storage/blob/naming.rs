//! Blob names of event streams: one append blob per stream *segment*, named
//! `{domain}/{entity}/{escaped instance}/{segment:06}.jsonl`.
//!
//! Guarantees:
//! - distinct instance keys never share a blob: the escape is a bijection (blob names are
//!   case-sensitive, so `Abc` and `abc` stay apart, and every byte outside `A-Z a-z 0-9 - _ .`
//!   becomes `%XX` with upper-case hex, as does a leading or trailing `.`, so no name segment is
//!   `.`/`..` or ends with a dot);
//! - every stream the core accepts has a name within the service's limit: domain and entity are
//!   at most [`MAX_NAME_LEN`] ASCII characters, an instance key at most
//!   [`MAX_INSTANCE_KEY_BYTES`] bytes, each escaping to at most three characters
//!   ([`LONGEST_BLOB_NAME`] ≤ [`MAX_BLOB_NAME_LEN`], checked at compile time);
//! - instances are the virtual directories under `{domain}/{entity}/`, so listing that prefix
//!   with the `/` delimiter yields one entry per stream.

use crate::stream::{EntityType, StreamId, MAX_INSTANCE_KEY_BYTES, MAX_NAME_LEN};

/// The container streams live in unless the store is told otherwise.
pub const DEFAULT_CONTAINER: &str = "streamfold";
/// Separates the parts of a blob name (and makes the virtual directories).
pub const SEPARATOR: char = '/';
/// The separator as a listing delimiter.
pub const DELIMITER: &str = "/";
/// Digits of a segment number in its blob name (`000000.jsonl`); longer numbers are written in
/// full and still parsed.
pub const SEGMENT_WIDTH: usize = 6;
/// Extension of a segment blob: newline-delimited JSON.
pub const SEGMENT_EXTENSION: &str = ".jsonl";
/// The escape character of instance keys.
pub const ESCAPE: char = '%';
/// Longest blob name the service accepts, in characters.
pub const MAX_BLOB_NAME_LEN: usize = 1024;
/// Characters an escaped byte takes (`%XX`).
const ESCAPED_BYTE_LEN: usize = 3;
/// Longest segment file name we write (`999999.jsonl`).
const SEGMENT_FILE_LEN: usize = SEGMENT_WIDTH + SEGMENT_EXTENSION.len();
/// Longest blob name of any valid stream's segment below one million.
pub const LONGEST_BLOB_NAME: usize = MAX_NAME_LEN
    + 1
    + MAX_NAME_LEN
    + 1
    + ESCAPED_BYTE_LEN * MAX_INSTANCE_KEY_BYTES
    + 1
    + SEGMENT_FILE_LEN;
const _: () = assert!(LONGEST_BLOB_NAME <= MAX_BLOB_NAME_LEN);

const HEX_DIGITS: &[u8; 16] = b"0123456789ABCDEF";

fn is_unreserved(byte: u8) -> bool {
    byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'_' | b'.')
}

/// The escaped form of an instance key (see the module documentation).
pub fn escape_instance(key: &str) -> String {
    let bytes = key.as_bytes();
    let last = bytes.len().saturating_sub(1);
    let mut out = String::with_capacity(bytes.len());
    for (index, &byte) in bytes.iter().enumerate() {
        let dot_at_edge = byte == b'.' && (index == 0 || index == last);
        if is_unreserved(byte) && !dot_at_edge {
            out.push(char::from(byte));
        } else {
            out.push(ESCAPE);
            out.push(char::from(HEX_DIGITS[usize::from(byte >> 4)]));
            out.push(char::from(HEX_DIGITS[usize::from(byte & 0x0f)]));
        }
    }
    out
}

/// The instance key of an escaped name, or `None` if `escaped` is not exactly what
/// [`escape_instance`] writes for some key.
pub fn unescape_instance(escaped: &str) -> Option<String> {
    let bytes = escaped.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut index = 0;
    while index < bytes.len() {
        if bytes[index] == ESCAPE as u8 {
            let hex = bytes.get(index + 1..index + ESCAPED_BYTE_LEN)?;
            let digit = |d: u8| HEX_DIGITS.iter().position(|&h| h == d);
            let value = digit(hex[0])? * 16 + digit(hex[1])?;
            out.push(u8::try_from(value).ok()?);
            index += ESCAPED_BYTE_LEN;
        } else {
            out.push(bytes[index]);
            index += 1;
        }
    }
    let key = String::from_utf8(out).ok()?;
    // Only the canonical escape is accepted, so the mapping stays one to one.
    (escape_instance(&key) == escaped).then_some(key)
}

/// `{domain}/{entity}/`: the prefix under which every stream of an entity type lives.
pub fn entity_prefix(entity_type: &EntityType) -> String {
    let (domain, entity) = (entity_type.domain(), entity_type.entity());
    format!("{domain}{SEPARATOR}{entity}{SEPARATOR}")
}

/// `{domain}/{entity}/{escaped instance}/`: the prefix of a stream's segment blobs.
pub fn stream_prefix(stream: &StreamId) -> String {
    format!(
        "{}{}{SEPARATOR}",
        entity_prefix(stream.entity_type()),
        escape_instance(stream.instance())
    )
}

/// The blob name of segment `segment` of `stream`.
pub fn segment_blob_name(stream: &StreamId, segment: u32) -> String {
    format!("{}{}", stream_prefix(stream), segment_file_name(segment))
}

/// `{segment:06}.jsonl`.
pub fn segment_file_name(segment: u32) -> String {
    format!("{segment:0SEGMENT_WIDTH$}{SEGMENT_EXTENSION}")
}

/// The segment number of a blob name under `prefix` (from [`stream_prefix`]), or `None` for a
/// name that is not a segment of that stream.
pub fn parse_segment_name(prefix: &str, blob_name: &str) -> Option<u32> {
    let digits = blob_name
        .strip_prefix(prefix)?
        .strip_suffix(SEGMENT_EXTENSION)?;
    if digits.len() < SEGMENT_WIDTH || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let segment: u32 = digits.parse().ok()?;
    (segment_file_name(segment) == format!("{digits}{SEGMENT_EXTENSION}")).then_some(segment)
}

/// The instance key of a listed virtual directory `{domain}/{entity}/{escaped}/`.
pub fn instance_of_prefix(entity_prefix: &str, listed_prefix: &str) -> Option<String> {
    let escaped = listed_prefix
        .strip_prefix(entity_prefix)?
        .strip_suffix(SEPARATOR)?;
    unescape_instance(escaped)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stream::validate_instance_key;

    fn id(instance: &str) -> StreamId {
        StreamId::new("Bank", "Account", instance).unwrap()
    }

    #[test]
    fn names() {
        assert_eq!(
            segment_blob_name(&id("ACC-1"), 0),
            "Bank/Account/ACC-1/000000.jsonl"
        );
        assert_eq!(
            segment_blob_name(&id("O'Brien 50% a+b"), 12),
            "Bank/Account/O%27Brien%2050%25%20a%2Bb/000012.jsonl"
        );
        // The stored layout: every stream of an entity type lives under this prefix.
        assert_eq!(entity_prefix(id("ACC-1").entity_type()), "Bank/Account/");
        assert_eq!(escape_instance("ünï"), "%C3%BCn%C3%AF");
        assert_eq!(escape_instance(".a.b."), "%2Ea.b%2E");
        assert_eq!(escape_instance(".."), "%2E%2E");
        assert_eq!(escape_instance("."), "%2E");
        assert_ne!(escape_instance("Abc"), escape_instance("abc"));
    }

    #[test]
    fn escaping_round_trips_and_is_canonical() {
        for key in [
            "Abc", "abc", "O'Brien", "50%", "a+b c", "ünï", ".x.", "%41", "~", "a.b",
        ] {
            let escaped = escape_instance(key);
            assert_eq!(unescape_instance(&escaped).as_deref(), Some(key), "{key}");
            assert!(escaped
                .bytes()
                .all(|b| is_unreserved(b) || b == ESCAPE as u8));
        }
        // Non-canonical spellings are refused, so no two names map to one key.
        for bad in ["%41", "%c3%bc", "%2", "%ZZ", ".x", "x.", "a b", "%FF"] {
            assert_eq!(unescape_instance(bad), None, "{bad}");
        }
    }

    #[test]
    fn longest_keys_fit() {
        let key = "ü".repeat(MAX_INSTANCE_KEY_BYTES / 2);
        validate_instance_key(&key).unwrap();
        let name = segment_blob_name(
            &StreamId::new("B".repeat(MAX_NAME_LEN), "E".repeat(MAX_NAME_LEN), key).unwrap(),
            999_999,
        );
        assert!(name.len() <= LONGEST_BLOB_NAME);
        assert!(name.len() <= MAX_BLOB_NAME_LEN);
    }

    #[test]
    fn segment_names_parse() {
        let stream = id("x");
        let prefix = stream_prefix(&stream);
        for segment in [0, 7, 999_999, 1_000_000] {
            let name = segment_blob_name(&stream, segment);
            assert_eq!(parse_segment_name(&prefix, &name), Some(segment));
        }
        for bad in ["0.jsonl", "00000a.jsonl", "000001.json", "0000001.jsonl"] {
            assert_eq!(
                parse_segment_name(&prefix, &format!("{prefix}{bad}")),
                None,
                "{bad}"
            );
        }
        assert_eq!(
            instance_of_prefix("Bank/Account/", "Bank/Account/a%20b/").as_deref(),
            Some("a b")
        );
    }
}
