//! A storage account, read from an Azure Storage connection string, and the HTTP clients built
//! for it. Shared by every backend that talks to Azure Storage (Table storage, Append Blobs).
//!
//! Guarantees:
//! - every connection string form an Azure Functions app meets is understood:
//!   `UseDevelopmentStorage=true` (with an optional `DevelopmentStorageProxyUri`), account name
//!   and key with `DefaultEndpointsProtocol`/`EndpointSuffix`, explicit `BlobEndpoint=` /
//!   `TableEndpoint=` (Azurite on custom ports), and `SharedAccessSignature=`. The legacy azure
//!   crates parse only some of these, so this module parses them itself and hands the crates an
//!   explicit endpoint (`CloudLocation::Custom`);
//! - secrets never leave this module in text: errors name the offending *key* of the connection
//!   string, never a value, `Debug` redacts the credential, and the HTTP transport here does not
//!   log request URLs (a SAS travels in the URL);
//! - a storage endpoint that cannot be reached gives an error in bounded time, never a hang:
//!   connect timeout [`CONNECT_TIMEOUT`], whole-request timeout [`REQUEST_TIMEOUT`], and at most
//!   [`MAX_RETRIES`] retries with short exponential back-off (about 2 s of waiting in all);
//! - a write can learn whether any attempt of it may have reached storage
//!   ([`DeliveryTracker`]), so a lost response is reported as "maybe applied" and a refused
//!   connection as "not applied".

use std::fmt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use azure_core::auth::Secret;
use azure_core::error::{ErrorKind, ResultExt};
use azure_core::headers::{HeaderName, HeaderValue, Headers};
use azure_core::{
    Body, ClientOptions, Context, ExponentialRetryOptions, HttpClient, Policy, PolicyResult,
    Request, Response, RetryOptions, StatusCode, TransportOptions, Url,
};
use azure_data_tables::clients::{TableServiceClient, TableServiceClientBuilder};
use azure_storage::{CloudLocation, StorageCredentials};
use azure_storage_blobs::prelude::{BlobServiceClient, ClientBuilder as BlobClientBuilder};
use base64::Engine as _;
use futures::TryStreamExt;

use crate::stream::StoreError;

/// The development account of Azurite and the legacy storage emulator.
pub const DEVELOPMENT_ACCOUNT: &str = "devstoreaccount1";
/// The published key of the development account (public, not a secret).
pub const DEVELOPMENT_ACCOUNT_KEY: &str =
    "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw==";
/// Where `UseDevelopmentStorage=true` points when no proxy is given.
pub const DEVELOPMENT_HOST: &str = "127.0.0.1";
/// The emulator's blob port.
pub const DEVELOPMENT_BLOB_PORT: u16 = 10000;
/// The emulator's table port.
pub const DEVELOPMENT_TABLE_PORT: u16 = 10002;
/// Endpoint suffix of the public Azure cloud.
pub const DEFAULT_ENDPOINT_SUFFIX: &str = "core.windows.net";

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

// Connection string keys (matched case-insensitively).
const KEY_USE_DEVELOPMENT_STORAGE: &str = "UseDevelopmentStorage";
const KEY_DEVELOPMENT_STORAGE_PROXY_URI: &str = "DevelopmentStorageProxyUri";
const KEY_DEFAULT_ENDPOINTS_PROTOCOL: &str = "DefaultEndpointsProtocol";
const KEY_ACCOUNT_NAME: &str = "AccountName";
const KEY_ACCOUNT_KEY: &str = "AccountKey";
const KEY_SHARED_ACCESS_SIGNATURE: &str = "SharedAccessSignature";
const KEY_ENDPOINT_SUFFIX: &str = "EndpointSuffix";
const KEY_BLOB_ENDPOINT: &str = "BlobEndpoint";
const KEY_TABLE_ENDPOINT: &str = "TableEndpoint";
/// Longest unknown key repeated in an error (longer ones may be pieces of a secret).
const MAX_SHOWN_KEY_LEN: usize = 32;
/// Keys that are valid in a connection string but name services streamfold does not use.
const IGNORED_KEYS: [&str; 6] = [
    "QueueEndpoint",
    "FileEndpoint",
    "BlobSecondaryEndpoint",
    "TableSecondaryEndpoint",
    "QueueSecondaryEndpoint",
    "FileSecondaryEndpoint",
];
const KNOWN_KEYS: [&str; 9] = [
    KEY_USE_DEVELOPMENT_STORAGE,
    KEY_DEVELOPMENT_STORAGE_PROXY_URI,
    KEY_DEFAULT_ENDPOINTS_PROTOCOL,
    KEY_ACCOUNT_NAME,
    KEY_ACCOUNT_KEY,
    KEY_SHARED_ACCESS_SIGNATURE,
    KEY_ENDPOINT_SUFFIX,
    KEY_BLOB_ENDPOINT,
    KEY_TABLE_ENDPOINT,
];

