//! Idempotency keys: how a command sent again (a client's retry after a lost answer, to any
//! instance, after any crash) is recognised as the same command and applied once.
//!
//! A client names each command with a key of its own ([`IdempotencyKey`]: the value of the
//! `Idempotency-Key` header of the IETF httpapi draft, 1 to [`MAX_IDEMPOTENCY_KEY_LEN`] visible
//! ASCII characters or spaces). The command executor ([`super::CommandExecutor`]) writes the
//! command's events with:
//! - ids derived from the stream, the key and each event's position in the command
//!   ([`Idempotency::event_id`], UUIDv5 in [`IDEMPOTENCY_NAMESPACE`]): every attempt of the
//!   command proposes the same ids, and the store's event-id rule (an append that repeats the
//!   ids of one earlier append is answered with that append's outcome and writes nothing, on
//!   every backend) recognises the retry in the very atomic operation that would write it.
//!   There is no separate record of the key to lose, to race, or to write apart from the
//!   events;
//! - the key and the hash of the command's canonical request in each event's metadata
//!   (`idempotencyKey`, `requestHash`), so a retry with the same key but another request is
//!   told apart from the first ([`Idempotency::matches`]) instead of being answered as it.
//!
//! Guarantees:
//! - a key names one command of one stream: the same key on two streams names two commands;
//! - a key is remembered exactly as long as the stream's events are (storage forgets none);
//! - a command the domain refuses writes nothing, so its key is not used up: the same key may
//!   be sent again once the refusal no longer holds;
//! - "the same request" is what the domain's canonical form says: the hash covers every byte
//!   of the canonical request the domain gives ([`Idempotency::new`]), and nothing else.

use sha2::{Digest, Sha256};
use uuid::Uuid;

use crate::stream::{NewEvent, RecordedEvent, StreamId};

/// Longest idempotency key, in characters (the IETF draft's and common practice's bound).
pub const MAX_IDEMPOTENCY_KEY_LEN: usize = 255;

/// The namespace of the event ids derived from idempotency keys. Fixed forever: another one
/// would make retries of the commands stored before it unrecognisable.
pub const IDEMPOTENCY_NAMESPACE: Uuid = Uuid::from_u128(0x4e79_6fb1_be7d_421c_bd1e_8dd3_6a95_27b8);

/// The event type of the probe that looks a key up (see [`Idempotency::probe`]); never stored.
pub const PROBE_EVENT_TYPE: &str = "streamfold.IdempotencyProbe";

/// A key that is not one: why, in words.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid idempotency key: {0}")]
pub struct InvalidIdempotencyKey(pub String);

/// A client's name for one command: 1 to [`MAX_IDEMPOTENCY_KEY_LEN`] characters, each a
/// visible ASCII character or a space (what an HTTP structured-field string can carry).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct IdempotencyKey(String);

