//! The Append Blob backend: every stream of an app in one container, one append blob per stream
//! segment, every append one block.
//!
//! # Layout
//! Container [`DEFAULT_CONTAINER`] (or another, [`BlobStore::with_container`]); stream
//! `domain / entity / instance` lives in `{domain}/{entity}/{escaped instance}/000000.jsonl`,
//! `000001.jsonl`, ... ([`naming`]). Each segment is newline-delimited JSON, one
//! self-describing record per event ([`record`]), so any tool can read a stream. Segment
//! metadata (`firstsequence`, and `version`/`length`/`blocks` at some point of the segment) is
//! only a hint for finding the tail, checked against the content before use; the content is
//! the truth.
//!
//! # Appends ([`append`])
//! One block per append (all or nothing, at most [`MAX_BLOCK_BYTES`]), written with the append
//! position this process believes the segment has, so a stale writer gets 412 and never writes
//! twice; an `Any`/`Exists` append that loses the race is retried with jittered backoff until
//! it lands (bounded by [`crate::storage::contention::CONTENTION_DEADLINE`]). Each append
//! records a time no earlier than its predecessor's, which the view knows (from the last record
//! it read, or from the segment hint, which carries it). A per-process cache of each stream's
//! tail ([`tail`]) makes an append whose expected version matches the cache (and whose event
//! ids it vouches for, see below) cost one request; a cold cache costs a listing and a read of the
//! tail after the hint (measured on a 2 MB, 5,000-event stream: four requests and about 1 KiB
//! of responses, see `tests/integration/blob_backend.rs`). When a segment holds
//! [`MAX_BLOCKS_PER_SEGMENT`] blocks (or fewer, see [`BlobStore::with_max_blocks_per_segment`])
//! the stream continues in the next segment. Blocks are counted from the records (one append,
//! one block), which every writer reads alike, so all writers agree on when a segment is full.
//!
//! # Idempotent appends
//! Retries are recognised however long ago their events were stored, through an index of
//! every event id in a Table of the same account ([`DEFAULT_ID_INDEX_TABLE`]) that may lag
//! behind the blobs and is completed from them: see [`ids`] for its layout, why it never gives
//! a wrong answer, and what it costs (nothing, for an append whose ids this process vouches
//! for).
//!
//! # Reads ([`view`])
//! As of a time, a read is a prefix: it ends at the first event recorded after that time.
//! A read learns the stream's version (from the cached tail, refreshed, or a cold load), then
//! reads the requested events up to it and no further, in ranged GETs of at most
//! [`client::MAX_READ_RANGE_BYTES`] (each with its own timeout, so a segment of any length
//! can be read) sized to what the range needs, decoding range by range: memory holds the
//! events asked for and about one range, never a whole segment. It starts where it knows the
//! first requested event is: where an earlier read of this process stopped (a
//! [`bookmark`]: a reader walking a stream page by page or chunk by chunk reads each byte
//! once), where the cached tail knows it is, at the segment's metadata hint when that is
//! before it, or else at the start of the segment that holds it (by the segments'
//! `firstsequence` metadata). A reader that continues where it stopped also gets the events of
//! up to about one more range read ahead and kept for its next read (bounded in all by
//! [`bookmark::READ_AHEAD_BUDGET_BYTES`]), so a replay walking a long stream chunk by chunk
//! costs about one request per range, not one per chunk. When this process knows where the
//! requested event starts within the tail it caches (a reader catching up), a read is one
//! request from there to the end of the stream.
//!
//! # Listing
//! Instances are the virtual directories under `{domain}/{entity}/`: a page is one listing
//! request with the `/` delimiter, and the continuation is the service's marker. Pages come in
//! the order of the *escaped* names (bytes outside `A-Z a-z 0-9 - _ .` sort as `%XX`), which is
//! not always the order of the keys. A stream whose first append failed after its segment was
//! created is an empty segment: it reads as version 0 but is listed.
//!
//! # Notifications (module `outbox`)
//! Appends write nothing for notifications. A stream's "notified up to" mark is a separate
//! marker blob under [`MARKER_PREFIX`], and what is pending is derived from the segments'
//! lengths compared with that mark.
//!
//! # Erasure (module `erase`)
//! Tombstones first (empty block blobs that no append or creation gets past, on the last
//! segment, then on segment 0), then the rest of the stream is deleted; resumable. What is
//! left is segment 0's tombstone and a listing marker beside the stream's directory.
//!
//! # Failure
//! Every request has bounded timeouts and retries (see [`crate::storage::connection`]); an
//! outage gives `Unavailable` within seconds, never a hang. After any error other than a
//! refused expectation, the cached tail of that stream is dropped.
//!
//! # Not supported
//! Writers of one container must agree on the block limit per segment (it is a test knob; in
//! production it is the service's 50,000).