/// Why a connection string was refused, or a client could not be built. Never carries a
/// secret: keys of the connection string are named, their values are not repeated.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConnectionStringError {
    #[error("the storage connection string is empty")]
    Empty,
    #[error("part {position} of the storage connection string is not of the form Key=Value")]
    MalformedPart { position: usize },
    #[error("the storage connection string gives {key} more than once")]
    DuplicateKey { key: String },
    #[error("the storage connection string has an unknown key {key}")]
    UnknownKey { key: String },
    #[error("the storage connection string has an invalid {key}: {reason}")]
    InvalidValue { key: &'static str, reason: String },
    #[error("UseDevelopmentStorage=true cannot be combined with {key}")]
    DevelopmentStorageCombined { key: String },
    #[error("the storage connection string needs AccountName ({reason})")]
    MissingAccountName { reason: &'static str },
    #[error(
        "the storage connection string has no credential (AccountKey or SharedAccessSignature)"
    )]
    MissingCredentials,
    #[error("the storage connection string has both AccountKey and SharedAccessSignature")]
    ConflictingCredentials,
    #[error("the storage account has no {service} endpoint (give {key}, or AccountName)")]
    MissingEndpoint {
        service: &'static str,
        key: &'static str,
    },
    #[error("could not build the HTTP client for storage: {0}")]
    HttpClient(String),
}

/// How requests are authorized.
#[derive(Clone)]
enum Credential {
    /// Shared Key: the account key (base64), kept as a `Secret`.
    Key(Secret),
    /// A shared access signature: the query string without the leading `?`.
    Sas(Secret),
}

/// A storage account: its name, credential and service endpoints. Cheap to clone.
#[derive(Clone)]
pub struct StorageAccount {
    account_name: String,
    credential: Credential,
    blob_endpoint: Option<Url>,
    table_endpoint: Option<Url>,
}

impl fmt::Debug for StorageAccount {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let credential = match self.credential {
            Credential::Key(_) => "AccountKey(redacted)",
            Credential::Sas(_) => "SharedAccessSignature(redacted)",
        };
        f.debug_struct("StorageAccount")
            .field("account_name", &self.account_name)
            .field("credential", &credential)
            .field(
                "blob_endpoint",
                &self.blob_endpoint.as_ref().map(Url::as_str),
            )
            .field(
                "table_endpoint",
                &self.table_endpoint.as_ref().map(Url::as_str),
            )
            .finish()
    }
}

