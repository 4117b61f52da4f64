//! The generic event-stream API, for systems that use streamfold over HTTP without Rust:
//! append with an expectation, read (range, as of a time), list the streams of an entity type.
//!
//! An append to a stream whose entity type a domain owns (the bank's `Bank/Account`) is
//! checked by that domain's rules first and refused with 422 `invalid-domain-event` when they
//! refuse it ([`crate::app::App::append`]). `metadata.source` and `metadata.who` are the
//! server's: a body that sets either is refused with 400 `server-owned-metadata`, and every
//! event written here is stored with `source` = [`API_SOURCE`].
//!
//! Routes (function.json folders `AppendEvents`, `ReadStream`, `ListStreams`):
//! - `POST /api/streams/{domain}/{entity}/{instance}` → 201 with the new version
//! - `GET  /api/streams/{domain}/{entity}/{instance}?fromSequence=&toSequence=&asOf=&pageSize=`
//!   → one page of at most [`MAX_READ_PAGE_SIZE`] events, with `nextFromSequence` while more
//!   follow (a read never answers with, or holds in memory, a whole long stream)
//! - `GET  /api/streams/{domain}/{entity}?continuation=&pageSize=`

use std::sync::Arc;

use bytes::Bytes;
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use serde_json::{json, Value};
use uuid::Uuid;
use warp::filters::BoxedFilter;
use warp::http::StatusCode;
use warp::reply::Response;
use warp::{Filter, Rejection};

use super::filters::{self, only_known_params, time_param, u64_param, StreamSegments};
use super::problem::{json_response, parse_json, reject, Problem};
use crate::app::App;
use crate::stream::{
    EntityType, EventMetadata, ExpectedVersion, NewEvent, ReadRequest, DEFAULT_PAGE_SIZE,
};

/// Largest page of instance keys a client may ask for.
pub const MAX_PAGE_SIZE: usize = 1000;

/// The routes of this module.
pub fn routes(app: Arc<App>) -> BoxedFilter<(Response,)> {
    let with_app = warp::any().map(move || app.clone());
    let stream_path = warp::path!("api" / "streams" / ..)
        .and(filters::stream_segments())
        .and(warp::path::end());
    let append = warp::post()
        .and(stream_path.clone())
        .and(filters::correlation_id())
        .and(filters::body())
        .and(with_app.clone())
        .and_then(append_handler);
    let read = warp::get()
        .and(stream_path)
        .and(filters::query_pairs())
        .and(with_app.clone())
        .and_then(read_handler);
    let list = warp::get()
        .and(warp::path!("api" / "streams" / ..))
        .and(filters::decoded_segment())
        .and(filters::decoded_segment())
        .and(warp::path::end())
        .and(filters::query_pairs())
        .and(with_app)
        .and_then(list_handler);
    append.or(read).unify().or(list).unify().boxed()
}

/// Body of an append.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct AppendBody {
    #[serde(default)]
    expected_version: Option<Value>,
    events: Vec<EventBody>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct EventBody {
    event_type: String,
    data: Box<RawValue>,
    #[serde(default)]
    event_id: Option<Uuid>,
    #[serde(default)]
    metadata: MetadataBody,
}

/// The metadata a caller may give an event. `source` and `who` are the server's to set: they
/// are read only to refuse them (`null` counts as absent).
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct MetadataBody {
    #[serde(default)]
    correlation_id: Option<String>,
    #[serde(default)]
    causation_id: Option<String>,
    #[serde(default)]
    commentary: Option<String>,
    #[serde(default)]
    schema_version: Option<u32>,
    #[serde(default)]
    source: Option<Box<RawValue>>,
    #[serde(default)]
    who: Option<Box<RawValue>>,
}

/// The `source` of every event written through the generic API.
pub const API_SOURCE: &str = "streamfold-api";

