//! The topic's HTTP server, and the checks of a publish request.
//!
//! Publishing (`POST {endpoint}`, `endpoint()` = `http://127.0.0.1:{port}/api/events`), checks in
//! this order: 1. down ([`TopicSim::set_down`](super::TopicSim::set_down)): connection refused, or
//! 503; 2. a stall ([`TopicSim::stall_next`](super::TopicSim::stall_next)): no answer at all
//! (recorded with status 0) until [`TopicSim::release_stalls`](super::TopicSim::release_stalls),
//! the topic going down or being dropped, then 503 — a hung server, to test publishers' timeouts;
//! 3. an injected failure ([`TopicSim::fail_next`](super::TopicSim::fail_next)): that status; 4.
//! anything but `POST /api/events` → 404; 5. `aeg-sas-key` missing or wrong, or the key revoked
//! ([`TopicSim::revoke_key`](super::TopicSim::revoke_key), as a key rotated on the topic) → 401; on
//! a topic that takes Entra tokens
//! ([`TopicConfig::accept_bearer`](super::TopicConfig::accept_bearer)), an `Authorization: Bearer`
//! token the fake identity issued for Event Grid and not expired is accepted instead of the key
//! (and a bad one → 401); 6. no `api-version` query parameter → 400; 7. body over
//! [`MAX_REQUEST_BYTES`] → 413; 8. content type: `application/json` for an Event Grid schema topic;
//! `application/cloudevents-batch+json` (an array) or `application/cloudevents+json` (one event)
//! for a CloudEvents topic → else 400; 9. not JSON, or not an array (object for a single
//! CloudEvent) → 400; more than [`MAX_EVENTS_PER_REQUEST`] events → 413; an event over
//! [`MAX_EVENT_BYTES`] (its bytes as sent) → 413; 10. every event against the topic's schema → 400
//! naming the event index and the problem (EventGridEvent: `id`, `subject`, `eventType`,
//! `eventTime` (RFC 3339), `data`, `dataVersion` required, `topic` omitted or equal to this topic's
//! resource id — so an explicit `"topic": null` is refused, `metadataVersion` omitted or `"1"`;
//! CloudEvents 1.0: `specversion` `"1.0"`, non-empty `id`, `source`, `type`, an RFC 3339 `time`
//! when present, string `subject`/`datacontenttype`/`dataschema`, not both `data` and
//! `data_base64`, attribute names of lower-case letters and digits); 11. an event whose JSON text
//! contains a marker given to [`TopicSim::refuse_matching`](super::TopicSim::refuse_matching) →
//! that marker's status (400 say), every time, naming the event index: a notification the topic
//! refuses for good, until [`TopicSim::accept_all`](super::TopicSim::accept_all).
//!
//! A request is all-or-nothing: one bad event refuses the whole request, as Event Grid does. Every
//! request and its status is recorded ([`TopicSim::requests`](super::TopicSim::requests)); accepted
//! events are recorded as sent ([`TopicSim::received`](super::TopicSim::received)).
//!

use std::sync::Arc;

use bytes::Bytes;
use serde_json::Value;
use warp::http::{HeaderMap, Method, StatusCode};
use warp::Filter;

use super::delivery::accept;
use super::schema::{check_cloud_event, check_event_grid_event};
use super::{lock, resource_id, InputSchema, PublishRecord, State};
use crate::raw::{RawRequest, Serving};

/// Event Grid's request limit ("1 MB", taken as 1 MiB: the most Event Grid could mean).
pub const MAX_REQUEST_BYTES: usize = 1_048_576;
/// Event Grid's event limit.
pub const MAX_EVENT_BYTES: usize = 1_048_576;
/// Event Grid's limit on events per request.
pub const MAX_EVENTS_PER_REQUEST: usize = 5_000;
/// The publish path.
pub const EVENTS_PATH: &str = "/api/events";
/// The key header.
pub const SAS_KEY_HEADER: &str = "aeg-sas-key";
/// The query parameter Event Grid requires.
pub const API_VERSION_PARAMETER: &str = "api-version";
/// Header of a delivery saying what it is.
/// Content type of an Event Grid schema request.
pub const JSON_CONTENT_TYPE: &str = "application/json";
/// Content type of a CloudEvents batch.
pub const CLOUDEVENTS_BATCH_CONTENT_TYPE: &str = "application/cloudevents-batch+json";
/// Content type of one CloudEvent (structured mode).
pub const CLOUDEVENT_CONTENT_TYPE: &str = "application/cloudevents+json";
/// Largest body read at all (bigger is refused by the HTTP layer, with 413).
const MAX_BODY_READ: u64 = 16 * 1_048_576;

