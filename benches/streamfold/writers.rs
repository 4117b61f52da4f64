//! The four ways the benchmark appends one event to a stream with a known version, so that the
//! latency and throughput sections time exactly the same operation along each path:
//!
//! - [`Variant::Full`]: HTTP to the host simulator, which forwards to the handler, which
//!   appends with the backend (the path a client of a Function App takes);
//! - [`Variant::Handler`]: HTTP straight to the handler's port (the simulator's hop removed);
//! - [`Variant::Library`]: `EventStore::append` in this process (no HTTP at all);
//! - [`Variant::Raw`]: the storage operation alone, with the same crate ([`crate::raw`]).
//!
//! Every writer owns its stream and tracks its version, so every append states the exact
//! version and costs one storage request on every path.

use std::sync::Arc;

use anyhow::Context;
use bytes::Bytes;
use serde_json::value::RawValue;
use streamfold::stream::{EventMetadata, EventStore, ExpectedVersion, NewEvent, StreamId};
use uuid::Uuid;

use crate::env::{HttpStream, DOMAIN, EVENT_DATA, MONEY_DEPOSITED};
use crate::raw::{RawAppendBlob, RawBlobs, RawTable, RawTableStream};

/// A path from the caller to storage.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Variant {
    Full,
    Handler,
    Library,
    Raw,
}

impl Variant {
    pub const ALL: [Variant; 4] = [Self::Full, Self::Handler, Self::Library, Self::Raw];

    /// Short name used in row ids and stream names.
    pub fn key(self) -> &'static str {
        match self {
            Self::Full => "full",
            Self::Handler => "handler",
            Self::Library => "library",
            Self::Raw => "raw",
        }
    }

    /// How the row describes the streamfold side of this path.
    pub fn describe(self) -> &'static str {
        match self {
            Self::Full => "full path: HTTP -> host sim -> handler",
            Self::Handler => "HTTP -> handler (no host sim)",
            Self::Library => "library in-process (EventStore::append)",
            Self::Raw => "raw",
        }
    }
}

/// Which backend a writer appends to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Table,
    Blob,
}

impl Backend {
    pub fn key(self) -> &'static str {
        match self {
            Self::Table => "table",
            Self::Blob => "blob",
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Self::Table => "Table",
            Self::Blob => "Append Blob",
        }
    }

    /// The entity type whose streams the app keeps in this backend.
    pub fn entity(self) -> &'static str {
        match self {
            Self::Table => crate::env::TABLE_ENTITY,
            Self::Blob => crate::env::BLOB_ENTITY,
        }
    }
}

/// What every writer of one backend needs.
#[derive(Clone)]
pub struct Targets {
    pub http: reqwest::Client,
    pub front_url: String,
    pub handler_url: String,
    pub library: Arc<dyn EventStore>,
    pub raw_table: RawTable,
    pub raw_blobs: RawBlobs,
    /// The block a raw blob append writes (as long as one streamfold record).
    pub raw_block: Bytes,
}

/// One stream, written along one path.
pub enum Writer {
    Http {
        http: reqwest::Client,
        stream: HttpStream,
    },
    Library {
        store: Arc<dyn EventStore>,
        stream: StreamId,
        version: u64,
    },
    RawTable {
        raw: RawTable,
        stream: RawTableStream,
    },
    RawBlob {
        raw: RawBlobs,
        blob: RawAppendBlob,
        block: Bytes,
    },
}

/// The event every library append writes: the same data, type and metadata the handler
/// stores for a request of the benchmark (a correlation id).
pub fn library_event() -> anyhow::Result<NewEvent> {
    let data = RawValue::from_string(EVENT_DATA.to_owned())?;
    Ok(
        NewEvent::from_raw(MONEY_DEPOSITED, data).with_metadata(EventMetadata {
            correlation_id: Some(Uuid::new_v4().to_string()),
            ..EventMetadata::default()
        }),
    )
}

