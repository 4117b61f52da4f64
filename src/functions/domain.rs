//! How a domain plugs its HTTP functions into an app without touching the library: a
//! [`DomainApi`] lists the domain's routes, each with a handler written against the small
//! [`Request`] / [`Reply`] types here (no HTTP framework in sight), and the domain's part of
//! the OpenAPI document; [`app_functions`] serves the library's generic functions and every
//! registered domain's, with one route table and one OpenAPI document merged from the
//! library's and the parts.
//!
//! A registered route is declared in the route table from the same call that gives its
//! handler, so the table (checked against the `function.json` files) and what is served cannot
//! disagree. Requests reach a handler only after the table has chosen its function: the path's
//! literals are spelled as the template spells them, parameters are percent-decoded here (a
//! segment that is not UTF-8 once decoded is 400 `invalid-path`), then the query string is
//! decoded once (400 `invalid-query` when malformed) and the `x-correlation-id` checked (400
//! `invalid-correlation-id`). The body is read only for the matched route, bounded like every
//! body ([`super::filters::body`]).
//!
//! Templates are written as in `function.json`: `{name}` is one segment, `{name?}` one that may
//! be left out at the end of the path, `{*name}` the rest of the path (possibly empty). Besides
//! HTTP routes a domain registers functions with other triggers (timers), which the host
//! invokes with `POST /{FunctionName}` ([`DomainApi::invocation`]). A [`Reply`] is JSON with any
//! status, or bytes of any content type ([`Reply::bytes`]), with headers of the handler's
//! choosing; an error is the handler's [`Problem`], answered as problem+json like every other.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use bytes::Bytes;
use percent_encoding::percent_decode_str;
use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_json::{Map, Value};
use warp::filters::BoxedFilter;
use warp::http::header::{HeaderValue, CONTENT_TYPE};
use warp::http::{HeaderMap, HeaderName, Method, StatusCode};
use warp::reply::Response;
use warp::Filter;

use super::command::CommandContext;
use super::filters::{self, INVOCATION_ID_HEADER};
use super::idempotency::{self, REPLAYED_HEADER};
use super::problem::{parse_json, reject, Problem};
use super::routing::{Functions, RouteTable, ROUTE_PREFIX};
use crate::app::App;
use crate::projection::{AsOf, IdempotencyKey};

/// One request to a domain's function, as its handler sees it. A test of a handler builds
/// one with `Request::default()` and the `with_*` methods.
#[derive(Debug, Clone, Default)]
pub struct Request {
    params: Vec<(String, String)>,
    query: Vec<(String, String)>,
    headers: HeaderMap,
    body: Bytes,
    correlation_id: String,
}

impl Request {
    /// The value of the route parameter `name` (`{sku}` in `Receive/{sku}`), percent-decoded.
    pub fn param(&self, name: &str) -> Option<&str> {
        self.params
            .iter()
            .find(|(known, _)| known == name)
            .map(|(_, value)| value.as_str())
    }

    /// The query string's pairs, decoded, in order.
    pub fn query(&self) -> &[(String, String)] {
        &self.query
    }

    /// The first value of query parameter `name` (names match case-insensitively, as the
    /// Functions host matches them).
    pub fn query_param(&self, name: &str) -> Option<&str> {
        filters::query_param(&self.query, name)
    }

    /// Refuses a query parameter other than the `known` ones (400 `unknown-query-parameter`)
    /// and one given twice (400 `duplicate-query-parameter`), naming it; `code` (the
    /// function key) is always allowed. The library's own routes check theirs the same way.
    pub fn only_known_params(&self, known: &[&str]) -> Result<(), Problem> {
        filters::only_known_params(&self.query, known)
    }

    /// Query parameter `name` as a whole number of ASCII digits up to `u64::MAX`, when given:
    /// 400 `invalid-query-parameter` naming it otherwise.
    pub fn u64_param(&self, name: &str) -> Result<Option<u64>, Problem> {
        filters::u64_param(&self.query, name)
    }

    /// Query parameter `name` as `true` or `false` (any case, spaces around ignored), when
    /// given: 400 `invalid-query-parameter` naming it otherwise.
    pub fn bool_param(&self, name: &str) -> Result<Option<bool>, Problem> {
        filters::bool_param(&self.query, name)
    }