pub(super) fn serve(listener: tokio::net::TcpListener, state: Arc<State>) -> Serving {
    let routes = crate::raw::request_within(MAX_BODY_READ).then(move |raw: RawRequest| {
        let state = state.clone();
        async move {
            if let Some(reply) = stall(&state, &raw.headers, raw.body.len()).await {
                return reply;
            }
            let (status, reason) = publish(
                &state,
                &raw.method,
                &raw.path,
                raw.query.as_deref(),
                &raw.headers,
                &raw.body,
            );
            crate::raw::response(status, HeaderMap::new(), reason.unwrap_or_default())
        }
    });
    Serving::start(listener, routes)
}

/// When a stall is due: records the request, waits for a release, and answers 503.
async fn stall(state: &State, headers: &HeaderMap, bytes: usize) -> Option<warp::reply::Response> {
    if lock(&state.down).is_some() {
        return None;
    }
    {
        let mut stalls = lock(&state.stalls);
        if *stalls == 0 {
            return None;
        }
        *stalls -= 1;
    }
    let mut release = state.release.subscribe();
    let generation = *release.borrow_and_update();
    lock(&state.requests).push(PublishRecord {
        status: 0,
        events: 0,
        bytes,
        content_type: content_type(headers),
        reason: Some("stalled: no answer".into()),
    });
    let _ = release.wait_for(|g| *g > generation).await;
    Some(crate::raw::response(
        StatusCode::SERVICE_UNAVAILABLE,
        HeaderMap::new(),
        "released after a stall",
    ))
}

