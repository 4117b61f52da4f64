//! The one fold engine: resume folds from their stored states ([`StoredState`]: a snapshot, a
//! cached state or a read-model row), read the events that follow in chunks, fold each event
//! into every fold that has not seen it, and stop at the requested point of history. The
//! projection runner (on-demand projections) and the read-model projector both run on it.
//!
//! Guarantees:
//! - a stored state is resumed from only when it is the same projection's, of the same
//!   projection version, not failed, admitted by the point of history asked for (its sequence
//!   at most `N` for [`AsOf::Sequence`], its `max_timestamp` known and at most `t` for
//!   [`AsOf::Time`]), not past the stream's version, and its state deserializes; anything else
//!   starts from the initial state (logged). A stored state therefore never changes a result,
//!   only what is read: stored states are caches of a fold of the stream's events, and one
//!   written by an earlier version that no longer fits is ignored, never trusted;
//! - the stream is read once for all folds, from the oldest one's position, in reads of at most
//!   [`REPLAY_CHUNK_EVENTS`] events (memory does not grow with the stream); the first read
//!   gives the version that bounds the rest ([`EventStore::read_known`]) unless the caller
//!   already read it; a caller that knows the stream has some event (a notification of it)
//!   may read without the version ([`fold_stored`]: events that are stored are final, and
//!   the fold ends where the stored events end);
//! - as of a time, the fold is a prefix of the stream: a read as of a time ends at the first
//!   event recorded after it, and a read that ends early ends the reading
//!   ([`crate::stream::TimeLine`]);
//! - an event a projection refuses stops that fold (nothing after it is folded) and is kept
//!   with the fold; the caller decides what a refusal means (a failed run, or a read-model row
//!   marked failed).

use time::OffsetDateTime;

use super::{ApplyError, Fold};
use crate::stream::{EventStore, ReadRequest, RecordedEvent, StoreError, StoredState, StreamId};

/// Most events one read of a fold asks for: a stream of any length is folded with at most this
/// many of its events in memory. (Table storage answers a query with at most 1,000 entities, so
/// reading in chunks of this size costs it no extra requests.)
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
    /// Whether every event folded into `stored` belongs to this point of history.
    pub(crate) fn admits(self, stored: &StoredState) -> bool {
        match self {
            Self::Latest => true,
            Self::Sequence(n) => stored.sequence <= n,
            Self::Time(t) => stored.max_timestamp.is_some_and(|max| max <= t),
        }
    }

    /// The events of this point of history that come after sequence `after`.
    pub(crate) fn read_after(self, after: u64) -> ReadRequest {
        match self {
            Self::Latest => ReadRequest::after(after),
            Self::Sequence(n) => ReadRequest::range(after.saturating_add(1), Some(n)),
            Self::Time(t) => ReadRequest::after(after).as_of(t),
        }
    }
}

/// What a fold does when its projection refuses an event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum OnRefusal {
    /// Stop reading: the whole run fails (on-demand projections).
    StopReading,
    /// Stop only that fold; the others go on (read models, each with its own row).
    StopFold,
}

/// Where one projection's fold stands.
pub(crate) struct Lane<'a> {
    pub(crate) name: &'a str,
    pub(crate) version: u32,
    pub(crate) fold: &'a mut dyn Fold,
    /// Events up to this sequence were in the stored state the fold resumed from.
    start: u64,
    /// The latest timestamp among the events in the fold, when known.
    max_timestamp: Option<OffsetDateTime>,
    /// Whether `start` comes from a stored state.
    resumed: bool,
    /// Sequence number of the last event folded in by this run.
    last: u64,
    /// Events folded in by this run.
    read: u64,
    /// The event the projection refused (nothing more is folded into this lane).
    refused: Option<ApplyError>,
    /// Sequence of the last state of this fold saved to storage, as far as the caller knows
    /// (0 = none).
    pub(crate) persisted: u64,
}

impl<'a> Lane<'a> {
    pub(crate) fn new(name: &'a str, version: u32, fold: &'a mut dyn Fold) -> Self {
        Self {
            name,
            version,
            fold,
            start: 0,
            max_timestamp: None,
            resumed: false,
            last: 0,
            read: 0,
            refused: None,
            persisted: 0,
        }
    }

    /// Starts from `stored` if it is usable for `as_of` (see the module's guarantees); otherwise
    /// stays at the initial state, with a log line. Whether it resumed.
    pub(crate) fn resume(&mut self, stream: &StreamId, stored: &StoredState, as_of: AsOf) -> bool {
        if stored.projection != self.name {
            tracing::warn!(
                stream = %stream,
                projection = self.name,
                found = %stored.projection,
                "stored state is another projection's; folding from the start"
            );
            return false;
        }
        if stored.projection_version != self.version {
            tracing::debug!(
                stream = %stream,
                projection = self.name,
                stored_version = stored.projection_version,
                version = self.version,
                "stored state is of another projection version; folding from the start"
            );
            return false;
        }
        if stored.failure.is_some() || !as_of.admits(stored) {
            return false;
        }
        if let Err(e) = self.fold.restore(&stored.state) {
            tracing::warn!(
                stream = %stream,
                projection = self.name,
                stored_sequence = stored.sequence,
                error = %e,
                "stored state cannot be read; folding from the start"
            );
            self.fold.reset();
            return false;
        }
        self.start = stored.sequence;
        self.max_timestamp = stored.max_timestamp;
        self.resumed = true;
        true
    }

