//! Where a stream's rows live in the table: PartitionKey and RowKey formats, and the escaping
//! that makes any valid instance key safe in an OData filter or an entity URL.
//!
//! Guarantees:
//! - one stream is exactly one partition: `{domain}|{entity}|{instance}`. Domain and entity are
//!   ASCII letters and digits (checked by [`StreamId`]), so the separator cannot occur inside
//!   them and two streams never share a partition; all streams of one domain/entity share the
//!   prefix `{domain}|{entity}|`, which is what listing scans;
//! - event rows sort by sequence number (`E-` and ten zero-padded digits), so a RowKey range is
//!   a sequence range;
//! - a key value is escaped for the wire in one place: [`odata_string`] doubles `'` inside an
//!   OData string literal, and [`url_key`] does the same for the key predicates of entity URLs
//!   (the azure crate percent-encodes `%`, spaces and non-ASCII when it puts the URL together,
//!   but does not escape `'`).

use uuid::fmt::Hyphenated;
use uuid::Uuid;

use super::digits::Digits;
use crate::stream::{EntityType, StreamId};

/// Joins domain, entity type and instance key into a PartitionKey.
pub const KEY_SEPARATOR: char = '|';
/// The character right after [`KEY_SEPARATOR`]: `{domain}|{entity}}` is the smallest string
/// greater than every PartitionKey with the prefix `{domain}|{entity}|`.
pub const KEY_SEPARATOR_SUCCESSOR: char = '}';
/// RowKey of the stream header row (version, creation time).
pub const HEADER_ROW_KEY: &str = "HEAD";
/// RowKey prefix of event rows.
pub const EVENT_ROW_PREFIX: &str = "E-";
/// Digits of the zero-padded sequence number in an event RowKey.
pub const SEQUENCE_WIDTH: usize = 10;
/// Largest sequence number that fits `SEQUENCE_WIDTH` (10) digits.
pub const MAX_SEQUENCE: u64 = 9_999_999_999;
/// RowKey prefix of event-id rows (one per stored event, for idempotent retries).
pub const EVENT_ID_ROW_PREFIX: &str = "ID-";
/// The OData string literal delimiter, doubled to escape it.
const QUOTE: char = '\'';

/// The partition that holds `stream`.
pub fn partition_key(stream: &StreamId) -> String {
    format!(
        "{}{KEY_SEPARATOR}{}{KEY_SEPARATOR}{}",
        stream.domain(),
        stream.entity(),
        stream.instance()
    )
}

/// The PartitionKey prefix shared by every stream of `entity_type`: `{domain}|{entity}|`.
pub fn stream_prefix(entity_type: &EntityType) -> String {
    let (domain, entity) = (entity_type.domain(), entity_type.entity());
    format!("{domain}{KEY_SEPARATOR}{entity}{KEY_SEPARATOR}")
}

/// The smallest PartitionKey above every key that starts with [`stream_prefix`]
/// (`{domain}|{entity}}`).
pub fn stream_prefix_end(entity_type: &EntityType) -> String {
    let (domain, entity) = (entity_type.domain(), entity_type.entity());
    format!("{domain}{KEY_SEPARATOR}{entity}{KEY_SEPARATOR_SUCCESSOR}")
}

/// The RowKey of event `sequence` (`{EVENT_ROW_PREFIX}{sequence:0SEQUENCE_WIDTH$}`, written
/// digit by digit: an append writes several, and `format!` costs several times as much).
pub fn event_row_key(sequence: u64) -> String {
    let digits = Digits::new(sequence, SEQUENCE_WIDTH);
    let digits = digits.as_str();
    let mut key = String::with_capacity(EVENT_ROW_PREFIX.len() + digits.len());
    key.push_str(EVENT_ROW_PREFIX);
    key.push_str(digits);
    key
}