impl StorageAccount {
    /// Parses an Azure Storage connection string (see the module documentation for the forms).
    pub fn from_connection_string(connection_string: &str) -> Result<Self, ConnectionStringError> {
        let pairs = parse_pairs(connection_string)?;
        let get = |key: &str| -> Option<&str> {
            pairs
                .iter()
                .find(|(k, _)| k.eq_ignore_ascii_case(key))
                .map(|(_, v)| *v)
        };

        if let Some(value) = get(KEY_USE_DEVELOPMENT_STORAGE) {
            if !value.eq_ignore_ascii_case("true") {
                return Err(ConnectionStringError::InvalidValue {
                    key: KEY_USE_DEVELOPMENT_STORAGE,
                    reason: "the only valid value is true".into(),
                });
            }
            if let Some((key, _)) = pairs.iter().find(|(k, _)| {
                !k.eq_ignore_ascii_case(KEY_USE_DEVELOPMENT_STORAGE)
                    && !k.eq_ignore_ascii_case(KEY_DEVELOPMENT_STORAGE_PROXY_URI)
            }) {
                return Err(ConnectionStringError::DevelopmentStorageCombined {
                    key: (*key).to_owned(),
                });
            }
            return match get(KEY_DEVELOPMENT_STORAGE_PROXY_URI) {
                None => Ok(Self::development_storage()),
                Some(proxy) => {
                    let proxy = parse_endpoint(KEY_DEVELOPMENT_STORAGE_PROXY_URI, proxy)?;
                    let host = proxy.host_str().unwrap_or(DEVELOPMENT_HOST).to_owned();
                    Self::development_storage_at(proxy.scheme(), &host)
                }
            };
        }
        if let Some(key) =
            get(KEY_DEVELOPMENT_STORAGE_PROXY_URI).map(|_| KEY_DEVELOPMENT_STORAGE_PROXY_URI)
        {
            return Err(ConnectionStringError::InvalidValue {
                key,
                reason: "only valid with UseDevelopmentStorage=true".into(),
            });
        }

        let account_name = get(KEY_ACCOUNT_NAME);
        let credential = match (get(KEY_ACCOUNT_KEY), get(KEY_SHARED_ACCESS_SIGNATURE)) {
            (Some(_), Some(_)) => return Err(ConnectionStringError::ConflictingCredentials),
            (None, None) => return Err(ConnectionStringError::MissingCredentials),
            (Some(key), None) => {
                if account_name.is_none() {
                    return Err(ConnectionStringError::MissingAccountName {
                        reason: "an AccountKey signs requests with the account name",
                    });
                }
                if base64::engine::general_purpose::STANDARD
                    .decode(key)
                    .is_err()
                {
                    return Err(ConnectionStringError::InvalidValue {
                        key: KEY_ACCOUNT_KEY,
                        reason: "it is not base64".into(),
                    });
                }
                Credential::Key(Secret::new(key.to_owned()))
            }
            (None, Some(sas)) => {
                let sas = sas.trim_start_matches('?');
                if !sas.split('&').any(|p| p.starts_with("sig=")) {
                    return Err(ConnectionStringError::InvalidValue {
                        key: KEY_SHARED_ACCESS_SIGNATURE,
                        reason: "it has no sig= parameter".into(),
                    });
                }
                Credential::Sas(Secret::new(sas.to_owned()))
            }
        };

        let protocol = match get(KEY_DEFAULT_ENDPOINTS_PROTOCOL) {
            None => "https",
            Some(p) if p.eq_ignore_ascii_case("https") => "https",
            Some(p) if p.eq_ignore_ascii_case("http") => "http",
            Some(_) => {
                return Err(ConnectionStringError::InvalidValue {
                    key: KEY_DEFAULT_ENDPOINTS_PROTOCOL,
                    reason: "must be http or https".into(),
                })
            }
        };
        let suffix = get(KEY_ENDPOINT_SUFFIX).unwrap_or(DEFAULT_ENDPOINT_SUFFIX);
        let endpoint =
            |key: &'static str, subdomain: &str| -> Result<Option<Url>, ConnectionStringError> {
                match (get(key), account_name) {
                    (Some(explicit), _) => parse_endpoint(key, explicit).map(Some),
                    (None, Some(account)) => parse_endpoint(
                        KEY_ENDPOINT_SUFFIX,
                        &format!("{protocol}://{account}.{subdomain}.{suffix}"),
                    )
                    .map(Some),
                    (None, None) => Ok(None),
                }
            };
        let blob_endpoint = endpoint(KEY_BLOB_ENDPOINT, "blob")?;
        let table_endpoint = endpoint(KEY_TABLE_ENDPOINT, "table")?;
        let account_name = match account_name {
            Some(name) => name.to_owned(),
            None => {
                let any = table_endpoint.as_ref().or(blob_endpoint.as_ref()).ok_or(
                    ConnectionStringError::MissingAccountName {
                        reason: "no BlobEndpoint or TableEndpoint is given",
                    },
                )?;
                account_from_endpoint(any).ok_or(ConnectionStringError::MissingAccountName {
                    reason: "it cannot be read from the endpoint",
                })?
            }
        };
        Ok(Self {
            account_name,
            credential,
            blob_endpoint,
            table_endpoint,
        })
    }

    /// The local emulator's well-known account (what `UseDevelopmentStorage=true` means).
    pub fn development_storage() -> Self {
        // Only constants go into these URLs, and they parse.
        Self::development_storage_at("http", DEVELOPMENT_HOST)
            .expect("the development storage endpoints are valid URLs")
    }

    fn development_storage_at(scheme: &str, host: &str) -> Result<Self, ConnectionStringError> {
        let at = |port: u16| {
            parse_endpoint(
                KEY_DEVELOPMENT_STORAGE_PROXY_URI,
                &format!("{scheme}://{host}:{port}/{DEVELOPMENT_ACCOUNT}"),
            )
        };
        Ok(Self {
            account_name: DEVELOPMENT_ACCOUNT.to_owned(),
            credential: Credential::Key(Secret::new(DEVELOPMENT_ACCOUNT_KEY)),
            blob_endpoint: Some(at(DEVELOPMENT_BLOB_PORT)?),
            table_endpoint: Some(at(DEVELOPMENT_TABLE_PORT)?),
        })
    }

    pub fn account_name(&self) -> &str {
        &self.account_name
    }

    /// The blob service endpoint, without a trailing `/` (e.g. `http://127.0.0.1:10000/devstoreaccount1`).
    pub fn blob_endpoint(&self) -> Option<&Url> {
        self.blob_endpoint.as_ref()
    }

    /// The table service endpoint, without a trailing `/`.
    pub fn table_endpoint(&self) -> Option<&Url> {
        self.table_endpoint.as_ref()
    }

    /// Whether requests are signed with a shared access signature (rather than the account key).
    pub fn uses_sas(&self) -> bool {
        matches!(self.credential, Credential::Sas(_))
    }

    /// The client options every storage client of streamfold uses: the bounded transport,
    /// the bounded retry policy and the [`DeliveryTracker`] policy. A backend that needs a
    /// policy of its own adds it to `per_retry_policies_mut()` and builds its client with
    /// [`Self::blob_service_client_with_options`] or [`Self::table_service_client_with_options`].
    pub fn client_options(&self) -> Result<ClientOptions, ConnectionStringError> {
        let client = reqwest::Client::builder()
            .connect_timeout(CONNECT_TIMEOUT)
            .timeout(REQUEST_TIMEOUT)
            .pool_idle_timeout(POOL_IDLE_TIMEOUT)
            .build()
            .map_err(|e| ConnectionStringError::HttpClient(e.to_string()))?;
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

    /// A Table service client for this account with [`Self::client_options`].
    pub fn table_service_client(&self) -> Result<TableServiceClient, ConnectionStringError> {
        self.table_service_client_with_options(self.client_options()?)
    }

    /// A Table service client with the given options.
    pub fn table_service_client_with_options(
        &self,
        options: ClientOptions,
    ) -> Result<TableServiceClient, ConnectionStringError> {
        let endpoint =
            self.table_endpoint
                .as_ref()
                .ok_or(ConnectionStringError::MissingEndpoint {
                    service: "table",
                    key: KEY_TABLE_ENDPOINT,
                })?;
        Ok(
            TableServiceClientBuilder::with_location(self.location(endpoint), self.credentials()?)
                .client_options(options)
                .build(),
        )
    }

    /// A Blob service client for this account with [`Self::client_options`].
    pub fn blob_service_client(&self) -> Result<BlobServiceClient, ConnectionStringError> {
        self.blob_service_client_with_options(self.client_options()?)
    }

    /// A Blob service client with the given options.
    pub fn blob_service_client_with_options(
        &self,
        options: ClientOptions,
    ) -> Result<BlobServiceClient, ConnectionStringError> {
        let endpoint =
            self.blob_endpoint
                .as_ref()
                .ok_or(ConnectionStringError::MissingEndpoint {
                    service: "blob",
                    key: KEY_BLOB_ENDPOINT,
                })?;
        Ok(
            BlobClientBuilder::with_location(self.location(endpoint), self.credentials()?)
                .client_options(options)
                .blob_service_client(),
        )
    }

    fn location(&self, endpoint: &Url) -> CloudLocation {
        CloudLocation::Custom {
            account: self.account_name.clone(),
            uri: endpoint.as_str().trim_end_matches('/').to_owned(),
        }
    }

    fn credentials(&self) -> Result<StorageCredentials, ConnectionStringError> {
        match &self.credential {
            Credential::Key(key) => Ok(StorageCredentials::access_key(
                self.account_name.clone(),
                key.clone(),
            )),
            // The crate's error for a bad token repeats the token: do not pass it on.
            Credential::Sas(sas) => StorageCredentials::sas_token(sas.secret()).map_err(|_| {
                ConnectionStringError::InvalidValue {
                    key: KEY_SHARED_ACCESS_SIGNATURE,
                    reason: "it is not a valid query string".into(),
                }
            }),
        }
    }
}