    /// Query parameter `name` as an RFC 3339 time, in UTC, when given: 400
    /// `invalid-query-parameter` naming it for anything else or a time storage cannot hold.
    pub fn time_param(&self, name: &str) -> Result<Option<time::OffsetDateTime>, Problem> {
        filters::time_param(&self.query, name)
    }

    /// The point of history asked for with `asOfSequence` or `asOf` (at most one of them;
    /// neither is now), read as the library's `RunProjection` reads them.
    pub fn as_of_params(&self) -> Result<AsOf, Problem> {
        filters::as_of_params(&self.query)
    }

    /// A header's value, when it is text.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// The body as sent.
    pub fn body(&self) -> &[u8] {
        &self.body
    }

    /// The body as JSON of type `T` (an empty body is `{}`): 400 `malformed-json` or
    /// `invalid-body` naming the line and column otherwise.
    pub fn json<T: DeserializeOwned>(&self) -> Result<T, Problem> {
        parse_json(&self.body)
    }

    /// The request's `x-correlation-id` (checked), or a new one.
    pub fn correlation_id(&self) -> &str {
        &self.correlation_id
    }

    /// The request's `Idempotency-Key` ([`super::idempotency`]): `None` without the header,
    /// 400 `invalid-idempotency-key` when it is malformed or given twice.
    pub fn idempotency_key(&self) -> Result<Option<IdempotencyKey>, Problem> {
        idempotency::key_from_headers(&self.headers)
    }

    /// The context of a command sent with this request: its correlation id and its
    /// `Idempotency-Key` ([`Self::idempotency_key`]: 400 `invalid-idempotency-key` when it is
    /// malformed, so call this before anything else is looked at), no commentary, no `who`.
    pub fn command_context(&self) -> Result<CommandContext, Problem> {
        Ok(CommandContext {
            correlation_id: self.correlation_id.clone(),
            idempotency_key: self.idempotency_key()?,
            ..CommandContext::default()
        })
    }

    /// The Functions host's invocation id of this call (for logs): empty when absent or not
    /// text.
    pub fn invocation_id(&self) -> &str {
        self.header(INVOCATION_ID_HEADER).unwrap_or_default()
    }

    /// This request with route parameter `name` = `value` (as decoded), for tests.
    pub fn with_param(mut self, name: &str, value: &str) -> Self {
        self.params.push((name.to_owned(), value.to_owned()));
        self
    }

    /// This request with the query pairs `query` (as decoded), for tests.
    pub fn with_query<'a>(mut self, query: impl IntoIterator<Item = (&'a str, &'a str)>) -> Self {
        self.query
            .extend(query.into_iter().map(|(k, v)| (k.to_owned(), v.to_owned())));
        self
    }

    /// This request with header `name` = `value` (one that is not a valid header is left
    /// out), for tests.
    pub fn with_header(mut self, name: &str, value: &str) -> Self {
        if let (Ok(name), Ok(value)) = (
            HeaderName::from_bytes(name.as_bytes()),
            HeaderValue::from_str(value),
        ) {
            self.headers.append(name, value);
        }
        self
    }

    /// This request with `body`, for tests.
    pub fn with_body(mut self, body: impl Into<Bytes>) -> Self {
        self.body = body.into();
        self
    }
}

/// A handler's answer.
#[derive(Debug, Clone)]
pub struct Reply {
    status: u16,
    body: Bytes,
    headers: Vec<(String, String)>,
}

