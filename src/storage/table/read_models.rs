//! Read-model rows in their own Azure table ([`DEFAULT_READ_MODEL_TABLE`]), next to the event
//! streams but never in the same table, so a read model can be dropped and rebuilt without
//! touching an event.
//!
//! # Layout
//! - PartitionKey `{domain}|{entity}|{model}`: every row of one read model of one entity type
//!   in one partition, so a listing reads one partition. Domain, entity type and projection
//!   names cannot contain the separator, so partitions never collide;
//! - RowKey: the instance key (valid as a RowKey by the stream key rules). Table storage
//!   returns a partition's rows in RowKey order (as it compares keys), so a page of a
//!   listing is one query: the partition's rows with a RowKey above the continuation, `$top`
//!   one more than the page size (the extra row only says that more follow; it is not
//!   returned);
//! - `FailedSequence` (`Edm.Int64`, 0 = none) and `FailureReason`: the event the projection
//!   refused, when it did (always written, so a merge clears an earlier failure);
//! - `Sequence` and `ProjectionVersion` (`Edm.Int64`), the state's JSON text in `Data`,
//!   `Data01`, ... chunks of at most 64 KiB each, and `DataChunks`, how many chunks are
//!   current. A save merges, so chunks past `DataChunks` left from a larger earlier state are
//!   ignored on reading.
//!
//! A save is one single-entity request, never a `$batch`: Insert Entity for "must not exist"
//! (storage asked not to echo the row), Merge Entity with `If-Match: <etag>` otherwise; a
//! delete is one Delete Entity with `If-Match: *` (a row that is not there, or whose table is
//! not, is as good as deleted). The client module of the Table backend does
//! the talking, escaping and error mapping, and reports a write storage refused for the row's
//! sake by its status: a condition that did not hold (409 the row exists, 412 another ETag,
//! 404 the row is gone — not the table) is a [`SaveOutcome::Conflict`] here, any other such
//! refusal is `Corrupt`. A save whose answer was lost is `Unavailable` with `maybe_applied`
//! from the client's delivery tracker; if the transport's retry of it finds its own write
//! applied, the retry's 409 or 412 is a conflict, as for any other writer, and the caller
//! reloads the row.

use std::sync::Arc;

use async_trait::async_trait;
use azure_core::Etag;
use azure_data_tables::prelude::IfMatchCondition;
use serde_json::value::RawValue;

use super::client::{EntityOutcome, TableApi};
use super::entity::{
    self, get_json_text, get_str, get_u64, set_int64, set_json_text, with_keys, Properties,
    MAX_ENTITY_BYTES, PARTITION_KEY, ROW_KEY,
};
use super::keys::{odata_string, KEY_SEPARATOR};
use crate::storage::connection::StorageAccount;
use crate::stream::{
    checked_page_size, end_page, Checkpoint, ETag, FoldFailure, ReadModelPage, ReadModelRow,
    ReadModelStore, SaveCondition, SaveOutcome, StoredCheckpoint, UNREADABLE_ROW_VERSION,
};
use crate::stream::{EntityType, ReadModelStoreError, StateTooLarge, StoreError, StreamId};

/// The table that holds read-model rows.
pub const DEFAULT_READ_MODEL_TABLE: &str = "streamfoldreadmodels";
/// Property: sequence number of the last event folded in.
pub const SEQUENCE: &str = entity::SEQUENCE;
/// Property: the projection version that wrote the state.
pub const PROJECTION_VERSION: &str = "ProjectionVersion";
/// Property: the sequence of the event the projection refused (0 or absent = none).
pub const FAILED_SEQUENCE: &str = "FailedSequence";
/// Property: why it refused it (empty when none).
pub const FAILURE_REASON: &str = "FailureReason";
/// Bytes reserved in an entity for keys, system and bookkeeping properties, so that a state
/// passes the size check only if its row is surely within [`MAX_ENTITY_BYTES`].
const ROW_OVERHEAD_BYTES: usize = 8 * 1024;
/// HTTP statuses of a refused save that mean "the condition did not hold".
const CONFLICT_STATUSES: [u16; 3] = [404, 409, 412];

/// Read-model rows in an Azure table. Cheap to clone; clones share the table client.
#[derive(Clone)]
pub struct TableReadModelStore {
    table_name: String,
    api: Arc<Result<TableApi, String>>,
}

impl std::fmt::Debug for TableReadModelStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TableReadModelStore")
            .field("table_name", &self.table_name)
            .finish_non_exhaustive()
    }
}

