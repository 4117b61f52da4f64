//! The Azure Table storage backend: every stream of an app in one table, one stream per
//! partition, every append one entity group transaction.
//!
//! # Layout
//! PartitionKey `{domain}|{entity}|{instance}` (module `keys`); in each partition:
//! - `HEAD`: the stream header, `Version` (`Edm.Int64`, the last sequence number), `Created`
//!   and `LastRecorded` (the recorded time of event `Version`);
//! - `E-{sequence:010}`: one row per event: `EventId`, `EventType`, `Recorded` (the append's
//!   time), the metadata properties and the data as JSON text in `Data`, `Data01`, ... chunks
//!   (module `entity`);
//! - `ID-{event id}`: one row per event (`Sequence`, `FirstSequence`, `LastSequence` of the
//!   append that stored it), so a retried append is recognised and a reused id refused;
//! - `OUTBOX`: only when the outbox is on ([`TableStore::with_outbox`]): the stream's version and
//!   how far its notifications were published, written by the append's transaction (module
//!   `outbox`).
//!
//! # Appends (module `append`)
//! An append is one entity group transaction, all or nothing, and its expectation is checked
//! by the same transaction:
//! - `NoStream` / `Exact(0)`: insert the header, the event rows and the id rows; a 409 means the
//!   stream exists;
//! - `Exact(n)`, n ≥ 1, without reading first: merge the header (`If-Match: *`, new version),
//!   merge row `E-{n}` with no properties (`If-Match: *`: fails if the stream is shorter than n)
//!   and insert `E-{n+1}..` (fails if it is longer). The batch therefore commits only if the
//!   stream is at exactly n, in one request. The header is *merged* rather than replaced so that
//!   `Created` survives without being read;
//! - `Any` / `Exists`: read the header for its version and ETag, then merge it with
//!   `If-Match: <etag>` (or insert it for a new stream under `Any`); a concurrent append makes
//!   the batch fail and the append is retried with jittered backoff until it lands (bounded by
//!   [`crate::storage::contention::CONTENTION_DEADLINE`]).
//!
//! # Recorded times
//! Every append records a time no earlier than its predecessor's (`Recorded` of each event row,
//! and `LastRecorded` of the header, which every append writes with the version). `Any` /
//! `Exists` learn the predecessor's time from the header they read anyway; `Exact(n)` from what
//! this process last learnt of the stream (its own append at `n`, or a header read at version
//! `n`, [`append::StreamEnds`]), else from a header read before the transaction (the one case
//! where an exact append costs two requests). The transaction commits only if the stream is
//! at the version whose time was used, so times never go backwards whatever the writers'
//! clocks. Reads as of a time are prefixes (module `read`).
//!
//! The transaction's `$batch` body is written by us (module `batch_request`) and its answer read
//! by us (module `batch_answer`); inserts ask storage not to echo the rows in the answer
//! (`Prefer: return-no-content`); only each operation's status is read.
//!
//! A failed batch is explained afterwards with reads (event-id rows, then the header), so the
//! successful path stays one request. One operation per transaction is reserved for the
//! notification outbox row, which fixes [`MAX_EVENTS_PER_APPEND`] at 48.
//!
//! If the transport retries a transaction whose first answer was lost and which had been
//! applied, the retry is rolled back (its rows exist) and the event-id rows identify it: the
//! caller gets the append's outcome with `duplicate = true`, and the events are stored once.
//! `Recorded` is the appending process's clock (raised to the predecessor's time where that
//! clock is behind), so `as_of` reads are as exact as the writers' clocks.
//!
//! # Reads (module `read`)
//! RowKey range queries within the partition (1,000 entities a page, continuation followed),
//! plus a point read of the header for the version; both run concurrently.
//!
//! # Erasure (module `erase`)
//! Tombstone first: the header is deleted and `E-0000000001` replaced by a row holding only
//! the erased version, in one transaction, which every later append fails on; then the
//! other rows of the partition are deleted. Resumable; an erased stream reads as version 0.
//!
//! # Failure
//! Every request has bounded timeouts and retries (see [`crate::storage::connection`]); an
//! outage gives `Unavailable` within seconds, never a hang.

mod append;
mod append_rows;
mod batch_answer;
mod batch_request;
pub(in crate::storage) mod client;
mod dead_letters;
mod digits;
pub(in crate::storage) mod entity;
mod erase;
mod event_row;
mod json_members;
pub(in crate::storage) mod keys;
mod operation;
mod outbox;
mod read;
mod read_models;
mod snapshot;
mod verify;

use std::sync::Arc;

use async_trait::async_trait;

use crate::storage::connection::StorageAccount;
use crate::stream::StreamTurns;
use crate::stream::{
    AppendOutcome, Clock, Erasure, EventStore, ExpectedVersion, NewEvent, ReadRequest,
    RecordedEvent, StoreError, StreamId, StreamPage, StreamSlice,
};
use append::{Appender, StreamEnds};
use client::TableApi;

