//! The Event Grid webhook of the host: `/runtime/webhooks/EventGrid?functionName={name}`,
//! as the Event Grid extension handles it (`EventGridExtensionConfigProvider`,
//! `HttpRequestProcessor` in azure-sdk-for-net).
//!
//! Guarantees, in the extension's order:
//! 1. `functionName` must name an enabled function with an `eventGridTrigger` (exact spelling,
//!    as the extension's listener table is case-sensitive), else 404 `cannot find function`;
//! 2. `OPTIONS` is the CloudEvents abuse-protection handshake: 200 with
//!    `WebHook-Allowed-Origin` (the request's `WebHook-Request-Origin` when it is an Azure
//!    cloud's Event Grid origin, else `eventgrid.azure.net`);
//! 3. `aeg-event-type: SubscriptionValidation`: the host answers itself, 200
//!    `{"validationResponse": code}` taken from `[0].data.validationCode` (array body) or
//!    `data.validationCode` (single event, `data` possibly a JSON string); the handler is not
//!    called;
//! 4. `aeg-event-type: Notification`: the body is a JSON array of events or one event (Event
//!    Grid schema or CloudEvents 1.0, passed as they are); the function is invoked once per
//!    event, all in parallel, with the event as `Data.{binding}` and its `data` as
//!    `Metadata.data`; any failed invocation → 500 (Event Grid then redelivers the whole
//!    batch), else 202;
//! 5. `aeg-event-type: Unsubscribe` → 202; any other value or none → 400.
//!
//! A body that is not JSON, or is neither an array nor an object, makes the extension throw:
//! the host answers 500.

use futures::future::join_all;
use serde_json::{json, Map, Value};
use warp::http::{HeaderValue, Method, StatusCode};

use super::app::Trigger;
use super::invoke::{IncomingRequest, OutgoingResponse};
use super::SimState;

/// The header saying what an Event Grid delivery is.
pub const EVENT_TYPE_HEADER: &str = "aeg-event-type";
/// `aeg-event-type` of a delivery of events.
pub const NOTIFICATION: &str = "Notification";
/// `aeg-event-type` of the Event Grid schema's subscription handshake.
pub const SUBSCRIPTION_VALIDATION: &str = "SubscriptionValidation";
/// `aeg-event-type` sent when a subscription is deleted.
pub const UNSUBSCRIBE: &str = "Unsubscribe";
/// The CloudEvents handshake's request header.
pub const REQUEST_ORIGIN_HEADER: &str = "webhook-request-origin";
/// The CloudEvents handshake's response header.
pub const ALLOWED_ORIGIN_HEADER: &str = "webhook-allowed-origin";
/// The public cloud's Event Grid origin (the default allowed origin).
pub const PUBLIC_CLOUD_ORIGIN: &str = "eventgrid.azure.net";
/// Origins echoed back by the handshake.
const KNOWN_ORIGINS: [&str; 5] = [
    PUBLIC_CLOUD_ORIGIN,
    "eventgrid.azure.us",
    "eventgrid.azure.eaglex.ic.gov",
    "eventgrid.azure.microsoft.scloud",
    "eventgrid.azure.cn",
];
/// The query parameter naming the function.
pub const FUNCTION_NAME_PARAMETER: &str = "functionName";

