//! Access tokens of the app's managed identity, from the App Service managed-identity endpoint,
//! and the rule for where such a token may be sent.
//!
//! Guarantees:
//! - a token comes from `IDENTITY_ENDPOINT` (header `X-IDENTITY-HEADER: $IDENTITY_HEADER`,
//!   `api-version=2019-08-01`, `resource=`, and `client_id=` for a user-assigned identity), the
//!   endpoint App Service and Azure Functions give every app with a managed identity;
//! - tokens are cached per resource and renewed [`RENEW_BEFORE`] before they expire, one
//!   request at a time (concurrent callers wait for the same renewal); a renewal that fails
//!   while the cached token is still valid keeps using it (and logs why);
//! - a token, and the identity header, never appear in a log line, an error or `Debug`: errors
//!   say why there is no token (not configured, unreachable, refused with a status, unreadable
//!   answer), nothing more;
//! - [`check_bearer_target`]: a bearer token goes only to an `https://` endpoint, or to plain
//!   `http://` on a loopback address (emulators and tests); every other endpoint is refused
//!   when the settings are read, before any request.

use std::collections::HashMap;
use std::fmt;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use reqwest::Url;

/// App setting (set by App Service) with the managed-identity endpoint's URL.
pub const IDENTITY_ENDPOINT_SETTING: &str = "IDENTITY_ENDPOINT";
/// App setting (set by App Service) with the secret the endpoint expects in [`IDENTITY_HEADER_NAME`].
pub const IDENTITY_HEADER_SETTING: &str = "IDENTITY_HEADER";
/// Header that carries [`IDENTITY_HEADER_SETTING`]'s value to the endpoint.
pub const IDENTITY_HEADER_NAME: &str = "X-IDENTITY-HEADER";
/// API version of the App Service managed-identity endpoint.
pub const IDENTITY_API_VERSION: &str = "2019-08-01";
/// Token audience of Azure Storage (Table and Blob).
pub const STORAGE_RESOURCE: &str = "https://storage.azure.com/";
/// Token audience of Event Grid topics.
pub const EVENT_GRID_RESOURCE: &str = "https://eventgrid.azure.net/";
/// A cached token is renewed this long before it expires.
pub const RENEW_BEFORE: Duration = Duration::from_secs(5 * 60);
/// Bound on one token request (connect and answer).
pub const TOKEN_REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// Longest part of the endpoint's error answer repeated in an error.
const MAX_ERROR_DETAIL_CHARS: usize = 200;

/// Why there is no token.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum IdentityError {
    #[error(
        "no managed identity endpoint: {IDENTITY_ENDPOINT_SETTING} and {IDENTITY_HEADER_SETTING} \
         are not set (give the app a managed identity, or use a connection string)"
    )]
    NotConfigured,
    #[error("the managed identity endpoint could not be reached: {0}")]
    Unreachable(String),
    #[error(
        "the managed identity endpoint refused a token for {resource} with HTTP {status}: {detail}"
    )]
    Refused {
        resource: String,
        status: u16,
        detail: String,
    },
    #[error("the managed identity endpoint's answer is not a token: {0}")]
    Malformed(String),
}

/// An access token. `Debug` never shows it; [`AccessToken::secret`] only to put it in an
/// `Authorization` header.
#[derive(Clone, PartialEq, Eq)]
pub struct AccessToken {
    secret: String,
    /// Expiry, seconds since the Unix epoch.
    expires_on: u64,
}

impl AccessToken {
    pub fn secret(&self) -> &str {
        &self.secret
    }

    /// Expiry, seconds since the Unix epoch.
    pub fn expires_on(&self) -> u64 {
        self.expires_on
    }

    /// Whether the token is still usable at `now` (seconds since the epoch), leaving `margin`.
    fn fresh_at(&self, now: u64, margin: Duration) -> bool {
        now.saturating_add(margin.as_secs()) < self.expires_on
    }
}

impl fmt::Debug for AccessToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AccessToken")
            .field("secret", &"<redacted>")
            .field("expires_on", &self.expires_on)
            .finish()
    }
}