    /// Goes back to the initial state, as if no stored state had been found.
    pub(crate) fn discard_stored(&mut self) {
        self.fold.reset();
        self.start = 0;
        self.max_timestamp = None;
        self.resumed = false;
        self.persisted = 0;
    }

    /// Folds `event` in unless the fold already holds it or refused an earlier event.
    fn apply(&mut self, event: &RecordedEvent) {
        if self.refused.is_some() || event.sequence <= self.start.max(self.last) {
            return;
        }
        if let Err(error) = self.fold.apply(event) {
            self.refused = Some(error);
            return;
        }
        self.last = event.sequence;
        self.read += 1;
        self.max_timestamp = Some(
            self.max_timestamp
                .map_or(event.timestamp, |t| t.max(event.timestamp)),
        );
    }

    /// Sequence of the stored state the fold resumed from (0 = none).
    pub(crate) fn start(&self) -> u64 {
        self.start
    }

    /// Whether the fold resumed from a stored state.
    pub(crate) fn resumed(&self) -> bool {
        self.resumed
    }

    /// Sequence number of the last event in the fold (0 = none).
    pub(crate) fn sequence(&self) -> u64 {
        if self.read > 0 {
            self.last
        } else {
            self.start
        }
    }

    /// Events folded in by this run.
    pub(crate) fn events_read(&self) -> u64 {
        self.read
    }

    /// The event the projection refused, if it did.
    pub(crate) fn refused(&self) -> Option<&ApplyError> {
        self.refused.as_ref()
    }

    /// Takes the refusal out of the lane.
    pub(crate) fn take_refused(&mut self) -> Option<ApplyError> {
        self.refused.take()
    }

    /// The fold as it stands, in its stored form.
    pub(crate) fn to_stored(&self) -> Result<StoredState, serde_json::Error> {
        Ok(StoredState {
            projection: self.name.to_owned(),
            projection_version: self.version,
            sequence: self.sequence(),
            max_timestamp: self.max_timestamp,
            state: self.fold.to_raw()?,
            failure: None,
        })
    }

    /// Whether nothing more may be folded into this lane.
    fn stopped(&self) -> bool {
        self.refused.is_some()
    }
}

