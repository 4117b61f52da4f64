//! Runs projections over a stream, as of now, a sequence number or a point in time, resuming
//! from snapshots when it can. The folding itself (resume checks, chunked reads, the stop at a
//! point of history) is the fold engine's (`super::fold`), shared with the read-model
//! projector; this module decides where states come from (snapshots, the cache) and where
//! they go.
//!
//! Guarantees:
//! - the result as of sequence `N` is the fold of events `1..=N` (all of them when `N` is past
//!   the stream's version); as of time `t` it is the fold of events `1..=M`, `M` the last event
//!   recorded at or before `t`: a prefix, the same as of sequence `M` (the store's reads as of
//!   a time end at the first event recorded after it, and report times that never go back,
//!   [`crate::backend::TimeLine`]; a read that ends early ends the run's reading too);
//! - a snapshot never changes a result. One is resumed from only when it was written by the
//!   same projection version, it holds only events the request includes (its sequence is at
//!   most `N`; its `max_timestamp` is at most `t`), it is consistent with the stream (not past
//!   its version) and its state deserializes. Anything else (a missing, stale, corrupt or
//!   unreachable snapshot) falls back to a replay from the start, with a log line;
//! - [`ProjectionRunner::run_many`] reads the stream once for all the projections it is given;
//! - memory does not grow with the stream: events are read and folded in chunks of at most
//!   [`super::REPLAY_CHUNK_EVENTS`], the first read giving the version that bounds the rest
//!   ([`EventStore::read_known`]);
//! - with a snapshot store, the snapshots and the stream's version are read in one round trip,
//!   then only the events past the oldest usable snapshot up to that version
//!   ([`EventStore::read_known`]): a snapshot at the stream's head costs no read of events;
//! - with a [`StateCache`], a run as of the latest event starts from the state the last such run
//!   of this process ended with, under the same checks as a snapshot, and reads no snapshot for
//!   it: a stream that has not moved since costs one request, the read of its version;
//!   [`ProjectionRunner::remember_append`] moves a cached state past an append this process
//!   made, so a command's own events are not read back by the next run.
//!
//! Snapshots are written only after a run as of [`AsOf::Latest`], when the state holds more
//! than the configured number of events past the last snapshot saved (as far as this process
//! knows); a failed save is logged and does not fail the run.

use std::sync::Arc;

use futures::future::{join, join_all};
use serde::Serialize;

use crate::stream::{AppendOutcome, EventStore, NewEvent, RecordedEvent, StoreError, StreamId};

use super::dynamic::TypedFold;
use super::fold::{fold_stream, Lane, OnRefusal};
use super::{
    validate_projection_name, AsOf, DynProjection, Fold, Projection, ProjectionError, Snapshot,
    SnapshotStore, StateCache,
};

/// A projection's state as of some point, with where it came from.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Projected<S> {
    pub state: S,
    /// Sequence number of the last event folded in (0 = none).
    pub sequence: u64,
    /// The stream's version when it was read (0 = the stream does not exist).
    pub stream_version: u64,
    /// Events folded in by this run, past the snapshot it started from (event types the
    /// projection ignores included). Without a snapshot, every event of the requested history.
    pub events_read: u64,
    /// Sequence number of the snapshot the run started from, if it used one.
    pub snapshot_sequence: Option<u64>,
}

impl<S> Projected<S> {
    /// The same result with its state transformed.
    pub fn map<T>(self, f: impl FnOnce(S) -> T) -> Projected<T> {
        Projected {
            state: f(self.state),
            sequence: self.sequence,
            stream_version: self.stream_version,
            events_read: self.events_read,
            snapshot_sequence: self.snapshot_sequence,
        }
    }
}

/// Runs projections over the streams of one event store, with optional snapshots.
#[derive(Clone)]
pub struct ProjectionRunner {
    store: Arc<dyn EventStore>,
    snapshots: Option<Arc<dyn SnapshotStore>>,
    cache: Option<Arc<StateCache>>,
    /// A snapshot is saved after a latest run whose state holds more than this many events
    /// past the last snapshot saved.
    every: u64,
}

