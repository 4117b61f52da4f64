//! Recognising a retried append on Append Blobs however much was appended since: an index of
//! every stored event id, kept beside the blobs, that a lookup trusts only as far as it says it
//! is complete, and what one process knows of a stream's ids.
//!
//! # The index
//! A Table in the same storage account ([`DEFAULT_ID_INDEX_TABLE`]), one partition per stream:
//! PartitionKey `{container}|{domain}|{entity}|{instance}`, and in it
//! - `ID-{event id}`: `Sequence`, `FirstSequence`, `LastSequence` (the event and the append
//!   that stored it), the same rows the Table backend writes;
//! - `HEAD`, the *watermark*: `Version` = W, `Segment` and `Offset` = where event W + 1 starts.
//!   Every event 1..=W has its id row;
//! - `PRINTS`, for streams of at most [`FULL_ID_SET_MAX_EVENTS`] events: `Version` = P,
//!   `Segment` and `Offset` = where event P + 1 starts, and `Ids`, the 32-bit fingerprints of
//!   the ids of events 1..=P (`Edm.Binary`, 4 bytes each, little-endian, sorted), written with
//!   the rows by an indexer that knows every id of the stream.
//!
//! # Atomicity
//! A block and an index row cannot be written in one operation, so the block is the truth and
//! the index only a lookup accelerator that may lag behind it:
//! - rows are written only for events read from the blobs or whose block this process saw
//!   appended, so a row is never wrong; rows are upserted, so writers that index the same
//!   events concurrently write the same values;
//! - the watermark is written in the same entity group transaction as (or after) the rows up to
//!   it, starting from a watermark that was true when read, so `HEAD` = W always implies that
//!   rows 1..=W exist. Two indexers may race and leave the lower of their watermarks: a lower
//!   watermark is still true, only less useful;
//! - a lookup reads the rows of the append's ids and the watermark with one query, then takes
//!   the events after the watermark from the blobs (what this process already read of the
//!   stream's end, or a scan from the watermark's position). A writer that died between its
//!   block and its rows leaves its events after the watermark, where every lookup reads them,
//!   until an indexer writes them (whoever appends next after more than
//!   [`INDEX_INTERVAL_EVENTS`] unindexed events);
//! - the answer is therefore always complete: rows for events up to the watermark, the blobs
//!   after it.
//!
//! # Cost
//! An append whose expectation and ids this process can vouch for costs no lookup: a process
//! that has seen every id of a stream (it created it, or read the `PRINTS` row of a stream of
//! at most [`FULL_ID_SET_MAX_EVENTS`] events once, one point read, and the events after it from
//! the blobs) keeps a compact fingerprint of each ([`IdKnowledge`]), and a new id matches none.
//! A match or a larger stream costs one index query (per 13 ids). Indexing costs one entity group transaction per 99 new
//! events, written after at least [`INDEX_INTERVAL_EVENTS`] of them (or when the segment's
//! metadata hint is rewritten), by the writer that appended last.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;

use base64::Engine as _;
use futures::future::try_join_all;
use uuid::Uuid;

use super::record::AppendSpan;
use crate::storage::table::client::{BatchOutcome, Operation, TableApi};
use crate::storage::table::{entity, keys};
use crate::stream::{StoreError, StoredEventId, StreamId};

