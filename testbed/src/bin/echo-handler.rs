//! `echo-handler`: a tiny custom handler for testing the host simulator without streamfold.
//!
//! It listens on `FUNCTIONS_CUSTOMHANDLER_PORT` and:
//! - `GET /` answers `ECHO_ROOT_STATUS` (default 200): the readiness probe;
//! - `GET /__received` answers every request received so far (JSON array, oldest first),
//!   probes and itself excepted; tests call it on the handler's port directly;
//! - `POST /{FunctionName}` with a JSON invocation payload (`{"Data":...,"Metadata":...}`)
//!   answers `{"Outputs":{"res":{"statusCode":200,"headers":{"x-echo":"payload"},"body":<echo>}},
//!   "Logs":["echo {FunctionName}"],"ReturnValue":<echo>}`, or 500 when any `Data` value (an
//!   object, or a string holding JSON, possibly twice encoded) has `data.fail == true`;
//! - anything else (a forwarded HTTP request) answers 200 with the echo as JSON, or the status
//!   in the request header `x-echo-status`, with the response header `x-echo: forwarded`.
//!
//! The echo is `{"method","path","query","headers":{name:[values]},"body","pid","env":{...}}`
//! with the `FUNCTIONS_*` variables and `ECHO_SETTING`. Behaviour switches (environment):
//! `ECHO_STARTUP_DELAY_MS` (wait before listening), `ECHO_EXIT_AT_START` (exit 3 at once).
//! On SIGTERM it prints `echo-handler: graceful shutdown` and exits 0.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use serde_json::{json, Value};
use streamfold_testbed::raw::RawRequest;
use warp::http::{HeaderMap, Method, StatusCode};
use warp::Filter;

/// Environment variables reported in the echo.
const REPORTED_ENV: [&str; 6] = [
    "FUNCTIONS_CUSTOMHANDLER_PORT",
    "FUNCTIONS_HTTPWORKER_PORT",
    "FUNCTIONS_CUSTOMHANDLER_WORKER_ID",
    "FUNCTIONS_HTTPWORKER_ID",
    "FUNCTIONS_APP_ROOT_PATH",
    "ECHO_SETTING",
];

type Received = Arc<Mutex<Vec<Value>>>;

fn echo(
    method: &Method,
    path: &str,
    query: &Option<String>,
    headers: &HeaderMap,
    body: &Bytes,
) -> Value {
    let mut header_map: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for (name, value) in headers {
        header_map
            .entry(name.as_str().to_string())
            .or_default()
            .push(String::from_utf8_lossy(value.as_bytes()).into_owned());
    }
    let env: BTreeMap<&str, Option<String>> = REPORTED_ENV
        .iter()
        .map(|k| (*k, std::env::var(k).ok()))
        .collect();
    json!({
        "method": method.as_str(),
        "path": path,
        "query": query,
        "headers": header_map,
        "body": String::from_utf8_lossy(body),
        "pid": std::process::id(),
        "env": env,
    })
}

/// Whether a Data value asks for a failure: `data.fail == true`, in an object or in a string
/// holding JSON (once or twice encoded).
fn asks_to_fail(value: &Value) -> bool {
    match value {
        Value::Object(_) => value.pointer("/data/fail") == Some(&Value::Bool(true)),
        Value::String(text) => serde_json::from_str::<Value>(text)
            .map(|inner| asks_to_fail(&inner))
            .unwrap_or(false),
        _ => false,
    }
}

fn respond(status: StatusCode, headers: &[(&str, &str)], body: String) -> warp::reply::Response {
    let mut response = warp::reply::Response::new(body.into());
    *response.status_mut() = status;
    response.headers_mut().insert(
        warp::http::header::CONTENT_TYPE,
        warp::http::HeaderValue::from_static("application/json"),
    );
    for (name, value) in headers {
        if let (Ok(name), Ok(value)) = (
            warp::http::HeaderName::from_bytes(name.as_bytes()),
            warp::http::HeaderValue::from_str(value),
        ) {
            response.headers_mut().insert(name, value);
        }
    }
    response
}

