//! One catch-all warp filter for every server of the test bed that must see a request exactly as
//! a client sent it (the host simulator, the topic simulator, the counting proxy, the echo
//! handler, test upstreams): the method, the path still percent-encoded, the query without its
//! `?` (`None` when there is none), every header, and the whole body. Nothing is routed, decoded
//! or rejected on the way (beyond an optional body limit), so what a server checks or forwards is
//! what arrived, not what a router made of it. [`response`] builds the answer from the same
//! parts; [`HOP_BY_HOP`] lists the headers a server that passes requests on never forwards.
//!
//! The same raw layer serves and forwards: [`Serving`] runs one such server on a listener and
//! stops it when dropped (every loopback server of the test bed; [`serve_on_free_port`] runs a
//! test's own server for good), and [`Upstream`] passes a raw
//! request on to another server and brings its answer back unchanged (both proxies).

use std::convert::Infallible;

use anyhow::Context;
use bytes::Bytes;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use warp::http::{HeaderMap, Method, StatusCode};
use warp::path::FullPath;
use warp::{Filter, Rejection};

/// Headers that describe one connection, never forwarded by a server that passes requests or
/// answers on.
pub const HOP_BY_HOP: [&str; 9] = [
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

/// A request as received.
#[derive(Debug, Clone)]
pub struct RawRequest {
    pub method: Method,
    /// The path as received (percent-encoded).
    pub path: String,
    /// The query as received, without `?`; `None` when there is none (or it is empty).
    pub query: Option<String>,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl RawRequest {
    /// The path and query as received: `/path?query`, or `/path`.
    pub fn target(&self) -> String {
        match &self.query {
            Some(query) => format!("{}?{query}", self.path),
            None => self.path.clone(),
        }
    }
}

/// Method, path, query and headers of any request; never rejects.
fn head(
) -> impl Filter<Extract = (Method, FullPath, Option<String>, HeaderMap), Error = Infallible> + Clone
{
    let query = warp::query::raw()
        .map(Some)
        .or(warp::any().map(|| None))
        .unify();
    warp::method()
        .and(warp::path::full())
        .and(query)
        .and(warp::header::headers_cloned())
}

fn assemble(
    method: Method,
    path: FullPath,
    query: Option<String>,
    headers: HeaderMap,
    body: Bytes,
) -> RawRequest {
    RawRequest {
        method,
        path: path.as_str().to_owned(),
        query,
        headers,
        body,
    }
}

/// Every request, whatever its method and path, with its whole body.
pub fn request() -> impl Filter<Extract = (RawRequest,), Error = Rejection> + Clone {
    head().and(warp::body::bytes()).map(assemble)
}

/// Every request whose body is declared (`Content-Length`) at most `limit` bytes; others are
/// rejected by warp (413, or 411 without a length) before the body is read.
pub fn request_within(
    limit: u64,
) -> impl Filter<Extract = (RawRequest,), Error = Rejection> + Clone {
    head()
        .and(warp::body::content_length_limit(limit))
        .and(warp::body::bytes())
        .map(assemble)
}

/// An answer with `status`, exactly `headers`, and `body`.
pub fn response(
    status: StatusCode,
    headers: HeaderMap,
    body: impl Into<Bytes>,
) -> warp::reply::Response {
    let mut reply = warp::reply::Response::new(body.into().into());
    *reply.status_mut() = status;
    *reply.headers_mut() = headers;
    reply
}

/// What a test-bed server serves: a filter that answers every request it takes with a response.
pub trait Routes:
    Filter<Extract = (warp::reply::Response,), Error = Rejection> + Clone + Send + Sync + 'static
{
}

impl<F> Routes for F where
    F: Filter<Extract = (warp::reply::Response,), Error = Rejection>
        + Clone
        + Send
        + Sync
        + 'static
{
}

/// Serves `routes` on a free port of 127.0.0.1 until the runtime ends, and gives its address:
/// for a test's own small server (an upstream, a webhook) that never needs stopping.
pub async fn serve_on_free_port(routes: impl Routes) -> anyhow::Result<std::net::SocketAddr> {
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", 0)).await?;
    let address = listener.local_addr()?;
    tokio::spawn(warp::serve(routes).incoming(listener).run());
    Ok(address)
}

/// A warp server running on a listener; stopped (and its task aborted) when dropped.
pub struct Serving {
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<()>>,
}

impl Serving {
    /// Serves `routes` on `listener` until stopped or dropped.
    pub fn start(listener: tokio::net::TcpListener, routes: impl Routes) -> Self {
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(
            warp::serve(routes)
                .incoming(listener)
                .graceful(async move {
                    let _ = stopped.await;
                })
                .run(),
        );
        Self {
            stop: Some(stop),
            task: Some(task),
        }
    }

    /// Stops accepting, lets the requests under way finish, and waits for the server's end
    /// (the port is closed when this returns).
    pub async fn stop(mut self) -> anyhow::Result<()> {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            task.await.context("stopping a server")?;
        }
        Ok(())
    }
}

impl Drop for Serving {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }
}

/// The server a proxy passes requests on to: only the origin (scheme, host, port) of its
/// address is used, the path and query are the request's as received.
#[derive(Clone)]
pub struct Upstream {
    client: reqwest::Client,
    origin: String,
}

impl Upstream {
    /// The upstream at `base` (e.g. `http://127.0.0.1:10002`); redirects are not followed and
    /// nothing is decompressed or added.
    pub fn new(base: &str) -> anyhow::Result<Self> {
        let url =
            reqwest::Url::parse(base).with_context(|| format!("upstream address {base:?}"))?;
        let client = reqwest::Client::builder()
            .no_proxy()
            .default_headers(HeaderMap::new())
            .redirect(reqwest::redirect::Policy::none())
            .build()?;
        Ok(Self {
            client,
            origin: url.origin().ascii_serialization(),
        })
    }

    /// The headers of `headers` a proxy passes on: all but the connection's ([`HOP_BY_HOP`]),
    /// `Host` (set for the upstream) and those named in `except` (lower case).
    pub fn passed_on(headers: &HeaderMap, except: &[&str]) -> HeaderMap {
        let mut passed = HeaderMap::new();
        for (name, value) in headers {
            let name_str = name.as_str();
            if name_str != "host" && !HOP_BY_HOP.contains(&name_str) && !except.contains(&name_str)
            {
                passed.append(name.clone(), value.clone());
            }
        }
        passed
    }

    /// `request` as the upstream would receive it, with `headers` instead of its own (not sent).
    pub fn request(&self, request: &RawRequest, headers: HeaderMap) -> reqwest::RequestBuilder {
        let url = format!("{}{}", self.origin, request.target());
        let mut builder = self
            .client
            .request(request.method.clone(), &url)
            .headers(headers);
        if !request.body.is_empty() {
            builder = builder.body(request.body.clone());
        }
        builder
    }

    /// Sends `builder` and reads the whole answer: its status, headers (as [`Self::passed_on`]
    /// keeps them) and body; why not when the upstream could not be reached or read.
    pub async fn send(
        builder: reqwest::RequestBuilder,
    ) -> Result<(StatusCode, HeaderMap, Bytes), String> {
        match builder.send().await {
            Ok(response) => {
                let status = response.status();
                let headers = Self::passed_on(response.headers(), &[]);
                match response.bytes().await {
                    Ok(body) => Ok((status, headers, body)),
                    Err(error) => Err(format!("reading the upstream answer failed: {error}")),
                }
            }
            Err(error) => Err(format!("upstream unreachable: {error}")),
        }
    }
}