mod append;
mod bookmark;
mod client;
mod erase;
mod ids;
mod naming;
mod outbox;
mod policy;
mod record;
mod tail;
mod verify;
mod view;

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};

use async_trait::async_trait;

use crate::storage::connection::StorageAccount;
use crate::stream::StreamTurns;
use crate::stream::{
    check_new_events, AppendOutcome, Clock, EntityType, Erasure, EventStore, ExpectedVersion,
    NewEvent, ReadRequest, RecordedEvent, StoreError, StreamId, StreamPage, StreamSlice,
};
use append::Appender;
use bookmark::{Bookmark, Bookmarks};
use client::BlobApi;
use ids::IdIndex;
use tail::Tail;
use view::{AheadLimit, Position, StreamBlobs, ASSUMED_RECORD_BYTES};

pub use append::HINT_INTERVAL_BYTES;
pub use bookmark::{BOOKMARKS_PER_STREAM, MAX_BOOKMARKED_STREAMS};
pub use client::{MAX_READ_RANGE_BYTES, MIN_READ_RANGE_BYTES};
pub use ids::{
    DEFAULT_ID_INDEX_TABLE, FULL_ID_SET_MAX_EVENTS, INDEX_INTERVAL_EVENTS, MAX_TRACKED_EVENTS,
};
pub use naming::{escape_instance, unescape_instance, DEFAULT_CONTAINER, MAX_BLOB_NAME_LEN};
pub use outbox::MARKER_PREFIX;
pub use record::{record_size_bound, MAX_BLOCK_BYTES};
pub use tail::KNOWN_WINDOW_BYTES;

/// The decoders of this backend's stored bytes and names, for the fuzz targets
/// (`crate::fuzzing`); not part of the API.
#[cfg(feature = "fuzzing")]
pub(crate) mod fuzz_access {
    pub(crate) use super::client::check_marker;
    pub(crate) use super::naming::{
        entity_prefix, escape_instance, instance_of_prefix, parse_segment_name, segment_blob_name,
        segment_file_name, stream_prefix, unescape_instance, MAX_BLOB_NAME_LEN,
    };
    pub(crate) use super::record::{decode_records, encode_append};
}

/// Most blocks the service lets an append blob have.
pub const MAX_BLOCKS_PER_SEGMENT: u32 = 50_000;
/// Streams whose tail one store keeps in memory; past this, an arbitrary entry is dropped.
pub const MAX_CACHED_STREAMS: usize = 1_024;
/// Container names: 3 to 63 characters.
const CONTAINER_NAME_LEN: std::ops::RangeInclusive<usize> = 3..=63;

/// Event streams in append blobs of one container. Cheap to clone; clones share the container
/// client, the "container created" state and the cache of stream tails.
#[derive(Clone)]
pub struct BlobStore {
    account: StorageAccount,
    container_name: String,
    max_blocks_per_segment: u32,
    /// The container client, or why none could be built (reported by every operation).
    api: Arc<Result<BlobApi, String>>,
    /// The event-id index (module `ids`), or why its client could not be built.
    index: Arc<Result<IdIndex, String>>,
    /// Where appends take their time from.
    clock: Clock,
    /// The turns of this process's appends without an exact expectation, per stream.
    turns: Arc<StreamTurns>,
    cache: Arc<Mutex<HashMap<StreamId, Tail>>>,
    /// Where recent range reads of each stream stopped.
    bookmarks: Arc<Bookmarks>,
}

