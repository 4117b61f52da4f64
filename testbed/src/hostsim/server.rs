//! The simulator's front door: the HTTP endpoints of the Functions host.
//!
//! Routing, in order (host paths match ignoring case):
//! - `GET|HEAD /` → 200 (the host's root page answers);
//! - `GET /admin/host/status` → 200 `{"state": ..., "version": ...}`;
//! - `POST /admin/functions/{name}` with `{"input": "..."}` → 202, the function runs in the
//!   background (no body → 400, unknown function → 404, HTTP function → 400 here);
//! - `/runtime/webhooks/EventGrid` → the Event Grid webhook (see [`super::eventgrid`]); any
//!   other extension → 404;
//! - function routes `/{routePrefix}/{route}`: the first function (in name order) whose
//!   template and method list match; a path that matches only with another method is a 404,
//!   as in the host (its method list is a route constraint, so no route matches: no 405).
//!
//! HTTP functions are proxied or forwarded raw, or invoked with the JSON payload, as host.json
//! says (see [`super::app::HttpDelivery`] and [`super::invoke`]).
//! With the payload, `Data.{trigger}` = `{Url, Method, Query, Headers, Params, Body}` and
//! `Metadata` = `Query`, `Headers`, the route parameters and `sys`; the response is built from
//! `Outputs.{http output}` (or `ReturnValue` for `$return`): `statusCode` (or `status`,
//! number or string, default 200), `headers`, `body` (a string as is, anything else as JSON).
//! A failed invocation answers 500 with no body.

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::Arc;

use bytes::Bytes;
use serde_json::{json, Map, Value};
use warp::http::{header, HeaderName, HeaderValue, Method, StatusCode};
use warp::Filter;

use super::app::{get_ci, FunctionDef, HttpDelivery, HttpTrigger, Trigger};
use super::invoke::{IncomingRequest, OutgoingResponse, HOST_VERSION};
use super::timer::timer_info;
use super::worker::HandlerState;
use super::{eventgrid, SimState};

/// The admin API's path prefix for one function.
pub const ADMIN_FUNCTIONS_PREFIX: &str = "/admin/functions/";
/// The host status path.
pub const ADMIN_HOST_STATUS: &str = "/admin/host/status";
/// The path prefix of extension webhooks.
pub const WEBHOOKS_PREFIX: &str = "/runtime/webhooks/";
/// The Event Grid extension's webhook name.
pub const EVENT_GRID_EXTENSION: &str = "eventgrid";
/// The body field of an admin invocation.
pub const ADMIN_INPUT_FIELD: &str = "input";
/// The binding name that means "the return value".
pub const RETURN_BINDING: &str = "$return";

/// Serves the simulator on `listener` until `shutdown` completes.
pub async fn serve(
    listener: tokio::net::TcpListener,
    sim: Arc<SimState>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) {
    let routes = crate::raw::request().and(warp::addr::remote()).then(
        move |raw: crate::raw::RawRequest, remote: Option<std::net::SocketAddr>| {
            let sim = sim.clone();
            async move {
                let request = IncomingRequest {
                    method: raw.method,
                    raw_path: raw.path,
                    raw_query: raw.query,
                    headers: raw.headers,
                    body: raw.body,
                    remote,
                };
                into_reply(dispatch(&sim, request).await)
            }
        },
    );
    warp::serve(routes)
        .incoming(listener)
        .graceful(shutdown)
        .run()
        .await;
}

fn into_reply(response: OutgoingResponse) -> warp::reply::Response {
    crate::raw::response(response.status, response.headers, response.body)
}

