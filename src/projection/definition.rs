//! What a projection is: a named, versioned fold of one stream's events into a state.
//!
//! Guarantees asked of every implementation, on which the runner and snapshots rely:
//! - `apply` is deterministic: the same state and event always give the same new state, so a
//!   fold resumed from a snapshot equals a fold from the start;
//! - an event type the projection does not know leaves the state unchanged (a stream outlives
//!   the code that reads it, and new writers add new event types);
//! - `version` changes whenever `apply` or the state's shape changes meaning, so snapshots
//!   written by older code are never resumed from.

use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::stream::RecordedEvent;

use super::ApplyError;

/// Longest projection name, in characters.
pub const MAX_PROJECTION_NAME_LEN: usize = 64;

/// A named fold over one stream.
pub trait Projection: Send + Sync + 'static {
    /// The folded state. It is serialized into snapshots and into the generic HTTP API, so its
    /// JSON form must round-trip exactly (keep money as `rust_decimal::Decimal`, not `f64`).
    type State: Clone + Serialize + DeserializeOwned + Send + Sync + 'static;

    /// Identifies the projection within its entity type (e.g. `"balance"`); see
    /// [`validate_projection_name`] for the rules.
    fn name(&self) -> &str;

    /// Bump when `apply` changes meaning: snapshots of other versions are ignored.
    fn version(&self) -> u32;

    /// The state before any event.
    fn initial(&self) -> Self::State;

    /// Applies one event. Event types it does not know leave the state unchanged (never
    /// fatal); an error means a known event could not be understood.
    fn apply(&self, state: &mut Self::State, event: &RecordedEvent) -> Result<(), ApplyError>;
}

/// Deserializes an event's data for `apply`, turning a failure into an [`ApplyError`] that
/// names the event.
pub fn decode_data<T: DeserializeOwned>(event: &RecordedEvent) -> Result<T, ApplyError> {
    serde_json::from_str(event.data.get())
        .map_err(|e| ApplyError::new(event, format!("its data cannot be read: {e}")))
}

/// Checks a projection name: an ASCII letter, then ASCII letters, digits, `-` or `_`, at most
/// [`MAX_PROJECTION_NAME_LEN`] characters. Names appear in URLs and in snapshot storage keys,
/// so they are restricted to characters that need no escaping in either.
pub fn validate_projection_name(name: &str) -> Result<(), String> {
    let mut chars = name.chars();
    match chars.next() {
        None => return Err("projection name must not be empty".into()),
        Some(c) if !c.is_ascii_alphabetic() => {
            return Err(format!(
                "projection name {name:?} must start with an ASCII letter"
            ))
        }
        Some(_) => {}
    }
    if !chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_')) {
        return Err(format!(
            "projection name {name:?} may contain only ASCII letters, digits, '-' and '_'"
        ));
    }
    if name.len() > MAX_PROJECTION_NAME_LEN {
        return Err(format!(
            "projection name must be at most {MAX_PROJECTION_NAME_LEN} characters"
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn projection_names() {
        for good in ["balance", "in-overdraft", "v2_totals", "A1"] {
            assert!(validate_projection_name(good).is_ok(), "{good:?}");
        }
        for bad in ["", "1x", "-x", "a b", "a/b", "a.b", "é"] {
            assert!(validate_projection_name(bad).is_err(), "{bad:?}");
        }
        assert!(validate_projection_name(&"a".repeat(MAX_PROJECTION_NAME_LEN)).is_ok());
        assert!(validate_projection_name(&"a".repeat(MAX_PROJECTION_NAME_LEN + 1)).is_err());
    }
}
