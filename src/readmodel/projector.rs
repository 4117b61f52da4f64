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
//! by the fold engine the projection runner uses too (`crate::projection::fold`: the same
//! resume checks, a row being the same stored type as a snapshot), from the oldest row's
//! sequence, in reads of at most [`CATCH_UP_CHUNK_EVENTS`] events, each
//! folded into every row's state before the next is read: memory does not grow with the
//! number of events a row catches up on. Nothing is saved between chunks: each row is saved
//! once at the end of the attempt, conditioned on the ETag it was loaded with, exactly as an
//! unchunked attempt would (a chunk is a read, never a commit point).
//!
//! A notification's events are read while the rows load, from the oldest row this process
//! knows (from the start when it knows none) and without the stream's version, when the
//! notified event falls in that first chunk: the notification proves its event is stored,
//! stored events never change, and the fold ends where the stored events end, so the rows are
//! saved at an end of the stream that really was, exactly as after a read with the version. A
//! row found behind that read gets the events before it first (they exist); a read that does
//! not reach the notified event (the stream is shorter, erased, or damaged) is dropped and the
//! stream read again with its version, which decides. Against Table storage that is the row
//! and the events in one round trip and no header read.
//!
//! A row this process loaded or saved last is kept with its ETag (`CheckpointCache`, up to a
//! byte budget), and the next notification of its stream folds onto it without loading it:
//! the save is conditioned on that ETag, so it only lands on the very row kept; a row changed
//! or deleted elsewhere refuses it, a lost race like any other, and the next attempt loads it.
//! Against Table storage a notification of a stream this process keeps is then the events'
//! read and the merge.
//!
//! A stream whose rows this process has never seen, met when most such rows turn out not to
//! exist yet (new streams: [`FirstRowOdds`](super::FirstRowOdds)), skips the load: its rows
//! are folded from the first event and saved with "must not exist", which is exactly what the
//! load's "no row" would have led to. A row that was there refuses the save, which is then a
//! lost race like any other: the next attempt loads it. Against Table storage a new stream's
//! notification is then the events' read and the insert.
//!
//! Notifications of one stream are handled one at a time in a process, and a notification whose
//! rows this process already saw at its event or later is acknowledged with no storage request
//! ([`CheckpointCache`], which says why that is exact): notifications of one stream that
//! arrive together cost one catch-up (one read of the events after the rows, one save each).
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

use futures::future::{join, join_all};

use super::{CheckpointCache, ReadModelError};
use crate::projection::{
    first_chunk_after, fold_stored, fold_stream, AsOf, DynProjection, Fold, Lane, OnRefusal,
    ProjectionError,
};
use crate::stream::{
    Checkpoint, ETag, FoldFailure, ReadModelStore, SaveCondition, SaveOutcome, StoredCheckpoint,
};
use crate::stream::{EventStore, RecordedEvent, StoreError, StreamId};

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
    /// Attempts made (more than 1 after losing to concurrent invocations, or after a row
    /// guessed absent was there; 0 when this process already knew the row was at the notified
    /// event or later, and read nothing).
    pub attempts: u32,
    /// Set when the projection refuses an event of the stream: the row is marked with it
    /// (now, or by an earlier call) and this read model of the stream is not advanced again.
    pub failed: Option<FoldFailure>,
}

impl ProjectOutcome {
    /// Nothing written: the row of `model` stays at `at` (after `attempts` attempts), marked
    /// `failed` when the projection refused an event of the stream.
    fn unchanged(model: &str, at: u64, attempts: u32, failed: Option<FoldFailure>) -> Self {
        Self {
            model: model.to_owned(),
            before: at,
            after: at,
            applied: 0,
            duplicate: true,
            attempts,
            failed,
        }
    }
}

/// Keeps the read models of one domain / entity type up to date.
#[derive(Clone)]
pub struct ReadModelProjector {
    pub(super) events: Arc<dyn EventStore>,
    pub(super) store: Arc<dyn ReadModelStore>,
    pub(super) models: Vec<Arc<dyn DynProjection>>,
    /// What this process knows of the rows, and the turns of the streams being caught up.
    cache: Arc<CheckpointCache>,
}

