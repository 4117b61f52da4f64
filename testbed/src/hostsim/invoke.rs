//! Calling the handler, the three ways the host does (`DefaultHttpWorkerService`; the
//! differences between the first two are written down in docs/host-modes.md):
//!
//! - **proxying** (HTTP-in/HTTP-out functions with `enableProxyingHttpRequest`): YARP's
//!   `IHttpForwarder` with its default transformer. The path as ASP.NET Core decoded it
//!   (everything but `%2F`), escaped again the way YARP escapes a path (so `%2F` arrives as
//!   `%252F`); the query exactly as the client wrote it; every header but the ones YARP never
//!   copies (hop-by-hop and proxy headers) and `Host` (the handler's own address is sent);
//!   `Forwarded` and client `X-Forwarded-*` removed, then `X-Forwarded-For` (the client's
//!   address), `X-Forwarded-Host` (its Host) and `X-Forwarded-Proto` set;
//!   `X-Azure-Functions-HostVersion`, `X-Azure-Functions-InvocationId` and
//!   `x-ms-invocation-id` set (replacing a client's); the User-Agent untouched; the body
//!   whatever its framing, a chunked body sent on chunked. Connection failures are retried as
//!   `RetryProxyHandler` does (10 attempts, 50 ms doubling to 250 ms); the handler may stay
//!   silent 240 s (`ActivityTimeout`) before the call fails.
//! - **forwarding** (`enableForwardingHttpRequest`, the legacy mode): the same method; the
//!   ORIGINAL path (prefix included); the query rebuilt from its parsed form (keys grouped
//!   ignoring case, repeated values joined by commas, values percent-encoded); every original
//!   header except hop-by-hop and content headers (the original `Host` is kept, as .NET's
//!   HttpClient sends a copied Host header); the body, with Content-Length and Content-Type,
//!   only when Content-Length > 0; plus
//!   `X-Azure-Functions-HostVersion` and `X-Azure-Functions-InvocationId` appended after a
//!   client's values and `Azure-Functions-Host/{version}` appended to the User-Agent. A
//!   chunked request fails (500, the handler is never called): the host copies its
//!   `Transfer-Encoding: chunked` header but no body, which .NET's HttpClient refuses to send.
//!
//!   In both modes a header given several times goes out on one line, its values joined by
//!   `, ` (`; ` for Cookie), as .NET's `SocketsHttpHandler` writes them; redirects are not
//!   followed; the handler's status, headers (hop-by-hop excepted) and body come back as they
//!   are (the simulator reads the body whole before answering, where YARP streams it); a
//!   handler that can't be reached gives 500.
//! - **JSON invocation payload** (every other function): `POST /{FunctionName}` with
//!   `{"Data": {...}, "Metadata": {..., "sys": {"MethodName", "UtcNow", "RandGuid"}}}`; a
//!   non-2xx answer fails the invocation and its `Logs` are dropped (as the host does);
//!   a 2xx answer's `Outputs`, `Logs` and `ReturnValue` (keys matched ignoring case) are read,
//!   and the Logs are printed prefixed with the function's name.
//!
//! Before a call the invoker waits for the handler to be ready (it may be restarting). Each
//! invocation is printed on stdout (function, invocation id, status, duration) and kept as an
//! [`InvocationRecord`] that tests can wait for.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use percent_encoding::{utf8_percent_encode, AsciiSet, NON_ALPHANUMERIC};
use serde_json::{json, Map, Value};
use tokio::sync::watch;
use warp::http::{header, HeaderMap, HeaderName, HeaderValue, Method, StatusCode};

use super::app::{get_ci, string_list, HttpDelivery};
use super::worker::{self, HandlerState};

/// The version the simulator announces (`X-Azure-Functions-HostVersion`, User-Agent).
pub const HOST_VERSION: &str = "4.0.0.0";
/// The header carrying a new id for every invocation.
pub const INVOCATION_ID_HEADER: &str = "x-azure-functions-invocationid";
/// The header carrying the host's version.
pub const HOST_VERSION_HEADER: &str = "x-azure-functions-hostversion";
/// The product the host adds to the User-Agent.
pub const USER_AGENT_PRODUCT: &str = "Azure-Functions-Host";
/// The header the proxying mode also sets to the invocation id
/// (`ScriptConstants.HttpProxyCorrelationHeader`).
pub const PROXY_CORRELATION_HEADER: &str = "x-ms-invocation-id";
/// Why the forwarding mode fails a chunked request (.NET's message for it).
pub const CHUNKED_WITHOUT_CONTENT: &str =
    "'Transfer-Encoding: chunked' header can not be used when content object is not specified.";
