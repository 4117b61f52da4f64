//! The Event Grid webhook protocol, as a receiver speaks it: the headers that say what a request
//! is, the subscription validation handshake (Event Grid schema), the abuse-protection handshake
//! (CloudEvents), unsubscribing, and the shape of a delivery (a JSON array of events, or one).
//!
//! Nothing here knows what the events mean: a delivery's events are handed on as JSON text,
//! unparsed (an event may be nested to any depth). Every refusal is a 400 problem.

use serde::Deserialize;
use serde_json::json;
use serde_json::value::RawValue;
use warp::http::{HeaderValue, StatusCode};
use warp::reply::Response;
use warp::Rejection;

use crate::functions::problem::{json_response, reject, Problem};

/// Header saying what an Event Grid delivery is.
pub const EVENT_TYPE_HEADER: &str = "aeg-event-type";
/// `aeg-event-type` of a delivery of events.
pub const NOTIFICATION: &str = "Notification";
/// `aeg-event-type` of the Event Grid schema's subscription handshake.
pub const SUBSCRIPTION_VALIDATION: &str = "SubscriptionValidation";
/// `aeg-event-type` sent when a subscription is deleted.
pub const UNSUBSCRIBE: &str = "Unsubscribe";
/// `eventType` of the subscription validation event.
pub const VALIDATION_EVENT_TYPE: &str = "Microsoft.EventGrid.SubscriptionValidationEvent";
/// CloudEvents abuse protection: the request header naming the sender.
pub const REQUEST_ORIGIN_HEADER: &str = "webhook-request-origin";
/// CloudEvents abuse protection: the response header granting it.
pub const ALLOWED_ORIGIN_HEADER: &str = "webhook-allowed-origin";
/// CloudEvents abuse protection: the response header with the granted rate.
pub const ALLOWED_RATE_HEADER: &str = "webhook-allowed-rate";
/// The rate granted: no limit (deliveries are idempotent and Event Grid paces itself).
pub const ALLOWED_RATE: &str = "*";
/// Content types that mark a CloudEvents delivery (accepted without `aeg-event-type`).
const CLOUDEVENTS_CONTENT_TYPES: [&str; 2] = [
    "application/cloudevents+json",
    "application/cloudevents-batch+json",
];

/// The answer to a request of the protocol itself (a subscription validation handshake, an
/// unsubscribe), or `None` for a delivery of events, which the receiver applies. A request
/// whose `aeg-event-type` is missing (and that is not CloudEvents) or unknown is a 400.
pub(crate) fn protocol_answer(
    event_type: Option<&str>,
    content_type: Option<&str>,
    body: &[u8],
    invocation_id: &str,
) -> Result<Option<Response>, Problem> {
    let is_cloud_events = content_type.is_some_and(|ct| {
        let ct = ct.to_ascii_lowercase();
        CLOUDEVENTS_CONTENT_TYPES.iter().any(|t| ct.starts_with(t))
    });
    let kind = match event_type.map(str::trim) {
        Some(kind) => kind,
        None if is_cloud_events => NOTIFICATION,
        None => {
            return Err(Problem::bad_request(
                "missing-header",
                format!("an Event Grid delivery carries {EVENT_TYPE_HEADER}"),
            ))
        }
    };
    if kind.eq_ignore_ascii_case(SUBSCRIPTION_VALIDATION) {
        let code = validation_code(&delivered_events(body)?)?;
        tracing::info!(%invocation_id, "Event Grid subscription validated");
        return Ok(Some(json_response(
            StatusCode::OK,
            &json!({ "validationResponse": code }),
        )));
    }
    if kind.eq_ignore_ascii_case(UNSUBSCRIBE) {
        return Ok(Some(json_response(StatusCode::OK, &json!({}))));
    }
    if !kind.eq_ignore_ascii_case(NOTIFICATION) {
        return Err(Problem::bad_request(
            "unknown-event-type",
            format!(
                "{EVENT_TYPE_HEADER} must be {NOTIFICATION}, {SUBSCRIPTION_VALIDATION} or {UNSUBSCRIBE}, not {kind:?}"
            ),
        ));
    }
    Ok(None)
}

