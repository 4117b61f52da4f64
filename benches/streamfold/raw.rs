//! The raw baselines: the storage operations streamfold is built on, sent directly to Azurite
//! with the same crates and the same client configuration
//! (`streamfold::testing::RawClients`: `table_service_client` / `blob_service_client`), with none of
//! streamfold's code in between.
//!
//! Guarantees, so that "raw" is a fair baseline and not a strawman:
//! - a raw Table append is ONE entity group transaction with the same operations and the same
//!   bytes as streamfold's append with a known version (see the layout documented in
//!   `src/storage/table/mod.rs`): merge the header with the new version (`If-Match: *`), merge
//!   the previous event row with no properties (`If-Match: *`), insert the event row (same
//!   properties and data), insert the event-id row; its outcome is read from every operation's
//!   status, as the crate answers `Ok` for a rolled-back batch;
//! - a raw Append Blob append is one `Append Block` of the same size as streamfold's record,
//!   with `x-ms-blob-condition-appendpos`;
//! - raw reads are the crate's paged query of the same rows (1,000 a page), and the open-ended
//!   download of the same blob, with no decoding beyond what the crate does.
//!
//! The key formats below mirror the Table backend's documented layout on purpose: the raw rows
//! must look like streamfold's rows to cost the same.

use anyhow::{bail, Context};
use azure_data_tables::prelude::{Filter, IfMatchCondition, TableClient};
use azure_storage_blobs::prelude::{ConditionAppendPosition, ContainerClient};
use bytes::Bytes;
use futures::StreamExt;
use serde_json::{json, Map, Value};
use streamfold::storage::StorageAccount;
use streamfold::testing::azure::error_code;
use streamfold::testing::RawClients;
use uuid::Uuid;

/// RowKey of a stream's header row (mirrors the Table backend's layout).
const HEADER_ROW_KEY: &str = "HEAD";
/// Digits of the zero-padded sequence number in an event RowKey.
const SEQUENCE_WIDTH: usize = 10;
/// Event RowKey prefix.
const EVENT_ROW_PREFIX: &str = "E-";
/// Event-id RowKey prefix.
const EVENT_ID_ROW_PREFIX: &str = "ID-";
/// Error code of creating a table that exists.
const TABLE_ALREADY_EXISTS: &str = "TableAlreadyExists";
/// HTTP status of a missing entity.
const NOT_FOUND: u16 = 404;
/// Error code of creating a container that exists.
const CONTAINER_ALREADY_EXISTS: &str = "ContainerAlreadyExists";
/// An open-ended read: larger than any blob and over 4 MiB, so the crate asks for no CRC64
/// (which strict Azurite refuses); the same trick streamfold's blob reads use.
const OPEN_ENDED_READ_BYTES: u64 = 1 << 40;

fn event_row_key(sequence: u64) -> String {
    format!("{EVENT_ROW_PREFIX}{sequence:0SEQUENCE_WIDTH$}")
}

/// The outcome of creating something (a table, a container): done, or already there (the error
/// `already_exists`); any other error as it is.
fn created_or_there<T>(
    created: azure_core::Result<T>,
    already_exists: &str,
) -> azure_core::Result<()> {
    match created {
        Ok(_) => Ok(()),
        Err(error) if error_code(&error) == Some(already_exists) => Ok(()),
        Err(error) => Err(error),
    }
}

fn int64(properties: &mut Map<String, Value>, name: &str, value: u64) {
    properties.insert(format!("{name}@odata.type"), json!("Edm.Int64"));
    properties.insert(name.to_owned(), json!(value.to_string()));
}

fn now_text() -> String {
    let now = time::OffsetDateTime::now_utc();
    format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:07}Z",
        now.year(),
        u8::from(now.month()),
        now.day(),
        now.hour(),
        now.minute(),
        now.second(),
        now.nanosecond() / 100
    )
}

/// A table reached directly with the crate.
#[derive(Clone)]
pub struct RawTable {
    table: TableClient,
}

/// A raw stream: its partition and version.
#[derive(Debug, Clone)]
pub struct RawTableStream {
    pub partition_key: String,
    pub version: u64,
}

impl RawTable {
    pub fn new(account: &StorageAccount, table_name: &str) -> anyhow::Result<Self> {
        Ok(Self {
            table: account.table_service_client()?.table_client(table_name),
        })
    }

    pub async fn ensure_table(&self) -> anyhow::Result<()> {
        created_or_there(self.table.create().await, TABLE_ALREADY_EXISTS)
            .context("creating the table")
    }

