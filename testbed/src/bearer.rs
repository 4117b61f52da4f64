//! A storage endpoint that takes only bearer tokens: a proxy in front of Azurite's table or blob
//! service that checks each request's `Authorization: Bearer` token against a
//! [`FakeIdentity`](crate::identity::FakeIdentity) ([`TokenCheck`]), and forwards the accepted
//! ones signed with the development account's shared key (Azurite takes OAuth only over HTTPS).
//!
//! Guarantees:
//! - a request without a token, with a token the identity did not issue, issued for another
//!   resource, or expired, is answered 403 `AuthenticationFailed` (as Azure Storage refuses a bad
//!   token) and never reaches Azurite; so is a request signed with an account key or carrying a
//!   SAS: the client under test has no key to use;
//! - an accepted request reaches Azurite unchanged but for its `Authorization` header (method,
//!   path and query as received, every other header, the body), re-signed with the Shared Key
//!   scheme as Azurite checks it ([`sign`]); the answer comes back unchanged.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use base64::Engine as _;
use hmac::{Hmac, Mac};
use sha2::Sha256;
use warp::http::{HeaderMap, HeaderValue, StatusCode};

use crate::azurite::{Azurite, ACCOUNT, KEY};
use crate::identity::TokenCheck;
use crate::raw::{self, RawRequest, Serving, Upstream};

/// Which storage service the proxy stands in front of (they sign differently).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StorageService {
    Table,
    Blob,
}

/// A running bearer-checking proxy; stops when dropped.
pub struct BearerStorageProxy {
    port: u16,
    accepted: Arc<AtomicUsize>,
    refused: Arc<AtomicUsize>,
    _serving: Serving,
}

impl BearerStorageProxy {
    /// Starts a proxy on a free port of 127.0.0.1 forwarding to `upstream_base` (Azurite's
    /// service, e.g. `http://127.0.0.1:10002`; only its origin is used).
    pub async fn start(
        upstream_base: &str,
        service: StorageService,
        check: TokenCheck,
    ) -> anyhow::Result<Self> {
        let upstream = Upstream::new(upstream_base)?;
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", 0)).await?;
        let port = listener.local_addr()?.port();
        let accepted = Arc::new(AtomicUsize::new(0));
        let refused = Arc::new(AtomicUsize::new(0));
        let (ok, no) = (accepted.clone(), refused.clone());
        let routes = warp::Filter::then(raw::request(), move |request: RawRequest| {
            let (upstream, check, ok, no) =
                (upstream.clone(), check.clone(), ok.clone(), no.clone());
            async move {
                let authorization = request
                    .headers
                    .get("authorization")
                    .and_then(|v| v.to_str().ok());
                let sas = request
                    .query
                    .as_deref()
                    .is_some_and(|q| q.split('&').any(|p| p.starts_with("sig=")));
                let verdict = if sas {
                    Err("a SAS is not accepted here".to_owned())
                } else {
                    check.check(authorization)
                };
                match verdict {
                    Err(why) => {
                        no.fetch_add(1, Ordering::SeqCst);
                        refuse(&why)
                    }
                    Ok(()) => {
                        ok.fetch_add(1, Ordering::SeqCst);
                        forward(&upstream, service, request).await
                    }
                }
            }
        });
        Ok(Self {
            port,
            accepted,
            refused,
            _serving: Serving::start(listener, routes),
        })
    }

    /// A table proxy and a blob proxy in front of `azurite`, both accepting the tokens `check`
    /// accepts: the whole bearer-only storage account, as `(tables, blobs)`.
    pub async fn start_both(azurite: &Azurite, check: TokenCheck) -> anyhow::Result<(Self, Self)> {
        let tables = Self::start(
            &azurite.table_endpoint(),
            StorageService::Table,
            check.clone(),
        )
        .await?;
        let blobs = Self::start(&azurite.blob_endpoint(), StorageService::Blob, check).await?;
        Ok((tables, blobs))
    }

    /// The service endpoint for clients: `http://127.0.0.1:{port}/devstoreaccount1`.
    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}/{ACCOUNT}", self.port)
    }

    /// Requests whose token was accepted (and forwarded).
    pub fn accepted(&self) -> usize {
        self.accepted.load(Ordering::SeqCst)
    }

    /// Requests refused (no token, a bad one, a key or a SAS).
    pub fn refused(&self) -> usize {
        self.refused.load(Ordering::SeqCst)
    }
}

fn refuse(why: &str) -> warp::reply::Response {
    let mut headers = HeaderMap::new();
    headers.insert(
        "x-ms-error-code",
        HeaderValue::from_static("AuthenticationFailed"),
    );
    headers.insert("content-type", HeaderValue::from_static("application/json"));
    let body = serde_json::json!({"odata.error": {"code": "AuthenticationFailed", "message": {"value": why}}});
    raw::response(StatusCode::FORBIDDEN, headers, body.to_string())
}