impl Reply {
    /// `status` with `body` as JSON (a body that cannot be serialized is a 500 problem).
    pub fn json<T: Serialize>(status: u16, body: &T) -> Result<Self, Problem> {
        let body = serde_json::to_vec(body).map_err(|e| {
            Problem::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "internal",
                format!("the answer could not be serialized: {e}"),
            )
        })?;
        Ok(Self::bytes(status, "application/json", body))
    }

    /// `status` with `body` as it is, of type `content_type` (a page, a script, an image).
    pub fn bytes(status: u16, content_type: &str, body: impl Into<Bytes>) -> Self {
        Self {
            status,
            body: body.into(),
            headers: vec![("content-type".to_owned(), content_type.to_owned())],
        }
    }

    /// 200 with `body` as JSON.
    pub fn ok<T: Serialize>(body: &T) -> Result<Self, Problem> {
        Self::json(200, body)
    }

    /// 201 with `body` as JSON.
    pub fn created<T: Serialize>(body: &T) -> Result<Self, Problem> {
        Self::json(201, body)
    }

    /// Adds a header, replacing one of the same name (one that is not a valid header name or
    /// text value is left out).
    pub fn with_header(mut self, name: &str, value: &str) -> Self {
        self.headers.push((name.to_owned(), value.to_owned()));
        self
    }

    /// Says `Idempotent-Replayed: true` when `replayed`: the answer of an earlier attempt with
    /// the same `Idempotency-Key` ([`Request::idempotency_key`]).
    pub fn replayed(self, replayed: bool) -> Self {
        if replayed {
            self.with_header(REPLAYED_HEADER, "true")
        } else {
            self
        }
    }

    /// The status.
    pub fn status(&self) -> u16 {
        self.status
    }

    fn into_response(self) -> Response {
        let mut response = Response::new(self.body.into());
        *response.status_mut() =
            StatusCode::from_u16(self.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        for (name, value) in self.headers {
            if let (Ok(name), Ok(value)) = (
                HeaderName::from_bytes(name.as_bytes()),
                HeaderValue::from_str(&value),
            ) {
                response.headers_mut().insert(name, value);
            }
        }
        response
    }
}

/// A handler that gets a clone of `state` (the domain's service, an `Arc` of the app, ...)
/// with each request: `api.get("GetItem", "GetItem/{sku}", with_state(&inventory, get_item))`.
pub fn with_state<S, F, Fut>(state: &S, handler: F) -> impl Fn(Request) -> Fut + Send + Sync
where
    S: Clone + Send + Sync + 'static,
    F: Fn(S, Request) -> Fut + Send + Sync,
{
    let state = state.clone();
    move |request| handler(state.clone(), request)
}

/// What a handler returns.
pub type HandlerFuture = Pin<Box<dyn Future<Output = Result<Reply, Problem>> + Send>>;

type Handler = Arc<dyn Fn(Request) -> HandlerFuture + Send + Sync>;

/// One segment of a registered route's path.
#[derive(Debug, Clone, PartialEq)]
enum Segment {
    Literal(String),
    /// `{name}`, or `{name?}` (`optional`: may be left out at the end of the path).
    Parameter {
        name: String,
        optional: bool,
    },
    /// `{*name}`: the rest of the path.
    Rest(String),
}

impl Segment {
    fn parse(text: &str) -> Self {
        match text.strip_prefix('{').and_then(|s| s.strip_suffix('}')) {
            Some(inner) => match inner.strip_prefix('*') {
                Some(name) => Self::Rest(name.to_owned()),
                None => match inner.strip_suffix('?') {
                    Some(name) => Self::Parameter {
                        name: name.to_owned(),
                        optional: true,
                    },
                    None => Self::Parameter {
                        name: inner.to_owned(),
                        optional: false,
                    },
                },
            },
            None => Self::Literal(text.to_owned()),
        }
    }
}

/// One registered route.
#[derive(Clone)]
struct DomainRoute {
    method: Method,
    /// The path's segments, the route prefix included for an HTTP function.
    segments: Vec<Segment>,
    handler: Handler,
}

/// Why a domain's API could not be registered.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DomainApiError {
    #[error("the OpenAPI part is not a JSON object with `paths`: {0}")]
    InvalidOpenApi(String),
    #[error("the OpenAPI documents both define {0} differently")]
    OpenApiConflict(String),
}

/// A domain's HTTP functions and its part of the OpenAPI document.
#[derive(Default)]
pub struct DomainApi {
    table: RouteTable,
    routes: Vec<DomainRoute>,
    openapi: Option<Value>,
}

impl DomainApi {
    pub fn new() -> Self {
        Self::default()
    }

    /// Function `function` (its folder under `functions/`) answers `GET` on
    /// `/api/{template}` with `handler`.
    pub fn get<F, Fut>(self, function: &str, template: &str, handler: F) -> Self
    where
        F: Fn(Request) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<Reply, Problem>> + Send + 'static,
    {
        self.route(Method::GET, function, template, handler)
    }

