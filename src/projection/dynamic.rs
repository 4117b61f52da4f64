//! Projections with their state type erased, so projections of different state types can be
//! kept in one registry and folded in one pass ([`crate::projection::ProjectionRunner::run_many`]).
//!
//! Every [`Projection`] is a [`DynProjection`] through a blanket impl. The erased fold keeps the
//! typed state while events are applied and converts it to JSON only at the edges (restoring
//! from a snapshot, saving one, returning a result), so folding through this layer costs no
//! more per event than folding the typed projection.
//!
//! `name` and `version` exist on both traits; on a concrete projection type with both traits
//! in scope, call them as `Projection::name(&p)`.

use serde_json::value::RawValue;

use crate::stream::RecordedEvent;

use super::{ApplyError, Projection};

/// A fold in progress: one projection's state, typed inside, JSON outside.
pub trait Fold: Send + Sync {
    /// Replaces the state with one read from a snapshot. On error the state is unchanged.
    fn restore(&mut self, state: &RawValue) -> Result<(), serde_json::Error>;

    /// Goes back to the projection's initial state.
    fn reset(&mut self);

    /// Applies one event (see [`Projection::apply`]).
    fn apply(&mut self, event: &RecordedEvent) -> Result<(), ApplyError>;

    /// The state as JSON text, for a snapshot.
    fn to_raw(&self) -> Result<Box<RawValue>, serde_json::Error>;

    /// The state as a JSON value, for a caller that does not know its type.
    fn to_value(&self) -> Result<serde_json::Value, serde_json::Error>;
}

/// An object-safe projection whose state is seen as JSON.
pub trait DynProjection: Send + Sync {
    fn name(&self) -> &str;
    fn version(&self) -> u32;
    /// A fold at the projection's initial state.
    fn start(&self) -> Box<dyn Fold + '_>;
}

impl<P: Projection> DynProjection for P {
    fn name(&self) -> &str {
        Projection::name(self)
    }

    fn version(&self) -> u32 {
        Projection::version(self)
    }

    fn start(&self) -> Box<dyn Fold + '_> {
        Box::new(TypedFold::new(self))
    }
}

/// The fold of one typed projection; the runner uses it directly for typed results.
pub(crate) struct TypedFold<'p, P: Projection> {
    projection: &'p P,
    pub(crate) state: P::State,
}

impl<'p, P: Projection> TypedFold<'p, P> {
    pub(crate) fn new(projection: &'p P) -> Self {
        Self {
            projection,
            state: projection.initial(),
        }
    }
}

impl<P: Projection> Fold for TypedFold<'_, P> {
    fn restore(&mut self, state: &RawValue) -> Result<(), serde_json::Error> {
        self.state = serde_json::from_str(state.get())?;
        Ok(())
    }

    fn reset(&mut self) {
        self.state = self.projection.initial();
    }

    fn apply(&mut self, event: &RecordedEvent) -> Result<(), ApplyError> {
        self.projection.apply(&mut self.state, event)
    }

    fn to_raw(&self) -> Result<Box<RawValue>, serde_json::Error> {
        serde_json::value::to_raw_value(&self.state)
    }

    fn to_value(&self) -> Result<serde_json::Value, serde_json::Error> {
        serde_json::to_value(&self.state)
    }
}
