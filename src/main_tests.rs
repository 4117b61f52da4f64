//! The handler's route table is the one the host builds from `functions/*/function.json` (every
//! function in one is in the other, same methods, same template), every route in it reaches a
//! filter that serves it, and paths no function has are 404, not 405.

use std::collections::BTreeSet;
use std::path::Path;
use std::sync::Arc;

use serde_json::Value;
use streamfold::app::App;
use streamfold::config::Settings;
use streamfold::functions::routing::{Route, RouteKind};
use streamfold::functions::{serve, Functions};

use super::{app_functions, bank};

/// One function as both sides describe it: name, kind (`http` or `invocation`), methods
/// (upper case, sorted), template.
type Declared = (String, &'static str, Vec<String>, String);

fn in_memory_app() -> Arc<App> {
    let mut app = App::in_memory(Settings::from_pairs(Vec::new()).expect("settings"));
    bank::register(&mut app).expect("register the bank");
    Arc::new(app)
}

fn functions() -> Functions {
    app_functions(in_memory_app()).expect("the bank's API registers")
}

fn routes() -> Vec<Route> {
    functions()
        .table()
        .expect("the app declares its routes")
        .routes()
        .to_vec()
}

fn declared(route: &Route) -> Declared {
    let kind = match route.kind() {
        RouteKind::Http | RouteKind::Fallback => "http",
        RouteKind::Invocation => "invocation",
        RouteKind::Readiness => "readiness",
    };
    let mut methods: Vec<String> = route.methods().iter().map(|m| m.to_string()).collect();
    methods.sort();
    (
        route.function().to_owned(),
        kind,
        methods,
        route.template().to_owned(),
    )
}

/// What the host reads from a function folder.
fn from_function_json(folder: &Path) -> Declared {
    let name = folder
        .file_name()
        .and_then(|n| n.to_str())
        .expect("folder name")
        .to_owned();
    let text = std::fs::read_to_string(folder.join("function.json")).expect("function.json");
    let json: Value = serde_json::from_str(&text).expect("function.json is JSON");
    let bindings = json["bindings"].as_array().expect("bindings");
    let trigger = bindings
        .iter()
        .find(|b| {
            b["type"]
                .as_str()
                .is_some_and(|t| t.to_ascii_lowercase().ends_with("trigger"))
        })
        .expect("a trigger binding");
    if trigger["type"].as_str() == Some("httpTrigger") {
        let mut methods: Vec<String> = trigger["methods"]
            .as_array()
            .expect("every HTTP function lists its methods")
            .iter()
            .map(|m| m.as_str().expect("method").to_ascii_uppercase())
            .collect();
        methods.sort();
        let route = trigger["route"].as_str().unwrap_or(&name).to_owned();
        (name, "http", methods, route)
    } else {
        (name.clone(), "invocation", vec!["POST".to_owned()], name)
    }
}

#[test]
fn the_route_table_is_the_function_json_files() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("functions");
    let mut files = BTreeSet::new();
    for entry in std::fs::read_dir(&root).expect("functions/") {
        let folder = entry.expect("entry").path();
        if folder.join("function.json").exists() {
            files.insert(from_function_json(&folder));
        }
    }
    let table: BTreeSet<Declared> = routes().iter().map(declared).collect();
    let only_in_files: Vec<_> = files.difference(&table).collect();
    let only_in_code: Vec<_> = table.difference(&files).collect();
    assert!(
        only_in_files.is_empty() && only_in_code.is_empty(),
        "function.json files and the route table differ:\n only in functions/: {only_in_files:#?}\n only in the code: {only_in_code:#?}"
    );
}

/// Serves the app (in memory) on a free loopback port; its base URL.
async fn serve_app() -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let base = format!("http://{}", listener.local_addr().expect("address"));
    tokio::spawn(serve(listener, functions(), std::future::pending()));
    base
}

struct Answer {
    status: u16,
    allow: Option<String>,
    content_type: String,
    slug: String,
}

async fn send(http: &reqwest::Client, method: &str, url: &str) -> Answer {
    let method = reqwest::Method::from_bytes(method.as_bytes()).expect("method");
    let response = http.request(method, url).send().await.expect("answer");
    let status = response.status().as_u16();
    let header = |name: &str| {
        response
            .headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    };
    let allow = header("allow");
    let content_type = header("content-type").unwrap_or_default();
    let body: Value = response.json().await.unwrap_or(Value::Null);
    let slug = body["type"]
        .as_str()
        .unwrap_or("")
        .trim_start_matches("urn:streamfold:problem:")
        .to_owned();
    Answer {
        status,
        allow,
        content_type,
        slug,
    }
}

