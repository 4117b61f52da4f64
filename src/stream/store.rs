//! The storage contract: a small trait that every backend implements and one conformance suite
//! checks (`tests/conformance`).
//!
//! Guarantees every backend gives:
//! - an append is atomic: all of its events are stored with consecutive sequence numbers, or
//!   none is;
//! - the expectation is checked in the same atomic operation as the write;
//! - sequence numbers start at 1 and have no gaps, whatever fails and whenever a process dies;
//! - an append whose events carry the ids of one earlier append, in the same order, is answered
//!   with that append's outcome (`duplicate = true`) and writes nothing; ids stored before in
//!   any other arrangement (part of an append, mixed with new ids, reordered) are
//!   `EventIdReused`, since that outcome would place events where they are not;
//! - recorded times never go backwards and have one precision: every backend records a time
//!   truncated to [`TIME_PRECISION_NANOS`] (Table storage's own), and at least its
//!   predecessor's time ([`append_time`]); a read reports each event's time as at least the one
//!   before it ([`TimeLine`]), so times read are non-decreasing even over events stored by
//!   older versions or other tools;
//! - as of a time is a prefix: a read with `as_of = t` returns the requested events up to the
//!   first event recorded after `t`, and nothing after it ([`TimeLine`]), so the events as of
//!   `t` are exactly the events as of the sequence of the last event recorded at or before `t`.

use std::collections::HashSet;

use async_trait::async_trait;
use time::OffsetDateTime;
use uuid::Uuid;

use super::{EntityType, ExpectedVersion, NewEvent, RecordedEvent, StoreError, StreamId};

/// Instance keys per page when listing streams, unless the caller asks for another size.
pub const DEFAULT_PAGE_SIZE: usize = 100;

/// Which events of a stream to read. The default reads the whole stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReadRequest {
    /// First sequence number to return (inclusive, at least 1).
    pub from_sequence: u64,
    /// Last sequence number to return (inclusive); `None` reads to the end.
    pub to_sequence: Option<u64>,
    /// As of this time: the read ends before the first event recorded after it (a prefix of
    /// the stream, see [`TimeLine`]).
    pub as_of: Option<OffsetDateTime>,
    /// The caller reads the events after `to_sequence` next (a fold walking the stream chunk
    /// by chunk), so a backend may fetch some of them with this read and keep them for the
    /// next one. A hint: it changes what is fetched, never what a read returns.
    pub more_follows: bool,
}

impl Default for ReadRequest {
    fn default() -> Self {
        Self {
            from_sequence: 1,
            to_sequence: None,
            as_of: None,
            more_follows: false,
        }
    }
}

impl ReadRequest {
    /// The whole stream.
    pub fn all() -> Self {
        Self::default()
    }

    /// Events `from..=to` (both sequence numbers, inclusive).
    pub fn range(from_sequence: u64, to_sequence: Option<u64>) -> Self {
        Self {
            from_sequence: from_sequence.max(1),
            to_sequence,
            as_of: None,
            more_follows: false,
        }
    }

    /// Events after `sequence` (exclusive) to the end.
    pub fn after(sequence: u64) -> Self {
        Self::range(sequence.saturating_add(1), None)
    }

    /// As of `as_of`: up to the first event recorded after it.
    pub fn as_of(mut self, as_of: OffsetDateTime) -> Self {
        self.as_of = Some(as_of);
        self
    }

    /// The same request from a caller that reads the events after it next
    /// ([`Self::more_follows`]).
    pub fn followed_by_more(mut self) -> Self {
        self.more_follows = true;
        self
    }

    /// The same request, stopping at `version` at the latest.
    pub fn bounded_by(mut self, version: u64) -> Self {
        self.to_sequence = Some(self.to_sequence.map_or(version, |to| to.min(version)));
        self
    }

    /// Whether `event`, taken on its own, falls inside this request: its sequence is in the
    /// range and its time at or before `as_of`. A read also ends at the first event past
    /// `as_of` ([`TimeLine`]), which this check of one event cannot tell.
    pub fn includes(&self, event: &RecordedEvent) -> bool {
        event.sequence >= self.from_sequence
            && self.to_sequence.is_none_or(|to| event.sequence <= to)
            && self.as_of.is_none_or(|t| event.timestamp <= t)
    }
}

/// The precision of every recorded time, in nanoseconds: Table storage keeps `Edm.DateTime`
/// to 100 ns, and every backend records times truncated to it, so that a time read from one
/// place (a snapshot, a Table row) and one read from another (a blob record) compare exactly.
pub const TIME_PRECISION_NANOS: u32 = 100;

