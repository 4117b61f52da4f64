//! One catch-all warp filter for every server of the test bed that must see a request exactly as
//! a client sent it (the host simulator, the topic simulator, the counting proxy, the echo
//! handler, test upstreams): the method, the path still percent-encoded, the query without its
//! `?` (`None` when there is none), every header, and the whole body. Nothing is routed, decoded
//! or rejected on the way (beyond an optional body limit), so what a server checks or forwards is
//! what arrived, not what a router made of it. [`response`] builds the answer from the same
//! parts; [`HOP_BY_HOP`] lists the headers a server that passes requests on never forwards.

use std::convert::Infallible;

use bytes::Bytes;
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
