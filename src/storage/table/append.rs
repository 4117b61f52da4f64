//! Appends: one entity group transaction per attempt, with the expectation checked inside it.
//!
//! Guarantees (see the module documentation of [`super`] for the row layout):
//! - everything that can be refused without storage is refused before any I/O: the core
//!   checks, an event too large for one entity, an append over [`MAX_EVENTS_PER_APPEND`] events
//!   or [`MAX_TRANSACTION_BYTES`] bytes. An append is never split over several transactions;
//! - `NoStream`/`Exact(0)` cost exactly one storage request when they succeed, and so does
//!   `Exact(n)` when this process knows the recorded time of event `n` ([`StreamEnds`]: it
//!   appended it, or read the stream's header at version `n`, as a command does before it
//!   appends); otherwise `Exact(n)` reads the header first (its version and that time), as
//!   `Any`/`Exists` always do;
//! - every append records a time no earlier than its predecessor's ([`append_time`]): the
//!   transaction commits only if the stream is at the version whose time it used, and each
//!   attempt takes the time afresh, so a stream's recorded times never go backwards whatever
//!   the writers' clocks;
//! - a rolled-back transaction is explained with reads, and only then, two at once: the
//!   event-id rows (a complete earlier append with these ids → its outcome with
//!   `duplicate = true`; some ids taken → `EventIdReused`) and, in one query, the header and
//!   the tombstone row (`StreamErased` first, else `WrongExpectedVersion` with the actual
//!   version): a refused append costs at most 3 requests, erased stream or not;
//! - conflicts that the expectation allows (a concurrent append under `Any`/`Exists`, or a
//!   stream that reached the expected version meanwhile) are retried, each attempt again a
//!   single atomic transaction, with jittered backoff until
//!   [`crate::storage::contention::CONTENTION_DEADLINE`]: an `Any` append lands however many
//!   writers contend.

use std::collections::HashMap;
use std::sync::Mutex;

use azure_core::Etag;
use azure_data_tables::prelude::IfMatchCondition;
use futures::future::try_join_all;
use time::OffsetDateTime;
use uuid::Uuid;

use super::append_rows::{self, AppendRow, EncodedEvent};
use super::batch_request::OPERATION_FRAMING_BYTES;
use super::client::{BatchOutcome, Operation, TableApi};
use super::entity;
use super::erase::{decode_tombstone, erased_or, tombstone_row_key};
use super::keys;
use crate::storage::contention::Contention;
use crate::stream::{
    append_time, check_new_events, earlier_append, AppendOutcome, Clock, ExpectedVersion, NewEvent,
    StoreError, StoredEventId, StreamId,
};

/// Most operations in one entity group transaction.
pub const MAX_TRANSACTION_OPERATIONS: usize = 100;
/// Largest entity group transaction payload.
pub const MAX_TRANSACTION_BYTES: usize = 4 * 1024 * 1024;
/// The header row: inserted for a new stream, merged (version bump) for an existing one.
pub const HEADER_OPERATIONS: usize = 1;
/// The no-property merge of row `E-{n}` that proves an `Exact(n)` stream has at least n events.
pub const VERSION_CHECK_OPERATIONS: usize = 1;
/// The insert-or-merge of the stream's notification outbox row (module `outbox`), written when
/// the store's outbox is on; always counted, so turning it on does not lower the number of
/// events an append may hold.
pub const RESERVED_OUTBOX_OPERATIONS: usize = 1;
/// Rows written per event: the event row and its event-id row.
pub const ROWS_PER_EVENT: usize = 2;
/// Most events in one append: what one transaction holds after the fixed operations.
pub const MAX_EVENTS_PER_APPEND: usize = (MAX_TRANSACTION_OPERATIONS
    - HEADER_OPERATIONS
    - VERSION_CHECK_OPERATIONS
    - RESERVED_OUTBOX_OPERATIONS)
    / ROWS_PER_EVENT;