/// A save decided by an attempt.
struct Save {
    index: usize,
    before: u64,
    applied: u64,
    checkpoint: Checkpoint,
    condition: SaveCondition,
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
            cache: Arc::new(CheckpointCache::new()),
        }
    }

    /// Shares `cache` (one per process: every projector of the app uses the same) instead of
    /// a cache of its own.
    pub fn with_cache(mut self, cache: Arc<CheckpointCache>) -> Self {
        self.cache = cache;
        self
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
        // One catch-up of this stream at a time in this process: notifications that arrive
        // together wait here, and then find the rows past their event.
        let _turn = self.cache.turn(stream).await;
        let mut outcomes: Vec<Option<ProjectOutcome>> = vec![None; self.models.len()];
        let mut pending: Vec<usize> = Vec::with_capacity(self.models.len());
        for (index, model) in self.models.iter().enumerate() {
            let known = self.cache.known(model.name(), model.version(), stream);
            match (known, notified) {
                (Some(sequence), Some(n)) if sequence >= n => {
                    // This process saw the row at `sequence` or later: nothing to read.
                    outcomes[index] =
                        Some(ProjectOutcome::unchanged(model.name(), sequence, 0, None));
                }
                _ => pending.push(index),
            }
        }
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

    /// Where to start reading the events of a notification of event `n` while the rows of
    /// `pending` load: after the oldest row this process knows (after nothing when it does not
    /// know one), if event `n` then falls in the first chunk. Otherwise the rows are loaded
    /// first, and the read starts from them.
    fn prefetch_after(&self, stream: &StreamId, pending: &[usize], n: u64) -> Option<u64> {
        let after = pending
            .iter()
            .map(|&i| {
                let model = &self.models[i];
                self.cache
                    .known(model.name(), model.version(), stream)
                    .unwrap_or(0)
            })
            .min()?;
        (n.saturating_sub(after) <= CATCH_UP_CHUNK_EVENTS).then_some(after)
    }

    /// The row of model `index` of `stream` as this process last loaded or saved it, if it
    /// kept it.
    fn kept_row(&self, index: usize, stream: &StreamId) -> Option<StoredCheckpoint> {
        let model = &self.models[index];
        self.cache.row(model.name(), model.version(), stream)
    }

    /// Records a row just saved: whole with the ETag storage answered, else its sequence.
    fn record_saved(
        &self,
        model: &str,
        stream: &StreamId,
        checkpoint: &Checkpoint,
        etag: Option<ETag>,
    ) {
        match etag {
            Some(etag) => self.cache.record_row(
                model,
                stream,
                StoredCheckpoint {
                    checkpoint: checkpoint.as_row_of(model),
                    etag,
                },
            ),
            None => {
                self.cache.forget_row(model, stream);
                self.cache.record(
                    model,
                    checkpoint.projection_version,
                    stream,
                    checkpoint.sequence,
                );
            }
        }
    }

    /// Drops the rows of `stream` this process kept whole (tests: a process that knows the
    /// rows' sequences but must load them).
    #[cfg(test)]
    pub(super) fn forget_kept_rows(&self, stream: &StreamId) {
        for model in &self.models {
            self.cache.forget_row(model.name(), stream);
        }
    }

    /// Whether this process has no entry for the row of model `index` of `stream`.
    fn unknown(&self, index: usize, stream: &StreamId) -> bool {
        let model = &self.models[index];
        self.cache
            .known(model.name(), model.version(), stream)
            .is_none()
    }

    /// Whether a notification of event `n` of a stream whose rows this process has not seen
    /// saves them without loading them: when the process's evidence says such rows are
    /// usually absent (`FirstRowOdds`) and the first read of the events reaches event `n`
    /// (the rows would start from the first event).
    fn guess_absent(&self, notified: Option<u64>) -> bool {
        notified.is_some_and(|n| n <= CATCH_UP_CHUNK_EVENTS)
            && self.cache.first_rows().guess_absent()
    }

    /// Folds the stream into `lanes`, from the oldest row, to its end; returns the sequence the
    /// rows are then at. For a notification whose event the read that ran with the row loads
    /// (`prefetched`: the events after a position, read without the stream's version) reached,
    /// the events are folded from that read on; otherwise (no such read, or it did not reach
    /// the notified event: the stream is shorter, erased, or damaged) the stream is read with
    /// its version, and a notification ahead of the stream fails after the first read.
    async fn fold(
        &self,
        stream: &StreamId,
        notified: Option<u64>,
        lanes: &mut [Lane<'_>],
        prefetched: Option<(u64, Result<Vec<RecordedEvent>, StoreError>)>,
    ) -> Result<u64, ReadModelError> {
        if let (Some(n), Some((after, read))) = (notified, prefetched) {
            match read {
                Ok(events) if events.last().is_some_and(|e| e.sequence >= n) => {
                    let end = fold_stored(
                        self.events.as_ref(),
                        stream,
                        lanes,
                        after,
                        events,
                        OnRefusal::StopFold,
                    )
                    .await?;
                    return Ok(end);
                }
                // Not reached, or unreadable without the version: the exact read below decides.
                Ok(_) | Err(StoreError::Corrupt { .. }) => {}
                Err(error) => return Err(error.into()),
            }
        }
        fold_stream(
            self.events.as_ref(),
            stream,
            lanes,
            AsOf::Latest,
            None,
            OnRefusal::StopFold,
            |version| match notified {
                Some(n) if version < n => Err(ReadModelError::AheadOfStream {
                    stream: stream.to_string(),
                    sequence: n,
                    version,
                }),
                _ => Ok(()),
            },
        )
        .await
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
        // Rows this process has no entry for, met by the first attempt: what is found of them
        // is the evidence of `FirstRowOdds`.
        let first_seen = attempt == 1 && pending.iter().all(|&i| self.unknown(i, stream));
        let guess_absent = first_seen && self.guess_absent(notified);
        // Rows this process kept as it last loaded or saved them: the saves' ETags check
        // that they are still so.
        let kept: Option<Vec<StoredCheckpoint>> = if attempt == 1 {
            pending.iter().map(|&i| self.kept_row(i, stream)).collect()
        } else {
            None
        };
        let from_storage = !guess_absent && kept.is_none();
        let loads = async {
            if guess_absent {
                // Guessed: nothing written yet. The saves' "must not exist" checks it.
                pending.iter().map(|_| Ok(None)).collect()
            } else if let Some(kept) = kept {
                kept.into_iter().map(|row| Ok(Some(row))).collect()
            } else {
                join_all(
                    pending
                        .iter()
                        .map(|&i| self.store.load(self.models[i].name(), stream)),
                )
                .await
            }
        };
        // The events the rows most likely lack, read while they load (see `prefetch_after`).
        let prefetch = notified.and_then(|n| self.prefetch_after(stream, pending, n));
        let (loads, prefetched) = match prefetch {
            Some(after) => {
                let read = self.events.read_stored(stream, first_chunk_after(after));
                let (loads, read) = join(loads, read).await;
                (loads, Some((after, read)))
            }
            None => (loads.await, None),
        };
        // The rows to bring forward: (model index, row as loaded), in the order of their lanes.
        let mut rows: Vec<(usize, Option<StoredCheckpoint>)> = Vec::new();
        for (&index, loaded) in pending.iter().zip(loads) {
            let loaded: Option<StoredCheckpoint> = loaded?;
            if first_seen && !guess_absent {
                self.cache.first_rows().observe(loaded.is_none());
            }
            let model = &self.models[index];
            let before = loaded.as_ref().map_or(0, |row| row.checkpoint.sequence);
            if let Some(failure) = loaded
                .as_ref()
                .filter(|row| row.checkpoint.projection_version == model.version())
                .and_then(|row| row.checkpoint.failure.clone())
            {
                // Refused for good (events never change): nothing to read or write.
                outcomes[index] = Some(ProjectOutcome::unchanged(
                    model.name(),
                    before,
                    attempt,
                    Some(failure),
                ));
                continue;
            }
            rows.push((index, loaded));
        }
        let mut folds: Vec<Box<dyn Fold + '_>> = rows
            .iter()
            .map(|(index, _)| self.models[*index].start())
            .collect();
        let mut lanes: Vec<Lane<'_>> = Vec::new();
        let mut kept = Vec::new();
        for ((index, loaded), fold) in rows.into_iter().zip(folds.iter_mut()) {
            let model = &self.models[index];
            let mut lane = Lane::new(model.name(), model.version(), fold.as_mut());
            if let Some(row) = &loaded {
                if lane.resume(stream, &row.checkpoint, AsOf::Latest) && from_storage {
                    self.cache.record_row(model.name(), stream, row.clone());
                }
            }
            let start = lane.start();
            if start > 0 && notified.is_some_and(|n| start >= n) {
                outcomes[index] = Some(ProjectOutcome::unchanged(
                    model.name(),
                    start,
                    attempt,
                    None,
                ));
                continue;
            }
            lanes.push(lane);
            kept.push((index, loaded));
        }
        if lanes.is_empty() {
            return Ok(Vec::new());
        }

        let version = self.fold(stream, notified, &mut lanes, prefetched).await?;

        let mut saves = Vec::new();
        for (mut lane, (index, loaded)) in lanes.into_iter().zip(kept) {
            let model = &self.models[index];
            let before = loaded.as_ref().map_or(0, |r| r.checkpoint.sequence);
            let applied = lane.events_read();
            let condition = SaveCondition::after_load(loaded.as_ref());
            if let Some(error) = lane.take_refused() {
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
                    index,
                    before,
                    applied,
                    checkpoint: Checkpoint::failed(
                        model.name(),
                        initial,
                        model.version(),
                        error.sequence,
                        &error,
                    ),
                    condition,
                });
                continue;
            }
            if applied == 0 && (lane.start() > 0 || version == 0) {
                // Nothing new: the row is at the end of the stream (a catch-up), or there is
                // no stream at all.
                outcomes[index] = Some(ProjectOutcome::unchanged(
                    model.name(),
                    before,
                    attempt,
                    None,
                ));
                continue;
            }
            let stored = lane.to_stored().map_err(|source| ProjectionError::State {
                projection: model.name().to_owned(),
                source,
            })?;
            saves.push(Save {
                index,
                before,
                applied,
                checkpoint: Checkpoint {
                    sequence: version,
                    ..stored.as_row_of(model.name())
                },
                condition,
            });
        }
        drop(folds);

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
            let result = result?;
            if guess_absent {
                self.cache.first_rows().observe(result.is_saved());
            }
            match result {
                SaveOutcome::Saved { etag } => {
                    if save.checkpoint.failure.is_none() {
                        self.record_saved(model, stream, &save.checkpoint, etag);
                    }
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
                        guessed_absent = guess_absent,
                        "read model save lost a race (or the row guessed absent was there); \
                         retrying from the fresh row"
                    );
                    self.cache.forget_row(model, stream);
                    lost.push(save.index);
                }
            }
        }
        Ok(lost)
    }
}

#[cfg(test)]
mod chunk_tests {
    use super::*;
    use crate::storage::MemoryReadModelStore;
    use crate::storage::MemoryStore;
    use crate::stream::{ExpectedVersion, NewEvent};
    use crate::testing::{CountingStore, EventCount};

    const COUNT: EventCount = EventCount::new();

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
        let model: Arc<dyn DynProjection> = Arc::new(COUNT);
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

        // A notification ahead of the stream fails after two reads: the one beside the row
        // load, which does not reach the notified event, then the one with the version.
        events.reset();
        assert!(matches!(
            projector.project(&stream, version + 1).await,
            Err(ReadModelError::AheadOfStream { .. })
        ));
        assert_eq!(events.reads(), 2);
    }
}
