//! Applying a notification "stream S has event n" to every read model registered for S's
//! domain / entity type, exactly once, whatever order and however often notifications arrive.
//!
//! For each read model, one attempt is: load the row (state, sequence `c`, ETag); if `c ≥ n`
//! the notification is a duplicate (or was overtaken) and nothing happens; otherwise read the
//! stream's events after `c` up to its end, fold them into the row's state, and save with the
//! row's ETag (or "must not exist" for a first row). Reading to the end, rather than applying
//! only event n, is what makes out-of-order delivery harmless: a notification that arrives
//! before its predecessors applies them too, and theirs then find nothing left to do.
//!
//! A save that loses to a concurrent invocation (another notification of the same stream)
//! changes nothing; the attempt is made again from the fresh row, at most
//! [`MAX_SAVE_ATTEMPTS`] times. Events are only ever folded into the state read with the ETag
//! the save is conditioned on, so none is applied twice, and the row's sequence never goes
//! down.
//!
//! All read models of one stream are loaded together and the stream is read once per attempt
//! (from the oldest row's sequence), in reads of at most [`CATCH_UP_CHUNK_EVENTS`] events, each
//! folded into every row's state before the next is read: memory does not grow with the
//! number of events a row catches up on. Nothing is saved between chunks: each row is saved
//! once at the end of the attempt, conditioned on the ETag it was loaded with, exactly as an
//! unchunked attempt would (a chunk is a read, never a commit point).
//!
//! A row written by another projection version, one whose state no longer deserializes, or
//! one that claims a sequence past the end of the stream is recomputed from the first event.
//!
//! An event the projection refuses (`ApplyError`: data it cannot decode, a value or transition
//! its rules refuse, an overflow) is a permanent fault of that stream, not of the delivery:
//! retrying can never fold it. The row is then saved *failed* ([`Checkpoint::failed`]: the
//! initial state at the refused event's sequence, with the reason), the refusal is logged as
//! an error and reported in [`ProjectOutcome::failed`], and the call succeeds, so Event Grid
//! does not deliver the notification again forever. Later notifications of that stream find
//! the failed row and do nothing (no read); the other read models of the stream, and every
//! other stream, carry on. Only another projection version (or a rebuild, which marks the
//! row the same way) writes the row again.

use std::sync::Arc;

use futures::future::join_all;

use super::ReadModelError;
use crate::projection::{ApplyError, DynProjection, Fold, ProjectionError};
use crate::stream::{
    Checkpoint, FoldFailure, ReadModelStore, SaveCondition, SaveOutcome, StoredCheckpoint,
};
use crate::stream::{EventStore, ReadRequest, RecordedEvent, StreamId};

/// Attempts per read model before a notification gives up (and is delivered again later).
pub const MAX_SAVE_ATTEMPTS: u32 = 10;
/// Most events one read of a catch-up asks for: a row is brought over any number of events
/// with at most this many of them in memory (the replay chunk of the projection runner).
pub const CATCH_UP_CHUNK_EVENTS: u64 = crate::projection::REPLAY_CHUNK_EVENTS;

/// What one call did to one read model.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProjectOutcome {
    /// The read model's (projection's) name.
    pub model: String,
    /// The row's sequence before (0 = no row).
    pub before: u64,
    /// The row's sequence after.
    pub after: u64,
    /// Events folded in by this call.
    pub applied: u64,
    /// The row was already at or past the notified sequence: nothing was written.
    pub duplicate: bool,
    /// Attempts made (more than 1 after losing to concurrent invocations).
    pub attempts: u32,
    /// Set when the projection refuses an event of the stream: the row is marked with it
    /// (now, or by an earlier call) and this read model of the stream is not advanced again.
    pub failed: Option<FoldFailure>,
}

/// Keeps the read models of one domain / entity type up to date.
#[derive(Clone)]
pub struct ReadModelProjector {
    pub(super) events: Arc<dyn EventStore>,
    pub(super) store: Arc<dyn ReadModelStore>,
    pub(super) models: Vec<Arc<dyn DynProjection>>,
}

/// A save decided by an attempt.
struct Save {
    index: usize,
    before: u64,
    applied: u64,
    checkpoint: Checkpoint,
    condition: SaveCondition,
}

/// One read model's work within an attempt.
struct Lane<'a> {
    index: usize,
    fold: Box<dyn Fold + 'a>,
    /// Events up to here are in the fold.
    start: u64,
    loaded: Option<StoredCheckpoint>,
    /// Events folded in by this attempt.
    applied: u64,
    /// The event the projection refused (nothing more is folded into this lane).
    refused: Option<ApplyError>,
}