/// Handles one request to the Event Grid webhook.
pub async fn webhook(sim: &SimState, request: &IncomingRequest) -> OutgoingResponse {
    let name = request
        .query_value(FUNCTION_NAME_PARAMETER)
        .unwrap_or_default();
    let function =
        sim.app.functions.iter().find(|f| {
            f.name == name && !f.disabled && matches!(f.trigger, Trigger::EventGrid { .. })
        });
    let Some(function) = function else {
        return OutgoingResponse::text(
            StatusCode::NOT_FOUND,
            format!("cannot find function: '{name}'"),
        );
    };
    let Trigger::EventGrid { binding } = &function.trigger else {
        return OutgoingResponse::empty(StatusCode::NOT_FOUND);
    };

    if request.method == Method::OPTIONS {
        let origin = request
            .headers
            .get(REQUEST_ORIGIN_HEADER)
            .and_then(|v| v.to_str().ok())
            .filter(|o| KNOWN_ORIGINS.contains(o))
            .unwrap_or(PUBLIC_CLOUD_ORIGIN);
        let mut response = OutgoingResponse::empty(StatusCode::OK);
        if let Ok(value) = HeaderValue::from_str(origin) {
            response.headers.insert(ALLOWED_ORIGIN_HEADER, value);
        }
        return response;
    }

    let event_type = request
        .headers
        .get(EVENT_TYPE_HEADER)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    if event_type.eq_ignore_ascii_case(SUBSCRIPTION_VALIDATION) {
        return match validation_code(&request.body) {
            Some(code) => {
                println!("[hostsim] Event Grid handshake for function {name}");
                OutgoingResponse::json(StatusCode::OK, &json!({ "validationResponse": code }))
            }
            None => OutgoingResponse::text(
                StatusCode::INTERNAL_SERVER_ERROR,
                "no data.validationCode in the subscription validation event",
            ),
        };
    }
    if event_type.eq_ignore_ascii_case(UNSUBSCRIBE) {
        return OutgoingResponse::empty(StatusCode::ACCEPTED);
    }
    if !event_type.eq_ignore_ascii_case(NOTIFICATION) {
        return OutgoingResponse::empty(StatusCode::BAD_REQUEST);
    }

    let events = match serde_json::from_slice::<Value>(&request.body) {
        Ok(Value::Array(events)) => events,
        Ok(event @ Value::Object(_)) => vec![event],
        Ok(_) => {
            return OutgoingResponse::text(
                StatusCode::INTERNAL_SERVER_ERROR,
                "The request content should be parseable into a JSON object or array",
            )
        }
        Err(error) => {
            return OutgoingResponse::text(
                StatusCode::INTERNAL_SERVER_ERROR,
                format!("the request content is not JSON: {error}"),
            )
        }
    };
    let invocations = events.into_iter().map(|event| {
        let mut data = Map::new();
        let mut metadata = Map::new();
        metadata.insert(
            "data".into(),
            event.get("data").cloned().unwrap_or(Value::Null),
        );
        data.insert(binding.clone(), sim.encoding.encode(event));
        sim.invoker
            .invoke(&function.name, "eventGrid", data, metadata)
    });
    let outcomes = join_all(invocations).await;
    match outcomes.iter().find(|o| !o.succeeded) {
        Some(failed) => OutgoingResponse::text(
            StatusCode::INTERNAL_SERVER_ERROR,
            failed.error.clone().unwrap_or_default(),
        ),
        None => OutgoingResponse::empty(StatusCode::ACCEPTED),
    }
}

fn validation_code(body: &[u8]) -> Option<String> {
    let parsed: Value = serde_json::from_slice(body).ok()?;
    let event = match &parsed {
        Value::Array(events) => events.first()?,
        Value::Object(_) => &parsed,
        _ => return None,
    };
    let data = event.get("data")?;
    // CloudEvents carry the data JSON-encoded in a string.
    let data = match data {
        Value::String(text) => serde_json::from_str::<Value>(text).ok()?,
        other => other.clone(),
    };
    match data.get("validationCode")? {
        Value::String(code) => Some(code.clone()),
        other => Some(other.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn validation_codes_from_arrays_objects_and_string_data() {
        let array = br#"[{"eventType":"Microsoft.EventGrid.SubscriptionValidationEvent","data":{"validationCode":"abc"}}]"#;
        assert_eq!(validation_code(array).as_deref(), Some("abc"));
        let object = br#"{"data":"{\"validationCode\":\"xyz\"}"}"#;
        assert_eq!(validation_code(object).as_deref(), Some("xyz"));
        assert_eq!(validation_code(b"[]"), None);
        assert_eq!(validation_code(b"not json"), None);
    }
}