/// How often the proxying mode tries to connect (`RetryProxyHandler.MaxRetries`).
pub const PROXY_ATTEMPTS: u32 = 10;
/// The first pause between proxying attempts (`RetryProxyHandler.InitialDelay`).
pub const PROXY_FIRST_DELAY: Duration = Duration::from_millis(50);
/// The longest pause between proxying attempts (`RetryProxyHandler.MaximumDelay`).
pub const PROXY_MAX_DELAY: Duration = Duration::from_millis(250);
/// How long the proxied handler may stay silent (the host's `ForwarderRequestConfig`).
pub const PROXY_ACTIVITY_TIMEOUT: Duration = Duration::from_secs(240);

/// Headers YARP never copies, in either direction (`RequestUtilities._headersToExclude`).
pub const PROXY_EXCLUDED: [&str; 17] = [
    "connection",
    "transfer-encoding",
    "keep-alive",
    "upgrade",
    "proxy-connection",
    "proxy-authenticate",
    "proxy-authentication-info",
    "proxy-authorization",
    "proxy-features",
    "proxy-instruction",
    "security-scheme",
    "alpn",
    "close",
    "http2-settings",
    "upgrade-insecure-requests",
    "te",
    "alt-svc",
];
/// The headers YARP's default `X-Forwarded` transforms replace, and the `Forwarded` header
/// they remove.
pub const PROXY_FORWARDED_HEADERS: [&str; 5] = [
    "forwarded",
    "x-forwarded-for",
    "x-forwarded-host",
    "x-forwarded-proto",
    "x-forwarded-prefix",
];
/// Characters YARP leaves as they are in a path (`RequestUtilities.s_validPathChars`); any
/// other is escaped (UTF-8, upper-case hex), `%` included.
const PROXY_PATH_KEPT: &str =
    "!$&'()*+,-./0123456789:;=@ABCDEFGHIJKLMNOPQRSTUVWXYZ_abcdefghijklmnopqrstuvwxyz~";

/// Characters left as they are in a rebuilt query (RFC 3986 unreserved), like .NET's UrlEncoder.
const QUERY_VALUE: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

pub use crate::raw::HOP_BY_HOP;

/// What the simulator received from a client.
#[derive(Debug, Clone)]
pub struct IncomingRequest {
    pub method: Method,
    /// The path as received (percent-encoded).
    pub raw_path: String,
    /// The query as received, without `?`.
    pub raw_query: Option<String>,
    pub headers: HeaderMap,
    pub body: Bytes,
    /// The client's address, when known (for `X-Forwarded-For`).
    pub remote: Option<std::net::SocketAddr>,
}

impl IncomingRequest {
    /// The query parsed as ASP.NET does: keys grouped ignoring case (first spelling kept),
    /// `+` as space, percent-decoded, in order of first appearance.
    pub fn query(&self) -> Vec<(String, Vec<String>)> {
        let mut grouped: Vec<(String, Vec<String>)> = Vec::new();
        let Some(raw) = self.raw_query.as_deref() else {
            return grouped;
        };
        for pair in raw.split('&').filter(|p| !p.is_empty()) {
            let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
            let key = decode_query_part(key);
            let value = decode_query_part(value);
            match grouped
                .iter_mut()
                .find(|(k, _)| k.eq_ignore_ascii_case(&key))
            {
                Some((_, values)) => values.push(value),
                None => grouped.push((key, vec![value])),
            }
        }
        grouped
    }

    /// One query value (values of a repeated key joined by commas).
    pub fn query_value(&self, key: &str) -> Option<String> {
        self.query()
            .into_iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(key))
            .map(|(_, values)| values.join(","))
    }

    /// The declared Content-Length, when present and valid.
    pub fn content_length(&self) -> Option<u64> {
        self.headers
            .get(header::CONTENT_LENGTH)?
            .to_str()
            .ok()?
            .trim()
            .parse()
            .ok()
    }

    /// Whether a `Transfer-Encoding` header names `chunked`.
    pub fn has_chunked_header(&self) -> bool {
        self.headers
            .get_all(header::TRANSFER_ENCODING)
            .iter()
            .any(|v| {
                String::from_utf8_lossy(v.as_bytes())
                    .to_ascii_lowercase()
                    .contains("chunked")
            })
    }

    /// Whether the body came chunked (`Transfer-Encoding: chunked` and no Content-Length).
    pub fn is_chunked(&self) -> bool {
        self.content_length().is_none() && self.has_chunked_header()
    }

    /// The headers grouped by name: name → values.
    pub fn header_groups(&self) -> Vec<(String, Vec<String>)> {
        let mut groups: Vec<(String, Vec<String>)> = Vec::new();
        for (name, value) in &self.headers {
            let value = String::from_utf8_lossy(value.as_bytes()).into_owned();
            match groups.iter_mut().find(|(n, _)| n == name.as_str()) {
                Some((_, values)) => values.push(value),
                None => groups.push((name.as_str().to_string(), vec![value])),
            }
        }
        groups
    }
}