/// `time` as every backend records it: in UTC, truncated to [`TIME_PRECISION_NANOS`].
pub fn recorded_time(time: OffsetDateTime) -> OffsetDateTime {
    // A time whose UTC date is outside the `time` crate's range stays as given.
    let time = time.checked_to_offset(time::UtcOffset::UTC).unwrap_or(time);
    let nanos = time.nanosecond();
    time.replace_nanosecond(nanos - nanos % TIME_PRECISION_NANOS)
        .unwrap_or(time)
}

/// The time an append records: `now` as recorded, but never before `previous`, the recorded
/// time of the event it follows (when the stream has one). Every backend knows that time when
/// it writes (see each backend's documentation), so the recorded times of a stream never go
/// backwards, whatever the writers' clocks say.
pub fn append_time(now: OffsetDateTime, previous: Option<OffsetDateTime>) -> OffsetDateTime {
    let now = recorded_time(now);
    previous.map_or(now, |previous| now.max(recorded_time(previous)))
}

/// Where a store takes the time of an append from: the system clock, moved by an offset.
/// Not part of the API: tests give store views skewed clocks (other processes, other clocks)
/// to check that recorded times never go backwards.
#[doc(hidden)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Clock {
    offset: time::Duration,
}

impl Clock {
    /// The system clock moved by `offset` (positive: ahead). Feature `testing` only.
    #[cfg(any(test, feature = "testing"))]
    pub fn skewed(offset: time::Duration) -> Self {
        Self { offset }
    }

    /// The time now, by this clock.
    pub fn now(&self) -> OffsetDateTime {
        let now = OffsetDateTime::now_utc();
        now.checked_add(self.offset).unwrap_or(now)
    }
}

/// The times a read reports and where a read with `as_of` ends, applied to events in sequence
/// order as a read meets them:
/// - each event's reported time is at least the reported time of the event before it in the
///   read (a time stored lower, by an older version or another tool, is raised to it), so the
///   times of a read never go backwards. Events written by this version are stored so already
///   ([`append_time`]), so a read starting anywhere reports them exactly as stored;
/// - with `as_of = t`, the read ends just before the first event whose reported time is after
///   `t`: every later event is left out, whatever its own time. The result is a prefix of the
///   stream: the state after the last event recorded at or before `t`.
#[derive(Debug, Clone, Copy, Default)]
pub struct TimeLine {
    as_of: Option<OffsetDateTime>,
    last: Option<OffsetDateTime>,
    ended: bool,
}

impl TimeLine {
    /// A time line for a read as of `as_of` (`None`: no end).
    pub fn new(as_of: Option<OffsetDateTime>) -> Self {
        Self {
            as_of,
            last: None,
            ended: false,
        }
    }

    /// Raises `event`'s time to at least its predecessor's (and to the recorded precision),
    /// and says whether the event is part of the read: `false` for the first event recorded
    /// after `as_of` and for every event after it.
    pub fn admit(&mut self, event: &mut RecordedEvent) -> bool {
        let time = append_time(event.timestamp, self.last);
        event.timestamp = time;
        self.last = Some(time);
        if self.as_of.is_some_and(|t| time > t) {
            self.ended = true;
        }
        !self.ended
    }

    /// Whether the read has met an event past `as_of` (nothing after it belongs to the read).
    pub fn ended(&self) -> bool {
        self.ended
    }

    /// The events of `request` among `events` (consecutive, in sequence order, starting at or
    /// before the request's first event), with their reported times, up to the end of the read.
    pub fn cut(
        request: &ReadRequest,
        events: impl IntoIterator<Item = RecordedEvent>,
    ) -> Vec<RecordedEvent> {
        let mut line = Self::new(request.as_of);
        events
            .into_iter()
            .map_while(|mut event| line.admit(&mut event).then_some(event))
            .filter(|event| {
                event.sequence >= request.from_sequence
                    && request.to_sequence.is_none_or(|to| event.sequence <= to)
            })
            .collect()
    }
}

/// Events read from a stream, with the stream's version at the time of the read.
#[derive(Debug, Clone)]
pub struct StreamSlice {
    /// The stream's current version (0 = the stream does not exist).
    pub version: u64,
    /// The requested events, in sequence order.
    pub events: Vec<RecordedEvent>,
}

/// What an append did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AppendOutcome {
    /// Sequence number of the first event written.
    pub first_sequence: u64,
    /// The stream's version after the append (sequence number of the last event written).
    pub version: u64,
    /// Whether this append created the stream.
    pub created: bool,
    /// Whether the events had been stored before (an idempotent retry): nothing was written now.
    pub duplicate: bool,
    /// When this call recorded the events: their `timestamp`, exactly as reads return it.
    /// `None` when this call cannot tell (a duplicate, or a write recognised after its answer
    /// was lost).
    pub recorded: Option<OffsetDateTime>,
}

