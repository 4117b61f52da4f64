//! The HTTP transport and retry policy of every storage client: a storage endpoint that cannot
//! be reached gives an error in bounded time, never a hang — connect timeout
//! [`CONNECT_TIMEOUT`], whole-request timeout [`REQUEST_TIMEOUT`] (the answer's body
//! included), and at most [`MAX_RETRIES`] retries with short exponential back-off (about 2 s of
//! waiting in all). The transport does not log request URLs (a SAS travels in the URL).
//!
//! The transport is hyper's pooled HTTP/1.1 client with rustls (ring, the webpki roots): the
//! client reqwest builds on, without reqwest's per-request work that storage does not need (the
//! URL parsed again for its redirect policy and for the response, the header copies).
//! Redirects are not followed: storage does not send them, and following one would carry a
//! signed request elsewhere. Forward proxies are found in the environment as reqwest finds
//! them ([`super::proxy`]). A failure carries a [`TransportError`] that says whether the
//! request was never sent (could not connect) or timed out, which the delivery tracker and the
//! error mapping read.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use async_trait::async_trait;
use azure_core::error::ErrorKind;
use azure_core::headers::{HeaderName, HeaderValue, Headers};
use azure_core::{
    Body, ClientOptions, ExponentialRetryOptions, HttpClient, Policy, Request, Response,
    RetryOptions, StatusCode, TransportOptions,
};
use bytes::Bytes;
use futures::{Stream, TryStreamExt};
use http_body::Body as _;
use http_body_util::{Either, Full, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioTimer};
use sync_wrapper::SyncWrapper;
use tokio::time::Sleep;

use super::delivery::DeliveryTrackerPolicy;
use super::proxy::{Proxies, ProxyConnector};
use super::transport_failure::{TransportError, TransportFailure};

/// How long to wait for a TCP (and TLS) connection to storage.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// How long one HTTP request may take, response body included.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
/// Retries of one request after a connection error, a timeout, 408, 429 or 5xx.
pub const MAX_RETRIES: u32 = 3;
/// First back-off delay; it doubles with each retry (plus up to 256 ms of jitter).
pub const RETRY_INITIAL_DELAY: Duration = Duration::from_millis(100);
/// No retry starts later than this after the first attempt ended.
pub const RETRY_MAX_ELAPSED: Duration = Duration::from_secs(6);
/// TCP keep-alive probes on storage connections start after this long idle (reqwest's
/// default, kept), so a connection the network dropped silently is found dead.
pub const TCP_KEEPALIVE: Duration = Duration::from_secs(15);
/// Idle pooled connections are dropped after this (below Node's 5 s keep-alive in Azurite, so
/// a pooled connection is not reused just as the server closes it).
pub const POOL_IDLE_TIMEOUT: Duration = Duration::from_secs(4);