fn decode_query_part(part: &str) -> String {
    let spaced = part.replace('+', " ");
    percent_encoding::percent_decode_str(&spaced)
        .decode_utf8_lossy()
        .into_owned()
}

/// The query the host sends on: `key=v1%2Cv2&...`.
pub fn rebuild_query(query: &[(String, Vec<String>)]) -> String {
    query
        .iter()
        .map(|(key, values)| {
            format!(
                "{}={}",
                utf8_percent_encode(key, QUERY_VALUE),
                utf8_percent_encode(&values.join(","), QUERY_VALUE)
            )
        })
        .collect::<Vec<_>>()
        .join("&")
}

/// The path a proxied request is sent on: `raw_path` decoded as ASP.NET Core decodes a path
/// (every escape but `%2F`; escapes that do not decode to UTF-8 are kept as they came), then
/// escaped as YARP's `RequestUtilities.EncodePath` does (every character outside its set,
/// `%` included, as UTF-8 in upper-case hex).
pub fn proxied_path(raw_path: &str) -> String {
    let decoded = aspnet_decoded_path(raw_path);
    let mut out = String::with_capacity(decoded.len());
    for c in decoded.chars() {
        if PROXY_PATH_KEPT.contains(c) {
            out.push(c);
        } else {
            let mut buffer = [0u8; 4];
            for byte in c.encode_utf8(&mut buffer).bytes() {
                out.push_str(&format!("%{byte:02X}"));
            }
        }
    }
    out
}

/// `HttpRequest.Path` of a request target: runs of escapes decoded when they are UTF-8,
/// `%2F` (any case) never.
fn aspnet_decoded_path(raw_path: &str) -> String {
    fn escape_at(bytes: &[u8], i: usize) -> Option<u8> {
        if bytes.get(i) != Some(&b'%') {
            return None;
        }
        let hex = std::str::from_utf8(bytes.get(i + 1..i + 3)?).ok()?;
        u8::from_str_radix(hex, 16).ok().filter(|b| *b != b'/')
    }
    let bytes = raw_path.as_bytes();
    let mut out = String::with_capacity(raw_path.len());
    let mut i = 0;
    while i < bytes.len() {
        let start = i;
        let mut run = Vec::new();
        while let Some(byte) = escape_at(bytes, i) {
            run.push(byte);
            i += 3;
        }
        if run.is_empty() {
            // Not an escape: copy the character as it is.
            let next = raw_path[i..].chars().next().map_or(1, char::len_utf8);
            out.push_str(&raw_path[i..i + next]);
            i += next;
        } else {
            match String::from_utf8(run) {
                Ok(text) => out.push_str(&text),
                Err(_) => out.push_str(&raw_path[start..i]),
            }
        }
    }
    out
}

/// One header line per name, its values joined as .NET's `SocketsHttpHandler` writes them
/// (`; ` for Cookie, a space for User-Agent, else `, `).
fn joined(name: &HeaderName, values: Vec<&HeaderValue>) -> Result<HeaderValue, String> {
    if let [one] = values.as_slice() {
        return Ok((*one).clone());
    }
    let separator: &[u8] = match name.as_str() {
        "cookie" => b"; ",
        "user-agent" => b" ",
        _ => b", ",
    };
    let mut line = Vec::new();
    for (index, value) in values.iter().enumerate() {
        if index > 0 {
            line.extend_from_slice(separator);
        }
        line.extend_from_slice(value.as_bytes());
    }
    HeaderValue::from_bytes(&line).map_err(|e| e.to_string())
}

