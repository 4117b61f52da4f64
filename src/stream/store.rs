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
//!   `EventIdReused`, since that outcome would place events where they are not.

use std::collections::HashSet;

use async_trait::async_trait;
use time::OffsetDateTime;
use uuid::Uuid;

use super::{ExpectedVersion, NewEvent, RecordedEvent, StoreError, StreamId};

/// Instance keys per page when listing streams, unless the caller asks for another size.
pub const DEFAULT_PAGE_SIZE: usize = 100;

/// Which events of a stream to read. The default reads the whole stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReadRequest {
    /// First sequence number to return (inclusive, at least 1).
    pub from_sequence: u64,
    /// Last sequence number to return (inclusive); `None` reads to the end.
    pub to_sequence: Option<u64>,
    /// Only events written at or before this time.
    pub as_of: Option<OffsetDateTime>,
}

impl Default for ReadRequest {
    fn default() -> Self {
        Self {
            from_sequence: 1,
            to_sequence: None,
            as_of: None,
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
        }
    }

    /// Events after `sequence` (exclusive) to the end.
    pub fn after(sequence: u64) -> Self {
        Self::range(sequence.saturating_add(1), None)
    }

    /// Only events written at or before `as_of`.
    pub fn as_of(mut self, as_of: OffsetDateTime) -> Self {
        self.as_of = Some(as_of);
        self
    }

    /// The same request, stopping at `version` at the latest.
    pub fn bounded_by(mut self, version: u64) -> Self {
        self.to_sequence = Some(self.to_sequence.map_or(version, |to| to.min(version)));
        self
    }

    /// Whether `event` falls inside this request.
    pub fn includes(&self, event: &RecordedEvent) -> bool {
        event.sequence >= self.from_sequence
            && self.to_sequence.is_none_or(|to| event.sequence <= to)
            && self.as_of.is_none_or(|t| event.timestamp <= t)
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

    /// A page of the instance keys that have a stream in `domain` / `entity`. `continuation`
    /// is a token an earlier page returned (opaque to callers); one this backend could not
    /// have returned is `InvalidContinuation`.
    async fn list_streams(
        &self,
        domain: &str,
        entity: &str,
        continuation: Option<&str>,
        page_size: usize,
    ) -> Result<StreamPage, StoreError>;
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