impl std::fmt::Debug for BlobStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BlobStore")
            .field("account", &self.account)
            .field("container_name", &self.container_name)
            .field("max_blocks_per_segment", &self.max_blocks_per_segment)
            .finish()
    }
}

impl BlobStore {
    /// A store in the container [`DEFAULT_CONTAINER`] of `account`. No I/O: the container is
    /// created before the first write.
    pub fn new(account: StorageAccount) -> Self {
        Self::build(
            account,
            DEFAULT_CONTAINER.to_owned(),
            MAX_BLOCKS_PER_SEGMENT,
        )
    }

    /// The same account, another container (tests use one container each). No I/O; an invalid
    /// name is reported as `Misconfigured` by every operation.
    pub fn with_container(self, container_name: impl Into<String>) -> Self {
        let clock = self.clock;
        let mut store = Self::build(
            self.account,
            container_name.into(),
            self.max_blocks_per_segment,
        );
        store.clock = clock;
        store
    }

    /// The same store, appending with `clock`'s time. Not part of the API (feature `testing`: tests give views
    /// skewed clocks).
    #[doc(hidden)]
    #[cfg(any(test, feature = "testing"))]
    pub fn with_clock(mut self, clock: Clock) -> Self {
        self.clock = clock;
        self
    }

    /// Moves streams on to a new segment after `max_blocks` blocks (1 to
    /// [`MAX_BLOCKS_PER_SEGMENT`]; tests lower it to see segments roll over). Every writer of a
    /// container must use the same value.
    pub fn with_max_blocks_per_segment(mut self, max_blocks: u32) -> Self {
        self.max_blocks_per_segment = max_blocks.clamp(1, MAX_BLOCKS_PER_SEGMENT);
        self
    }

    pub fn container_name(&self) -> &str {
        &self.container_name
    }

    pub fn max_blocks_per_segment(&self) -> u32 {
        self.max_blocks_per_segment
    }

    pub fn account(&self) -> &StorageAccount {
        &self.account
    }

    fn build(account: StorageAccount, container_name: String, max_blocks: u32) -> Self {
        let api = validate_container_name(&container_name).and_then(|()| {
            client::client_options(&account)
                .and_then(|options| account.blob_service_client_with_options(options))
                .map(|service| BlobApi::new(service.container_client(container_name.clone())))
                .map_err(|e| e.to_string())
        });
        let index = crate::storage::table::table_api(&account, DEFAULT_ID_INDEX_TABLE)
            .map(|api| IdIndex::new(api, &container_name));
        Self {
            account,
            container_name,
            max_blocks_per_segment: max_blocks,
            api: Arc::new(api),
            index: Arc::new(index),
            clock: Clock::default(),
            turns: Arc::new(StreamTurns::new()),
            cache: Arc::new(Mutex::new(HashMap::new())),
            bookmarks: Arc::new(Bookmarks::default()),
        }
    }

    fn api(&self) -> Result<&BlobApi, StoreError> {
        self.api
            .as_ref()
            .as_ref()
            .map_err(|reason| StoreError::Misconfigured(reason.clone()))
    }

    fn index(&self) -> Result<&IdIndex, StoreError> {
        self.index
            .as_ref()
            .as_ref()
            .map_err(|reason| StoreError::Misconfigured(reason.clone()))
    }