pub use append::{MAX_EVENTS_PER_APPEND, MAX_REMEMBERED_STREAMS, MAX_TRANSACTION_BYTES};
pub use dead_letters::{TableDeadLetters, DEAD_LETTER_TABLE};
pub use entity::{MAX_ENTITY_BYTES, MAX_STRING_PROPERTY_UTF16};
pub use erase::{tombstone_row_key, ERASED_AT, ERASED_VERSION};
pub use keys::MAX_SEQUENCE;

/// Runs one transaction through this backend's own `$batch` encoder and answer parser (the
/// `inserts`, then each merge with `If-Match: *`), for tests that compare what it stores and
/// what storage answers with `azure_data_tables` (`crate::testing::azure`). The statuses of
/// the answer, in order.
#[cfg(any(test, feature = "testing"))]
pub(crate) async fn own_transaction(
    account: &StorageAccount,
    table_name: &str,
    partition_key: &str,
    inserts: Vec<entity::Properties>,
    merges: Vec<(String, entity::Properties)>,
) -> Result<Vec<u16>, StoreError> {
    let api = table_api(account, table_name).map_err(StoreError::Misconfigured)?;
    api.ensure_table().await?;
    let operations = inserts
        .into_iter()
        .map(client::Operation::Insert)
        .chain(
            merges
                .into_iter()
                .map(|(row_key, properties)| client::Operation::Merge {
                    row_key,
                    properties,
                    if_match: azure_data_tables::prelude::IfMatchCondition::Any,
                }),
        )
        .collect::<Vec<_>>();
    api.transaction_statuses(partition_key, &operations, "test")
        .await
}

pub use outbox::{OUTBOX_NOTIFIED, OUTBOX_PENDING, OUTBOX_ROW_KEY, OUTBOX_VERSION};
pub use read::AS_OF_QUERY_MARGIN;
pub use read_models::{TableReadModelStore, DEFAULT_READ_MODEL_TABLE};
pub use snapshot::{TableSnapshotStore, DEFAULT_SNAPSHOT_TABLE};
#[doc(hidden)]
pub use verify::gap as verify_gap;

/// The decoders of this backend's rows and keys, for the fuzz targets (`crate::fuzzing`); not
/// part of the API.
#[cfg(feature = "fuzzing")]
pub(crate) mod fuzz_access {
    pub(crate) use super::append_rows::encode_event;
    pub(crate) use super::entity::{
        decode_event_id_row, decode_header_version, get_json_text, with_keys,
    };
    pub(crate) use super::event_row::EventRow;
    pub(crate) use super::keys::{
        event_row_key, odata_string, parse_event_id_row_key, parse_event_row_key, partition_key,
        stream_prefix, stream_prefix_end,
    };
}

/// The table that holds the streams unless another is chosen.
pub const DEFAULT_TABLE_NAME: &str = "streamfold";
/// Table names: 3 to 63 ASCII letters and digits, starting with a letter.
const TABLE_NAME_LEN: std::ops::RangeInclusive<usize> = 3..=63;
/// A name the service reserves.
const RESERVED_TABLE_NAME: &str = "tables";

/// Event streams in one Azure Table. Cheap to clone; clones share the table client and the
/// "table created" state.
#[derive(Clone)]
pub struct TableStore {
    account: StorageAccount,
    table_name: String,
    /// The table client, or why none could be built (reported by every operation).
    api: Arc<Result<TableApi, String>>,
    /// Whether every append also marks the stream's notifications pending (module `outbox`).
    outbox: bool,
    /// What this process last learnt of each stream's end (version and last recorded time).
    ends: Arc<StreamEnds>,
    /// Where appends take their time from.
    clock: Clock,
    /// The turns of this process's appends without an exact expectation, per stream.
    turns: Arc<StreamTurns>,
}

impl std::fmt::Debug for TableStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TableStore")
            .field("account", &self.account)
            .field("table_name", &self.table_name)
            .field("outbox", &self.outbox)
            .finish()
    }
}

impl TableStore {
    /// A store in the table [`DEFAULT_TABLE_NAME`] of `account`. No I/O: the table is created
    /// on first use.
    pub fn new(account: StorageAccount) -> Self {
        Self::build(account, DEFAULT_TABLE_NAME.to_owned())
    }

