//! The one place that talks to the `azure_data_tables` crate: table creation, point reads,
//! queries, entity group transactions, and the mapping of the crate's errors to
//! [`StoreError`].
//!
//! Guarantees:
//! - the table is created at most once per [`TableApi`] (a failed attempt is not remembered, an
//!   existing table counts as created), lazily, on first use;
//! - a transaction's outcome is read from every operation's status code (the crate answers
//!   `Ok` for a rolled-back batch): [`BatchOutcome::Committed`] only if all operations succeeded;
//! - queries follow continuation tokens (the service returns at most 1,000 entities a page);
//! - errors are classified once, here: unreachable storage, timeouts, 408/429/5xx become
//!   `Unavailable` (with `maybe_applied` from the [`DeliveryTracker`] for writes), 401/403 and a
//!   missing table become `Misconfigured`, answers of an unexpected shape become `Corrupt`.

use azure_core::{Etag, StatusCode};
use azure_data_tables::prelude::{Filter, IfMatchCondition, Select, TableClient, Top};
use futures::StreamExt;
use serde::de::DeserializeOwned;
use tokio::sync::OnceCell;

use super::entity::Properties;
use super::keys;
use crate::storage::connection::{self, error_code, status_of, DeliveryTracker};
use crate::stream::StoreError;

/// Error code of a create-table request for a table that exists.
const TABLE_ALREADY_EXISTS: &str = "TableAlreadyExists";
/// Error code of a request to a table that does not exist.
const TABLE_NOT_FOUND: &str = "TableNotFound";
/// Most entities the service returns in one query page.
pub const MAX_QUERY_PAGE: u32 = 1_000;

/// Most operations in one entity group transaction (the service's limit).
pub const MAX_TRANSACTION_OPERATIONS: usize = 100;
/// Passes in a row that delete nothing before [`TableApi::delete_partition_rows`] gives up.
const MAX_FRUITLESS_DELETE_PASSES: u32 = 8;

/// One operation of an entity group transaction.
#[derive(Debug, Clone)]
pub enum Operation {
    /// Insert a new entity (the entity carries its keys); 409 if it exists.
    Insert(Properties),
    /// Merge properties into an existing entity; 404 if it is missing, 412 on a stale ETag.
    Merge {
        row_key: String,
        properties: Properties,
        if_match: IfMatchCondition,
    },
    /// Merge properties into an entity, inserting it if it is missing (insert-or-merge); never
    /// fails on the entity's state.
    Upsert {
        row_key: String,
        properties: Properties,
    },
    /// Replace an existing entity whole (its old properties are gone); 404 if it is missing,
    /// 412 on a stale ETag.
    Replace {
        row_key: String,
        properties: Properties,
        if_match: IfMatchCondition,
    },
    /// Delete an entity; 404 if it is missing, 412 on a stale ETag.
    Delete {
        row_key: String,
        if_match: IfMatchCondition,
    },
}

/// What storage did with a transaction that it answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BatchOutcome {
    /// Every operation was applied.
    Committed,
    /// Nothing was applied; `status` is the status of the operation that failed.
    RolledBack { status: u16 },
}

/// A point-read entity with its ETag.
pub struct Fetched {
    pub entity: Properties,
    pub etag: Etag,
}

/// The table of one store.
pub struct TableApi {
    table: TableClient,
    /// Length of the table's URL, for bounding the size of a transaction body.
    table_url_bytes: usize,
    created: OnceCell<()>,
}

impl TableApi {
    /// `endpoint` is the table service endpoint the client was built for.
    pub fn new(table: TableClient, endpoint: &str) -> Self {
        Self {
            table_url_bytes: endpoint.len() + 1 + table.table_name().len(),
            table,
            created: OnceCell::new(),
        }
    }

    pub fn table_url_bytes(&self) -> usize {
        self.table_url_bytes
    }

    pub fn table_name(&self) -> &str {
        self.table.table_name()
    }

    /// Creates the table unless this process already did (or found it).
    pub async fn ensure_table(&self) -> Result<(), StoreError> {
        self.created
            .get_or_try_init(|| async {
                match self.table.create().await {
                    Ok(_) => Ok(()),
                    Err(error) if error_code(&error) == Some(TABLE_ALREADY_EXISTS) => Ok(()),
                    Err(error) => Err(map_error(
                        &error,
                        &format!("table {}", self.table_name()),
                        None,
                    )),
                }
            })
            .await
            .map(|_| ())
    }