/// `OPTIONS /api/eventgrid`: the CloudEvents abuse-protection handshake, granting the origin
/// that asks.
pub(crate) async fn abuse_protection(origin: Option<String>) -> Result<Response, Rejection> {
    let origin = origin
        .map(|o| o.trim().to_owned())
        .filter(|o| !o.is_empty())
        .ok_or_else(|| {
            reject(Problem::bad_request(
                "missing-header",
                format!("an OPTIONS request must carry {REQUEST_ORIGIN_HEADER}"),
            ))
        })?;
    let allowed = HeaderValue::from_str(&origin).map_err(|_| {
        reject(Problem::bad_request(
            "invalid-header",
            format!("{REQUEST_ORIGIN_HEADER} is not a valid header value"),
        ))
    })?;
    let mut response = Response::new(Default::default());
    response
        .headers_mut()
        .insert(ALLOWED_ORIGIN_HEADER, allowed);
    response
        .headers_mut()
        .insert(ALLOWED_RATE_HEADER, HeaderValue::from_static(ALLOWED_RATE));
    Ok(response)
}

/// The events of a delivery body, each as its JSON text: the elements of a JSON array, or
/// the body itself when it is one object. Nothing inside an event is parsed here (an element
/// may be nested to any depth); a body that is not JSON, or neither an array nor an object,
/// is a 400.
pub(crate) fn delivered_events(body: &[u8]) -> Result<Vec<&RawValue>, Problem> {
    let text = std::str::from_utf8(body).map_err(|e| {
        Problem::bad_request("malformed-json", format!("request body: not UTF-8: {e}"))
    })?;
    let trimmed = text.trim_start_matches(|c: char| c.is_ascii_whitespace() || c == '\u{feff}');
    let parsed = if trimmed.starts_with('[') {
        serde_json::from_str::<Vec<&RawValue>>(trimmed)
    } else if trimmed.starts_with('{') {
        serde_json::from_str::<&RawValue>(trimmed).map(|event| vec![event])
    } else {
        return Err(Problem::bad_request(
            "invalid-body",
            "a delivery is a JSON array of events or one event",
        ));
    };
    parsed.map_err(|e| {
        Problem::bad_request("malformed-json", format!("request body: {e}"))
            .with("line", e.line())
            .with("column", e.column())
    })
}

/// What the subscription validation event is read for (either schema).
#[derive(Deserialize)]
struct ValidationEvent<'a> {
    #[serde(default, rename = "eventType")]
    event_type: Option<String>,
    #[serde(default, rename = "type")]
    kind: Option<String>,
    #[serde(default, borrow)]
    data: Option<&'a RawValue>,
}

#[derive(Deserialize)]
struct ValidationData {
    #[serde(default, rename = "validationCode")]
    validation_code: Option<String>,
}

/// `data.validationCode` of the first event of a validation handshake.
fn validation_code(events: &[&RawValue]) -> Result<String, Problem> {
    let invalid = |detail: &str| Problem::bad_request("invalid-validation-event", detail);
    let event = events
        .first()
        .ok_or_else(|| invalid("the subscription validation delivery has no event"))?;
    let event: ValidationEvent<'_> = serde_json::from_str(event.get())
        .map_err(|_| invalid("the subscription validation event is not an event object"))?;
    if event.event_type.or(event.kind).as_deref() != Some(VALIDATION_EVENT_TYPE) {
        return Err(invalid(&format!(
            "the subscription validation event's eventType must be {VALIDATION_EVENT_TYPE}"
        )));
    }
    // `data` is an object, or a string holding one.
    let data = event.data.map(RawValue::get).unwrap_or("null");
    let unwrapped = if data.starts_with('"') {
        serde_json::from_str::<String>(data).ok()
    } else {
        None
    };
    let code = serde_json::from_str::<ValidationData>(unwrapped.as_deref().unwrap_or(data))
        .ok()
        .and_then(|d| d.validation_code)
        .filter(|code| !code.is_empty());
    code.ok_or_else(|| invalid("the subscription validation event has no data.validationCode"))
}
