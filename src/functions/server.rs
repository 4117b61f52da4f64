//! Serving: the readiness answer, routes as the host routes them, panics turned into answers,
//! request tracing with the Functions host's invocation id, one access-log line per request,
//! and graceful shutdown.
//!
//! Connections are served by hyper (as warp's own server does), through a small service in
//! front of warp's, because warp's server neither routes as the host does nor survives a panic:
//! - the path is resolved against the [`RouteTable`] first: a path no function has is 404
//!   `no-such-route`, a function's path with another method 405 with `Allow`, and otherwise the
//!   literal segments are spelled as the template spells them before warp's filters see it
//!   (see [`super::routing`]);
//! - whatever panics while a request is handled answers 500 `internal` (problem+json, with the
//!   host's invocation id as `invocationId`) and is logged once, at error level, with the path
//!   and where it panicked; the connection and the process carry on. This needs unwinding
//!   panics (the default; the release profile does not set `panic = "abort"`).
//!
//! Every request runs in a `request` span (method, path, the host's invocation id), so each log
//! line of an invocation carries them; when it is answered, whatever answered it, one line
//! records its status and duration (`warn` for a server error, `info` otherwise).
//!
//! The host polls `GET /` until it gets any answer, with a 30 s limit, so [`serve`] answers it
//! from the moment the listener is bound: no storage I/O happens before that.

use std::any::Any;
use std::cell::{Cell, RefCell};
use std::convert::Infallible;
use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::sync::{Arc, Once};
use std::time::{Duration, Instant};

use futures::FutureExt;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::TcpListener;
use tower_service::Service;
use tracing::Instrument;
use warp::filters::BoxedFilter;
use warp::http::uri::PathAndQuery;
use warp::http::{HeaderMap, Request, StatusCode, Uri};
use warp::reply::Response;
use warp::{Filter, Reply};

use super::filters::{INVOCATION_ID_HEADER, PROXY_INVOCATION_ID_HEADER};
use super::problem::{method_not_allowed, no_such_route, recover, Problem};
use super::routing::{Functions, Resolution, RouteTable};

/// How long the accept loop pauses after an error that is not about one connection (out of
/// file descriptors, say), so it does not spin.
const ACCEPT_ERROR_PAUSE: Duration = Duration::from_secs(1);

/// Serves `functions` (plus `GET /` for readiness) on `listener` until `shutdown` completes;
/// then stops accepting and lets requests in flight finish.
pub async fn serve(
    listener: TcpListener,
    functions: impl Into<Functions>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) {
    install_panic_hook();
    let (table, routes) = functions.into().into_parts();
    let readiness = warp::get()
        .and(warp::path::end())
        .map(|| warp::reply::json(&serde_json::json!({"status": "ready"})).into_response());
    let filter: BoxedFilter<(Response,)> = readiness
        .or(routes)
        .unify()
        .recover(recover)
        .unify()
        .boxed();
    let handler = Arc::new(Handler {
        table: table.map(RouteTable::readiness),
        filter,
    });

    let graceful = GracefulShutdown::new();
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            () = &mut shutdown => break,
        };
        let stream = match accepted {
            Ok((stream, _peer)) => stream,
            Err(error) => {
                if !is_connection_error(&error) {
                    tracing::error!(%error, "accepting a connection failed");
                    tokio::time::sleep(ACCEPT_ERROR_PAUSE).await;
                }
                continue;
            }
        };
        let handler = handler.clone();
        let service = hyper::service::service_fn(move |request| {
            let handler = handler.clone();
            async move { Ok::<_, Infallible>(handler.answer(request).await) }
        });
        let watcher = graceful.watcher();
        tokio::spawn(async move {
            let builder = auto::Builder::new(TokioExecutor::new());
            let connection = builder.serve_connection(TokioIo::new(stream), service);
            if let Err(error) = watcher.watch(connection).await {
                // A client that goes away mid-request, mostly: nothing of ours failed.
                tracing::debug!(%error, "connection ended with an error");
            }
        });
    }
    drop(listener);
    graceful.shutdown().await;
}

