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

use super::batch_request::OPERATION_FRAMING_BYTES;
use super::client::{BatchOutcome, Operation, TableApi};
use super::entity::{self, EncodedEvent, Properties};
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
            .map(|event| entity::encode_event(&partition_key, event, self.clock.now()))
            .collect::<Result<Vec<_>, _>>()?;
        let bytes = transaction_bytes(api, &partition_key, &encoded);
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
                entity::set_time(&mut event.properties, entity::RECORDED, recorded);
            }
            let created = matches!(plan, Plan::Create);
            let mut operations = operations(&partition_key, plan, &encoded, recorded);
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
fn operations(
    partition_key: &str,
    plan: Plan,
    encoded: &[EncodedEvent],
    recorded: OffsetDateTime,
) -> Vec<Operation> {
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
        Plan::Create => operations.push(Operation::Insert(entity::with_keys(
            partition_key,
            keys::HEADER_ROW_KEY,
            &entity::header_properties(last, Some(recorded), recorded),
        ))),
        Plan::Extend { version, guard } => {
            let if_match = match guard {
                Guard::Exact => IfMatchCondition::Any,
                Guard::Etag(ref etag) => IfMatchCondition::Etag(etag.clone()),
            };
            operations.push(Operation::Merge {
                row_key: keys::HEADER_ROW_KEY.to_owned(),
                properties: entity::header_properties(last, None, recorded),
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
    for (sequence, event) in (first..).zip(encoded) {
        operations.push(Operation::Insert(entity::with_keys(
            partition_key,
            &keys::event_row_key(sequence),
            &event.properties,
        )));
    }
    for (sequence, event) in (first..).zip(encoded) {
        operations.push(Operation::Insert(entity::with_keys(
            partition_key,
            &keys::event_id_row_key(&event.event_id),
            &entity::event_id_properties(sequence, first, last),
        )));
    }
    operations
}

/// An upper bound of the transaction body an append of `encoded` produces: first a cheap one
/// (each property's name and text at their longest JSON escaping), and only when that one
/// passes the limit the events' JSON measured exactly, so that an append near the limit is not
/// refused for the cheap bound's slack.
fn transaction_bytes(api: &TableApi, partition_key: &str, encoded: &[EncodedEvent]) -> usize {
    let framing = OPERATION_FRAMING_BYTES
        + api.table_url_bytes()
        + URL_ENCODING_FACTOR * (partition_key.len() + keys::EVENT_ID_ROW_PREFIX.len() + 36);
    let keys_len = 2 * partition_key.len() + 64;
    let fixed = HEADER_OPERATIONS + VERSION_CHECK_OPERATIONS + RESERVED_OUTBOX_OPERATIONS;
    let (header, id_row) = fixed_rows_json_bytes();
    let around =
        fixed * (framing + keys_len + header) + encoded.len() * (2 * (framing + keys_len) + id_row);
    let cheap: usize = encoded
        .iter()
        .map(|e| json_bytes_bound(&e.properties))
        .sum();
    if around + cheap <= MAX_TRANSACTION_BYTES {
        return around + cheap;
    }
    around
        + encoded
            .iter()
            .map(|e| json_bytes(&e.properties))
            .sum::<usize>()
}

/// The JSON length of `properties`.
fn json_bytes(properties: &Properties) -> usize {
    serde_json::to_vec(properties).map_or(0, |v| v.len())
}

/// Longest escape of one byte in a JSON string (`\u001f`).
const JSON_ESCAPE_BYTES: usize = 6;
/// A property's JSON framing: two pairs of quotes, the colon and the comma.
const JSON_PROPERTY_FRAMING_BYTES: usize = 6;

/// An upper bound of the JSON length of `properties`, without writing it.
fn json_bytes_bound(properties: &Properties) -> usize {
    let value_bytes = |value: &serde_json::Value| match value {
        serde_json::Value::String(text) => JSON_ESCAPE_BYTES * text.len(),
        other => other.to_string().len(),
    };
    2 + properties
        .iter()
        .map(|(name, value)| {
            JSON_ESCAPE_BYTES * name.len() + value_bytes(value) + JSON_PROPERTY_FRAMING_BYTES
        })
        .sum::<usize>()
}

/// The JSON length of the largest header row and event-id row (their values have a fixed
/// longest form), measured once per process.
fn fixed_rows_json_bytes() -> (usize, usize) {
    static BYTES: std::sync::OnceLock<(usize, usize)> = std::sync::OnceLock::new();
    *BYTES.get_or_init(|| {
        let now = OffsetDateTime::now_utc();
        let header = entity::header_properties(keys::MAX_SEQUENCE, Some(now), now);
        let id_row =
            entity::event_id_properties(keys::MAX_SEQUENCE, keys::MAX_SEQUENCE, keys::MAX_SEQUENCE);
        (json_bytes(&header), json_bytes(&id_row))
    })
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
    use super::*;

    #[test]
    fn the_cheap_json_bound_is_never_below_the_json() {
        let texts = [
            "",
            "plain",
            "\"quoted\" \\ back",
            "\u{0}\u{1}\u{1f}\n\t",
            "ünïcödé €𝄞",
            "</script>\u{2028}",
        ];
        for name in texts {
            for text in texts {
                let mut properties = Properties::new();
                properties.insert(format!("N{name}"), serde_json::Value::String(text.into()));
                entity::set_int64(&mut properties, "Version", u64::MAX);
                assert!(
                    json_bytes_bound(&properties) >= json_bytes(&properties),
                    "{name:?} {text:?}"
                );
            }
        }
        assert!(json_bytes_bound(&Properties::new()) >= json_bytes(&Properties::new()));
    }
}