async fn forward(
    upstream: &Upstream,
    service: StorageService,
    request: RawRequest,
) -> warp::reply::Response {
    let mut headers = Upstream::passed_on(&request.headers, &["authorization"]);
    if !headers.contains_key("x-ms-date") && !headers.contains_key("date") {
        let now = time::OffsetDateTime::now_utc()
            .format(&time::format_description::well_known::Rfc2822)
            .unwrap_or_default()
            .replace("+0000", "GMT");
        if let Ok(value) = HeaderValue::from_str(&now) {
            headers.insert("x-ms-date", value);
        }
    }
    let signature = sign(
        service,
        request.method.as_str(),
        &request.path,
        request.query.as_deref(),
        &headers,
    );
    match HeaderValue::from_str(&format!("SharedKey {ACCOUNT}:{signature}")) {
        Ok(value) => {
            headers.insert("authorization", value);
        }
        Err(_) => return refuse("could not sign"),
    }
    match Upstream::send(upstream.request(&request, headers)).await {
        Ok((status, headers, body)) => raw::response(status, headers, body),
        Err(error) => raw::response(StatusCode::BAD_GATEWAY, HeaderMap::new(), error),
    }
}

fn header<'a>(headers: &'a HeaderMap, name: &str) -> &'a str {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
}

fn decode(value: &str) -> String {
    percent_encoding::percent_decode_str(&value.replace('+', "%20"))
        .decode_utf8_lossy()
        .into_owned()
}

/// The Shared Key signature of a request of the development account, as Azurite computes it
/// (`TableSharedKeyAuthenticator`, `BlobSharedKeyAuthenticator`): HMAC-SHA256 with the account
/// key of the string to sign, in base64.
pub fn sign(
    service: StorageService,
    method: &str,
    path: &str,
    query: Option<&str>,
    headers: &HeaderMap,
) -> String {
    let mut pairs: Vec<(String, String)> = query
        .unwrap_or_default()
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (name, value) = p.split_once('=').unwrap_or((p, ""));
            (name.to_ascii_lowercase(), value.to_owned())
        })
        .collect();
    pairs.sort();
    let resource = format!("/{ACCOUNT}{path}");
    let to_sign = match service {
        StorageService::Table => {
            let date = match header(headers, "date") {
                "" => header(headers, "x-ms-date"),
                date => date,
            };
            let mut resource = resource;
            if let Some((_, comp)) = pairs.iter().find(|(n, _)| n == "comp") {
                resource.push_str(&format!("?comp={comp}"));
            }
            format!(
                "{}\n{}\n{}\n{}\n{}",
                method.to_ascii_uppercase(),
                header(headers, "content-md5"),
                header(headers, "content-type"),
                date,
                resource
            )
        }
        StorageService::Blob => {
            let length = match header(headers, "content-length") {
                "0" => "",
                length => length,
            };
            let fields = [
                method.to_ascii_uppercase(),
                header(headers, "content-encoding").to_owned(),
                header(headers, "content-language").to_owned(),
                length.to_owned(),
                header(headers, "content-md5").to_owned(),
                header(headers, "content-type").to_owned(),
                header(headers, "date").to_owned(),
                header(headers, "if-modified-since").to_owned(),
                header(headers, "if-match").to_owned(),
                header(headers, "if-none-match").to_owned(),
                header(headers, "if-unmodified-since").to_owned(),
                header(headers, "range").to_owned(),
            ];
            let mut ms: Vec<(String, String)> = headers
                .keys()
                .filter(|n| n.as_str().starts_with("x-ms-"))
                .map(|n| {
                    let values: Vec<&str> = headers
                        .get_all(n)
                        .iter()
                        .filter_map(|v| v.to_str().ok())
                        .collect();
                    (n.as_str().to_owned(), values.join(","))
                })
                .collect();
            ms.sort();
            ms.dedup();
            let canonical_headers: String = ms
                .iter()
                .map(|(n, v)| format!("{n}:{}\n", v.trim_start()))
                .collect();
            let canonical_query: String = pairs
                .iter()
                .map(|(n, v)| format!("\n{n}:{}", decode(v)))
                .collect();
            format!(
                "{}\n{canonical_headers}{resource}{canonical_query}",
                fields.join("\n")
            )
        }
    };
    let key = base64::engine::general_purpose::STANDARD
        .decode(KEY)
        .unwrap_or_default();
    let Ok(mut mac) = Hmac::<Sha256>::new_from_slice(&key) else {
        return String::new();
    };
    mac.update(to_sign.as_bytes());
    base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes())
}