impl TableReadModelStore {
    /// Rows in [`DEFAULT_READ_MODEL_TABLE`] of `account`. No I/O: the table is created on
    /// first use.
    pub fn new(account: &StorageAccount) -> Self {
        Self::with_table_name(account, DEFAULT_READ_MODEL_TABLE)
    }

    /// Rows in another table of `account` (tests use one table each). No I/O.
    pub fn with_table_name(account: &StorageAccount, table_name: &str) -> Self {
        let api = account
            .client_options()
            .map_err(|e| e.to_string())
            .and_then(|options| TableApi::new(account, table_name, options));
        Self {
            table_name: table_name.to_owned(),
            api: Arc::new(api),
        }
    }

    pub fn table_name(&self) -> &str {
        &self.table_name
    }

    async fn api(&self) -> Result<&TableApi, ReadModelStoreError> {
        let api = self
            .api
            .as_ref()
            .as_ref()
            .map_err(|reason| StoreError::Misconfigured(reason.clone()))?;
        api.ensure_table().await?;
        Ok(api)
    }
}

/// The partition of every row of `model` for the streams of `entity_type`:
/// `{domain}|{entity}|{model}`.
pub fn partition_key(model: &str, entity_type: &EntityType) -> String {
    [entity_type.domain(), entity_type.entity(), model].join(&KEY_SEPARATOR.to_string())
}

/// The OData filter of a listing page: the rows of `model` for `entity_type` whose instance
/// key sorts after `continuation` (every row of the partition when `None`).
fn page_filter(model: &str, entity_type: &EntityType, continuation: Option<&str>) -> String {
    let partition = odata_string(&partition_key(model, entity_type));
    match continuation {
        None => format!("{PARTITION_KEY} eq {partition}"),
        Some(after) => format!(
            "{PARTITION_KEY} eq {partition} and {ROW_KEY} gt {}",
            odata_string(after)
        ),
    }
}

fn describe(model: &str, stream: &StreamId) -> String {
    format!("read model {model} of {stream}")
}

/// The row's properties (without keys).
fn encode(
    model: &str,
    stream: &StreamId,
    checkpoint: &Checkpoint,
) -> Result<Properties, ReadModelStoreError> {
    let text = checkpoint.state.get();
    let too_large = || {
        ReadModelStoreError::from(StateTooLarge {
            model: model.to_owned(),
            stream: stream.to_string(),
            bytes: text.len(),
            limit: MAX_ENTITY_BYTES - ROW_OVERHEAD_BYTES,
        })
    };
    let keys_bytes =
        2 * (partition_key(model, stream.entity_type()).len() + stream.instance().len());
    let bytes = 2 * entity::utf16_len(text) + keys_bytes + ROW_OVERHEAD_BYTES;
    if bytes > MAX_ENTITY_BYTES {
        return Err(too_large());
    }
    let mut properties = Properties::new();
    set_json_text(&mut properties, text).ok_or_else(too_large)?;
    set_int64(&mut properties, SEQUENCE, checkpoint.sequence);
    set_int64(
        &mut properties,
        PROJECTION_VERSION,
        u64::from(checkpoint.projection_version),
    );
    // Always both, so a save (a merge) clears a failure an earlier save recorded.
    let (failed_sequence, reason) = checkpoint
        .failure
        .as_ref()
        .map_or((0, ""), |f| (f.sequence, f.reason.as_str()));
    set_int64(&mut properties, FAILED_SEQUENCE, failed_sequence);
    properties.insert(FAILURE_REASON.to_owned(), reason.into());
    Ok(properties)
}

/// A row read back; `Err` says why it cannot be.
fn decode(model: &str, entity: &Properties) -> Result<Checkpoint, String> {
    let sequence = get_u64(entity, SEQUENCE)?;
    let projection_version = u32::try_from(get_u64(entity, PROJECTION_VERSION)?)
        .map_err(|_| format!("{PROJECTION_VERSION} is out of range"))?;
    let state = get_json_text(entity).map_err(|e| format!("the state: {e}"))?;
    // Rows written before failures were recorded have neither property.
    let failed_sequence = match entity.get(FAILED_SEQUENCE) {
        None => 0,
        Some(_) => get_u64(entity, FAILED_SEQUENCE)?,
    };
    let failure = (failed_sequence > 0).then(|| FoldFailure {
        sequence: failed_sequence,
        reason: get_str(entity, FAILURE_REASON)
            .unwrap_or_default()
            .to_owned(),
    });
    Ok(Checkpoint {
        projection: model.to_owned(),
        projection_version,
        sequence,
        max_timestamp: None,
        state,
        failure,
    })
}