/// Streams whose end (version and last recorded time) one store remembers; past this, an
/// arbitrary entry is dropped (its next exact append reads the header first).
pub const MAX_REMEMBERED_STREAMS: usize = 4_096;
/// Bound on the growth of a key when percent-encoded in a URL (`ü` → `%C3%BC`: 2 bytes → 6).
const URL_ENCODING_FACTOR: usize = 3;
/// The service allows at most 15 comparisons in one `$filter`: one for the PartitionKey and
/// this many `RowKey eq` for event ids.
const MAX_IDS_PER_QUERY: usize = 14;
/// Statuses of a rolled-back transaction that mean "the stream is not as this attempt
/// assumed": 404 (header or `E-{n}` missing), 409 (a row exists), 412 (header ETag changed).
const CONFLICT_STATUSES: [u16; 3] = [404, 409, 412];

/// What this process last learnt of each stream's end: a version and the recorded time of the
/// event at it. Events never change, so an entry stays true for that version whatever the
/// stream did since; an exact append at that version needs no read to know its predecessor's
/// time.
#[derive(Debug, Default)]
pub struct StreamEnds {
    ends: Mutex<HashMap<StreamId, (u64, OffsetDateTime)>>,
}

impl StreamEnds {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<StreamId, (u64, OffsetDateTime)>> {
        // Entries are replaced whole, so a panic elsewhere cannot leave one half-written.
        self.ends
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// The recorded time of event `version`, if this process knows it.
    pub fn time_at(&self, stream: &StreamId, version: u64) -> Option<OffsetDateTime> {
        self.lock()
            .get(stream)
            .filter(|(known, _)| *known == version)
            .map(|(_, time)| *time)
    }

    /// Forgets what this process knew of `stream` (it was erased).
    pub fn forget(&self, stream: &StreamId) {
        self.lock().remove(stream);
    }

    /// Remembers that event `version` was recorded at `time` (unless a later version is known).
    pub fn remember(&self, stream: &StreamId, version: u64, time: OffsetDateTime) {
        let mut ends = self.lock();
        match ends.get(stream) {
            Some((known, _)) if *known > version => {}
            Some(_) => {
                ends.insert(stream.clone(), (version, time));
            }
            None => {
                if ends.len() >= MAX_REMEMBERED_STREAMS {
                    if let Some(evicted) = ends.keys().next().cloned() {
                        ends.remove(&evicted);
                    }
                }
                ends.insert(stream.clone(), (version, time));
            }
        }
    }
}

/// The stream header as a point read finds it.
pub struct Header {
    pub version: u64,
    pub etag: Etag,
    /// The recorded time of event `version`; `None` in headers written before they held it.
    pub last_recorded: Option<OffsetDateTime>,
}

/// How the transaction proves the stream's version.
enum Plan {
    /// Insert the header: the stream must not exist.
    Create,
    /// The stream is at `version`; `guard` makes the transaction fail otherwise.
    Extend { version: u64, guard: Guard },
}

enum Guard {
    /// Header merge and `E-{version}` merge with `If-Match: *`, new rows inserted: succeeds
    /// only if `E-{version}` exists and `E-{version+1}` does not.
    Exact,
    /// Header merge with the ETag of a read.
    Etag(Etag),
}

impl Plan {
    fn version(&self) -> u64 {
        match self {
            Self::Create => 0,
            Self::Extend { version, .. } => *version,
        }
    }
}

/// What one store brings to an append.
pub struct Appender<'a> {
    pub api: &'a TableApi,
    pub ends: &'a StreamEnds,
    pub clock: Clock,
    /// Whether the append also marks the stream's notifications pending.
    pub outbox: bool,
}

