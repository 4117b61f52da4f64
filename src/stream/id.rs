//! Stream identity and the key rules every backend can honour.
//!
//! Domain and entity-type names are ASCII identifiers (a letter, then letters or digits) so they
//! can appear unescaped in app-setting names, Event Grid event types and storage names. Instance
//! keys are free text within the rules that Azure Table storage imposes on keys (no `/ \ # ?`,
//! no control characters), so every key the Table backend accepts works on every backend.
//! Validation happens once, when a [`StreamId`] is built: a `StreamId` in hand is always valid.

use std::borrow::Cow;
use std::fmt;

/// Longest domain or entity-type name, in characters.
pub const MAX_NAME_LEN: usize = 32;
/// Longest instance key, in UTF-8 bytes (Table keys allow 1 KiB; blob names need room to escape).
pub const MAX_INSTANCE_KEY_BYTES: usize = 256;

/// Characters Azure Table storage forbids in PartitionKey and RowKey values.
const FORBIDDEN_KEY_CHARS: [char; 4] = ['/', '\\', '#', '?'];

/// Why a domain, entity or instance name was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid {what} {value:?}: {reason}")]
#[non_exhaustive]
pub struct KeyError {
    /// Which part of the identity: "domain", "entity type" or "instance key".
    pub what: &'static str,
    /// The offending value, as given.
    pub value: String,
    /// What rule it breaks.
    pub reason: String,
}

/// A group of streams: a domain and one of its entity types (`Bank` / `Account`), both checked
/// by [`validate_name`] when it is built, so an `EntityType` in hand is always valid and no
/// code below the edge of the app checks the pair again.
///
/// A domain names its own entity types once, as constants:
/// `pub const ACCOUNTS: EntityType = EntityType::from_static("Bank", "Account");` (checked
/// when the crate compiles); names that come from outside go through [`EntityType::new`].
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct EntityType {
    domain: Cow<'static, str>,
    entity: Cow<'static, str>,
}

impl EntityType {
    /// Validates both names; the error names the first that breaks a rule.
    pub fn new(domain: impl Into<String>, entity: impl Into<String>) -> Result<Self, KeyError> {
        let domain = domain.into();
        let entity = entity.into();
        validate_name("domain", &domain)?;
        validate_name("entity type", &entity)?;
        Ok(Self {
            domain: Cow::Owned(domain),
            entity: Cow::Owned(entity),
        })
    }

    /// An entity type of names written in the code, for a `const` item: a name that breaks
    /// the rules of [`validate_name`] fails the build there (and panics if called at run
    /// time, which is why names from outside go through [`EntityType::new`]).
    pub const fn from_static(domain: &'static str, entity: &'static str) -> Self {
        assert!(
            is_valid_name(domain) && is_valid_name(entity),
            "a domain or entity-type name breaks the naming rules"
        );
        Self {
            domain: Cow::Borrowed(domain),
            entity: Cow::Borrowed(entity),
        }
    }

    pub fn domain(&self) -> &str {
        &self.domain
    }

    pub fn entity(&self) -> &str {
        &self.entity
    }

    /// The stream of this entity type with instance key `instance` (checked here).
    pub fn stream(&self, instance: impl Into<String>) -> Result<StreamId, KeyError> {
        let instance = instance.into();
        validate_instance_key(&instance)?;
        Ok(StreamId {
            entity_type: self.clone(),
            instance,
        })
    }
}

impl fmt::Display for EntityType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.domain, self.entity)
    }
}

/// Identifies one event stream: domain / entity type / instance key.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct StreamId {
    entity_type: EntityType,
    instance: String,
}

impl StreamId {
    /// Validates all three parts; the error names the first part that breaks a rule.
    pub fn new(
        domain: impl Into<String>,
        entity: impl Into<String>,
        instance: impl Into<String>,
    ) -> Result<Self, KeyError> {
        EntityType::new(domain, entity)?.stream(instance)
    }

    pub fn domain(&self) -> &str {
        self.entity_type.domain()
    }

    pub fn entity(&self) -> &str {
        self.entity_type.entity()
    }

    /// The domain and entity type of the stream.
    pub fn entity_type(&self) -> &EntityType {
        &self.entity_type
    }

    pub fn instance(&self) -> &str {
        &self.instance
    }
}

impl fmt::Display for StreamId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.entity_type, self.instance)
    }
}

/// [`validate_name`] as a `const fn`, for [`EntityType::from_static`].
const fn is_valid_name(value: &str) -> bool {
    let bytes = value.as_bytes();
    let [first, rest @ ..] = bytes else {
        return false;
    };
    if !first.is_ascii_alphabetic() || bytes.len() > MAX_NAME_LEN {
        return false;
    }
    let mut rest = rest;
    while let [byte, tail @ ..] = rest {
        if !byte.is_ascii_alphanumeric() {
            return false;
        }
        rest = tail;
    }
    true
}

