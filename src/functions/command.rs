//! A domain command's context: who asks (the correlation id, a commentary, a name) and the
//! client's `Idempotency-Key`, as any domain whose commands take the key needs them.
//!
//! Guarantees:
//! - [`CommandContext::metadata`] is the metadata every event of the command is stored with:
//!   the correlation id, the commentary and `who`, with the domain's `source`;
//! - [`CommandContext::canonical_request`] is the request an idempotency key's hash covers
//!   (`crate::projection::Idempotency`): the command's name, its amount spelt as stored, the
//!   commentary and `who`, as compact JSON in that order. The correlation id is left out (a
//!   retry may change it). These bytes are stored (hashed) with every keyed event, so they
//!   never change: another spelling would make every stored retry look like another request
//!   (a unit test pins them).
//!
//! A handler gets one from its request ([`super::Request::command_context`]).

use serde::Serialize;

use crate::projection::{Idempotency, IdempotencyKey};
use crate::stream::EventMetadata;

/// Who asks, for the event metadata, and the client's key of the command.
#[derive(Debug, Clone, Default)]
pub struct CommandContext {
    pub correlation_id: String,
    pub commentary: Option<String>,
    pub who: Option<String>,
    /// The client's `Idempotency-Key`, when it sent one.
    pub idempotency_key: Option<IdempotencyKey>,
}

/// A command as its idempotency key's request hash sees it (the field order is the stored
/// order).
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct CanonicalRequest<'a> {
    command: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    amount: Option<&'a str>,
    commentary: Option<&'a str>,
    who: Option<&'a str>,
}

impl CommandContext {
    /// The metadata of the command's events, `source` being the domain's.
    pub fn metadata(&self, source: &str) -> EventMetadata {
        EventMetadata {
            correlation_id: Some(self.correlation_id.clone()),
            commentary: self.commentary.clone(),
            who: self.who.clone(),
            source: Some(source.to_owned()),
            ..EventMetadata::default()
        }
    }

    /// The canonical form of command `command`'s request, with its `amount` (a deposit, a
    /// quantity) spelt one way only, as the domain stores it (`"12.50"`): two requests are
    /// the same request (for an idempotency key) exactly when these bytes are.
    pub fn canonical_request(
        &self,
        command: &str,
        amount: Option<&str>,
    ) -> Result<Vec<u8>, serde_json::Error> {
        serde_json::to_vec(&CanonicalRequest {
            command,
            amount,
            commentary: self.commentary.as_deref(),
            who: self.who.as_deref(),
        })
    }

    /// The command's idempotency (its key with the hash of [`Self::canonical_request`]) for
    /// the command executor, when the client sent a key.
    pub fn idempotency(
        &self,
        command: &str,
        amount: Option<&str>,
    ) -> Result<Option<Idempotency>, serde_json::Error> {
        self.idempotency_key
            .as_ref()
            .map(|key| {
                Ok(Idempotency::new(
                    key.clone(),
                    &self.canonical_request(command, amount)?,
                ))
            })
            .transpose()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn context(commentary: Option<&str>, who: Option<&str>) -> CommandContext {
        CommandContext {
            correlation_id: "left-out".to_owned(),
            commentary: commentary.map(str::to_owned),
            who: who.map(str::to_owned),
            idempotency_key: Some(IdempotencyKey::new("k-1").unwrap()),
        }
    }

    /// The bytes and hash stored with keyed events before this module existed (computed with
    /// the bank's own `canonical_request` then): they must never change.
    #[test]
    fn the_canonical_request_and_its_hash_are_pinned() {
        let deposit = context(Some("rent"), None);
        let bytes = deposit.canonical_request("Deposit", Some("12.50")).unwrap();
        assert_eq!(String::from_utf8(bytes).unwrap(), PINNED_DEPOSIT_REQUEST);
        let idempotency = deposit
            .idempotency("Deposit", Some("12.50"))
            .unwrap()
            .unwrap();
        assert_eq!(idempotency.request_hash(), PINNED_DEPOSIT_HASH);

        let close = context(None, Some("Timer"));
        let bytes = close.canonical_request("CloseAccount", None).unwrap();
        assert_eq!(String::from_utf8(bytes).unwrap(), PINNED_CLOSE_REQUEST);
        let idempotency = close.idempotency("CloseAccount", None).unwrap().unwrap();
        assert_eq!(idempotency.request_hash(), PINNED_CLOSE_HASH);
    }

    #[test]
    fn no_key_no_idempotency_and_metadata_carries_the_context() {
        let mut unkeyed = context(Some("c"), Some("w"));
        unkeyed.idempotency_key = None;
        assert!(unkeyed.idempotency("Deposit", None).unwrap().is_none());
        let metadata = unkeyed.metadata("src");
        assert_eq!(metadata.correlation_id.as_deref(), Some("left-out"));
        assert_eq!(metadata.commentary.as_deref(), Some("c"));
        assert_eq!(metadata.who.as_deref(), Some("w"));
        assert_eq!(metadata.source.as_deref(), Some("src"));
    }

    const PINNED_DEPOSIT_REQUEST: &str =
        r#"{"command":"Deposit","amount":"12.50","commentary":"rent","who":null}"#;
    const PINNED_DEPOSIT_HASH: &str =
        "baf9863609f001eb7c8455b9e4a85157e061acda362b8f6e04f193eb4c2c58e9";
    const PINNED_CLOSE_REQUEST: &str =
        r#"{"command":"CloseAccount","commentary":null,"who":"Timer"}"#;
    const PINNED_CLOSE_HASH: &str =
        "5188ccbb4250941530bfebe05222e51cfdb054dfe4a57dc8bc0ac3ee4b27764b";
}
