//! RFC 9457 problem details: the one place where errors become HTTP statuses.
//!
//! Every error a client can see leaves as `application/problem+json` with a stable `type`, a
//! `title`, the `status` and a `detail` that names the problem, plus extension members with the
//! data a client needs to act (the actual version of a conflict, the offending key...). Store
//! and projection errors are mapped here and nowhere else; warp's own rejections (unknown route,
//! wrong method, oversized body) are mapped by [`recover`].

use std::convert::Infallible;

use serde::Serialize;
use serde_json::{Map, Value};
use warp::http::{header, HeaderValue, StatusCode};
use warp::reply::Response;
use warp::{Rejection, Reply};

use crate::projection::{ExecuteError, GuardError, ProjectionError};
use crate::readmodel::ReadModelError;
use crate::stream::{ReadModelStoreError, StoreError};

/// Prefix of every problem `type` URI; the suffix is a stable slug.
pub const PROBLEM_TYPE_PREFIX: &str = "urn:streamfold:problem:";
/// Media type of every error response.
pub const PROBLEM_CONTENT_TYPE: &str = "application/problem+json";
/// Seconds a client should wait before retrying after a 503.
pub const RETRY_AFTER_SECONDS: u32 = 5;

/// An error response in the making.
#[derive(Debug, Clone, Serialize)]
pub struct Problem {
    #[serde(rename = "type")]
    type_uri: String,
    title: String,
    status: u16,
    detail: String,
    #[serde(flatten)]
    extensions: Map<String, Value>,
}

impl Problem {
    /// A problem with the given status, stable slug (e.g. `"invalid-amount"`) and detail.
    pub fn new(status: StatusCode, slug: &str, detail: impl Into<String>) -> Self {
        Self {
            type_uri: format!("{PROBLEM_TYPE_PREFIX}{slug}"),
            title: status.canonical_reason().unwrap_or("Error").to_owned(),
            status: status.as_u16(),
            detail: detail.into(),
            extensions: Map::new(),
        }
    }

    /// 400 Bad Request.
    pub fn bad_request(slug: &str, detail: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, slug, detail)
    }

    /// 404 Not Found.
    pub fn not_found(slug: &str, detail: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, slug, detail)
    }

    /// 409 Conflict.
    pub fn conflict(slug: &str, detail: impl Into<String>) -> Self {
        Self::new(StatusCode::CONFLICT, slug, detail)
    }

    /// 422 Unprocessable Content: well-formed, but a business rule refuses it.
    pub fn unprocessable(slug: &str, detail: impl Into<String>) -> Self {
        Self::new(StatusCode::UNPROCESSABLE_ENTITY, slug, detail)
    }

    /// 500 Internal Server Error: something the server should have been able to do failed
    /// (a state no valid history makes, a run that left work undone).
    pub fn internal(slug: &str, detail: impl Into<String>) -> Self {
        Self::new(StatusCode::INTERNAL_SERVER_ERROR, slug, detail)
    }

    /// Adds an extension member (e.g. `actualVersion`).
    pub fn with(mut self, key: &str, value: impl Into<Value>) -> Self {
        self.extensions.insert(key.to_owned(), value.into());
        self
    }

    pub fn status(&self) -> StatusCode {
        StatusCode::from_u16(self.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR)
    }

    pub fn detail(&self) -> &str {
        &self.detail
    }
}

impl warp::reject::Reject for Problem {}

impl Reply for Problem {
    fn into_response(self) -> Response {
        let status = self.status();
        let body = serde_json::to_vec(&self).unwrap_or_default();
        let mut response = Response::new(body.into());
        *response.status_mut() = status;
        let headers = response.headers_mut();
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static(PROBLEM_CONTENT_TYPE),
        );
        if status == StatusCode::SERVICE_UNAVAILABLE {
            headers.insert(header::RETRY_AFTER, HeaderValue::from(RETRY_AFTER_SECONDS));
        }
        response
    }
}