/// The host's invocation id of a request, whichever way the host delivered it
/// (docs/host-modes.md): forwarding appends its id after any value a client sent, on one line
/// (`client, host`), so the last value is the host's; proxying replaces the header, and one
/// revision of the proxying code set only `x-ms-invocation-id`, the fallback. Empty when
/// neither is there (a direct caller).
fn invocation_id(headers: &HeaderMap) -> String {
    [INVOCATION_ID_HEADER, PROXY_INVOCATION_ID_HEADER]
        .iter()
        .find_map(|name| {
            let line = headers.get_all(*name).iter().next_back()?.to_str().ok()?;
            let last = line.rsplit(',').next().unwrap_or(line).trim();
            (!last.is_empty()).then(|| last.to_owned())
        })
        .unwrap_or_default()
}

/// What every connection shares.
struct Handler {
    /// `None` when the functions declared no routes (a bare filter): warp decides alone.
    table: Option<RouteTable>,
    /// Readiness, the functions' filters and the one `recover`.
    filter: BoxedFilter<(Response,)>,
}

impl Handler {
    /// The answer to one request, in its span, with its access-log line.
    async fn answer(&self, mut request: Request<Incoming>) -> Response {
        let started = Instant::now();
        let invocation_id = invocation_id(request.headers());
        let path = request.uri().path().to_owned();
        let span = tracing::info_span!(
            "request",
            method = %request.method(),
            path = %path,
            invocation_id = %invocation_id,
        );
        async move {
            let response = match self.route(&mut request) {
                None => self.call(request, &path, &invocation_id).await,
                Some(refusal) => refusal,
            };
            access_log(response.status(), started.elapsed());
            response
        }
        .instrument(span)
        .await
    }

    /// Rewrites the request's path as warp should see it, or answers it when no function has
    /// its route (404) or accepts its method (405).
    fn route(&self, request: &mut Request<Incoming>) -> Option<Response> {
        let table = self.table.as_ref()?;
        match table.resolve(request.method(), request.uri().path()) {
            Resolution::Found { path, .. } => {
                if path != request.uri().path() {
                    if let Some(uri) = with_path(request.uri(), &path) {
                        *request.uri_mut() = uri;
                    }
                }
                None
            }
            Resolution::WrongMethod { allow } => Some(method_not_allowed(&allow)),
            Resolution::NotFound => Some(no_such_route().into_response()),
        }
    }

    /// warp's answer, or a 500 problem when handling the request panicked.
    async fn call(&self, request: Request<Incoming>, path: &str, invocation_id: &str) -> Response {
        let mut service = warp::service(self.filter.clone());
        let mut handling = Box::pin(async move { service.call(request).await });
        let guarded = std::future::poll_fn(move |cx| {
            let _capturing = CapturePanics::enter();
            handling.as_mut().poll(cx)
        });
        match AssertUnwindSafe(guarded).catch_unwind().await {
            Ok(Ok(response)) => response,
            Ok(Err(never)) => match never {},
            Err(payload) => {
                let location = PANIC_LOCATION
                    .try_with(|cell| cell.borrow_mut().take())
                    .ok()
                    .flatten()
                    .unwrap_or_default();
                tracing::error!(
                    path,
                    invocation_id,
                    panic = panic_message(payload.as_ref()),
                    location,
                    "handling the request panicked"
                );
                let mut problem = Problem::new(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "internal",
                    "an unexpected error occurred while handling the request; it has been logged",
                );
                if !invocation_id.is_empty() {
                    problem = problem.with("invocationId", invocation_id);
                }
                problem.into_response()
            }
        }
    }
}

/// `uri` with another path (its query kept).
fn with_path(uri: &Uri, path: &str) -> Option<Uri> {
    let path_and_query = match uri.query() {
        Some(query) => format!("{path}?{query}"),
        None => path.to_owned(),
    };
    let mut parts = uri.clone().into_parts();
    parts.path_and_query = Some(PathAndQuery::try_from(path_and_query).ok()?);
    Uri::from_parts(parts).ok()
}

/// The message a panic was raised with (`panic!("...")` gives a `&str` or a `String`).
fn panic_message(payload: &(dyn Any + Send)) -> &str {
    payload
        .downcast_ref::<&str>()
        .copied()
        .or_else(|| payload.downcast_ref::<String>().map(String::as_str))
        .unwrap_or("(not a string)")
}

thread_local! {
    /// Set while a request's handling is polled on this thread: its panics are answered and
    /// logged by [`Handler::call`], so the panic hook only notes where they happened.
    static CAPTURING: Cell<bool> = const { Cell::new(false) };
    /// Where the last captured panic on this thread happened.
    static PANIC_LOCATION: RefCell<Option<String>> = const { RefCell::new(None) };
}

