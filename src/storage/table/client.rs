//! The one place that talks to Table storage: table creation, point reads and queries through
//! the `azure_data_tables` crate; entity group transactions written and read by us
//! (`batch_request`, `batch_answer`) and single-entity writes (insert, merge, delete), sent
//! through an `azure_core` pipeline built as the crate builds its own (same transport, retries,
//! delivery tracker and authorization; a Shared Key account's signed by `connection::shared_key`
//! with the key decoded once); and the mapping of errors to [`StoreError`].
//!
//! Guarantees:
//! - the table is created at most once per [`TableApi`] (a failed attempt is not remembered, an
//!   existing table counts as created), lazily, on first use;
//! - a transaction's outcome is read from every operation's status code (storage answers
//!   `202` for a rolled-back batch): [`BatchOutcome::Committed`] only if all operations
//!   succeeded; an answer of an unexpected shape is `Corrupt`, and an answer whose body is lost
//!   after its `2xx` status is `Unavailable` with `maybe_applied`;
//! - a single-entity write's outcome is its answer's status alone (its body is never read):
//!   [`EntityOutcome::Written`] on `2xx`, [`EntityOutcome::Refused`] on a `4xx` about the entity
//!   (its condition or content: not 401/403/408/429, not a missing table except to a delete,
//!   which finds no row either way), anything else an error classified below;
//! - queries follow continuation tokens (the service returns at most 1,000 entities a page);
//! - errors are classified once, here: unreachable storage, timeouts, 408/429/5xx become
//!   `Unavailable` (with `maybe_applied` from the [`DeliveryTracker`] for writes), 401/403 and a
//!   missing table become `Misconfigured`, answers of an unexpected shape become `Corrupt`.

use azure_core::headers::{Headers, ACCEPT, CONTENT_TYPE, ETAG, PREFER};
use azure_core::{ClientOptions, Etag, Method, Pipeline, Request, Response, StatusCode, Url};
use azure_data_tables::prelude::{Filter, IfMatchCondition, Select, TableClient, Top};
use azure_storage::clients::ServiceType;
use futures::StreamExt;
use serde::de::DeserializeOwned;
use tokio::sync::OnceCell;

use super::batch_answer::{self, MAX_ANSWER_BYTES};
use super::batch_request::{self, TableUrls, OPERATION_FRAMING_BYTES};
use super::entity::Properties;
use super::keys;
pub use super::operation::{Operation, MAX_TRANSACTION_OPERATIONS};
use crate::storage::connection::{self, error_code, status_of, DeliveryTracker, StorageAccount};
use crate::stream::StoreError;

/// Error code of a create-table request for a table that exists.
const TABLE_ALREADY_EXISTS: &str = "TableAlreadyExists";
/// Error code of a request to a table that does not exist.
const TABLE_NOT_FOUND: &str = "TableNotFound";
/// Most entities the service returns in one query page.
pub const MAX_QUERY_PAGE: u32 = 1_000;

/// Passes in a row that delete nothing before [`TableApi::delete_partition_rows`] gives up.
const MAX_FRUITLESS_DELETE_PASSES: u32 = 8;

/// What storage did with a transaction that it answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BatchOutcome {
    /// Every operation was applied.
    Committed,
    /// Nothing was applied; `status` is the status of the operation that failed.
    RolledBack { status: u16 },
}

/// What storage did with a single-entity write that it answered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EntityOutcome {
    /// The write was applied; `etag` is the row's new ETag when the answer carries one (an
    /// insert's and a merge's do, a delete's does not).
    Written { etag: Option<Etag> },
    /// Nothing was applied: storage refused the write for the entity's sake (its condition did
    /// not hold, or its content); `status` is the answer's `4xx` status.
    Refused { status: u16 },
}

/// The `Content-Type` of an entity body.
const JSON: &str = "application/json";
/// The `Accept` header `azure_data_tables` sends with an insert.
const ACCEPT_FULL_METADATA: &str = "application/json;odata=fullmetadata";
/// Asks storage not to echo an inserted entity (the answer is `204` without a body).
const RETURN_NO_CONTENT: &str = "return-no-content";

/// A point-read entity with its ETag.
pub struct Fetched {
    pub entity: Properties,
    pub etag: Etag,
}

/// The table of one store.
pub struct TableApi {
    table: TableClient,
    /// The pipeline transactions are sent through: the crate's, built from the same options
    /// and credentials.
    pipeline: Pipeline,
    urls: TableUrls,
    /// `{endpoint}/{table}`, where an entity is inserted and below which entity URLs are.
    table_url: Url,
    created: OnceCell<()>,
}