impl From<StoreError> for Problem {
    fn from(error: StoreError) -> Self {
        let detail = error.to_string();
        match error {
            StoreError::WrongExpectedVersion {
                stream,
                expected,
                actual,
            } => Problem::conflict("wrong-expected-version", detail)
                .with("stream", stream)
                .with("expectedVersion", expected.to_string())
                .with("actualVersion", actual),
            StoreError::InvalidKey(key) => Problem::bad_request("invalid-key", detail)
                .with("field", key.what)
                .with("value", key.value),
            StoreError::InvalidEvent { event_id, .. } => {
                Problem::bad_request("invalid-event", detail).with("eventId", event_id.to_string())
            }
            StoreError::EventTooLarge {
                event_id,
                size,
                limit,
            } => Problem::new(StatusCode::PAYLOAD_TOO_LARGE, "event-too-large", detail)
                .with("eventId", event_id.to_string())
                .with("size", size)
                .with("limit", limit),
            StoreError::AppendTooLarge { events, bytes, .. } => {
                Problem::new(StatusCode::PAYLOAD_TOO_LARGE, "append-too-large", detail)
                    .with("events", events)
                    .with("bytes", bytes)
            }
            StoreError::EventIdReused { event_id, .. } => {
                Problem::conflict("event-id-reused", detail).with("eventId", event_id.to_string())
            }
            StoreError::EmptyAppend => Problem::bad_request("empty-append", detail),
            StoreError::StreamErased { stream } => {
                Problem::new(StatusCode::GONE, "stream-erased", detail).with("stream", stream)
            }
            StoreError::InvalidContinuation { .. } => {
                Problem::bad_request("invalid-continuation", detail)
                    .with("parameter", "continuation")
            }
            StoreError::Unavailable { .. } => {
                tracing::warn!(error = %detail, "storage unavailable");
                Problem::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "storage-unavailable",
                    "the storage service is unavailable; retry later (a retry with the same event ids is safe)",
                )
            }
            StoreError::InputRefused {
                target,
                status,
                code,
            } => {
                let status = if status == StatusCode::PAYLOAD_TOO_LARGE.as_u16() {
                    StatusCode::PAYLOAD_TOO_LARGE
                } else {
                    StatusCode::BAD_REQUEST
                };
                Problem::new(status, "storage-refused-input", detail)
                    .with("target", target)
                    .with("storageErrorCode", code)
            }
            StoreError::Corrupt { .. } | StoreError::Misconfigured(_) => {
                tracing::error!(error = %detail, "storage error");
                Problem::new(StatusCode::INTERNAL_SERVER_ERROR, "storage-error", detail)
            }
        }
    }
}

impl From<crate::erasure::ErasureError> for Problem {
    fn from(error: crate::erasure::ErasureError) -> Self {
        use crate::erasure::ErasureError;
        let detail = error.to_string();
        match error {
            ErasureError::NotFound(stream) => {
                Problem::not_found("stream-not-found", detail).with("stream", stream)
            }
            ErasureError::Store(error) => error.into(),
            ErasureError::ReadModel(ReadModelStoreError::Store(error)) => error.into(),
            ErasureError::ReadModel(other) => {
                tracing::error!(error = %other, "erasing read-model rows failed");
                Problem::new(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "internal",
                    other.to_string(),
                )
            }
            ErasureError::Notification { stream, .. } => {
                tracing::warn!(error = %detail, "DeletedEntity notification not published");
                Problem::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "notifications-unavailable",
                    detail,
                )
                .with("stream", stream)
            }
        }
    }
}

