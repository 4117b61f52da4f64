//! The notification outbox of the Table backend: one row per stream, in the stream's own
//! partition, written by the append's entity group transaction, so "the events are stored" and
//! "their notifications are pending" are one atomic write.
//!
//! # The row
//! PartitionKey = the stream's partition, RowKey [`OUTBOX_ROW_KEY`] (`OUTBOX`, which sorts after
//! the event rows `E-…`, the header `HEAD` and the event-id rows `ID-…`, so no range read of
//! the stream meets it). Properties:
//! - `Version` (`Edm.Int64`): the stream's version after the last append that wrote the row;
//! - `Notified` (`Edm.Int64`): events `1..=Notified` were published; absent means 0;
//! - `Pending` (`Edm.Boolean`): true when events past `Notified` await publishing.
//!
//! # Who writes what
//! - Every append of a store built [`TableStore::with_outbox`]`(true)` adds one insert-or-merge
//!   of `Version` and `Pending = true` to its transaction (the operation reserved for it by
//!   `RESERVED_OUTBOX_OPERATIONS`, so the event limit per append is unchanged and the append
//!   stays ONE request). `Notified` is left as it is. Appends are serialised by the header, so
//!   the row's `Version` always equals the header's.
//! - [`Outbox::mark_notified`] merges `Notified` (and `Pending = false` when it reaches the
//!   row's `Version`) with `If-Match` on the ETag read with the row. Any append in between
//!   changed the ETag, so the mark fails (412) instead of hiding the newer events; marks never
//!   move backwards for the same reason.
//! - With the outbox off, no row is written at all. A stream appended to before the outbox was
//!   turned on has no `Notified`: its next append makes the whole stream pending, so its history
//!   is published once (nothing records what was published before).
//!
//! # Finding pending streams
//! [`Outbox::pending`] is the query `RowKey eq 'OUTBOX' and Pending eq true`. It has no
//! PartitionKey condition, so the service scans the whole table: its cost grows with the number
//! of entities in the table (every event, event-id and header row), not with the number of
//! pending streams, and the service may answer with empty pages and continuation tokens while
//! it scans. It stops as soon as `limit` rows are found. Keeping an index of pending streams in
//! one partition would make this cheap, but a second partition cannot join the append's
//! transaction, so it would cost every append a second request. The sweep runs once a minute,
//! so the scan is the price of one-request appends. [`Outbox::pending_for`] is a point read.
//!
//! A sweep passes the stream it took last the time before: the query then asks for the rows
//! whose PartitionKey sorts after that stream's (`PartitionKey gt ...`), and, when fewer than
//! `limit` are found, for the rows from the start up to it (`PartitionKey le ...`), so the
//! streams that sort first cannot take every run. A row that is not one this module writes (a
//! PartitionKey that is no stream's, a `Version` that is not a whole number, a `Pending` that
//! is not a boolean) is an [`UnreadableEntry`] of the scan: reported, skipped, and never a
//! failure of the whole search.

use async_trait::async_trait;
use azure_core::Etag;
use azure_data_tables::prelude::IfMatchCondition;
use serde_json::Value;

use super::client::{BatchOutcome, Operation};
use super::entity::{self, Properties};
use super::keys;
use super::TableStore;
use crate::stream::{Outbox, PendingScan, PendingStream, StoreError, StreamId, UnreadableEntry};

/// RowKey of a stream's outbox row.
pub const OUTBOX_ROW_KEY: &str = "OUTBOX";
/// The stream's version after the last append that wrote the row.
pub const OUTBOX_VERSION: &str = entity::VERSION;
/// Events up to here were published.
pub const OUTBOX_NOTIFIED: &str = "Notified";
/// True while events past `Notified` await publishing.
pub const OUTBOX_PENDING: &str = "Pending";
/// The ETag of an entity in a query answer (full metadata).
const ODATA_ETAG: &str = "odata.etag";
/// Separates the row's version from its ETag in a [`PendingStream::token`].
const TOKEN_SEPARATOR: char = ';';
/// HTTP status of a merge whose `If-Match` ETag is stale.
const PRECONDITION_FAILED: u16 = 412;
/// Names the outbox in errors.
const OUTBOX_WHAT: &str = "the notification outbox";

/// The operation an append with the outbox on adds to its transaction: the stream is at
/// `version` and has pending notifications.
pub(super) fn pending_operation(version: u64) -> Operation<'static> {
    let mut properties = Properties::new();
    entity::set_int64(&mut properties, OUTBOX_VERSION, version);
    properties.insert(OUTBOX_PENDING.to_owned(), Value::Bool(true));
    Operation::Upsert {
        row_key: OUTBOX_ROW_KEY.to_owned(),
        properties,
    }
}