impl ProjectionRunner {
    /// A runner without snapshots: every run replays the requested history.
    pub fn new(store: Arc<dyn EventStore>) -> Self {
        Self {
            store,
            snapshots: None,
            cache: None,
            every: 0,
        }
    }

    /// The event store this runner reads.
    pub fn store(&self) -> &Arc<dyn EventStore> {
        &self.store
    }

    /// Keeps the state each run as of the latest event ends with in `cache`, and starts the
    /// next such run from it (see [`StateCache`]).
    pub fn with_cache(mut self, cache: Arc<StateCache>) -> Self {
        self.cache = Some(cache);
        self
    }

    /// Uses `snapshots`, saving a new one after a run as of [`AsOf::Latest`] whose state holds
    /// more than `every` events past the last snapshot saved (or past the start).
    pub fn with_snapshots(mut self, snapshots: Arc<dyn SnapshotStore>, every: u64) -> Self {
        self.snapshots = Some(snapshots);
        self.every = every;
        self
    }

    /// Brings the cached state of `projection` over `stream` past an append this process just
    /// made (`events`, answered with `outcome`), so the next run starts at the stream's head
    /// instead of reading those events back. Only a state cached exactly at the sequence before
    /// the append, by the same projection version, moves; anything else (no cache, no entry, a
    /// duplicate, another writer in between, an event the projection refuses) leaves the cache
    /// as it is, and the next run reads what it needs. The events are folded as a read would
    /// return them: same ids, types, data and metadata, their sequence numbers from `outcome`,
    /// their time from `outcome.recorded`.
    pub fn remember_append(
        &self,
        stream: &StreamId,
        projection: &dyn DynProjection,
        events: &[NewEvent],
        outcome: &AppendOutcome,
    ) {
        let (Some(cache), Some(recorded)) = (&self.cache, outcome.recorded) else {
            return;
        };
        if outcome.duplicate || outcome.version + 1 != outcome.first_sequence + events.len() as u64
        {
            return;
        }
        let Some((before, persisted)) = cache.get(stream, projection.name()) else {
            return;
        };
        if before.sequence + 1 != outcome.first_sequence
            || before.projection_version != projection.version()
        {
            return;
        }
        let mut fold = projection.start();
        if fold.restore(&before.state).is_err() {
            return;
        }
        for (event, sequence) in events.iter().zip(outcome.first_sequence..) {
            let recorded_event = RecordedEvent {
                sequence,
                event_id: event.event_id,
                event_type: event.event_type.clone(),
                data: event.data.clone(),
                timestamp: recorded,
                metadata: event.metadata.clone(),
            };
            if fold.apply(&recorded_event).is_err() {
                return;
            }
        }
        let Ok(state) = fold.to_raw() else {
            return;
        };
        let after = Snapshot {
            projection: before.projection,
            projection_version: before.projection_version,
            sequence: outcome.version,
            max_timestamp: Some(before.max_timestamp.map_or(recorded, |t| t.max(recorded))),
            state,
            failure: None,
        };
        cache.put(stream, after, persisted);
    }

    /// Runs one projection over `stream` as of `as_of`.
    pub async fn run<P: Projection>(
        &self,
        stream: &StreamId,
        projection: &P,
        as_of: AsOf,
    ) -> Result<Projected<P::State>, ProjectionError> {
        let name = Projection::name(projection);
        check_name(name)?;
        let mut fold = TypedFold::new(projection);
        let (progress, stream_version) = {
            let mut lanes = [Lane::new(name, Projection::version(projection), &mut fold)];
            let stream_version = self.fold_lanes(stream, &mut lanes, as_of).await?;
            (Progress::of(&lanes[0]), stream_version)
        };
        Ok(progress.with_state(fold.state, stream_version))
    }