impl Appender<'_> {
    pub async fn append(
        &self,
        stream: &StreamId,
        expected: ExpectedVersion,
        events: Vec<NewEvent>,
    ) -> Result<AppendOutcome, StoreError> {
        let api = self.api;
        check_new_events(&events)?;
        let too_large = |bytes: usize| StoreError::AppendTooLarge {
            events: events.len(),
            bytes,
            limit: format!(
                "the Table backend writes at most {MAX_EVENTS_PER_APPEND} events and \
                 {MAX_TRANSACTION_BYTES} bytes per append (one entity group transaction)"
            ),
        };
        if events.len() > MAX_EVENTS_PER_APPEND {
            return Err(too_large(events.iter().map(|e| e.data.get().len()).sum()));
        }
        let what = stream.to_string();
        let partition_key = keys::partition_key(stream);
        let mut encoded = events
            .iter()
            .map(|event| append_rows::encode_event(&partition_key, event, self.clock.now()))
            .collect::<Result<Vec<_>, _>>()?;
        let bytes = transaction_bytes(api.table_url_bytes(), &partition_key, &encoded);
        if bytes > MAX_TRANSACTION_BYTES {
            return Err(too_large(bytes));
        }
        api.ensure_table().await?;

        let mut contention = Contention::new();
        loop {
            let (plan, previous) = match expected {
                ExpectedVersion::NoStream | ExpectedVersion::Exact(0) => (Plan::Create, None),
                ExpectedVersion::Exact(version) => {
                    match self.ends.time_at(stream, version) {
                        Some(time) => (
                            Plan::Extend {
                                version,
                                guard: Guard::Exact,
                            },
                            Some(time),
                        ),
                        // The time of event `version` is not known here: the header has it,
                        // and says whether the stream is at that version at all.
                        None => match read_header(api, &partition_key, &what).await? {
                            Some(header) if header.version == version => {
                                let time =
                                    self.header_time(stream, &partition_key, &header).await?;
                                (
                                    Plan::Extend {
                                        version,
                                        guard: Guard::Etag(header.etag),
                                    },
                                    Some(time),
                                )
                            }
                            header => {
                                let actual = header.map_or(0, |h| h.version);
                                return self
                                    .refused(stream, &partition_key, &events, expected, actual)
                                    .await;
                            }
                        },
                    }
                }
                ExpectedVersion::Any | ExpectedVersion::Exists => {
                    match read_header(api, &partition_key, &what).await? {
                        None if expected == ExpectedVersion::Exists => {
                            let refused = wrong_version(stream, expected, 0);
                            return Err(erased_or(api, stream, &partition_key, refused).await);
                        }
                        None => (Plan::Create, None),
                        Some(header) => {
                            let time = self.header_time(stream, &partition_key, &header).await?;
                            (
                                Plan::Extend {
                                    version: header.version,
                                    guard: Guard::Etag(header.etag),
                                },
                                Some(time),
                            )
                        }
                    }
                }
            };
            let first = plan.version().saturating_add(1);
            let Some(last) = plan
                .version()
                .checked_add(events.len() as u64)
                .filter(|last| *last <= keys::MAX_SEQUENCE)
            else {
                // An expected version no stream of this backend can be at is a conflict with
                // the version the stream really has, not an append too large.
                if let ExpectedVersion::Exact(version) = expected {
                    let actual = read_header(api, &partition_key, &what)
                        .await?
                        .map_or(0, |header| header.version);
                    if actual != version {
                        return Err(wrong_version(stream, expected, actual));
                    }
                }
                return Err(StoreError::AppendTooLarge {
                    events: events.len(),
                    bytes,
                    limit: format!("a stream holds at most {} events", keys::MAX_SEQUENCE),
                });
            };
            // Each attempt takes the time afresh: an attempt after a conflict follows other
            // events, and records no earlier than they did.
            let recorded = append_time(self.clock.now(), previous);
            for event in &mut encoded {
                event.set_recorded(recorded);
            }
            let created = matches!(plan, Plan::Create);
            let mut operations = operations(plan, &encoded, recorded);
            if self.outbox {
                operations.push(super::outbox::pending_operation(last));
            }
            match api.transaction(&partition_key, operations, &what).await? {
                BatchOutcome::Committed => {
                    self.ends.remember(stream, last, recorded);
                    return Ok(AppendOutcome {
                        first_sequence: first,
                        version: last,
                        created,
                        duplicate: false,
                        recorded: Some(recorded),
                    });
                }
                BatchOutcome::RolledBack { status } if CONFLICT_STATUSES.contains(&status) => {}
                BatchOutcome::RolledBack { status } => {
                    return Err(StoreError::Misconfigured(format!(
                        "storage refused an append to {what} with HTTP {status}"
                    )))
                }
            }
            // The conflict is explained with at most two concurrent reads: the event ids (a
            // retry of an earlier append?) and, unless the expectation tolerates any version,
            // the stream's end: its header and its tombstone row in one query (an erased stream
            // refuses a creation with 409, and has no header for an extension to merge).
            let tolerant = matches!(expected, ExpectedVersion::Any | ExpectedVersion::Exists);
            let end = async {
                match created || !tolerant {
                    true => read_end(api, &partition_key, &what).await.map(Some),
                    false => Ok(None),
                }
            };
            let (end, earlier) =
                futures::try_join!(end, earlier_outcome(api, stream, &partition_key, &events))?;
            if end.as_ref().is_some_and(|end| end.erased) {
                return Err(StoreError::StreamErased { stream: what });
            }
            if let Some(outcome) = earlier {
                return Ok(outcome);
            }
            if let Some(end) = end.filter(|_| !tolerant) {
                if !expected.is_met_by(end.version) {
                    return Err(wrong_version(stream, expected, end.version));
                }
            }
            if !contention.wait().await {
                return Err(contention.gave_up(&what));
            }
        }
    }

    /// The recorded time of the header's last event: the header's own, or (a header written
    /// before headers held it) read from that event's row. Remembered for the next append.
    async fn header_time(
        &self,
        stream: &StreamId,
        partition_key: &str,
        header: &Header,
    ) -> Result<OffsetDateTime, StoreError> {
        let time = match header.last_recorded {
            Some(time) => time,
            None => event_time(self.api, stream, partition_key, header.version).await?,
        };
        self.ends.remember(stream, header.version, time);
        Ok(time)
    }

    /// The answer to an append found, before writing, not to meet its expectation (the stream
    /// is at `actual`): the earlier append's outcome when these events are a retry of it,
    /// `EventIdReused`, or `WrongExpectedVersion`.
    async fn refused(
        &self,
        stream: &StreamId,
        partition_key: &str,
        events: &[NewEvent],
        expected: ExpectedVersion,
        actual: u64,
    ) -> Result<AppendOutcome, StoreError> {
        match earlier_outcome(self.api, stream, partition_key, events).await? {
            Some(outcome) => Ok(outcome),
            None if actual == 0 => {
                let refused = wrong_version(stream, expected, actual);
                Err(erased_or(self.api, stream, partition_key, refused).await)
            }
            None => Err(wrong_version(stream, expected, actual)),
        }
    }
}