/// Folds the events of `stream` as of `as_of` into `lanes`, each from where it stands (its
/// stored state, or the start). With `version` (already read by the caller) only events up to
/// it are read; without, the first read gives it, and `check` sees it before anything is
/// folded (a caller may refuse to go on). Lanes whose stored state is past the version start
/// over from the initial state. Returns the stream's version.
pub(crate) async fn fold_stream<E: From<StoreError>>(
    store: &dyn EventStore,
    stream: &StreamId,
    lanes: &mut [Lane<'_>],
    as_of: AsOf,
    version: Option<u64>,
    on_refusal: OnRefusal,
    check: impl FnOnce(u64) -> Result<(), E>,
) -> Result<u64, E> {
    let (version, rest) = match version {
        Some(version) => {
            check(version)?;
            discard_past(stream, lanes, version);
            let after = oldest(lanes);
            (version, Some(as_of.read_after(after).bounded_by(version)))
        }
        None => {
            let after = oldest(lanes);
            let request = as_of.read_after(after);
            let first = chunk_of(request);
            let slice = store.read(stream, first).await?;
            let version = slice.version;
            check(version)?;
            if discard_past(stream, lanes, version) && after > 0 {
                // The first read started past what the reset lanes need: read from the start.
                (version, Some(as_of.read_after(0).bounded_by(version)))
            } else {
                fold_events(lanes, &slice.events);
                let end = request.to_sequence.map_or(version, |to| to.min(version));
                let ended = prefix_ended(&first, &slice.events, end);
                let rest = first
                    .to_sequence
                    .filter(|&done| done < end && !ended && !all_stopped(lanes, on_refusal))
                    .map(|done| ReadRequest {
                        from_sequence: done + 1,
                        to_sequence: Some(end),
                        ..request
                    });
                (version, rest)
            }
        }
    };
    if let Some(rest) = rest {
        fold_range(store, stream, lanes, rest, version, on_refusal).await?;
    }
    Ok(version)
}

/// Folds into `lanes` the events `after+1..` that the caller read without the stream's version
/// ([`EventStore::read_stored`], `first`: one chunk of [`chunk_of`] size, not empty) and every
/// event stored after them, read the same way in chunks until one comes back short. Lanes that
/// stand before `after` get their missing events first (they exist: later ones do). Returns
/// the sequence of the last event seen, the end of the stream as this read found it.
pub(crate) async fn fold_stored(
    store: &dyn EventStore,
    stream: &StreamId,
    lanes: &mut [Lane<'_>],
    after: u64,
    first: Vec<RecordedEvent>,
    on_refusal: OnRefusal,
) -> Result<u64, StoreError> {
    let mut last = first.last().map_or(after, |e| e.sequence);
    discard_past(stream, lanes, last);
    let oldest = oldest(lanes);
    if oldest < after {
        let gap = ReadRequest::range(oldest.saturating_add(1), Some(after));
        fold_range(store, stream, lanes, gap, last, on_refusal).await?;
    }
    fold_events(lanes, &first);
    let mut full = first.len() as u64 >= REPLAY_CHUNK_EVENTS;
    while full && !all_stopped(lanes, on_refusal) {
        let events = store
            .read_stored(stream, chunk_of(ReadRequest::after(last)))
            .await?;
        fold_events(lanes, &events);
        full = events.len() as u64 >= REPLAY_CHUNK_EVENTS;
        last = events.last().map_or(last, |e| e.sequence);
    }
    Ok(last)
}

/// The first chunk of the events after `after`: what one read of a fold asks for.
pub(crate) fn first_chunk_after(after: u64) -> ReadRequest {
    chunk_of(ReadRequest::after(after))
}

/// The oldest position among `lanes` (0 when there are none).
fn oldest(lanes: &[Lane<'_>]) -> u64 {
    lanes.iter().map(|lane| lane.start).min().unwrap_or(0)
}

/// Sends the lanes whose stored state is past `version` back to the initial state (such a
/// state belongs to no history of this stream). Whether any was.
fn discard_past(stream: &StreamId, lanes: &mut [Lane<'_>], version: u64) -> bool {
    let mut any = false;
    for lane in lanes.iter_mut().filter(|lane| lane.start > version) {
        tracing::warn!(
            stream = %stream,
            projection = lane.name,
            stored_sequence = lane.start,
            stream_version = version,
            "stored state is past the end of the stream; folding from the start"
        );
        lane.discard_stored();
        any = true;
    }
    any
}

/// Whether reading may stop because of refusals.
fn all_stopped(lanes: &[Lane<'_>], on_refusal: OnRefusal) -> bool {
    match on_refusal {
        OnRefusal::StopReading => lanes.iter().any(Lane::stopped),
        OnRefusal::StopFold => !lanes.is_empty() && lanes.iter().all(Lane::stopped),
    }
}

/// Folds the events of `request` (which ends at `to_sequence`, at most `version`) into every
/// lane, reading at most [`REPLAY_CHUNK_EVENTS`] of them at a time.
async fn fold_range(
    store: &dyn EventStore,
    stream: &StreamId,
    lanes: &mut [Lane<'_>],
    request: ReadRequest,
    version: u64,
    on_refusal: OnRefusal,
) -> Result<(), StoreError> {
    let mut next = Some(request);
    while let Some(request) = next.filter(|r| r.to_sequence.is_some_and(|to| to >= r.from_sequence))
    {
        let chunk = chunk_of(request);
        let events = store.read_known(stream, chunk, version).await?;
        fold_events(lanes, &events);
        if prefix_ended(&chunk, &events, version) || all_stopped(lanes, on_refusal) {
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

/// Whether a read as of a time ended before the end of its range (at most `version`): the
/// stream's prefix as of that time ends there, and no later read may add to it.
fn prefix_ended(chunk: &ReadRequest, events: &[RecordedEvent], version: u64) -> bool {
    let end = chunk.to_sequence.map_or(version, |to| to.min(version));
    let reached = events
        .last()
        .map_or(chunk.from_sequence.saturating_sub(1), |e| e.sequence);
    chunk.as_of.is_some() && reached < end
}

/// `request` cut to its first [`REPLAY_CHUNK_EVENTS`] sequence numbers, saying whether the
/// fold reads on after it ([`ReadRequest::more_follows`]).
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
        more_follows: request.to_sequence.is_none_or(|to| to > chunk_end),
        ..request
    }
}

/// Folds `events` into every lane that has not seen them.
fn fold_events(lanes: &mut [Lane<'_>], events: &[RecordedEvent]) {
    for event in events {
        for lane in lanes.iter_mut() {
            lane.apply(event);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stored_states_are_admitted_only_when_they_hold_nothing_past_the_point() {
        let t = time::macros::datetime!(2024-01-01 00:00 UTC);
        let mut stored = StoredState {
            projection: "count".into(),
            projection_version: 1,
            sequence: 10,
            max_timestamp: Some(t),
            state: serde_json::value::to_raw_value(&10).unwrap(),
            failure: None,
        };
        assert!(AsOf::Latest.admits(&stored));
        assert!(AsOf::Sequence(10).admits(&stored));
        assert!(!AsOf::Sequence(9).admits(&stored));
        assert!(AsOf::Time(t).admits(&stored));
        assert!(!AsOf::Time(t - time::Duration::nanoseconds(1)).admits(&stored));
        // A state that does not know its time (a read-model row) serves no point in time.
        stored.max_timestamp = None;
        assert!(AsOf::Latest.admits(&stored));
        assert!(!AsOf::Time(t).admits(&stored));
    }

    #[test]
    fn reads_start_after_the_stored_state_and_keep_the_bound() {
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