impl From<ProjectionError> for Problem {
    fn from(error: ProjectionError) -> Self {
        match error {
            ProjectionError::Store(store) => store.into(),
            ProjectionError::Apply {
                stream,
                projection,
                source,
            } => {
                // Stored data the server cannot fold: the server's fault, not the request's,
                // and permanent (retrying cannot help), so 500 with what names it.
                let detail = format!(
                    "stream {stream} holds an event that projection {projection} cannot fold: {source}"
                );
                tracing::error!(
                    stream,
                    projection,
                    sequence = source.sequence,
                    event_type = source.event_type,
                    reason = source.reason,
                    "stream unreadable"
                );
                Problem::new(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "stream-unreadable",
                    detail,
                )
                .with("stream", stream)
                .with("projection", projection)
                .with("sequence", source.sequence)
                .with("eventType", source.event_type)
                .with("reason", source.reason)
            }
            other => {
                tracing::error!(error = %other, "projection failed");
                Problem::new(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "projection-failed",
                    other.to_string(),
                )
            }
        }
    }
}

impl From<ExecuteError> for Problem {
    fn from(error: ExecuteError) -> Self {
        let detail = error.to_string();
        match error {
            ExecuteError::Store(e) => e.into(),
            ExecuteError::Projection(e) => e.into(),
            ExecuteError::Contention {
                stream,
                attempts,
                elapsed,
            } => Problem::conflict("concurrency-conflict", detail)
                .with("stream", stream)
                .with("attempts", attempts)
                .with(
                    "elapsedMs",
                    u64::try_from(elapsed.as_millis()).unwrap_or(u64::MAX),
                ),
            ExecuteError::IdempotencyKeyReused { stream, key } => {
                Problem::unprocessable("idempotency-key-reused", detail)
                    .with("stream", stream)
                    .with("idempotencyKey", key)
            }
            ExecuteError::Unfoldable { .. } => {
                tracing::error!(error = %detail, "a command decided an event its own fold refuses");
                Problem::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", detail)
            }
        }
    }
}

impl From<ReadModelError> for Problem {
    fn from(error: ReadModelError) -> Self {
        let detail = error.to_string();
        match error {
            ReadModelError::Store(e) => e.into(),
            ReadModelError::Projection(e) => e.into(),
            ReadModelError::InvalidKey(e) => crate::stream::StoreError::from(e).into(),
            ReadModelError::Contention {
                model, attempts, ..
            } => Problem::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "read-model-contention",
                detail,
            )
            .with("model", model)
            .with("attempts", attempts),
            ReadModelError::AheadOfStream {
                sequence, version, ..
            } => Problem::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "notification-ahead-of-stream",
                detail,
            )
            .with("sequence", sequence)
            .with("version", version),
            ReadModelError::StateTooLarge(crate::stream::StateTooLarge {
                model,
                bytes,
                limit,
                ..
            }) => {
                tracing::error!(error = %detail, "read model state too large");
                Problem::new(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "read-model-state-too-large",
                    detail,
                )
                .with("model", model)
                .with("bytes", bytes)
                .with("limit", limit)
            }
        }
    }
}

impl Problem {
    /// The answer that makes Event Grid deliver a notification again after the projector
    /// failed with `error`: its problem when that is a server error, else a 500
    /// `projector-failed` (the host and Event Grid drop a delivery answered with 400 or 413).
    pub fn redelivery(error: ReadModelError) -> Self {
        let problem = Problem::from(error);
        if problem.status().is_server_error() {
            problem
        } else {
            Problem::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "projector-failed",
                problem.detail().to_owned(),
            )
        }
    }
}

impl From<ReadModelStoreError> for Problem {
    fn from(error: ReadModelStoreError) -> Self {
        ReadModelError::from(error).into()
    }
}

impl From<GuardError> for Problem {
    fn from(error: GuardError) -> Self {
        let detail = error.to_string();
        match error {
            GuardError::Failed(e) => e.into(),
            GuardError::Refused {
                stream,
                index,
                event_id,
                event_type,
                reason,
            } => Problem::unprocessable("invalid-domain-event", detail)
                .with("stream", stream)
                .with("index", index)
                .with("eventId", event_id.to_string())
                .with("eventType", event_type)
                .with("reason", reason),
        }
    }
}