/// The stand-in for a row that cannot be read: recomputed by whoever loads it.
fn unreadable(model: &str) -> Checkpoint {
    Checkpoint {
        projection: model.to_owned(),
        projection_version: UNREADABLE_ROW_VERSION,
        sequence: 0,
        max_timestamp: None,
        state: RawValue::from_string("null".to_owned())
            .unwrap_or_else(|_| unreachable!("null is JSON")),
        failure: None,
    }
}

#[async_trait]
impl ReadModelStore for TableReadModelStore {
    async fn load(
        &self,
        model: &str,
        stream: &StreamId,
    ) -> Result<Option<StoredCheckpoint>, ReadModelStoreError> {
        let api = self.api().await?;
        let what = describe(model, stream);
        let partition = partition_key(model, stream.entity_type());
        let Some(fetched) = api.get(&partition, stream.instance(), &what).await? else {
            return Ok(None);
        };
        let checkpoint = decode(model, &fetched.entity).unwrap_or_else(|reason| {
            tracing::warn!(stream = %stream, model, reason, "read model row cannot be read; it will be recomputed");
            unreadable(model)
        });
        Ok(Some(StoredCheckpoint {
            checkpoint,
            etag: ETag(fetched.etag.to_string()),
        }))
    }

    async fn save(
        &self,
        model: &str,
        stream: &StreamId,
        checkpoint: &Checkpoint,
        condition: &SaveCondition,
    ) -> Result<SaveOutcome, ReadModelStoreError> {
        let properties = encode(model, stream, checkpoint)?;
        let api = self.api().await?;
        let what = describe(model, stream);
        let partition = partition_key(model, stream.entity_type());
        let outcome = match condition {
            SaveCondition::MustNotExist => {
                let entity = with_keys(&partition, stream.instance(), &properties);
                api.insert_entity(&entity, &what).await?
            }
            SaveCondition::IfMatch(etag) => {
                let if_match = IfMatchCondition::Etag(Etag::from(etag.0.clone()));
                api.merge_entity(&partition, stream.instance(), &properties, if_match, &what)
                    .await?
            }
        };
        match outcome {
            EntityOutcome::Written { etag } => Ok(SaveOutcome::Saved {
                etag: etag.map(|etag| ETag(etag.to_string())),
            }),
            EntityOutcome::Refused { status } if CONFLICT_STATUSES.contains(&status) => {
                Ok(SaveOutcome::Conflict)
            }
            EntityOutcome::Refused { status } => Err(StoreError::Corrupt {
                stream: what,
                detail: format!("storage refused the read model row with HTTP {status}"),
            }
            .into()),
        }
    }

    async fn list(
        &self,
        model: &str,
        entity_type: &EntityType,
        continuation: Option<&str>,
        page_size: usize,
    ) -> Result<ReadModelPage, ReadModelStoreError> {
        let page_size = checked_page_size(continuation, page_size)?;
        let api = self.api().await?;
        let what = format!("read model {model} of {entity_type}");
        let filter = page_filter(model, entity_type, continuation);
        let mut entities = api
            .query(filter, Some(page_size.saturating_add(1)), &what)
            .await?;
        // The last key read, not the last row returned: an unreadable row left out at the end
        // of a page must not end the listing or be read again. (A row without a key fails
        // the listing below.)
        let continuation = end_page(&mut entities, page_size, |row| {
            get_str(row, ROW_KEY).unwrap_or_default()
        });
        let mut rows = Vec::with_capacity(entities.len());
        for entity_row in &entities {
            let instance = get_str(entity_row, ROW_KEY)
                .map_err(|detail| StoreError::Corrupt {
                    stream: what.clone(),
                    detail,
                })?
                .to_owned();
            match decode(model, entity_row) {
                Ok(checkpoint) => rows.push(ReadModelRow {
                    instance,
                    checkpoint,
                }),
                Err(reason) => tracing::warn!(
                    model,
                    domain = entity_type.domain(),
                    entity = entity_type.entity(),
                    instance,
                    reason,
                    "read model row cannot be read; left out of the listing until it is recomputed"
                ),
            }
        }
        Ok(ReadModelPage { rows, continuation })
    }

