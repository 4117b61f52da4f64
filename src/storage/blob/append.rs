//! Appends: one append block per attempt, guarded by the append position, decided against a
//! cached (or freshly learned) view of the stream's end.
//!
//! Guarantees:
//! - an append is one block, so it is stored entirely or not at all, and its records are
//!   contiguous;
//! - the expectation is enforced by storage, not only checked here: the block is written with
//!   `x-ms-blob-condition-appendpos` = the length this process believes the segment has, so a
//!   writer with a stale view gets 412 and never writes a second copy; a new segment is created
//!   with `If-None-Match: *`, so of two writers creating the same segment one learns that it
//!   exists;
//! - an append whose events carry ids stored before is recognised however long ago they were
//!   stored (module `ids`): it is answered with the earlier append's outcome, or
//!   `EventIdReused`, before anything is written. Ids this process can vouch for as new (it
//!   knows every id of the stream) cost no request;
//! - with a cached view that meets an `Exact`/`NoStream` expectation and ids it vouches for, an
//!   append costs exactly one request (plus, now and then, a metadata write every
//!   [`HINT_INTERVAL_BYTES`] and an index write every [`super::ids::INDEX_INTERVAL_EVENTS`]
//!   events); with a cold cache it costs a listing, a read of the tail after the segment's
//!   hint, and an index query;
//! - every append records a time no earlier than the recorded time of the event before it
//!   (known from the view, which the append position proves current);
//! - after a 412 the view is refreshed from the cached offset and the decision is made again:
//!   an `Exact`/`NoStream` append then fails with `WrongExpectedVersion` (or is recognised as a
//!   retry), `Any`/`Exists` are retried with jittered backoff until they land (bounded by
//!   [`crate::storage::contention::CONTENTION_DEADLINE`]);
//! - a segment that holds the most blocks allowed (the store's limit, or the service's
//!   `BlockCountExceedsLimit`) is never written again: the next append creates the next
//!   segment, whose first record is the next sequence number;
//! - when an earlier attempt of this very call may have been applied (a lost response) and its
//!   events are found where it wrote them, the outcome is reported as written now
//!   (`duplicate = false`).

use std::collections::HashMap;

use uuid::Uuid;

use super::client::{AppendResult, CreateResult, SegmentHint};
use super::ids::{
    Fingerprints, IdIndex, IdKnowledge, Watermark, FULL_ID_SET_MAX_EVENTS, INDEX_INTERVAL_EVENTS,
};
use super::record::{encode_append, AppendSpan};
use super::tail::{Current, Tail};
use super::view::StreamBlobs;
use crate::storage::connection::DeliveryTracker;
use crate::storage::contention::Contention;
use crate::stream::{
    append_time, earlier_append, AppendOutcome, Clock, ExpectedVersion, NewEvent, StoreError,
    StoredEventId, StreamId,
};

/// A writer rewrites a segment's metadata hint once the segment has grown this much past the
/// hinted length, so a cold reader reads at most about this much of a tail (plus what writers
/// appended since).
pub const HINT_INTERVAL_BYTES: u64 = 64 * 1024;

/// What one store brings to an append.
pub struct Appender<'a> {
    pub blobs: &'a StreamBlobs<'a>,
    pub index: &'a IdIndex,
    pub clock: Clock,
}

