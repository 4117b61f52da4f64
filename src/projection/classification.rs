//! Classifications: whether an entity belongs to a group (an account "in overdraft", an order
//! "awaiting payment") as of a point in its history.
//!
//! Each event either puts the entity in the group ([`Classified::Include`]), takes it out
//! ([`Classified::Exclude`]) or leaves membership as it was ([`Classified::Unchanged`]); the
//! entity starts outside. A classification is run as a projection through [`Classifier`] (or
//! [`StatefulClassifier`]), so it gets as-of queries, snapshots and one-pass runs with other
//! projections like any projection.
//!
//! A [`Classification`] decides from each event alone. A [`StatefulClassification`] also keeps
//! a running value between events (the balance, to tell whether a withdrawal takes an account
//! below zero); that value is part of the projection's state, so it is snapshotted with the
//! membership and a resumed run decides exactly as a full replay would.

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::stream::RecordedEvent;

use super::{ApplyError, Projection};

/// What one event does to group membership.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Classified {
    Include,
    Exclude,
    Unchanged,
}

impl Classified {
    /// Membership after this verdict, given membership before it.
    pub fn fold(self, member: bool) -> bool {
        match self {
            Self::Include => true,
            Self::Exclude => false,
            Self::Unchanged => member,
        }
    }
}

/// A group whose membership each event decides on its own.
pub trait Classification: Send + Sync + 'static {
    /// The projection name it runs under (see `validate_projection_name`).
    fn name(&self) -> &str;
    /// Bump when `classify` changes meaning: older snapshots are then ignored.
    fn version(&self) -> u32;
    /// The verdict of one event. Event types it does not know are `Unchanged`.
    fn classify(&self, event: &RecordedEvent) -> Result<Classified, ApplyError>;
}

/// A group whose membership depends on a running value kept between events.
pub trait StatefulClassification: Send + Sync + 'static {
    /// The running value; it starts at `Default::default()`.
    type Memo: Clone + Serialize + DeserializeOwned + Default + Send + Sync + 'static;
    fn name(&self) -> &str;
    fn version(&self) -> u32;
    /// Updates the running value with one event and gives the event's verdict. Event types it
    /// does not know leave `memo` as it is and are `Unchanged`.
    fn classify_with(
        &self,
        memo: &mut Self::Memo,
        event: &RecordedEvent,
    ) -> Result<Classified, ApplyError>;
}

/// Runs a [`Classification`] as a projection whose state is membership.
#[derive(Debug, Clone, Default)]
pub struct Classifier<C>(pub C);

impl<C> Classifier<C> {
    pub fn new(classification: C) -> Self {
        Self(classification)
    }
}

impl<C: Classification> Projection for Classifier<C> {
    type State = bool;

    fn name(&self) -> &str {
        self.0.name()
    }

    fn version(&self) -> u32 {
        self.0.version()
    }

    fn initial(&self) -> bool {
        false
    }

    fn apply(&self, member: &mut bool, event: &RecordedEvent) -> Result<(), ApplyError> {
        *member = self.0.classify(event)?.fold(*member);
        Ok(())
    }
}

/// The state of a [`StatefulClassifier`]: membership and the running value behind it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Membership<M> {
    pub member: bool,
    pub memo: M,
}

/// Runs a [`StatefulClassification`] as a projection.
#[derive(Debug, Clone, Default)]
pub struct StatefulClassifier<C>(pub C);

impl<C> StatefulClassifier<C> {
    pub fn new(classification: C) -> Self {
        Self(classification)
    }
}

impl<C: StatefulClassification> Projection for StatefulClassifier<C> {
    type State = Membership<C::Memo>;

    fn name(&self) -> &str {
        self.0.name()
    }

    fn version(&self) -> u32 {
        self.0.version()
    }

    fn initial(&self) -> Self::State {
        Membership::default()
    }

    fn apply(&self, state: &mut Self::State, event: &RecordedEvent) -> Result<(), ApplyError> {
        state.member = self
            .0
            .classify_with(&mut state.memo, event)?
            .fold(state.member);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn verdicts_fold_into_membership() {
        use Classified::*;
        assert!(Include.fold(false) && Include.fold(true));
        assert!(!Exclude.fold(false) && !Exclude.fold(true));
        assert!(!Unchanged.fold(false) && Unchanged.fold(true));
    }
}
