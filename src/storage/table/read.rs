//! Reads: a range of a stream's events with the stream's version, the version alone, and the
//! listing of a domain / entity type's streams.
//!
//! Guarantees:
//! - events come back in sequence order, with no gap: a read without `as_of` returns exactly
//!   the events `from..=min(to, version)`, and a stored gap is reported as `Corrupt`;
//! - the version and the events agree: no event above the returned version is returned, and
//!   no event at or below it is missed. Without `as_of` the header read and the event query
//!   run concurrently; if an append lands between them, the missing tail is read with one more
//!   query. With `as_of` the header is read first, then events up to that version;
//! - a stream that does not exist reads as version 0 with no events.

use futures::future::try_join;
use time::OffsetDateTime;

use super::append::read_header;
use super::client::TableApi;
use super::entity;
use super::event_row::EventRow;
use super::keys;
use crate::stream::{
    check_key_continuation, validate_entity_type, ReadRequest, RecordedEvent, StoreError, StreamId,
    StreamPage, StreamSlice,
};

pub async fn read(
    api: &TableApi,
    stream: &StreamId,
    request: ReadRequest,
) -> Result<StreamSlice, StoreError> {
    api.ensure_table().await?;
    let what = stream.to_string();
    let partition_key = keys::partition_key(stream);
    let from = request.from_sequence.max(1);
    let to = request
        .to_sequence
        .unwrap_or(keys::MAX_SEQUENCE)
        .min(keys::MAX_SEQUENCE);

    if let Some(as_of) = request.as_of {
        let version = version_of(api, &partition_key, &what).await?;
        let upper = to.min(version);
        let events = if from <= upper {
            query_events(api, &partition_key, &what, from, upper, Some(as_of)).await?
        } else {
            Vec::new()
        };
        check_order(&what, &events)?;
        return Ok(StreamSlice { version, events });
    }

    if from > to {
        let version = version_of(api, &partition_key, &what).await?;
        return Ok(StreamSlice {
            version,
            events: Vec::new(),
        });
    }
    let (version, mut events) = try_join(
        version_of(api, &partition_key, &what),
        query_events(api, &partition_key, &what, from, to, None),
    )
    .await?;
    events.retain(|e| e.sequence <= version);
    let upper = to.min(version);
    let next = events.last().map_or(from, |e| e.sequence + 1);
    if next <= upper {
        // An append committed between the event query and the header read.
        events.extend(query_events(api, &partition_key, &what, next, upper, None).await?);
    }
    check_contiguous(&what, &events, from, upper)?;
    Ok(StreamSlice { version, events })
}

/// Events of `request` up to `version`, which the caller has just read: one query, since the
/// events up to a version exist and never change.
pub async fn read_known(
    api: &TableApi,
    stream: &StreamId,
    request: ReadRequest,
    version: u64,
) -> Result<Vec<RecordedEvent>, StoreError> {
    api.ensure_table().await?;
    let what = stream.to_string();
    let from = request.from_sequence.max(1);
    let upper = request
        .to_sequence
        .unwrap_or(version)
        .min(version)
        .min(keys::MAX_SEQUENCE);
    if from > upper {
        return Ok(Vec::new());
    }
    let partition_key = keys::partition_key(stream);
    let events = query_events(api, &partition_key, &what, from, upper, request.as_of).await?;
    match request.as_of {
        Some(_) => check_order(&what, &events)?,
        None => check_contiguous(&what, &events, from, upper)?,
    }
    Ok(events)
}

/// Checks that `events` are exactly `from..=upper` (none when `from > upper`), in order.
fn check_contiguous(
    what: &str,
    events: &[RecordedEvent],
    from: u64,
    upper: u64,
) -> Result<(), StoreError> {
    check_order(what, events)?;
    let expected_count = if from <= upper { upper - from + 1 } else { 0 };
    if events.len() as u64 != expected_count {
        return Err(StoreError::Corrupt {
            stream: what.to_owned(),
            detail: format!(
                "events {from}..={upper} should be stored, but {} were found",
                events.len()
            ),
        });
    }
    Ok(())
}

