//! Erasing a stream of the Table backend, tombstone first.
//!
//! The tombstone is row `E-0000000001` replaced whole by one that holds only `ErasedVersion`
//! (the version the stream had) and `Erased` (when), with the `HEAD` row deleted **in the same
//! entity group transaction** (the header's ETag as read, so an append in between makes it
//! roll back and the erasure reads again). From that commit on no append can land, whatever
//! it believed about the stream:
//! - creating the stream inserts `E-0000000001`, which exists (409);
//! - extending it merges `HEAD` (with `If-Match: *` or an ETag), which is gone (404).
//!
//! Then every other row of the partition (`E-…`, `ID-…`, `OUTBOX`) is deleted, 100 per
//! transaction, until none is left. A crash anywhere leaves a tombstone that a second call
//! finds (no header, a tombstone row) and finishes. Readers see no header, so version 0: an
//! erased stream reads and lists as one that never existed. An append refused by the
//! tombstone is `StreamErased`, found on the failure paths only (a refused append reads the
//! header and the tombstone row in one query), so a successful append costs nothing more.

use azure_data_tables::prelude::IfMatchCondition;
use time::OffsetDateTime;

use super::client::{BatchOutcome, Operation, TableApi};
use super::entity::{self, Properties};
use super::keys;
use crate::storage::contention::Contention;
use crate::stream::{Erasure, StoreError, StreamId};

/// Row key of the tombstone: the first event's, so that no append can create the stream again.
pub fn tombstone_row_key() -> String {
    keys::event_row_key(1)
}
/// Property of the tombstone: the version the stream had when it was erased.
pub const ERASED_VERSION: &str = "ErasedVersion";
/// Property of the tombstone: when the stream was erased.
pub const ERASED_AT: &str = "Erased";

/// The version recorded in the stream's tombstone, if it was erased.
pub async fn tombstone(
    api: &TableApi,
    partition_key: &str,
    what: &str,
) -> Result<Option<u64>, StoreError> {
    let Some(row) = api.get(partition_key, &tombstone_row_key(), what).await? else {
        return Ok(None);
    };
    decode_tombstone(&row.entity).map_err(|detail| StoreError::Corrupt {
        stream: what.to_owned(),
        detail: format!("tombstone row: {detail}"),
    })
}

/// The version a tombstone row records; `None` when the row at the tombstone's key is the
/// stream's first event (the stream is not erased).
pub fn decode_tombstone(row: &Properties) -> Result<Option<u64>, String> {
    if !row.contains_key(ERASED_VERSION) {
        return Ok(None);
    }
    entity::get_u64(row, ERASED_VERSION).map(Some)
}

/// `StreamErased` when the stream has a tombstone, else `otherwise`.
pub async fn erased_or(
    api: &TableApi,
    stream: &StreamId,
    partition_key: &str,
    otherwise: StoreError,
) -> StoreError {
    match tombstone(api, partition_key, &stream.to_string()).await {
        Ok(Some(_)) => StoreError::StreamErased {
            stream: stream.to_string(),
        },
        Ok(None) => otherwise,
        Err(error) => error,
    }
}

/// Erases `stream` (see the module documentation).
pub async fn erase(api: &TableApi, stream: &StreamId) -> Result<Erasure, StoreError> {
    api.ensure_table().await?;
    let what = stream.to_string();
    let partition_key = keys::partition_key(stream);
    let mut contention = Contention::new();
    let (version, resumed) = loop {
        match api.get(&partition_key, keys::HEADER_ROW_KEY, &what).await? {
            Some(header) => {
                let version = entity::decode_header_version(&header.entity).map_err(|detail| {
                    StoreError::Corrupt {
                        stream: what.clone(),
                        detail: format!("header row: {detail}"),
                    }
                })?;
                let mut properties = Properties::new();
                entity::set_int64(&mut properties, ERASED_VERSION, version);
                entity::set_time(&mut properties, ERASED_AT, OffsetDateTime::now_utc());
                let operations = vec![
                    Operation::Delete {
                        row_key: keys::HEADER_ROW_KEY.to_owned(),
                        if_match: IfMatchCondition::Etag(header.etag),
                    },
                    Operation::Replace {
                        row_key: tombstone_row_key(),
                        properties,
                        if_match: IfMatchCondition::Any,
                    },
                ];
                match api.transaction(&partition_key, operations, &what).await? {
                    BatchOutcome::Committed => break (version, false),
                    // An append (or another erasure) got in first: read again.
                    BatchOutcome::RolledBack { .. } => {
                        if !contention.wait().await {
                            return Err(contention.gave_up(&what));
                        }
                    }
                }
            }
            None => match tombstone(api, &partition_key, &what).await? {
                Some(version) => break (version, true),
                None => return Ok(Erasure::NotFound),
            },
        }
    };
    let keep = keys::odata_string(&tombstone_row_key());
    api.delete_partition_rows(&partition_key, Some(&format!("RowKey ne {keep}")), &what)
        .await?;
    Ok(Erasure::Erased { version, resumed })
}