/// Splits `Key=Value;Key=Value` into pairs, refusing duplicates and unknown keys.
fn parse_pairs(connection_string: &str) -> Result<Vec<(&str, &str)>, ConnectionStringError> {
    let mut pairs: Vec<(&str, &str)> = Vec::new();
    for (index, part) in connection_string.split(';').enumerate() {
        let part = part.trim();
        if part.is_empty() {
            continue;
        }
        let (key, value) = part
            .split_once('=')
            .map(|(k, v)| (k.trim(), v.trim()))
            .filter(|(k, v)| !k.is_empty() && !v.is_empty())
            .ok_or(ConnectionStringError::MalformedPart {
                position: index + 1,
            })?;
        if !KNOWN_KEYS
            .iter()
            .chain(IGNORED_KEYS.iter())
            .any(|known| known.eq_ignore_ascii_case(key))
        {
            // A stray `;` inside a secret makes a "key" out of part of it: name only keys that
            // look like setting names.
            let looks_like_a_name =
                key.len() <= MAX_SHOWN_KEY_LEN && key.chars().all(|c| c.is_ascii_alphabetic());
            return Err(ConnectionStringError::UnknownKey {
                key: if looks_like_a_name {
                    key.to_owned()
                } else {
                    format!("in part {}", index + 1)
                },
            });
        }
        if pairs.iter().any(|(k, _)| k.eq_ignore_ascii_case(key)) {
            return Err(ConnectionStringError::DuplicateKey {
                key: key.to_owned(),
            });
        }
        pairs.push((key, value));
    }
    if pairs.is_empty() {
        return Err(ConnectionStringError::Empty);
    }
    Ok(pairs)
}