    /// The event row of `sequence` with the properties streamfold writes for an event.
    fn event_row(partition_key: &str, sequence: u64, event_id: Uuid, data: &str) -> Value {
        let mut row = Map::new();
        row.insert("PartitionKey".into(), json!(partition_key));
        row.insert("RowKey".into(), json!(event_row_key(sequence)));
        row.insert("EventId".into(), json!(event_id.hyphenated().to_string()));
        row.insert("EventType".into(), json!(crate::env::MONEY_DEPOSITED));
        row.insert("Recorded@odata.type".into(), json!("Edm.DateTime"));
        row.insert("Recorded".into(), json!(now_text()));
        row.insert(
            "CorrelationId".into(),
            json!(Uuid::new_v4().hyphenated().to_string()),
        );
        row.insert("Data".into(), json!(data));
        Value::Object(row)
    }

    fn id_row(partition_key: &str, event_id: Uuid, sequence: u64) -> Value {
        let mut row = Map::new();
        row.insert("PartitionKey".into(), json!(partition_key));
        row.insert(
            "RowKey".into(),
            json!(format!("{EVENT_ID_ROW_PREFIX}{}", event_id.hyphenated())),
        );
        int64(&mut row, "Sequence", sequence);
        int64(&mut row, "FirstSequence", sequence);
        int64(&mut row, "LastSequence", sequence);
        Value::Object(row)
    }

    /// Creates a stream in `partition_key` with one event (header, event row, id row).
    pub async fn create_stream(&self, partition_key: &str) -> anyhow::Result<RawTableStream> {
        let event_id = Uuid::new_v4();
        let mut header = Map::new();
        header.insert("PartitionKey".into(), json!(partition_key));
        header.insert("RowKey".into(), json!(HEADER_ROW_KEY));
        int64(&mut header, "Version", 1);
        header.insert("Created@odata.type".into(), json!("Edm.DateTime"));
        header.insert("Created".into(), json!(now_text()));
        let batch = self
            .table
            .partition_key_client(partition_key)
            .transaction()
            .insert(Value::Object(header))?
            .insert(Self::event_row(
                partition_key,
                1,
                event_id,
                crate::env::EVENT_DATA,
            ))?
            .insert(Self::id_row(partition_key, event_id, 1))?;
        let statuses = batch
            .await?
            .operation_responses
            .iter()
            .map(|r| u16::from(r.status_code))
            .collect();
        check_batch(statuses, partition_key)?;
        Ok(RawTableStream {
            partition_key: partition_key.to_owned(),
            version: 1,
        })
    }

    /// Appends one event as one transaction of the same four operations streamfold sends for
    /// an append with a known version.
    pub async fn append(&self, stream: &mut RawTableStream, data: &str) -> anyhow::Result<()> {
        let next = stream.version + 1;
        let event_id = Uuid::new_v4();
        let pk = &stream.partition_key;
        let mut header = Map::new();
        int64(&mut header, "Version", next);
        let batch = self
            .table
            .partition_key_client(pk.clone())
            .transaction()
            .merge(
                HEADER_ROW_KEY,
                Value::Object(header),
                Some(IfMatchCondition::Any),
            )?
            .merge(
                event_row_key(stream.version),
                Value::Object(Map::new()),
                Some(IfMatchCondition::Any),
            )?
            .insert(Self::event_row(pk, next, event_id, data))?
            .insert(Self::id_row(pk, event_id, next))?;
        let statuses = batch
            .await?
            .operation_responses
            .iter()
            .map(|r| u16::from(r.status_code))
            .collect();
        check_batch(statuses, pk)?;
        stream.version = next;
        Ok(())
    }

    /// One point read of an entity (the header row, say).
    pub async fn point_read(&self, partition_key: &str, row_key: &str) -> anyhow::Result<()> {
        self.table
            .partition_key_client(partition_key)
            .entity_client(row_key)
            .get::<Map<String, Value>>()
            .await
            .with_context(|| format!("point read of {partition_key}/{row_key}"))?;
        Ok(())
    }

    /// One point read that may find nothing (404 is not an error); whether the row exists.
    pub async fn point_read_optional(
        &self,
        partition_key: &str,
        row_key: &str,
    ) -> anyhow::Result<bool> {
        let result = self
            .table
            .partition_key_client(partition_key)
            .entity_client(row_key)
            .get::<Map<String, Value>>()
            .await;
        match result {
            Ok(_) => Ok(true),
            Err(error)
                if matches!(
                    error.kind(),
                    azure_core::error::ErrorKind::HttpResponse { status, .. }
                        if u16::from(*status) == NOT_FOUND
                ) =>
            {
                Ok(false)
            }
            Err(error) => Err(error).context("point read"),
        }
    }

    /// Inserts a small row (a read-model row's keys and a sequence number).
    pub async fn insert_row(
        &self,
        partition_key: &str,
        row_key: &str,
        sequence: u64,
    ) -> anyhow::Result<()> {
        let mut row = Map::new();
        row.insert("PartitionKey".into(), json!(partition_key));
        row.insert("RowKey".into(), json!(row_key));
        int64(&mut row, "Sequence", sequence);
        self.table
            .insert::<_, Map<String, Value>>(Value::Object(row))?
            .await
            .with_context(|| format!("inserting {partition_key}/{row_key}"))?;
        Ok(())
    }