/// Marks this thread as polling a request's handling, until dropped (also while unwinding).
struct CapturePanics {
    was: bool,
}

impl CapturePanics {
    fn enter() -> Self {
        let was = CAPTURING.try_with(|c| c.replace(true)).unwrap_or(false);
        Self { was }
    }
}

impl Drop for CapturePanics {
    fn drop(&mut self) {
        let _ = CAPTURING.try_with(|c| c.set(self.was));
    }
}

/// Installs, once per process, a panic hook that leaves the report of a panic inside a request
/// to [`Handler::call`] (one log line, with the request's path and invocation id, instead of
/// the default hook's text on stderr as well) and hands every other panic to the hook that was
/// there before.
fn install_panic_hook() {
    static INSTALL: Once = Once::new();
    INSTALL.call_once(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            if CAPTURING.try_with(Cell::get).unwrap_or(false) {
                let location = info.location().map(ToString::to_string);
                let _ = PANIC_LOCATION.try_with(|cell| *cell.borrow_mut() = location);
            } else {
                previous(info);
            }
        }));
    });
}

/// Errors of one connection, reported while accepting it: ignored.
fn is_connection_error(error: &std::io::Error) -> bool {
    matches!(
        error.kind(),
        std::io::ErrorKind::ConnectionRefused
            | std::io::ErrorKind::ConnectionAborted
            | std::io::ErrorKind::ConnectionReset
    )
}