/// An http(s) endpoint URL without query, fragment or trailing `/`.
fn parse_endpoint(key: &'static str, value: &str) -> Result<Url, ConnectionStringError> {
    let invalid = |reason: &str| ConnectionStringError::InvalidValue {
        key,
        reason: reason.to_owned(),
    };
    let url = Url::parse(value.trim_end_matches('/')).map_err(|e| invalid(&e.to_string()))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(invalid("the scheme must be http or https"));
    }
    if url.host_str().is_none() {
        return Err(invalid("it has no host"));
    }
    if url.query().is_some() || url.fragment().is_some() {
        return Err(invalid(
            "an endpoint must not carry a query (give a SAS as SharedAccessSignature)",
        ));
    }
    Ok(url)
}

/// The account an endpoint belongs to: the first path segment of a path-style URL
/// (`http://127.0.0.1:10002/devstoreaccount1`), else the first label of the host name.
fn account_from_endpoint(url: &Url) -> Option<String> {
    let first_segment = url
        .path_segments()
        .and_then(|mut s| s.next())
        .filter(|s| !s.is_empty());
    if let Some(segment) = first_segment {
        return Some(segment.to_owned());
    }
    let host = url.host_str()?;
    let is_ip = host.parse::<std::net::IpAddr>().is_ok() || host.starts_with('[');
    (!is_ip)
        .then(|| host.split('.').next().map(str::to_owned))
        .flatten()
}

/// Tells whether any attempt of one request may have reached storage. Put
/// [`DeliveryTracker::context`] on a write; after a failure, [`Self::may_have_reached_storage`]
/// says whether the write may have been applied (a lost response) or certainly was not (every
/// attempt was refused before it was sent, or was answered with 503 Server Busy or a 4xx).
#[derive(Debug, Clone, Default)]
pub struct DeliveryTracker(Arc<AtomicBool>);

impl DeliveryTracker {
    pub fn new() -> Self {
        Self::default()
    }