/// The recorded time of event `sequence` (≥ 1), read from its row.
async fn event_time(
    api: &TableApi,
    stream: &StreamId,
    partition_key: &str,
    sequence: u64,
) -> Result<OffsetDateTime, StoreError> {
    let what = stream.to_string();
    let corrupt = |detail: String| StoreError::Corrupt {
        stream: what.clone(),
        detail,
    };
    let row = api
        .get(partition_key, &keys::event_row_key(sequence), &what)
        .await?
        .ok_or_else(|| {
            corrupt(format!(
                "the header says version {sequence}, but event {sequence} is missing"
            ))
        })?;
    entity::get_time(&row.entity, entity::RECORDED).map_err(corrupt)
}

/// The outcome of the earlier append these events repeat, if they do (`EventIdReused` if
/// their ids were stored in another arrangement).
async fn earlier_outcome(
    api: &TableApi,
    stream: &StreamId,
    partition_key: &str,
    events: &[NewEvent],
) -> Result<Option<AppendOutcome>, StoreError> {
    Ok(earlier_append_of(api, stream, partition_key, events)
        .await?
        .map(|(first, last)| AppendOutcome {
            first_sequence: first,
            version: last,
            created: first == 1,
            duplicate: true,
            recorded: None,
        }))
}

fn wrong_version(stream: &StreamId, expected: ExpectedVersion, actual: u64) -> StoreError {
    StoreError::WrongExpectedVersion {
        stream: stream.to_string(),
        expected,
        actual,
    }
}

