//! Reads: a range of a stream's events with the stream's version, the events stored without
//! it, the version alone, and the listing of a domain / entity type's streams.
//!
//! Guarantees:
//! - events come back in sequence order, with no gap: a read without `as_of` returns exactly
//!   the events `from..=min(to, version)`, and a stored gap is reported as `Corrupt`;
//! - as of a time, a read is a prefix ([`TimeLine`]): it ends before the first event recorded
//!   after that time, counting from the event before `from` (read with the same query), and
//!   returns nothing past it. The query asks storage only for rows recorded at most
//!   [`AS_OF_QUERY_MARGIN`] after the time (Azurite compares times to the millisecond; the
//!   service to 100 ns), and the exact cut is made here: a row missing from the answer is one
//!   recorded after the time, so the prefix ends there;
//! - reported times never go backwards within a read ([`TimeLine`]);
//! - the version and the events agree: no event above the returned version is returned, and
//!   no event at or below it is missed. Without `as_of` the header read and the event query
//!   run concurrently; if an append lands between them, the missing tail is read with one more
//!   query. With `as_of` the header is read first, then events up to that version;
//! - every header read tells the store's [`StreamEnds`] the stream's version and last recorded
//!   time, so a command's exact append after it needs no read of its own;
//! - a stream that does not exist, or was erased, reads as version 0 with no events.

use futures::future::join;
use time::OffsetDateTime;

use super::append::{read_header, StreamEnds};
use super::client::TableApi;
use super::entity;
use super::event_row::EventRow;
use super::keys;
use crate::stream::{
    check_key_continuation, end_page, EntityType, ReadRequest, RecordedEvent, StoreError, StreamId,
    StreamPage, StreamSlice, TimeLine,
};

/// How much later than an `as_of` time the rows a query asks storage for may be recorded (the
/// exact cut is made on the rows that come back): Azurite compares times to the millisecond.
pub const AS_OF_QUERY_MARGIN: time::Duration = time::Duration::milliseconds(1);

pub async fn read(
    api: &TableApi,
    ends: &StreamEnds,
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
        let version = version_of(api, ends, stream, &partition_key, &what).await?;
        let upper = to.min(version);
        let events = if from <= upper {
            prefix_events(api, &partition_key, &what, from, upper, as_of).await?
        } else {
            Vec::new()
        };
        return Ok(StreamSlice { version, events });
    }

    if from > to {
        let version = version_of(api, ends, stream, &partition_key, &what).await?;
        return Ok(StreamSlice {
            version,
            events: Vec::new(),
        });
    }
    let (version, events) = join(
        version_of(api, ends, stream, &partition_key, &what),
        query_events(api, &partition_key, &what, from, to, None),
    )
    .await;
    let version = version?;
    if version == 0 {
        // No stream, or an erased one (whose tombstone row is no event).
        return Ok(StreamSlice {
            version,
            events: Vec::new(),
        });
    }
    let mut events = events?;
    events.retain(|e| e.sequence <= version);
    let upper = to.min(version);
    let next = events.last().map_or(from, |e| e.sequence + 1);
    if next <= upper {
        // An append committed between the event query and the header read.
        events.extend(query_events(api, &partition_key, &what, next, upper, None).await?);
    }
    check_contiguous(&what, &events, from, upper)?;
    Ok(StreamSlice {
        version,
        events: TimeLine::cut(&ReadRequest::all(), events),
    })
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
    if let Some(as_of) = request.as_of {
        return prefix_events(api, &partition_key, &what, from, upper, as_of).await;
    }
    let events = query_events(api, &partition_key, &what, from, upper, None).await?;
    check_contiguous(&what, &events, from, upper)?;
    Ok(TimeLine::cut(&ReadRequest::all(), events))
}