    /// A request context that reports to this tracker.
    pub fn context(&self) -> Context {
        let mut context = Context::new();
        context.insert(self.clone());
        context
    }

    /// Whether some attempt may have been applied by storage without a success reaching us.
    pub fn may_have_reached_storage(&self) -> bool {
        self.0.load(Ordering::SeqCst)
    }

    fn record(&self, maybe_applied: bool) {
        if maybe_applied {
            self.0.store(true, Ordering::SeqCst);
        }
    }
}

/// The per-retry policy behind [`DeliveryTracker`]: it sits right before the transport and
/// classifies each attempt's result.
#[derive(Debug)]
struct DeliveryTrackerPolicy;

/// Passes a request on to the rest of the pipeline, for policies that only observe it.
/// `policy` names the caller in the error a misbuilt pipeline (no policy after it) gives.
pub(crate) async fn send_next(
    ctx: &Context,
    request: &mut Request,
    next: &[Arc<dyn Policy>],
    policy: &str,
) -> PolicyResult {
    match next.first() {
        Some(first) => first.send(ctx, request, &next[1..]).await,
        None => Err(azure_core::Error::message(
            ErrorKind::Other,
            format!("the {policy} policy must not be the last policy"),
        )),
    }
}

#[async_trait]
impl Policy for DeliveryTrackerPolicy {
    async fn send(
        &self,
        ctx: &Context,
        request: &mut Request,
        next: &[Arc<dyn Policy>],
    ) -> PolicyResult {
        let result = send_next(ctx, request, next, "delivery tracker").await;
        if let Some(tracker) = ctx.get::<DeliveryTracker>() {
            tracker.record(match &result {
                Ok(response) => {
                    let status = response.status();
                    u16::from(status) >= 500 && status != StatusCode::ServiceUnavailable
                }
                Err(error) => !is_connect_error(error),
            });
        }
        result
    }
}

/// Whether an azure_core error is a failure to connect (the request was never sent).
pub fn is_connect_error(error: &azure_core::Error) -> bool {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(error);
    while let Some(current) = source {
        if let Some(reqwest_error) = current.downcast_ref::<reqwest::Error>() {
            return reqwest_error.is_connect();
        }
        source = current.source();
    }
    false
}

/// A description of an azure_core error that is safe to log: the kind of transport failure
/// and its innermost cause, never a URL (which may carry a SAS).
pub fn describe_error(error: &azure_core::Error) -> String {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(error);
    let mut transport = None;
    let mut innermost = None;
    while let Some(current) = source {
        if let Some(reqwest_error) = current.downcast_ref::<reqwest::Error>() {
            transport = Some(if reqwest_error.is_timeout() {
                "timed out"
            } else if reqwest_error.is_connect() {
                "could not connect"
            } else {
                "the connection failed"
            });
        } else if transport.is_some() {
            innermost = Some(current.to_string());
        }
        source = current.source();
    }
    match (transport, innermost) {
        (Some(kind), Some(cause)) => format!("{kind}: {cause}"),
        (Some(kind), None) => kind.to_owned(),
        (None, _) => match error.kind() {
            ErrorKind::HttpResponse { status, error_code } => format!(
                "HTTP {} ({})",
                u16::from(*status),
                error_code.as_deref().unwrap_or("no error code")
            ),
            kind => format!("{kind} error: {error}"),
        },
    }
}