impl TableApi {
    /// Table `table_name` of `account`, reached with `options`. No I/O.
    pub fn new(
        account: &StorageAccount,
        table_name: &str,
        options: ClientOptions,
    ) -> Result<Self, String> {
        let service = account
            .table_service_client_with_options(options.clone())
            .map_err(|e| e.to_string())?;
        let urls = TableUrls::new(account.table_endpoint().unwrap_or_default(), table_name)?;
        let table_url = Url::parse(urls.table())
            .map_err(|e| format!("the table URL of {table_name} is not a URL: {e}"))?;
        let pipeline = account
            .request_pipeline(options)
            .map_err(|e| e.to_string())?;
        Ok(Self {
            table: service.table_client(table_name.to_owned()),
            pipeline,
            urls,
            table_url,
            created: OnceCell::new(),
        })
    }

    /// The table's own client, for what this type does not wrap.
    pub fn table_client(&self) -> &TableClient {
        &self.table
    }

    /// Length of the table's URL, for bounding the size of a transaction body.
    pub fn table_url_bytes(&self) -> usize {
        self.urls.table().len()
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
        operations: Vec<Operation<'_>>,
        what: &str,
    ) -> Result<BatchOutcome, StoreError> {
        let statuses = self
            .transaction_statuses(partition_key, &operations, what)
            .await?;
        outcome(&statuses, operations.len()).map_err(|detail| StoreError::Corrupt {
            stream: what.to_owned(),
            detail,
        })
    }

