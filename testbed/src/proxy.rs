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
//! Faults can be injected ([`CountingProxy::inject`]), each for every matching request or for
//! the next `n` ([`Fault::times`]); a request that matches a [`Fault`] is counted and logged
//! like any other, and:
//! - [`Fault::new`]: is answered by the proxy itself with the fault's status and an Azure-style
//!   error (the `x-ms-error-code` header and a JSON `odata.error` body), and never reaches the
//!   upstream;
//! - [`Fault::answer_lost`]: reaches the upstream, which acts on it, while its answer is dropped
//!   and replaced by the fault's error (a lost answer the client hears about);
//! - [`Fault::connection_lost`]: reaches the upstream, which acts on it, and then the client's
//!   connection is closed before any byte of an answer (a lost answer the client never gets).
//!
//! Only the origin (scheme, host, port) of the upstream address is used: paths are forwarded
//! as they are, so `http://127.0.0.1:10000` and `http://127.0.0.1:10000/devstoreaccount1` as
//! upstream both work with clients configured for `{proxy}/devstoreaccount1`.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use warp::http::{HeaderMap, StatusCode};
use warp::{Filter, Reply};

use crate::raw::{self, RawRequest, Serving, Upstream};

/// One forwarded request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProxiedRequest {
    pub method: String,
    /// The path as received (percent-encoded).
    pub path: String,
    /// The query as received, without `?`.
    pub query: Option<String>,
    /// The status answered: the upstream's, an injected fault's, 502 when the upstream could
    /// not be reached, 0 when the connection was closed instead ([`Fault::connection_lost`]).
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
    /// How many more requests it applies to; `None` = every one. A spent fault matches nothing.
    pub remaining: Option<usize>,
    /// Whether the client's connection is closed instead of answering (with `forward`: the
    /// upstream acted, the client got nothing).
    pub close: bool,
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
            remaining: None,
            close: false,
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

    /// Every request whose path and query contain `contains` is forwarded, and once the
    /// upstream has answered, the client's connection is closed without a byte of the answer:
    /// the upstream did the work, the client sees the connection drop (as when a network fails
    /// after the request went through).
    pub fn connection_lost(contains: &str) -> Self {
        Self {
            close: true,
            ..Self::answer_lost(contains, 0, "")
        }
    }

    /// The same fault, for the next `n` matching requests only.
    pub fn times(self, n: usize) -> Self {
        Self {
            remaining: Some(n),
            ..self
        }
    }

    fn matches(&self, request: &RawRequest) -> bool {
        self.remaining != Some(0)
            && self
                .method
                .as_deref()
                .is_none_or(|m| request.method.as_str().eq_ignore_ascii_case(m))
            && request.target().contains(&self.contains)
    }

    /// Counts one request against [`Fault::remaining`].
    fn spend(&mut self) {
        if let Some(n) = &mut self.remaining {
            *n = n.saturating_sub(1);
        }
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
    _serving: Serving,
}

impl CountingProxy {
    /// Starts a proxy forwarding to `upstream_base` (e.g. `http://127.0.0.1:10002`).
    pub async fn start(upstream_base: &str) -> anyhow::Result<Self> {
        let upstream = Upstream::new(upstream_base)?;
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", 0)).await?;
        let port = listener.local_addr()?.port();
        let stats = Arc::new(Stats::default());
        let shared = stats.clone();
        let routes = raw::request()
            .then(move |request: RawRequest| forward(upstream.clone(), shared.clone(), request));
        Ok(Self {
            port,
            stats,
            _serving: Serving::start(listener, routes),
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

async fn forward(
    upstream: Upstream,
    stats: Arc<Stats>,
    request: RawRequest,
) -> warp::reply::Response {
    stats.requests.fetch_add(1, Ordering::SeqCst);
    let builder = upstream.request(&request, Upstream::passed_on(&request.headers, &[]));
    let fault = stats
        .faults
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
        .iter_mut()
        .find(|f| f.matches(&request))
        .map(|f| {
            f.spend();
            f.clone()
        });
    let outcome = match &fault {
        Some(fault) if fault.forward => {
            let _dropped = Upstream::send(builder).await;
            Ok(fault.response())
        }
        Some(fault) => Ok(fault.response()),
        None => Upstream::send(builder).await,
    };
    let close = fault.is_some_and(|f| f.close);

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
    let status = if close { None } else { Some(status) };
    stats.bytes.fetch_add(upstream_bytes, Ordering::SeqCst);
    stats
        .log
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
        .push(ProxiedRequest {
            method: request.method.to_string(),
            path: request.path,
            query: request.query,
            status: status.map_or(0, |s| s.as_u16()),
            response_bytes: upstream_bytes,
        });
    match status {
        Some(status) => raw::response(status, response_headers, body),
        None => closed_connection(),
    }
}

/// An answer whose body fails before its first byte: the server then closes the connection
/// without sending the head, and the client sees it drop before any answer.
fn closed_connection() -> warp::reply::Response {
    let lost = std::io::Error::other("the answer was lost on purpose by the test proxy");
    warp::reply::stream(futures::stream::iter([Err::<Bytes, _>(lost)])).into_response()
}