/// What [`EventStore::erase`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Erasure {
    /// The stream has no events and no tombstone: nothing was written.
    NotFound,
    /// The stream is erased: its tombstone is in place and nothing else of it is left.
    /// `version` is the version it had when the tombstone was written (kept in the tombstone,
    /// the one number it holds); `resumed` is true when the tombstone was there already (an
    /// erasure interrupted before, or asked again), and this call finished it.
    Erased { version: u64, resumed: bool },
}

/// One page of the instance keys of a domain / entity type, in key order.
#[derive(Debug, Clone, Default)]
pub struct StreamPage {
    pub instances: Vec<String>,
    /// Pass back to get the next page; `None` on the last page.
    pub continuation: Option<String>,
}

/// An event store backend.
#[async_trait]
pub trait EventStore: Send + Sync + 'static {
    /// Appends `events` atomically if the stream meets `expected`.
    async fn append(
        &self,
        stream: &StreamId,
        expected: ExpectedVersion,
        events: Vec<NewEvent>,
    ) -> Result<AppendOutcome, StoreError>;

    /// Reads events of a stream. A stream that does not exist reads as version 0, no events.
    async fn read(
        &self,
        stream: &StreamId,
        request: ReadRequest,
    ) -> Result<StreamSlice, StoreError>;

    /// The stream's current version (0 = it does not exist), without reading its events.
    async fn version(&self, stream: &StreamId) -> Result<u64, StoreError>;

    /// The events of `request` up to `version`, a version of the stream the caller has just
    /// learnt from this store. Events up to a version exist and never change, so a backend may
    /// skip reading the version again (the Table backend reads the range with one query
    /// instead of a query and a header read). A missing event in the range is `Corrupt`, as in
    /// [`EventStore::read`]. The default reads as `read` does, bounded by `version`.
    async fn read_known(
        &self,
        stream: &StreamId,
        request: ReadRequest,
        version: u64,
    ) -> Result<Vec<RecordedEvent>, StoreError> {
        let request = request.bounded_by(version);
        Ok(self.read(stream, request).await?.events)
    }

    /// The events of `request` that are stored now, read without the stream's version: exactly
    /// the events `from..=min(to, last)`, in order, where `last` is the last event stored when
    /// the read was served (none when the stream has no event `from`; a gap is `Corrupt`). A
    /// backend that keeps the version apart from the events answers with one request (Table:
    /// the event query without the header read). Events never change once stored, so what it
    /// returns is exact; what it does not do is tell an erased stream from a live one: while an
    /// erasure is deleting a stream's events it may return those not deleted yet (a reader that
    /// must see such a stream as empty uses [`EventStore::read`]). The default reads as `read`
    /// does.
    async fn read_stored(
        &self,
        stream: &StreamId,
        request: ReadRequest,
    ) -> Result<Vec<RecordedEvent>, StoreError> {
        Ok(self.read(stream, request).await?.events)
    }

    /// A page of the instance keys that have a stream of `entity_type`. `continuation` is a
    /// token an earlier page returned (opaque to callers); one this backend could not have
    /// returned is `InvalidContinuation`.
    ///
    /// A listed stream may read as having no events (version 0): the Append Blob backend
    /// creates a stream's first segment before it appends the first event, so a writer stopped
    /// between the two leaves a stream that is listed and empty (the next append fills it); and
    /// on any backend an erasure may run between the listing and the read. A caller that acts
    /// on each listed stream reads it and passes over one without events.
    async fn list_streams(
        &self,
        entity_type: &EntityType,
        continuation: Option<&str>,
        page_size: usize,
    ) -> Result<StreamPage, StoreError>;

    /// Erases a stream: every event, event-id record and outbox entry of it, leaving a
    /// tombstone (at most two storage items, holding no event data, only the erased version
    /// and when) that refuses every later append with [`StoreError::StreamErased`], so the
    /// stream never silently comes back. Crash-safe and resumable: the tombstone is written
    /// first, in one atomic operation that also makes every concurrent or stale append fail,
    /// then the rest is deleted; calling it again after an interruption finishes the work.
    /// Readers see an erased stream as one that does not exist (version 0, no events, not
    /// listed). The default refuses: a store that cannot erase says so.
    async fn erase(&self, stream: &StreamId) -> Result<Erasure, StoreError> {
        Err(StoreError::Misconfigured(format!(
            "this store cannot erase streams ({stream})"
        )))
    }

    /// Checks what is stored of `stream` against the layout this backend writes, and names
    /// every problem found (an empty list: healthy): a gap in the sequence numbers, a header
    /// that disagrees with the last event, an event without its event-id record, an outbox
    /// entry that disagrees with the stream. For operators (`streamfold verify`); reads the
    /// whole stream. The default reads the stream through [`EventStore::read`], which reports
    /// the first gap it meets.
    async fn verify(&self, stream: &StreamId) -> Result<Vec<String>, StoreError> {
        const PAGE: u64 = 1_000;
        let mut from = 1;
        loop {
            let slice = match self
                .read(
                    stream,
                    ReadRequest::range(from, Some(from.saturating_add(PAGE - 1))),
                )
                .await
            {
                Ok(slice) => slice,
                Err(StoreError::Corrupt { detail, .. }) => return Ok(vec![detail]),
                Err(error) => return Err(error),
            };
            match slice.events.last() {
                Some(last) if last.sequence < slice.version => from = last.sequence + 1,
                _ => return Ok(Vec::new()),
            }
        }
    }

    /// Whether `stream` was erased (its tombstone exists). The default: never.
    async fn is_erased(&self, stream: &StreamId) -> Result<bool, StoreError> {
        let _ = stream;
        Ok(false)
    }
}