    /// Runs several projections over `stream` as of `as_of` with one read of the stream (from
    /// the oldest snapshot any of them can resume from). Results are in the order given.
    pub async fn run_many(
        &self,
        stream: &StreamId,
        projections: &[&dyn DynProjection],
        as_of: AsOf,
    ) -> Result<Vec<Projected<serde_json::Value>>, ProjectionError> {
        for projection in projections {
            check_name(projection.name())?;
        }
        let mut folds: Vec<Box<dyn Fold + '_>> = projections.iter().map(|p| p.start()).collect();
        let mut lanes: Vec<Lane<'_>> = projections
            .iter()
            .zip(folds.iter_mut())
            .map(|(p, fold)| Lane::new(p.name(), p.version(), fold.as_mut()))
            .collect();
        let stream_version = self.fold_lanes(stream, &mut lanes, as_of).await?;
        let progress: Vec<Progress> = lanes.iter().map(Progress::of).collect();
        drop(lanes);
        projections
            .iter()
            .zip(folds)
            .zip(progress)
            .map(|((projection, fold), progress)| {
                let state = fold.to_value().map_err(|source| ProjectionError::State {
                    projection: projection.name().to_owned(),
                    source,
                })?;
                Ok(progress.with_state(state, stream_version))
            })
            .collect()
    }

