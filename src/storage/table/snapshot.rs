//! Projection snapshots in Azure Table storage, for streams of every backend of the same
//! storage account.
//!
//! One table ([`DEFAULT_SNAPSHOT_TABLE`]); PartitionKey = the stream's partition key (as in the
//! event table), RowKey = the projection name (projection names are ASCII letters, digits, `-`
//! and `_`, so they need no escaping). Properties: `ProjectionVersion`, `Sequence`,
//! `MaxTimestamp`, and the state's JSON text in `Data`, `Data01`, ... (64 KiB each) with their
//! count in `DataChunks`.
//!
//! Snapshots are an optimisation the projection runner validates before use, so this store is
//! allowed to lose one: a state too large for one entity is not saved (logged), and a save
//! that races another save of the same snapshot lets the last one win. It never keeps a
//! snapshot that claims fewer events than it holds: `MaxTimestamp` is rounded up to the 100 ns
//! Table storage keeps, never down.

use async_trait::async_trait;
use azure_data_tables::prelude::IfMatchCondition;
use time::OffsetDateTime;

use super::client::{BatchOutcome, Operation, TableApi};
use super::entity::{
    get_json_text, get_time, get_u64, set_int64, set_json_text, set_time, storage_time, with_keys,
    Properties,
};
use super::keys;
use crate::storage::connection::StorageAccount;
use crate::stream::{Snapshot, SnapshotStore};
use crate::stream::{StoreError, StreamId};

/// The table that holds snapshots unless another is chosen.
pub const DEFAULT_SNAPSHOT_TABLE: &str = "streamfoldsnapshots";
const PROJECTION_VERSION: &str = "ProjectionVersion";
const SEQUENCE: &str = "Sequence";
const MAX_TIMESTAMP: &str = "MaxTimestamp";
/// Table storage keeps times to this many nanoseconds.
const STORAGE_TIME_STEP_NANOS: i64 = 100;
/// HTTP status of an insert whose row exists.
const CONFLICT: u16 = 409;

/// Snapshots in one Azure Table.
#[derive(Clone)]
pub struct TableSnapshotStore {
    inner: super::TableStore,
}

impl TableSnapshotStore {
    /// Snapshots in [`DEFAULT_SNAPSHOT_TABLE`] of `account`. No I/O.
    pub fn new(account: StorageAccount) -> Self {
        Self {
            inner: super::TableStore::new(account).with_table_name(DEFAULT_SNAPSHOT_TABLE),
        }
    }

    /// The same account, another table. No I/O.
    pub fn with_table_name(self, table_name: impl Into<String>) -> Self {
        Self {
            inner: self.inner.with_table_name(table_name),
        }
    }

    async fn api(&self) -> Result<&TableApi, StoreError> {
        let api = self.inner.api()?;
        api.ensure_table().await?;
        Ok(api)
    }
}

/// The `MaxTimestamp` kept for `max_timestamp`: rounded *up* to the 100 ns Table storage keeps.
/// A snapshot may then claim to end later than it does (it is used for fewer points in time),
/// never earlier (it would be used for a time before one of its events). `None` past the last
/// time there is.
fn kept_max_timestamp(max_timestamp: OffsetDateTime) -> Option<OffsetDateTime> {
    let kept = storage_time(max_timestamp);
    if kept >= max_timestamp {
        return Some(kept);
    }
    kept.checked_add(time::Duration::nanoseconds(STORAGE_TIME_STEP_NANOS))
}

fn encode(snapshot: &Snapshot) -> Option<Properties> {
    let mut properties = Properties::new();
    set_json_text(&mut properties, snapshot.state.get())?;
    set_int64(
        &mut properties,
        PROJECTION_VERSION,
        u64::from(snapshot.projection_version),
    );
    set_int64(&mut properties, SEQUENCE, snapshot.sequence);
    if let Some(max_timestamp) = snapshot.max_timestamp {
        set_time(
            &mut properties,
            MAX_TIMESTAMP,
            kept_max_timestamp(max_timestamp)?,
        );
    }
    Some(properties)
}

fn decode(projection: &str, entity: &Properties) -> Result<Snapshot, String> {
    let state = get_json_text(entity).map_err(|e| format!("state: {e}"))?;
    Ok(Snapshot {
        projection: projection.to_owned(),
        projection_version: u32::try_from(get_u64(entity, PROJECTION_VERSION)?)
            .map_err(|_| "projection version out of range".to_owned())?,
        sequence: get_u64(entity, SEQUENCE)?,
        // Every snapshot the runner saves has one; one without serves no point in time.
        max_timestamp: match entity.get(MAX_TIMESTAMP) {
            None => None,
            Some(_) => Some(get_time(entity, MAX_TIMESTAMP)?),
        },
        state,
        failure: None,
    })
}

#[async_trait]
impl SnapshotStore for TableSnapshotStore {
    async fn load(
        &self,
        stream: &StreamId,
        projection: &str,
    ) -> Result<Option<Snapshot>, StoreError> {
        let partition_key = keys::partition_key(stream);
        let fetched = self
            .api()
            .await?
            .get(&partition_key, projection, &format!("snapshot of {stream}"))
            .await?;
        fetched
            .map(|row| {
                decode(projection, &row.entity).map_err(|detail| StoreError::Corrupt {
                    stream: stream.to_string(),
                    detail: format!("snapshot {projection}: {detail}"),
                })
            })
            .transpose()
    }

    async fn save(&self, stream: &StreamId, snapshot: &Snapshot) -> Result<(), StoreError> {
        let Some(properties) = encode(snapshot) else {
            tracing::warn!(%stream, projection = %snapshot.projection, "snapshot state too large for one entity (or its time out of range); not saved");
            return Ok(());
        };
        let api = self.api().await?;
        let partition_key = keys::partition_key(stream);
        let what = format!("snapshot of {stream}");
        let insert =
            Operation::Insert(with_keys(&partition_key, &snapshot.projection, &properties));
        match api.transaction(&partition_key, vec![insert], &what).await? {
            BatchOutcome::Committed => Ok(()),
            BatchOutcome::RolledBack { status: CONFLICT } => {
                let merge = Operation::Merge {
                    row_key: snapshot.projection.clone(),
                    properties,
                    if_match: IfMatchCondition::Any,
                };
                match api.transaction(&partition_key, vec![merge], &what).await? {
                    BatchOutcome::Committed => Ok(()),
                    BatchOutcome::RolledBack { status } => Err(StoreError::unavailable(format!(
                        "saving {what} failed with status {status}"
                    ))),
                }
            }
            BatchOutcome::RolledBack { status } => Err(StoreError::unavailable(format!(
                "saving {what} failed with status {status}"
            ))),
        }
    }

    async fn delete_stream(&self, stream: &StreamId) -> Result<(), StoreError> {
        let api = self.api().await?;
        api.delete_partition_rows(&keys::partition_key(stream), None, &stream.to_string())
            .await
            .map(|_| ())
    }
}