/// Checks a continuation that backends make of the last instance key of a page (Table
/// storage, memory): it must be a valid instance key.
pub fn check_key_continuation(continuation: Option<&str>) -> Result<(), StoreError> {
    match continuation {
        Some(token) => {
            super::validate_instance_key(token).map_err(|e| StoreError::InvalidContinuation {
                continuation: token.to_owned(),
                reason: e.to_string(),
            })
        }
        None => Ok(()),
    }
}

/// Ends a page of a listing read with one item more than `page_size` (the extra item only
/// says that more follow): keeps the first `page_size` items, and answers the continuation, the
/// key of the last item kept, when more follow (`None` on the last page).
pub fn end_page<T>(
    items: &mut Vec<T>,
    page_size: usize,
    key: impl FnOnce(&T) -> &str,
) -> Option<String> {
    if items.len() <= page_size {
        return None;
    }
    items.truncate(page_size);
    items.last().map(|item| key(item).to_owned())
}

/// Checks what every backend refuses before touching storage: an empty append, a bad event
/// type, an event id used twice in one append.
pub fn check_new_events(events: &[NewEvent]) -> Result<(), StoreError> {
    if events.is_empty() {
        return Err(StoreError::EmptyAppend);
    }
    let mut seen = HashSet::with_capacity(events.len());
    for event in events {
        NewEvent::validate_event_type(&event.event_type).map_err(|reason| {
            StoreError::InvalidEvent {
                event_id: event.event_id,
                reason,
            }
        })?;
        if !seen.insert(event.event_id) {
            return Err(StoreError::InvalidEvent {
                event_id: event.event_id,
                reason: "the same event id appears twice in one append".into(),
            });
        }
    }
    Ok(())
}

/// Where an event id was stored: the event's sequence and the append that stored it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StoredEventId {
    pub sequence: u64,
    /// First and last sequence of the append that stored the event.
    pub append: (u64, u64),
}

/// Decides whether `events` repeat one earlier append, given where each id was stored
/// (`lookup`). `Ok(Some((first, last)))` = a retry of that append: the same ids, in the same
/// order; `Ok(None)` = no id was stored before; `Err(EventIdReused)` = ids stored before in any
/// other arrangement.
pub fn earlier_append(
    stream: &StreamId,
    events: &[NewEvent],
    lookup: impl Fn(&Uuid) -> Option<StoredEventId>,
) -> Result<Option<(u64, u64)>, StoreError> {
    let found: Vec<Option<StoredEventId>> = events.iter().map(|e| lookup(&e.event_id)).collect();
    if found.iter().all(Option::is_none) {
        return Ok(None);
    }
    if let Some(Some(StoredEventId { append, .. })) = found.first() {
        let (first, last) = *append;
        let same_append = last.checked_sub(first).and_then(|n| n.checked_add(1))
            == Some(events.len() as u64)
            && found.iter().zip(first..).all(|(stored, sequence)| {
                *stored
                    == Some(StoredEventId {
                        sequence,
                        append: *append,
                    })
            });
        if same_append {
            return Ok(Some(*append));
        }
    }
    let reused = events
        .iter()
        .zip(&found)
        .find(|(_, f)| f.is_some())
        .map(|(e, _)| e.event_id)
        .unwrap_or_default();
    Err(StoreError::EventIdReused {
        stream: stream.to_string(),
        event_id: reused,
    })
}

#[cfg(test)]
mod tests {
    use super::end_page;

    #[test]
    fn a_page_ends_at_its_size_and_names_its_last_key_when_more_follow() {
        let mut keys = vec!["a".to_owned(), "b".to_owned(), "c".to_owned()];
        assert_eq!(end_page(&mut keys, 2, String::as_str), Some("b".to_owned()));
        assert_eq!(keys, ["a", "b"]);
        assert_eq!(end_page(&mut keys, 2, String::as_str), None);
        assert_eq!(keys, ["a", "b"]);
    }
}
