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
use azure_data_tables::prelude::{Filter, IfMatchCondition, TableClient, Top};
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