/// Whether an azure_core error is a timeout of the transport (connect or whole request).
pub fn is_timeout_error(error: &azure_core::Error) -> bool {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(error);
    while let Some(current) = source {
        if let Some(reqwest_error) = current.downcast_ref::<reqwest::Error>() {
            return reqwest_error.is_timeout();
        }
        source = current.source();
    }
    false
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

/// The HTTP status of an error answer.
pub fn status_of(error: &azure_core::Error) -> Option<StatusCode> {
    match error.kind() {
        ErrorKind::HttpResponse { status, .. } => Some(*status),
        _ => None,
    }
}

/// The service's error code of an error answer.
pub fn error_code(error: &azure_core::Error) -> Option<&str> {
    match error.kind() {
        ErrorKind::HttpResponse { error_code, .. } => error_code.as_deref(),
        _ => None,
    }
}

/// Error codes with which Table and Blob storage refuse a value a request carried (as opposed
/// to a malformed request, which is our fault): the values come from callers (times, keys,
/// event data, ranges), so these are client errors. Every other 4xx is ours and stays a 500.
pub const INPUT_ERROR_CODES: [&str; 14] = [
    "OutOfRangeInput",
    "InvalidInput",
    "InvalidValueType",
    "PropertyValueTooLarge",
    "PropertyNameTooLong",
    "TooManyProperties",
    "EntityTooLarge",
    "KeyValueTooLarge",
    "InvalidDuplicateRow",
    "RequestBodyTooLarge",
    "OutOfRangeQueryParameterValue",
    "InvalidQueryParameterValue",
    "InvalidRange",
    "MetadataTooLarge",
];

/// Classifies an error of the azure crates, for every backend. `what` names the stream,
/// table or container for the message; `write` is the tracker of a write, whose failure may
/// leave it applied; `gone` is the service's error code for "the table / container itself does
/// not exist" and `parent` what to call it in the message.
pub fn map_error(
    error: &azure_core::Error,
    what: &str,
    write: Option<&DeliveryTracker>,
    gone: &str,
    parent: &str,
) -> StoreError {
    let maybe_applied = write.is_some_and(DeliveryTracker::may_have_reached_storage);
    match error.kind() {
        ErrorKind::HttpResponse { status, error_code } => {
            let code = error_code.as_deref().unwrap_or("no error code");
            let status_number = u16::from(*status);
            match status_number {
                401 | 403 => StoreError::Misconfigured(format!(
                    "storage refused access to {what} (HTTP {status_number}, {code}): check the \
                     account key or SAS"
                )),
                404 if code == gone => StoreError::Misconfigured(format!(
                    "the {parent} of {what} does not exist (was it deleted?)"
                )),
                400 | 413 | 416 if INPUT_ERROR_CODES.contains(&code) => StoreError::InputRefused {
                    target: what.to_owned(),
                    status: status_number,
                    code: code.to_owned(),
                },
                408 | 429 | 500..=599 => StoreError::Unavailable {
                    message: format!("storage answered HTTP {status_number} ({code}) for {what}"),
                    maybe_applied,
                },
                _ => StoreError::Misconfigured(format!(
                    "storage refused a request for {what}: HTTP {status_number} ({code})"
                )),
            }
        }
        ErrorKind::DataConversion => StoreError::Corrupt {
            stream: what.to_owned(),
            detail: format!(
                "storage sent an answer that could not be read: {}",
                describe_error(error)
            ),
        },
        ErrorKind::Credential => {
            StoreError::Misconfigured(format!("storage credentials are unusable for {what}"))
        }
        ErrorKind::Io | ErrorKind::Other | ErrorKind::MockFramework => StoreError::Unavailable {
            message: if is_timeout_error(error) {
                format!("storage did not answer in time for {what}")
            } else {
                format!(
                    "storage could not be reached for {what}: {}",
                    describe_error(error)
                )
            },
            maybe_applied,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn development_storage() {
        let account = StorageAccount::from_connection_string("UseDevelopmentStorage=true").unwrap();
        assert_eq!(account.account_name(), DEVELOPMENT_ACCOUNT);
        assert_eq!(
            account.blob_endpoint().unwrap().as_str(),
            "http://127.0.0.1:10000/devstoreaccount1"
        );
        assert_eq!(
            account.table_endpoint().unwrap().as_str(),
            "http://127.0.0.1:10002/devstoreaccount1"
        );
        assert!(!account.uses_sas());
        assert!(account.table_service_client().is_ok());
        assert!(account.blob_service_client().is_ok());

        let account = StorageAccount::from_connection_string(
            " usedevelopmentstorage = TRUE ; DevelopmentStorageProxyUri=http://docker-host:1234 ;",
        )
        .unwrap();
        assert_eq!(
            account.table_endpoint().unwrap().as_str(),
            "http://docker-host:10002/devstoreaccount1"
        );
        assert_eq!(
            account.blob_endpoint().unwrap().as_str(),
            "http://docker-host:10000/devstoreaccount1"
        );

        for bad in [
            "UseDevelopmentStorage=false",
            "UseDevelopmentStorage=true;AccountName=x",
            "DevelopmentStorageProxyUri=http://x",
        ] {
            assert!(
                StorageAccount::from_connection_string(bad).is_err(),
                "{bad}"
            );
        }
    }

    #[test]
    fn account_key_strings() {
        let account = StorageAccount::from_connection_string(&format!(
            "DefaultEndpointsProtocol=https;AccountName=myacct;AccountKey={DEVELOPMENT_ACCOUNT_KEY};EndpointSuffix=core.chinacloudapi.cn"
        ))
        .unwrap();
        assert_eq!(account.account_name(), "myacct");
        assert_eq!(
            account.table_endpoint().unwrap().as_str(),
            "https://myacct.table.core.chinacloudapi.cn/"
        );
        assert_eq!(
            account.blob_endpoint().unwrap().as_str(),
            "https://myacct.blob.core.chinacloudapi.cn/"
        );

        let account = StorageAccount::from_connection_string(&format!(
            "AccountName=myacct;AccountKey={DEVELOPMENT_ACCOUNT_KEY}"
        ))
        .unwrap();
        assert_eq!(
            account.table_endpoint().unwrap().as_str(),
            "https://myacct.table.core.windows.net/"
        );
    }

    #[test]
    fn explicit_endpoints() {
        let account = StorageAccount::from_connection_string(&format!(
            "DefaultEndpointsProtocol=http;AccountName=devstoreaccount1;AccountKey={DEVELOPMENT_ACCOUNT_KEY};BlobEndpoint=http://127.0.0.1:41001/devstoreaccount1;TableEndpoint=http://127.0.0.1:41002/devstoreaccount1/;"
        ))
        .unwrap();
        assert_eq!(
            account.table_endpoint().unwrap().as_str(),
            "http://127.0.0.1:41002/devstoreaccount1"
        );
        assert_eq!(
            account.blob_endpoint().unwrap().as_str(),
            "http://127.0.0.1:41001/devstoreaccount1"
        );
    }

    #[test]
    fn sas_strings() {
        let sas = "sv=2022-11-02&ss=bt&srt=sco&sp=rwdlacu&se=2030-01-01T00:00:00Z&sig=abc%2Bdef%3D";
        let account = StorageAccount::from_connection_string(&format!(
            "TableEndpoint=https://myacct.table.core.windows.net/;SharedAccessSignature={sas}"
        ))
        .unwrap();
        assert!(account.uses_sas());
        assert_eq!(account.account_name(), "myacct");
        assert!(account.table_service_client().is_ok());
        assert!(matches!(
            account.blob_service_client(),
            Err(ConnectionStringError::MissingEndpoint {
                service: "blob",
                ..
            })
        ));
        let debug = format!("{account:?}");
        assert!(!debug.contains("sig="), "{debug}");

        let account = StorageAccount::from_connection_string(&format!(
            "BlobEndpoint=http://127.0.0.1:1/devstoreaccount1;SharedAccessSignature=?{sas}"
        ))
        .unwrap();
        assert_eq!(account.account_name(), "devstoreaccount1");

        let err =
            StorageAccount::from_connection_string("AccountName=a;SharedAccessSignature=sv=1&sp=r")
                .unwrap_err();
        assert!(matches!(err, ConnectionStringError::InvalidValue { .. }));
    }

    #[test]
    fn errors_never_repeat_secrets() {
        let secret = "c2VjcmV0LWtleS12YWx1ZQ==";
        let cases = [
            format!("AccountKey={secret}"),
            format!("AccountName=a;AccountKey={secret};SharedAccessSignature=sig={secret}"),
            format!("AccountName=a;AccountKey={secret};Bogus=1"),
            format!("AccountName=a;AccountKey={secret};AccountKey={secret}"),
            format!("AccountName=a;AccountKey={secret}!!"),
            format!("AccountName=a;AccountKey={secret};{secret}"),
        ];
        for case in cases {
            let err = StorageAccount::from_connection_string(&case).unwrap_err();
            assert!(!err.to_string().contains("c2VjcmV0"), "{err}");
        }
        assert!(matches!(
            StorageAccount::from_connection_string(" ; "),
            Err(ConnectionStringError::Empty)
        ));
        assert!(matches!(
            StorageAccount::from_connection_string("AccountName=a"),
            Err(ConnectionStringError::MissingCredentials)
        ));
    }
}