    /// Function `function` answers `POST` on `/api/{template}` with `handler`.
    pub fn post<F, Fut>(self, function: &str, template: &str, handler: F) -> Self
    where
        F: Fn(Request) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<Reply, Problem>> + Send + 'static,
    {
        self.route(Method::POST, function, template, handler)
    }

    /// Function `function`, triggered by something other than HTTP (a timer), which the host
    /// invokes with `POST /{function}` and its invocation payload as the body; `handler`'s
    /// reply is the invocation's answer (a [`Problem`] makes the invocation fail).
    pub fn invocation<F, Fut>(mut self, function: &str, handler: F) -> Self
    where
        F: Fn(Request) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<Reply, Problem>> + Send + 'static,
    {
        self.table = self.table.invocation(function);
        self.push(
            Method::POST,
            vec![Segment::Literal(function.to_owned())],
            handler,
        )
    }

    fn route<F, Fut>(mut self, method: Method, function: &str, template: &str, handler: F) -> Self
    where
        F: Fn(Request) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<Reply, Problem>> + Send + 'static,
    {
        self.table = self
            .table
            .http(function, std::slice::from_ref(&method), template);
        let segments = std::iter::once(Segment::Literal(ROUTE_PREFIX.to_owned()))
            .chain(
                template
                    .split('/')
                    .filter(|s| !s.is_empty())
                    .map(Segment::parse),
            )
            .collect();
        self.push(method, segments, handler)
    }

    fn push<F, Fut>(mut self, method: Method, segments: Vec<Segment>, handler: F) -> Self
    where
        F: Fn(Request) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<Reply, Problem>> + Send + 'static,
    {
        let handler: Handler = Arc::new(move |request| Box::pin(handler(request)));
        self.routes.push(DomainRoute {
            method,
            segments,
            handler,
        });
        self
    }

    /// The domain's part of the OpenAPI document: a JSON object with its `paths` and the
    /// `components` they use (it may refer to the library's components, e.g. `Problem`).
    pub fn openapi(mut self, part: &str) -> Result<Self, DomainApiError> {
        let value: Value = serde_json::from_str(part)
            .map_err(|e| DomainApiError::InvalidOpenApi(e.to_string()))?;
        if !value.get("paths").is_some_and(Value::is_object) {
            return Err(DomainApiError::InvalidOpenApi("no `paths` object".into()));
        }
        self.openapi = Some(value);
        Ok(self)
    }

    /// The domain's part of the OpenAPI document, if it has one.
    pub fn openapi_part(&self) -> Option<&Value> {
        self.openapi.as_ref()
    }

    /// The routes and the filter that serves them.
    fn into_functions(self) -> Option<Functions> {
        (!self.routes.is_empty()).then(|| {
            let routes = Arc::new(self.routes);
            Functions::new(self.table, routes_filter(routes))
        })
    }
}

/// The route of `routes` that `method` on `path` (as the route table spelled it) names, with
/// its parameters (still percent-encoded; a `{*rest}` is the rest of the path as sent, an
/// optional parameter left out is absent).
fn matching(
    routes: &[DomainRoute],
    method: &Method,
    path: &str,
) -> Option<(Handler, Vec<(String, String)>)> {
    let path = path.strip_prefix('/')?;
    routes.iter().find_map(|route| {
        if route.method != *method {
            return None;
        }
        let mut rest = path;
        let mut params = Vec::new();
        for segment in &route.segments {
            if let Segment::Rest(name) = segment {
                params.push((name.clone(), rest.to_owned()));
                return Some((route.handler.clone(), params));
            }
            let (head, tail) = rest.split_once('/').unwrap_or((rest, ""));
            match segment {
                Segment::Literal(literal) if literal != head => return None,
                Segment::Parameter { optional, .. } if head.is_empty() => {
                    if !(*optional && tail.is_empty()) {
                        return None;
                    }
                }
                Segment::Parameter { name, .. } => params.push((name.clone(), head.to_owned())),
                Segment::Literal(_) | Segment::Rest(_) => {}
            }
            rest = tail;
        }
        rest.is_empty().then(|| (route.handler.clone(), params))
    })
}