impl Appender<'_> {
    /// Appends `events` (already checked), starting from the view `tail`, which is updated
    /// with everything learned. `fresh` says whether `tail` was just read from storage (rather
    /// than taken from the cache, where it may be behind).
    pub async fn append(
        &self,
        tail: &mut Tail,
        mut fresh: bool,
        expected: ExpectedVersion,
        events: &[NewEvent],
    ) -> Result<AppendOutcome, StoreError> {
        let blobs = self.blobs;
        let tracker = DeliveryTracker::new();
        let mut attempted_first = None;
        let mut contention = Contention::new();
        // The version through which these ids are known not to be stored.
        let mut checked = None;
        loop {
            if tail.erased.is_some() {
                return Err(StoreError::StreamErased {
                    stream: blobs.stream.to_string(),
                });
            }
            let met = expected.is_met_by(tail.version);
            if !met && !fresh {
                // A cached view that misses the expectation may just be behind: look again
                // before refusing (or before recognising a retry).
                blobs.refresh(tail).await?;
                fresh = true;
                continue;
            }
            if let Some(span) = self.recognise(tail, events, &mut checked).await? {
                let written_by_this_call =
                    attempted_first == Some(span.first) && tracker.may_have_reached_storage();
                return Ok(AppendOutcome {
                    first_sequence: span.first,
                    version: span.last,
                    created: span.first == 1,
                    duplicate: !written_by_this_call,
                    recorded: None,
                });
            }
            if !met {
                return Err(StoreError::WrongExpectedVersion {
                    stream: blobs.stream.to_string(),
                    expected,
                    actual: tail.version,
                });
            }
            let Some(current) = tail.current.as_ref() else {
                create_first_segment(blobs, tail).await?;
                continue;
            };
            if tail.version > 0 && tail.last_recorded.is_none() {
                // A view learnt from a hint written before hints carried the time.
                tail.last_recorded = blobs.last_recorded(tail).await?;
            }
            if tail.is_full(blobs.max_blocks()) {
                let number = current.segment.number + 1;
                let hint = SegmentHint {
                    first_sequence: tail.version + 1,
                    version: tail.version,
                    length: 0,
                    blocks: 0,
                    recorded: tail.last_recorded,
                };
                match blobs
                    .api
                    .create_segment(&blobs.segment_name(number), hint, &blobs.what)
                    .await?
                {
                    CreateResult::Created { etag } => {
                        // The segment left behind may have become a tombstone since this view
                        // was taken (module `erase`): then the new one must take nothing.
                        let left = blobs.segment_name(current.segment.number);
                        if let Some(version) =
                            blobs.api.tombstone_version(&left, &blobs.what).await?
                        {
                            let created = blobs.segment_name(number);
                            blobs.api.delete_blob(&created, &blobs.what).await?;
                            tail.erased = Some(version);
                            continue;
                        }
                        tail.roll_over(hint.first_sequence);
                        if let Some(current) = tail.current.as_mut() {
                            current.etag = Some(etag);
                        }
                    }
                    // Another writer rolled over first: read what it wrote.
                    CreateResult::AlreadyExists => {
                        blobs.refresh(tail).await?;
                        fresh = true;
                    }
                }
                continue;
            }

            let segment = current.segment;
            let first = tail.version + 1;
            let recorded = append_time(self.clock.now(), tail.last_recorded);
            let encoded = encode_append(events, first, recorded)?;
            let name = blobs.segment_name(segment.number);
            attempted_first = Some(first);
            let result = blobs
                .api
                .append_block(
                    &name,
                    segment.length,
                    encoded.bytes.into(),
                    &tracker,
                    &blobs.what,
                )
                .await?;
            match result {
                AppendResult::Appended {
                    etag,
                    offset,
                    committed_blocks,
                } => {
                    if offset.is_some_and(|offset| offset != segment.length) {
                        return Err(blobs.corrupt(format!(
                            "segment {} took a block at {} instead of {}",
                            segment.number,
                            offset.unwrap_or_default(),
                            segment.length
                        )));
                    }
                    tail.record_append(
                        events,
                        encoded.span,
                        segment.length,
                        &encoded.ends,
                        recorded,
                    );
                    let mut hinted = false;
                    if let Some(current) = tail.current.as_mut() {
                        current.etag = etag;
                        // The service's count for this very append; our own count otherwise.
                        current.committed_blocks =
                            committed_blocks.unwrap_or(current.committed_blocks + 1);
                        hinted =
                            refresh_hint(blobs, current, tail.version, tail.last_recorded).await;
                    }
                    self.index_lag(tail, hinted).await;
                    return Ok(AppendOutcome {
                        first_sequence: encoded.span.first,
                        version: encoded.span.last,
                        created: encoded.span.first == 1,
                        duplicate: false,
                        recorded: Some(recorded),
                    });
                }
                AppendResult::PositionConflict => {
                    blobs.refresh(tail).await?;
                    fresh = true;
                    let allowed =
                        matches!(expected, ExpectedVersion::Any | ExpectedVersion::Exists);
                    if allowed && expected.is_met_by(tail.version) && !contention.wait().await {
                        return Err(contention.gave_up(&blobs.what));
                    }
                }
                AppendResult::SegmentFull => {
                    if let Some(current) = tail.current.as_mut() {
                        current.refused_block = true;
                    }
                }
                AppendResult::Missing => *tail = blobs.cold_load().await?,
            }
        }
    }

    /// The earlier append these events repeat, if they do (`EventIdReused` if their ids were
    /// stored in another arrangement), as far as the stream is stored up to `tail`'s version
    /// (and, through the index, beyond it). `checked` is the version through which these ids
    /// were already found absent by this call, and is moved on when they are absent now.
    async fn recognise(
        &self,
        tail: &mut Tail,
        events: &[NewEvent],
        checked: &mut Option<u64>,
    ) -> Result<Option<AppendSpan>, StoreError> {
        let stream = self.blobs.stream;
        let version = tail.version;
        if version == 0 {
            *checked = Some(0);
            return Ok(None);
        }
        let ids: Vec<Uuid> = events.iter().map(|e| e.event_id).collect();
        // Ids this process vouches for as new (the common path): nothing to look up.
        if tail.ids.proves_new(&ids) {
            *checked = Some(version);
            return Ok(None);
        }
        let recent = tail.ids.recent_by_id();
        let first_recent = tail.ids.first_recent().unwrap_or(u64::MAX);
        let seen = ids.iter().find_map(|id| recent.get(id));
        match seen {
            // An append that lies among the events seen here is decided by them alone.
            Some(found) if found.append.0 >= first_recent => {
                return decided(
                    stream,
                    events,
                    |id| recent.get(id).copied(),
                    checked,
                    version,
                )
            }
            Some(_) => {}
            None => {
                if checked.is_some_and(|v| tail.ids.covers_after(v, version)) {
                    *checked = Some(version);
                    return Ok(None);
                }
            }
        }
        // A stream small enough to vouch for every id of: learn them once, from the `PRINTS`
        // row and the events after it, and look up only what they do not rule out.
        if !tail.ids.knows_all() && version <= FULL_ID_SET_MAX_EVENTS {
            if let Some(prints) = self.index.load_prints(stream).await? {
                let lag = self.events_after(tail, prints.watermark, version).await?;
                let recent = tail.ids.recent_by_id();
                tail.ids
                    .know_all(prints.prints, lag.keys().chain(recent.keys()), version);
                if tail.ids.proves_new(&ids) {
                    *checked = Some(version);
                    return Ok(None);
                }
            }
        }
        // Ask the index for the rows of these ids, and the blobs for what follows it.
        let found = self.index.lookup(stream, &ids).await?;
        tail.ids.note_indexed(found.watermark);
        let watermark = tail.ids.indexed().unwrap_or(found.watermark);
        let lag = self.events_after(tail, watermark, version).await?;
        let recent = tail.ids.recent_by_id();
        if watermark.version == 0 && !tail.ids.knows_all() {
            // Nothing indexed yet: every id of the stream is in hand.
            let none = Fingerprints::default();
            tail.ids
                .know_all(none, lag.keys().chain(recent.keys()), version);
        }
        let lookup = |id: &Uuid| {
            found
                .rows
                .get(id)
                .or_else(|| lag.get(id))
                .or_else(|| recent.get(id))
                .copied()
        };
        decided(stream, events, lookup, checked, version)
    }

    /// The events after `watermark` up to `version` that the view's recent events do not hold,
    /// read from the blobs (from the watermark's position) and put before them.
    async fn events_after(
        &self,
        tail: &mut Tail,
        watermark: Watermark,
        version: u64,
    ) -> Result<HashMap<Uuid, StoredEventId>, StoreError> {
        let mut lag = HashMap::new();
        if tail.ids.covers_after(watermark.version, version) {
            return Ok(lag);
        }
        let until = match tail.ids.first_recent() {
            Some(first) if tail.ids.ends_at(version) => first.saturating_sub(1),
            _ => version,
        };
        let entries = self.blobs.scan_ids(watermark, until).await?;
        lag.extend(entries.iter().map(|e| {
            (
                e.event_id,
                StoredEventId {
                    sequence: e.sequence,
                    append: (e.append.first, e.append.last),
                },
            )
        }));
        if until == version {
            // The events seen here do not reach the stream's end: they are of no use.
            tail.ids.clear_recent();
        }
        tail.ids.prepend(entries);
        Ok(lag)
    }

    /// Writes the id rows of the events after the index's watermark, when there are enough of
    /// them (or the hint was just rewritten) and this view holds them all. Best effort: the
    /// append is done; a failure is logged, and a later append or lookup takes the events
    /// from the blobs.
    async fn index_lag(&self, tail: &mut Tail, hinted: bool) {
        let Some(watermark) = tail.ids.indexed() else {
            return;
        };
        let lag = tail.version.saturating_sub(watermark.version);
        let due = lag >= INDEX_INTERVAL_EVENTS || (hinted && lag > 0);
        if !due || !tail.ids.covers_after(watermark.version, tail.version) {
            return;
        }
        let entries = tail.ids.unindexed(watermark.version, usize::MAX);
        // The fingerprints of every id, for processes that come later, when this one knows
        // them and writes the rows up to its version.
        let prints = tail
            .ids
            .all_prints()
            .filter(|_| entries.last().is_some_and(|e| e.sequence == tail.version));
        match self.index.write(self.blobs.stream, &entries, prints).await {
            Ok(Some(written)) => {
                tail.ids.note_indexed(written);
                tail.ids.trim_indexed();
            }
            Ok(None) => {}
            Err(error) => tracing::warn!(
                stream = %self.blobs.stream,
                error = %error,
                "event-id rows could not be written; lookups read those events from the blobs"
            ),
        }
    }
}

