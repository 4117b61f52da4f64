//! A counting HTTP proxy: put it in front of Azurite's table or blob endpoint to count the
//! storage requests one operation costs, and the response bytes it reads.
//!
//! Guarantees:
//! - every request is forwarded unchanged: method, path and query exactly as received, every
//!   header except `Host` and hop-by-hop headers, the body; Azure shared-key signatures don't
//!   sign the host, so signed requests stay valid;
//! - every response comes back unchanged (status, headers except hop-by-hop, body), including
//!   the `Content-Length` of a HEAD answer; redirects are not followed, nothing is decompressed;
//! - a request is counted when it is forwarded, before the upstream answers; an upstream that
//!   can't be reached gives 502 (still counted);
//! - [`CountingProxy::bytes_received_from_upstream`] sums the response BODY bytes read from
//!   upstream (headers excluded), to prove that a read fetched only part of a blob.
//!
//! Faults can be injected ([`CountingProxy::inject`]): a request that matches a [`Fault`] is
//! answered by the proxy itself with the fault's status and an Azure-style error (the
//! `x-ms-error-code` header and a JSON `odata.error` body), counted and logged like any other,
//! and never reaches the upstream; or, made with [`Fault::answer_lost`], reaches the upstream,
//! which acts on it, while its answer is dropped and replaced by the fault's (a lost answer).
//!
//! Only the origin (scheme, host, port) of the upstream address is used: paths are forwarded
//! as they are, so `http://127.0.0.1:10000` and `http://127.0.0.1:10000/devstoreaccount1` as
//! upstream both work with clients configured for `{proxy}/devstoreaccount1`.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use anyhow::Context;
use bytes::Bytes;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use warp::http::{HeaderMap, Method, StatusCode};
use warp::Filter;

/// Headers that describe one connection, never forwarded (plus `Host`, set for the upstream).
const NOT_FORWARDED: [&str; 10] = [
    "host",
    "connection",
    "keep-alive",
    "proxy-connection",
    "proxy-authenticate",
    "proxy-authorization",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
];

/// One forwarded request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProxiedRequest {
    pub method: String,
    /// The path as received (percent-encoded).
    pub path: String,
    /// The query as received, without `?`.
    pub query: Option<String>,
    /// The upstream's status (502 when it could not be reached).
    pub status: u16,
    /// Response body bytes read from upstream.
    pub response_bytes: u64,
}

impl std::fmt::Display for ProxiedRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.query {
            Some(query) => write!(f, "{} {}?{}", self.method, self.path, query),
            None => write!(f, "{} {}", self.method, self.path),
        }
    }
}

/// An error the proxy answers instead of the upstream, for requests that match it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fault {
    /// Only requests with this method (any when `None`).
    pub method: Option<String>,
    /// Only requests whose path and query, as received, contain this text.
    pub contains: String,
    /// The status answered.
    pub status: u16,
    /// The Azure error code answered (`x-ms-error-code` and the body's `code`).
    pub error_code: String,
    /// Whether the request is still forwarded (its answer dropped): a lost answer.
    pub forward: bool,
}

impl Fault {
    /// Every request whose path and query contain `contains` gets `status` with `error_code`.
    pub fn new(contains: &str, status: u16, error_code: &str) -> Self {
        Self {
            method: None,
            contains: contains.to_owned(),
            status,
            error_code: error_code.to_owned(),
            forward: false,
        }
    }

    /// Every request whose path and query contain `contains` is forwarded, and the upstream's
    /// answer, once received, is dropped and replaced by `status` with `error_code`: the
    /// upstream did the work, the client never learns it.
    pub fn answer_lost(contains: &str, status: u16, error_code: &str) -> Self {
        Self {
            forward: true,
            ..Self::new(contains, status, error_code)
        }
    }

    fn matches(&self, request: &Forward) -> bool {
        let target = match &request.query {
            Some(query) => format!("{}?{query}", request.path),
            None => request.path.clone(),
        };
        self.method
            .as_deref()
            .is_none_or(|m| request.method.as_str().eq_ignore_ascii_case(m))
            && target.contains(&self.contains)
    }

    fn response(&self) -> (StatusCode, HeaderMap, Bytes) {
        let status = StatusCode::from_u16(self.status).unwrap_or(StatusCode::BAD_REQUEST);
        let mut headers = HeaderMap::new();
        if let Ok(code) = self.error_code.parse() {
            headers.insert("x-ms-error-code", code);
        }
        headers.insert(
            "content-type",
            warp::http::HeaderValue::from_static("application/json;odata=minimalmetadata"),
        );
        let body = serde_json::json!({"odata.error": {
            "code": self.error_code,
            "message": {"lang": "en-US", "value": "injected by the test proxy"},
        }});
        (status, headers, Bytes::from(body.to_string()))
    }
}

#[derive(Default)]
struct Stats {
    requests: AtomicUsize,
    bytes: AtomicU64,
    log: Mutex<Vec<ProxiedRequest>>,
    faults: Mutex<Vec<Fault>>,
}

/// A running counting proxy on a free loopback port; stops when dropped.
pub struct CountingProxy {
    port: u16,
    stats: Arc<Stats>,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<()>>,
}

