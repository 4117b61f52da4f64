//! The read-model storage contract: one row per (read model, stream), holding a projection's
//! state and the sequence number it is as of, written only under a concurrency condition.
//!
//! Guarantees every implementation gives:
//! - `load` returns the row with an opaque [`ETag`] that changes on every successful save;
//! - `save` is atomic and conditional: with [`SaveCondition::MustNotExist`] it creates the row
//!   only if there is none, with [`SaveCondition::IfMatch`] it replaces the row only if it was
//!   not saved since that ETag was read; otherwise nothing is written and the answer is
//!   [`SaveOutcome::Conflict`]. Two writers that loaded the same row can never both save;
//! - the state's JSON text is kept as given, byte for byte;
//! - `list` returns one page of the rows of a read model for a domain / entity type: the rows
//!   whose instance key sorts after the continuation, in instance-key order (keys compared by
//!   their UTF-16 code units, as Table storage compares them), at most
//!   `page_size` of them (1 when asked for 0), read with one bounded query (`$top`), never a
//!   scan of the whole read model. The page's continuation is the instance key of the last
//!   row the page read (`None` when no row follows), so following continuations visits every
//!   row that exists throughout the walk exactly once; a row created during the walk is seen
//!   only if its key sorts after the walk's position. A row a backend cannot read back is
//!   left out of its page, so a page may hold fewer rows than asked for while more follow;
//!   only `continuation == None` means the end.

use super::{validate_instance_key, EntityType, KeyError, StoreError, StoredState, StreamId};
use async_trait::async_trait;

/// Why a read-model store could not load, save or list (each read-model layer error converts
/// from it: `crate::readmodel::ReadModelError` keeps the same variants).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ReadModelStoreError {
    /// Storage was unavailable, misconfigured, or gave back what it should not have.
    #[error(transparent)]
    Store(#[from] StoreError),

    /// The state is larger than one row can hold.
    #[error(transparent)]
    StateTooLarge(#[from] StateTooLarge),

    /// A domain, entity type, instance key or continuation is not valid.
    #[error(transparent)]
    InvalidKey(#[from] KeyError),
}

/// A read model's state that is larger than one row can hold (both the store's error and the
/// read-model layer's carry it as it is).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("read model {model} of {stream}: the state is {bytes} bytes; a row holds at most {limit}")]
pub struct StateTooLarge {
    pub model: String,
    pub stream: String,
    pub bytes: usize,
    pub limit: usize,
}

/// A read model's row for one stream: its state and where in the stream it stands (the one
/// stored form of a fold, [`StoredState`]; a store answers with `projection` set to the read
/// model asked for and no `max_timestamp`).
pub type Checkpoint = StoredState;

/// The projection version a backend reports for a row it cannot read back (hand-edited or
/// written by incompatible code). Such a row comes back at sequence 0 with a `null` state, so
/// the projector and the rebuild recompute and replace it; projection versions must therefore
/// be below this value.
pub const UNREADABLE_ROW_VERSION: u32 = u32::MAX;

/// The concurrency token of a stored row (an HTTP ETag for Table storage).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ETag(pub String);

/// A loaded row with its concurrency token.
#[derive(Debug, Clone)]
pub struct StoredCheckpoint {
    pub checkpoint: Checkpoint,
    pub etag: ETag,
}

/// One row of a listing.
#[derive(Debug, Clone)]
pub struct ReadModelRow {
    /// The stream's instance key.
    pub instance: String,
    pub checkpoint: Checkpoint,
}

/// One page of a listing.
#[derive(Debug, Clone, Default)]
pub struct ReadModelPage {
    /// The rows, in instance-key order.
    pub rows: Vec<ReadModelRow>,
    /// Pass back to [`ReadModelStore::list`] to get the next page; `None` on the last page.
    pub continuation: Option<String>,
}

/// What every backend checks before listing a page: a continuation is an instance key (the
/// last one of an earlier page). Returns the page size to use, at least 1.
pub fn checked_page_size(
    continuation: Option<&str>,
    page_size: usize,
) -> Result<usize, ReadModelStoreError> {
    if let Some(after) = continuation {
        validate_instance_key(after)?;
    }
    Ok(page_size.max(1))
}

/// When a save may happen.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SaveCondition {
    /// Only if there is no row yet (the first save of a row).
    MustNotExist,
    /// Only if the row is still the one read with this ETag.
    IfMatch(ETag),
}

impl SaveCondition {
    /// The condition for replacing what `load` returned (or creating it when it was absent).
    pub fn after_load(loaded: Option<&StoredCheckpoint>) -> Self {
        match loaded {
            Some(row) => Self::IfMatch(row.etag.clone()),
            None => Self::MustNotExist,
        }
    }
}

/// What a conditional save did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SaveOutcome {
    /// The row was written; `etag` is its new concurrency token, the one a load would return
    /// now, when storage's answer says it (a later save may be conditioned on it without a
    /// load).
    Saved { etag: Option<ETag> },
    /// The condition did not hold (another writer saved first, or the row appeared or
    /// disappeared); nothing was written.
    Conflict,
}

impl SaveOutcome {
    /// Whether the row was written.
    pub fn is_saved(&self) -> bool {
        matches!(self, Self::Saved { .. })
    }
}

/// Where read-model rows are kept.
#[async_trait]
pub trait ReadModelStore: Send + Sync + 'static {
    /// The row of read model `model` for `stream`, if there is one.
    async fn load(
        &self,
        model: &str,
        stream: &StreamId,
    ) -> Result<Option<StoredCheckpoint>, ReadModelStoreError>;

    /// Writes the row of `model` for `stream` if `condition` holds.
    async fn save(
        &self,
        model: &str,
        stream: &StreamId,
        checkpoint: &Checkpoint,
        condition: &SaveCondition,
    ) -> Result<SaveOutcome, ReadModelStoreError>;

    /// A page of the rows of `model` for the streams of `entity_type`: at most
    /// `page_size` rows (at least 1) whose instance key sorts after `continuation` (from the
    /// first row when `None`), in instance-key order. A continuation that is not a valid
    /// instance key is [`ReadModelStoreError::InvalidKey`].
    async fn list(
        &self,
        model: &str,
        entity_type: &EntityType,
        continuation: Option<&str>,
        page_size: usize,
    ) -> Result<ReadModelPage, ReadModelStoreError>;

    /// Deletes the row of `model` for `stream`, if there is one (the stream was erased).
    async fn delete(&self, model: &str, stream: &StreamId) -> Result<(), ReadModelStoreError> {
        let _ = model;
        Err(ReadModelStoreError::from(super::StoreError::Misconfigured(
            format!("this read-model store cannot delete the rows of {stream}"),
        )))
    }
}