impl Lane<'_> {
    /// Folds in the events of `events` past `start`, until the projection refuses one.
    fn fold_chunk(&mut self, events: &[RecordedEvent]) {
        if self.refused.is_some() {
            return;
        }
        for event in events.iter().filter(|e| e.sequence > self.start) {
            if let Err(error) = self.fold.apply(event) {
                self.refused = Some(error);
                return;
            }
            self.applied += 1;
        }
    }
}

impl ReadModelProjector {
    /// A projector of `models` (projections registered as read models) over the streams of
    /// `events`, with rows in `store`.
    pub fn new(
        events: Arc<dyn EventStore>,
        store: Arc<dyn ReadModelStore>,
        models: Vec<Arc<dyn DynProjection>>,
    ) -> Self {
        Self {
            events,
            store,
            models,
        }
    }

    /// The names of the read models kept.
    pub fn models(&self) -> Vec<&str> {
        self.models.iter().map(|m| m.name()).collect()
    }

    /// Handles a notification about event `sequence` of `stream`: afterwards every read model's
    /// row is at `sequence` or later. Outcomes are in the order of [`Self::models`].
    pub async fn project(
        &self,
        stream: &StreamId,
        sequence: u64,
    ) -> Result<Vec<ProjectOutcome>, ReadModelError> {
        self.advance(stream, Some(sequence)).await
    }

    /// Brings every read model's row of `stream` to the end of the stream.
    pub async fn catch_up(&self, stream: &StreamId) -> Result<Vec<ProjectOutcome>, ReadModelError> {
        self.advance(stream, None).await
    }

    async fn advance(
        &self,
        stream: &StreamId,
        notified: Option<u64>,
    ) -> Result<Vec<ProjectOutcome>, ReadModelError> {
        let mut outcomes: Vec<Option<ProjectOutcome>> = vec![None; self.models.len()];
        let mut pending: Vec<usize> = (0..self.models.len()).collect();
        for attempt in 1..=MAX_SAVE_ATTEMPTS {
            if pending.is_empty() {
                break;
            }
            pending = self
                .attempt(stream, notified, &pending, attempt, &mut outcomes)
                .await?;
        }
        if let Some(&index) = pending.first() {
            return Err(ReadModelError::Contention {
                model: self.models[index].name().to_owned(),
                stream: stream.to_string(),
                attempts: MAX_SAVE_ATTEMPTS,
            });
        }
        Ok(outcomes.into_iter().flatten().collect())
    }