/// The parameters percent-decoded: 400 `invalid-path` for one that is not UTF-8 once decoded.
fn decode_params(raw_params: Vec<(String, String)>) -> Result<Vec<(String, String)>, Problem> {
    raw_params
        .into_iter()
        .map(|(name, raw)| {
            let value = percent_decode_str(&raw).decode_utf8().map_err(|_| {
                Problem::bad_request(
                    "invalid-path",
                    format!("path segment {raw:?} is not valid UTF-8 once decoded"),
                )
            })?;
            Ok((name, value.into_owned()))
        })
        .collect()
}

fn routes_filter(routes: Arc<Vec<DomainRoute>>) -> BoxedFilter<(Response,)> {
    warp::method()
        .and(warp::path::full())
        .and_then(move |method: Method, path: warp::path::FullPath| {
            let found = matching(&routes, &method, path.as_str());
            async move {
                let (handler, raw_params) = found.ok_or_else(warp::reject::not_found)?;
                let params = decode_params(raw_params).map_err(reject)?;
                Ok::<_, warp::Rejection>((handler, params))
            }
        })
        .and(filters::query_pairs())
        .and(warp::header::headers_cloned())
        .and(filters::correlation_id())
        .and(filters::body())
        .and_then(
            |(handler, params): (Handler, Vec<(String, String)>),
             query: Vec<(String, String)>,
             headers: HeaderMap,
             correlation_id: String,
             body: Bytes| async move {
                let request = Request {
                    params,
                    query,
                    headers,
                    body,
                    correlation_id,
                };
                handler(request)
                    .await
                    .map(Reply::into_response)
                    .map_err(reject)
            },
        )
        .boxed()
}

/// The library's own OpenAPI document: the generic API only.
pub const LIBRARY_OPENAPI: &str = include_str!("openapi.json");

/// The library's document with `parts` merged in: their paths and components added; a path
/// or component defined twice differently is an error.
pub fn merge_openapi<'a>(
    parts: impl IntoIterator<Item = &'a Value>,
) -> Result<Value, DomainApiError> {
    let mut document: Value = serde_json::from_str(LIBRARY_OPENAPI)
        .map_err(|e| DomainApiError::InvalidOpenApi(e.to_string()))?;
    for part in parts {
        merge_object(&mut document, part, "paths")?;
        let Some(components) = part.get("components").and_then(Value::as_object) else {
            continue;
        };
        for (kind, items) in components {
            merge_object(
                document
                    .as_object_mut()
                    .and_then(|d| {
                        d.entry("components")
                            .or_insert_with(|| Value::Object(Map::new()))
                            .as_object_mut()
                    })
                    .map(|c| {
                        c.entry(kind.clone())
                            .or_insert_with(|| Value::Object(Map::new()))
                    })
                    .ok_or_else(|| DomainApiError::InvalidOpenApi("components".into()))?,
                items,
                "",
            )?;
        }
    }
    Ok(document)
}

/// Adds the members of `from[key]` (or of `from` itself when `key` is empty) to `into[key]`.
fn merge_object(into: &mut Value, from: &Value, key: &str) -> Result<(), DomainApiError> {
    let source = if key.is_empty() {
        from.as_object()
    } else {
        from.get(key).and_then(Value::as_object)
    };
    let Some(source) = source else {
        return Ok(());
    };
    let target = if key.is_empty() {
        into.as_object_mut()
    } else {
        into.as_object_mut().and_then(|o| {
            o.entry(key.to_owned())
                .or_insert_with(|| Value::Object(Map::new()))
                .as_object_mut()
        })
    }
    .ok_or_else(|| DomainApiError::InvalidOpenApi(format!("{key} is not an object")))?;
    for (name, value) in source {
        match target.get(name) {
            Some(known) if known != value => {
                return Err(DomainApiError::OpenApiConflict(name.clone()))
            }
            Some(_) => {}
            None => {
                target.insert(name.clone(), value.clone());
            }
        }
    }
    Ok(())
}

/// Every function of an app: the library's generic ones and those of the `domains`, with one
/// route table, and the OpenAPI document (the library's merged with the domains' parts)
/// served at `GET /api/openapi.json`.
pub fn app_functions(app: Arc<App>, domains: Vec<DomainApi>) -> Result<Functions, DomainApiError> {
    let document = merge_openapi(domains.iter().filter_map(|d| d.openapi.as_ref()))?;
    let text: Bytes = serde_json::to_vec_pretty(&document)
        .map_err(|e| DomainApiError::InvalidOpenApi(e.to_string()))?
        .into();
    let mut functions = super::library_functions(app).or(openapi_functions(text));
    for domain in domains {
        if let Some(theirs) = domain.into_functions() {
            functions = functions.or(theirs);
        }
    }
    Ok(functions)
}