    /// Sends `operations` as one entity group transaction in `partition_key`; the statuses of
    /// storage's answer, in order (a rolled-back batch answers with the failing one only).
    pub(crate) async fn transaction_statuses(
        &self,
        partition_key: &str,
        operations: &[Operation<'_>],
        what: &str,
    ) -> Result<Vec<u16>, StoreError> {
        let corrupt = |detail: String| StoreError::Corrupt {
            stream: what.to_owned(),
            detail,
        };
        let size_hint = body_size_hint(operations, self.urls.table().len() + partition_key.len());
        let batch = batch_request::encode(&self.urls, partition_key, operations, size_hint)
            .map_err(|error| corrupt(format!("could not build the transaction: {error}")))?;
        let mut headers = Headers::new();
        headers.insert(CONTENT_TYPE, batch.content_type);
        let mut request = connection::storage_request(
            self.urls.batch().clone(),
            Method::Post,
            headers,
            Some(bytes::Bytes::from(batch.body)),
        );
        let (result, tracker) = self.send_write(&mut request).await;
        let response = result.map_err(|error| map_error(&error, what, Some(&tracker)))?;
        let (_, headers, mut body) = response.deconstruct();
        let mut answer = Vec::new();
        while let Some(chunk) = body.next().await {
            // Storage answered 2xx: the batch may be applied even though its answer is lost.
            let chunk = chunk.map_err(|error| StoreError::Unavailable {
                message: format!(
                    "the answer to a transaction on {what} was cut off: {}",
                    connection::describe_error(&error)
                ),
                maybe_applied: true,
            })?;
            if answer.len().saturating_add(chunk.len()) > MAX_ANSWER_BYTES {
                return Err(corrupt(format!(
                    "storage answered a transaction with more than {MAX_ANSWER_BYTES} bytes"
                )));
            }
            answer.extend_from_slice(&chunk);
        }
        batch_answer::statuses(connection::header_value(&headers, &CONTENT_TYPE), &answer).map_err(
            |error| {
                corrupt(format!(
                    "storage answered a transaction unreadably: {error}"
                ))
            },
        )
    }

    /// Inserts `entity` (which carries its keys): [`EntityOutcome::Refused`] with 409 if the
    /// row exists. Storage is asked not to echo the entity.
    pub async fn insert_entity(
        &self,
        entity: &Properties,
        what: &str,
    ) -> Result<EntityOutcome, StoreError> {
        let mut headers = Headers::new();
        headers.insert(PREFER, RETURN_NO_CONTENT);
        headers.insert(ACCEPT, ACCEPT_FULL_METADATA);
        headers.insert(CONTENT_TYPE, JSON);
        let body = entity_body(entity, what)?;
        let url = self.table_url.clone();
        self.write_entity(url, Method::Post, headers, Some(body), refused_status, what)
            .await
    }

    /// Merges `properties` into the row (`partition_key`, `row_key`) under `if_match`:
    /// [`EntityOutcome::Refused`] with 404 if the row is missing, 412 if its ETag differs.
    pub async fn merge_entity(
        &self,
        partition_key: &str,
        row_key: &str,
        properties: &Properties,
        if_match: IfMatchCondition,
        what: &str,
    ) -> Result<EntityOutcome, StoreError> {
        let mut headers = Headers::new();
        headers.insert(CONTENT_TYPE, JSON);
        headers.add(if_match);
        let body = entity_body(properties, what)?;
        let url = self.entity_url(partition_key, row_key, what)?;
        self.write_entity(
            url,
            Method::Merge,
            headers,
            Some(body),
            refused_status,
            what,
        )
        .await
    }

    /// Deletes the row (`partition_key`, `row_key`) under `if_match`:
    /// [`EntityOutcome::Refused`] with 404 if the row is missing (its table too: there is
    /// nothing to delete either way), 412 if its ETag differs.
    pub async fn delete_entity(
        &self,
        partition_key: &str,
        row_key: &str,
        if_match: IfMatchCondition,
        what: &str,
    ) -> Result<EntityOutcome, StoreError> {
        let mut headers = Headers::new();
        headers.add(if_match);
        let url = self.entity_url(partition_key, row_key, what)?;
        let refused = refused_delete_status;
        self.write_entity(url, Method::Delete, headers, None, refused, what)
            .await
    }

    /// The URL of one entity, as `azure_data_tables` builds it ([`TableUrls::entity`], the
    /// transactions' own).
    fn entity_url(
        &self,
        partition_key: &str,
        row_key: &str,
        what: &str,
    ) -> Result<Url, StoreError> {
        Url::parse(&self.urls.entity(partition_key, row_key)).map_err(|error| {
            StoreError::Misconfigured(format!("the entity URL of {what} is not a URL: {error}"))
        })
    }

    /// Sends one single-entity write; its outcome is the answer's status, a failure one of the
    /// refusals `refused` picks out or an error [`map_error`] classifies.
    async fn write_entity(
        &self,
        url: Url,
        method: Method,
        headers: Headers,
        body: Option<Vec<u8>>,
        refused: fn(&azure_core::Error) -> Option<u16>,
        what: &str,
    ) -> Result<EntityOutcome, StoreError> {
        let mut request =
            connection::storage_request(url, method, headers, body.map(bytes::Bytes::from));
        let (result, tracker) = self.send_write(&mut request).await;
        match result {
            // The retry policy turns every answer that is not 2xx into an error, so this is a
            // success; only its ETag is read (a 204 has no body).
            Ok(response) => Ok(EntityOutcome::Written {
                etag: connection::header_value(response.headers(), &ETAG).map(Etag::from),
            }),
            Err(error) => match refused(&error) {
                Some(status) => Ok(EntityOutcome::Refused { status }),
                None => Err(map_error(&error, what, Some(&tracker))),
            },
        }
    }

    /// Sends a write through the pipeline with a fresh [`DeliveryTracker`], which says after a
    /// failure whether any attempt may have been applied.
    async fn send_write(
        &self,
        request: &mut Request,
    ) -> (azure_core::Result<Response>, DeliveryTracker) {
        let tracker = DeliveryTracker::new();
        let mut context = tracker.context();
        context.insert(ServiceType::Table);
        let result = self.pipeline.send(&context, request).await;
        (result, tracker)
    }
}

/// An entity's JSON body, as the crate writes it.
fn entity_body(properties: &Properties, what: &str) -> Result<Vec<u8>, StoreError> {
    serde_json::to_vec(properties).map_err(|error| StoreError::Corrupt {
        stream: what.to_owned(),
        detail: format!("could not write the entity: {error}"),
    })
}

/// The status of a single-entity write that storage refused for the entity's sake: a `4xx`
/// other than those about the request as a whole (authorization 401/403, timeout 408,
/// throttling 429) or the table (it does not exist), which [`map_error`] classifies.
fn refused_status(error: &azure_core::Error) -> Option<u16> {
    let status = u16::from(status_of(error)?);
    let about_the_request =
        matches!(status, 401 | 403 | 408 | 429) || error_code(error) == Some(TABLE_NOT_FOUND);
    ((400..500).contains(&status) && !about_the_request).then_some(status)
}

/// [`refused_status`] for a delete, where a missing table is a missing row (404) too.
fn refused_delete_status(error: &azure_core::Error) -> Option<u16> {
    match status_of(error) {
        Some(StatusCode::NotFound) => Some(404),
        _ => refused_status(error),
    }
}

/// What a transaction of `expected` operations did, from its answer's statuses: rolled back
/// at the first failing status, committed if all of the operations answered 2xx.
fn outcome(statuses: &[u16], expected: usize) -> Result<BatchOutcome, String> {
    if let Some(&failed) = statuses.iter().find(|s| !(200..300).contains(*s)) {
        return Ok(BatchOutcome::RolledBack { status: failed });
    }
    if statuses.len() != expected {
        return Err(format!(
            "storage answered a transaction of {expected} operations with {} responses",
            statuses.len()
        ));
    }
    Ok(BatchOutcome::Committed)
}

/// The names and punctuation of an entity body's `PartitionKey` and `RowKey`.
const KEYS_JSON_BYTES: usize = 32;

/// About the body length of a transaction of `operations` whose entity URLs are about
/// `url_bytes` long (an estimate for sizing the buffer once, not a bound).
fn body_size_hint(operations: &[Operation], url_bytes: usize) -> usize {
    let entity_bytes = |properties: &Properties| -> usize {
        properties
            .iter()
            .map(|(name, value)| {
                name.len()
                    + match value {
                        serde_json::Value::String(text) => text.len() + text.len() / 8,
                        _ => 24,
                    }
                    + 6
            })
            .sum()
    };
    operations
        .iter()
        .map(|operation| {
            OPERATION_FRAMING_BYTES
                + url_bytes
                + match operation {
                    Operation::Insert(p)
                    | Operation::Merge { properties: p, .. }
                    | Operation::Upsert { properties: p, .. }
                    | Operation::Replace { properties: p, .. } => entity_bytes(p),
                    Operation::InsertRow { row_key, row } => {
                        url_bytes + row_key.len() + row.json_bytes_bound() + KEYS_JSON_BYTES
                    }
                    Operation::MergeRow { row, .. } => row.json_bytes_bound(),
                    Operation::Delete { .. } => 0,
                }
        })
        .sum::<usize>()
        + OPERATION_FRAMING_BYTES
}

/// Classifies an error of the azure crates (see [`connection::map_error`]).
pub(crate) fn map_error(
    error: &azure_core::Error,
    what: &str,
    write: Option<&DeliveryTracker>,
) -> StoreError {
    connection::map_error(error, what, write, TABLE_NOT_FOUND, "table")
}

#[cfg(test)]
mod outcome_tests {
    use super::*;

