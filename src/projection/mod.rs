//! Projections: folds of a stream's events into a state, as of now, a sequence number or a
//! point in time, with snapshots so long streams are not replayed from the start.
//!
//! Nothing here knows about HTTP or Azure: projections run over any [`crate::stream::EventStore`]
//! and keep snapshots in any [`SnapshotStore`]. The central promise is that a snapshot never
//! changes a result: a run that resumes from one returns exactly what a full replay returns.
//!
//! # Layout
//! - `definition`: the [`Projection`] trait and the rules its implementations keep.
//! - `dynamic`: [`DynProjection`], projections with their state seen as JSON.
//! - `fold`: the one fold engine (resume from a stored state, read what follows in chunks,
//!   fold, stop at [`AsOf`]) that the runner and the read-model projector share.
//! - `runner`: [`ProjectionRunner`], [`Projected`].
//! - [`Snapshot`], [`SnapshotStore`] (from the core, `crate::stream`): the snapshot contract;
//!   a snapshot is a [`crate::stream::StoredState`], the same type as a read-model row;
//!   `crate::storage` holds its adapters.
//! - `cache`: [`StateCache`], the latest states kept in process, checked like snapshots.
//! - `classification`: group membership as of a point ([`Classification`], [`Classifier`]).
//! - `registry`: [`ProjectionRegistry`], projections by domain / entity type / name.
//! - `guard`: [`StreamGuard`], a domain's rules for events other writers append to its
//!   streams, checked against the state its projection folds; [`guarded_append`].
//! - `executor`: [`CommandExecutor`], the one loop commands run through: load the state,
//!   decide, append with its exact version, decide again after a lost race within a
//!   [`ConflictBudget`]; commands recognised by an idempotency key or their event ids.
//! - [`StreamTurns`] (from the core, `crate::stream`): one command at a time per stream in
//!   this process.
//! - `group`: [`CommandGroups`], where commands waiting for one stream meet so that the
//!   executor writes them in one append (group commit).
//! - `idempotency`: [`IdempotencyKey`], [`Idempotency`]: event ids derived from a client's key,
//!   and the request's hash stored with the events.
//! - `error`: [`ApplyError`], [`ProjectionError`].

mod cache;
mod classification;
mod definition;
mod dynamic;
mod error;
mod executor;
mod fold;
mod group;
mod guard;
mod idempotency;
mod registry;
mod runner;

pub use crate::stream::{Snapshot, SnapshotStore};
pub use crate::stream::{StreamTurn, StreamTurns};
pub use cache::{StateCache, MAX_CACHED_STATE_BYTES};
pub use classification::{
    Classification, Classified, Classifier, Membership, StatefulClassification, StatefulClassifier,
};
pub use definition::{decode_data, validate_projection_name, Projection, MAX_PROJECTION_NAME_LEN};
pub use dynamic::{DynProjection, Fold};
pub use error::{ApplyError, ProjectionError};
pub use executor::{
    CommandExecutor, CommandOptions, CommandPolicy, ConflictBudget, ExecuteError, Executed,
    Recognition, DEFAULT_CONFLICT_DEADLINE, MAX_GROUP_DATA_BYTES, MAX_GROUP_EVENTS,
};
pub(crate) use fold::{first_chunk_after, fold_stored, fold_stream, Lane, OnRefusal};
pub use fold::{AsOf, REPLAY_CHUNK_EVENTS};
pub use group::CommandGroups;
pub use guard::{guarded_append, DynStreamGuard, GuardError, GuardRegistry, StreamGuard};
pub use idempotency::{
    Idempotency, IdempotencyKey, InvalidIdempotencyKey, IDEMPOTENCY_NAMESPACE,
    MAX_IDEMPOTENCY_KEY_LEN,
};
pub use registry::{ProjectionRegistry, RegistryError};
pub use runner::{Projected, ProjectionRunner};