/// The table that holds the id index of every container of an account, unless another is
/// chosen.
pub const DEFAULT_ID_INDEX_TABLE: &str = "streamfoldblobids";
/// Unindexed events after which the writer that appends next writes their id rows.
pub const INDEX_INTERVAL_EVENTS: u64 = 128;
/// Largest stream whose whole index one process loads to vouch for new ids without a lookup.
pub const FULL_ID_SET_MAX_EVENTS: u64 = 8_192;
/// Most events after the watermark one process keeps (ids and sequences); past this the oldest
/// are forgotten and its next lookup reads them again.
pub const MAX_TRACKED_EVENTS: usize = 65_536;
/// RowKey of the watermark row.
pub const WATERMARK_ROW_KEY: &str = keys::HEADER_ROW_KEY;
/// RowKey of the fingerprints row.
pub const PRINTS_ROW_KEY: &str = "PRINTS";
/// The fingerprints of the `PRINTS` row.
pub const IDS: &str = "Ids";
/// The type annotation of a binary property.
const EDM_BINARY: &str = "Edm.Binary";
/// Bytes of one fingerprint.
const PRINT_BYTES: usize = 4;
/// Most fingerprints one `PRINTS` row holds (a binary property is at most 64 KiB).
const MAX_PRINTS: usize = 64 * 1024 / PRINT_BYTES;
/// The watermark's segment number.
pub const SEGMENT: &str = "Segment";
/// The watermark's offset in that segment.
pub const OFFSET: &str = "Offset";
/// Id rows per entity group transaction (the watermark makes 100 operations).
const ROWS_PER_BATCH: usize = 99;
/// Most transactions one append writes when it indexes (a stream written before the index
/// existed is indexed over several appends).
const MAX_BATCHES_PER_APPEND: usize = 64;
/// `RowKey eq` comparisons per lookup query: the service allows 15 comparisons, one is the
/// PartitionKey and one the watermark.
const IDS_PER_QUERY: usize = 13;

/// Where an event is in the blobs and which append stored it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IdEntry {
    pub event_id: Uuid,
    pub sequence: u64,
    pub append: AppendSpan,
    /// Where the next event starts: segment and offset in it.
    pub next: (u32, u64),
}

/// How far the index is complete: every event `1..=version` has its row, and event
/// `version + 1` starts at `offset` of segment `segment`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Watermark {
    pub version: u64,
    pub segment: u32,
    pub offset: u64,
}

/// What one process knows of the ids of a stream, as part of its view of the stream's end.
#[derive(Debug, Clone, Default)]
pub struct IdKnowledge {
    /// The last events seen, contiguous and ending at the view's version.
    recent: VecDeque<IdEntry>,
    /// A watermark of the index known to be true (the index may be further).
    indexed: Option<Watermark>,
    /// A fingerprint of every id of events `1..=version`, when this process knows them all.
    all: Option<Arc<Fingerprints>>,
}

/// The ids of a stream, 32 bits of each, sorted: a match may be a coincidence (then a lookup
/// tells), a miss is certain.
#[derive(Debug, Clone, Default)]
pub struct Fingerprints(Vec<u32>);

impl Fingerprints {
    fn of(id: &Uuid) -> u32 {
        let bits = id.as_u128();
        ((bits >> 96) as u32) ^ (bits as u32)
    }

    fn insert(&mut self, id: &Uuid) {
        let print = Self::of(id);
        if let Err(at) = self.0.binary_search(&print) {
            self.0.insert(at, print);
        }
    }

    fn may_hold(&self, id: &Uuid) -> bool {
        self.0.binary_search(&Self::of(id)).is_ok()
    }

    /// The fingerprints as stored: 4 bytes each, little-endian, sorted.
    fn to_bytes(&self) -> Vec<u8> {
        self.0.iter().flat_map(|p| p.to_le_bytes()).collect()
    }

    fn from_bytes(bytes: &[u8]) -> Option<Self> {
        if bytes.len() % PRINT_BYTES != 0 {
            return None;
        }
        let mut prints: Vec<u32> = bytes
            .chunks_exact(PRINT_BYTES)
            .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .collect();
        prints.sort_unstable();
        prints.dedup();
        Some(Self(prints))
    }
}

impl IdKnowledge {
    /// The knowledge of a stream known to have no event.
    pub fn of_empty_stream() -> Self {
        Self {
            recent: VecDeque::new(),
            indexed: Some(Watermark::default()),
            all: Some(Arc::new(Fingerprints::default())),
        }
    }