impl CountingProxy {
    /// Starts a proxy forwarding to `upstream_base` (e.g. `http://127.0.0.1:10002`).
    pub async fn start(upstream_base: &str) -> anyhow::Result<Self> {
        let upstream = reqwest::Url::parse(upstream_base)
            .with_context(|| format!("upstream address {upstream_base:?}"))?;
        let origin = upstream.origin().ascii_serialization();
        let client = reqwest::Client::builder()
            .no_proxy()
            .default_headers(HeaderMap::new())
            .redirect(reqwest::redirect::Policy::none())
            .build()?;
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", 0)).await?;
        let port = listener.local_addr()?.port();
        let stats = Arc::new(Stats::default());
        let query = warp::query::raw()
            .map(Some)
            .or(warp::any().map(|| None))
            .unify();
        let shared = stats.clone();
        let routes = warp::method()
            .and(warp::path::full())
            .and(query)
            .and(warp::header::headers_cloned())
            .and(warp::body::bytes())
            .then(
                move |method: Method,
                      path: warp::path::FullPath,
                      query: Option<String>,
                      headers: HeaderMap,
                      body: Bytes| {
                    let request = Forward {
                        method,
                        path: path.as_str().to_string(),
                        query,
                        headers,
                        body,
                    };
                    forward(client.clone(), origin.clone(), shared.clone(), request)
                },
            );
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(
            warp::serve(routes)
                .incoming(listener)
                .graceful(async move {
                    let _ = stopped.await;
                })
                .run(),
        );
        Ok(Self {
            port,
            stats,
            stop: Some(stop),
            task: Some(task),
        })
    }

    /// `http://127.0.0.1:{port}`.
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// Requests forwarded since the start or the last [`CountingProxy::reset`].
    pub fn requests(&self) -> usize {
        self.stats.requests.load(Ordering::SeqCst)
    }

    /// Response body bytes read from upstream since the start or the last reset.
    pub fn bytes_received_from_upstream(&self) -> u64 {
        self.stats.bytes.load(Ordering::SeqCst)
    }

    /// `METHOD /path?query` of each forwarded request, in order of completion.
    pub fn log(&self) -> Vec<String> {
        self.entries().iter().map(ToString::to_string).collect()
    }

    /// The forwarded requests with their status and response size, in order of completion.
    pub fn entries(&self) -> Vec<ProxiedRequest> {
        self.stats
            .log
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .clone()
    }

    /// From now on, answers the requests that match `fault` with its error (the first matching
    /// fault wins).
    pub fn inject(&self, fault: Fault) {
        self.stats
            .faults
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .push(fault);
    }

    /// Removes every injected fault.
    pub fn clear_faults(&self) {
        self.stats
            .faults
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .clear();
    }

    /// Zeroes the counters and clears the log.
    pub fn reset(&self) {
        let mut log = self
            .stats
            .log
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        log.clear();
        self.stats.requests.store(0, Ordering::SeqCst);
        self.stats.bytes.store(0, Ordering::SeqCst);
    }
}

impl Drop for CountingProxy {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }
}

struct Forward {
    method: Method,
    path: String,
    query: Option<String>,
    headers: HeaderMap,
    body: Bytes,
}

async fn forward(
    client: reqwest::Client,
    origin: String,
    stats: Arc<Stats>,
    request: Forward,
) -> warp::reply::Response {
    stats.requests.fetch_add(1, Ordering::SeqCst);
    let url = match &request.query {
        Some(query) => format!("{origin}{}?{query}", request.path),
        None => format!("{origin}{}", request.path),
    };
    let mut headers = HeaderMap::new();
    for (name, value) in &request.headers {
        if !NOT_FORWARDED.contains(&name.as_str()) {
            headers.append(name.clone(), value.clone());
        }
    }
    let mut builder = client
        .request(request.method.clone(), &url)
        .headers(headers);
    if !request.body.is_empty() {
        builder = builder.body(request.body.clone());
    }
    let fault = stats
        .faults
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
        .iter()
        .find(|f| f.matches(&request))
        .cloned();
    let outcome = match fault {
        Some(fault) if fault.forward => {
            let _dropped = send(builder).await;
            Ok(fault.response())
        }
        Some(fault) => Ok(fault.response()),
        None => send(builder).await,
    };

    let (status, response_headers, body, upstream_bytes) = match outcome {
        Ok((status, headers, body)) => {
            let length = body.len() as u64;
            (status, headers, body, length)
        }
        Err(message) => (
            StatusCode::BAD_GATEWAY,
            HeaderMap::new(),
            Bytes::from(message),
            0,
        ),
    };
    stats.bytes.fetch_add(upstream_bytes, Ordering::SeqCst);
    stats
        .log
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
        .push(ProxiedRequest {
            method: request.method.to_string(),
            path: request.path,
            query: request.query,
            status: status.as_u16(),
            response_bytes: upstream_bytes,
        });
    let mut reply = warp::reply::Response::new(body.into());
    *reply.status_mut() = status;
    *reply.headers_mut() = response_headers;
    reply
}

async fn send(builder: reqwest::RequestBuilder) -> Result<(StatusCode, HeaderMap, Bytes), String> {
    match builder.send().await {
        Ok(response) => {
            let status = response.status();
            let mut response_headers = HeaderMap::new();
            for (name, value) in response.headers() {
                if !NOT_FORWARDED.contains(&name.as_str()) {
                    response_headers.append(name.clone(), value.clone());
                }
            }
            match response.bytes().await {
                Ok(body) => Ok((status, response_headers, body)),
                Err(error) => Err(format!("reading the upstream answer failed: {error}")),
            }
        }
        Err(error) => Err(format!("upstream unreachable: {error}")),
    }
}