/// The app's managed identity (system-assigned, or the user-assigned one with `client_id`).
/// Cheap to clone: clones share the token cache.
#[derive(Clone)]
pub struct ManagedIdentity {
    inner: Arc<Inner>,
}

struct Inner {
    endpoint: Url,
    header: String,
    client_id: Option<String>,
    http: reqwest::Client,
    cache: tokio::sync::Mutex<HashMap<String, AccessToken>>,
}

impl fmt::Debug for ManagedIdentity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ManagedIdentity")
            .field("endpoint", &self.inner.endpoint.as_str())
            .field("client_id", &self.inner.client_id)
            .finish_non_exhaustive()
    }
}

/// Where the managed-identity endpoint is and the secret it expects: what App Service puts in
/// [`IDENTITY_ENDPOINT_SETTING`] and [`IDENTITY_HEADER_SETTING`]. Plain settings (no client, no
/// I/O); `Debug` leaves the secret out.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct IdentityEndpoint {
    endpoint: Url,
    header: String,
}

impl fmt::Debug for IdentityEndpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("IdentityEndpoint")
            .field("endpoint", &self.endpoint.as_str())
            .finish_non_exhaustive()
    }
}

impl IdentityEndpoint {
    /// The endpoint `env` describes: `Err(NotConfigured)` when either setting is missing (the
    /// app has no managed identity, or this is not App Service), `Err(Malformed)` when the
    /// endpoint is not an http(s) URL.
    pub fn from_settings(env: &HashMap<String, String>) -> Result<Self, IdentityError> {
        let value = |name: &str| {
            env.get(name)
                .map(|v| v.trim())
                .filter(|v| !v.is_empty())
                .map(str::to_owned)
        };
        let (Some(endpoint), Some(header)) = (
            value(IDENTITY_ENDPOINT_SETTING),
            value(IDENTITY_HEADER_SETTING),
        ) else {
            return Err(IdentityError::NotConfigured);
        };
        let endpoint = Url::parse(&endpoint)
            .ok()
            .filter(|u| matches!(u.scheme(), "http" | "https") && u.host_str().is_some())
            .ok_or_else(|| {
                IdentityError::Malformed(format!(
                    "{IDENTITY_ENDPOINT_SETTING} is not an http(s) URL"
                ))
            })?;
        Ok(Self { endpoint, header })
    }

    pub fn new(endpoint: Url, header: String) -> Self {
        Self { endpoint, header }
    }
}

impl ManagedIdentity {
    /// The identity behind `endpoint`: the user-assigned one with `client_id`, else the
    /// system-assigned one.
    pub fn new(endpoint: &IdentityEndpoint, client_id: Option<String>) -> Self {
        let http = reqwest::Client::builder()
            .connect_timeout(TOKEN_REQUEST_TIMEOUT)
            .timeout(TOKEN_REQUEST_TIMEOUT)
            .no_proxy()
            .build()
            .unwrap_or_default();
        Self {
            inner: Arc::new(Inner {
                endpoint: endpoint.endpoint.clone(),
                header: endpoint.header.clone(),
                client_id: client_id.filter(|c| !c.trim().is_empty()),
                http,
                cache: tokio::sync::Mutex::new(HashMap::new()),
            }),
        }
    }

    /// The client id of a user-assigned identity, when one was named.
    pub fn client_id(&self) -> Option<&str> {
        self.inner.client_id.as_deref()
    }