    async fn delete(&self, model: &str, stream: &StreamId) -> Result<(), ReadModelStoreError> {
        let api = self.api().await?;
        let what = describe(model, stream);
        let partition = partition_key(model, stream.entity_type());
        // A row that is not there (404, its table neither) is as good as deleted.
        match api
            .delete_entity(&partition, stream.instance(), IfMatchCondition::Any, &what)
            .await?
        {
            EntityOutcome::Written { .. } | EntityOutcome::Refused { status: 404 } => Ok(()),
            EntityOutcome::Refused { status } => Err(StoreError::Corrupt {
                stream: what,
                detail: format!("deleting the row answered HTTP {status}"),
            }
            .into()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::entity::{data_property, MAX_DATA_CHUNKS};
    use super::*;
    use serde_json::Value;

    const ACCOUNTS: EntityType = EntityType::from_static("Bank", "Account");

    fn checkpoint(state: &str) -> Checkpoint {
        Checkpoint {
            projection: "account".into(),
            projection_version: 2,
            sequence: 7,
            max_timestamp: None,
            state: RawValue::from_string(state.to_owned()).unwrap(),
            failure: None,
        }
    }

    #[test]
    fn failures_round_trip_and_a_later_save_clears_them() {
        let stream = StreamId::new("Bank", "Account", "1").unwrap();
        let failed = Checkpoint {
            failure: Some(FoldFailure {
                sequence: 7,
                reason: "event 7 (MoneyDeposited): no".into(),
            }),
            ..checkpoint("{}")
        };
        let properties = encode("account", &stream, &failed).unwrap();
        assert_eq!(decode("account", &properties).unwrap(), failed);
        let mut merged = properties;
        merged.extend(encode("account", &stream, &checkpoint("{}")).unwrap());
        assert_eq!(decode("account", &merged).unwrap(), checkpoint("{}"));
        // A row written before failures were recorded.
        let mut old = encode("account", &stream, &checkpoint("{}")).unwrap();
        old.retain(|k, _| !k.starts_with("Fail"));
        assert_eq!(decode("account", &old).unwrap(), checkpoint("{}"));
    }

    #[test]
    fn rows_round_trip_through_properties() {
        let stream = StreamId::new("Bank", "Account", "O'Brien").unwrap();
        let big = format!("{{\"s\":\"{}\"}}", "x".repeat(100_000));
        for state in [r#"{"balance":"0.10"}"#, big.as_str()] {
            let mut properties = encode("account", &stream, &checkpoint(state)).unwrap();
            assert_eq!(decode("account", &properties).unwrap(), checkpoint(state));
            // A stale chunk left by a larger earlier state is ignored.
            properties.insert(
                data_property(MAX_DATA_CHUNKS - 1),
                Value::String("junk".into()),
            );
            assert_eq!(decode("account", &properties).unwrap(), checkpoint(state));
        }
        assert_eq!(
            partition_key("account", &EntityType::from_static("Bank", "Account")),
            "Bank|Account|account"
        );
    }

    #[test]
    fn oversized_and_unreadable_rows() {
        let stream = StreamId::new("Bank", "Account", "1").unwrap();
        let huge = format!("\"{}\"", "x".repeat(MAX_ENTITY_BYTES));
        assert!(matches!(
            encode("account", &stream, &checkpoint(&huge)),
            Err(ReadModelStoreError::StateTooLarge(_))
        ));
        let mut properties = encode("account", &stream, &checkpoint("[1,2]")).unwrap();
        properties.insert(data_property(0), Value::String("[1,".into()));
        assert!(decode("account", &properties).is_err());
        assert!(decode("account", &Properties::new()).is_err());
    }

    #[test]
    fn page_filters_stay_in_the_partition_and_escape_the_continuation() {
        assert_eq!(
            page_filter("account", &ACCOUNTS, None),
            "PartitionKey eq 'Bank|Account|account'"
        );
        assert_eq!(
            page_filter("account", &ACCOUNTS, Some("O'Brien")),
            "PartitionKey eq 'Bank|Account|account' and RowKey gt 'O''Brien'"
        );
    }

    #[test]
    fn constructors_do_no_io() {
        let account = StorageAccount::from_connection_string(
            "UseDevelopmentStorage=true;DevelopmentStorageProxyUri=http://127.0.0.1:1",
        )
        .unwrap();
        let store = TableReadModelStore::new(&account);
        assert_eq!(store.table_name(), DEFAULT_READ_MODEL_TABLE);
    }
}