    /// Adds the next event of the stream (the caller checks that it is the next one).
    pub fn push(&mut self, entry: IdEntry) {
        if self
            .recent
            .back()
            .is_some_and(|last| last.sequence + 1 != entry.sequence)
        {
            // Not contiguous: only what follows is known now.
            self.recent.clear();
        }
        if let Some(all) = self.all.as_mut() {
            if (entry.sequence) > FULL_ID_SET_MAX_EVENTS {
                self.all = None;
            } else {
                Arc::make_mut(all).insert(&entry.event_id);
            }
        }
        self.recent.push_back(entry);
        self.trim_indexed();
        while self.recent.len() > MAX_TRACKED_EVENTS {
            self.recent.pop_front();
        }
    }

    /// Whether none of `ids` was stored before, as far as this process can vouch without a
    /// lookup.
    pub fn proves_new(&self, ids: &[Uuid]) -> bool {
        self.all
            .as_ref()
            .is_some_and(|all| ids.iter().all(|id| !all.may_hold(id)))
    }

    /// Where each of the recent events is, by id.
    pub fn recent_by_id(&self) -> HashMap<Uuid, StoredEventId> {
        self.recent
            .iter()
            .map(|e| {
                (
                    e.event_id,
                    StoredEventId {
                        sequence: e.sequence,
                        append: (e.append.first, e.append.last),
                    },
                )
            })
            .collect()
    }

    /// The first recent event's sequence, if any.
    pub fn first_recent(&self) -> Option<u64> {
        self.recent.front().map(|e| e.sequence)
    }

    /// Whether the recent events hold every event after `watermark` up to `version`.
    pub fn covers_after(&self, watermark: u64, version: u64) -> bool {
        watermark >= version
            || (self
                .first_recent()
                .is_some_and(|first| first <= watermark + 1)
                && self
                    .recent
                    .back()
                    .is_some_and(|last| last.sequence == version))
    }

    /// Puts `older` (contiguous, ending right before the first recent event, or at the view's
    /// version when there is none) before the recent events, if they then stay within
    /// [`MAX_TRACKED_EVENTS`].
    pub fn prepend(&mut self, older: Vec<IdEntry>) {
        let fits = match (older.last(), self.recent.front()) {
            (Some(last), Some(first)) => last.sequence + 1 == first.sequence,
            (Some(_), None) => true,
            (None, _) => false,
        };
        if !fits || older.len().saturating_add(self.recent.len()) > MAX_TRACKED_EVENTS {
            return;
        }
        for entry in older.into_iter().rev() {
            self.recent.push_front(entry);
        }
    }

    /// Forgets the recent events.
    pub fn clear_recent(&mut self) {
        self.recent.clear();
    }

    /// The watermark known to be true.
    pub fn indexed(&self) -> Option<Watermark> {
        self.indexed
    }

    /// Learns that the index is complete up to `watermark` (keeps the further one known).
    pub fn note_indexed(&mut self, watermark: Watermark) {
        if self
            .indexed
            .is_none_or(|known| known.version < watermark.version)
        {
            self.indexed = Some(watermark);
        }
    }

    /// Forgets recent events the index holds (up to the watermark known).
    pub fn trim_indexed(&mut self) {
        if let Some(indexed) = self.indexed {
            while self
                .recent
                .front()
                .is_some_and(|first| first.sequence <= indexed.version)
            {
                self.recent.pop_front();
            }
        }
    }