/// The operations of one attempt, in order: header, version check, events, event ids.
fn operations<'a>(
    plan: Plan,
    encoded: &'a [EncodedEvent],
    recorded: OffsetDateTime,
) -> Vec<Operation<'a>> {
    // The caller checked that `last` is at most `keys::MAX_SEQUENCE`.
    let first = plan.version().saturating_add(1);
    let last = plan.version().saturating_add(encoded.len() as u64);
    let mut operations = Vec::with_capacity(
        HEADER_OPERATIONS
            + VERSION_CHECK_OPERATIONS
            + RESERVED_OUTBOX_OPERATIONS
            + ROWS_PER_EVENT * encoded.len(),
    );
    match plan {
        Plan::Create => operations.push(Operation::InsertRow {
            row_key: keys::HEADER_ROW_KEY.to_owned(),
            row: AppendRow::Header {
                version: last,
                created: Some(recorded),
                last_recorded: recorded,
            },
        }),
        Plan::Extend { version, guard } => {
            let if_match = match guard {
                Guard::Exact => IfMatchCondition::Any,
                Guard::Etag(ref etag) => IfMatchCondition::Etag(etag.clone()),
            };
            operations.push(Operation::MergeRow {
                row_key: keys::HEADER_ROW_KEY.to_owned(),
                row: AppendRow::Header {
                    version: last,
                    created: None,
                    last_recorded: recorded,
                },
                if_match,
            });
            if matches!(guard, Guard::Exact) {
                operations.push(Operation::MergeRow {
                    row_key: keys::event_row_key(version),
                    row: AppendRow::Empty,
                    if_match: IfMatchCondition::Any,
                });
            }
        }
    }
    for (sequence, event) in (first..).zip(encoded) {
        operations.push(Operation::InsertRow {
            row_key: keys::event_row_key(sequence),
            row: AppendRow::Event(event),
        });
    }
    for (sequence, event) in (first..).zip(encoded) {
        operations.push(Operation::InsertRow {
            row_key: keys::event_id_row_key(&event.event_id),
            row: AppendRow::EventId {
                sequence,
                first,
                last,
            },
        });
    }
    operations
}

/// An upper bound of the transaction body an append of `encoded` produces (in a table whose
/// URL is `table_url_bytes` long): each operation's
/// framing and keys at their longest, the fixed rows at their longest JSON, and the events'
/// JSON as encoded (exact: it is the text the body holds).
fn transaction_bytes(
    table_url_bytes: usize,
    partition_key: &str,
    encoded: &[EncodedEvent],
) -> usize {
    let framing = OPERATION_FRAMING_BYTES
        + table_url_bytes
        + URL_ENCODING_FACTOR * (partition_key.len() + keys::EVENT_ID_ROW_PREFIX.len() + 36);
    let keys_len = 2 * partition_key.len() + 64;
    let fixed = HEADER_OPERATIONS + VERSION_CHECK_OPERATIONS + RESERVED_OUTBOX_OPERATIONS;
    let around = fixed * (framing + keys_len + AppendRow::HEADER_JSON_BYTES_BOUND)
        + encoded.len() * (2 * (framing + keys_len) + AppendRow::EVENT_ID_JSON_BYTES_BOUND);
    around
        + encoded
            .iter()
            .map(|event| AppendRow::Event(event).json_bytes_bound())
            .sum::<usize>()
}

/// The point-read header, or `None` for a stream that does not exist.
pub async fn read_header(
    api: &TableApi,
    partition_key: &str,
    what: &str,
) -> Result<Option<Header>, StoreError> {
    let Some(fetched) = api.get(partition_key, keys::HEADER_ROW_KEY, what).await? else {
        return Ok(None);
    };
    let corrupt = |detail: String| StoreError::Corrupt {
        stream: what.to_owned(),
        detail: format!("header row: {detail}"),
    };
    let version = entity::decode_header_version(&fetched.entity).map_err(corrupt)?;
    let last_recorded = entity::decode_header_last_recorded(&fetched.entity).map_err(corrupt)?;
    Ok(Some(Header {
        version,
        etag: fetched.etag,
        last_recorded,
    }))
}

