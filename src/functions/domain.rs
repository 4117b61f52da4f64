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
//! segment that is not UTF-8 once decoded is 400 `invalid-path`), and the query string is
//! decoded once (400 `invalid-query` when malformed). The body is read only for the matched
//! route, bounded like every body ([`super::filters::body`]).

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

use super::filters;
use super::problem::{parse_json, reject, Problem};
use super::routing::{Functions, RouteTable, ROUTE_PREFIX};
use crate::app::App;

/// One request to a domain's function, as its handler sees it.
#[derive(Debug, Clone)]
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

    /// The first value of query parameter `name`.
    pub fn query_param(&self, name: &str) -> Option<&str> {
        filters::query_param(&self.query, name)
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
}

/// A handler's answer.
#[derive(Debug, Clone)]
pub struct Reply {
    status: u16,
    body: Vec<u8>,
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
        Ok(Self {
            status,
            body,
            headers: vec![("content-type".to_owned(), "application/json".to_owned())],
        })
    }

    /// 200 with `body` as JSON.
    pub fn ok<T: Serialize>(body: &T) -> Result<Self, Problem> {
        Self::json(200, body)
    }

    /// 201 with `body` as JSON.
    pub fn created<T: Serialize>(body: &T) -> Result<Self, Problem> {
        Self::json(201, body)
    }

    /// Adds a header (one that is not a valid header name or text value is left out).
    pub fn with_header(mut self, name: &str, value: &str) -> Self {
        self.headers.push((name.to_owned(), value.to_owned()));
        self
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

/// What a handler returns.
pub type HandlerFuture = Pin<Box<dyn Future<Output = Result<Reply, Problem>> + Send>>;

type Handler = Arc<dyn Fn(Request) -> HandlerFuture + Send + Sync>;

/// One registered route.
#[derive(Clone)]
struct DomainRoute {
    method: Method,
    /// The template's segments under the route prefix: `Some(literal)` or `None` for a
    /// parameter, with the parameter's name.
    segments: Vec<(Option<String>, String)>,
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
    filters: Option<Functions>,
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

    fn route<F, Fut>(mut self, method: Method, function: &str, template: &str, handler: F) -> Self
    where
        F: Fn(Request) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<Reply, Problem>> + Send + 'static,
    {
        self.table = self
            .table
            .http(function, std::slice::from_ref(&method), template);
        let segments = template
            .split('/')
            .filter(|s| !s.is_empty())
            .map(
                |s| match s.strip_prefix('{').and_then(|s| s.strip_suffix('}')) {
                    Some(name) => (None, name.to_owned()),
                    None => (Some(s.to_owned()), String::new()),
                },
            )
            .collect();
        let handler: Handler = Arc::new(move |request| Box::pin(handler(request)));
        self.routes.push(DomainRoute {
            method,
            segments,
            handler,
        });
        self
    }

    /// Functions the domain serves with warp filters of its own (declared in their own route
    /// table), for a domain that needs what [`Request`] does not offer.
    pub fn functions(mut self, functions: Functions) -> Self {
        self.filters = Some(match self.filters.take() {
            Some(mine) => mine.or(functions),
            None => functions,
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
        let routed = (!self.routes.is_empty()).then(|| {
            let routes = Arc::new(self.routes);
            Functions::new(self.table, routes_filter(routes))
        });
        match (routed, self.filters) {
            (Some(a), Some(b)) => Some(a.or(b)),
            (a, b) => a.or(b),
        }
    }
}

/// The route of `routes` that `method` on `path` (as the route table spelled it) names, with
/// its parameters (still percent-encoded).
fn matching(
    routes: &[DomainRoute],
    method: &Method,
    path: &str,
) -> Option<(Handler, Vec<(String, String)>)> {
    let rest = path.strip_prefix('/')?.strip_prefix(ROUTE_PREFIX)?;
    let segments: Vec<&str> = rest.split('/').filter(|s| !s.is_empty()).collect();
    routes.iter().find_map(|route| {
        if route.method != *method || route.segments.len() != segments.len() {
            return None;
        }
        let mut params = Vec::new();
        for ((literal, name), segment) in route.segments.iter().zip(&segments) {
            match literal {
                Some(literal) if literal != segment => return None,
                Some(_) => {}
                None => params.push((name.clone(), (*segment).to_owned())),
            }
        }
        Some((route.handler.clone(), params))
    })
}

fn routes_filter(routes: Arc<Vec<DomainRoute>>) -> BoxedFilter<(Response,)> {
    warp::method()
        .and(warp::path::full())
        .and_then(move |method: Method, path: warp::path::FullPath| {
            let found = matching(&routes, &method, path.as_str());
            async move { found.ok_or_else(warp::reject::not_found) }
        })
        .and(filters::query_pairs())
        .and(warp::header::headers_cloned())
        .and(filters::correlation_id())
        .and(filters::body())
        .and_then(
            |(handler, raw_params): (Handler, Vec<(String, String)>),
             query: Vec<(String, String)>,
             headers: HeaderMap,
             correlation_id: String,
             body: Bytes| async move {
                let mut params = Vec::with_capacity(raw_params.len());
                for (name, raw) in raw_params {
                    let value = percent_decode_str(&raw).decode_utf8().map_err(|_| {
                        reject(Problem::bad_request(
                            "invalid-path",
                            format!("path segment {raw:?} is not valid UTF-8 once decoded"),
                        ))
                    })?;
                    params.push((name, value.into_owned()));
                }
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
        let served: Value = reqwest::get(format!("{base}/api/openapi.json"))
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
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
        let answer: Value = http
            .post(format!("{base}/api/things/a%20b/ADD?dry=yes"))
            .body(r#"{"n": 7}"#)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
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
        let document: Value = http
            .get(format!("{base}/api/openapi.json"))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert!(document["paths"]["/api/Things/{key}/add"].is_object());
        assert!(document["paths"]["/api/streams/{domain}/{entity}"].is_object());
        assert!(document["components"]["schemas"]["Thing"].is_object());
        assert!(document["components"]["schemas"]["Problem"].is_object());
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