async fn dispatch(sim: &Arc<SimState>, request: IncomingRequest) -> OutgoingResponse {
    let path = request.raw_path.clone();
    let lower = path.to_ascii_lowercase();
    if path == "/" && (request.method == Method::GET || request.method == Method::HEAD) {
        return OutgoingResponse::text(
            StatusCode::OK,
            "Your Functions 4.0 app is up and running (streamfold host simulator)",
        );
    }
    if lower == ADMIN_HOST_STATUS && request.method == Method::GET {
        return host_status(sim);
    }
    if let Some(name) = lower
        .strip_prefix(ADMIN_FUNCTIONS_PREFIX)
        .map(|_| &path[ADMIN_FUNCTIONS_PREFIX.len()..])
    {
        if request.method != Method::POST {
            return OutgoingResponse::empty(StatusCode::METHOD_NOT_ALLOWED);
        }
        let name = percent_encoding::percent_decode_str(name.trim_end_matches('/'))
            .decode_utf8_lossy()
            .into_owned();
        return admin_invoke(sim, &name, &request.body);
    }
    if let Some(rest) = lower.strip_prefix(WEBHOOKS_PREFIX) {
        let extension = rest.split('/').next().unwrap_or("");
        return if extension == EVENT_GRID_EXTENSION {
            eventgrid::webhook(sim, &request).await
        } else {
            OutgoingResponse::empty(StatusCode::NOT_FOUND)
        };
    }
    let routes = sim
        .app
        .http_routes
        .iter()
        .map(|&index| &sim.app.functions[index]);
    for function in routes.filter(|f| !f.disabled) {
        let Trigger::Http(http) = &function.trigger else {
            continue;
        };
        let method_allowed = http
            .methods
            .as_ref()
            .is_none_or(|methods| methods.iter().any(|m| m == request.method.as_str()));
        if !method_allowed {
            continue;
        }
        if let Some(params) = http.route.matches(&path) {
            return match http.delivery {
                HttpDelivery::Payload => http_payload(sim, function, http, &request, params).await,
                raw => sim.invoker.deliver(&function.name, raw, &request).await,
            };
        }
    }
    OutgoingResponse::empty(StatusCode::NOT_FOUND)
}

fn host_status(sim: &SimState) -> OutgoingResponse {
    let state = match &*sim.state.borrow() {
        HandlerState::Ready { .. } => "Running",
        HandlerState::Starting { .. } | HandlerState::Restarting { .. } => "Initialized",
        HandlerState::Failed(_) => "Error",
        HandlerState::Stopped => "Stopped",
    };
    let errors: Vec<Value> = sim
        .app
        .errors
        .iter()
        .map(|(name, reason)| json!(format!("{name}: {reason}")))
        .collect();
    OutgoingResponse::json(
        StatusCode::OK,
        &json!({ "state": state, "version": HOST_VERSION, "errors": errors }),
    )
}

fn admin_invoke(sim: &Arc<SimState>, name: &str, body: &[u8]) -> OutgoingResponse {
    let Ok(Value::Object(invocation)) = serde_json::from_slice::<Value>(body) else {
        return OutgoingResponse::empty(StatusCode::BAD_REQUEST);
    };
    let Some(function) = sim.app.function(name).filter(|f| !f.disabled) else {
        return OutgoingResponse::empty(StatusCode::NOT_FOUND);
    };
    let input = match get_ci(&Value::Object(invocation), ADMIN_INPUT_FIELD) {
        Some(Value::String(text)) => text.clone(),
        Some(Value::Null) | None => String::new(),
        Some(other) => other.to_string(),
    };
    let (binding, value) = match &function.trigger {
        Trigger::Http(_) => {
            return OutgoingResponse::text(
                StatusCode::BAD_REQUEST,
                "the simulator's admin endpoint invokes non-HTTP functions only",
            )
        }
        Trigger::Timer {
            binding, schedule, ..
        } => (
            binding.clone(),
            Ok(timer_info(
                None,
                schedule.next_after(time::OffsetDateTime::now_utc()),
            )),
        ),
        Trigger::EventGrid { binding } => (
            binding.clone(),
            // The trigger binding parses the input as the event object.
            match serde_json::from_str::<Value>(&input) {
                Ok(event @ Value::Object(_)) => Ok(sim.encoding.encode(event)),
                _ => Err(format!("Unable to parse {input:?} to a JSON object")),
            },
        ),
        Trigger::Other { binding, .. } => (
            binding.clone(),
            // A string input is JSON-encoded once more by the host.
            Ok(Value::String(Value::String(input).to_string())),
        ),
    };
    let sim = sim.clone();
    let name = function.name.clone();
    tokio::spawn(async move {
        match value {
            Ok(value) => {
                let mut data = Map::new();
                data.insert(binding, value);
                sim.invoker.invoke(&name, "admin", data, Map::new()).await;
            }
            Err(error) => sim.invoker.record_failure(&name, "admin", error),
        }
    });
    OutgoingResponse::empty(StatusCode::ACCEPTED)
}