    /// A token for `resource` (e.g. [`STORAGE_RESOURCE`]): the cached one while it has more
    /// than [`RENEW_BEFORE`] left, else a new one. A failure is logged with its reason.
    pub async fn token(&self, resource: &str) -> Result<AccessToken, IdentityError> {
        let mut cache = self.inner.cache.lock().await;
        let now = unix_now();
        if let Some(token) = cache.get(resource) {
            if token.fresh_at(now, RENEW_BEFORE) {
                return Ok(token.clone());
            }
        }
        match self.fetch(resource).await {
            Ok(token) => {
                cache.insert(resource.to_owned(), token.clone());
                Ok(token)
            }
            Err(error) => match cache.get(resource) {
                Some(token) if token.fresh_at(now, Duration::ZERO) => {
                    tracing::warn!(
                        resource,
                        error = %error,
                        "renewing the managed identity token failed; using the cached one until it expires"
                    );
                    Ok(token.clone())
                }
                _ => {
                    tracing::error!(
                        resource,
                        error = %error,
                        "no managed identity token: requests that need it answer 503"
                    );
                    Err(error)
                }
            },
        }
    }

    async fn fetch(&self, resource: &str) -> Result<AccessToken, IdentityError> {
        let mut url = self.inner.endpoint.clone();
        {
            let mut query = url.query_pairs_mut();
            query.append_pair("api-version", IDENTITY_API_VERSION);
            query.append_pair("resource", resource);
            if let Some(client_id) = &self.inner.client_id {
                query.append_pair("client_id", client_id);
            }
        }
        let mut header =
            reqwest::header::HeaderValue::from_str(&self.inner.header).map_err(|_| {
                IdentityError::Malformed(format!(
                    "{IDENTITY_HEADER_SETTING} is not a valid header value"
                ))
            })?;
        header.set_sensitive(true);
        let response = self
            .inner
            .http
            .get(url)
            .header(IDENTITY_HEADER_NAME, header)
            .send()
            .await
            .map_err(|e| IdentityError::Unreachable(describe(&e)))?;
        let status = response.status();
        let body = response
            .bytes()
            .await
            .map_err(|e| IdentityError::Unreachable(describe(&e)))?;
        if !status.is_success() {
            let detail: String = String::from_utf8_lossy(&body)
                .chars()
                .take(MAX_ERROR_DETAIL_CHARS)
                .collect();
            return Err(IdentityError::Refused {
                resource: resource.to_owned(),
                status: status.as_u16(),
                detail,
            });
        }
        parse_token(&body)
    }
}