impl MetadataBody {
    /// The stored metadata: the caller's fields, `source` = [`API_SOURCE`], no `who` (the
    /// generic API knows no authenticated caller to name). A body that sets `source` or
    /// `who` is refused, naming the event and the field.
    fn into_metadata(self, index: usize, correlation_id: &str) -> Result<EventMetadata, Problem> {
        let claimed = [
            ("source", self.source.is_some()),
            ("who", self.who.is_some()),
        ];
        if let Some((field, _)) = claimed.iter().find(|(_, set)| *set) {
            return Err(Problem::bad_request(
                "server-owned-metadata",
                format!(
                    "events[{index}].metadata.{field} is set by the server, not by the caller \
                     (the generic API stores source = {API_SOURCE:?}); leave it out"
                ),
            )
            .with("index", index)
            .with("field", format!("metadata.{field}")));
        }
        Ok(EventMetadata {
            correlation_id: Some(
                self.correlation_id
                    .unwrap_or_else(|| correlation_id.to_owned()),
            ),
            causation_id: self.causation_id,
            who: None,
            source: Some(API_SOURCE.to_owned()),
            commentary: self.commentary,
            schema_version: self.schema_version,
            // The command executor's, never a caller's (the body has no such fields).
            idempotency_key: None,
            request_hash: None,
        })
    }
}

/// Parses `expectedVersion`: a whole number, or "any", "noStream", "exists" (absent = any).
pub fn parse_expected_version(value: Option<&Value>) -> Result<ExpectedVersion, Problem> {
    let invalid = || {
        Problem::bad_request(
            "invalid-expected-version",
            "expectedVersion must be a whole number ≥ 0, \"any\", \"noStream\" or \"exists\"",
        )
    };
    match value {
        None | Some(Value::Null) => Ok(ExpectedVersion::Any),
        Some(Value::Number(n)) => n.as_u64().map(ExpectedVersion::Exact).ok_or_else(invalid),
        Some(Value::String(s)) => match s.as_str() {
            "any" => Ok(ExpectedVersion::Any),
            "noStream" => Ok(ExpectedVersion::NoStream),
            "exists" => Ok(ExpectedVersion::Exists),
            _ => Err(invalid()),
        },
        Some(_) => Err(invalid()),
    }
}

async fn append_handler(
    segments: StreamSegments,
    correlation_id: String,
    body: Bytes,
    app: Arc<App>,
) -> Result<Response, Rejection> {
    let stream = segments.stream_id().map_err(reject)?;
    let body: AppendBody = parse_json(&body).map_err(reject)?;
    let expected = parse_expected_version(body.expected_version.as_ref()).map_err(reject)?;
    let events: Vec<NewEvent> = body
        .events
        .into_iter()
        .enumerate()
        .map(|(index, e)| {
            Ok(NewEvent::from_raw(e.event_type, e.data)
                .with_id(e.event_id.unwrap_or_else(Uuid::new_v4))
                .with_metadata(e.metadata.into_metadata(index, &correlation_id)?))
        })
        .collect::<Result<_, Problem>>()
        .map_err(reject)?;
    // Through the owning domain's rules when a domain owns the stream (`App::append`).
    let outcome = app
        .append(&stream, expected, events)
        .await
        .map_err(reject)?;
    Ok(json_response(
        StatusCode::CREATED,
        &AppendResponse {
            domain: stream.domain(),
            entity: stream.entity(),
            instance: stream.instance(),
            first_sequence: outcome.first_sequence,
            version: outcome.version,
            created: outcome.created,
            duplicate: outcome.duplicate,
            correlation_id: &correlation_id,
        },
    ))
}

/// The answer to an append, written straight from borrowed fields (no intermediate `Value`).
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct AppendResponse<'a> {
    domain: &'a str,
    entity: &'a str,
    instance: &'a str,
    first_sequence: u64,
    version: u64,
    created: bool,
    duplicate: bool,
    correlation_id: &'a str,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct ReadResponse<'a> {
    domain: &'a str,
    entity: &'a str,
    instance: &'a str,
    version: u64,
    events: Vec<crate::stream::RecordedEvent>,
    /// Pass as `fromSequence` (with the same `toSequence` and `asOf`) for the next page;
    /// absent on the last page.
    #[serde(skip_serializing_if = "Option::is_none")]
    next_from_sequence: Option<u64>,
}

/// Sequence numbers one `ReadStream` page covers unless the caller asks for another size.
pub const DEFAULT_READ_PAGE_SIZE: u64 = 100;
/// Most sequence numbers one `ReadStream` page may cover: an answer holds at most this many
/// events, whatever the length of the stream.
pub const MAX_READ_PAGE_SIZE: u64 = 1000;

