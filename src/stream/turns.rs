//! Turns: one writer at a time per stream in this process.
//!
//! Writers of one stream that race each other waste attempts: of several appends (or commands
//! decided on the same state) only one can land, and the others try again. Within one process
//! there is no need to race: [`StreamTurns::take`] queues the writers of a stream, first come
//! first served. Only writers in *other* processes can then make an attempt lose, so
//! contention costs storage requests per process, not per caller. The command executor
//! (`crate::projection`) and the backends' retries of `Any` appends (`crate::storage`) both use
//! it; one queue, written once.
//!
//! Guarantees: a turn is held until it is dropped (also when its future is cancelled); waiting
//! turns are served in the order they were asked for; the entry of a stream nobody holds or
//! waits for is removed when its last turn is dropped (or, left by a wait cancelled at that
//! moment, by a later [`StreamTurns::take`] once such entries add up), so the map stays about
//! the size of the set of streams with commands in flight.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};

use tokio::sync::OwnedMutexGuard;

use super::StreamId;

type Turn = Arc<tokio::sync::Mutex<()>>;

/// Entries the map holds before a `take` first looks for unused ones.
const FIRST_SWEEP_AT: usize = 64;

/// The turns of every stream with a command in flight in this process.
#[derive(Debug, Default)]
pub struct StreamTurns {
    streams: Mutex<Streams>,
}

#[derive(Debug, Default)]
struct Streams {
    turns: HashMap<String, Turn>,
    /// Size at which the next `take` removes the entries nobody holds or waits for.
    sweep_at: usize,
}

/// The right to run a command on one stream; the next waiting command goes when it is dropped.
#[derive(Debug)]
pub struct StreamTurn {
    turns: Arc<StreamTurns>,
    key: String,
    held: Option<OwnedMutexGuard<()>>,
}

impl StreamTurns {
    pub fn new() -> Self {
        Self::default()
    }

    /// Waits for `stream`'s turn.
    pub async fn take(self: &Arc<Self>, stream: &StreamId) -> StreamTurn {
        let key = stream.to_string();
        let turn = {
            let mut streams = self.streams();
            if streams.turns.len() >= streams.sweep_at.max(FIRST_SWEEP_AT) {
                streams.turns.retain(|_, turn| Arc::strong_count(turn) > 1);
                streams.sweep_at = streams.turns.len().saturating_mul(2);
            }
            streams.turns.entry(key.clone()).or_default().clone()
        };
        StreamTurn {
            turns: self.clone(),
            key,
            held: Some(turn.lock_owned().await),
        }
    }

    /// Streams with a command in flight (held or waited for).
    pub fn len(&self) -> usize {
        self.streams().turns.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn streams(&self) -> MutexGuard<'_, Streams> {
        // The map is never left half-updated, so a poisoned lock still holds a sound map.
        self.streams
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

impl Drop for StreamTurn {
    fn drop(&mut self) {
        drop(self.held.take());
        let mut streams = self.turns.streams();
        // Only the map holds it: nobody holds or waits for this stream's turn.
        if streams
            .turns
            .get(&self.key)
            .is_some_and(|turn| Arc::strong_count(turn) == 1)
        {
            streams.turns.remove(&self.key);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn stream(instance: &str) -> StreamId {
        StreamId::new("Bank", "Account", instance).unwrap()
    }

    #[tokio::test]
    async fn one_turn_per_stream_in_order_and_the_map_empties() {
        let turns = Arc::new(StreamTurns::new());
        let first = turns.take(&stream("A")).await;
        // Another stream is not held up.
        let other = tokio::time::timeout(Duration::from_secs(5), turns.take(&stream("B")))
            .await
            .unwrap();
        let order = Arc::new(Mutex::new(Vec::new()));
        let mut waiting = Vec::new();
        for i in 0..3 {
            let (turns, order) = (turns.clone(), order.clone());
            waiting.push(tokio::spawn(async move {
                let _turn = turns.take(&stream("A")).await;
                order.lock().unwrap().push(i);
            }));
            // Let each ask before the next one does.
            tokio::task::yield_now().await;
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        assert!(order.lock().unwrap().is_empty(), "all wait for the first");
        drop(first);
        for task in waiting {
            task.await.unwrap();
        }
        assert_eq!(*order.lock().unwrap(), [0, 1, 2]);
        assert_eq!(turns.len(), 1, "B is still held");
        drop(other);
        assert!(turns.is_empty());
    }

    #[tokio::test]
    async fn a_cancelled_wait_gives_up_its_place() {
        let turns = Arc::new(StreamTurns::new());
        let held = turns.take(&stream("A")).await;
        let cancelled =
            tokio::time::timeout(Duration::from_millis(10), turns.take(&stream("A"))).await;
        assert!(cancelled.is_err());
        drop(held);
        assert!(turns.is_empty());
        let _again = turns.take(&stream("A")).await;
        assert_eq!(turns.len(), 1);
    }
}