/// What one query tells of a stream's end: the header's version (0 without a header) and
/// whether the stream's tombstone is there.
struct End {
    version: u64,
    erased: bool,
}

/// The header and the tombstone row (module `erase`) of a stream, read in ONE query: the
/// failure paths need both, and a second request only to tell an erased stream from a missing
/// one would be a request more on every refused append.
async fn read_end(api: &TableApi, partition_key: &str, what: &str) -> Result<End, StoreError> {
    let filter = format!(
        "PartitionKey eq {} and (RowKey eq {} or RowKey eq {})",
        keys::odata_string(partition_key),
        keys::odata_string(keys::HEADER_ROW_KEY),
        keys::odata_string(&tombstone_row_key()),
    );
    let mut end = End {
        version: 0,
        erased: false,
    };
    for row in api.query(filter, None, what).await? {
        let corrupt = |row: &str, detail: String| StoreError::Corrupt {
            stream: what.to_owned(),
            detail: format!("{row} row: {detail}"),
        };
        match entity::get_str(&row, entity::ROW_KEY) {
            Ok(keys::HEADER_ROW_KEY) => {
                end.version =
                    entity::decode_header_version(&row).map_err(|d| corrupt("header", d))?;
            }
            _ => {
                end.erased = decode_tombstone(&row)
                    .map_err(|d| corrupt("tombstone", d))?
                    .is_some();
            }
        }
    }
    Ok(end)
}