/// Reads the endpoint's answer: `access_token` and `expires_on` (seconds since the epoch, as a
/// number or a string of digits).
fn parse_token(body: &[u8]) -> Result<AccessToken, IdentityError> {
    let value: serde_json::Value = serde_json::from_slice(body)
        .map_err(|e| IdentityError::Malformed(format!("not JSON: {e}")))?;
    let secret = value
        .get("access_token")
        .and_then(|v| v.as_str())
        .filter(|t| !t.is_empty())
        .ok_or_else(|| IdentityError::Malformed("no access_token".into()))?;
    let expires_on = match value.get("expires_on") {
        Some(serde_json::Value::Number(n)) => n.as_u64(),
        Some(serde_json::Value::String(s)) => s.trim().parse::<u64>().ok(),
        _ => None,
    }
    .ok_or_else(|| IdentityError::Malformed("no expires_on in seconds".into()))?;
    Ok(AccessToken {
        secret: secret.to_owned(),
        expires_on,
    })
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// A transport error in words, without the URL (whose query names the identity).
fn describe(error: &reqwest::Error) -> String {
    let kind = if error.is_timeout() {
        "timed out"
    } else if error.is_connect() {
        "could not connect"
    } else {
        "the request failed"
    };
    let mut cause = None;
    let mut source = std::error::Error::source(error);
    while let Some(current) = source {
        cause = Some(current.to_string());
        source = current.source();
    }
    match cause {
        Some(cause) => format!("{kind}: {cause}"),
        None => kind.to_owned(),
    }
}

/// Whether a bearer token may be sent to `url`: `https://`, or `http://` to a loopback address
/// (`localhost`, 127.0.0.0/8, `[::1]`). The error says why not.
pub fn check_bearer_target(url: &Url) -> Result<(), String> {
    match url.scheme() {
        "https" => Ok(()),
        "http" if is_loopback(url) => Ok(()),
        "http" => Err(format!(
            "{} is plain http to a host that is not loopback: a bearer token would travel \
             unencrypted; use https",
            shown(url)
        )),
        other => Err(format!("{} is not an http(s) URL ({other})", shown(url))),
    }
}

fn is_loopback(url: &Url) -> bool {
    let Some(host) = url.host_str() else {
        return false;
    };
    let bare = host.trim_start_matches('[').trim_end_matches(']');
    match bare.parse::<IpAddr>() {
        Ok(ip) => ip.is_loopback(),
        Err(_) => host.eq_ignore_ascii_case("localhost"),
    }
}

/// `scheme://host[:port]`, for messages.
fn shown(url: &Url) -> String {
    let mut shown = format!("{}://{}", url.scheme(), url.host_str().unwrap_or(""));
    if let Some(port) = url.port() {
        shown.push_str(&format!(":{port}"));
    }
    shown
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bearer_tokens_go_only_to_https_or_loopback() {
        for ok in [
            "https://acct.table.core.windows.net/",
            "https://t.westeurope-1.eventgrid.azure.net/api/events",
            "http://127.0.0.1:10002/devstoreaccount1",
            "http://127.5.6.7:1/",
            "http://localhost:7071/x",
            "http://[::1]:8080/",
        ] {
            assert!(
                check_bearer_target(&Url::parse(ok).unwrap()).is_ok(),
                "{ok}"
            );
        }
        for bad in [
            "http://acct.table.core.windows.net/",
            "http://10.0.0.4/",
            "http://localhost.example.com/",
            "http://[::2]/",
            "ftp://127.0.0.1/",
        ] {
            let err = check_bearer_target(&Url::parse(bad).unwrap()).unwrap_err();
            assert!(!err.is_empty(), "{bad}");
        }
    }

    #[test]
    fn the_answer_is_read_with_expiry_as_number_or_string() {
        let t = parse_token(br#"{"access_token":"abc","expires_on":"1700000000"}"#).unwrap();
        assert_eq!((t.secret(), t.expires_on()), ("abc", 1_700_000_000));
        let t = parse_token(br#"{"access_token":"abc","expires_on":1700000001}"#).unwrap();
        assert_eq!(t.expires_on(), 1_700_000_001);
        for bad in [
            &br#"{"expires_on":"1"}"#[..],
            br#"{"access_token":"","expires_on":"1"}"#,
            br#"{"access_token":"a","expires_on":"soon"}"#,
            b"<html>",
        ] {
            assert!(matches!(parse_token(bad), Err(IdentityError::Malformed(_))));
        }
    }

    #[test]
    fn tokens_and_the_header_stay_out_of_debug() {
        let t = parse_token(br#"{"access_token":"s3cret-token","expires_on":"5"}"#).unwrap();
        assert!(!format!("{t:?}").contains("s3cret"));
        let endpoint = IdentityEndpoint::new(
            Url::parse("http://127.0.0.1:1/msi/token").unwrap(),
            "hdr-s3cret".into(),
        );
        assert!(!format!("{endpoint:?}").contains("s3cret"));
        let identity = ManagedIdentity::new(&endpoint, Some("cid".into()));
        assert!(!format!("{identity:?}").contains("s3cret"));
    }

    #[test]
    fn renewal_leaves_a_margin() {
        let t = AccessToken {
            secret: "x".into(),
            expires_on: 1_000,
        };
        assert!(t.fresh_at(0, RENEW_BEFORE));
        assert!(!t.fresh_at(1_000 - RENEW_BEFORE.as_secs(), RENEW_BEFORE));
        assert!(t.fresh_at(999, Duration::ZERO));
        assert!(!t.fresh_at(1_000, Duration::ZERO));
    }

    #[test]
    fn no_endpoint_means_not_configured() {
        let env = HashMap::from([(IDENTITY_HEADER_SETTING.to_owned(), "h".to_owned())]);
        assert_eq!(
            IdentityEndpoint::from_settings(&env).unwrap_err(),
            IdentityError::NotConfigured
        );
    }
}