async fn http_payload(
    sim: &SimState,
    function: &FunctionDef,
    http: &HttpTrigger,
    request: &IncomingRequest,
    params: BTreeMap<String, String>,
) -> OutgoingResponse {
    let query: Map<String, Value> = request
        .query()
        .into_iter()
        .map(|(k, v)| (k, Value::String(v.join(","))))
        .collect();
    let header_groups = request.header_groups();
    let headers_lists: Map<String, Value> = header_groups
        .iter()
        .map(|(k, v)| (k.clone(), json!(v)))
        .collect();
    let headers_joined: Map<String, Value> = header_groups
        .iter()
        .map(|(k, v)| (k.clone(), Value::String(v.join(","))))
        .collect();
    let host = request
        .headers
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .unwrap_or("localhost");
    let url = match &request.raw_query {
        Some(q) if !q.is_empty() => format!("http://{host}{}?{q}", request.raw_path),
        _ => format!("http://{host}{}", request.raw_path),
    };
    let params_json: Map<String, Value> = params
        .iter()
        .map(|(k, v)| (k.clone(), Value::String(v.clone())))
        .collect();
    let mut req = json!({
        "Url": url,
        "Method": request.method.as_str(),
        "Query": query,
        "Headers": headers_lists,
        "Params": params_json,
    });
    if request.content_length().unwrap_or(0) > 0 {
        req["Body"] = Value::String(String::from_utf8_lossy(&request.body).into_owned());
    }
    let mut data = Map::new();
    data.insert(http.binding.clone(), req);
    let mut metadata = Map::new();
    metadata.insert("Query".into(), Value::Object(query));
    metadata.insert("Headers".into(), Value::Object(headers_joined));
    for (key, value) in params_json {
        metadata.insert(key, value);
    }
    let outcome = sim
        .invoker
        .invoke(&function.name, "http", data, metadata)
        .await;
    if !outcome.succeeded {
        return OutgoingResponse::empty(StatusCode::INTERNAL_SERVER_ERROR);
    }
    let value = match http.output.as_deref() {
        Some(RETURN_BINDING) => Some(outcome.return_value),
        Some(name) => get_ci(&outcome.outputs, name).cloned(),
        None => None,
    };
    match value {
        None | Some(Value::Null) => OutgoingResponse::empty(StatusCode::OK),
        Some(value) => http_output(value),
    }
}

/// Builds the client's response from an HTTP output binding value.
fn http_output(value: Value) -> OutgoingResponse {
    // The host reads the value's JSON text, so an object and a string holding JSON both work.
    let value = match value {
        Value::String(text) => match serde_json::from_str::<Value>(&text) {
            Ok(parsed @ Value::Object(_)) => parsed,
            _ => {
                return OutgoingResponse::text(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "Failed while trying to Deserialize to httpOutputBindingResponse",
                )
            }
        },
        other => other,
    };
    let status = get_ci(&value, "statusCode")
        .or_else(|| get_ci(&value, "status"))
        .and_then(|s| match s {
            Value::Number(n) => n.as_u64(),
            Value::String(t) => t.trim().parse().ok(),
            _ => None,
        })
        .and_then(|code| u16::try_from(code).ok())
        .and_then(|code| StatusCode::from_u16(code).ok())
        .unwrap_or(StatusCode::OK);
    let mut response = OutgoingResponse::empty(status);
    if let Some(Value::Object(headers)) = get_ci(&value, "headers") {
        for (name, value) in headers {
            let text = match value {
                Value::String(s) => s.clone(),
                other => other.to_string(),
            };
            if let (Ok(name), Ok(value)) = (
                HeaderName::from_bytes(name.as_bytes()),
                HeaderValue::from_str(&text),
            ) {
                response.headers.append(name, value);
            }
        }
    }
    match get_ci(&value, "body") {
        None | Some(Value::Null) => {}
        Some(Value::String(text)) => response.body = Bytes::from(text.clone()),
        Some(other) => {
            response.body = Bytes::from(other.to_string());
            if !response.headers.contains_key(header::CONTENT_TYPE) {
                response.headers.insert(
                    header::CONTENT_TYPE,
                    HeaderValue::from_static("application/json; charset=utf-8"),
                );
            }
        }
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn http_outputs_from_objects_and_strings() {
        let r = http_output(json!({"statusCode": "201", "headers": {"x-a": "1"}, "body": "hi"}));
        assert_eq!(r.status, StatusCode::CREATED);
        assert_eq!(r.headers["x-a"], "1");
        assert_eq!(&r.body[..], b"hi");
        let r = http_output(json!(r#"{"status": 404, "body": {"k": 1}}"#));
        assert_eq!(r.status, StatusCode::NOT_FOUND);
        assert_eq!(&r.body[..], br#"{"k":1}"#);
        assert_eq!(http_output(json!({})).status, StatusCode::OK);
        assert_eq!(
            http_output(json!("not json")).status,
            StatusCode::INTERNAL_SERVER_ERROR
        );
    }
}
