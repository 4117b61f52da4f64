//! One operation of an entity group transaction, as the Table backend asks for it: what it
//! does to one row and under which `If-Match` condition. `batch_request` writes these to the
//! wire and `client::TableApi::transaction` runs them.
//!
//! Guarantees: an operation names its row by RowKey only (the partition is the transaction's)
//! and carries an `If-Match` exactly where its variant says so. Its properties are either a
//! property map ([`Properties`]) or one of an append's rows ([`AppendRow`], written from its
//! typed values without a map); both reach storage as the same kind of request.

use azure_data_tables::prelude::IfMatchCondition;

use super::append_rows::AppendRow;
use super::entity::Properties;

/// Most operations in one entity group transaction (the service's limit).
pub const MAX_TRANSACTION_OPERATIONS: usize = 100;

/// One operation of an entity group transaction; `'a` is how long the rows it borrows live.
#[derive(Debug, Clone)]
pub enum Operation<'a> {
    /// Insert a new entity (the entity carries its keys); 409 if it exists.
    Insert(Properties),
    /// Insert an append's row as the entity (`PartitionKey` the transaction's, `RowKey`
    /// `row_key`); 409 if it exists.
    InsertRow { row_key: String, row: AppendRow<'a> },
    /// Merge properties into an existing entity; 404 if it is missing, 412 on a stale ETag.
    Merge {
        row_key: String,
        properties: Properties,
        if_match: IfMatchCondition,
    },
    /// Merge an append's row into an existing entity; 404 if it is missing, 412 on a stale
    /// ETag.
    MergeRow {
        row_key: String,
        row: AppendRow<'a>,
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