fn handle(
    received: &Received,
    root_status: StatusCode,
    request: RawRequest,
) -> warp::reply::Response {
    let RawRequest {
        method,
        path,
        query,
        headers,
        body,
    } = request;
    if path == "/" && method == Method::GET {
        return respond(root_status, &[], "\"echo-handler\"".into());
    }
    let log = |received: &Received, value: Value| {
        received
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .push(value)
    };
    if path == "/__received" {
        let all = received
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .clone();
        return respond(StatusCode::OK, &[], Value::Array(all).to_string());
    }
    let echoed = echo(&method, &path, &query, &headers, &body);
    log(received, echoed.clone());
    let payload = serde_json::from_slice::<Value>(&body).ok();
    let is_invocation = method == Method::POST
        && !path.starts_with("/api/")
        && payload.as_ref().is_some_and(|p| p.get("Data").is_some());
    if let (true, Some(payload)) = (is_invocation, payload) {
        let function = path.trim_start_matches('/');
        let fail = payload
            .get("Data")
            .and_then(Value::as_object)
            .is_some_and(|data| data.values().any(asks_to_fail));
        if fail {
            println!("echo-handler: failing {function} on request");
            let answer =
                json!({"Outputs": {}, "Logs": ["this log must be dropped"], "ReturnValue": null});
            return respond(StatusCode::INTERNAL_SERVER_ERROR, &[], answer.to_string());
        }
        let answer = json!({
            "Outputs": {"res": {"statusCode": 200, "headers": {"x-echo": "payload"}, "body": echoed.to_string()}},
            "Logs": [format!("echo {function}")],
            "ReturnValue": echoed,
        });
        return respond(StatusCode::OK, &[], answer.to_string());
    }
    let status = headers
        .get("x-echo-status")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u16>().ok())
        .and_then(|v| StatusCode::from_u16(v).ok())
        .unwrap_or(StatusCode::OK);
    respond(status, &[("x-echo", "forwarded")], echoed.to_string())
}

#[tokio::main]
async fn main() {
    if std::env::var_os("ECHO_EXIT_AT_START").is_some() {
        eprintln!("echo-handler: exiting at start as asked");
        std::process::exit(3);
    }
    let Some(port) = std::env::var("FUNCTIONS_CUSTOMHANDLER_PORT")
        .ok()
        .and_then(|p| p.parse::<u16>().ok())
    else {
        eprintln!("echo-handler: FUNCTIONS_CUSTOMHANDLER_PORT is not set");
        std::process::exit(2);
    };
    if let Some(delay) = std::env::var("ECHO_STARTUP_DELAY_MS")
        .ok()
        .and_then(|d| d.parse::<u64>().ok())
    {
        tokio::time::sleep(Duration::from_millis(delay)).await;
    }
    let root_status = std::env::var("ECHO_ROOT_STATUS")
        .ok()
        .and_then(|s| s.parse::<u16>().ok())
        .and_then(|s| StatusCode::from_u16(s).ok())
        .unwrap_or(StatusCode::OK);
    let received: Received = Arc::new(Mutex::new(Vec::new()));
    let routes = streamfold_testbed::raw::request()
        .map(move |request: RawRequest| handle(&received, root_status, request));
    let listener = match tokio::net::TcpListener::bind(("127.0.0.1", port)).await {
        Ok(listener) => listener,
        Err(error) => {
            eprintln!("echo-handler: cannot listen on {port}: {error}");
            std::process::exit(2);
        }
    };
    println!(
        "echo-handler: listening on {port} (pid {})",
        std::process::id()
    );
    let shutdown = async {
        if let Ok(mut term) =
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        {
            term.recv().await;
        }
        println!("echo-handler: graceful shutdown");
    };
    warp::serve(routes)
        .incoming(listener)
        .graceful(shutdown)
        .run()
        .await;
}