/// Turns every rejection into a problem response: ours as they are, warp's own by kind.
pub async fn recover(rejection: Rejection) -> Result<Response, Infallible> {
    let problem = if let Some(problem) = rejection.find::<Problem>() {
        problem.clone()
    } else if rejection.is_not_found() {
        no_such_route()
    } else if rejection.find::<warp::reject::MethodNotAllowed>().is_some() {
        Problem::new(
            StatusCode::METHOD_NOT_ALLOWED,
            "method-not-allowed",
            "this route does not accept this HTTP method",
        )
    } else if rejection.find::<warp::reject::PayloadTooLarge>().is_some() {
        body_too_large()
    } else if let Some(e) = rejection.find::<warp::reject::InvalidQuery>() {
        Problem::bad_request("invalid-query", e.to_string())
    } else if let Some(e) = rejection.find::<warp::reject::InvalidHeader>() {
        Problem::bad_request("invalid-header", e.to_string())
    } else if let Some(e) = rejection.find::<warp::reject::MissingHeader>() {
        Problem::bad_request("missing-header", e.to_string())
    } else if rejection
        .find::<warp::reject::UnsupportedMediaType>()
        .is_some()
    {
        Problem::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported-media-type",
            "send the body as application/json",
        )
    } else {
        tracing::error!(?rejection, "unhandled rejection");
        Problem::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            "an unexpected error occurred",
        )
    };
    Ok(problem.into_response())
}

/// 404 `no-such-route`: no function's route has this path.
pub fn no_such_route() -> Problem {
    Problem::not_found("no-such-route", "no function answers this path")
}

/// 405 `method-not-allowed` for a function's path asked with another method: the methods it
/// accepts in the `Allow` header and the `allow` member.
pub fn method_not_allowed(allow: &[warp::http::Method]) -> Response {
    let allow: Vec<&str> = allow.iter().map(|m| m.as_str()).collect();
    let listed = allow.join(", ");
    let mut response = Problem::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "method-not-allowed",
        format!("this route accepts only {listed}"),
    )
    .with("allow", allow)
    .into_response();
    if let Ok(value) = HeaderValue::from_str(&listed) {
        response.headers_mut().insert(header::ALLOW, value);
    }
    response
}

/// A JSON body with the given status.
pub fn json_response<T: Serialize>(status: StatusCode, body: &T) -> Response {
    warp::reply::with_status(warp::reply::json(body), status).into_response()
}

/// Parses a JSON request body, naming the problem precisely when it fails (where in the body,
/// and whether it is malformed JSON or a wrong type).
pub fn parse_json<T: serde::de::DeserializeOwned>(body: &[u8]) -> Result<T, Problem> {
    // No body (or only whitespace) means "no fields", like `{}`.
    let text = if body.iter().all(u8::is_ascii_whitespace) {
        b"{}" as &[u8]
    } else {
        body
    };
    serde_json::from_slice(text).map_err(|e| {
        let slug = if e.is_syntax() || e.is_eof() {
            "malformed-json"
        } else {
            "invalid-body"
        };
        Problem::bad_request(slug, format!("request body: {e}"))
            .with("line", e.line())
            .with("column", e.column())
    })
}

/// Shorthand used by handlers: `Err(problem)` becomes a rejection for [`recover`].
pub fn reject(problem: impl Into<Problem>) -> Rejection {
    warp::reject::custom(problem.into())
}

/// 413 for a body over [`super::MAX_BODY_BYTES`].
pub fn body_too_large() -> Problem {
    Problem::new(
        warp::http::StatusCode::PAYLOAD_TOO_LARGE,
        "body-too-large",
        format!(
            "the request body is larger than {} bytes",
            super::MAX_BODY_BYTES
        ),
    )
}