    /// The entity at (partition_key, row_key), or `None` if there is none.
    pub async fn get(
        &self,
        partition_key: &str,
        row_key: &str,
        what: &str,
    ) -> Result<Option<Fetched>, StoreError> {
        let result = self
            .table
            .partition_key_client(keys::url_key(partition_key))
            .entity_client(keys::url_key(row_key))
            .get::<Properties>()
            .await;
        match result {
            Ok(response) => Ok(Some(Fetched {
                entity: response.entity,
                etag: response.etag,
            })),
            Err(error)
                if status_of(&error) == Some(StatusCode::NotFound)
                    && error_code(&error) != Some(TABLE_NOT_FOUND) =>
            {
                Ok(None)
            }
            Err(error) => Err(map_error(&error, what, None)),
        }
    }

    /// Every entity that matches `filter`, in key order, following continuation tokens; stops
    /// early once `limit` entities are in hand.
    pub async fn query(
        &self,
        filter: String,
        limit: Option<usize>,
        what: &str,
    ) -> Result<Vec<Properties>, StoreError> {
        self.query_as(filter, limit, what).await
    }

    /// [`Self::query`], each entity deserialized as `E` straight from the answer.
    pub async fn query_as<E>(
        &self,
        filter: String,
        limit: Option<usize>,
        what: &str,
    ) -> Result<Vec<E>, StoreError>
    where
        E: DeserializeOwned + Send + Sync,
    {
        let mut builder = self.table.query().filter(Filter::new(filter));
        if let Some(limit) = limit {
            let top = u32::try_from(limit)
                .unwrap_or(MAX_QUERY_PAGE)
                .clamp(1, MAX_QUERY_PAGE);
            builder = builder.top(Top::new(top));
        }
        let mut pages = builder.into_stream::<E>();
        let mut entities = Vec::new();
        while let Some(page) = pages.next().await {
            let page = page.map_err(|error| map_error(&error, what, None))?;
            entities.extend(page.entities);
            if limit.is_some_and(|limit| entities.len() >= limit) {
                break;
            }
        }
        Ok(entities)
    }

    /// The row keys of up to `limit` entities that match `filter` (only the keys are asked
    /// for, so a query over large rows stays small), in key order.
    pub async fn query_row_keys(
        &self,
        filter: String,
        limit: usize,
        what: &str,
    ) -> Result<Vec<String>, StoreError> {
        #[derive(serde::Deserialize)]
        struct Key {
            #[serde(rename = "RowKey")]
            row_key: String,
        }
        let top = u32::try_from(limit)
            .unwrap_or(MAX_QUERY_PAGE)
            .clamp(1, MAX_QUERY_PAGE);
        let mut pages = self
            .table
            .query()
            .filter(Filter::new(filter))
            .select(Select::new("RowKey"))
            .top(Top::new(top))
            .into_stream::<Key>();
        let mut keys = Vec::new();
        while let Some(page) = pages.next().await {
            let page = page.map_err(|error| map_error(&error, what, None))?;
            keys.extend(page.entities.into_iter().map(|k| k.row_key));
            if keys.len() >= limit {
                keys.truncate(limit);
                break;
            }
        }
        Ok(keys)
    }

    /// Every entity of `partition_key`, with only the properties `select` names (and the
    /// keys), in key order.
    pub async fn query_partition(
        &self,
        partition_key: &str,
        select: &[&str],
        what: &str,
    ) -> Result<Vec<Properties>, StoreError> {
        let mut fields = vec!["PartitionKey", "RowKey"];
        fields.extend_from_slice(select);
        let mut pages = self
            .table
            .query()
            .filter(Filter::new(format!(
                "PartitionKey eq {}",
                keys::odata_string(partition_key)
            )))
            .select(Select::new(fields.join(",")))
            .into_stream::<Properties>();
        let mut entities = Vec::new();
        while let Some(page) = pages.next().await {
            let page = page.map_err(|error| map_error(&error, what, None))?;
            entities.extend(page.entities);
        }
        Ok(entities)
    }