/// The sequence number of an event RowKey, if it is one.
pub fn parse_event_row_key(row_key: &str) -> Option<u64> {
    let digits = row_key.strip_prefix(EVENT_ROW_PREFIX)?;
    if digits.len() != SEQUENCE_WIDTH || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

/// The RowKey of the event-id row of `event_id`.
pub fn event_id_row_key(event_id: &Uuid) -> String {
    let mut text = [0u8; Hyphenated::LENGTH];
    let mut key = String::with_capacity(EVENT_ID_ROW_PREFIX.len() + Hyphenated::LENGTH);
    key.push_str(EVENT_ID_ROW_PREFIX);
    key.push_str(event_id.hyphenated().encode_lower(&mut text));
    key
}

/// The event id of an event-id RowKey, if it is one.
pub fn parse_event_id_row_key(row_key: &str) -> Option<Uuid> {
    Uuid::parse_str(row_key.strip_prefix(EVENT_ID_ROW_PREFIX)?).ok()
}

/// `value` as an OData string literal: in single quotes, with `'` doubled.
pub fn odata_string(value: &str) -> String {
    let mut literal = String::with_capacity(value.len() + 2);
    literal.push(QUOTE);
    literal.push_str(&url_key(value));
    literal.push(QUOTE);
    literal
}

/// A key value as it goes between the quotes of an entity URL's key predicate
/// (`table(PartitionKey='…',RowKey='…')`): `'` doubled. Percent-encoding is left to the URL
/// builder, which encodes `%`, spaces and non-ASCII characters of a path segment.
pub fn url_key(value: &str) -> String {
    value.replace(QUOTE, "''")
}

#[cfg(test)]
mod tests {
    use super::*;

    proptest::proptest! {
        /// The digit-by-digit keys are `format!`'s, for every sequence (10 digits and more)
        /// and event id.
        #[test]
        fn row_keys_are_the_formatted_keys(
            sequence in proptest::prop_oneof![0..=MAX_SEQUENCE + 1, proptest::num::u64::ANY],
            id in proptest::num::u128::ANY,
        ) {
            proptest::prop_assert_eq!(
                event_row_key(sequence),
                format!("{EVENT_ROW_PREFIX}{sequence:0SEQUENCE_WIDTH$}")
            );
            let id = Uuid::from_u128(id);
            proptest::prop_assert_eq!(
                event_id_row_key(&id),
                format!("{EVENT_ID_ROW_PREFIX}{}", id.hyphenated())
            );
        }
    }

    #[test]
    fn row_keys_at_the_edges() {
        assert_eq!(event_row_key(0), "E-0000000000");
        assert_eq!(event_row_key(MAX_SEQUENCE), "E-9999999999");
        assert_eq!(event_row_key(u64::MAX), "E-18446744073709551615");
    }

    #[test]
    fn partition_keys_join_the_stream_id() {
        let id = StreamId::new("Bank", "Account", "O'Brien|x").unwrap();
        assert_eq!(partition_key(&id), "Bank|Account|O'Brien|x");
        let prefix = stream_prefix(id.entity_type());
        let end = stream_prefix_end(id.entity_type());
        // The stored layout: these bytes are in every existing table.
        assert_eq!(
            (prefix.as_str(), end.as_str()),
            ("Bank|Account|", "Bank|Account}")
        );
        assert!(partition_key(&id).starts_with(&prefix));
        assert!(prefix < end && partition_key(&id) < end);
        // A longer entity name that extends "Account" sorts outside the range.
        let other = StreamId::new("Bank", "Accounts", "a").unwrap();
        assert!(partition_key(&other) > end || partition_key(&other) < prefix);
    }

    #[test]
    fn event_row_keys_sort_by_sequence() {
        assert_eq!(event_row_key(7), "E-0000000007");
        assert_eq!(event_row_key(MAX_SEQUENCE), "E-9999999999");
        assert!(event_row_key(9) < event_row_key(10));
        assert_eq!(parse_event_row_key("E-0000000042"), Some(42));
        for bad in ["E-42", "HEAD", "E-00000000x1", "ID-0000000001"] {
            assert_eq!(parse_event_row_key(bad), None, "{bad}");
        }
        // Event rows sort before the header and the id rows.
        assert!(event_row_key(MAX_SEQUENCE).as_str() < HEADER_ROW_KEY);
        assert!(HEADER_ROW_KEY < EVENT_ID_ROW_PREFIX);
    }

    #[test]
    fn id_row_keys_round_trip() {
        let id = Uuid::new_v4();
        assert_eq!(parse_event_id_row_key(&event_id_row_key(&id)), Some(id));
        assert_eq!(parse_event_id_row_key("ID-nope"), None);
    }

    #[test]
    fn quotes_are_doubled() {
        assert_eq!(odata_string("O'Brien"), "'O''Brien'");
        assert_eq!(odata_string("'"), "''''");
        assert_eq!(odata_string("50% a+b&c=d ünï"), "'50% a+b&c=d ünï'");
        assert_eq!(url_key("it's"), "it''s");
    }
}