/// One page of a stream: the events `fromSequence..=fromSequence + pageSize - 1` (and at most
/// `toSequence`), as of `asOf` when given, with `nextFromSequence` while the range asked for
/// (or the stream) goes on. With `asOf`, a page ends at the first event recorded after it
/// (the events as of a time are a prefix of the stream); a page that ends there has no next.
async fn read_handler(
    segments: StreamSegments,
    query: Vec<(String, String)>,
    app: Arc<App>,
) -> Result<Response, Rejection> {
    let stream = segments.stream_id().map_err(reject)?;
    only_known_params(&query, &["fromSequence", "toSequence", "asOf", "pageSize"])
        .map_err(reject)?;
    let from = u64_param(&query, "fromSequence").map_err(reject)?;
    let to = u64_param(&query, "toSequence").map_err(reject)?;
    let as_of = time_param(&query, "asOf").map_err(reject)?;
    let page_size = u64_param(&query, "pageSize")
        .map_err(reject)?
        .unwrap_or(DEFAULT_READ_PAGE_SIZE);
    if !(1..=MAX_READ_PAGE_SIZE).contains(&page_size) {
        return Err(reject(
            Problem::bad_request(
                "invalid-page-size",
                format!("pageSize must be between 1 and {MAX_READ_PAGE_SIZE}"),
            )
            .with("parameter", "pageSize"),
        ));
    }
    if let (Some(from), Some(to)) = (from, to) {
        if from > to {
            return Err(reject(Problem::bad_request(
                "invalid-range",
                format!("fromSequence ({from}) is after toSequence ({to})"),
            )));
        }
    }
    let from = from.unwrap_or(1).max(1);
    let page_end = from.saturating_add(page_size - 1);
    let last = to.map_or(page_end, |to| to.min(page_end));
    let mut request = ReadRequest::range(from, Some(last));
    request.as_of = as_of;
    let store = app.store(stream.entity_type()).map_err(reject)?;
    let slice = store.read(&stream, request).await.map_err(reject)?;
    if slice.version == 0 {
        return Err(reject(Problem::not_found(
            "stream-not-found",
            format!("stream {stream} does not exist"),
        )));
    }
    let end = to.map_or(slice.version, |to| to.min(slice.version));
    // As of a time the events are a prefix of the stream: a page that ends before its range
    // (or the stream) does has met the first event past `asOf`, so nothing follows as of then.
    let reached = slice
        .events
        .last()
        .map_or(from, |event| event.sequence.saturating_add(1));
    let cut_by_as_of = as_of.is_some() && reached <= last.min(end);
    let next_from_sequence = (last < end && !cut_by_as_of).then(|| last + 1);
    Ok(json_response(
        StatusCode::OK,
        &ReadResponse {
            domain: stream.domain(),
            entity: stream.entity(),
            instance: stream.instance(),
            version: slice.version,
            events: slice.events,
            next_from_sequence,
        },
    ))
}

async fn list_handler(
    domain: String,
    entity: String,
    query: Vec<(String, String)>,
    app: Arc<App>,
) -> Result<Response, Rejection> {
    let entity_type = EntityType::new(domain.as_str(), entity.as_str())
        .map_err(|e| reject(Problem::from(crate::stream::StoreError::from(e))))?;
    only_known_params(&query, &["continuation", "pageSize"]).map_err(reject)?;
    let page_size = u64_param(&query, "pageSize")
        .map_err(reject)?
        .map_or(DEFAULT_PAGE_SIZE, |n| n as usize);
    if page_size == 0 || page_size > MAX_PAGE_SIZE {
        return Err(reject(Problem::bad_request(
            "invalid-page-size",
            format!("pageSize must be between 1 and {MAX_PAGE_SIZE}"),
        )));
    }
    let continuation = filters::query_param(&query, "continuation").filter(|c| !c.is_empty());
    let store = app.store(&entity_type).map_err(reject)?;
    let page = store
        .list_streams(&entity_type, continuation, page_size)
        .await
        .map_err(reject)?;
    Ok(json_response(
        StatusCode::OK,
        &json!({
            "domain": domain,
            "entity": entity,
            "instances": page.instances,
            "continuation": page.continuation,
        }),
    ))
}