/// Function `OpenApi`: `GET /api/openapi.json` answers `text`, the app's document.
pub(crate) fn openapi_functions(text: Bytes) -> Functions {
    let table = RouteTable::new().http("OpenApi", &[Method::GET], "openapi.json");
    let filter = warp::get()
        .and(warp::path!("api" / "openapi.json"))
        .map(move || {
            let mut response = Response::new(text.clone().into());
            response
                .headers_mut()
                .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
            response
        })
        .boxed();
    Functions::new(table, filter)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Settings;
    use crate::functions::routing::Resolution;

    fn app() -> Arc<App> {
        Arc::new(App::in_memory(Settings::from_pairs(Vec::new()).unwrap()))
    }

    /// The JSON answer to `request`.
    async fn json_of<T: DeserializeOwned>(request: reqwest::RequestBuilder) -> T {
        request.send().await.unwrap().json().await.unwrap()
    }

    async fn serve(functions: Functions) -> String {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(crate::functions::serve(
            listener,
            functions,
            std::future::pending(),
        ));
        base
    }

    /// The library alone publishes its generic API, nothing of any domain.
    #[tokio::test]
    async fn the_library_serves_only_its_own_document() {
        let base = serve(crate::functions::routes(app())).await;
        let served: Value =
            json_of(reqwest::Client::new().get(format!("{base}/api/openapi.json"))).await;
        let paths = served["paths"].as_object().unwrap();
        assert!(paths.contains_key("/api/streams/{domain}/{entity}/{instance}"));
        assert!(
            paths.keys().all(|p| !p.contains("Account")),
            "{:?}",
            paths.keys()
        );
    }

    #[derive(serde::Deserialize)]
    struct Body {
        n: u32,
    }

    /// A domain's routes are declared and served from one registration, its handlers get the
    /// decoded parameters, query and body, and its OpenAPI part is merged into the app's.
    #[tokio::test]
    async fn a_domain_registers_routes_handlers_and_its_openapi_part() {
        let api = DomainApi::new()
            .post("Add", "Things/{key}/add", |request: Request| async move {
                let body: Body = request.json()?;
                Reply::ok(&serde_json::json!({
                    "key": request.param("key"),
                    "n": body.n,
                    "dry": request.query_param("dry"),
                }))
            })
            .get("Refuse", "Things/{key}", |_request: Request| async move {
                Err(Problem::unprocessable("no-thing", "never"))
            })
            .openapi(r#"{"paths": {"/api/Things/{key}/add": {"post": {}}}, "components": {"schemas": {"Thing": {"type": "object"}}}}"#)
            .unwrap();
        let functions = app_functions(app(), vec![api]).unwrap();
        let table = functions.table().unwrap().clone();
        assert!(matches!(
            table.resolve(&Method::POST, "/api/things/a%20b/ADD"),
            Resolution::Found { function, .. } if function == "Add"
        ));
        let base = serve(functions).await;
        let http = reqwest::Client::new();
        let answer: Value = json_of(
            http.post(format!("{base}/api/things/a%20b/ADD?dry=yes"))
                .body(r#"{"n": 7}"#),
        )
        .await;
        assert_eq!(
            answer,
            serde_json::json!({"key": "a b", "n": 7, "dry": "yes"})
        );
        let refused = http
            .get(format!("{base}/api/Things/x"))
            .send()
            .await
            .unwrap();
        assert_eq!(refused.status(), 422);
        let wrong = http
            .get(format!("{base}/api/Things/x/add"))
            .send()
            .await
            .unwrap();
        assert_eq!(wrong.status(), 405);
        let document: Value = json_of(http.get(format!("{base}/api/openapi.json"))).await;
        assert!(document["paths"]["/api/Things/{key}/add"].is_object());
        assert!(document["paths"]["/api/streams/{domain}/{entity}"].is_object());
        assert!(document["components"]["schemas"]["Thing"].is_object());
        assert!(document["components"]["schemas"]["Problem"].is_object());
    }

    /// Optional and rest-of-path parameters, invocations, byte replies, statuses, headers and
    /// the idempotency key: what a domain such as the bank needs, without warp.
    #[tokio::test]
    async fn optional_and_rest_parameters_invocations_bytes_and_headers() {
        let api = DomainApi::new()
            .post("Start", "Start/{id?}", |request: Request| async move {
                let key = request.idempotency_key()?;
                Ok(Reply::json(
                    202,
                    &serde_json::json!({
                        "id": request.param("id"),
                        "key": key.as_ref().map(|k| k.as_str()),
                    }),
                )?
                .replayed(key.is_some()))
            })
            .get("Files", "files/{*path}", |request: Request| async move {
                let path = request.param("path").unwrap_or_default().to_owned();
                Ok(Reply::bytes(200, "text/plain; charset=utf-8", path)
                    .with_header("cache-control", "no-cache"))
            })
            .invocation("Nightly", |request: Request| async move {
                Reply::ok(&serde_json::json!({
                    "invocation": request.invocation_id(),
                    "payload": String::from_utf8_lossy(request.body()),
                }))
            });
        assert_eq!(api.table.routes().len(), 3);
        let functions = app_functions(app(), vec![api]).unwrap();
        let table = functions.table().unwrap().clone();
        for (method, path) in [
            (Method::POST, "/api/start"),
            (Method::POST, "/api/Start/a"),
            (Method::GET, "/api/files"),
            (Method::GET, "/api/FILES/a/b.txt"),
            (Method::POST, "/nightly"),
        ] {
            assert!(
                matches!(table.resolve(&method, path), Resolution::Found { .. }),
                "{method} {path}"
            );
        }
        let base = serve(functions).await;
        let http = reqwest::Client::new();

        let bare = http.post(format!("{base}/api/Start")).send().await.unwrap();
        assert_eq!(bare.status(), 202);
        assert!(bare.headers().get(REPLAYED_HEADER).is_none());
        let body: Value = bare.json().await.unwrap();
        assert_eq!(body, serde_json::json!({"id": null, "key": null}));

        let named = http
            .post(format!("{base}/api/Start/a%20b"))
            .header("idempotency-key", "\"k-1\"")
            .send()
            .await
            .unwrap();
        assert_eq!(named.status(), 202);
        assert_eq!(named.headers()[REPLAYED_HEADER], "true");
        let body: Value = named.json().await.unwrap();
        assert_eq!(body, serde_json::json!({"id": "a b", "key": "k-1"}));

        let bad_key = http
            .post(format!("{base}/api/Start/a"))
            .header("idempotency-key", "unquoted")
            .send()
            .await
            .unwrap();
        assert_eq!(bad_key.status(), 400);
        let body: Value = bad_key.json().await.unwrap();
        assert_eq!(
            body["type"],
            "urn:streamfold:problem:invalid-idempotency-key"
        );

        for (path, rest) in [
            ("files", ""),
            ("files/", ""),
            ("files/a.txt", "a.txt"),
            ("files/dir/b%20c.txt", "dir/b c.txt"),
        ] {
            let answer = http.get(format!("{base}/api/{path}")).send().await.unwrap();
            assert_eq!(answer.status(), 200, "{path}");
            assert_eq!(
                answer.headers()["content-type"],
                "text/plain; charset=utf-8"
            );
            assert_eq!(answer.headers()["cache-control"], "no-cache");
            assert_eq!(answer.text().await.unwrap(), rest, "{path}");
        }

        let invoked: Value = json_of(
            http.post(format!("{base}/Nightly"))
                .header(INVOCATION_ID_HEADER, "inv-1")
                .body("{}"),
        )
        .await;
        assert_eq!(
            invoked,
            serde_json::json!({"invocation": "inv-1", "payload": "{}"})
        );
    }

    /// `with_state` hands every call a clone of the state.
    #[tokio::test]
    async fn with_state_gives_each_call_the_state() {
        let counter = Arc::new(std::sync::atomic::AtomicU32::new(0));
        let api = DomainApi::new().post(
            "Count",
            "Count",
            with_state(
                &counter,
                |counter: Arc<std::sync::atomic::AtomicU32>, _request| async move {
                    let n = counter.fetch_add(1, std::sync::atomic::Ordering::SeqCst) + 1;
                    Reply::ok(&n)
                },
            ),
        );
        let base = serve(app_functions(app(), vec![api]).unwrap()).await;
        let http = reqwest::Client::new();
        for expected in 1..=2u32 {
            let n: u32 = json_of(http.post(format!("{base}/api/Count"))).await;
            assert_eq!(n, expected);
        }
    }

    /// The query helpers answer as the library's own routes do: the problem names the
    /// parameter, and nothing past the first refusal is read.
    #[test]
    fn query_parameters_are_read_and_refused_naming_them() {
        let request = Request::default().with_query([
            ("PageSize", "12"),
            ("inOverdraft", " TRUE "),
            ("asOf", "2024-05-01T10:00:00 02:00"),
        ]);
        request
            .only_known_params(&["pageSize", "inOverdraft", "asOf"])
            .unwrap();
        assert_eq!(request.u64_param("pageSize").unwrap(), Some(12));
        assert_eq!(request.u64_param("absent").unwrap(), None);
        assert_eq!(request.bool_param("inOverdraft").unwrap(), Some(true));
        assert_eq!(
            request.as_of_params().unwrap(),
            AsOf::Time(time::macros::datetime!(2024-05-01 08:00:00 UTC))
        );
        let slug_and_parameter = |problem: Problem| {
            let body = serde_json::to_value(&problem).unwrap();
            assert_eq!(problem.status().as_u16(), 400);
            (
                body["type"].as_str().unwrap().to_owned(),
                body["parameter"].as_str().unwrap_or_default().to_owned(),
            )
        };
        let invalid = |name: &str| {
            (
                "urn:streamfold:problem:invalid-query-parameter".to_owned(),
                name.to_owned(),
            )
        };
        assert_eq!(
            slug_and_parameter(request.only_known_params(&["pageSize"]).unwrap_err()),
            (
                "urn:streamfold:problem:unknown-query-parameter".to_owned(),
                "inOverdraft".to_owned()
            )
        );
        let twice = Request::default().with_query([("a", "1"), ("A", "2")]);
        assert_eq!(
            slug_and_parameter(twice.only_known_params(&["a"]).unwrap_err()),
            (
                "urn:streamfold:problem:duplicate-query-parameter".to_owned(),
                "A".to_owned()
            )
        );
        let bad = Request::default().with_query([
            ("n", "-1"),
            ("flag", "yes"),
            ("asOf", "yesterday"),
            ("asOfSequence", "1"),
        ]);
        assert_eq!(
            slug_and_parameter(bad.u64_param("n").unwrap_err()),
            invalid("n")
        );
        assert_eq!(
            slug_and_parameter(bad.bool_param("flag").unwrap_err()),
            invalid("flag")
        );
        assert_eq!(
            slug_and_parameter(bad.time_param("asOf").unwrap_err()),
            invalid("asOf")
        );
        let both = Request::default()
            .with_query([("asOf", "2024-05-01T10:00:00Z"), ("asOfSequence", "1")]);
        assert_eq!(both.as_of_params().unwrap_err().status().as_u16(), 400);
    }

    /// A command's context is the request's correlation id and idempotency key, the key
    /// checked first.
    #[test]
    fn a_command_context_carries_the_key_and_the_correlation_id() {
        let request = Request {
            correlation_id: "c-1".to_owned(),
            ..Request::default()
        }
        .with_header("idempotency-key", "\"k-1\"");
        let context = request.command_context().unwrap();
        assert_eq!(context.correlation_id, "c-1");
        assert_eq!(
            context.idempotency_key.as_ref().map(|k| k.as_str()),
            Some("k-1")
        );
        let bad = Request::default().with_header("idempotency-key", "k-1");
        assert_eq!(bad.command_context().unwrap_err().status().as_u16(), 400);
    }

    #[test]
    fn a_part_that_redefines_what_the_library_defines_is_refused() {
        let part: Value = serde_json::json!({
            "paths": {},
            "components": {"schemas": {"Problem": {"type": "string"}}}
        });
        assert!(matches!(
            merge_openapi([&part]),
            Err(DomainApiError::OpenApiConflict(name)) if name == "Problem"
        ));
        assert!(DomainApi::new().openapi("[]").is_err());
    }
}
