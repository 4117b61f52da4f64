//! Read models: registered projections whose state is kept, per stream, in a store, together
//! with the sequence number it is as of (its *checkpoint*), and kept up to date from Event Grid
//! notifications.
//!
//! Event Grid delivers at least once and in no particular order, so a notification is only a
//! hint that "stream S has an event n". What this module guarantees, whatever the delivery:
//! - **never applied twice**: a row at sequence `c` only ever has events `c+1..` folded into it,
//!   read from the event store, and a row is only written with the storage concurrency token
//!   (ETag) it was read with, so two invocations can never both advance it from the same point;
//! - **never lost**: handling "event n of S" leaves the row at sequence ≥ n (it reads up to the
//!   end of the stream, which also fills gaps when notifications arrive before their
//!   predecessors), or fails so that Event Grid delivers it again;
//! - **self-healing**: a row written by another projection version, or whose state no longer
//!   reads back, is recomputed from the start of the stream; [`rebuild`] recomputes every row
//!   of an entity type from its streams;
//! - **one bad stream hurts no other**: an event a read model's projection refuses (data it
//!   cannot decode, a rule or range it breaks) is permanent, so instead of failing every
//!   delivery for ever, that model's row of that stream is saved *failed* (the refused event
//!   and why: [`Checkpoint::failure`]), the refusal is logged and reported
//!   ([`ProjectOutcome::failed`], [`RebuildReport::unreadable`]), and the call succeeds; the
//!   other read models of the stream and every other stream carry on. Listings show a failed
//!   row as unreadable, never as a state.
//!
//! Nothing here knows about HTTP: the Event Grid entry points live in
//! `crate::functions::webhook`.
//!
//! # Layout
//! - the [`ReadModelStore`] contract, [`Checkpoint`], [`SaveCondition`], [`ReadModelPage`] are
//!   the core's (`crate::stream`), re-exported here; its adapters are in `crate::storage`:
//!   [`MemoryReadModelStore`] (unit tests) and [`TableReadModelStore`] (rows in their own
//!   Azure table), re-exported here too.
//! - `projector`: [`ReadModelProjector`], applying one notification to every read model.
//! - `cache`: [`CheckpointCache`], the rows this process saw (kept whole when small) and one
//!   catch-up per stream at a time, so that duplicates cost nothing, a stream's notifications
//!   one catch-up, and a kept row no load.
//! - `first_rows`: [`FirstRowOdds`], whether rows this process has not seen are probably not
//!   written yet, so a new stream's rows are saved without loading them first.
//! - `rebuild`: [`rebuild`], recomputing every row of a domain / entity type.
//! - `error`: [`ReadModelError`].

mod cache;
mod error;
mod first_rows;
mod projector;
mod rebuild;

pub use crate::storage::{MemoryReadModelStore, TableReadModelStore, DEFAULT_READ_MODEL_TABLE};
pub use crate::stream::{
    Checkpoint, ETag, FoldFailure, ReadModelPage, ReadModelRow, ReadModelStore,
    ReadModelStoreError, SaveCondition, SaveOutcome, StateTooLarge, StoredCheckpoint,
    MAX_FAILURE_REASON_CHARS, UNREADABLE_ROW_VERSION,
};
pub use cache::{
    CheckpointCache, MAX_CACHED_CHECKPOINTS, MAX_CACHED_ROWS_BYTES, MAX_CACHED_ROW_BYTES,
};
pub use error::ReadModelError;
pub use first_rows::{FirstRowOdds, ABSENT_STEP, GUESS_FROM, MAX_SCORE, PRESENT_STEP};
pub use projector::{ProjectOutcome, ReadModelProjector, CATCH_UP_CHUNK_EVENTS, MAX_SAVE_ATTEMPTS};
pub use rebuild::{
    rebuild, rebuild_instances, RebuildFailure, RebuildReport, UnreadableStream,
    REBUILD_CONCURRENCY,
};

#[cfg(test)]
mod skipped_loads_tests;
#[cfg(test)]
mod tests;
