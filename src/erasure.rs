//! Erasing a stream and everything derived from it, for the HTTP API (`DELETE
//! /api/streams/...`, the bank's `DeleteAccount`) and the operator CLI.
//!
//! Order, each step safe to repeat, so a retried or interrupted erasure finishes the work:
//! 1. the event store erases the stream (`EventStore::erase`): its tombstone first, which
//!    refuses every later append, then its events, event-id records and outbox entries;
//! 2. what is derived from the events: the snapshots of every projection, the read-model rows
//!    of every read model of its entity type, this process's cached states (other processes
//!    find version 0 and never use theirs: a cached state is used only at the version read);
//! 3. when `RaiseEntityDeletionNotification` is on (and notifications have somewhere to go),
//!    `{Domain}.{Entity}.DeletedEntity` is published, with an id that is the same on every
//!    retry, so receivers drop duplicates.
//!
//! A stream that was never written is `NotFound` and nothing is written; a stream already
//! erased is erased again (finishing whatever an earlier call left), and reported as such.

use serde::Serialize;
use time::OffsetDateTime;

use crate::app::App;
use crate::notify::{Notification, PublishError, Publisher};
use crate::stream::{Erasure, ReadModelStoreError, StoreError, StreamId};

/// What an erasure did.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct ErasureReport {
    /// `{domain}/{entity}/{instance}`.
    pub stream: String,
    /// The version the stream had when its tombstone was written.
    pub erased_version: u64,
    /// True when the tombstone was already there (an earlier erasure, finished now).
    pub resumed: bool,
    /// The read models whose row of the stream was deleted (whether or not it had one).
    pub read_models: Vec<String>,
    /// Whether `{Domain}.{Entity}.DeletedEntity` was published.
    pub notified: bool,
}

/// Why an erasure did not finish (every step done so far stays done; a retry goes on).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ErasureError {
    /// The stream has no events and was never erased.
    #[error("stream {0} does not exist")]
    NotFound(String),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    ReadModel(#[from] ReadModelStoreError),
    /// The stream is erased, but its `DeletedEntity` notification could not be published;
    /// erasing it again publishes it.
    #[error("stream {stream} was erased, but its DeletedEntity notification was not published: {source}")]
    Notification {
        stream: String,
        #[source]
        source: PublishError,
    },
}

/// Erases `stream` and what is derived from it (see the module documentation).
pub async fn erase_stream(app: &App, stream: &StreamId) -> Result<ErasureReport, ErasureError> {
    let backend = app.backend(stream.entity_type())?;
    let (version, resumed) = match backend.events.erase(stream).await? {
        Erasure::NotFound => return Err(ErasureError::NotFound(stream.to_string())),
        Erasure::Erased { version, resumed } => (version, resumed),
    };
    if let Some(snapshots) = &backend.snapshots {
        snapshots.delete_stream(stream).await?;
    }
    app.state_cache().forget_stream(stream);
    let mut read_models = Vec::new();
    let names = app.read_models().names(stream.entity_type());
    if !names.is_empty() {
        let store = app.read_model_store()?;
        for name in names {
            store.delete(name, stream).await?;
            read_models.push(name.to_owned());
        }
    }
    let mut notified = false;
    let settings = &app.settings().notifications;
    if settings.raise_entity_deletion {
        let publisher =
            Publisher::from_settings(settings).map_err(|source| ErasureError::Notification {
                stream: stream.to_string(),
                source,
            })?;
        if let Some(publisher) = publisher {
            let notification =
                Notification::deleted_entity(stream, version, OffsetDateTime::now_utc());
            publisher.publish(&[notification]).await.map_err(|source| {
                ErasureError::Notification {
                    stream: stream.to_string(),
                    source,
                }
            })?;
            notified = true;
        }
    }
    tracing::info!(stream = %stream, version, resumed, "stream erased");
    Ok(ErasureReport {
        stream: stream.to_string(),
        erased_version: version,
        resumed,
        read_models,
        notified,
    })
}