    /// Deletes every entity of `partition_key` whose row key `filter` (an OData condition on
    /// `RowKey`, or `None` for all) admits, 100 per transaction, until a query finds none:
    /// resumable, and safe to run twice at once (a row another deleter took first makes a
    /// batch roll back, and the next query no longer sees it). Returns how many it deleted.
    pub async fn delete_partition_rows(
        &self,
        partition_key: &str,
        filter: Option<&str>,
        what: &str,
    ) -> Result<u64, StoreError> {
        let mut query = format!("PartitionKey eq {}", keys::odata_string(partition_key));
        if let Some(filter) = filter {
            query.push_str(" and ");
            query.push_str(filter);
        }
        let mut deleted: u64 = 0;
        let mut fruitless = 0;
        loop {
            let found = self
                .query_row_keys(query.clone(), MAX_QUERY_PAGE as usize, what)
                .await?;
            if found.is_empty() {
                return Ok(deleted);
            }
            let mut progressed = false;
            for chunk in found.chunks(MAX_TRANSACTION_OPERATIONS) {
                let operations = chunk
                    .iter()
                    .map(|row_key| Operation::Delete {
                        row_key: row_key.clone(),
                        if_match: IfMatchCondition::Any,
                    })
                    .collect();
                if self.transaction(partition_key, operations, what).await?
                    == BatchOutcome::Committed
                {
                    deleted = deleted.saturating_add(chunk.len() as u64);
                    progressed = true;
                }
            }
            if !progressed {
                fruitless += 1;
                if fruitless >= MAX_FRUITLESS_DELETE_PASSES {
                    return Err(StoreError::unavailable(format!(
                        "{what}: rows kept reappearing or vanishing while being deleted"
                    )));
                }
            }
        }
    }

    /// Runs `operations` as one entity group transaction in `partition_key`.
    pub async fn transaction(
        &self,
        partition_key: &str,
        operations: Vec<Operation>,
        what: &str,
    ) -> Result<BatchOutcome, StoreError> {
        let expected_responses = operations.len();
        let mut batch = self
            .table
            .partition_key_client(keys::url_key(partition_key))
            .transaction();
        for operation in operations {
            batch = match operation {
                Operation::Insert(entity) => batch.insert(entity),
                Operation::Merge {
                    row_key,
                    properties,
                    if_match,
                } => batch.merge(keys::url_key(&row_key), properties, Some(if_match)),
                Operation::Upsert {
                    row_key,
                    properties,
                } => batch.insert_or_merge(keys::url_key(&row_key), properties),
                Operation::Replace {
                    row_key,
                    properties,
                    if_match,
                } => batch.update(keys::url_key(&row_key), properties, Some(if_match)),
                Operation::Delete { row_key, if_match } => {
                    batch.delete(keys::url_key(&row_key), Some(if_match))
                }
            }
            .map_err(|error| StoreError::Corrupt {
                stream: what.to_owned(),
                detail: format!("could not build the transaction: {error}"),
            })?;
        }
        let tracker = DeliveryTracker::new();
        let response = batch
            .context(tracker.context())
            .await
            .map_err(|error| map_error(&error, what, Some(&tracker)))?;
        let statuses: Vec<u16> = response
            .operation_responses
            .iter()
            .map(|r| u16::from(r.status_code))
            .collect();
        if let Some(&failed) = statuses.iter().find(|s| !(200..300).contains(*s)) {
            return Ok(BatchOutcome::RolledBack { status: failed });
        }
        if statuses.len() != expected_responses {
            return Err(StoreError::Corrupt {
                stream: what.to_owned(),
                detail: format!(
                    "storage answered a transaction of {expected_responses} operations with {} \
                     responses",
                    statuses.len()
                ),
            });
        }
        Ok(BatchOutcome::Committed)
    }
}

/// Classifies an error of the azure crates (see [`connection::map_error`]).
pub fn map_error(
    error: &azure_core::Error,
    what: &str,
    write: Option<&DeliveryTracker>,
) -> StoreError {
    connection::map_error(error, what, write, TABLE_NOT_FOUND, "table")
}