/// The stream's version from its header (0 if it does not exist).
pub async fn version(api: &TableApi, stream: &StreamId) -> Result<u64, StoreError> {
    api.ensure_table().await?;
    version_of(api, &keys::partition_key(stream), &stream.to_string()).await
}

async fn version_of(api: &TableApi, partition_key: &str, what: &str) -> Result<u64, StoreError> {
    Ok(read_header(api, partition_key, what)
        .await?
        .map_or(0, |(version, _)| version))
}

async fn query_events(
    api: &TableApi,
    partition_key: &str,
    what: &str,
    from: u64,
    to: u64,
    as_of: Option<OffsetDateTime>,
) -> Result<Vec<RecordedEvent>, StoreError> {
    let mut filter = format!(
        "PartitionKey eq {} and RowKey ge {} and RowKey le {}",
        keys::odata_string(partition_key),
        keys::odata_string(&keys::event_row_key(from)),
        keys::odata_string(&keys::event_row_key(to)),
    );
    if let Some(as_of) = as_of {
        filter.push_str(&format!(
            " and {} le datetime'{}'",
            entity::RECORDED,
            entity::format_time(as_of)
        ));
    }
    api.query_as::<EventRow>(filter, None, what)
        .await?
        .into_iter()
        .map(|row| decode(what, row))
        .collect()
}

fn decode(what: &str, row: EventRow) -> Result<RecordedEvent, StoreError> {
    row.into_event().map_err(|detail| StoreError::Corrupt {
        stream: what.to_owned(),
        detail,
    })
}

fn check_order(what: &str, events: &[RecordedEvent]) -> Result<(), StoreError> {
    match events.windows(2).find(|w| w[0].sequence >= w[1].sequence) {
        Some(w) => Err(StoreError::Corrupt {
            stream: what.to_owned(),
            detail: format!(
                "events came back out of order: {} before {}",
                w[0].sequence, w[1].sequence
            ),
        }),
        None => Ok(()),
    }
}

/// A page of the instance keys of `domain` / `entity`: the header rows of the partitions with
/// the prefix `{domain}|{entity}|`. The continuation is the last instance key returned.
pub async fn list_streams(
    api: &TableApi,
    domain: &str,
    entity: &str,
    continuation: Option<&str>,
    page_size: usize,
) -> Result<StreamPage, StoreError> {
    validate_entity_type(domain, entity)?;
    check_key_continuation(continuation)?;
    api.ensure_table().await?;
    let page_size = page_size.max(1);
    let prefix = keys::stream_prefix(domain, entity);
    let lower = match continuation {
        Some(after) => format!(
            "PartitionKey gt {}",
            keys::odata_string(&format!("{prefix}{after}"))
        ),
        None => format!("PartitionKey ge {}", keys::odata_string(&prefix)),
    };
    let filter = format!(
        "{lower} and PartitionKey lt {} and RowKey eq {}",
        keys::odata_string(&keys::stream_prefix_end(domain, entity)),
        keys::odata_string(keys::HEADER_ROW_KEY),
    );
    let what = format!("the streams of {domain}/{entity}");
    let rows = api.query(filter, Some(page_size + 1), &what).await?;
    let mut instances = rows
        .iter()
        .map(|row| {
            entity::get_str(row, entity::PARTITION_KEY)
                .ok()
                .and_then(|key| key.strip_prefix(&prefix))
                .map(str::to_owned)
                .ok_or_else(|| StoreError::Corrupt {
                    stream: what.clone(),
                    detail: "a header row outside the listed prefix came back".into(),
                })
        })
        .collect::<Result<Vec<_>, _>>()?;
    let continuation = if instances.len() > page_size {
        instances.truncate(page_size);
        instances.last().cloned()
    } else {
        None
    };
    Ok(StreamPage {
        instances,
        continuation,
    })
}