/// Why the transport could not be built.
#[derive(Debug, thiserror::Error)]
#[error("the storage transport's TLS settings were refused: {0}")]
pub(crate) struct TransportBuildError(#[from] rustls::Error);

/// The client options of every storage client: the bounded transport, the bounded retry
/// policy and the delivery tracker's policy.
pub(super) fn client_options() -> Result<ClientOptions, TransportBuildError> {
    let transport = HyperTransport::new(Timeouts::default(), webpki_roots(), Proxies::from_env())?;
    let retry = RetryOptions::exponential(
        ExponentialRetryOptions::default()
            .initial_delay(RETRY_INITIAL_DELAY)
            .max_retries(MAX_RETRIES)
            .max_total_elapsed(RETRY_MAX_ELAPSED)
            .max_delay(Duration::from_secs(1)),
    );
    let tracker: Arc<dyn Policy> = Arc::new(DeliveryTrackerPolicy);
    Ok(
        ClientOptions::new(TransportOptions::new(Arc::new(transport)))
            .retry(retry)
            .per_retry_policies(vec![tracker]),
    )
}

/// The certificate authorities a storage endpoint's certificate must chain to: the webpki
/// roots (Mozilla's), as reqwest's `rustls-tls` feature uses.
fn webpki_roots() -> rustls::RootCertStore {
    rustls::RootCertStore {
        roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
    }
}

/// The transport's time limits ([`CONNECT_TIMEOUT`], [`REQUEST_TIMEOUT`],
/// [`POOL_IDLE_TIMEOUT`]; tests shorten them).
#[derive(Debug, Clone, Copy)]
struct Timeouts {
    connect: Duration,
    request: Duration,
    pool_idle: Duration,
}

impl Default for Timeouts {
    fn default() -> Self {
        Self {
            connect: CONNECT_TIMEOUT,
            request: REQUEST_TIMEOUT,
            pool_idle: POOL_IDLE_TIMEOUT,
        }
    }
}

/// A request body: the bytes of a request built in memory, or a seekable stream (uploads).
type RequestBody = Either<Full<Bytes>, StreamBody<RequestFrames>>;
type RequestFrames =
    Pin<Box<dyn Stream<Item = Result<Frame<Bytes>, azure_core::Error>> + Send + Sync>>;

/// hyper's pooled client as azure_core's `HttpClient`.
#[derive(Debug)]
struct HyperTransport {
    client: Client<HttpsConnector<ProxyConnector>, RequestBody>,
    proxies: Proxies,
    request_timeout: Duration,
}

impl HyperTransport {
    fn new(
        timeouts: Timeouts,
        roots: rustls::RootCertStore,
        proxies: Proxies,
    ) -> Result<Self, TransportBuildError> {
        let mut http = HttpConnector::new();
        http.enforce_http(false);
        http.set_connect_timeout(Some(timeouts.connect));
        http.set_nodelay(true);
        http.set_keepalive(Some(TCP_KEEPALIVE));
        let tls = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_no_client_auth();
        let connector = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(tls)
            .https_or_http()
            .enable_http1()
            .wrap_connector(ProxyConnector::new(http, proxies.clone()));
        let client = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(timeouts.pool_idle)
            .pool_timer(TokioTimer::new())
            .build(connector);
        Ok(Self {
            client,
            proxies,
            request_timeout: timeouts.request,
        })
    }
}

#[async_trait]
impl HttpClient for HyperTransport {
    async fn execute_request(&self, request: &Request) -> azure_core::Result<Response> {
        // One deadline for the whole exchange: the answer's head here, its body in
        // `ResponseBody`.
        let mut deadline = Box::pin(tokio::time::sleep(self.request_timeout));
        let mut outgoing = outgoing_request(request)?;
        if let Some(authorization) = self.proxies.forward_authorization(outgoing.uri()) {
            outgoing
                .headers_mut()
                .insert(http::header::PROXY_AUTHORIZATION, authorization);
        }
        let answer = tokio::select! {
            biased;
            answer = self.client.request(outgoing) => answer.map_err(request_failed)?,
            () = &mut deadline => return Err(timed_out()),
        };
        let (parts, body) = answer.into_parts();
        let status = StatusCode::try_from(parts.status.as_u16()).map_err(|_| {
            azure_core::Error::message(ErrorKind::DataConversion, "invalid HTTP status code")
        })?;
        let mut headers = HashMap::with_capacity(parts.headers.keys_len());
        for (name, value) in &parts.headers {
            // A value that is not visible ASCII is left out, as azure_core's own transport does.
            if let Ok(value) = value.to_str() {
                headers.insert(header_name(name), HeaderValue::from(value.to_owned()));
            }
        }
        let body = ResponseBody {
            body: SyncWrapper::new(body),
            deadline: SyncWrapper::new(deadline),
        };
        Ok(Response::new(
            status,
            Headers::from(headers),
            Box::pin(body),
        ))
    }
}

/// The hyper request of an azure_core request: the same method, URL, headers and body.
fn outgoing_request(request: &Request) -> azure_core::Result<hyper::Request<RequestBody>> {
    let method = http::Method::from_bytes(request.method().as_ref().as_bytes())
        .map_err(|_| unconvertible("unsupported HTTP method"))?;
    // Never the URL itself in the error: it may carry a SAS.
    let uri = http::Uri::try_from(request.url().as_str())
        .map_err(|_| unconvertible("the request URL is not a valid URI"))?;
    let names = request.headers().iter();
    let mut headers = http::HeaderMap::with_capacity(names.size_hint().0);
    for (name, value) in names {
        let name = request_header_name(name.as_str())?;
        let value = http::HeaderValue::from_str(value.as_str())
            .map_err(|_| unconvertible("invalid request header value"))?;
        headers.append(name, value);
    }
    // reqwest's default, kept: Table storage chooses the answer's format (and Azurite even how
    // it counts a property's size) by `Accept`, and the requests that set none relied on it.
    if !headers.contains_key(http::header::ACCEPT) {
        headers.insert(http::header::ACCEPT, http::HeaderValue::from_static("*/*"));
    }
    let body = match request.body() {
        Body::Bytes(bytes) => Either::Left(Full::new(bytes.clone())),
        Body::SeekableStream(stream) => {
            let frames: RequestFrames = Box::pin(stream.clone().map_ok(Frame::data));
            Either::Right(StreamBody::new(frames))
        }
    };
    let mut outgoing = hyper::Request::new(body);
    *outgoing.method_mut() = method;
    *outgoing.uri_mut() = uri;
    *outgoing.headers_mut() = headers;
    Ok(outgoing)
}

/// hyper's name of a request header: the ones every storage request carries by their static
/// names (no parse, no copy), others parsed.
fn request_header_name(name: &str) -> azure_core::Result<http::HeaderName> {
    Ok(match name {
        "authorization" => http::header::AUTHORIZATION,
        "content-type" => http::header::CONTENT_TYPE,
        "content-length" => http::header::CONTENT_LENGTH,
        "user-agent" => http::header::USER_AGENT,
        "accept" => http::header::ACCEPT,
        "if-match" => http::header::IF_MATCH,
        "x-ms-date" => http::HeaderName::from_static("x-ms-date"),
        "x-ms-version" => http::HeaderName::from_static("x-ms-version"),
        "x-ms-client-request-id" => http::HeaderName::from_static("x-ms-client-request-id"),
        "prefer" => http::HeaderName::from_static("prefer"),
        "dataserviceversion" => http::HeaderName::from_static("dataserviceversion"),
        "maxdataserviceversion" => http::HeaderName::from_static("maxdataserviceversion"),
        other => http::HeaderName::from_bytes(other.as_bytes())
            .map_err(|_| unconvertible("invalid request header name"))?,
    })
}

/// A request that cannot be written as HTTP (nothing is sent).
fn unconvertible(what: &'static str) -> azure_core::Error {
    azure_core::Error::message(ErrorKind::DataConversion, what)
}

/// azure_core's name of a response header. hyper's names are lowercase already; the headers
/// storage sends on every answer get their static name, the rest a copy.
fn header_name(name: &http::HeaderName) -> HeaderName {
    match name.as_str() {
        "content-type" => HeaderName::from_static("content-type"),
        "content-length" => HeaderName::from_static("content-length"),
        "date" => HeaderName::from_static("date"),
        "etag" => HeaderName::from_static("etag"),
        "server" => HeaderName::from_static("server"),
        "connection" => HeaderName::from_static("connection"),
        "keep-alive" => HeaderName::from_static("keep-alive"),
        "cache-control" => HeaderName::from_static("cache-control"),
        "transfer-encoding" => HeaderName::from_static("transfer-encoding"),
        "x-ms-request-id" => HeaderName::from_static("x-ms-request-id"),
        "x-ms-client-request-id" => HeaderName::from_static("x-ms-client-request-id"),
        "x-ms-version" => HeaderName::from_static("x-ms-version"),
        "dataserviceversion" => HeaderName::from_static("dataserviceversion"),
        "preference-applied" => HeaderName::from_static("preference-applied"),
        other => HeaderName::from(other.to_owned()),
    }
}

/// A failed exchange as azure_core's I/O error (which its retry policy retries), carrying how
/// it failed.
fn request_failed(error: hyper_util::client::legacy::Error) -> azure_core::Error {
    let failure = if error.is_connect() {
        TransportFailure::connect(caused_by_timeout(&error))
    } else {
        TransportFailure::broken()
    };
    transport_error(failure, Some(Box::new(error)))
}

/// Whether an I/O timeout is somewhere in `error`'s source chain (the connect timeout).
fn caused_by_timeout(error: &(dyn std::error::Error + 'static)) -> bool {
    let mut source = Some(error);
    while let Some(current) = source {
        if current
            .downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.kind() == std::io::ErrorKind::TimedOut)
        {
            return true;
        }
        source = current.source();
    }
    false
}

fn timed_out() -> azure_core::Error {
    transport_error(TransportFailure::timeout(), None)
}

fn transport_error(
    failure: TransportFailure,
    source: Option<Box<dyn std::error::Error + Send + Sync>>,
) -> azure_core::Error {
    azure_core::Error::full(
        ErrorKind::Io,
        TransportError::new(failure, source),
        "storage request failed",
    )
}

/// The answer's body as azure_core's byte stream, ended by an error once the request's
/// deadline passes. `SyncWrapper`s make it `Sync`, as azure_core's response stream must be;
/// both are only reached through `&mut`.
struct ResponseBody {
    body: SyncWrapper<Incoming>,
    deadline: SyncWrapper<Pin<Box<Sleep>>>,
}

impl Stream for ResponseBody {
    type Item = azure_core::Result<Bytes>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = self.get_mut();
        loop {
            match Pin::new(this.body.get_mut()).poll_frame(cx) {
                Poll::Ready(Some(Ok(frame))) => match frame.into_data() {
                    Ok(data) => return Poll::Ready(Some(Ok(data))),
                    // Trailers: storage sends none, and azure_core has no place for them.
                    Err(_) => continue,
                },
                Poll::Ready(Some(Err(error))) => {
                    let failure = TransportFailure::broken();
                    return Poll::Ready(Some(Err(transport_error(failure, Some(Box::new(error))))));
                }
                Poll::Ready(None) => return Poll::Ready(None),
                Poll::Pending => {
                    return match this.deadline.get_mut().as_mut().poll(cx) {
                        Poll::Ready(()) => Poll::Ready(Some(Err(timed_out()))),
                        Poll::Pending => Poll::Pending,
                    };
                }
            }
        }
    }
}

#[cfg(test)]
#[path = "transport_tests.rs"]
mod tests;