    /// One attempt for the read models in `pending`; returns those that lost a save race.
    async fn attempt(
        &self,
        stream: &StreamId,
        notified: Option<u64>,
        pending: &[usize],
        attempt: u32,
        outcomes: &mut [Option<ProjectOutcome>],
    ) -> Result<Vec<usize>, ReadModelError> {
        let loads = join_all(
            pending
                .iter()
                .map(|&i| self.store.load(self.models[i].name(), stream)),
        )
        .await;
        let mut lanes = Vec::new();
        for (&index, loaded) in pending.iter().zip(loads) {
            let loaded = loaded?;
            let model = &self.models[index];
            let before = loaded.as_ref().map_or(0, |row| row.checkpoint.sequence);
            if let Some(failure) = loaded
                .as_ref()
                .filter(|row| row.checkpoint.projection_version == model.version())
                .and_then(|row| row.checkpoint.failure.clone())
            {
                // Refused for good (events never change): nothing to read or write.
                outcomes[index] = Some(ProjectOutcome {
                    model: model.name().to_owned(),
                    before,
                    after: before,
                    applied: 0,
                    duplicate: true,
                    attempts: attempt,
                    failed: Some(failure),
                });
                continue;
            }
            let mut fold = model.start();
            let start = match &loaded {
                Some(row) if resumable(model.as_ref(), fold.as_mut(), stream, row) => {
                    row.checkpoint.sequence
                }
                _ => 0,
            };
            if start > 0 && notified.is_some_and(|n| start >= n) {
                outcomes[index] = Some(ProjectOutcome {
                    model: model.name().to_owned(),
                    before,
                    after: before,
                    applied: 0,
                    duplicate: true,
                    attempts: attempt,
                    failed: None,
                });
                continue;
            }
            lanes.push(Lane {
                index,
                fold,
                start,
                loaded,
                applied: 0,
                refused: None,
            });
        }
        if lanes.is_empty() {
            return Ok(Vec::new());
        }

        let version = self.fold_to_end(stream, notified, &mut lanes).await?;

        let mut saves = Vec::new();
        for mut lane in lanes {
            let model = &self.models[lane.index];
            let before = lane.loaded.as_ref().map_or(0, |r| r.checkpoint.sequence);
            let applied = lane.applied;
            if let Some(error) = lane.refused.take() {
                // The stream holds an event this projection refuses: mark the row with it and
                // succeed, so the notification is not delivered again and again for an event
                // that will never fold; the other read models and streams carry on.
                tracing::error!(
                    stream = %stream,
                    model = model.name(),
                    sequence = error.sequence,
                    event_type = error.event_type,
                    reason = error.reason,
                    "read model cannot fold an event of the stream; its row is marked unreadable"
                );
                let initial = model
                    .start()
                    .to_raw()
                    .map_err(|source| ProjectionError::State {
                        projection: model.name().to_owned(),
                        source,
                    })?;
                saves.push(Save {
                    index: lane.index,
                    before,
                    applied,
                    checkpoint: Checkpoint::failed(
                        initial,
                        model.version(),
                        error.sequence,
                        &error,
                    ),
                    condition: SaveCondition::after_load(lane.loaded.as_ref()),
                });
                continue;
            }
            if applied == 0 && (lane.start > 0 || version == 0) {
                // Nothing new: the row is at the end of the stream (a catch-up), or there is
                // no stream at all.
                outcomes[lane.index] = Some(ProjectOutcome {
                    model: model.name().to_owned(),
                    before,
                    after: before,
                    applied: 0,
                    duplicate: true,
                    attempts: attempt,
                    failed: None,
                });
                continue;
            }
            let state = lane
                .fold
                .to_raw()
                .map_err(|source| ProjectionError::State {
                    projection: model.name().to_owned(),
                    source,
                })?;
            saves.push(Save {
                index: lane.index,
                before,
                applied,
                checkpoint: Checkpoint {
                    state,
                    sequence: version,
                    projection_version: model.version(),
                    failure: None,
                },
                condition: SaveCondition::after_load(lane.loaded.as_ref()),
            });
        }

        let results = join_all(saves.iter().map(|save| {
            self.store.save(
                self.models[save.index].name(),
                stream,
                &save.checkpoint,
                &save.condition,
            )
        }))
        .await;
        let mut lost = Vec::new();
        for (save, result) in saves.into_iter().zip(results) {
            let model = self.models[save.index].name();
            match result? {
                SaveOutcome::Saved => {
                    tracing::debug!(
                        stream = %stream,
                        model,
                        before = save.before,
                        after = save.checkpoint.sequence,
                        applied = save.applied,
                        attempt,
                        "read model saved"
                    );
                    outcomes[save.index] = Some(ProjectOutcome {
                        model: model.to_owned(),
                        before: save.before,
                        after: save.checkpoint.sequence,
                        applied: save.applied,
                        duplicate: false,
                        attempts: attempt,
                        failed: save.checkpoint.failure.clone(),
                    });
                }
                SaveOutcome::Conflict => {
                    tracing::debug!(
                        stream = %stream,
                        model,
                        attempt,
                        "read model save lost a race; retrying from the fresh row"
                    );
                    lost.push(save.index);
                }
            }
        }
        Ok(lost)
    }

