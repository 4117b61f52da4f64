//! A fake App Service managed-identity endpoint, and the check of the tokens it issued.
//!
//! [`FakeIdentity`] answers `GET {endpoint}?api-version=2019-08-01&resource=R[&client_id=C]`
//! as App Service does, with `{"access_token", "expires_on", "resource", "token_type",
//! "client_id"}`, and refuses (400) a request without the right `X-IDENTITY-HEADER`, without the
//! API version or resource, or for a client id other than its own when it has one. Each token is
//! new, random, for one resource, and lives [`FakeIdentity::set_lifetime`] seconds (an hour by
//! default). Requests are counted per resource, and the endpoint can be made to fail
//! ([`FakeIdentity::fail_next`]) or be down ([`FakeIdentity::set_down`]).
//!
//! [`TokenCheck`] (from [`FakeIdentity::check`]) tells a server standing in for storage or Event
//! Grid whether a bearer token is one this identity issued, for its resource, and not expired:
//! the bearer-checking storage proxy ([`crate::bearer`]) and the topic simulator use it.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{SystemTime, UNIX_EPOCH};

use warp::http::{HeaderMap, HeaderValue, StatusCode};
use warp::Filter;

use crate::raw::{self, RawRequest, Serving};

/// Path of the token endpoint (App Service's own is similar; any path works for the handler).
pub const TOKEN_PATH: &str = "/msi/token";
/// Header the endpoint requires, carrying `IDENTITY_HEADER`.
pub const IDENTITY_HEADER_NAME: &str = "x-identity-header";
/// The only API version answered.
pub const API_VERSION: &str = "2019-08-01";
/// Default token lifetime, seconds.
pub const DEFAULT_LIFETIME_SECS: u64 = 3600;

#[derive(Default)]
struct State {
    /// token → (resource, expiry in seconds since the epoch)
    issued: Mutex<HashMap<String, (String, u64)>>,
    requests: Mutex<HashMap<String, usize>>,
    refused: AtomicUsize,
    fail_next: Mutex<Option<(usize, u16)>>,
    down: AtomicBool,
    lifetime: AtomicU64,
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// Whether a bearer token was issued by a [`FakeIdentity`] for a resource and is unexpired.
#[derive(Clone)]
pub struct TokenCheck {
    state: Arc<State>,
    resource: String,
}

impl std::fmt::Debug for TokenCheck {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenCheck")
            .field("resource", &self.resource)
            .finish_non_exhaustive()
    }
}

impl TokenCheck {
    /// `Ok` when `authorization` is `Bearer {token}` with a token issued for this check's
    /// resource and not expired; else why not.
    pub fn check(&self, authorization: Option<&str>) -> Result<(), String> {
        let Some(value) = authorization else {
            return Err("no Authorization header".into());
        };
        let Some(token) = value.strip_prefix("Bearer ") else {
            return Err("the Authorization header is not a bearer token".into());
        };
        match lock(&self.state.issued).get(token) {
            None => Err("the bearer token was not issued by the identity endpoint".into()),
            Some((resource, _)) if *resource != self.resource => Err(format!(
                "the bearer token is for {resource}, not {}",
                self.resource
            )),
            Some((_, expires)) if *expires <= unix_now() => Err("the bearer token expired".into()),
            Some(_) => Ok(()),
        }
    }
}

/// A running fake identity endpoint; stops when dropped.
pub struct FakeIdentity {
    port: u16,
    header: String,
    client_id: Option<String>,
    state: Arc<State>,
    _serving: Serving,
}

impl FakeIdentity {
    /// Starts an endpoint on a free port of 127.0.0.1 for a user-assigned identity
    /// `client_id` (or a system-assigned one with `None`).
    pub async fn start(client_id: Option<&str>) -> anyhow::Result<Self> {
        let header = uuid::Uuid::new_v4().simple().to_string();
        let state = Arc::new(State::default());
        state
            .lifetime
            .store(DEFAULT_LIFETIME_SECS, Ordering::SeqCst);
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", 0)).await?;
        let port = listener.local_addr()?.port();
        let shared = state.clone();
        let expected_header = header.clone();
        let own_client_id = client_id.map(str::to_owned);
        let routes = raw::request().map(move |request: RawRequest| {
            answer(
                &shared,
                &expected_header,
                own_client_id.as_deref(),
                &request,
            )
        });
        Ok(Self {
            port,
            header,
            client_id: client_id.map(str::to_owned),
            state,
            _serving: Serving::start(listener, routes),
        })
    }

