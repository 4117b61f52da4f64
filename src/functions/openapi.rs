//! The OpenAPI 3 document of every HTTP function, kept in the repository (`docs/openapi.json`,
//! checked against the function.json files by `tests/integration/openapi.rs`) and served at
//! `GET /api/openapi.json` (function folder `OpenApi`).

use warp::filters::BoxedFilter;
use warp::http::header::{HeaderValue, CONTENT_TYPE};
use warp::reply::Response;
use warp::Filter;

/// The document, compiled into the binary.
pub const DOCUMENT: &str = include_str!("../../docs/openapi.json");

/// `GET /api/openapi.json`.
pub fn routes() -> BoxedFilter<(Response,)> {
    warp::get()
        .and(warp::path!("api" / "openapi.json"))
        .map(|| {
            let mut response = Response::new(DOCUMENT.into());
            response
                .headers_mut()
                .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
            response
        })
        .boxed()
}
