//! Reading what is stored, for people and scripts: `streamfold list <category>` prints the
//! category's streams, one name per line, in the store's order; `streamfold dump <stream>`
//! prints its events as NDJSON, one object per line in sequence order, with the event's data
//! (`payload`) exactly as stored (its JSON text, never re-encoded through numbers).

use std::io::Write;

use serde::Serialize;
use serde_json::value::RawValue;
use time::OffsetDateTime;
use uuid::Uuid;

use super::category::list_all;
use super::{OpsError, EXIT_OK, EXIT_PROBLEMS};
use crate::app::App;
use crate::stream::{EntityType, EventMetadata, ReadRequest, RecordedEvent, StreamId};

/// Events read per request.
pub const DUMP_PAGE: u64 = 1_000;

/// One line of `dump`.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub struct DumpLine<'a> {
    pub stream: String,
    pub sequence: u64,
    pub event_id: Uuid,
    pub event_type: &'a str,
    #[serde(with = "time::serde::rfc3339")]
    pub time: OffsetDateTime,
    pub metadata: &'a EventMetadata,
    pub payload: &'a RawValue,
}

impl<'a> DumpLine<'a> {
    pub fn of(stream: &StreamId, event: &'a RecordedEvent) -> Self {
        Self {
            stream: stream.to_string(),
            sequence: event.sequence,
            event_id: event.event_id,
            event_type: &event.event_type,
            time: event.timestamp,
            metadata: &event.metadata,
            payload: &event.data,
        }
    }
}

/// `list`: every stream name of `category`.
pub async fn list(app: &App, category: &EntityType) -> Result<u8, OpsError> {
    let store = app.store(category)?;
    let keys = list_all(store.as_ref(), category).await?;
    let mut out = std::io::stdout().lock();
    for key in &keys {
        if let Err(error) = writeln!(out, "{category}/{key}") {
            return closed(error);
        }
    }
    eprintln!("{} stream(s) of {category}", keys.len());
    Ok(EXIT_OK)
}

/// `dump`: the events of `stream` from `from` to `to` (both included) as NDJSON.
pub async fn dump(
    app: &App,
    stream: &StreamId,
    from: Option<u64>,
    to: Option<u64>,
) -> Result<u8, OpsError> {
    let store = app.store(stream.entity_type())?;
    let mut from = from.unwrap_or(1).max(1);
    let mut out = std::io::BufWriter::new(std::io::stdout().lock());
    let mut version = None;
    loop {
        let last = from.saturating_add(DUMP_PAGE - 1);
        let last = to.map_or(last, |to| to.min(last));
        if last < from {
            break;
        }
        let slice = store
            .read(stream, ReadRequest::range(from, Some(last)))
            .await?;
        version = Some(slice.version);
        for event in &slice.events {
            let line = serde_json::to_string(&DumpLine::of(stream, event))
                .map_err(|e| OpsError::Output(e.to_string()))?;
            if let Err(error) = writeln!(out, "{line}") {
                return closed(error);
            }
        }
        match slice.events.last() {
            Some(event) if event.sequence < slice.version => {
                from = event.sequence.saturating_add(1)
            }
            _ => break,
        }
    }
    if let Err(error) = out.flush() {
        return closed(error);
    }
    if version == Some(0) {
        eprintln!("{stream}: no such stream");
        return Ok(EXIT_PROBLEMS);
    }
    Ok(EXIT_OK)
}

/// A write to stdout failed: a closed pipe (`| head`) ends the command quietly.
fn closed(error: std::io::Error) -> Result<u8, OpsError> {
    if error.kind() == std::io::ErrorKind::BrokenPipe {
        Ok(EXIT_OK)
    } else {
        Err(OpsError::Output(error.to_string()))
    }
}
