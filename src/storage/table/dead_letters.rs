//! Dead letters in Table storage ([`TableDeadLetters`]): the [`DeadLetterStore`] contract in
//! one table per storage account.
//!
//! [`TableDeadLetters`] keeps the letters of one backend in the table [`DEAD_LETTER_TABLE`]
//! (`streamfolddeadletters`) of that backend's storage account, Table and Append Blob backends
//! alike:
//! - PartitionKey: the backend, `{Table|AppendBlob}|{table or container name}` (one partition
//!   per event store, so two stores of one account never see each other's letters);
//! - RowKey: the notification id (lower-case, hyphenated; so a listing is in id order);
//! - `Domain`, `Entity`, `Instance` (strings), `Sequence` (`Edm.Int64`), `Kind` (`NewEntity` or
//!   `NewEvent`), `EventType` (the notification's, e.g. `Bank.Account.MoneyDeposited`);
//! - `Status` (`Edm.Int64`: the topic's HTTP status; 0 when nothing could be sent, for a
//!   notification that cannot be encoded), `Reason` (the topic's error text, at most
//!   [`MAX_REASON_CHARS`] characters), `Endpoint` (the topic, without query string), and
//!   `DeadLetteredAt` (`Edm.DateTime`, when it was last refused).

use std::sync::Arc;

use async_trait::async_trait;
use azure_core::StatusCode;
use azure_data_tables::prelude::TableClient;
use serde_json::Value;
use uuid::Uuid;

use super::client::{map_error, BatchOutcome, Operation, TableApi};
use super::entity::{
    self, get_str, get_time, get_u64, set_int64, set_time, with_keys, Properties, PARTITION_KEY,
    ROW_KEY,
};
use super::keys::{odata_string, url_key};
use crate::storage::connection::{status_of, StorageAccount};
use crate::stream::{
    DeadLetter, DeadLetterPage, DeadLetterStore, NotificationKind, StoreError, UnreadableEntry,
};

/// The table of dead letters, in each backend's storage account.
pub const DEAD_LETTER_TABLE: &str = "streamfolddeadletters";
/// Property names of a dead-letter row.
pub const DOMAIN: &str = "Domain";
pub const ENTITY: &str = "Entity";
pub const INSTANCE: &str = "Instance";
pub const SEQUENCE: &str = entity::SEQUENCE;
pub const KIND: &str = "Kind";
pub const EVENT_TYPE: &str = entity::EVENT_TYPE;
pub const STATUS: &str = "Status";
pub const REASON: &str = "Reason";
pub const ENDPOINT: &str = "Endpoint";
pub const DEAD_LETTERED_AT: &str = "DeadLetteredAt";
/// Names the dead letters in errors.
const WHAT: &str = "the notification dead letters";
/// Dead letters in the [`DEAD_LETTER_TABLE`] of a storage account (see the module
/// documentation). Cheap to clone; clones share the table client.
#[derive(Clone)]
pub struct TableDeadLetters {
    partition: String,
    api: Arc<Result<(TableApi, TableClient), String>>,
}

impl std::fmt::Debug for TableDeadLetters {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TableDeadLetters")
            .field("partition", &self.partition)
            .finish_non_exhaustive()
    }
}

impl TableDeadLetters {
    /// The letters of the backend named `backend` (its partition, e.g. `Table|streamfold`) in
    /// [`DEAD_LETTER_TABLE`] of `account`. No I/O: the table is created on first use.
    pub fn new(account: &StorageAccount, backend: impl Into<String>) -> Self {
        Self::with_table_name(account, DEAD_LETTER_TABLE, backend)
    }

    /// The same in another table (tests use one table each).
    pub fn with_table_name(
        account: &StorageAccount,
        table_name: &str,
        backend: impl Into<String>,
    ) -> Self {
        let api = account
            .client_options()
            .map_err(|e| e.to_string())
            .and_then(|options| TableApi::new(account, table_name, options))
            .map(|api| {
                let table = api.table_client().clone();
                (api, table)
            });
        Self {
            partition: backend.into(),
            api: Arc::new(api),
        }
    }

    /// The backend's partition.
    pub fn partition(&self) -> &str {
        &self.partition
    }

    async fn api(&self) -> Result<&(TableApi, TableClient), StoreError> {
        let api = self
            .api
            .as_ref()
            .as_ref()
            .map_err(|reason| StoreError::Misconfigured(reason.clone()))?;
        api.0.ensure_table().await?;
        Ok(api)
    }
}

/// The properties of `letter` (without keys).
fn encode(letter: &DeadLetter) -> Properties {
    let mut p = Properties::new();
    p.insert(DOMAIN.into(), Value::String(letter.domain.clone()));
    p.insert(ENTITY.into(), Value::String(letter.entity.clone()));
    p.insert(INSTANCE.into(), Value::String(letter.instance.clone()));
    set_int64(&mut p, SEQUENCE, letter.sequence_number);
    p.insert(
        KIND.into(),
        Value::String(letter.notification_kind.as_str().to_owned()),
    );
    p.insert(EVENT_TYPE.into(), Value::String(letter.event_type.clone()));
    set_int64(&mut p, STATUS, letter.status.map_or(0, u64::from));
    p.insert(REASON.into(), Value::String(letter.reason.clone()));
    p.insert(ENDPOINT.into(), Value::String(letter.endpoint.clone()));
    set_time(&mut p, DEAD_LETTERED_AT, letter.dead_lettered_at);
    p
}