    /// Resumes each lane from its cached state or snapshot where it can, folds the stream into
    /// every lane with the fold engine (one read of the stream, in chunks), then caches the
    /// states and saves new snapshots. Returns the stream's version.
    async fn fold_lanes(
        &self,
        stream: &StreamId,
        lanes: &mut [Lane<'_>],
        as_of: AsOf,
    ) -> Result<u64, ProjectionError> {
        let cached = self.cache.is_some() && as_of == AsOf::Latest;
        // With stored states to load, the version is read alongside them; without, the first
        // read of events gives it.
        let known = if self.snapshots.is_some() || cached {
            Some(self.resume_lanes(stream, lanes, as_of).await?)
        } else {
            None
        };
        let version = fold_stream(
            self.store.as_ref(),
            stream,
            lanes,
            as_of,
            known,
            OnRefusal::StopReading,
            |_| Ok::<(), StoreError>(()),
        )
        .await?;
        // The first event a projection refused fails the run (the engine stopped reading).
        if let Some(lane) = lanes
            .iter_mut()
            .filter(|lane| lane.refused().is_some())
            .min_by_key(|lane| lane.refused().map(|e| e.sequence))
        {
            if let Some(error) = lane.take_refused() {
                return Err(ProjectionError::apply(stream, lane.name, error));
            }
        }

        if as_of == AsOf::Latest {
            self.keep_states(stream, lanes).await;
        }
        Ok(version)
    }

    /// After a run as of the latest event: saves a snapshot of each lane that folded more than
    /// `every` events past its last saved snapshot, and caches every lane's state.
    async fn keep_states(&self, stream: &StreamId, lanes: &mut [Lane<'_>]) {
        let finals: Vec<Option<Snapshot>> = lanes
            .iter()
            .map(|lane| {
                let wanted = self.cache.is_some() || self.snapshot_due(lane);
                wanted.then(|| final_snapshot(stream, lane)).flatten()
            })
            .collect();
        if let Some(snapshots) = &self.snapshots {
            let saves = lanes
                .iter_mut()
                .zip(&finals)
                .filter(|(lane, _)| self.snapshot_due(lane))
                .filter_map(|(lane, snapshot)| snapshot.as_ref().map(|s| (lane, s)))
                .map(|(lane, snapshot)| async move {
                    if save_snapshot(snapshots.as_ref(), stream, snapshot).await {
                        lane.persisted = snapshot.sequence;
                    }
                });
            join_all(saves).await;
        }
        if let Some(cache) = &self.cache {
            for (lane, snapshot) in lanes.iter().zip(finals) {
                if let Some(snapshot) = snapshot {
                    cache.put(stream, snapshot, lane.persisted);
                }
            }
        }
    }

    /// Whether `lane` holds more than `every` events past its last saved snapshot (folded by
    /// this run, or by earlier ones of this process through the cache).
    fn snapshot_due(&self, lane: &Lane<'_>) -> bool {
        lane.sequence().saturating_sub(lane.persisted) > self.every
    }

    /// Loads the lanes' snapshots and the stream's version in one round trip (two point reads
    /// on Table storage), resumes each lane from its snapshot where the engine admits it, and
    /// returns that version. A lane with a cached state (runs as of the latest event) starts
    /// from it and loads no snapshot.
    async fn resume_lanes(
        &self,
        stream: &StreamId,
        lanes: &mut [Lane<'_>],
        as_of: AsOf,
    ) -> Result<u64, ProjectionError> {
        let cached: Vec<Option<(Snapshot, u64)>> = lanes
            .iter()
            .map(|lane| match (&self.cache, as_of) {
                (Some(cache), AsOf::Latest) => cache.get(stream, lane.name),
                _ => None,
            })
            .collect();
        let loads = lanes.iter().zip(&cached).map(|(lane, cached)| async move {
            match (cached, &self.snapshots) {
                (Some(cached), _) => Ok(Some(cached.clone())),
                (None, Some(snapshots)) => snapshots.load(stream, lane.name).await.map(|loaded| {
                    loaded.map(|snapshot| {
                        let persisted = snapshot.sequence;
                        (snapshot, persisted)
                    })
                }),
                (None, None) => Ok(None),
            }
        });
        let (loaded, version) = join(join_all(loads), self.store.version(stream)).await;
        let mut version = version?;
        for (lane, loaded) in lanes.iter_mut().zip(loaded) {
            match loaded {
                Ok(Some((snapshot, persisted))) => {
                    if lane.resume(stream, &snapshot, as_of) {
                        lane.persisted = persisted;
                    }
                }
                Ok(None) => {}
                Err(e) => tracing::warn!(
                    stream = %stream,
                    projection = lane.name,
                    error = %e,
                    "snapshot could not be loaded; replaying from the start"
                ),
            }
        }
        if lanes.iter().any(|lane| lane.start() > version) {
            // Both were read at once: a snapshot saved after an append that landed after the
            // version was read is ahead of it. A stream's version never goes down, so one more
            // read settles it; a snapshot still ahead belongs to no history of this stream
            // (the engine starts that lane over).
            version = self.store.version(stream).await?;
        }
        Ok(version)
    }
}

/// The state `lane` ended with, as a snapshot (`None` if it holds no event or cannot be
/// serialized, which is logged).
fn final_snapshot(stream: &StreamId, lane: &Lane<'_>) -> Option<Snapshot> {
    match lane.to_stored() {
        Ok(snapshot) => snapshot.max_timestamp.is_some().then_some(snapshot),
        Err(e) => {
            tracing::warn!(
                stream = %stream,
                projection = lane.name,
                error = %e,
                "state cannot be serialized; not kept"
            );
            None
        }
    }
}

/// Saves `snapshot`; a failure is logged and does not fail the run. Whether it was saved.
async fn save_snapshot(
    snapshots: &dyn SnapshotStore,
    stream: &StreamId,
    snapshot: &Snapshot,
) -> bool {
    match snapshots.save(stream, snapshot).await {
        Ok(()) => {
            tracing::debug!(
                stream = %stream,
                projection = %snapshot.projection,
                sequence = snapshot.sequence,
                "snapshot saved"
            );
            true
        }
        Err(e) => {
            tracing::warn!(
                stream = %stream,
                projection = %snapshot.projection,
                sequence = snapshot.sequence,
                error = %e,
                "snapshot could not be saved"
            );
            false
        }
    }
}

fn check_name(name: &str) -> Result<(), ProjectionError> {
    validate_projection_name(name).map_err(|reason| ProjectionError::InvalidName {
        projection: name.to_owned(),
        reason,
    })
}

/// What a lane did, without its fold.
struct Progress {
    sequence: u64,
    events_read: u64,
    snapshot_sequence: Option<u64>,
}

impl Progress {
    fn of(lane: &Lane<'_>) -> Self {
        Self {
            sequence: lane.sequence(),
            events_read: lane.events_read(),
            snapshot_sequence: lane.resumed().then_some(lane.start()),
        }
    }

    fn with_state<S>(self, state: S, stream_version: u64) -> Projected<S> {
        Projected {
            state,
            sequence: self.sequence,
            stream_version,
            events_read: self.events_read,
            snapshot_sequence: self.snapshot_sequence,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::REPLAY_CHUNK_EVENTS;
    use super::*;
    use crate::testing::EventCount;

    fn assert_send<T: Send>(_: &T) {}

    const COUNT: EventCount = EventCount::new();

    /// Handlers of multi-threaded servers (warp) need futures that can move between threads.
    #[test]
    fn runs_are_send() {
        let runner = ProjectionRunner::new(std::sync::Arc::new(crate::storage::MemoryStore::new()));
        let stream = StreamId::new("Bank", "Account", "1").unwrap();
        assert_send(&runner.run(&stream, &COUNT, AsOf::Latest));
        assert_send(&runner.run_many(&stream, &[&COUNT], AsOf::Latest));
    }

    /// Appends `events` events to a new stream of `store`.
    async fn long_stream(store: &dyn EventStore, events: u64) -> StreamId {
        let stream = StreamId::new("Bank", "Account", "long").unwrap();
        let mut written = 0;
        while written < events {
            let batch = (events - written).min(400);
            let new = (0..batch)
                .map(|_| NewEvent::new("Happened", &serde_json::json!({})).unwrap())
                .collect();
            store
                .append(&stream, crate::stream::ExpectedVersion::Exact(written), new)
                .await
                .unwrap();
            written += batch;
        }
        stream
    }

    #[tokio::test]
    async fn a_replay_reads_the_stream_in_chunks() {
        let store = Arc::new(crate::testing::CountingStore::new(
            crate::storage::MemoryStore::new(),
        ));
        let events = REPLAY_CHUNK_EVENTS * 5 / 2;
        let stream = long_stream(store.as_ref(), events).await;
        let runner = ProjectionRunner::new(store.clone());
        let all = runner.run(&stream, &COUNT, AsOf::Latest).await.unwrap();
        assert_eq!(
            (all.state, all.sequence, all.stream_version),
            (events, events, events)
        );
        assert_eq!(
            store.reads(),
            3,
            "three chunks, none over {REPLAY_CHUNK_EVENTS}"
        );
        assert_eq!(store.events_read(), events);

        store.reset();
        let upto = REPLAY_CHUNK_EVENTS + 1;
        let part = runner
            .run(&stream, &COUNT, AsOf::Sequence(upto))
            .await
            .unwrap();
        assert_eq!((part.state, part.sequence), (upto, upto));
        assert_eq!((store.reads(), store.events_read()), (2, upto));

        // Resumed from a cached state: only the events past it, in chunks too.
        store.reset();
        let cached =
            ProjectionRunner::new(store.clone()).with_cache(Arc::new(StateCache::new(1 << 20)));
        let first = cached.run(&stream, &COUNT, AsOf::Latest).await.unwrap();
        assert_eq!(first.state, events);
        assert_eq!(store.reads(), 3);
        let more = long_stream_append(store.as_ref(), &stream, events, 10).await;
        store.reset();
        let again = cached.run(&stream, &COUNT, AsOf::Latest).await.unwrap();
        assert_eq!(again.state, more);
        assert_eq!((store.reads(), store.events_read()), (1, 10));
    }

    async fn long_stream_append(store: &dyn EventStore, stream: &StreamId, at: u64, n: u64) -> u64 {
        let new = (0..n)
            .map(|_| NewEvent::new("Happened", &serde_json::json!({})).unwrap())
            .collect();
        store
            .append(stream, crate::stream::ExpectedVersion::Exact(at), new)
            .await
            .unwrap()
            .version
    }
}