    #[test]
    fn each_outcome_of_an_answer() {
        assert_eq!(outcome(&[204, 204, 201], 3), Ok(BatchOutcome::Committed));
        // A rolled-back batch answers 202 with the failing operation's status only.
        assert_eq!(
            outcome(&[409], 3),
            Ok(BatchOutcome::RolledBack { status: 409 })
        );
        assert_eq!(
            outcome(&[204, 412], 3),
            Ok(BatchOutcome::RolledBack { status: 412 })
        );
        // All succeeded, but not one response per operation: not a shape storage sends.
        assert!(outcome(&[204, 204], 3).is_err());
        assert!(outcome(&[204, 204, 204, 204], 3).is_err());
        assert!(outcome(&[], 1).is_err());
    }

    #[test]
    fn a_single_entity_write_is_refused_only_for_the_entity() {
        let answered = |status: StatusCode, code: &str| {
            azure_core::Error::message(
                azure_core::error::ErrorKind::http_response(status, Some(code.to_owned())),
                "answered",
            )
        };
        for (status, code) in [
            (StatusCode::Conflict, "EntityAlreadyExists"),
            (
                StatusCode::PreconditionFailed,
                "UpdateConditionNotSatisfied",
            ),
            (StatusCode::NotFound, "ResourceNotFound"),
            (StatusCode::BadRequest, "InvalidInput"),
            (StatusCode::PayloadTooLarge, "EntityTooLarge"),
        ] {
            let refused = refused_status(&answered(status, code));
            assert_eq!(refused, Some(u16::from(status)), "{code}");
        }
        // About the request, the table or the service: classified by `map_error`.
        for (status, code) in [
            (StatusCode::NotFound, TABLE_NOT_FOUND),
            (StatusCode::Unauthorized, "InvalidAuthenticationInfo"),
            (StatusCode::Forbidden, "AuthenticationFailed"),
            (StatusCode::RequestTimeout, "OperationTimedOut"),
            (StatusCode::TooManyRequests, "TooManyRequests"),
            (StatusCode::InternalServerError, "InternalError"),
            (StatusCode::ServiceUnavailable, "ServerBusy"),
        ] {
            assert_eq!(refused_status(&answered(status, code)), None, "{code}");
        }
        let unreachable =
            azure_core::Error::message(azure_core::error::ErrorKind::Io, "connection refused");
        assert_eq!(refused_status(&unreachable), None);
        // A delete finds no row in a missing table either.
        let table_gone = answered(StatusCode::NotFound, TABLE_NOT_FOUND);
        assert_eq!(refused_delete_status(&table_gone), Some(404));
        let busy = answered(StatusCode::ServiceUnavailable, "ServerBusy");
        assert_eq!(refused_delete_status(&busy), None);
    }
}