impl Writer {
    /// Creates `instance` (one first event) on `backend` along `variant`.
    pub async fn create(
        targets: &Targets,
        backend: Backend,
        variant: Variant,
        instance: &str,
    ) -> anyhow::Result<Self> {
        let entity = backend.entity();
        Ok(match (variant, backend) {
            (Variant::Full, _) => Self::Http {
                http: targets.http.clone(),
                stream: HttpStream::create(&targets.http, &targets.front_url, entity, instance)
                    .await?,
            },
            (Variant::Handler, _) => Self::Http {
                http: targets.http.clone(),
                stream: HttpStream::create(&targets.http, &targets.handler_url, entity, instance)
                    .await?,
            },
            (Variant::Library, _) => {
                let stream = StreamId::new(DOMAIN, entity, instance)?;
                let outcome = targets
                    .library
                    .append(&stream, ExpectedVersion::NoStream, vec![library_event()?])
                    .await
                    .with_context(|| format!("creating {stream} in process"))?;
                Self::Library {
                    store: targets.library.clone(),
                    stream,
                    version: outcome.version,
                }
            }
            (Variant::Raw, Backend::Table) => Self::RawTable {
                raw: targets.raw_table.clone(),
                stream: targets
                    .raw_table
                    .create_stream(&format!("Raw|{entity}|{instance}"))
                    .await?,
            },
            (Variant::Raw, Backend::Blob) => {
                let mut blob = targets
                    .raw_blobs
                    .create(&format!("raw/{instance}.jsonl"))
                    .await?;
                targets
                    .raw_blobs
                    .append(&mut blob, targets.raw_block.clone())
                    .await?;
                Self::RawBlob {
                    raw: targets.raw_blobs.clone(),
                    blob,
                    block: targets.raw_block.clone(),
                }
            }
        })
    }

    /// Appends one event with the stream's known version.
    pub async fn append(&mut self) -> anyhow::Result<()> {
        match self {
            Self::Http { http, stream } => stream.append(http).await,
            Self::Library {
                store,
                stream,
                version,
            } => {
                let outcome = store
                    .append(
                        stream,
                        ExpectedVersion::Exact(*version),
                        vec![library_event()?],
                    )
                    .await
                    .with_context(|| format!("appending to {stream} in process"))?;
                *version = outcome.version;
                Ok(())
            }
            Self::RawTable { raw, stream } => raw.append(stream, EVENT_DATA).await,
            Self::RawBlob { raw, blob, block } => raw.append(blob, block.clone()).await,
        }
    }
}

/// The writers' targets on `env` for `backend`. For Append Blob, the raw block is made as long
/// as the record streamfold writes for one event (measured on a probe stream).
pub async fn targets(env: &crate::env::Env, backend: Backend) -> anyhow::Result<Targets> {
    use streamfold::storage::{blob, table, BlobStore, TableStore};

    let library: Arc<dyn EventStore> = match backend {
        Backend::Table => Arc::new(TableStore::new(env.account.clone())),
        Backend::Blob => Arc::new(BlobStore::new(env.account.clone())),
    };
    let raw_table = RawTable::new(&env.account, table::DEFAULT_TABLE_NAME)?;
    let raw_blobs = RawBlobs::new(&env.account, blob::DEFAULT_CONTAINER)?;
    let mut raw_block = Bytes::new();
    match backend {
        Backend::Table => raw_table.ensure_table().await?,
        Backend::Blob => {
            raw_blobs.ensure_container().await?;
            // A fresh probe stream each time: several sections ask for the targets of one
            // backend on the same storage, and a probe that exists already would be refused.
            let instance = format!("record-size-probe-{}", uuid::Uuid::new_v4().simple());
            let mut probe =
                HttpStream::create(&env.http, &env.app.front_url(), backend.entity(), &instance)
                    .await?;
            probe.append(&env.http).await?;
            let prefix = format!(
                "{DOMAIN}/{}/{}/",
                backend.entity(),
                blob::escape_instance(&instance)
            );
            let bytes = raw_blobs.total_length(&prefix).await?;
            let record = usize::try_from(bytes / probe.version.max(1))?;
            raw_block = record_of_length(record);
        }
    }
    Ok(Targets {
        http: env.http.clone(),
        front_url: env.app.front_url(),
        handler_url: env.app.handler_url(),
        library,
        raw_table,
        raw_blobs,
        raw_block,
    })
}

/// A JSON line of exactly `length` bytes (at least the bytes of `{"pad":""}` and a newline).
fn record_of_length(length: usize) -> Bytes {
    const FRAME: &str = "{\"pad\":\"\"}\n";
    let pad = "x".repeat(length.saturating_sub(FRAME.len()));
    Bytes::from(format!("{{\"pad\":\"{pad}\"}}\n"))
}