impl IdempotencyKey {
    pub fn new(key: &str) -> Result<Self, InvalidIdempotencyKey> {
        if key.is_empty() {
            return Err(InvalidIdempotencyKey("it is empty".into()));
        }
        if key.len() > MAX_IDEMPOTENCY_KEY_LEN {
            return Err(InvalidIdempotencyKey(format!(
                "it is longer than {MAX_IDEMPOTENCY_KEY_LEN} characters"
            )));
        }
        if let Some(c) = key.chars().find(|c| !matches!(c, ' '..='~')) {
            return Err(InvalidIdempotencyKey(format!(
                "it contains {c:?}; only visible ASCII characters and spaces may appear"
            )));
        }
        Ok(Self(key.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Display for IdempotencyKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// One command's key with the hash of its canonical request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Idempotency {
    key: IdempotencyKey,
    request_hash: String,
}

impl Idempotency {
    /// The key of a command whose request, in the domain's canonical form, is
    /// `canonical_request`: two requests are the same request exactly when their canonical
    /// forms are the same bytes (so the form must leave out what may differ between retries,
    /// such as a correlation id, and spell each value one way only).
    pub fn new(key: IdempotencyKey, canonical_request: &[u8]) -> Self {
        let digest = Sha256::digest(canonical_request);
        let request_hash = digest.iter().map(|b| format!("{b:02x}")).collect();
        Self { key, request_hash }
    }

    pub fn key(&self) -> &IdempotencyKey {
        &self.key
    }

    /// The SHA-256 of the canonical request, in lower-case hex.
    pub fn request_hash(&self) -> &str {
        &self.request_hash
    }

    /// The id of the command's event at `index` (0 = first) in `stream`: the same for every
    /// attempt of the command, distinct for every stream, key and index (the parts are
    /// length-prefixed, so no two spellings run together).
    pub fn event_id(&self, stream: &StreamId, index: usize) -> Uuid {
        let mut name = Vec::new();
        for part in [
            stream.domain(),
            stream.entity(),
            stream.instance(),
            self.key.as_str(),
        ] {
            name.extend_from_slice(part.len().to_string().as_bytes());
            name.push(b':');
            name.extend_from_slice(part.as_bytes());
        }
        name.extend_from_slice(index.to_string().as_bytes());
        Uuid::new_v5(&IDEMPOTENCY_NAMESPACE, &name)
    }

    /// The command's events as they are written: the derived ids, and the key and request
    /// hash in the metadata of each.
    pub fn stamp(&self, stream: &StreamId, events: Vec<NewEvent>) -> Vec<NewEvent> {
        events
            .into_iter()
            .enumerate()
            .map(|(index, mut event)| {
                event.event_id = self.event_id(stream, index);
                event.metadata.idempotency_key = Some(self.key.as_str().to_owned());
                event.metadata.request_hash = Some(self.request_hash.clone());
                event
            })
            .collect()
    }

    /// An event with the id of the command's first event, to look the key up with an append
    /// that can never be written (expecting no stream of a stream that exists): the store
    /// answers it as a retry when the command was one event, `EventIdReused` when it was more,
    /// and a version conflict when the key was never used in the stream.
    pub fn probe(&self, stream: &StreamId) -> NewEvent {
        NewEvent::from_raw(PROBE_EVENT_TYPE, null_data()).with_id(self.event_id(stream, 0))
    }

    /// Whether `stored` (the events found under this key's ids) were written by this very
    /// request: every one carries this key and this request's hash.
    pub fn matches(&self, stored: &[RecordedEvent]) -> bool {
        !stored.is_empty()
            && stored.iter().all(|event| {
                event.metadata.idempotency_key.as_deref() == Some(self.key.as_str())
                    && event.metadata.request_hash.as_deref() == Some(self.request_hash.as_str())
            })
    }
}

/// `null`: the probe's data, never stored.
fn null_data() -> Box<serde_json::value::RawValue> {
    serde_json::value::RawValue::NULL.to_owned()
}

#[cfg(test)]
mod tests {
    use time::OffsetDateTime;

    use super::*;

    fn stream(instance: &str) -> StreamId {
        StreamId::new("Bank", "Account", instance).unwrap()
    }

    fn key(text: &str) -> IdempotencyKey {
        IdempotencyKey::new(text).unwrap()
    }

    #[test]
    fn keys_are_1_to_255_visible_ascii_characters_or_spaces() {
        for good in [
            "a",
            "8e03978e-40d5-43e8-bc93-6894a57f9324",
            " x y ",
            "~!\"\\",
        ] {
            assert_eq!(key(good).as_str(), good);
        }
        assert!(IdempotencyKey::new(&"k".repeat(MAX_IDEMPOTENCY_KEY_LEN)).is_ok());
        for bad in [
            String::new(),
            "k".repeat(MAX_IDEMPOTENCY_KEY_LEN + 1),
            "tab\there".into(),
            "line\nbreak".into(),
            "ünï".into(),
            "\u{7f}".into(),
        ] {
            assert!(IdempotencyKey::new(&bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn ids_are_stable_and_distinct_by_stream_key_and_index() {
        let a = Idempotency::new(key("k-1"), b"Deposit 5");
        let same_key_other_request = Idempotency::new(key("k-1"), b"Deposit 6");
        assert_eq!(
            a.event_id(&stream("A"), 0),
            Idempotency::new(key("k-1"), b"Deposit 5").event_id(&stream("A"), 0)
        );
        // The request is not part of the id: a retry with another body meets the first one.
        assert_eq!(
            a.event_id(&stream("A"), 0),
            same_key_other_request.event_id(&stream("A"), 0)
        );
        let ids = [
            a.event_id(&stream("A"), 0),
            a.event_id(&stream("A"), 1),
            a.event_id(&stream("B"), 0),
            Idempotency::new(key("k-2"), b"Deposit 5").event_id(&stream("A"), 0),
            // Parts that would run together unprefixed.
            Idempotency::new(key("1"), b"").event_id(&stream("A"), 0),
            Idempotency::new(key("A"), b"").event_id(&stream("A1"), 0),
        ];
        for (i, x) in ids.iter().enumerate() {
            for y in &ids[i + 1..] {
                assert_ne!(x, y);
            }
            assert_eq!(x.get_version_num(), 5);
        }
    }

    #[test]
    fn stamped_events_carry_the_key_and_the_hash_and_match_only_their_request() {
        let idempotency = Idempotency::new(key("k"), b"Deposit 5");
        assert_eq!(idempotency.request_hash().len(), 64);
        let s = stream("A");
        let events = idempotency.stamp(
            &s,
            vec![
                NewEvent::from_raw("In", null_data()),
                NewEvent::from_raw("In", null_data()),
            ],
        );
        let stored: Vec<RecordedEvent> = events
            .iter()
            .zip(1..)
            .map(|(e, sequence)| RecordedEvent {
                sequence,
                event_id: e.event_id,
                event_type: e.event_type.clone(),
                data: e.data.clone(),
                timestamp: OffsetDateTime::UNIX_EPOCH,
                metadata: e.metadata.clone(),
            })
            .collect();
        assert_eq!(stored[1].event_id, idempotency.event_id(&s, 1));
        assert!(idempotency.matches(&stored));
        assert!(!Idempotency::new(key("k"), b"Deposit 6").matches(&stored));
        assert!(!Idempotency::new(key("other"), b"Deposit 5").matches(&stored));
        assert!(!idempotency.matches(&[]));
        let mut unmarked = stored.clone();
        unmarked[1].metadata.request_hash = None;
        assert!(!idempotency.matches(&unmarked));
        let probe = idempotency.probe(&s);
        assert_eq!(probe.event_id, stored[0].event_id);
        assert!(NewEvent::validate_event_type(&probe.event_type).is_ok());
    }
}