    /// Vouches for every id of events `1..=version`: `prints` (of events `1..=P`) and `ids`
    /// (every event after P) must hold every one of them.
    pub fn know_all<'a>(
        &mut self,
        prints: Fingerprints,
        ids: impl IntoIterator<Item = &'a Uuid>,
        version: u64,
    ) {
        if version > FULL_ID_SET_MAX_EVENTS {
            return;
        }
        let mut all = prints;
        for id in ids {
            all.insert(id);
        }
        self.all = Some(Arc::new(all));
    }

    /// The fingerprints of every id of events `1..=version`, when this process knows them.
    pub fn all_prints(&self) -> Option<&Fingerprints> {
        self.all.as_deref()
    }

    /// Whether the recent events end at `version` (else nothing after the watermark is known).
    pub fn ends_at(&self, version: u64) -> bool {
        self.recent
            .back()
            .is_some_and(|last| last.sequence == version)
    }

    /// Whether this process vouches for every id of the stream.
    pub fn knows_all(&self) -> bool {
        self.all.is_some()
    }

    /// The recent events after `watermark`, at most `limit` of them.
    pub fn unindexed(&self, watermark: u64, limit: usize) -> Vec<IdEntry> {
        self.recent
            .iter()
            .filter(|e| e.sequence > watermark)
            .take(limit)
            .copied()
            .collect()
    }
}

/// What a lookup found: the rows of the ids asked for, and the watermark.
#[derive(Debug, Default)]
pub struct Found {
    pub rows: HashMap<Uuid, StoredEventId>,
    pub watermark: Watermark,
}

/// A `PRINTS` row: the fingerprints of every id of events `1..=watermark.version`.
#[derive(Debug)]
pub struct Prints {
    pub watermark: Watermark,
    pub prints: Fingerprints,
}

/// The id index of one container.
pub struct IdIndex {
    api: TableApi,
    container: String,
}

impl IdIndex {
    pub fn new(api: TableApi, container: &str) -> Self {
        Self {
            api,
            container: container.to_owned(),
        }
    }

    /// Every id row of `stream` and its watermark (for `streamfold verify`).
    pub async fn all_rows(&self, stream: &StreamId) -> Result<Found, StoreError> {
        self.api.ensure_table().await?;
        let filter = format!(
            "PartitionKey eq {} and RowKey ne {}",
            keys::odata_string(&self.partition_key(stream)),
            keys::odata_string(PRINTS_ROW_KEY),
        );
        let rows = self.api.query(filter, None, &stream.to_string()).await?;
        self.decode(stream, rows)
    }

    /// Deletes every row of `stream` (its stream was erased).
    pub async fn erase(&self, stream: &StreamId) -> Result<(), StoreError> {
        self.api.ensure_table().await?;
        self.api
            .delete_partition_rows(&self.partition_key(stream), None, &stream.to_string())
            .await
            .map(|_| ())
    }

    fn partition_key(&self, stream: &StreamId) -> String {
        format!(
            "{}{}{}",
            self.container,
            keys::KEY_SEPARATOR,
            keys::partition_key(stream)
        )
    }

    fn corrupt(stream: &StreamId, detail: String) -> StoreError {
        StoreError::Corrupt {
            stream: stream.to_string(),
            detail: format!("event-id index: {detail}"),
        }
    }

    /// The rows of `ids` and the watermark.
    pub async fn lookup(&self, stream: &StreamId, ids: &[Uuid]) -> Result<Found, StoreError> {
        self.api.ensure_table().await?;
        let partition_key = self.partition_key(stream);
        let what = stream.to_string();
        let queries = ids.chunks(IDS_PER_QUERY).map(|chunk| {
            let rows: String = chunk
                .iter()
                .map(|id| {
                    format!(
                        " or RowKey eq {}",
                        keys::odata_string(&keys::event_id_row_key(id))
                    )
                })
                .collect();
            let filter = format!(
                "PartitionKey eq {} and (RowKey eq {}{rows})",
                keys::odata_string(&partition_key),
                keys::odata_string(WATERMARK_ROW_KEY),
            );
            self.api.query(filter, None, &what)
        });
        let entities = try_join_all(queries).await?.into_iter().flatten();
        self.decode(stream, entities)
    }

