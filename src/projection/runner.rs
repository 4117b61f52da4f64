//! Runs projections over a stream, as of now, a sequence number or a point in time, resuming
//! from snapshots when it can.
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
//!   [`REPLAY_CHUNK_EVENTS`], the first read giving the version that bounds the rest
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
use time::OffsetDateTime;

use crate::stream::{
    AppendOutcome, EventStore, NewEvent, ReadRequest, RecordedEvent, StoreError, StreamId,
};

use super::dynamic::TypedFold;
use super::{
    validate_projection_name, DynProjection, Fold, Projection, ProjectionError, Snapshot,
    SnapshotStore, StateCache,
};

/// Most events one read of a run asks for: a run folds a stream of any length with at most
/// this many of its events in memory. (Table storage answers a query with at most 1,000
/// entities, so reading in chunks of this size costs it no extra requests.)
pub const REPLAY_CHUNK_EVENTS: u64 = 1_000;

/// Which point of the stream's history a projection is run as of.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum AsOf {
    /// Every event of the stream.
    #[default]
    Latest,
    /// Events `1..=N`.
    Sequence(u64),
    /// The events whose timestamp is at or before this time.
    Time(OffsetDateTime),
}

impl AsOf {
    /// Whether every event folded into `snapshot` belongs to this point of history.
    fn admits(self, snapshot: &Snapshot) -> bool {
        match self {
            Self::Latest => true,
            Self::Sequence(n) => snapshot.sequence <= n,
            Self::Time(t) => snapshot.max_timestamp <= t,
        }
    }