/// A row back as a letter.
fn decode(row: &Properties) -> Result<DeadLetter, String> {
    let row_key = get_str(row, ROW_KEY)?;
    let id = Uuid::parse_str(row_key).map_err(|e| format!("RowKey {row_key:?}: {e}"))?;
    let kind = match get_str(row, KIND)? {
        "NewEntity" => NotificationKind::NewEntity,
        "NewEvent" => NotificationKind::NewEvent,
        "DeletedEntity" => NotificationKind::DeletedEntity,
        other => return Err(format!("property {KIND} is {other:?}")),
    };
    let status = match get_u64(row, STATUS)? {
        0 => None,
        status => {
            Some(u16::try_from(status).map_err(|_| format!("property {STATUS} is {status}"))?)
        }
    };
    Ok(DeadLetter {
        id,
        domain: get_str(row, DOMAIN)?.to_owned(),
        entity: get_str(row, ENTITY)?.to_owned(),
        instance: get_str(row, INSTANCE)?.to_owned(),
        sequence_number: get_u64(row, SEQUENCE)?,
        notification_kind: kind,
        event_type: get_str(row, EVENT_TYPE)?.to_owned(),
        status,
        reason: get_str(row, REASON)?.to_owned(),
        endpoint: get_str(row, ENDPOINT)?.to_owned(),
        dead_lettered_at: get_time(row, DEAD_LETTERED_AT)?,
    })
}

#[async_trait]
impl DeadLetterStore for TableDeadLetters {
    async fn put(&self, letter: &DeadLetter) -> Result<(), StoreError> {
        let (api, _) = self.api().await?;
        let what = format!("dead letter {}", letter.id);
        let operation = Operation::Upsert {
            row_key: letter.id.to_string(),
            properties: encode(letter),
        };
        match api
            .transaction(&self.partition, vec![operation], &what)
            .await?
        {
            BatchOutcome::Committed => Ok(()),
            BatchOutcome::RolledBack { status } => Err(StoreError::Misconfigured(format!(
                "storage refused {what} with HTTP {status}"
            ))),
        }
    }

    async fn get(&self, id: Uuid) -> Result<Option<DeadLetter>, StoreError> {
        let (api, _) = self.api().await?;
        let what = format!("dead letter {id}");
        let Some(fetched) = api.get(&self.partition, &id.to_string(), &what).await? else {
            return Ok(None);
        };
        let row = with_keys(&self.partition, &id.to_string(), &fetched.entity);
        decode(&row)
            .map(Some)
            .map_err(|detail| StoreError::Corrupt {
                stream: what,
                detail,
            })
    }

    async fn list(&self, after: Option<Uuid>, limit: usize) -> Result<DeadLetterPage, StoreError> {
        let (api, _) = self.api().await?;
        let mut filter = format!("{PARTITION_KEY} eq {}", odata_string(&self.partition));
        if let Some(after) = after {
            filter.push_str(&format!(
                " and {ROW_KEY} gt {}",
                odata_string(&after.to_string())
            ));
        }
        let wanted = limit.saturating_add(1);
        let rows = api.query(filter, Some(wanted), WHAT).await?;
        let more = rows.len() > limit;
        let mut page = DeadLetterPage::default();
        let mut last = None;
        for row in rows.iter().take(limit) {
            let row_key = get_str(row, ROW_KEY).unwrap_or_default().to_owned();
            last = Uuid::parse_str(&row_key).ok().or(last);
            match decode(row) {
                Ok(letter) => page.letters.push(letter),
                Err(detail) => page.unreadable.push(UnreadableEntry {
                    key: format!("{WHAT}: row {row_key:?} of partition {:?}", self.partition),
                    detail,
                }),
            }
        }
        page.next = if more { last } else { None };
        Ok(page)
    }

    async fn remove(&self, id: Uuid) -> Result<(), StoreError> {
        let (_, table) = self.api().await?;
        let result = table
            .partition_key_client(url_key(&self.partition))
            .entity_client(url_key(&id.to_string()))
            .delete()
            .await;
        match result {
            Ok(_) => Ok(()),
            Err(error) if status_of(&error) == Some(StatusCode::NotFound) => Ok(()),
            Err(error) => Err(map_error(&error, &format!("dead letter {id}"), None)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::notify::deadletter::sample_letter as letter;

    #[test]
    fn rows_round_trip() {
        let mut letter = letter("a|b 'c'", 7);
        letter.dead_lettered_at = entity::storage_time(letter.dead_lettered_at);
        let row = with_keys("Table|t", &letter.id.to_string(), &encode(&letter));
        assert_eq!(decode(&row).unwrap(), letter);
        assert_eq!(letter.status, Some(400));
        assert_eq!(letter.stream().unwrap().instance(), "a|b 'c'");
        let mut none = letter.clone();
        none.status = None;
        let row = with_keys("Table|t", &none.id.to_string(), &encode(&none));
        assert_eq!(decode(&row).unwrap().status, None);
        let mut bad = row.clone();
        bad.insert(KIND.into(), Value::from("Other"));
        assert!(decode(&bad).is_err());
    }
}
