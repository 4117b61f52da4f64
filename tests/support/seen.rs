//! `Seen`, a projection whose state is the sequence numbers folded in, in order: a state that
//! shows exactly which events a fold took, for tests of what a read or a fold covers.

use streamfold::projection::{ApplyError, Projection};
use streamfold::stream::RecordedEvent;

/// The sequence numbers folded in, in order.
pub struct Seen;

impl Projection for Seen {
    type State = Vec<u64>;
    fn name(&self) -> &str {
        "seen"
    }
    fn version(&self) -> u32 {
        1
    }
    fn initial(&self) -> Vec<u64> {
        Vec::new()
    }
    fn apply(&self, state: &mut Vec<u64>, event: &RecordedEvent) -> Result<(), ApplyError> {
        state.push(event.sequence);
        Ok(())
    }
}