    /// Reads every event row of a partition with the crate's paged query; returns how many.
    pub async fn read_event_rows(&self, partition_key: &str) -> anyhow::Result<usize> {
        self.read_event_rows_from(partition_key, 1).await
    }

    /// Reads the event rows of a partition from sequence `from` on; returns how many.
    pub async fn read_event_rows_from(
        &self,
        partition_key: &str,
        from: u64,
    ) -> anyhow::Result<usize> {
        let filter = format!(
            "PartitionKey eq '{}' and RowKey ge '{}' and RowKey le '{}'",
            partition_key.replace('\'', "''"),
            event_row_key(from),
            event_row_key(10_u64.pow(SEQUENCE_WIDTH as u32) - 1)
        );
        let mut pages = self
            .table
            .query()
            .filter(Filter::new(filter))
            .into_stream::<Map<String, Value>>();
        let mut rows = 0;
        while let Some(page) = pages.next().await {
            rows += page.context("a page of the raw query")?.entities.len();
        }
        Ok(rows)
    }
}

/// Fails unless every operation of a transaction succeeded (`statuses` in order).
fn check_batch(statuses: Vec<u16>, partition_key: &str) -> anyhow::Result<()> {
    if statuses.is_empty() || statuses.iter().any(|s| !(200..300).contains(s)) {
        bail!("raw transaction in {partition_key} was rolled back: statuses {statuses:?}");
    }
    Ok(())
}

/// A container reached directly with the crate.
#[derive(Clone)]
pub struct RawBlobs {
    container: ContainerClient,
}

/// A raw append blob and its length.
#[derive(Debug, Clone)]
pub struct RawAppendBlob {
    pub name: String,
    pub length: u64,
}

impl RawBlobs {
    pub fn new(account: &StorageAccount, container: &str) -> anyhow::Result<Self> {
        Ok(Self {
            container: account.blob_service_client()?.container_client(container),
        })
    }

    pub async fn ensure_container(&self) -> anyhow::Result<()> {
        created_or_there(self.container.create().await, CONTAINER_ALREADY_EXISTS)
            .context("creating the container")
    }

    /// Creates an empty append blob.
    pub async fn create(&self, name: &str) -> anyhow::Result<RawAppendBlob> {
        self.container
            .blob_client(name)
            .put_append_blob()
            .await
            .with_context(|| format!("creating append blob {name}"))?;
        Ok(RawAppendBlob {
            name: name.to_owned(),
            length: 0,
        })
    }

    /// Appends `block` at the blob's known length (`x-ms-blob-condition-appendpos`).
    pub async fn append(&self, blob: &mut RawAppendBlob, block: Bytes) -> anyhow::Result<()> {
        let length = block.len() as u64;
        self.container
            .blob_client(&blob.name)
            .append_block(block)
            .condition_append_position(ConditionAppendPosition::from(blob.length))
            .await
            .with_context(|| format!("appending to {}", blob.name))?;
        blob.length += length;
        Ok(())
    }

    /// The total length of the blobs whose names start with `prefix`.
    pub async fn total_length(&self, prefix: &str) -> anyhow::Result<u64> {
        let mut pages = self
            .container
            .list_blobs()
            .prefix(prefix.to_owned())
            .into_stream();
        let mut total = 0;
        while let Some(page) = pages.next().await {
            for blob in page?.blobs.blobs() {
                total += blob.properties.content_length;
            }
        }
        Ok(total)
    }

    /// The names of the blobs whose names start with `prefix`.
    pub async fn names(&self, prefix: &str) -> anyhow::Result<Vec<String>> {
        let mut pages = self
            .container
            .list_blobs()
            .prefix(prefix.to_owned())
            .into_stream();
        let mut names = Vec::new();
        while let Some(page) = pages.next().await {
            names.extend(page?.blobs.blobs().map(|b| b.name.clone()));
        }
        Ok(names)
    }

    /// Downloads a whole blob with one open-ended read; returns its bytes.
    pub async fn download(&self, name: &str) -> anyhow::Result<Bytes> {
        let mut pages = self
            .container
            .blob_client(name)
            .get()
            .range(0..OPEN_ENDED_READ_BYTES)
            .chunk_size(OPEN_ENDED_READ_BYTES)
            .into_stream();
        let mut out = Vec::new();
        while let Some(page) = pages.next().await {
            let page = page.with_context(|| format!("downloading {name}"))?;
            out.extend_from_slice(&page.data.collect().await?);
        }
        Ok(Bytes::from(out))
    }
}
