//! The handler layer: the Azure Functions custom-handler protocol over HTTP, served by warp.
//!
//! This is the only part of the library that knows an HTTP framework. It provides the filters
//! every function shares (bounded JSON bodies, decoded path keys, correlation ids), the
//! generic event-stream API, the JSON invocation payload of non-HTTP triggers, the route table
//! every function declares its route in ([`routing`]: routes matched as the host matches them,
//! 404 and 405 decided there), and [`serve`], which adds request tracing with the host's
//! invocation id, the one [`problem::recover`], and turns panics into 500 problems.

pub mod command;
pub mod domain;
pub mod erase;
pub mod filters;
pub mod idempotency;
pub mod invocation;
pub mod problem;
pub mod projections;
pub mod recent;
pub mod routing;
pub mod server;
pub mod streams;
pub mod sweep;
pub mod webhook;

pub use command::CommandContext;
pub use domain::{app_functions, with_state, DomainApi, DomainApiError, Reply, Request};
pub use problem::{Problem, PROBLEM_CONTENT_TYPE};
pub use routing::{Functions, RouteTable};
pub use server::serve;

/// Largest request body accepted (an append of events is bounded by storage limits well below).
pub const MAX_BODY_BYTES: u64 = 5 * 1024 * 1024;

/// Largest oversized body read to its end (and dropped) before the 413 is sent. Answering
/// while the sender is still writing makes the connection close with unread data, which resets
/// it: the Functions host then sees a broken connection instead of our 413 and answers 500.
/// Draining avoids that; the bound is the host's own default request limit
/// (`FUNCTIONS_REQUEST_BODY_SIZE_LIMIT`, 100 MiB), so anything the host forwards is drained,
/// over loopback. Beyond it the connection is simply closed.
pub const MAX_DRAINED_BODY_BYTES: u64 = 100 * 1024 * 1024;

/// Every generic function of the library and the library's own OpenAPI document, with their
/// routes: the functions of an app that registers no domain (see [`app_functions`]).
pub fn routes(app: std::sync::Arc<crate::app::App>) -> Functions {
    library_functions(app).or(domain::openapi_functions(domain::LIBRARY_OPENAPI.into()))
}

/// Every generic function of the library (the event-stream and projection API, the Event Grid
/// entry points of the read-model projector, the notification sweep and its dead letters, the
/// log of recently received notifications, and the catch-all `NotFound` that has the host forward unknown paths), with their routes; the
/// OpenAPI document is added by [`app_functions`].
pub(crate) fn library_functions(app: std::sync::Arc<crate::app::App>) -> Functions {
    use warp::http::Method;
    use warp::Filter;
    let table = RouteTable::new()
        .http(
            "AppendEvents",
            &[Method::POST],
            "streams/{domain}/{entity}/{instance}",
        )
        .http(
            "ReadStream",
            &[Method::GET],
            "streams/{domain}/{entity}/{instance}",
        )
        .http(
            erase::DELETE_STREAM_FUNCTION,
            &[Method::DELETE],
            erase::DELETE_STREAM_ROUTE,
        )
        .http("ListStreams", &[Method::GET], "streams/{domain}/{entity}")
        .http(
            "RunProjection",
            &[Method::GET],
            "projections/{domain}/{entity}/{instance}/{projection}",
        )
        .http(
            "EventGridWebhook",
            &[Method::POST, Method::OPTIONS],
            webhook::WEBHOOK_ROUTE,
        )
        .http(
            sweep::DEAD_LETTERS_FUNCTION,
            &[Method::GET],
            sweep::DEAD_LETTERS_ROUTE,
        )
        .http(
            sweep::REDRIVE_FUNCTION,
            &[Method::POST],
            sweep::REDRIVE_ROUTE,
        )
        .http(
            recent::RECENT_FUNCTION,
            &[Method::GET],
            recent::RECENT_ROUTE,
        )
        .invocation(webhook::PROJECTOR_FUNCTION)
        .invocation(sweep::SWEEP_FUNCTION)
        .fallback(
            "NotFound",
            &[
                Method::GET,
                Method::POST,
                Method::PUT,
                Method::PATCH,
                Method::DELETE,
                Method::HEAD,
                Method::OPTIONS,
            ],
            "{*path}",
        );
    let app_for_erase = app.clone();
    let filter = streams::routes(app.clone())
        .or(projections::routes(app.clone()))
        .unify()
        .or(webhook::routes(app.clone()))
        .unify()
        .or(sweep::routes(app.clone()))
        .unify()
        .or(recent::routes(app.clone()))
        .unify()
        .or(erase::routes(app_for_erase))
        .unify()
        .boxed();
    Functions::new(table, filter)
}

/// The list of the library's function folders that `scripts/assemble.sh --functions` packages
/// with a domain's (`src/functions/library-functions.txt`, one name a line, `#` comments).
pub const LIBRARY_FUNCTIONS_LIST: &str = "src/functions/library-functions.txt";

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;
    use std::sync::Arc;

    use super::routing::RouteKind;
    use crate::app::App;
    use crate::config::Settings;

    /// The listed folders are exactly the library's functions, each with its function.json, so
    /// an app packaged from the list with its domain's folders has every function it serves.
    #[test]
    fn the_library_functions_list_is_the_library_route_table() {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
        let text = std::fs::read_to_string(root.join(super::LIBRARY_FUNCTIONS_LIST)).unwrap();
        let listed: BTreeSet<String> = text
            .lines()
            .map(str::trim)
            .filter(|line| !line.is_empty() && !line.starts_with('#'))
            .map(str::to_owned)
            .collect();
        let app = Arc::new(App::in_memory(Settings::from_pairs(Vec::new()).unwrap()));
        let functions = super::routes(app);
        let served: BTreeSet<String> = functions
            .table()
            .unwrap()
            .routes()
            .iter()
            .filter(|route| route.kind() != RouteKind::Readiness)
            .map(|route| route.function().to_owned())
            .collect();
        assert_eq!(listed, served);
        for name in &listed {
            assert!(
                root.join("functions")
                    .join(name)
                    .join("function.json")
                    .is_file(),
                "functions/{name}/function.json"
            );
        }
    }
}