    /// Reads the events after the oldest lane's start to the end of the stream, at most
    /// [`CATCH_UP_CHUNK_EVENTS`] at a time, and folds each chunk into every lane; returns the
    /// stream's version (read with the first chunk, which bounds the others). A notification
    /// ahead of that version fails before anything more is read. A lane whose row claims more
    /// events than the stream has is reset to replay from the first event.
    async fn fold_to_end(
        &self,
        stream: &StreamId,
        notified: Option<u64>,
        lanes: &mut [Lane<'_>],
    ) -> Result<u64, ReadModelError> {
        let after = lanes.iter().map(|l| l.start).min().unwrap_or(0);
        let first = chunk_after(after, None);
        let slice = self.events.read(stream, first).await?;
        let version = slice.version;
        if let Some(n) = notified {
            if version < n {
                return Err(ReadModelError::AheadOfStream {
                    stream: stream.to_string(),
                    sequence: n,
                    version,
                });
            }
        }
        let mut reset = false;
        for lane in lanes.iter_mut().filter(|l| l.start > version) {
            tracing::warn!(
                stream = %stream,
                model = self.models[lane.index].name(),
                row_sequence = lane.start,
                stream_version = version,
                "read model row is past the end of the stream; recomputing it"
            );
            lane.fold.reset();
            lane.start = 0;
            reset = true;
        }
        let mut done = if reset && after > 0 {
            // The first chunk started past what the reset lanes need: read from the start.
            0
        } else {
            for lane in lanes.iter_mut() {
                lane.fold_chunk(&slice.events);
            }
            first.to_sequence.unwrap_or(u64::MAX)
        };
        drop(slice);
        while done < version {
            let chunk = chunk_after(done, Some(version));
            let events = self.events.read_known(stream, chunk, version).await?;
            for lane in lanes.iter_mut() {
                lane.fold_chunk(&events);
            }
            done = chunk.to_sequence.unwrap_or(version);
        }
        Ok(version)
    }
}

/// The events after `after`, at most [`CATCH_UP_CHUNK_EVENTS`] of them and none past `last`.
fn chunk_after(after: u64, last: Option<u64>) -> ReadRequest {
    let end = after.saturating_add(CATCH_UP_CHUNK_EVENTS);
    ReadRequest::range(
        after.saturating_add(1),
        Some(last.map_or(end, |last| last.min(end))),
    )
}

/// Whether `row` can be resumed from: same projection version and a state that reads back
/// (restored into `fold`). Otherwise `fold` stays at the initial state, with a log line.
fn resumable(
    model: &dyn DynProjection,
    fold: &mut dyn Fold,
    stream: &StreamId,
    row: &StoredCheckpoint,
) -> bool {
    if row.checkpoint.projection_version != model.version() {
        tracing::info!(
            stream = %stream,
            model = model.name(),
            row_version = row.checkpoint.projection_version,
            version = model.version(),
            "read model row is of another projection version; recomputing it"
        );
        return false;
    }
    match fold.restore(&row.checkpoint.state) {
        Ok(()) => true,
        Err(e) => {
            tracing::warn!(
                stream = %stream,
                model = model.name(),
                error = %e,
                "read model state cannot be read; recomputing it"
            );
            fold.reset();
            false
        }
    }
}

#[cfg(test)]
mod chunk_tests {
    use super::*;
    use crate::projection::Projection;
    use crate::storage::MemoryReadModelStore;
    use crate::storage::MemoryStore;
    use crate::stream::{ExpectedVersion, NewEvent};
    use crate::testing::CountingStore;

    struct Count;

    impl Projection for Count {
        type State = u64;
        fn name(&self) -> &str {
            "count"
        }
        fn version(&self) -> u32 {
            1
        }
        fn initial(&self) -> u64 {
            0
        }
        fn apply(&self, n: &mut u64, _: &RecordedEvent) -> Result<(), ApplyError> {
            *n += 1;
            Ok(())
        }
    }

    async fn append(store: &dyn EventStore, stream: &StreamId, at: u64, n: u64) -> u64 {
        let mut version = at;
        while version < at + n {
            let batch = (at + n - version).min(400);
            let new = (0..batch)
                .map(|_| NewEvent::new("Happened", &serde_json::json!({})).unwrap())
                .collect();
            version = store
                .append(stream, ExpectedVersion::Exact(version), new)
                .await
                .unwrap()
                .version;
        }
        version
    }

    #[tokio::test]
    async fn a_catch_up_longer_than_a_chunk_reads_chunk_by_chunk_and_reaches_the_end() {
        let events = Arc::new(CountingStore::new(MemoryStore::new()));
        let rows = Arc::new(MemoryReadModelStore::new());
        let model: Arc<dyn DynProjection> = Arc::new(Count);
        let projector = ReadModelProjector::new(events.clone(), rows.clone(), vec![model]);
        let stream = StreamId::new("Bank", "Account", "long").unwrap();
        let length = CATCH_UP_CHUNK_EVENTS * 5 / 2;
        append(events.as_ref(), &stream, 0, length).await;

        let outcomes = projector.project(&stream, 1).await.unwrap();
        assert_eq!((outcomes[0].after, outcomes[0].applied), (length, length));
        assert_eq!(
            events.reads(),
            3,
            "chunks of at most {CATCH_UP_CHUNK_EVENTS}"
        );
        assert_eq!(events.events_read(), length);
        let row = rows.load("count", &stream).await.unwrap().unwrap();
        assert_eq!(row.checkpoint.sequence, length);
        assert_eq!(row.checkpoint.state.get(), length.to_string());

        // From the checkpoint on: only the new events.
        let version = append(events.as_ref(), &stream, length, 10).await;
        events.reset();
        let outcomes = projector.catch_up(&stream).await.unwrap();
        assert_eq!((outcomes[0].before, outcomes[0].after), (length, version));
        assert_eq!((events.reads(), events.events_read()), (1, 10));
        let row = rows.load("count", &stream).await.unwrap().unwrap();
        assert_eq!(row.checkpoint.state.get(), version.to_string());

        // A notification ahead of the stream fails after one read.
        events.reset();
        assert!(matches!(
            projector.project(&stream, version + 1).await,
            Err(ReadModelError::AheadOfStream { .. })
        ));
        assert_eq!(events.reads(), 1);
    }
}