/// The headers the host sends the handler in proxying mode, before its own are set.
fn proxied_headers(request: &IncomingRequest) -> Result<HeaderMap, String> {
    let mut headers = HeaderMap::new();
    for name in request.headers.keys() {
        let lower = name.as_str();
        if PROXY_EXCLUDED.contains(&lower)
            || PROXY_FORWARDED_HEADERS.contains(&lower)
            || lower == "host"
            || lower == "content-length"
        {
            continue;
        }
        let values: Vec<&HeaderValue> = request.headers.get_all(name).iter().collect();
        headers.insert(name.clone(), joined(name, values)?);
    }
    if let Some(remote) = request.remote {
        headers.insert(
            HeaderName::from_static("x-forwarded-for"),
            HeaderValue::from_str(&remote.ip().to_string()).map_err(|e| e.to_string())?,
        );
    }
    if let Some(host) = request.headers.get(header::HOST) {
        headers.insert(HeaderName::from_static("x-forwarded-host"), host.clone());
    }
    headers.insert(
        HeaderName::from_static("x-forwarded-proto"),
        HeaderValue::from_static("http"),
    );
    Ok(headers)
}

/// A response to give back to the client.
#[derive(Debug, Clone)]
pub struct OutgoingResponse {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl OutgoingResponse {
    pub fn empty(status: StatusCode) -> Self {
        Self {
            status,
            headers: HeaderMap::new(),
            body: Bytes::new(),
        }
    }

    pub fn text(status: StatusCode, text: impl Into<String>) -> Self {
        let mut response = Self::empty(status);
        response.headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/plain; charset=utf-8"),
        );
        response.body = Bytes::from(text.into());
        response
    }

    pub fn json(status: StatusCode, value: &Value) -> Self {
        let mut response = Self::empty(status);
        response.headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json; charset=utf-8"),
        );
        response.body = Bytes::from(value.to_string());
        response
    }
}

/// One invocation of a function, as the simulator saw it.
#[derive(Debug, Clone)]
pub struct InvocationRecord {
    pub function: String,
    pub invocation_id: String,
    /// `http`, `eventGrid`, `timer`, `admin`, ...
    pub reason: String,
    pub succeeded: bool,
    /// The handler's HTTP status, when it answered.
    pub status: Option<u16>,
    pub duration: Duration,
    /// `Outputs` of a JSON invocation (Null for forwarded calls).
    pub outputs: Value,
    /// `Logs` of a successful JSON invocation.
    pub logs: Vec<String>,
    pub return_value: Value,
    /// Why it failed.
    pub error: Option<String>,
}

/// The invocation log, with a change counter to wait on.
pub struct Records {
    list: Mutex<Vec<InvocationRecord>>,
    changes: watch::Sender<u64>,
}

impl Records {
    pub fn new() -> Self {
        Self {
            list: Mutex::new(Vec::new()),
            changes: watch::channel(0).0,
        }
    }

    fn push(&self, record: InvocationRecord) {
        lock(&self.list).push(record);
        self.changes.send_modify(|n| *n += 1);
    }

    pub fn all(&self) -> Vec<InvocationRecord> {
        lock(&self.list).clone()
    }

    /// Waits until `count` invocations of `function` (ignoring case) were recorded.
    pub async fn wait_for(
        &self,
        function: &str,
        count: usize,
        timeout: Duration,
    ) -> anyhow::Result<Vec<InvocationRecord>> {
        let mut changes = self.changes.subscribe();
        let wait = async {
            loop {
                changes.borrow_and_update();
                let matching: Vec<InvocationRecord> = lock(&self.list)
                    .iter()
                    .filter(|r| r.function.eq_ignore_ascii_case(function))
                    .cloned()
                    .collect();
                if matching.len() >= count {
                    return Ok(matching);
                }
                if changes.changed().await.is_err() {
                    anyhow::bail!("the simulator stopped");
                }
            }
        };
        match tokio::time::timeout(timeout, wait).await {
            Ok(result) => result,
            Err(_) => {
                let seen = lock(&self.list)
                    .iter()
                    .filter(|r| r.function.eq_ignore_ascii_case(function))
                    .count();
                anyhow::bail!(
                    "{seen} invocation(s) of {function} within {timeout:?}; expected {count}"
                )
            }
        }
    }
}