/// The stream of a PartitionKey (`{domain}|{entity}|{instance}`).
fn stream_of(partition_key: &str) -> Result<StreamId, String> {
    let mut parts = partition_key.splitn(3, keys::KEY_SEPARATOR);
    match (parts.next(), parts.next(), parts.next()) {
        (Some(domain), Some(entity), Some(instance)) => StreamId::new(domain, entity, instance)
            .map_err(|e| format!("outbox row in partition {partition_key:?}: {e}")),
        _ => Err(format!(
            "outbox row in partition {partition_key:?}, which is not a stream's"
        )),
    }
}

/// An outbox row read back (version, notified, pending).
struct Row {
    version: u64,
    notified: u64,
    pending: bool,
}

fn decode_row(row: &Properties) -> Result<Row, String> {
    let version = entity::get_u64(row, OUTBOX_VERSION)?;
    let notified = match row.get(OUTBOX_NOTIFIED) {
        None | Some(Value::Null) => 0,
        Some(_) => entity::get_u64(row, OUTBOX_NOTIFIED)?,
    };
    let pending = match row.get(OUTBOX_PENDING) {
        Some(Value::Bool(pending)) => *pending,
        None | Some(Value::Null) => false,
        Some(other) => {
            return Err(format!(
                "property {OUTBOX_PENDING} is not a boolean: {other}"
            ))
        }
    };
    Ok(Row {
        version,
        notified,
        pending,
    })
}

/// The pending entry of a row, or `None` when it has nothing pending.
fn pending_entry(stream: StreamId, row: &Row, etag: &str) -> Option<PendingStream> {
    (row.pending && row.version > row.notified).then(|| PendingStream {
        stream,
        notified: row.notified,
        version: row.version,
        token: format!("{}{TOKEN_SEPARATOR}{etag}", row.version),
    })
}

/// The row version and ETag of a token made by [`pending_entry`].
fn parse_token(token: &str) -> Option<(u64, &str)> {
    let (version, etag) = token.split_once(TOKEN_SEPARATOR)?;
    Some((version.parse().ok()?, etag))
}

/// The filter of the pending outbox rows whose PartitionKey compares with `condition` (`gt`,
/// `le`) to the given one, or of every pending row.
fn pending_filter(bound: Option<(&str, &str)>) -> String {
    let base = format!(
        "RowKey eq {} and {OUTBOX_PENDING} eq true",
        keys::odata_string(OUTBOX_ROW_KEY)
    );
    match bound {
        None => base,
        Some((condition, partition_key)) => format!(
            "{base} and {} {condition} {}",
            entity::PARTITION_KEY,
            keys::odata_string(partition_key)
        ),
    }
}

/// Reads one row of a pending query into `scan`: a pending entry, nothing (the row has nothing
/// pending), or an unreadable entry.
fn scan_row(row: &Properties, scan: &mut PendingScan) {
    let partition_key = entity::get_str(row, entity::PARTITION_KEY).unwrap_or_default();
    let key = format!("{OUTBOX_WHAT}: row {OUTBOX_ROW_KEY} of partition {partition_key:?}");
    let read = stream_of(partition_key).and_then(|stream| {
        let decoded = decode_row(row)?;
        let etag = entity::get_str(row, ODATA_ETAG)?;
        Ok(pending_entry(stream, &decoded, etag))
    });
    match read {
        Ok(Some(entry)) => scan.streams.push(entry),
        Ok(None) => {}
        Err(detail) => scan.unreadable.push(UnreadableEntry { key, detail }),
    }
}

#[async_trait]
impl Outbox for TableStore {
    /// Two queries at most: the rows past `after`'s partition, then (when fewer than `limit`
    /// were found) the rows from the start up to it. Each scans the table (see the module
    /// documentation).
    async fn pending(
        &self,
        after: Option<&StreamId>,
        limit: usize,
    ) -> Result<PendingScan, StoreError> {
        let mut scan = PendingScan::default();
        if limit == 0 {
            return Ok(scan);
        }
        let api = self.api()?;
        api.ensure_table().await?;
        let after = after.map(keys::partition_key);
        let first = match &after {
            Some(partition_key) => pending_filter(Some(("gt", partition_key))),
            None => pending_filter(None),
        };
        let rows = api.query(first, Some(limit), OUTBOX_WHAT).await?;
        let left = limit.saturating_sub(rows.len());
        for row in rows.iter().take(limit) {
            scan_row(row, &mut scan);
        }
        if let (Some(partition_key), true) = (&after, left > 0) {
            let second = pending_filter(Some(("le", partition_key)));
            let rows = api.query(second, Some(left), OUTBOX_WHAT).await?;
            for row in rows.iter().take(left) {
                scan_row(row, &mut scan);
            }
        }
        Ok(scan)
    }

    async fn pending_for(&self, stream: &StreamId) -> Result<Option<PendingStream>, StoreError> {
        let api = self.api()?;
        api.ensure_table().await?;
        let what = stream.to_string();
        let Some(fetched) = api
            .get(&keys::partition_key(stream), OUTBOX_ROW_KEY, &what)
            .await?
        else {
            return Ok(None);
        };
        let row = decode_row(&fetched.entity).map_err(|detail| StoreError::Corrupt {
            stream: what,
            detail: format!("outbox row: {detail}"),
        })?;
        Ok(pending_entry(stream.clone(), &row, fetched.etag.as_ref()))
    }

