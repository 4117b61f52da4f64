//! The one error type of read models, with what a caller needs to decide: retry later (the
//! storage was unavailable, other writers kept winning, the notification is ahead of the
//! stream) or fix something (a state too large to store, an event the projection refuses).

use crate::projection::ProjectionError;
use crate::stream::{KeyError, ReadModelStoreError, StateTooLarge, StoreError};

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ReadModelError {
    /// Reading the events or the rows failed (unavailable, misconfigured, corrupt data).
    #[error(transparent)]
    Store(#[from] StoreError),

    /// A projection refused an event or its state could not be serialized.
    #[error(transparent)]
    Projection(#[from] ProjectionError),

    /// Other invocations kept saving the same row first; nothing is lost (it was saved by
    /// them), but this notification was not applied and should be delivered again.
    #[error("read model {model} of {stream}: gave up after {attempts} conflicting saves")]
    Contention {
        model: String,
        stream: String,
        attempts: u32,
    },

    /// A notification names an event the stream does not have (yet): retried later, it finds
    /// the event once the append that wrote it is visible.
    #[error(
        "notification for event {sequence} of {stream}, but the stream is at version {version}"
    )]
    AheadOfStream {
        stream: String,
        sequence: u64,
        version: u64,
    },

    /// The state is larger than one row can hold.
    #[error(transparent)]
    StateTooLarge(#[from] StateTooLarge),

    /// A domain, entity type or instance key (from a notification, say) is not valid.
    #[error(transparent)]
    InvalidKey(#[from] KeyError),
}

impl From<ReadModelStoreError> for ReadModelError {
    /// The same variant: a store's error is a read-model error of the same kind.
    fn from(error: ReadModelStoreError) -> Self {
        match error {
            ReadModelStoreError::Store(e) => Self::Store(e),
            ReadModelStoreError::InvalidKey(e) => Self::InvalidKey(e),
            ReadModelStoreError::StateTooLarge(e) => Self::StateTooLarge(e),
        }
    }
}

impl ReadModelError {
    /// True when the same call may succeed later (the caller should have it retried, e.g. by
    /// answering Event Grid with a failure).
    pub fn is_transient(&self) -> bool {
        matches!(
            self,
            Self::Store(StoreError::Unavailable { .. })
                | Self::Projection(ProjectionError::Store(StoreError::Unavailable { .. }))
                | Self::Contention { .. }
                | Self::AheadOfStream { .. }
        )
    }
    /// True when calling again can never change how it ends: the projection refuses one of
    /// the stream's events or its state, or the stored data is corrupt. Everything else
    /// (storage unavailable, contention, ahead of the stream, a misconfiguration an operator
    /// can fix) may end otherwise later.
    pub fn is_permanent(&self) -> bool {
        match self {
            Self::Projection(ProjectionError::Store(e)) | Self::Store(e) => {
                matches!(e, StoreError::Corrupt { .. } | StoreError::InvalidKey(_))
            }
            Self::Projection(_) | Self::InvalidKey(_) | Self::StateTooLarge(_) => true,
            Self::Contention { .. } | Self::AheadOfStream { .. } => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_state_too_large_for_its_row_is_the_same_error_in_both_layers_and_permanent() {
        let too_large = StateTooLarge {
            model: "account".into(),
            stream: "Bank/Account/1".into(),
            bytes: 2_000_000,
            limit: 1_040_384,
        };
        let text = "read model account of Bank/Account/1: the state is 2000000 bytes; a row \
                    holds at most 1040384";
        let store = ReadModelStoreError::from(too_large.clone());
        assert_eq!(store.to_string(), text);
        let error = ReadModelError::from(store);
        assert_eq!(error.to_string(), text);
        assert!(matches!(&error, ReadModelError::StateTooLarge(e) if *e == too_large));
        assert!(error.is_permanent() && !error.is_transient());
    }
}