/// [`earlier_append`] with `lookup`; when none of the ids is stored, `checked` moves on to
/// `version`.
fn decided(
    stream: &StreamId,
    events: &[NewEvent],
    lookup: impl Fn(&Uuid) -> Option<StoredEventId>,
    checked: &mut Option<u64>,
    version: u64,
) -> Result<Option<AppendSpan>, StoreError> {
    let answer = earlier_append(stream, events, lookup)?;
    if answer.is_none() {
        *checked = Some(version);
    }
    Ok(answer.map(|(first, last)| AppendSpan { first, last }))
}

/// Creates segment 0 of a stream that has no segment (or learns that someone else did).
async fn create_first_segment(blobs: &StreamBlobs<'_>, tail: &mut Tail) -> Result<(), StoreError> {
    let hint = SegmentHint {
        first_sequence: 1,
        version: 0,
        length: 0,
        blocks: 0,
        recorded: None,
    };
    match blobs
        .api
        .create_segment(&blobs.segment_name(0), hint, &blobs.what)
        .await?
    {
        CreateResult::Created { etag } => {
            *tail = Tail {
                current: Some(Current::empty(0, 0, 1, Some(etag))),
                ids: IdKnowledge::of_empty_stream(),
                ..Tail::default()
            };
            Ok(())
        }
        CreateResult::AlreadyExists => {
            *tail = blobs.cold_load().await?;
            Ok(())
        }
    }
}

/// Rewrites the segment's hint if it lags by [`HINT_INTERVAL_BYTES`] or more; whether it did.
/// Best-effort: with a stale ETag (another writer appended meanwhile) nothing is written.
async fn refresh_hint(
    blobs: &StreamBlobs<'_>,
    current: &mut Current,
    version: u64,
    recorded: Option<time::OffsetDateTime>,
) -> bool {
    let length = current.segment.length;
    if length < current.hint_length + HINT_INTERVAL_BYTES {
        return false;
    }
    let Some(etag) = current.etag.clone() else {
        return false;
    };
    let hint = SegmentHint {
        first_sequence: current.segment.first_sequence,
        version,
        length,
        blocks: current.committed_blocks,
        recorded,
    };
    let name = blobs.segment_name(current.segment.number);
    match blobs.api.set_hint(&name, &etag, hint).await {
        Some(etag) => {
            current.etag = Some(etag);
            current.hint_length = length;
            true
        }
        None => false,
    }
}
