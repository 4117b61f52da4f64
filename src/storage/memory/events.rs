//! An in-memory backend for fast unit tests of domain code. It honours the full storage
//! contract (atomic appends, expectations, idempotent retries, listing, recorded times that
//! never go backwards, as-of-time reads that are prefixes) inside one process and keeps
//! nothing after the process ends. Clones share the streams. An erased stream keeps only its
//! tombstone (the version it had), which refuses appends.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use time::OffsetDateTime;
use uuid::Uuid;

use crate::stream::{
    append_time, check_key_continuation, check_new_events, earlier_append, end_page, AppendOutcome,
    Clock, EntityType, Erasure, EventStore, ExpectedVersion, NewEvent, ReadRequest, RecordedEvent,
    StoreError, StoredEventId, StreamId, StreamPage, StreamSlice, TimeLine,
};

#[derive(Default)]
struct Stream {
    events: Vec<RecordedEvent>,
    /// Event id → where it was stored.
    stored_event_ids: HashMap<Uuid, StoredEventId>,
    /// The tombstone of an erased stream: the version it had.
    erased: Option<u64>,
}

/// Streams kept in a map behind one mutex. Cheap to clone; clones share the streams.
#[derive(Default, Clone)]
pub struct MemoryStore {
    streams: Arc<Mutex<BTreeMap<StreamId, Stream>>>,
    clock: Clock,
}

impl MemoryStore {
    pub fn new() -> Self {
        Self::default()
    }

    /// The same streams, appended to with `clock`'s time. Not part of the API (feature `testing`: tests give views
    /// skewed clocks).
    #[doc(hidden)]
    #[cfg(any(test, feature = "testing"))]
    pub fn with_clock(mut self, clock: Clock) -> Self {
        self.clock = clock;
        self
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<StreamId, Stream>> {
        // A panic while holding the lock leaves no half-applied append (appends are applied
        // with one `extend`), so the data is still consistent.
        self.streams
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

#[async_trait]
impl EventStore for MemoryStore {
    async fn append(
        &self,
        stream: &StreamId,
        expected: ExpectedVersion,
        events: Vec<NewEvent>,
    ) -> Result<AppendOutcome, StoreError> {
        check_new_events(&events)?;
        let mut streams = self.lock();
        let entry = streams.entry(stream.clone()).or_default();
        if entry.erased.is_some() {
            return Err(StoreError::StreamErased {
                stream: stream.to_string(),
            });
        }
        if let Some((first, last)) = earlier_append(stream, &events, |id| {
            entry.stored_event_ids.get(id).copied()
        })? {
            return Ok(AppendOutcome {
                first_sequence: first,
                version: last,
                created: first == 1,
                duplicate: true,
                recorded: None,
            });
        }
        let actual = entry.events.len() as u64;
        if !expected.is_met_by(actual) {
            if actual == 0 {
                streams.remove(stream);
            }
            return Err(StoreError::WrongExpectedVersion {
                stream: stream.to_string(),
                expected,
                actual,
            });
        }
        let previous = entry.events.last().map(|e| e.timestamp);
        let timestamp: OffsetDateTime = append_time(self.clock.now(), previous);
        let first = actual + 1;
        let last = actual + events.len() as u64;
        for (event, sequence) in events.iter().zip(first..) {
            let stored = StoredEventId {
                sequence,
                append: (first, last),
            };
            entry.stored_event_ids.insert(event.event_id, stored);
        }
        entry.events.extend(
            events
                .into_iter()
                .zip(first..)
                .map(|(e, sequence)| RecordedEvent {
                    sequence,
                    event_id: e.event_id,
                    event_type: e.event_type,
                    data: e.data,
                    timestamp,
                    metadata: e.metadata,
                }),
        );
        Ok(AppendOutcome {
            first_sequence: first,
            version: last,
            created: actual == 0,
            duplicate: false,
            recorded: Some(timestamp),
        })
    }

    async fn read(
        &self,
        stream: &StreamId,
        request: ReadRequest,
    ) -> Result<StreamSlice, StoreError> {
        let streams = self.lock();
        Ok(match streams.get(stream) {
            None => StreamSlice {
                version: 0,
                events: Vec::new(),
            },
            Some(s) => {
                // Times are stored non-decreasing, so the event before the range is all a time
                // line needs to start from.
                let start = usize::try_from(request.from_sequence.saturating_sub(2))
                    .unwrap_or(usize::MAX)
                    .min(s.events.len());
                let to = request.to_sequence.unwrap_or(u64::MAX);
                let mut line = TimeLine::new(request.as_of);
                let mut events = Vec::new();
                for event in s.events.iter().skip(start) {
                    if event.sequence > to {
                        break;
                    }
                    let mut event = event.clone();
                    if !line.admit(&mut event) {
                        break;
                    }
                    if event.sequence >= request.from_sequence {
                        events.push(event);
                    }
                }
                StreamSlice {
                    version: s.events.len() as u64,
                    events,
                }
            }
        })
    }

    async fn version(&self, stream: &StreamId) -> Result<u64, StoreError> {
        Ok(self.lock().get(stream).map_or(0, |s| s.events.len() as u64))
    }

    async fn list_streams(
        &self,
        entity_type: &EntityType,
        continuation: Option<&str>,
        page_size: usize,
    ) -> Result<StreamPage, StoreError> {
        check_key_continuation(continuation)?;
        let streams = self.lock();
        let page_size = page_size.max(1);
        let mut instances: Vec<String> = streams
            .iter()
            .filter(|(id, s)| id.entity_type() == entity_type && s.erased.is_none())
            .map(|(id, _)| id.instance().to_owned())
            .filter(|key| continuation.is_none_or(|after| key.as_str() > after))
            .take(page_size + 1)
            .collect();
        let continuation = end_page(&mut instances, page_size, String::as_str);
        Ok(StreamPage {
            instances,
            continuation,
        })
    }

    async fn erase(&self, stream: &StreamId) -> Result<Erasure, StoreError> {
        let mut streams = self.lock();
        let Some(entry) = streams.get_mut(stream) else {
            return Ok(Erasure::NotFound);
        };
        if let Some(version) = entry.erased {
            return Ok(Erasure::Erased {
                version,
                resumed: true,
            });
        }
        let version = entry.events.len() as u64;
        if version == 0 {
            return Ok(Erasure::NotFound);
        }
        *entry = Stream {
            erased: Some(version),
            ..Stream::default()
        };
        Ok(Erasure::Erased {
            version,
            resumed: false,
        })
    }

    async fn is_erased(&self, stream: &StreamId) -> Result<bool, StoreError> {
        Ok(self.lock().get(stream).is_some_and(|s| s.erased.is_some()))
    }
}