    /// The stream's `PRINTS` row, if it has one (one point read).
    pub async fn load_prints(&self, stream: &StreamId) -> Result<Option<Prints>, StoreError> {
        self.api.ensure_table().await?;
        let Some(row) = self
            .api
            .get(
                &self.partition_key(stream),
                PRINTS_ROW_KEY,
                &stream.to_string(),
            )
            .await?
        else {
            return Ok(None);
        };
        let watermark = decode_watermark(&row.entity).map_err(|d| Self::corrupt(stream, d))?;
        let text = entity::get_str(&row.entity, IDS).map_err(|d| Self::corrupt(stream, d))?;
        let prints = base64::engine::general_purpose::STANDARD
            .decode(text)
            .ok()
            .and_then(|bytes| Fingerprints::from_bytes(&bytes))
            .ok_or_else(|| {
                Self::corrupt(
                    stream,
                    format!("{PRINTS_ROW_KEY}: {IDS} is not a list of fingerprints"),
                )
            })?;
        Ok(Some(Prints { watermark, prints }))
    }

    fn decode(
        &self,
        stream: &StreamId,
        entities: impl IntoIterator<Item = entity::Properties>,
    ) -> Result<Found, StoreError> {
        let mut found = Found::default();
        for row in entities {
            let row_key = entity::get_str(&row, entity::ROW_KEY)
                .map_err(|detail| Self::corrupt(stream, detail))?;
            if row_key == WATERMARK_ROW_KEY {
                found.watermark = decode_watermark(&row).map_err(|d| Self::corrupt(stream, d))?;
            } else {
                let (id, stored) = entity::decode_event_id_row(&row)
                    .map_err(|detail| Self::corrupt(stream, detail))?;
                found.rows.insert(id, stored);
            }
        }
        Ok(found)
    }

    /// Writes the rows of `entries` (contiguous, the first right after a true watermark) and
    /// moves the watermark along with each transaction; at most [`MAX_BATCHES_PER_APPEND`]
    /// transactions. `prints`, the fingerprints of every id up to the last entry, are written
    /// with the last transaction when it writes the last entry. Returns the last watermark
    /// written.
    pub async fn write(
        &self,
        stream: &StreamId,
        entries: &[IdEntry],
        prints: Option<&Fingerprints>,
    ) -> Result<Option<Watermark>, StoreError> {
        self.api.ensure_table().await?;
        let partition_key = self.partition_key(stream);
        let what = stream.to_string();
        let mut written = None;
        let batches = entries.chunks(ROWS_PER_BATCH).take(MAX_BATCHES_PER_APPEND);
        let last_entry = entries.last().map(|e| e.sequence);
        for batch in batches {
            let Some(last) = batch.last() else {
                break;
            };
            let mut operations: Vec<Operation> = batch
                .iter()
                .map(|e| Operation::Upsert {
                    row_key: keys::event_id_row_key(&e.event_id),
                    properties: entity::event_id_properties(
                        e.sequence,
                        e.append.first,
                        e.append.last,
                    ),
                })
                .collect();
            let watermark = Watermark {
                version: last.sequence,
                segment: last.next.0,
                offset: last.next.1,
            };
            operations.push(Operation::Upsert {
                row_key: WATERMARK_ROW_KEY.to_owned(),
                properties: watermark_properties(watermark),
            });
            match prints {
                Some(prints)
                    if Some(last.sequence) == last_entry && prints.0.len() <= MAX_PRINTS =>
                {
                    let mut properties = watermark_properties(watermark);
                    properties.insert(
                        format!("{IDS}{}", entity::ODATA_TYPE_SUFFIX),
                        serde_json::Value::String(EDM_BINARY.to_owned()),
                    );
                    properties.insert(
                        IDS.to_owned(),
                        serde_json::Value::String(
                            base64::engine::general_purpose::STANDARD.encode(prints.to_bytes()),
                        ),
                    );
                    // The 101st operation would be one too many: the rows go in their own
                    // transaction first when the batch is full.
                    if operations.len() >= 100 {
                        let rows_only: Vec<Operation> =
                            operations.drain(..operations.len() - 1).collect();
                        self.commit(&partition_key, rows_only, &what).await?;
                    }
                    operations.push(Operation::Upsert {
                        row_key: PRINTS_ROW_KEY.to_owned(),
                        properties,
                    });
                }
                _ => {}
            }
            self.commit(&partition_key, operations, &what).await?;
            written = Some(watermark);
        }
        Ok(written)
    }

