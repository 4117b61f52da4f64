//! [`EventCount`]: the smallest projection there is, for tests of what folds (the runner, the
//! read-model projector, the webhook): its state is how many events were folded in, so a test
//! can tell a fold that skipped or repeated an event from one that did not. It can be told to
//! refuse one event type, for tests of what happens to a stream a projection cannot fold.

use crate::projection::{ApplyError, Projection};
use crate::stream::RecordedEvent;

/// Counts a stream's events (state `u64`), as projection `count`.
#[derive(Debug, Clone, Copy)]
pub struct EventCount {
    version: u32,
    refused: Option<&'static str>,
}

impl EventCount {
    /// Version 1, refusing nothing.
    pub const fn new() -> Self {
        Self {
            version: 1,
            refused: None,
        }
    }

    /// The same projection declaring another version (a state of another version is never
    /// resumed from).
    pub const fn at_version(self, version: u32) -> Self {
        Self { version, ..self }
    }

    /// The same projection refusing every event of type `event_type`.
    pub const fn refusing(self, event_type: &'static str) -> Self {
        Self {
            refused: Some(event_type),
            ..self
        }
    }
}

impl Default for EventCount {
    fn default() -> Self {
        Self::new()
    }
}

impl Projection for EventCount {
    type State = u64;

    fn name(&self) -> &str {
        "count"
    }

    fn version(&self) -> u32 {
        self.version
    }

    fn initial(&self) -> u64 {
        0
    }

    fn apply(&self, count: &mut u64, event: &RecordedEvent) -> Result<(), ApplyError> {
        if self.refused == Some(event.event_type.as_str()) {
            return Err(ApplyError::new(event, "this projection refuses it"));
        }
        *count = count
            .checked_add(1)
            .ok_or_else(|| ApplyError::new(event, "too many events"))?;
        Ok(())
    }
}