/// The one line logged when a request is answered (inside its `request` span).
fn access_log(status: StatusCode, elapsed: Duration) {
    let elapsed_ms = elapsed.as_micros() as f64 / 1000.0;
    let status_code = status.as_u16();
    if status.is_server_error() {
        tracing::warn!(status = status_code, elapsed_ms, "answered");
    } else {
        tracing::info!(status = status_code, elapsed_ms, "answered");
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use serde_json::Value;
    use warp::http::Method;

    use super::*;

    #[test]
    fn the_invocation_id_is_the_hosts_in_either_mode() {
        let headers = |pairs: &[(&'static str, &'static str)]| {
            let mut map = HeaderMap::new();
            for (name, value) in pairs {
                map.append(*name, value.parse().unwrap());
            }
            map
        };
        // Forwarding: a client's value first, the host's appended on the same line.
        let forwarded = headers(&[(INVOCATION_ID_HEADER, "spoofed, 5f0c-real")]);
        assert_eq!(invocation_id(&forwarded), "5f0c-real");
        // Proxying: the host's value alone, on both headers or only the correlation one.
        let proxied = headers(&[
            (INVOCATION_ID_HEADER, "5f0c-real"),
            (PROXY_INVOCATION_ID_HEADER, "5f0c-real"),
        ]);
        assert_eq!(invocation_id(&proxied), "5f0c-real");
        let correlation_only = headers(&[(PROXY_INVOCATION_ID_HEADER, "5f0c-real")]);
        assert_eq!(invocation_id(&correlation_only), "5f0c-real");
        // Two lines (a direct caller): the last one.
        let lines = headers(&[(INVOCATION_ID_HEADER, "a"), (INVOCATION_ID_HEADER, "b")]);
        assert_eq!(invocation_id(&lines), "b");
        assert_eq!(invocation_id(&HeaderMap::new()), "");
    }

    /// Log lines written while a test runs (JSON, one per line).
    #[derive(Clone, Default)]
    struct Captured(Arc<Mutex<Vec<u8>>>);

    impl std::io::Write for Captured {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    impl Captured {
        fn lines(&self) -> Vec<Value> {
            String::from_utf8_lossy(&self.0.lock().unwrap())
                .lines()
                .map(|line| serde_json::from_str(line).unwrap())
                .collect()
        }
    }

    /// Routes that exist only here: two that panic (while the filter runs, and after the
    /// handler has awaited) and one that answers.
    fn panicking_functions() -> Functions {
        let now = warp::path!("api" / "boom").map(|| -> Response { panic!("boom now") });
        let later = warp::path!("api" / "later").then(|| async {
            tokio::task::yield_now().await;
            std::hint::black_box(None::<Response>).expect("boom later")
        });
        let fine = warp::path!("api" / "fine").map(|| "fine".into_response());
        let table = RouteTable::new()
            .http("Boom", &[Method::GET], "boom")
            .http("Later", &[Method::GET], "later")
            .http("Fine", &[Method::GET], "fine");
        let filter = warp::get()
            .and(now.or(later).unify().or(fine).unify())
            .boxed();
        Functions::new(table, filter)
    }

    #[tokio::test]
    async fn a_panic_answers_500_with_the_invocation_id_is_logged_once_and_serving_goes_on() {
        let captured = Captured::default();
        let writer = captured.clone();
        let subscriber = tracing_subscriber::fmt()
            .json()
            .with_current_span(true)
            .with_writer(move || writer.clone())
            .finish();
        let _logging = tracing::subscriber::set_default(subscriber);

        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(serve(
            listener,
            panicking_functions(),
            std::future::pending(),
        ));
        // One connection for everything: a panic must not close it either.
        let http = reqwest::Client::builder()
            .pool_max_idle_per_host(1)
            .build()
            .unwrap();

        for (path, message) in [("/api/BOOM", "boom now"), ("/api/later", "boom later")] {
            let response = http
                .get(format!("{base}{path}"))
                .header(INVOCATION_ID_HEADER, "inv-42")
                .send()
                .await
                .unwrap();
            assert_eq!(response.status(), 500, "{path}");
            assert_eq!(
                response.headers()["content-type"],
                "application/problem+json"
            );
            let body: Value = response.json().await.unwrap();
            assert_eq!(body["type"], "urn:streamfold:problem:internal");
            assert_eq!(body["status"], 500);
            assert_eq!(body["invocationId"], "inv-42");
            assert!(
                !body.to_string().contains(message),
                "the panic's message stays in the log: {body}"
            );

            let fine = http.get(format!("{base}/api/fine")).send().await.unwrap();
            assert_eq!(fine.status(), 200, "served after the panic at {path}");
            assert_eq!(fine.text().await.unwrap(), "fine");

            let lines = captured.lines();
            let errors: Vec<&Value> = lines
                .iter()
                .filter(|l| l["level"] == "ERROR" && l["fields"]["panic"] == message)
                .collect();
            assert_eq!(errors.len(), 1, "logged once: {lines:#?}");
            let error = errors[0];
            assert_eq!(error["fields"]["path"], path);
            assert_eq!(error["fields"]["invocation_id"], "inv-42");
            assert!(error["fields"]["location"]
                .as_str()
                .unwrap()
                .contains("server.rs"));
            let answered: Vec<&Value> = lines
                .iter()
                .filter(|l| l["fields"]["message"] == "answered" && l["span"]["path"] == path)
                .collect();
            assert_eq!(answered.len(), 1, "one access-log line: {lines:#?}");
            assert_eq!(answered[0]["fields"]["status"], 500);
            assert_eq!(answered[0]["level"], "WARN");
        }
    }

    #[tokio::test]
    async fn shutdown_stops_accepting_and_lets_the_request_in_flight_finish() {
        let (started_tx, started_rx) = tokio::sync::oneshot::channel::<()>();
        let (release_tx, release_rx) = tokio::sync::oneshot::channel::<()>();
        let started_tx = Arc::new(Mutex::new(Some(started_tx)));
        let release_rx = Arc::new(tokio::sync::Mutex::new(Some(release_rx)));
        let slow = warp::path!("api" / "slow").then(move || {
            let started = started_tx.lock().unwrap().take();
            let release = release_rx.clone();
            async move {
                if let Some(started) = started {
                    let _ = started.send(());
                }
                if let Some(release) = release.lock().await.take() {
                    let _ = release.await;
                }
                "done".into_response()
            }
        });
        let functions = Functions::new(
            RouteTable::new().http("Slow", &[Method::GET], "slow"),
            slow.boxed(),
        );
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let server = tokio::spawn(serve(listener, functions, async move {
            let _ = stop_rx.await;
        }));
        let request = tokio::spawn(reqwest::get(format!("{base}/api/slow")));
        started_rx.await.unwrap();
        stop_tx.send(()).unwrap();
        release_tx.send(()).unwrap();
        let response = request.await.unwrap().unwrap();
        assert_eq!(response.text().await.unwrap(), "done");
        server.await.unwrap();
        assert!(
            reqwest::get(format!("{base}/")).await.is_err(),
            "no longer accepting"
        );
    }
}