/// Checks a domain or entity-type name: an ASCII letter, then ASCII letters or digits.
pub fn validate_name(what: &'static str, value: &str) -> Result<(), KeyError> {
    let fail = |reason: &str| {
        Err(KeyError {
            what,
            value: value.to_owned(),
            reason: reason.to_owned(),
        })
    };
    let mut chars = value.chars();
    match chars.next() {
        None => return fail("must not be empty"),
        Some(c) if !c.is_ascii_alphabetic() => return fail("must start with an ASCII letter"),
        Some(_) => {}
    }
    if !chars.all(|c| c.is_ascii_alphanumeric()) {
        return fail("may contain only ASCII letters and digits");
    }
    if value.len() > MAX_NAME_LEN {
        return fail(&format!("must be at most {MAX_NAME_LEN} characters"));
    }
    Ok(())
}

/// Checks an instance key against the rules every backend can store.
pub fn validate_instance_key(value: &str) -> Result<(), KeyError> {
    let fail = |reason: String| {
        Err(KeyError {
            what: "instance key",
            value: value.to_owned(),
            reason,
        })
    };
    if value.is_empty() {
        return fail("must not be empty".into());
    }
    if value.len() > MAX_INSTANCE_KEY_BYTES {
        return fail(format!(
            "must be at most {MAX_INSTANCE_KEY_BYTES} bytes of UTF-8"
        ));
    }
    if let Some(c) = value.chars().find(|c| FORBIDDEN_KEY_CHARS.contains(c)) {
        return fail(format!("must not contain {c:?} (one of / \\ # ?)"));
    }
    if value.chars().any(is_forbidden_control) {
        return fail("must not contain control characters".into());
    }
    if value.trim() != value {
        return fail("must not start or end with whitespace".into());
    }
    Ok(())
}

/// U+0000-U+001F and U+007F-U+009F, which Table keys forbid.
fn is_forbidden_control(c: char) -> bool {
    matches!(c, '\u{0}'..='\u{1f}' | '\u{7f}'..='\u{9f}')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_ordinary_keys() {
        let id = StreamId::new("Bank", "Account", "ACC-001 O'Brien ünï").unwrap();
        assert_eq!(id.to_string(), "Bank/Account/ACC-001 O'Brien ünï");
    }

    #[test]
    fn rejects_forbidden_characters_in_instance_keys() {
        for bad in [
            "a/b", "a\\b", "a#b", "a?b", "a\u{1}b", "a\u{7f}b", "a\u{85}b", "", " a",
        ] {
            let err = StreamId::new("Bank", "Account", bad).unwrap_err();
            assert_eq!(err.what, "instance key", "{bad:?}");
        }
        let long = "x".repeat(MAX_INSTANCE_KEY_BYTES + 1);
        assert!(StreamId::new("Bank", "Account", long).is_err());
        assert!(StreamId::new("Bank", "Account", "x".repeat(MAX_INSTANCE_KEY_BYTES)).is_ok());
    }

    #[test]
    fn rejects_bad_names() {
        for bad in ["", "1Bank", "Ba nk", "Bank.", "Bänk"] {
            assert_eq!(
                StreamId::new(bad, "Account", "1").unwrap_err().what,
                "domain"
            );
            assert_eq!(
                StreamId::new("Bank", bad, "1").unwrap_err().what,
                "entity type"
            );
        }
        assert!(StreamId::new("B".repeat(MAX_NAME_LEN + 1), "Account", "1").is_err());
    }

    #[test]
    fn entity_types_are_checked_once_and_the_const_check_agrees() {
        const ACCOUNTS: EntityType = EntityType::from_static("Bank", "Account");
        assert_eq!(ACCOUNTS, EntityType::new("Bank", "Account").unwrap());
        assert_eq!(ACCOUNTS.to_string(), "Bank/Account");
        let stream = ACCOUNTS.stream("ACC-1").unwrap();
        assert_eq!(stream, StreamId::new("Bank", "Account", "ACC-1").unwrap());
        assert_eq!(stream.entity_type(), &ACCOUNTS);
        assert_eq!(ACCOUNTS.stream("a/b").unwrap_err().what, "instance key");
        let long = "B".repeat(MAX_NAME_LEN + 1);
        let exact = "B".repeat(MAX_NAME_LEN);
        for name in [
            "", "1Bank", "Ba nk", "Bank.", "Bänk", "B", "Bank2", "b", &long, &exact,
        ] {
            assert_eq!(
                is_valid_name(name),
                validate_name("domain", name).is_ok(),
                "{name:?}"
            );
        }
        assert_eq!(
            EntityType::new("Bank", "Acc|t").unwrap_err().what,
            "entity type"
        );
    }
}