/// The events of `request` stored now, without the header: one query (see
/// `EventStore::read_stored`). A read as of a time is a plain [`read`] (it needs the version).
/// The tombstone of an erased stream is row `E-0000000001` and holds no event, so a read from
/// the first event of an erased stream is `Corrupt`, never an empty stream.
pub async fn read_stored(
    api: &TableApi,
    ends: &StreamEnds,
    stream: &StreamId,
    request: ReadRequest,
) -> Result<Vec<RecordedEvent>, StoreError> {
    if request.as_of.is_some() {
        return Ok(read(api, ends, stream, request).await?.events);
    }
    api.ensure_table().await?;
    let what = stream.to_string();
    let from = request.from_sequence.max(1);
    let to = request
        .to_sequence
        .unwrap_or(keys::MAX_SEQUENCE)
        .min(keys::MAX_SEQUENCE);
    if from > to {
        return Ok(Vec::new());
    }
    let partition_key = keys::partition_key(stream);
    let events = query_events(api, &partition_key, &what, from, to, None).await?;
    let last = events.last().map_or(from.saturating_sub(1), |e| e.sequence);
    check_contiguous(&what, &events, from, last)?;
    Ok(TimeLine::cut(&ReadRequest::all(), events))
}

/// Events `from..=upper` (which exist) as of `as_of`: the prefix of them that ends before the
/// first event recorded after `as_of`, counting from event `from - 1`.
async fn prefix_events(
    api: &TableApi,
    partition_key: &str,
    what: &str,
    from: u64,
    upper: u64,
    as_of: OffsetDateTime,
) -> Result<Vec<RecordedEvent>, StoreError> {
    let start = from.saturating_sub(1).max(1);
    let margin = as_of.checked_add(AS_OF_QUERY_MARGIN).unwrap_or(as_of);
    let rows = query_events(api, partition_key, what, start, upper, Some(margin)).await?;
    check_order(what, &rows)?;
    let mut line = TimeLine::new(Some(as_of));
    let mut events = Vec::new();
    // A row storage left out was recorded after `as_of`: the prefix ends before it.
    for (mut event, expected) in rows.into_iter().zip(start..) {
        if event.sequence != expected || !line.admit(&mut event) {
            break;
        }
        if event.sequence >= from {
            events.push(event);
        }
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
pub async fn version(
    api: &TableApi,
    ends: &StreamEnds,
    stream: &StreamId,
) -> Result<u64, StoreError> {
    api.ensure_table().await?;
    let partition_key = keys::partition_key(stream);
    version_of(api, ends, stream, &partition_key, &stream.to_string()).await
}

/// The version in the stream's header (0 if it does not exist); the header's last recorded
/// time is remembered in `ends`.
async fn version_of(
    api: &TableApi,
    ends: &StreamEnds,
    stream: &StreamId,
    partition_key: &str,
    what: &str,
) -> Result<u64, StoreError> {
    let Some(header) = read_header(api, partition_key, what).await? else {
        return Ok(0);
    };
    if let Some(time) = header.last_recorded {
        ends.remember(stream, header.version, time);
    }
    Ok(header.version)
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

/// A page of the instance keys of `entity_type`: the header rows of the partitions with the
/// prefix `{domain}|{entity}|`. The continuation is the last instance key returned.
pub async fn list_streams(
    api: &TableApi,
    entity_type: &EntityType,
    continuation: Option<&str>,
    page_size: usize,
) -> Result<StreamPage, StoreError> {
    check_key_continuation(continuation)?;
    api.ensure_table().await?;
    let page_size = page_size.max(1);
    let prefix = keys::stream_prefix(entity_type);
    let lower = match continuation {
        Some(after) => format!(
            "PartitionKey gt {}",
            keys::odata_string(&format!("{prefix}{after}"))
        ),
        None => format!("PartitionKey ge {}", keys::odata_string(&prefix)),
    };
    let filter = format!(
        "{lower} and PartitionKey lt {} and RowKey eq {}",
        keys::odata_string(&keys::stream_prefix_end(entity_type)),
        keys::odata_string(keys::HEADER_ROW_KEY),
    );
    let what = format!("the streams of {entity_type}");
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
    let continuation = end_page(&mut instances, page_size, String::as_str);
    Ok(StreamPage {
        instances,
        continuation,
    })
}