/// A path for `route`: its literals with their case swapped (as a client of the host may write
/// them), `x` for each parameter.
fn sample_path(route: &Route) -> String {
    let mut path = String::new();
    if route.kind() == RouteKind::Http {
        path.push_str("/API");
    }
    for segment in route.template().split('/') {
        path.push('/');
        if segment.starts_with('{') {
            path.push('x');
        } else {
            path.extend(segment.chars().map(|c| {
                if c.is_ascii_uppercase() {
                    c.to_ascii_lowercase()
                } else {
                    c.to_ascii_uppercase()
                }
            }));
        }
    }
    path
}

#[tokio::test]
async fn every_route_reaches_a_filter_whatever_the_case_of_its_literals() {
    let base = serve_app().await;
    let http = reqwest::Client::new();
    let mut checked = 0;
    for route in routes() {
        if !matches!(route.kind(), RouteKind::Http | RouteKind::Invocation) {
            continue;
        }
        for method in route.methods() {
            let path = sample_path(&route);
            let answer = send(&http, method.as_str(), &format!("{base}{path}")).await;
            assert!(
                answer.status != 405 && answer.slug != "no-such-route" && answer.slug != "internal",
                "{} {method} {path}: {} {}",
                route.function(),
                answer.status,
                answer.slug
            );
            checked += 1;
        }
    }
    assert!(checked >= 18, "only {checked} routes checked");
}

#[tokio::test]
async fn unknown_paths_are_404_and_known_paths_with_another_method_405() {
    let base = serve_app().await;
    let http = reqwest::Client::new();
    for (method, path) in [
        ("GET", "/api/NoSuchFunction/1"),
        ("POST", "/api/NoSuchFunction/1"),
        ("GET", "/api/"),
        ("GET", "/api"),
        ("GET", "/api/GetBalance/X/2024-01-01/extra"),
        ("GET", "/api/GetBalance//"),
        ("POST", "/NoSuchFunction"),
        ("POST", "/api/Projector"),
    ] {
        let answer = send(&http, method, &format!("{base}{path}")).await;
        assert_eq!(
            (answer.status, answer.slug.as_str()),
            (404, "no-such-route"),
            "{method} {path}"
        );
        assert_eq!(answer.content_type, "application/problem+json");
    }
    for (method, path, allow) in [
        ("GET", "/api/Deposit/ACC-1", "POST"),
        ("GET", "/api/deposit/ACC-1", "POST"),
        ("PUT", "/api/streams/a/b/c", "DELETE, GET, POST"),
        ("GET", "/api/eventgrid", "OPTIONS, POST"),
        ("GET", "/Projector", "POST"),
        ("POST", "/", "GET"),
    ] {
        let answer = send(&http, method, &format!("{base}{path}")).await;
        assert_eq!(
            (answer.status, answer.slug.as_str()),
            (405, "method-not-allowed"),
            "{method} {path}"
        );
        assert_eq!(answer.allow.as_deref(), Some(allow), "{method} {path}");
        assert_eq!(answer.content_type, "application/problem+json");
    }
    // Readiness, and a path in another case reaching its function (the account is unknown).
    assert_eq!(send(&http, "GET", &format!("{base}/")).await.status, 200);
    let deposit = send(&http, "POST", &format!("{base}/api/deposit/ACC-1")).await;
    assert_eq!(
        deposit.status, 400,
        "an empty body is refused by Deposit itself"
    );
    let balance = send(&http, "GET", &format!("{base}/api/GETBALANCE/ACC-1/")).await;
    assert_eq!(
        (balance.status, balance.slug.as_str()),
        (404, "account-not-found")
    );
}

/// The option `main` sets is mimalloc's purge delay: the only option whose default is 1000 (ms).
#[test]
fn the_mimalloc_option_set_at_start_is_the_purge_delay() {
    if std::env::var_os("MIMALLOC_PURGE_DELAY").is_some() {
        return;
    }
    // SAFETY: reads one of mimalloc's options.
    let value = unsafe { libmimalloc_sys::mi_option_get(super::MIMALLOC_PURGE_DELAY_OPTION) };
    assert_eq!(value, 1000);
}
