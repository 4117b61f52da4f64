//! The HTTP transport and retry policy of every storage client: a storage endpoint that cannot
//! be reached gives an error in bounded time, never a hang — connect timeout
//! [`CONNECT_TIMEOUT`], whole-request timeout [`REQUEST_TIMEOUT`], and at most [`MAX_RETRIES`]
//! retries with short exponential back-off (about 2 s of waiting in all). The transport does
//! not log request URLs (a SAS travels in the URL).

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use azure_core::error::{ErrorKind, ResultExt};
use azure_core::headers::{HeaderName, HeaderValue, Headers};
use azure_core::{
    Body, ClientOptions, ExponentialRetryOptions, HttpClient, Policy, Request, Response,
    RetryOptions, StatusCode, TransportOptions,
};
use futures::TryStreamExt;

use super::delivery::DeliveryTrackerPolicy;

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
/// Idle pooled connections are dropped after this (below Node's 5 s keep-alive in Azurite, so
/// a pooled connection is not reused just as the server closes it).
pub const POOL_IDLE_TIMEOUT: Duration = Duration::from_secs(4);

/// The client options of every storage client: the bounded transport, the bounded retry
/// policy and the delivery tracker's policy.
pub(super) fn client_options() -> Result<ClientOptions, reqwest::Error> {
    let client = reqwest::Client::builder()
        .connect_timeout(CONNECT_TIMEOUT)
        .timeout(REQUEST_TIMEOUT)
        .pool_idle_timeout(POOL_IDLE_TIMEOUT)
        .build()?;
    let transport = TransportOptions::new(Arc::new(QuietTransport { client }));
    let retry = RetryOptions::exponential(
        ExponentialRetryOptions::default()
            .initial_delay(RETRY_INITIAL_DELAY)
            .max_retries(MAX_RETRIES)
            .max_total_elapsed(RETRY_MAX_ELAPSED)
            .max_delay(Duration::from_secs(1)),
    );
    let tracker: Arc<dyn Policy> = Arc::new(DeliveryTrackerPolicy);
    Ok(ClientOptions::new(transport)
        .retry(retry)
        .per_retry_policies(vec![tracker]))
}

/// The reqwest transport of azure_core, minus its debug log line that prints each request's
/// URL (a SAS is part of the URL).
#[derive(Debug)]
struct QuietTransport {
    client: reqwest::Client,
}

#[async_trait]
impl HttpClient for QuietTransport {
    async fn execute_request(&self, request: &Request) -> azure_core::Result<Response> {
        let method = reqwest::Method::from_bytes(request.method().as_ref().as_bytes())
            .with_context(ErrorKind::DataConversion, || {
                format!("unsupported HTTP method {}", request.method().as_ref())
            })?;
        let mut builder = self.client.request(method, request.url().clone());
        for (name, value) in request.headers().iter() {
            builder = builder.header(name.as_str(), value.as_str());
        }
        let built = match request.body().clone() {
            Body::Bytes(bytes) => builder.body(bytes).build(),
            Body::SeekableStream(stream) => {
                builder.body(reqwest::Body::wrap_stream(stream)).build()
            }
        }
        .context(ErrorKind::Other, "failed to build the storage request")?;
        let response = self
            .client
            .execute(built)
            .await
            .context(ErrorKind::Io, "storage request failed")?;
        let status = StatusCode::try_from(response.status().as_u16()).map_err(|_| {
            azure_core::Error::message(ErrorKind::DataConversion, "invalid HTTP status code")
        })?;
        let headers: Headers = response
            .headers()
            .iter()
            .filter_map(|(name, value)| {
                value.to_str().ok().map(|v| {
                    (
                        HeaderName::from(name.as_str().to_owned()),
                        HeaderValue::from(v.to_owned()),
                    )
                })
            })
            .collect::<std::collections::HashMap<_, _>>()
            .into();
        let body = response.bytes_stream().map_err(|error| {
            azure_core::Error::full(ErrorKind::Io, error, "reading a storage response failed")
        });
        Ok(Response::new(status, headers, Box::pin(body)))
    }
}