/// Whether `events` were all stored by one earlier append (its first and last sequence), none
/// of them was stored (`None`), or some ids are taken (`EventIdReused`).
async fn earlier_append_of(
    api: &TableApi,
    stream: &StreamId,
    partition_key: &str,
    events: &[NewEvent],
) -> Result<Option<(u64, u64)>, StoreError> {
    let what = stream.to_string();
    let ids: Vec<Uuid> = events.iter().map(|e| e.event_id).collect();
    let queries = ids.chunks(MAX_IDS_PER_QUERY).map(|chunk| {
        let rows = chunk
            .iter()
            .map(|id| {
                format!(
                    "RowKey eq {}",
                    keys::odata_string(&keys::event_id_row_key(id))
                )
            })
            .collect::<Vec<_>>()
            .join(" or ");
        let filter = format!(
            "PartitionKey eq {} and ({rows})",
            keys::odata_string(partition_key)
        );
        api.query(filter, None, &what)
    });
    let mut found: HashMap<Uuid, StoredEventId> = HashMap::new();
    for entity in try_join_all(queries).await?.into_iter().flatten() {
        let (id, append) =
            entity::decode_event_id_row(&entity).map_err(|detail| StoreError::Corrupt {
                stream: what.clone(),
                detail,
            })?;
        found.insert(id, append);
    }
    earlier_append(stream, events, |id| found.get(id).copied())
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;
    use serde_json::value::RawValue;
    use serde_json::Value;

    use super::super::batch_request::{encode_with, TableUrls};
    use super::*;

    /// The append's rows as property maps, as the append built them before they were written
    /// straight to JSON: the reference the JSON rows must equal.
    mod map_reference {
        use super::super::super::entity::{
            data_chunks, data_property, event_id_properties, metadata_strings, set_int64, set_time,
            with_keys, Properties, CREATED, EVENT_ID, EVENT_TYPE, LAST_RECORDED, RECORDED,
            SCHEMA_VERSION, VERSION,
        };
        use super::*;

        fn event_properties(event: &NewEvent, recorded: OffsetDateTime) -> Properties {
            let mut properties = Properties::new();
            properties.insert(
                EVENT_ID.to_owned(),
                Value::String(event.event_id.hyphenated().to_string()),
            );
            properties.insert(
                EVENT_TYPE.to_owned(),
                Value::String(event.event_type.clone()),
            );
            set_time(&mut properties, RECORDED, recorded);
            for (name, value) in metadata_strings(&event.metadata) {
                properties.insert(name.to_owned(), Value::String(value.to_owned()));
            }
            if let Some(schema_version) = event.metadata.schema_version {
                set_int64(&mut properties, SCHEMA_VERSION, u64::from(schema_version));
            }
            for (index, chunk) in data_chunks(event.data.get()).enumerate() {
                properties.insert(data_property(index), Value::String(chunk.to_owned()));
            }
            properties
        }

        fn header_properties(
            version: u64,
            created: Option<OffsetDateTime>,
            last_recorded: OffsetDateTime,
        ) -> Properties {
            let mut properties = Properties::new();
            set_int64(&mut properties, VERSION, version);
            if let Some(created) = created {
                set_time(&mut properties, CREATED, created);
            }
            set_time(&mut properties, LAST_RECORDED, last_recorded);
            properties
        }

        /// The operations of one attempt (header, version check, events, event ids).
        pub fn operations(
            partition_key: &str,
            plan: Plan,
            events: &[NewEvent],
            recorded: OffsetDateTime,
        ) -> Vec<Operation<'static>> {
            let first = plan.version() + 1;
            let last = plan.version() + events.len() as u64;
            let mut operations = Vec::new();
            match plan {
                Plan::Create => operations.push(Operation::Insert(with_keys(
                    partition_key,
                    keys::HEADER_ROW_KEY,
                    &header_properties(last, Some(recorded), recorded),
                ))),
                Plan::Extend { version, guard } => {
                    let if_match = match guard {
                        Guard::Exact => IfMatchCondition::Any,
                        Guard::Etag(ref etag) => IfMatchCondition::Etag(etag.clone()),
                    };
                    operations.push(Operation::Merge {
                        row_key: keys::HEADER_ROW_KEY.to_owned(),
                        properties: header_properties(last, None, recorded),
                        if_match,
                    });
                    if matches!(guard, Guard::Exact) {
                        operations.push(Operation::Merge {
                            row_key: keys::event_row_key(version),
                            properties: Properties::new(),
                            if_match: IfMatchCondition::Any,
                        });
                    }
                }
            }
            for (sequence, event) in (first..).zip(events) {
                operations.push(Operation::Insert(with_keys(
                    partition_key,
                    &keys::event_row_key(sequence),
                    &event_properties(event, recorded),
                )));
            }
            for (sequence, event) in (first..).zip(events) {
                operations.push(Operation::Insert(with_keys(
                    partition_key,
                    &keys::event_id_row_key(&event.event_id),
                    &event_id_properties(sequence, first, last),
                )));
            }
            operations
        }
    }

    /// A plan: 0 creates the stream, 1 extends it at `version` exactly, 2 under an ETag.
    fn plan(kind: u8, version: u64) -> Plan {
        match kind {
            0 => Plan::Create,
            1 => Plan::Extend {
                version,
                guard: Guard::Exact,
            },
            _ => Plan::Extend {
                version,
                guard: Guard::Etag(Etag::from("W/\"datetime'2026-12-02T06%3A00%3A00.1Z'\"")),
            },
        }
    }

    /// Text JSON must escape (quotes, backslashes, every control character), Unicode in and
    /// outside the BMP, or anything printable.
    fn text() -> impl Strategy<Value = String> {
        prop_oneof![
            "[\"\\\\\u{0}-\u{1f}\u{7f}a-z/é€😀\u{2028}\u{fffd}]{0,24}",
            "\\PC{0,24}",
        ]
    }

    /// Event data: JSON text holding such strings, sometimes long enough for several chunks
    /// (with characters of every UTF-8 width around the chunk boundaries).
    fn data() -> impl Strategy<Value = String> {
        (text(), 0usize..3, "[a-zé€😀\"]{1,4}").prop_map(|(s, long, unit)| {
            let filler: String = unit
                .chars()
                .cycle()
                .take(long * (entity::MAX_STRING_PROPERTY_UTF16 * 2 / 3) + 1)
                .collect();
            serde_json::json!({ "s": s, "filler": filler, "n": [1.5, null, true] }).to_string()
        })
    }

    fn event() -> impl Strategy<Value = NewEvent> {
        (
            text(),
            data(),
            proptest::collection::vec(proptest::option::of(text()), 7),
            proptest::option::of(any::<u32>()),
            any::<u128>(),
        )
            .prop_map(|(event_type, data, metadata, schema_version, id)| {
                let mut event = NewEvent::from_raw(
                    event_type,
                    RawValue::from_string(data).expect("data() is JSON"),
                );
                event.event_id = Uuid::from_u128(id);
                let mut metadata = metadata.into_iter();
                let m = &mut event.metadata;
                for field in [
                    &mut m.correlation_id,
                    &mut m.causation_id,
                    &mut m.who,
                    &mut m.source,
                    &mut m.commentary,
                    &mut m.idempotency_key,
                    &mut m.request_hash,
                ] {
                    *field = metadata.next().flatten();
                }
                m.schema_version = schema_version;
                event
            })
    }

    fn time() -> impl Strategy<Value = OffsetDateTime> {
        (
            time::PrimitiveDateTime::MIN.assume_utc().unix_timestamp()
                ..=time::PrimitiveDateTime::MAX.assume_utc().unix_timestamp(),
            0u32..1_000_000_000,
        )
            .prop_map(|(seconds, nanos)| {
                OffsetDateTime::from_unix_timestamp(seconds)
                    .and_then(|t| t.replace_nanosecond(nanos))
                    .expect("in the time crate's range")
            })
    }

    /// The lines of two transaction bodies are the same, entity bodies (one line of JSON each)
    /// compared as JSON values (the order of properties is free).
    fn same_bodies(ours: &[u8], reference: &[u8]) -> Result<(), TestCaseError> {
        let ours = std::str::from_utf8(ours).expect("a body is text");
        let reference = std::str::from_utf8(reference).expect("a body is text");
        let (ours, reference): (Vec<_>, Vec<_>) =
            (ours.split('\n').collect(), reference.split('\n').collect());
        prop_assert_eq!(ours.len(), reference.len());
        for (ours, reference) in ours.into_iter().zip(reference) {
            if reference.starts_with('{') {
                let ours: Value = serde_json::from_str(ours).expect("our entity is JSON");
                let reference: Value = serde_json::from_str(reference).expect("JSON");
                prop_assert_eq!(ours, reference);
            } else {
                prop_assert_eq!(ours, reference);
            }
        }
        Ok(())
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(96))]

        /// An append's transaction body, its rows written straight to JSON, is the body of the
        /// same rows as property maps serialized by serde_json (the rows the append wrote
        /// before), for any events, partition, plan and recorded time (also one set after
        /// encoding, as a retry does); and the size check's bound is never below it.
        #[test]
        fn rows_are_the_property_maps(
            events in proptest::collection::vec(event(), 1..4),
            partition_key in text(),
            kind in 0u8..3,
            version in 1u64..1_000,
            encoded_at in time(),
            recorded in time(),
        ) {
            let urls = TableUrls::new("http://127.0.0.1:10002/devstoreaccount1", "streamfold")
                .expect("a table URL");
            let mut encoded = Vec::new();
            for event in &events {
                match append_rows::encode_event(&partition_key, event, encoded_at) {
                    Ok(event) => encoded.push(event),
                    Err(StoreError::EventTooLarge { .. }) => return Ok(()),
                    Err(other) => panic!("{other:?}"),
                }
            }
            for event in &mut encoded {
                event.set_recorded(recorded);
            }
            let (b, c) = (Uuid::from_u128(1), Uuid::from_u128(2));
            let ours = operations(plan(kind, version), &encoded, recorded);
            let ours = encode_with(&urls, &partition_key, &ours, 0, b, c).expect("encodes");
            let reference =
                map_reference::operations(&partition_key, plan(kind, version), &events, recorded);
            let reference =
                encode_with(&urls, &partition_key, &reference, 0, b, c).expect("encodes");
            same_bodies(&ours.body, &reference.body)?;
            prop_assert!(
                ours.body.len() <= transaction_bytes(urls.table().len(), &partition_key, &encoded)
            );
        }
    }
}