    async fn mark_notified(&self, pending: &PendingStream) -> Result<bool, StoreError> {
        let what = pending.stream.to_string();
        let (row_version, etag) =
            parse_token(&pending.token).ok_or_else(|| StoreError::Corrupt {
                stream: what.clone(),
                detail: format!("{:?} is not a token of the Table outbox", pending.token),
            })?;
        let api = self.api()?;
        let mut properties = Properties::new();
        entity::set_int64(&mut properties, OUTBOX_NOTIFIED, pending.version);
        properties.insert(
            OUTBOX_PENDING.to_owned(),
            Value::Bool(pending.version < row_version),
        );
        let operation = Operation::Merge {
            row_key: OUTBOX_ROW_KEY.to_owned(),
            properties,
            if_match: IfMatchCondition::Etag(Etag::from(etag.to_owned())),
        };
        match api
            .transaction(
                &keys::partition_key(&pending.stream),
                vec![operation],
                &what,
            )
            .await?
        {
            BatchOutcome::Committed => Ok(true),
            BatchOutcome::RolledBack {
                status: PRECONDITION_FAILED,
            } => Ok(false),
            BatchOutcome::RolledBack { status } => Err(StoreError::Misconfigured(format!(
                "storage refused the notified mark of {what} with HTTP {status}"
            ))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn partition_keys_give_streams_back() {
        let stream = StreamId::new("Bank", "Account", "a|b c").unwrap();
        assert_eq!(stream_of(&keys::partition_key(&stream)).unwrap(), stream);
        assert!(stream_of("Bank|Account").is_err());
        assert!(stream_of("1|Account|x").is_err());
    }

    #[test]
    fn rows_and_tokens() {
        let stream = StreamId::new("Bank", "Account", "1").unwrap();
        let mut row = Properties::new();
        entity::set_int64(&mut row, OUTBOX_VERSION, 7);
        row.insert(OUTBOX_PENDING.to_owned(), Value::Bool(true));
        let decoded = decode_row(&row).unwrap();
        assert_eq!(decoded.notified, 0);
        let entry = pending_entry(stream.clone(), &decoded, "W/\"x;y\"").unwrap();
        assert_eq!((entry.notified, entry.version), (0, 7));
        assert_eq!(parse_token(&entry.token), Some((7, "W/\"x;y\"")));

        entity::set_int64(&mut row, OUTBOX_NOTIFIED, 7);
        row.insert(OUTBOX_PENDING.to_owned(), Value::Bool(false));
        assert!(pending_entry(stream, &decode_row(&row).unwrap(), "e").is_none());
        row.insert(OUTBOX_PENDING.to_owned(), Value::from("yes"));
        assert!(decode_row(&row).is_err());
    }

    #[test]
    fn unreadable_rows_are_reported_not_fatal() {
        let mut scan = PendingScan::default();
        let mut good = Properties::new();
        good.insert(entity::PARTITION_KEY.into(), Value::from("Bank|Account|1"));
        good.insert(ODATA_ETAG.into(), Value::from("W/\"1\""));
        entity::set_int64(&mut good, OUTBOX_VERSION, 2);
        good.insert(OUTBOX_PENDING.to_owned(), Value::Bool(true));
        scan_row(&good, &mut scan);
        let mut bad_version = good.clone();
        bad_version.insert(OUTBOX_VERSION.into(), Value::from("banana"));
        scan_row(&bad_version, &mut scan);
        let mut no_stream = good.clone();
        no_stream.insert(entity::PARTITION_KEY.into(), Value::from("nothing"));
        scan_row(&no_stream, &mut scan);
        assert_eq!(scan.streams.len(), 1);
        assert_eq!(scan.unreadable.len(), 2);
        assert!(
            scan.unreadable[0].detail.contains("Version"),
            "{:?}",
            scan.unreadable
        );
        assert!(
            scan.unreadable[1].key.contains("nothing"),
            "{:?}",
            scan.unreadable
        );
    }

    #[test]
    fn pending_filters_bound_the_partition() {
        assert_eq!(
            pending_filter(None),
            "RowKey eq 'OUTBOX' and Pending eq true"
        );
        assert_eq!(
            pending_filter(Some(("gt", "Bank|Account|O'B"))),
            "RowKey eq 'OUTBOX' and Pending eq true and PartitionKey gt 'Bank|Account|O''B'"
        );
    }

    #[test]
    fn the_outbox_row_sorts_after_every_other_row() {
        assert!(keys::HEADER_ROW_KEY < OUTBOX_ROW_KEY);
        assert!(keys::EVENT_ID_ROW_PREFIX < OUTBOX_ROW_KEY);
        assert!(keys::event_row_key(keys::MAX_SEQUENCE).as_str() < OUTBOX_ROW_KEY);
    }
}