    /// The same account, another table (tests use one table each). No I/O.
    pub fn with_table_name(self, table_name: impl Into<String>) -> Self {
        let (outbox, clock) = (self.outbox, self.clock);
        let mut store = Self::build(self.account, table_name.into()).with_outbox(outbox);
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

    /// Turns the notification outbox on or off (off by default). When on, every append also
    /// writes the stream's outbox row in its transaction (see module `outbox`), still one
    /// request; when off, no outbox row is written.
    pub fn with_outbox(mut self, enabled: bool) -> Self {
        self.outbox = enabled;
        self
    }

    /// Whether appends record pending notifications.
    pub fn outbox_enabled(&self) -> bool {
        self.outbox
    }

    pub fn table_name(&self) -> &str {
        &self.table_name
    }

    pub fn account(&self) -> &StorageAccount {
        &self.account
    }

    /// The size, as Table storage counts it, of the entity that would store `event` in
    /// `stream`; the event can be appended only if this is at most [`MAX_ENTITY_BYTES`].
    pub fn event_entity_size(stream: &StreamId, event: &NewEvent) -> usize {
        entity::event_entity_size(&keys::partition_key(stream), event)
    }

    fn build(account: StorageAccount, table_name: String) -> Self {
        let api = table_api(&account, &table_name);
        Self {
            account,
            table_name,
            api: Arc::new(api),
            outbox: false,
            ends: Arc::new(StreamEnds::default()),
            clock: Clock::default(),
            turns: Arc::new(StreamTurns::new()),
        }
    }

    fn api(&self) -> Result<&TableApi, StoreError> {
        self.api
            .as_ref()
            .as_ref()
            .map_err(|reason| StoreError::Misconfigured(reason.clone()))
    }
}

/// The client of table `table_name` of `account` (with the options every table client of the
/// crate uses), or why none can be built. No I/O.
pub(crate) fn table_api(account: &StorageAccount, table_name: &str) -> Result<TableApi, String> {
    validate_table_name(table_name)?;
    let options = account.client_options().map_err(|e| e.to_string())?;
    TableApi::new(account, table_name, options)
}

fn validate_table_name(name: &str) -> Result<(), String> {
    let valid = TABLE_NAME_LEN.contains(&name.len())
        && name.starts_with(|c: char| c.is_ascii_alphabetic())
        && name.chars().all(|c| c.is_ascii_alphanumeric())
        && !name.eq_ignore_ascii_case(RESERVED_TABLE_NAME);
    if valid {
        Ok(())
    } else {
        Err(format!(
            "invalid table name {name:?}: 3 to 63 ASCII letters and digits, starting with a letter"
        ))
    }
}

#[async_trait]
impl EventStore for TableStore {
    async fn append(
        &self,
        stream: &StreamId,
        expected: ExpectedVersion,
        events: Vec<NewEvent>,
    ) -> Result<AppendOutcome, StoreError> {
        // Appends without an exact expectation take turns within this process (module
        // `contention`): only other processes race them.
        let _turn = match expected {
            ExpectedVersion::Any | ExpectedVersion::Exists => Some(self.turns.take(stream).await),
            _ => None,
        };
        let appender = Appender {
            api: self.api()?,
            ends: &self.ends,
            clock: self.clock,
            outbox: self.outbox,
        };
        appender.append(stream, expected, events).await
    }

    async fn read(
        &self,
        stream: &StreamId,
        request: ReadRequest,
    ) -> Result<StreamSlice, StoreError> {
        read::read(self.api()?, &self.ends, stream, request).await
    }

    async fn version(&self, stream: &StreamId) -> Result<u64, StoreError> {
        read::version(self.api()?, &self.ends, stream).await
    }

    async fn read_known(
        &self,
        stream: &StreamId,
        request: ReadRequest,
        version: u64,
    ) -> Result<Vec<RecordedEvent>, StoreError> {
        read::read_known(self.api()?, stream, request, version).await
    }

    async fn read_stored(
        &self,
        stream: &StreamId,
        request: ReadRequest,
    ) -> Result<Vec<RecordedEvent>, StoreError> {
        read::read_stored(self.api()?, &self.ends, stream, request).await
    }

    async fn list_streams(
        &self,
        entity_type: &crate::stream::EntityType,
        continuation: Option<&str>,
        page_size: usize,
    ) -> Result<StreamPage, StoreError> {
        read::list_streams(self.api()?, entity_type, continuation, page_size).await
    }

    async fn erase(&self, stream: &StreamId) -> Result<Erasure, StoreError> {
        let outcome = erase::erase(self.api()?, stream).await;
        self.ends.forget(stream);
        outcome
    }

    async fn verify(&self, stream: &StreamId) -> Result<Vec<String>, StoreError> {
        verify::verify(self.api()?, stream).await
    }

    async fn is_erased(&self, stream: &StreamId) -> Result<bool, StoreError> {
        let api = self.api()?;
        api.ensure_table().await?;
        let partition_key = keys::partition_key(stream);
        let what = stream.to_string();
        if append::read_header(api, &partition_key, &what)
            .await?
            .is_some()
        {
            return Ok(false);
        }
        Ok(erase::tombstone(api, &partition_key, &what)
            .await?
            .is_some())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits() {
        assert_eq!(MAX_EVENTS_PER_APPEND, 48);
    }

    #[test]
    fn table_names() {
        for good in ["streamfold", "abc", "T1x"] {
            assert!(validate_table_name(good).is_ok(), "{good}");
        }
        for bad in ["ab", "1abc", "a-b", "tables", &"a".repeat(64)] {
            assert!(validate_table_name(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn constructors_do_no_io() {
        // A port nothing listens on: building the store must not fail or wait.
        let account = StorageAccount::from_connection_string(
            "UseDevelopmentStorage=true;DevelopmentStorageProxyUri=http://127.0.0.1:1",
        )
        .unwrap();
        let store = TableStore::new(account).with_table_name("other");
        assert_eq!(store.table_name(), "other");
    }
}