    fn blobs<'a>(&self, api: &'a BlobApi, stream: &'a StreamId) -> StreamBlobs<'a> {
        StreamBlobs::new(api, stream, u64::from(self.max_blocks_per_segment))
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<StreamId, Tail>> {
        // Entries are replaced whole, so a panic elsewhere cannot leave one half-written.
        self.cache
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn cached(&self, stream: &StreamId) -> Option<Tail> {
        self.lock().get(stream).cloned()
    }

    /// Keeps `tail` unless the cache already holds a view further along the stream.
    fn remember(&self, stream: &StreamId, tail: Tail) {
        let position = |t: &Tail| {
            t.current
                .as_ref()
                .map(|c| (c.segment.number, c.segment.length))
        };
        let mut cache = self.lock();
        if let Some(cached) = cache.get(stream) {
            if position(cached) > position(&tail) {
                return;
            }
        } else if cache.len() >= MAX_CACHED_STREAMS {
            if let Some(evicted) = cache.keys().next().cloned() {
                cache.remove(&evicted);
            }
        }
        cache.insert(stream.clone(), tail);
    }

    fn forget(&self, stream: &StreamId) {
        self.lock().remove(stream);
    }

    /// The events of `request`, which ends at or before `version` (a version of the stream
    /// known to exist), read from where a bookmark or the cached tail says the first one
    /// starts (else from the segments' metadata); the bookmark of where it stopped is kept.
    /// A read that continues where an earlier one stopped (a reader walking the stream chunk
    /// by chunk), or whose caller says more follows ([`ReadRequest::more_follows`]), also
    /// fetches up to [`bookmark::READ_AHEAD_BYTES`] of the events after its range; every read
    /// takes the events its last range fetched past what it asked for (within that bound).
    /// Both are kept for the next read: one that starts where kept events start takes them
    /// instead of reading. Reads as of a time neither fetch nor take read-ahead events.
    /// A read with no bookmark at its first event starts at the nearest one shortly before
    /// it, if any (skipping at most [`bookmark::MAX_SKIPPED_BYTES`]).
    async fn read_range(
        &self,
        stream: &StreamId,
        request: ReadRequest,
        version: u64,
    ) -> Result<Vec<RecordedEvent>, StoreError> {
        let Some(to) = request
            .to_sequence
            .filter(|to| *to >= request.from_sequence)
        else {
            return Ok(Vec::new());
        };
        let mut request = request;
        let mut served = Vec::new();
        if request.as_of.is_none() {
            if let Some(mut ahead) = self.bookmarks.take_ahead(stream, request.from_sequence) {
                let rest = ahead.split_off(
                    ahead
                        .iter()
                        .position(|e| e.sequence > to)
                        .unwrap_or(ahead.len()),
                );
                served = ahead;
                if !rest.is_empty() {
                    self.bookmarks.keep_ahead(stream, rest);
                }
                match served.last() {
                    Some(last) if last.sequence >= to => return Ok(served),
                    Some(last) => request.from_sequence = last.sequence + 1,
                    None => {}
                }
            }
        }
        let api = self.api()?;
        let blobs = self.blobs(api, stream);
        let from = request.from_sequence;
        // A reader that continues exactly where it stopped; else where a read stopped shortly
        // before (read-ahead events of it dropped), or what the cached tail knows.
        let exact = self.bookmarks.at(stream, from);
        let bookmark = exact.or_else(|| self.bookmarks.near(stream, from));
        let start = bookmark.map(|b| b.position).or_else(|| {
            let tail = self.cached(stream)?;
            let current = tail.current.as_ref()?;
            let offset = tail.position_after(from.checked_sub(1)?)?;
            (from <= tail.version).then_some(Position {
                segment: current.segment.number,
                offset,
                sequence: from,
            })
        });
        let record_bytes = bookmark
            .map(|b| b.record_bytes)
            .or_else(|| self.bookmarks.record_bytes(stream))
            .unwrap_or(ASSUMED_RECORD_BYTES);
        // Read ahead for a reader that continues where it stopped, or says it will go on.
        let largest_event = exact
            .map(|exact| exact.largest_event)
            .or(request.more_follows.then_some(record_bytes));
        let widened = match largest_event {
            Some(largest_event) if request.as_of.is_none() => {
                let extra = bookmark::read_ahead_events(largest_event);
                // No more than one ranged GET holds (the view asks a quarter more than the
                // records it expects).
                let one_range = client::MAX_READ_RANGE_BYTES * 4 / 5 / record_bytes.max(1);
                let last = to
                    .saturating_add(extra)
                    .min((from - 1).saturating_add(one_range))
                    .min(version)
                    .max(to);
                ReadRequest {
                    to_sequence: Some(last),
                    ..request
                }
            }
            _ => request,
        };
        // What is kept ahead fits in one read's share, so none of it is dropped: the bookmark
        // after the read is where the next read starts.
        let ahead_limit = AheadLimit {
            after: to,
            budget: bookmark::READ_AHEAD_BYTES,
            size_of: bookmark::event_bytes,
        };
        match blobs
            .read_range(&widened, start, record_bytes, Some(ahead_limit))
            .await
        {
            Ok(read) => {
                let mut events = read.events;
                self.bookmarks.remember(
                    stream,
                    Bookmark {
                        position: read.next,
                        record_bytes: read.record_bytes,
                        largest_event: events.iter().map(bookmark::event_bytes).max().unwrap_or(0),
                    },
                );
                let beyond = events
                    .iter()
                    .position(|e| e.sequence > to)
                    .unwrap_or(events.len());
                let ahead = events.split_off(beyond);
                if !ahead.is_empty() {
                    self.bookmarks.keep_ahead(stream, ahead);
                }
                served.extend(events);
                Ok(served)
            }
            Err(error) => {
                self.bookmarks.forget(stream);
                Err(error)
            }
        }
    }

    /// Brings the stream's tail up to date with its blobs (from the cache when it holds one,
    /// else a cold load), keeps it in the cache, and returns what `read` takes from it. A failed
    /// load drops the cached tail.
    async fn with_fresh_tail<T>(
        &self,
        stream: &StreamId,
        read: impl FnOnce(&Tail) -> T,
    ) -> Result<T, StoreError> {
        let api = self.api()?;
        let blobs = self.blobs(api, stream);
        let loaded = match self.cached(stream) {
            Some(mut tail) => blobs.refresh(&mut tail).await.map(|()| tail),
            None => blobs.cold_load().await,
        };
        match loaded {
            Ok(tail) => {
                let value = read(&tail);
                self.remember(stream, tail);
                Ok(value)
            }
            Err(error) => {
                self.forget(stream);
                Err(error)
            }
        }
    }
}

fn validate_container_name(name: &str) -> Result<(), String> {
    let bytes = name.as_bytes();
    let valid = CONTAINER_NAME_LEN.contains(&name.len())
        && bytes
            .iter()
            .all(|&b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && bytes.first().is_some_and(|b| *b != b'-')
        && bytes.last().is_some_and(|b| *b != b'-')
        && !name.contains("--");
    if valid {
        Ok(())
    } else {
        Err(format!(
            "invalid container name {name:?}: 3 to 63 lower-case letters, digits and single \
             hyphens, starting and ending with a letter or digit"
        ))
    }
}

#[async_trait]
impl EventStore for BlobStore {
    async fn append(
        &self,
        stream: &StreamId,
        expected: ExpectedVersion,
        events: Vec<NewEvent>,
    ) -> Result<AppendOutcome, StoreError> {
        check_new_events(&events)?;
        record::check_block_limits(&events)?;
        let api = self.api()?;
        api.ensure_container().await?;
        // Appends without an exact expectation take turns within this process (module
        // `contention`): each starts from the view the previous one left, and only other
        // processes race them.
        let _turn = match expected {
            ExpectedVersion::Any | ExpectedVersion::Exists => Some(self.turns.take(stream).await),
            _ => None,
        };
        let blobs = self.blobs(api, stream);
        let (mut tail, fresh) = match self.cached(stream) {
            Some(tail) => (tail, false),
            None => (blobs.cold_load().await?, true),
        };
        let appender = Appender {
            blobs: &blobs,
            index: self.index()?,
            clock: self.clock,
        };
        let result = appender.append(&mut tail, fresh, expected, &events).await;
        match &result {
            Ok(_)
            | Err(StoreError::WrongExpectedVersion { .. } | StoreError::EventIdReused { .. }) => {
                self.remember(stream, tail)
            }
            Err(_) => self.forget(stream),
        }
        result
    }

    async fn read(
        &self,
        stream: &StreamId,
        request: ReadRequest,
    ) -> Result<StreamSlice, StoreError> {
        let api = self.api()?;
        let blobs = self.blobs(api, stream);
        if let Some(mut tail) = self.cached(stream) {
            let after = request.from_sequence.saturating_sub(1);
            if let Some(offset) = tail.position_after(after) {
                let first = after.min(tail.version) + 1;
                match blobs
                    .advance(&mut tail, offset, first, Some(&request))
                    .await
                {
                    Ok(Some(events)) => {
                        let version = tail.version;
                        self.remember(stream, tail);
                        return Ok(StreamSlice { version, events });
                    }
                    Ok(None) => self.forget(stream),
                    Err(error) => {
                        self.forget(stream);
                        return Err(error);
                    }
                }
            }
        }
        let version = self.with_fresh_tail(stream, |tail| tail.version).await?;
        let events = self
            .read_range(stream, request.bounded_by(version), version)
            .await?;
        Ok(StreamSlice { version, events })
    }

    async fn read_known(
        &self,
        stream: &StreamId,
        request: ReadRequest,
        version: u64,
    ) -> Result<Vec<RecordedEvent>, StoreError> {
        self.read_range(stream, request.bounded_by(version), version)
            .await
    }

    async fn version(&self, stream: &StreamId) -> Result<u64, StoreError> {
        self.with_fresh_tail(stream, |tail| tail.version).await
    }

    async fn list_streams(
        &self,
        entity_type: &EntityType,
        continuation: Option<&str>,
        page_size: usize,
    ) -> Result<StreamPage, StoreError> {
        let api = self.api()?;
        let prefix = naming::entity_prefix(entity_type);
        let page = api
            .list_directories(
                &prefix,
                naming::DELIMITER,
                continuation,
                page_size,
                &entity_type.to_string(),
            )
            .await?;
        // An erased stream's directory may still be there while its erasure runs, next to
        // the listing marker (module `erase`): it is left out.
        let erased: std::collections::HashSet<&str> =
            page.blobs.iter().map(String::as_str).collect();
        Ok(StreamPage {
            instances: page
                .prefixes
                .iter()
                .filter(|listed| !erased.contains(listed.trim_end_matches(naming::SEPARATOR)))
                .filter_map(|listed| naming::instance_of_prefix(&prefix, listed))
                .collect(),
            continuation: page.next_marker,
        })
    }

    async fn erase(&self, stream: &StreamId) -> Result<Erasure, StoreError> {
        let api = self.api()?;
        let blobs = self.blobs(api, stream);
        let outcome = erase::erase(api, self.index()?, &blobs).await;
        self.forget(stream);
        self.bookmarks.forget(stream);
        outcome
    }

    async fn verify(&self, stream: &StreamId) -> Result<Vec<String>, StoreError> {
        verify::verify(self.api()?, self.index()?, stream).await
    }

    async fn is_erased(&self, stream: &StreamId) -> Result<bool, StoreError> {
        let api = self.api()?;
        let blobs = self.blobs(api, stream);
        Ok(blobs.cold_load().await?.erased.is_some())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn container_names() {
        for good in ["streamfold", "abc", "a-b-1", "0ab"] {
            assert!(validate_container_name(good).is_ok(), "{good}");
        }
        for bad in ["ab", "Abc", "-ab", "ab-", "a--b", "a_b", &"a".repeat(64)] {
            assert!(validate_container_name(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn constructors_do_no_io() {
        // A port nothing listens on: building the store must not fail or wait.
        let account = StorageAccount::from_connection_string(
            "UseDevelopmentStorage=true;DevelopmentStorageProxyUri=http://127.0.0.1:1",
        )
        .unwrap();
        let store = BlobStore::new(account)
            .with_container("other")
            .with_max_blocks_per_segment(0);
        assert_eq!(store.container_name(), "other");
        assert_eq!(store.max_blocks_per_segment(), 1);
        assert!(BlobStore::new(StorageAccount::development_storage())
            .with_container("Bad_Name")
            .api()
            .is_err());
    }
}