fn content_type(headers: &HeaderMap) -> Option<String> {
    headers
        .get(warp::http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
}

/// Handles one publish request; the status and, when refused, why.
fn publish(
    state: &Arc<State>,
    method: &Method,
    path: &str,
    query: Option<&str>,
    headers: &HeaderMap,
    body: &Bytes,
) -> (StatusCode, Option<String>) {
    let content_type = content_type(headers);
    let (status, events, reason) = match check(
        state,
        method,
        path,
        query,
        headers,
        body,
        content_type.as_deref(),
    ) {
        Ok(events) => {
            let count = events.len();
            accept(state, events);
            (StatusCode::OK, count, None)
        }
        Err(Refusal {
            status,
            events,
            reason,
        }) => (status, events, Some(reason)),
    };
    lock(&state.requests).push(PublishRecord {
        status: status.as_u16(),
        events,
        bytes: body.len(),
        content_type,
        reason: reason.clone(),
    });
    (status, reason)
}

struct Refusal {
    status: StatusCode,
    events: usize,
    reason: String,
}

fn refuse(status: StatusCode, reason: impl Into<String>) -> Refusal {
    Refusal {
        status,
        events: 0,
        reason: reason.into(),
    }
}

/// The checks of the module documentation, in order; the accepted events.
fn check(
    state: &State,
    method: &Method,
    path: &str,
    query: Option<&str>,
    headers: &HeaderMap,
    body: &[u8],
    content_type: Option<&str>,
) -> Result<Vec<Value>, Refusal> {
    if lock(&state.down).is_some() {
        return Err(refuse(StatusCode::SERVICE_UNAVAILABLE, "the topic is down"));
    }
    if let Some(status) = lock(&state.injected).pop_front() {
        let status = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        return Err(refuse(status, "injected failure"));
    }
    if method != Method::POST || path != EVENTS_PATH {
        return Err(refuse(
            StatusCode::NOT_FOUND,
            format!("no resource at {method} {path}"),
        ));
    }
    let authorization = headers.get("authorization").and_then(|v| v.to_str().ok());
    if let (Some(check), Some(_)) = (&state.bearer, authorization) {
        if let Err(why) = check.check(authorization) {
            return Err(refuse(StatusCode::UNAUTHORIZED, why));
        }
    } else if headers.get(SAS_KEY_HEADER).and_then(|v| v.to_str().ok()) != Some(state.key.as_str())
    {
        return Err(refuse(
            StatusCode::UNAUTHORIZED,
            format!("{SAS_KEY_HEADER} is missing or wrong"),
        ));
    }
    if *lock(&state.revoked) {
        return Err(refuse(
            StatusCode::UNAUTHORIZED,
            "the key was revoked (rotated on the topic)",
        ));
    }
    let has_version = query.unwrap_or_default().split('&').any(|pair| {
        pair.split_once('=')
            .is_some_and(|(name, value)| name == API_VERSION_PARAMETER && !value.is_empty())
    });
    if !has_version {
        return Err(refuse(
            StatusCode::BAD_REQUEST,
            format!("the {API_VERSION_PARAMETER} query parameter is required"),
        ));
    }
    if body.len() > MAX_REQUEST_BYTES {
        return Err(refuse(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!(
                "request is {} bytes, over the {MAX_REQUEST_BYTES}-byte limit",
                body.len()
            ),
        ));
    }
    let media_type = content_type
        .and_then(|c| c.split(';').next())
        .map(|m| m.trim().to_ascii_lowercase())
        .unwrap_or_default();
    let single = match (state.schema, media_type.as_str()) {
        (InputSchema::EventGridEvent, JSON_CONTENT_TYPE) => false,
        (InputSchema::CloudEvent, CLOUDEVENTS_BATCH_CONTENT_TYPE) => false,
        (InputSchema::CloudEvent, CLOUDEVENT_CONTENT_TYPE) => true,
        (schema, _) => {
            return Err(refuse(
                StatusCode::BAD_REQUEST,
                format!("content type {content_type:?} is not accepted by a {schema:?} topic"),
            ))
        }
    };
    let parsed: Value = serde_json::from_slice(body)
        .map_err(|e| refuse(StatusCode::BAD_REQUEST, format!("body is not JSON: {e}")))?;
    let (events, spans) = match (single, parsed) {
        (true, Value::Object(map)) => (vec![Value::Object(map)], vec![body.len()]),
        (true, _) => {
            return Err(refuse(
                StatusCode::BAD_REQUEST,
                "a single CloudEvent must be a JSON object",
            ))
        }
        (false, Value::Array(events)) => {
            let sizes = element_sizes(body);
            (events, sizes)
        }
        (false, _) => {
            return Err(refuse(
                StatusCode::BAD_REQUEST,
                "body must be a JSON array of events",
            ))
        }
    };
    let count = events.len();
    let with_count = |mut r: Refusal| {
        r.events = count;
        r
    };
    if count > MAX_EVENTS_PER_REQUEST {
        return Err(with_count(refuse(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("{count} events, over the limit of {MAX_EVENTS_PER_REQUEST} per request"),
        )));
    }
    if let Some((i, size)) = spans
        .iter()
        .enumerate()
        .find(|(_, s)| **s > MAX_EVENT_BYTES)
    {
        return Err(with_count(refuse(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("event {i} is {size} bytes, over the {MAX_EVENT_BYTES}-byte event limit"),
        )));
    }
    for (i, event) in events.iter().enumerate() {
        let problem = match state.schema {
            InputSchema::EventGridEvent => check_event_grid_event(event, &resource_id(&state.name)),
            InputSchema::CloudEvent => check_cloud_event(event),
        };
        if let Err(problem) = problem {
            return Err(with_count(refuse(
                StatusCode::BAD_REQUEST,
                format!("event {i}: {problem}"),
            )));
        }
    }
    let refusals = lock(&state.refusals).clone();
    for (i, event) in events.iter().enumerate() {
        let text = event.to_string();
        if let Some((marker, status)) = refusals.iter().find(|(m, _)| text.contains(m.as_str())) {
            let status = StatusCode::from_u16(*status).unwrap_or(StatusCode::BAD_REQUEST);
            return Err(with_count(refuse(
                status,
                format!("event {i}: refused for good (it matches {marker:?})"),
            )));
        }
    }
    Ok(events)
}

/// Sizes in bytes of the elements of a JSON array given as (valid) text, whitespace around
/// them excluded.
fn element_sizes(body: &[u8]) -> Vec<usize> {
    let mut sizes = Vec::new();
    let mut depth = 0usize;
    let mut in_string = false;
    let mut escaped = false;
    let mut start: Option<usize> = None;
    let mut end = 0usize;
    for (i, &b) in body.iter().enumerate() {
        if in_string {
            end = i + 1;
            match (escaped, b) {
                (true, _) => escaped = false,
                (false, b'\\') => escaped = true,
                (false, b'"') => in_string = false,
                _ => {}
            }
            continue;
        }
        match b {
            b' ' | b'\t' | b'\n' | b'\r' => continue,
            b'[' | b'{' if depth == 0 => depth = 1,
            b',' | b']' if depth == 1 => {
                if let Some(s) = start.take() {
                    sizes.push(end - s);
                }
                if b == b']' {
                    depth = 0;
                }
            }
            _ => {
                if depth == 1 && start.is_none() {
                    start = Some(i);
                }
                match b {
                    b'[' | b'{' => depth += 1,
                    b']' | b'}' => depth = depth.saturating_sub(1),
                    b'"' => in_string = true,
                    _ => {}
                }
                end = i + 1;
            }
        }
    }
    sizes
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn element_sizes_are_exact() {
        let body = br#" [ {"a":"x,]}\"y"} , [1,[2]],"s" ,3 ] "#;
        assert_eq!(element_sizes(body), [15, 7, 3, 1]);
        assert!(element_sizes(b"[]").is_empty());
        assert_eq!(element_sizes(b"[{}]"), [2]);
    }
}