    async fn commit(
        &self,
        partition_key: &str,
        operations: Vec<Operation<'_>>,
        what: &str,
    ) -> Result<(), StoreError> {
        match self
            .api
            .transaction(partition_key, operations, what)
            .await?
        {
            BatchOutcome::Committed => Ok(()),
            BatchOutcome::RolledBack { status } => Err(StoreError::Misconfigured(format!(
                "storage refused event-id rows of {what} with HTTP {status}"
            ))),
        }
    }
}

fn watermark_properties(watermark: Watermark) -> entity::Properties {
    let mut properties = entity::Properties::new();
    entity::set_int64(&mut properties, entity::VERSION, watermark.version);
    entity::set_int64(&mut properties, SEGMENT, u64::from(watermark.segment));
    entity::set_int64(&mut properties, OFFSET, watermark.offset);
    properties
}

fn decode_watermark(row: &entity::Properties) -> Result<Watermark, String> {
    let segment = entity::get_u64(row, SEGMENT)?;
    Ok(Watermark {
        version: entity::get_u64(row, entity::VERSION)?,
        segment: u32::try_from(segment)
            .map_err(|_| format!("watermark segment {segment} is not a segment number"))?,
        offset: entity::get_u64(row, OFFSET)?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(sequence: u64, span: (u64, u64)) -> IdEntry {
        IdEntry {
            event_id: Uuid::new_v4(),
            sequence,
            append: AppendSpan {
                first: span.0,
                last: span.1,
            },
            next: (0, sequence * 10),
        }
    }

    #[test]
    fn fingerprints_never_miss_a_stored_id() {
        let mut known = IdKnowledge::of_empty_stream();
        let stored: Vec<IdEntry> = (1..=500).map(|s| entry(s, (s, s))).collect();
        for e in &stored {
            known.push(*e);
        }
        for e in &stored {
            assert!(!known.proves_new(&[e.event_id]));
        }
        let fresh: Vec<Uuid> = (0..1_000).map(|_| Uuid::new_v4()).collect();
        let vouched = fresh.iter().filter(|id| known.proves_new(&[**id])).count();
        assert!(vouched > 990, "{vouched}");
        assert!(!IdKnowledge::default().proves_new(&fresh[..1]));
        // Stored and read back, they vouch for the same ids.
        let all = known.all_prints().unwrap();
        let back = Fingerprints::from_bytes(&all.to_bytes()).unwrap();
        assert_eq!(back.0, all.0);
        assert!(Fingerprints::from_bytes(&[1, 2, 3]).is_none());
    }

    #[test]
    fn recent_events_cover_what_follows_the_watermark() {
        let mut known = IdKnowledge::default();
        for s in 5..=9 {
            known.push(entry(s, (s, s)));
        }
        assert!(known.covers_after(4, 9) && known.covers_after(7, 9) && known.covers_after(9, 9));
        assert!(!known.covers_after(3, 9));
        known.prepend(vec![entry(3, (3, 4)), entry(4, (3, 4))]);
        assert!(known.covers_after(2, 9));
        // Not contiguous: ignored.
        known.prepend(vec![entry(1, (1, 1))]);
        assert_eq!(known.first_recent(), Some(3));
        known.note_indexed(Watermark {
            version: 6,
            segment: 0,
            offset: 60,
        });
        known.trim_indexed();
        assert_eq!(known.first_recent(), Some(7));
        assert_eq!(known.unindexed(6, 2).len(), 2);
        // A gap forgets what came before it.
        known.push(entry(11, (11, 11)));
        assert_eq!(known.first_recent(), Some(11));
    }
}