impl Default for Records {
    fn default() -> Self {
        Self::new()
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// The outcome of a JSON invocation.
#[derive(Debug, Clone)]
pub struct JsonOutcome {
    pub succeeded: bool,
    pub outputs: Value,
    pub return_value: Value,
    pub error: Option<String>,
}

/// Calls the handler.
pub struct Invoker {
    handler_base: String,
    forward_client: reqwest::Client,
    proxy_client: reqwest::Client,
    json_client: reqwest::Client,
    state: watch::Receiver<HandlerState>,
    ready_timeout: Duration,
    pub records: Arc<Records>,
}

impl Invoker {
    pub fn new(
        handler_port: u16,
        state: watch::Receiver<HandlerState>,
        ready_timeout: Duration,
        function_timeout: Option<Duration>,
        records: Arc<Records>,
    ) -> anyhow::Result<Self> {
        // Neither raw-HTTP client adds headers of its own (no default `Accept: */*`) or follows
        // redirects.
        let raw = || {
            reqwest::Client::builder()
                .no_proxy()
                .default_headers(HeaderMap::new())
                .redirect(reqwest::redirect::Policy::none())
        };
        let mut forward = raw();
        let mut proxy = raw().read_timeout(PROXY_ACTIVITY_TIMEOUT);
        let mut json_client = reqwest::Client::builder().no_proxy();
        if let Some(timeout) = function_timeout {
            forward = forward.timeout(timeout);
            proxy = proxy.timeout(timeout);
            json_client = json_client.timeout(timeout);
        }
        Ok(Self {
            handler_base: format!("http://127.0.0.1:{handler_port}"),
            forward_client: forward.build()?,
            proxy_client: proxy.build()?,
            json_client: json_client.build()?,
            state,
            ready_timeout,
            records,
        })
    }

    async fn ready(&self) -> Result<(), String> {
        worker::wait_ready(self.state.clone(), self.ready_timeout)
            .await
            .map(|_| ())
            .map_err(|e| format!("{e:#}"))
    }

    /// Hands a client's request to the handler as raw HTTP, the way `delivery` says
    /// ([`HttpDelivery::Payload`] is not raw HTTP: see `server::http_payload`), and gives
    /// back its answer.
    pub async fn deliver(
        &self,
        function: &str,
        delivery: HttpDelivery,
        request: &IncomingRequest,
    ) -> OutgoingResponse {
        let started = Instant::now();
        let invocation_id = uuid::Uuid::new_v4().to_string();
        let outcome = match self.ready().await {
            Ok(()) if delivery == HttpDelivery::Proxied => {
                self.send_proxied(request, &invocation_id).await
            }
            Ok(()) => self.send_forwarded(request, &invocation_id).await,
            Err(error) => Err(error),
        };
        let (response, status, error) = match outcome {
            Ok(response) => {
                let status = response.status.as_u16();
                (response, Some(status), None)
            }
            Err(error) => (
                OutgoingResponse::empty(StatusCode::INTERNAL_SERVER_ERROR),
                None,
                Some(error),
            ),
        };
        self.record(InvocationRecord {
            function: function.to_string(),
            invocation_id,
            reason: "http".into(),
            succeeded: error.is_none(),
            status,
            duration: started.elapsed(),
            outputs: Value::Null,
            logs: Vec::new(),
            return_value: Value::Null,
            error,
        });
        response
    }

    /// Forwards a client's request to the handler (`enableForwardingHttpRequest`).
    pub async fn forward(&self, function: &str, request: &IncomingRequest) -> OutgoingResponse {
        self.deliver(function, HttpDelivery::Forwarded, request)
            .await
    }

    /// Proxies a client's request to the handler (`enableProxyingHttpRequest`).
    pub async fn proxy(&self, function: &str, request: &IncomingRequest) -> OutgoingResponse {
        self.deliver(function, HttpDelivery::Proxied, request).await
    }

    async fn send_proxied(
        &self,
        request: &IncomingRequest,
        invocation_id: &str,
    ) -> Result<OutgoingResponse, String> {
        let mut url = format!("{}{}", self.handler_base, proxied_path(&request.raw_path));
        if let Some(query) = &request.raw_query {
            url.push('?');
            url.push_str(query);
        }
        let mut headers = proxied_headers(request)?;
        // `AddProxyingHeaders` and `StartForwarding`: set, replacing whatever the client sent.
        let id = HeaderValue::from_str(invocation_id).map_err(|e| e.to_string())?;
        headers.insert(
            HeaderName::from_static(HOST_VERSION_HEADER),
            HeaderValue::from_static(HOST_VERSION),
        );
        headers.insert(HeaderName::from_static(INVOCATION_ID_HEADER), id.clone());
        headers.insert(HeaderName::from_static(PROXY_CORRELATION_HEADER), id);
        let mut delay = PROXY_FIRST_DELAY;
        let mut attempt = 1;
        loop {
            let mut builder = self
                .proxy_client
                .request(request.method.clone(), &url)
                .headers(headers.clone());
            if request.is_chunked() {
                // No length known: the body goes on chunked, as YARP streams it.
                let body = request.body.clone();
                builder = builder.body(reqwest::Body::wrap_stream(futures::stream::once(
                    async move { Ok::<Bytes, std::io::Error>(body) },
                )));
            } else if request.content_length().is_some() {
                builder = builder.body(request.body.clone());
            }
            match builder.send().await {
                Ok(response) => return read_response(response, &PROXY_EXCLUDED).await,
                Err(error) if error.is_connect() && attempt < PROXY_ATTEMPTS => {
                    tokio::time::sleep(delay).await;
                    delay = (delay * 2).min(PROXY_MAX_DELAY);
                    attempt += 1;
                }
                Err(error) => return Err(format!("proxying to the handler failed: {error}")),
            }
        }
    }

    async fn send_forwarded(
        &self,
        request: &IncomingRequest,
        invocation_id: &str,
    ) -> Result<OutgoingResponse, String> {
        if request.has_chunked_header() && request.content_length().unwrap_or(0) == 0 {
            // `ToHttpRequestMessage` copies the client's `Transfer-Encoding: chunked` but makes
            // content only from a Content-Length > 0, and .NET's HttpClient refuses to send that
            // (`ValidateAndNormalizeRequest`): the invocation fails before the handler is called.
            return Err(CHUNKED_WITHOUT_CONTENT.to_string());
        }
        let query = rebuild_query(&request.query());
        let url = if query.is_empty() {
            format!("{}{}", self.handler_base, request.raw_path)
        } else {
            format!("{}{}?{query}", self.handler_base, request.raw_path)
        };
        let mut headers = HeaderMap::new();
        for name in request.headers.keys() {
            let lower = name.as_str();
            if HOP_BY_HOP.contains(&lower)
                || lower.starts_with("content-")
                || lower == "expect"
                || lower == "user-agent"
            {
                continue;
            }
            let values: Vec<&HeaderValue> = request.headers.get_all(name).iter().collect();
            headers.insert(name.clone(), joined(name, values)?);
        }
        // `AddHeaders`: the host's values are added after any the client sent.
        let mut agents: Vec<&HeaderValue> =
            request.headers.get_all(header::USER_AGENT).iter().collect();
        let product = HeaderValue::from_str(&format!("{USER_AGENT_PRODUCT}/{HOST_VERSION}"))
            .map_err(|e| e.to_string())?;
        agents.push(&product);
        headers.insert(header::USER_AGENT, joined(&header::USER_AGENT, agents)?);
        let id = HeaderValue::from_str(invocation_id).map_err(|e| e.to_string())?;
        for (name, value) in [
            (HOST_VERSION_HEADER, HeaderValue::from_static(HOST_VERSION)),
            (INVOCATION_ID_HEADER, id),
        ] {
            let name = HeaderName::from_static(name);
            let mut values: Vec<&HeaderValue> = request.headers.get_all(&name).iter().collect();
            values.push(&value);
            let line = joined(&name, values)?;
            headers.insert(name, line);
        }
        let body_length = request.content_length().unwrap_or(0);
        let mut builder = self
            .forward_client
            .request(request.method.clone(), &url)
            .headers(headers);
        if body_length > 0 {
            if let Some(content_type) = request.headers.get(header::CONTENT_TYPE) {
                builder = builder.header(header::CONTENT_TYPE, content_type.clone());
            }
            builder = builder
                .header(header::CONTENT_LENGTH, request.body.len())
                .body(request.body.clone());
        }
        let response = builder
            .send()
            .await
            .map_err(|e| format!("forwarding to the handler failed: {e}"))?;
        read_response(response, &HOP_BY_HOP).await
    }

    /// Sends a JSON invocation payload for `function`. `metadata` gets `sys` added.
    pub async fn invoke(
        &self,
        function: &str,
        reason: &str,
        data: Map<String, Value>,
        mut metadata: Map<String, Value>,
    ) -> JsonOutcome {
        let started = Instant::now();
        let invocation_id = uuid::Uuid::new_v4().to_string();
        let now = time::OffsetDateTime::now_utc()
            .format(&time::format_description::well_known::Rfc3339)
            .unwrap_or_default();
        metadata.insert(
            "sys".into(),
            json!({
                "MethodName": function,
                "UtcNow": now,
                "RandGuid": uuid::Uuid::new_v4().to_string(),
            }),
        );
        let payload = json!({ "Data": data, "Metadata": metadata });
        let answer = match self.ready().await {
            Ok(()) => self.send_json(function, &payload, &invocation_id).await,
            Err(error) => Err((None, error)),
        };
        let (record, outcome) = match answer {
            Ok((status, body)) => {
                let outputs = get_ci(&body, "Outputs").cloned().unwrap_or(Value::Null);
                let return_value = get_ci(&body, "ReturnValue").cloned().unwrap_or(Value::Null);
                let logs = string_list(get_ci(&body, "Logs"));
                for line in &logs {
                    println!("[hostsim] {function}: {line}");
                }
                (
                    (Some(status), true, logs, None),
                    JsonOutcome {
                        succeeded: true,
                        outputs,
                        return_value,
                        error: None,
                    },
                )
            }
            Err((status, error)) => (
                (status, false, Vec::new(), Some(error.clone())),
                JsonOutcome {
                    succeeded: false,
                    outputs: Value::Null,
                    return_value: Value::Null,
                    error: Some(error),
                },
            ),
        };
        let (status, succeeded, logs, error) = record;
        self.record(InvocationRecord {
            function: function.to_string(),
            invocation_id,
            reason: reason.to_string(),
            succeeded,
            status,
            duration: started.elapsed(),
            outputs: outcome.outputs.clone(),
            logs,
            return_value: outcome.return_value.clone(),
            error,
        });
        outcome
    }

    /// Records a failure that happened before the handler was called (a binding error).
    pub fn record_failure(&self, function: &str, reason: &str, error: String) {
        self.record(InvocationRecord {
            function: function.to_string(),
            invocation_id: uuid::Uuid::new_v4().to_string(),
            reason: reason.to_string(),
            succeeded: false,
            status: None,
            duration: Duration::ZERO,
            outputs: Value::Null,
            logs: Vec::new(),
            return_value: Value::Null,
            error: Some(error),
        });
    }

    async fn send_json(
        &self,
        function: &str,
        payload: &Value,
        invocation_id: &str,
    ) -> Result<(u16, Value), (Option<u16>, String)> {
        let mut headers = HeaderMap::new();
        add_host_headers(&mut headers, invocation_id).map_err(|e| (None, e))?;
        let user_agent = format!("{USER_AGENT_PRODUCT}/{HOST_VERSION}");
        headers.insert(
            header::USER_AGENT,
            HeaderValue::from_str(&user_agent).map_err(|e| (None, e.to_string()))?,
        );
        let response = self
            .json_client
            .post(format!("{}/{function}", self.handler_base))
            .headers(headers)
            .header(header::CONTENT_TYPE, "application/json; charset=utf-8")
            .body(payload.to_string())
            .send()
            .await
            .map_err(|e| (None, format!("calling the handler failed: {e}")))?;
        let status = response.status();
        if !status.is_success() {
            // The host calls EnsureSuccessStatusCode: the body and its Logs are dropped.
            return Err((
                Some(status.as_u16()),
                format!(
                    "Response status code does not indicate success: {} ({}).",
                    status.as_u16(),
                    status.canonical_reason().unwrap_or("")
                ),
            ));
        }
        let body = response.bytes().await.map_err(|e| {
            (
                Some(status.as_u16()),
                format!("reading the answer failed: {e}"),
            )
        })?;
        if body.iter().all(u8::is_ascii_whitespace) {
            return Ok((status.as_u16(), Value::Null));
        }
        let value: Value = serde_json::from_slice(&body).map_err(|e| {
            (
                Some(status.as_u16()),
                format!(
                    "Invalid HttpResponseMessage: the body is not JSON ({e}): {}",
                    String::from_utf8_lossy(&body[..body.len().min(200)])
                ),
            )
        })?;
        Ok((status.as_u16(), value))
    }

    fn record(&self, record: InvocationRecord) {
        println!(
            "[hostsim] Executed 'Functions.{}' ({}, Id={}, Status={}, Duration={}ms){}",
            record.function,
            if record.succeeded {
                "Succeeded"
            } else {
                "Failed"
            },
            record.invocation_id,
            record
                .status
                .map(|s| s.to_string())
                .unwrap_or_else(|| "-".into()),
            record.duration.as_millis(),
            record
                .error
                .as_deref()
                .map(|e| format!(": {e}"))
                .unwrap_or_default(),
        );
        self.records.push(record);
    }
}

/// The handler's answer as the client gets it: status, headers but `dropped`, the whole body.
async fn read_response(
    response: reqwest::Response,
    dropped: &[&str],
) -> Result<OutgoingResponse, String> {
    let status = response.status();
    let mut headers = HeaderMap::new();
    for (name, value) in response.headers() {
        if !dropped.contains(&name.as_str()) {
            headers.append(name.clone(), value.clone());
        }
    }
    let body = response
        .bytes()
        .await
        .map_err(|e| format!("reading the handler's answer failed: {e}"))?;
    Ok(OutgoingResponse {
        status,
        headers,
        body,
    })
}

fn add_host_headers(headers: &mut HeaderMap, invocation_id: &str) -> Result<(), String> {
    headers.append(
        HeaderName::from_static(HOST_VERSION_HEADER),
        HeaderValue::from_static(HOST_VERSION),
    );
    headers.append(
        HeaderName::from_static(INVOCATION_ID_HEADER),
        HeaderValue::from_str(invocation_id).map_err(|e| e.to_string())?,
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(query: Option<&str>) -> IncomingRequest {
        IncomingRequest {
            method: Method::GET,
            raw_path: "/api/x".into(),
            raw_query: query.map(str::to_string),
            headers: HeaderMap::new(),
            body: Bytes::new(),
            remote: None,
        }
    }

    #[test]
    fn proxied_paths_are_decoded_as_aspnet_does_and_escaped_as_yarp_does() {
        for (raw, sent) in [
            ("/api/Deposit/ACC-1", "/api/Deposit/ACC-1"),
            // Escapes of characters YARP keeps are decoded.
            ("/api/Deposit/ACC%2D1%7e", "/api/Deposit/ACC-1~"),
            // A space and non-ASCII text are escaped again, in upper-case hex.
            ("/api/x/a%20b", "/api/x/a%20b"),
            ("/api/x/%c3%a9", "/api/x/%C3%A9"),
            // ASP.NET Core leaves %2F alone; YARP then escapes its `%` (yarp#1419).
            ("/api/x/a%2Fb", "/api/x/a%252Fb"),
            // A doubly escaped value: decoded once, its `%` escaped again.
            ("/api/x/a%2520b", "/api/x/a%2520b"),
            // Not UTF-8 once decoded: kept as it came, then its `%` escaped.
            ("/api/x/%FF", "/api/x/%25FF"),
            ("/api/x/100%", "/api/x/100%25"),
        ] {
            assert_eq!(proxied_path(raw), sent, "{raw}");
        }
    }

    #[test]
    fn proxied_headers_replace_forwarding_headers_and_join_repeated_ones() {
        let mut r = request(None);
        for (name, value) in [
            ("host", "example.org"),
            ("x-a", "1"),
            ("x-a", "2"),
            ("cookie", "a=1"),
            ("cookie", "b=2"),
            ("x-forwarded-for", "6.6.6.6"),
            ("forwarded", "for=6.6.6.6"),
            ("connection", "keep-alive"),
            ("transfer-encoding", "chunked"),
            ("content-length", "3"),
            ("content-type", "text/plain"),
            ("user-agent", "curl/8"),
        ] {
            r.headers.append(
                HeaderName::from_static(name),
                HeaderValue::from_static(value),
            );
        }
        r.remote = Some("127.0.0.9:5000".parse().unwrap());
        let headers = proxied_headers(&r).unwrap();
        let get = |name: &str| {
            let values: Vec<&str> = headers
                .get_all(name)
                .iter()
                .map(|v| v.to_str().unwrap())
                .collect();
            values
        };
        assert_eq!(get("x-a"), ["1, 2"]);
        assert_eq!(get("cookie"), ["a=1; b=2"]);
        assert_eq!(get("x-forwarded-for"), ["127.0.0.9"]);
        assert_eq!(get("x-forwarded-host"), ["example.org"]);
        assert_eq!(get("x-forwarded-proto"), ["http"]);
        assert_eq!(get("content-type"), ["text/plain"]);
        assert_eq!(get("user-agent"), ["curl/8"]);
        for gone in [
            "host",
            "forwarded",
            "connection",
            "transfer-encoding",
            "content-length",
        ] {
            assert!(get(gone).is_empty(), "{gone}");
        }
    }

    #[test]
    fn repeated_keys_are_joined_with_commas_and_reencoded() {
        let r = request(Some("a=1&b=x+y&A=2&c=%26&d"));
        let q = r.query();
        assert_eq!(
            q,
            vec![
                ("a".to_string(), vec!["1".to_string(), "2".to_string()]),
                ("b".to_string(), vec!["x y".to_string()]),
                ("c".to_string(), vec!["&".to_string()]),
                ("d".to_string(), vec![String::new()]),
            ]
        );
        assert_eq!(rebuild_query(&q), "a=1%2C2&b=x%20y&c=%26&d=");
        assert_eq!(r.query_value("A").as_deref(), Some("1,2"));
        assert!(request(None).query().is_empty());
    }
}