    /// The events of this point of history that come after sequence `after`.
    fn read_after(self, after: u64) -> ReadRequest {
        match self {
            Self::Latest => ReadRequest::after(after),
            Self::Sequence(n) => ReadRequest::range(after.saturating_add(1), Some(n)),
            Self::Time(t) => ReadRequest::after(after).as_of(t),
        }
    }
}

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
            max_timestamp: before.max_timestamp.max(recorded),
            state,
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
            (lanes[0].progress(), stream_version)
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
        let progress: Vec<Progress> = lanes.iter().map(Lane::progress).collect();
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

    /// Resumes each lane from its cached state or snapshot where it can, reads the stream once
    /// (in reads of at most [`REPLAY_CHUNK_EVENTS`] events), folds each event into every lane
    /// that has not seen it, then caches the states and saves new snapshots. Returns the
    /// stream's version.
    async fn fold_lanes(
        &self,
        stream: &StreamId,
        lanes: &mut [Lane<'_>],
        as_of: AsOf,
    ) -> Result<u64, ProjectionError> {
        let cached = self.cache.is_some() && as_of == AsOf::Latest;
        let (version, rest) = if self.snapshots.is_some() || cached {
            self.read_past_snapshots(stream, lanes, as_of).await?
        } else {
            // The first chunk's read also gives the version that bounds the others.
            let request = as_of.read_after(0);
            let first = chunk_of(request);
            let slice = self.store.read(stream, first).await?;
            fold_events(stream, lanes, &slice.events)?;
            let end = request
                .to_sequence
                .map_or(slice.version, |to| to.min(slice.version));
            let ended = prefix_ended(&first, &slice.events, end);
            let rest = first
                .to_sequence
                .filter(|&done| done < end && !ended)
                .map(|done| ReadRequest {
                    from_sequence: done + 1,
                    to_sequence: Some(end),
                    ..request
                });
            (slice.version, rest)
        };
        if let Some(rest) = rest {
            self.fold_range(stream, lanes, rest, version).await?;
        }

        if as_of == AsOf::Latest {
            self.keep_states(stream, lanes).await;
        }
        Ok(version)
    }

    /// Folds the events of `request` (which ends at `to_sequence`, at most `version`) into
    /// every lane, reading at most [`REPLAY_CHUNK_EVENTS`] of them at a time.
    async fn fold_range(
        &self,
        stream: &StreamId,
        lanes: &mut [Lane<'_>],
        request: ReadRequest,
        version: u64,
    ) -> Result<(), ProjectionError> {
        let mut next = Some(request);
        while let Some(request) =
            next.filter(|r| r.to_sequence.is_some_and(|to| to >= r.from_sequence))
        {
            let chunk = chunk_of(request);
            let events = self.store.read_known(stream, chunk, version).await?;
            fold_events(stream, lanes, &events)?;
            if prefix_ended(&chunk, &events, version) {
                break;
            }
            next = match (chunk.to_sequence, request.to_sequence) {
                (Some(done), Some(to)) if done < to => Some(ReadRequest {
                    from_sequence: done + 1,
                    ..request
                }),
                _ => None,
            };
        }
        Ok(())
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
        lane.progress().sequence.saturating_sub(lane.persisted) > self.every
    }

    /// Loads the lanes' snapshots and the stream's version in one round trip (two point reads
    /// on Table storage), and returns that version and the events left to read: only those
    /// past the oldest usable snapshot, up to that version (`None` when every snapshot is at
    /// the stream's head). A lane with a cached state (runs as of the latest event) starts
    /// from it and loads no snapshot.
    async fn read_past_snapshots(
        &self,
        stream: &StreamId,
        lanes: &mut [Lane<'_>],
        as_of: AsOf,
    ) -> Result<(u64, Option<ReadRequest>), ProjectionError> {
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
            lane.resume(stream, loaded, as_of);
        }
        if lanes.iter().any(|lane| lane.start > version) {
            // Both were read at once: a snapshot saved after an append that landed after the
            // version was read is ahead of it. A stream's version never goes down, so one more
            // read settles it; a snapshot still ahead belongs to no history of this stream.
            version = self.store.version(stream).await?;
        }
        for lane in lanes.iter_mut().filter(|lane| lane.start > version) {
            tracing::warn!(
                stream = %stream,
                projection = lane.name,
                snapshot_sequence = lane.start,
                stream_version = version,
                "snapshot is past the end of the stream; replaying from the start"
            );
            lane.discard_snapshot();
        }

        let after = lanes.iter().map(|lane| lane.start).min().unwrap_or(0);
        let request = as_of.read_after(after).bounded_by(version);
        let rest = request
            .to_sequence
            .is_some_and(|to| to >= request.from_sequence)
            .then_some(request);
        Ok((version, rest))
    }
}

/// Whether a read as of a time ended before the end of its range (at most `version`): the
/// stream's prefix as of that time ends there, and no later read may add to it.
fn prefix_ended(chunk: &ReadRequest, events: &[RecordedEvent], version: u64) -> bool {
    let end = chunk.to_sequence.map_or(version, |to| to.min(version));
    let reached = events
        .last()
        .map_or(chunk.from_sequence.saturating_sub(1), |e| e.sequence);
    chunk.as_of.is_some() && reached < end
}

/// `request` cut to its first [`REPLAY_CHUNK_EVENTS`] sequence numbers.
fn chunk_of(request: ReadRequest) -> ReadRequest {
    let chunk_end = request
        .from_sequence
        .saturating_add(REPLAY_CHUNK_EVENTS - 1);
    ReadRequest {
        to_sequence: Some(
            request
                .to_sequence
                .map_or(chunk_end, |to| to.min(chunk_end)),
        ),
        ..request
    }
}

/// Folds `events` into every lane that has not seen them.
fn fold_events(
    stream: &StreamId,
    lanes: &mut [Lane<'_>],
    events: &[RecordedEvent],
) -> Result<(), ProjectionError> {
    for event in events {
        for lane in lanes.iter_mut() {
            lane.apply(event)
                .map_err(|source| ProjectionError::apply(stream, lane.name, source))?;
        }
    }
    Ok(())
}

/// The state `lane` ended with, as a snapshot (`None` if it holds no event or cannot be
/// serialized, which is logged).
fn final_snapshot(stream: &StreamId, lane: &Lane<'_>) -> Option<Snapshot> {
    lane.snapshot().unwrap_or_else(|e| {
        tracing::warn!(
            stream = %stream,
            projection = lane.name,
            error = %e,
            "state cannot be serialized; not kept"
        );
        None
    })
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

/// Where one projection's fold stands during a run.
struct Lane<'a> {
    name: &'a str,
    version: u32,
    fold: &'a mut dyn Fold,
    /// Events up to this sequence are already in the fold (from a snapshot).
    start: u64,
    /// The latest timestamp among the events in the fold, when known.
    max_timestamp: Option<OffsetDateTime>,
    /// Whether `start` comes from a snapshot (or a cached state).
    from_snapshot: bool,
    /// Sequence of the last snapshot saved of this projection over the stream, as far as this
    /// run knows (0 = none).
    persisted: u64,
    /// Sequence number of the last event folded in by this run.
    last: u64,
    /// Events folded in by this run.
    read: u64,
}

/// What a lane did, without its fold.
struct Progress {
    sequence: u64,
    events_read: u64,
    snapshot_sequence: Option<u64>,
}

impl Progress {
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

impl<'a> Lane<'a> {
    fn new(name: &'a str, version: u32, fold: &'a mut dyn Fold) -> Self {
        Self {
            name,
            version,
            fold,
            start: 0,
            max_timestamp: None,
            from_snapshot: false,
            persisted: 0,
            last: 0,
            read: 0,
        }
    }

    /// Starts from the loaded snapshot if it is usable for `as_of`; otherwise stays at the
    /// initial state.
    fn resume(
        &mut self,
        stream: &StreamId,
        loaded: Result<Option<(Snapshot, u64)>, StoreError>,
        as_of: AsOf,
    ) {
        let (snapshot, persisted) = match loaded {
            Ok(Some(loaded)) => loaded,
            Ok(None) => return,
            Err(e) => {
                tracing::warn!(
                    stream = %stream,
                    projection = self.name,
                    error = %e,
                    "snapshot could not be loaded; replaying from the start"
                );
                return;
            }
        };
        if snapshot.projection != self.name {
            tracing::warn!(
                stream = %stream,
                projection = self.name,
                found = %snapshot.projection,
                "snapshot store returned another projection's snapshot; replaying from the start"
            );
            return;
        }
        if snapshot.projection_version != self.version {
            tracing::debug!(
                stream = %stream,
                projection = self.name,
                snapshot_version = snapshot.projection_version,
                version = self.version,
                "snapshot is of another projection version; replaying from the start"
            );
            return;
        }
        if !as_of.admits(&snapshot) {
            return;
        }
        if let Err(e) = self.fold.restore(&snapshot.state) {
            tracing::warn!(
                stream = %stream,
                projection = self.name,
                snapshot_sequence = snapshot.sequence,
                error = %e,
                "snapshot state cannot be read; replaying from the start"
            );
            return;
        }
        self.start = snapshot.sequence;
        self.max_timestamp = Some(snapshot.max_timestamp);
        self.from_snapshot = true;
        self.persisted = persisted;
    }

    /// Goes back to the initial state, as if no snapshot had been found.
    fn discard_snapshot(&mut self) {
        self.fold.reset();
        self.start = 0;
        self.max_timestamp = None;
        self.from_snapshot = false;
        self.persisted = 0;
    }

    /// Folds `event` in unless the fold already holds it.
    fn apply(&mut self, event: &RecordedEvent) -> Result<(), super::ApplyError> {
        if event.sequence <= self.start.max(self.last) {
            return Ok(());
        }
        self.fold.apply(event)?;
        self.last = event.sequence;
        self.read += 1;
        self.max_timestamp = Some(
            self.max_timestamp
                .map_or(event.timestamp, |t| t.max(event.timestamp)),
        );
        Ok(())
    }

    fn progress(&self) -> Progress {
        Progress {
            sequence: if self.read > 0 { self.last } else { self.start },
            events_read: self.read,
            snapshot_sequence: self.from_snapshot.then_some(self.start),
        }
    }

    /// A snapshot of the fold as it stands, if it holds any event.
    fn snapshot(&self) -> Result<Option<Snapshot>, serde_json::Error> {
        let (sequence, Some(max_timestamp)) = (self.progress().sequence, self.max_timestamp) else {
            return Ok(None);
        };
        Ok(Some(Snapshot {
            projection: self.name.to_owned(),
            projection_version: self.version,
            sequence,
            max_timestamp,
            state: self.fold.to_raw()?,
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn assert_send<T: Send>(_: &T) {}

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
        fn apply(&self, n: &mut u64, _: &RecordedEvent) -> Result<(), super::super::ApplyError> {
            *n += 1;
            Ok(())
        }
    }

    /// Handlers of multi-threaded servers (warp) need futures that can move between threads.
    #[test]
    fn runs_are_send() {
        let runner = ProjectionRunner::new(std::sync::Arc::new(crate::storage::MemoryStore::new()));
        let stream = StreamId::new("Bank", "Account", "1").unwrap();
        assert_send(&runner.run(&stream, &Count, AsOf::Latest));
        assert_send(&runner.run_many(&stream, &[&Count], AsOf::Latest));
    }

    #[test]
    fn snapshots_are_admitted_only_when_they_hold_nothing_past_the_point() {
        let t = time::macros::datetime!(2024-01-01 00:00 UTC);
        let snapshot = Snapshot {
            projection: "count".into(),
            projection_version: 1,
            sequence: 10,
            max_timestamp: t,
            state: serde_json::value::to_raw_value(&10).unwrap(),
        };
        assert!(AsOf::Latest.admits(&snapshot));
        assert!(AsOf::Sequence(10).admits(&snapshot));
        assert!(!AsOf::Sequence(9).admits(&snapshot));
        assert!(AsOf::Time(t).admits(&snapshot));
        assert!(!AsOf::Time(t - time::Duration::nanoseconds(1)).admits(&snapshot));
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
        let all = runner.run(&stream, &Count, AsOf::Latest).await.unwrap();
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
            .run(&stream, &Count, AsOf::Sequence(upto))
            .await
            .unwrap();
        assert_eq!((part.state, part.sequence), (upto, upto));
        assert_eq!((store.reads(), store.events_read()), (2, upto));

        // Resumed from a cached state: only the events past it, in chunks too.
        store.reset();
        let cached =
            ProjectionRunner::new(store.clone()).with_cache(Arc::new(StateCache::new(1 << 20)));
        let first = cached.run(&stream, &Count, AsOf::Latest).await.unwrap();
        assert_eq!(first.state, events);
        assert_eq!(store.reads(), 3);
        let more = long_stream_append(store.as_ref(), &stream, events, 10).await;
        store.reset();
        let again = cached.run(&stream, &Count, AsOf::Latest).await.unwrap();
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

    #[test]
    fn reads_start_after_the_snapshot_and_keep_the_bound() {
        let t = time::macros::datetime!(2024-01-01 00:00 UTC);
        assert_eq!(AsOf::Latest.read_after(0), ReadRequest::all());
        assert_eq!(AsOf::Latest.read_after(7), ReadRequest::range(8, None));
        assert_eq!(
            AsOf::Sequence(9).read_after(7),
            ReadRequest::range(8, Some(9))
        );
        assert_eq!(
            AsOf::Time(t).read_after(7),
            ReadRequest::range(8, None).as_of(t)
        );
    }
}