    /// The value for the handler's `IDENTITY_ENDPOINT`.
    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}{TOKEN_PATH}", self.port)
    }

    /// The value for the handler's `IDENTITY_HEADER`.
    pub fn header(&self) -> &str {
        &self.header
    }

    pub fn client_id(&self) -> Option<&str> {
        self.client_id.as_deref()
    }

    /// The check of tokens for `resource` (e.g. `https://storage.azure.com/`).
    pub fn check(&self, resource: &str) -> TokenCheck {
        TokenCheck {
            state: self.state.clone(),
            resource: resource.to_owned(),
        }
    }

    /// Tokens issued from now on live `seconds`.
    pub fn set_lifetime(&self, seconds: u64) {
        self.state.lifetime.store(seconds, Ordering::SeqCst);
    }

    /// The next `count` token requests are answered `status`.
    pub fn fail_next(&self, count: usize, status: u16) {
        *lock(&self.state.fail_next) = Some((count, status));
    }

    /// While down, every request is answered 503.
    pub fn set_down(&self, down: bool) {
        self.state.down.store(down, Ordering::SeqCst);
    }

    /// Token requests answered with a token, for `resource`.
    pub fn issued_for(&self, resource: &str) -> usize {
        lock(&self.state.requests)
            .get(resource)
            .copied()
            .unwrap_or(0)
    }

    /// Requests refused for a wrong header, version, resource or client id.
    pub fn refused(&self) -> usize {
        self.state.refused.load(Ordering::SeqCst)
    }
}

fn json(status: StatusCode, body: serde_json::Value) -> warp::reply::Response {
    let mut headers = HeaderMap::new();
    headers.insert("content-type", HeaderValue::from_static("application/json"));
    raw::response(status, headers, body.to_string())
}

fn answer(
    state: &State,
    expected_header: &str,
    own_client_id: Option<&str>,
    request: &RawRequest,
) -> warp::reply::Response {
    let refuse = |why: &str| {
        state.refused.fetch_add(1, Ordering::SeqCst);
        json(
            StatusCode::BAD_REQUEST,
            serde_json::json!({"error": "invalid_request", "error_description": why}),
        )
    };
    if state.down.load(Ordering::SeqCst) {
        return json(
            StatusCode::SERVICE_UNAVAILABLE,
            serde_json::json!({"error": "unavailable"}),
        );
    }
    if let Some((count, status)) = lock(&state.fail_next).as_mut() {
        if *count > 0 {
            *count -= 1;
            let status = StatusCode::from_u16(*status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
            return json(status, serde_json::json!({"error": "injected failure"}));
        }
    }
    if request.method != warp::http::Method::GET || request.path != TOKEN_PATH {
        return refuse("no such endpoint");
    }
    let header = request
        .headers
        .get(IDENTITY_HEADER_NAME)
        .and_then(|v| v.to_str().ok());
    if header != Some(expected_header) {
        return refuse("X-IDENTITY-HEADER is missing or wrong");
    }
    let query: HashMap<String, String> = url_query(request.query.as_deref().unwrap_or_default());
    if query.get("api-version").map(String::as_str) != Some(API_VERSION) {
        return refuse("api-version must be 2019-08-01");
    }
    let Some(resource) = query.get("resource").filter(|r| !r.is_empty()) else {
        return refuse("resource is required");
    };
    if query.get("client_id").map(String::as_str) != own_client_id {
        return refuse("no identity with that client_id is assigned to this app");
    }
    let token = format!("fake-token-{}", uuid::Uuid::new_v4().simple());
    let expires = unix_now().saturating_add(state.lifetime.load(Ordering::SeqCst));
    lock(&state.issued).insert(token.clone(), (resource.clone(), expires));
    *lock(&state.requests).entry(resource.clone()).or_default() += 1;
    json(
        StatusCode::OK,
        serde_json::json!({
            "access_token": token,
            "expires_on": expires.to_string(),
            "resource": resource,
            "token_type": "Bearer",
            "client_id": own_client_id.unwrap_or("system-assigned"),
        }),
    )
}

/// A query string's pairs, percent-decoded (`+` as a space).
fn url_query(query: &str) -> HashMap<String, String> {
    query
        .split('&')
        .filter(|pair| !pair.is_empty())
        .map(|pair| {
            let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
            let decode = |s: &str| {
                percent_encoding::percent_decode_str(&s.replace('+', " "))
                    .decode_utf8_lossy()
                    .into_owned()
            };
            (decode(name), decode(value))
        })
        .collect()
}
