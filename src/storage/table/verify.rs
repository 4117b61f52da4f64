//! Checking one stream's rows against the layout of this backend (for `streamfold verify`):
//! one query of the partition, asking only for the keys and the few numbers the checks need
//! (never the event data), then:
//! - the event rows are exactly `E-1..E-n`: every missing sequence is named (a gap);
//! - the header's `Version` is `n`, the sequence of the last event row;
//! - every event row has its `ID-{event id}` row, and that row names the same sequence; an
//!   id row that points at no event is named too;
//! - the outbox row (when there is one) has the header's version, a mark no further than it,
//!   and `Pending` exactly when the mark is short of it.
//!
//! An erased stream (module `erase`) is healthy when its tombstone is all that is left.

use std::collections::HashMap;

use uuid::Uuid;

use super::client::TableApi;
use super::entity::{self, Properties};
use super::erase::ERASED_VERSION;
use super::keys;
use super::outbox::{OUTBOX_NOTIFIED, OUTBOX_PENDING, OUTBOX_ROW_KEY, OUTBOX_VERSION};
use crate::stream::{StoreError, StreamId};

/// Every problem of `stream`'s rows (none: healthy).
pub async fn verify(api: &TableApi, stream: &StreamId) -> Result<Vec<String>, StoreError> {
    api.ensure_table().await?;
    let rows = api
        .query_partition(
            &keys::partition_key(stream),
            &[
                entity::VERSION,
                entity::EVENT_ID,
                entity::SEQUENCE,
                entity::FIRST_SEQUENCE,
                entity::LAST_SEQUENCE,
                OUTBOX_NOTIFIED,
                OUTBOX_PENDING,
                ERASED_VERSION,
            ],
            &stream.to_string(),
        )
        .await?;
    Ok(check(&rows))
}

/// The problems of one partition's rows.
fn check(rows: &[Properties]) -> Vec<String> {
    let mut problems = Vec::new();
    let mut header = None;
    let mut outbox = None;
    let mut events: Vec<(u64, Option<Uuid>)> = Vec::new();
    let mut ids: HashMap<Uuid, u64> = HashMap::new();
    let mut tombstone = false;
    for row in rows {
        let Ok(row_key) = entity::get_str(row, entity::ROW_KEY) else {
            problems.push("a row without a RowKey".to_owned());
            continue;
        };
        if row_key == keys::HEADER_ROW_KEY {
            match entity::get_u64(row, entity::VERSION) {
                Ok(version) => header = Some(version),
                Err(e) => problems.push(format!("header row: {e}")),
            }
        } else if row_key == OUTBOX_ROW_KEY {
            outbox = Some(row);
        } else if let Some(sequence) = keys::parse_event_row_key(row_key) {
            if sequence == 1 && row.contains_key(ERASED_VERSION) {
                tombstone = true;
                continue;
            }
            let id = entity::get_str(row, entity::EVENT_ID)
                .ok()
                .and_then(|id| Uuid::parse_str(id).ok());
            if id.is_none() {
                problems.push(format!("event {sequence} has no readable EventId"));
            }
            events.push((sequence, id));
        } else if keys::parse_event_id_row_key(row_key).is_some() {
            match entity::decode_event_id_row(row) {
                Ok((id, stored)) => {
                    ids.insert(id, stored.sequence);
                }
                Err(e) => problems.push(format!("event-id row {row_key}: {e}")),
            }
        } else {
            problems.push(format!("a row this backend does not write: {row_key:?}"));
        }
    }
    if tombstone {
        if header.is_some() || !events.is_empty() || !ids.is_empty() || outbox.is_some() {
            problems.push(
                "the stream is erased (its tombstone is there) but rows of it are left: \
                 erase it again to finish"
                    .to_owned(),
            );
        }
        return problems;
    }
    events.sort_by_key(|(sequence, _)| *sequence);
    let last = events.last().map_or(0, |(sequence, _)| *sequence);
    let mut expected = 1;
    for (sequence, _) in &events {
        if *sequence > expected {
            problems.push(gap(expected, *sequence - 1));
        }
        expected = sequence.saturating_add(1);
    }
    match header {
        None if last > 0 => {
            problems.push(format!("no header row, but events up to {last} are stored"))
        }
        Some(version) if version != last => problems.push(format!(
            "the header says version {version}, but the last event stored is {last}"
        )),
        _ => {}
    }
    let mut by_sequence = HashMap::new();
    for (sequence, id) in &events {
        let Some(id) = id else { continue };
        by_sequence.insert(*sequence, *id);
        match ids.get(id) {
            None => problems.push(format!(
                "event {sequence} (id {id}) has no event-id record"
            )),
            Some(recorded) if recorded != sequence => problems.push(format!(
                "the event-id record of {id} says sequence {recorded}, but event {sequence} has that id"
            )),
            Some(_) => {}
        }
    }
    for (id, sequence) in &ids {
        if by_sequence.get(sequence) != Some(id) && !events.iter().any(|(_, e)| e == &Some(*id)) {
            problems.push(format!(
                "the event-id record of {id} points at event {sequence}, which is not stored"
            ));
        }
    }
    if let Some(row) = outbox {
        let version = entity::get_u64(row, OUTBOX_VERSION).unwrap_or_default();
        let notified = entity::get_u64(row, OUTBOX_NOTIFIED).unwrap_or_default();
        let pending = row.get(OUTBOX_PENDING).and_then(|v| v.as_bool());
        if version != last {
            problems.push(format!(
                "the outbox row says version {version}, but the last event stored is {last}"
            ));
        }
        if notified > version {
            problems.push(format!(
                "the outbox row marks {notified} notified, past its version {version}"
            ));
        }
        if pending != Some(notified < version) {
            problems.push(format!(
                "the outbox row says pending = {pending:?}, but {notified} of {version} are notified"
            ));
        }
    }
    problems
}

/// The problem of missing events `from..=to`.
pub fn gap(from: u64, to: u64) -> String {
    if from == to {
        format!("gap: event {from} is missing")
    } else {
        format!("gap: events {from} to {to} are missing")
    }
}
