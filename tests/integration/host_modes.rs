//! The app under both of the host's HTTP modes (docs/host-modes.md). The shipped host.json turns
//! both flags on, so a host that can proxy does; every other integration test runs that way.
//! Here, in the shipped mode, what only proxying allows (chunked bodies, the query as written),
//! and a smoke test with the legacy forwarding mode alone, as a host older than proxying runs
//! the app: a command, a query, a chunked body, the 404 and 405 answers, and in both modes the
//! handler logging the host's invocation id even when a client sends its own.

use crate::support;

use std::time::Duration;

use serde_json::{json, Value};
use streamfold_testbed::hostsim::app::HttpDelivery;
use streamfold_testbed::hostsim::{HostConfig, HostSim, Trigger};
use streamfold_testbed::Azurite;
use support::{assemble_app, repo_root, Client, TEST_DEFAULT_SETTINGS};

const WAIT: Duration = Duration::from_secs(20);

/// The app on a fresh Azurite; `forwarding_only` replaces the shipped flags by
/// `enableForwardingHttpRequest` alone.
struct ModeApp {
    host: HostSim,
    client: Client,
    _azurite: Azurite,
    _dir: tempfile::TempDir,
}

async fn start(forwarding_only: bool) -> ModeApp {
    let azurite = Azurite::start().await.expect("start Azurite");
    let dir = tempfile::tempdir().unwrap();
    assemble_app(dir.path());
    if forwarding_only {
        let path = dir.path().join("host.json");
        let mut host_json: Value =
            serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
        let section = host_json["customHandler"].as_object_mut().unwrap();
        section.remove("enableProxyingHttpRequest");
        section.insert("enableForwardingHttpRequest".into(), json!(true));
        std::fs::write(&path, host_json.to_string()).unwrap();
    }
    let mut config = HostConfig::new(dir.path());
    config.settings = TEST_DEFAULT_SETTINGS
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    config
        .settings
        .push(("AzureWebJobsStorage".into(), azurite.connection_string()));
    // Info, for the one line per request that carries the invocation id.
    config.settings.push(("RUST_LOG".into(), "info".into()));
    config.run_timers = false;
    let host = HostSim::start(config)
        .await
        .expect("start the host simulator");
    let client = Client::new(host.base_url());
    ModeApp {
        host,
        client,
        _azurite: azurite,
        _dir: dir,
    }
}

fn delivery(host: &HostSim, function: &str) -> HttpDelivery {
    match &host.app().function(function).unwrap().trigger {
        Trigger::Http(http) => http.delivery,
        other => panic!("{other:?}"),
    }
}

/// A JSON body sent chunked (no Content-Length).
fn chunked(body: &Value) -> reqwest::Body {
    let text = body.to_string().into_bytes();
    let (first, rest) = text.split_at(text.len() / 2);
    let chunks = [first.to_vec(), rest.to_vec()].map(Ok::<_, std::io::Error>);
    reqwest::Body::wrap_stream(futures::stream::iter(chunks))
}

async fn post_chunked(client: &Client, path: &str, body: &Value) -> reqwest::Response {
    client
        .http()
        .post(client.url(path))
        .header("content-type", "application/json")
        .body(chunked(body))
        .send()
        .await
        .unwrap()
}

/// Sends a GetBalance with a client-made invocation id and checks that the handler's lines for
/// it carry the host's id, recorded by the simulator, and never the client's.
async fn check_invocation_id(app: &ModeApp, account: &str) {
    let before = app.host.invocations().len();
    let reply = app
        .client
        .send(
            app.client
                .http()
                .get(app.client.url(&format!("/api/GetBalance/{account}")))
                .header("x-azure-functions-invocationid", "spoofed-by-client"),
        )
        .await;
    reply.ok(200);
    let records = app.host.invocations();
    let id = &records
        .get(before)
        .expect("the GetBalance invocation")
        .invocation_id;
    let mut output = Vec::new();
    for _ in 0..50 {
        output = app.host.handler_output();
        if output.iter().any(|l| l.contains(id.as_str())) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let tagged = format!("\"invocation_id\":\"{id}\"");
    assert!(
        output.iter().any(|line| line.contains(&tagged)),
        "no handler line carries {tagged}"
    );
    assert!(
        !output.iter().any(|line| line.contains("spoofed-by-client")),
        "a handler line carries the client's invocation id"
    );
}

#[test]
fn the_shipped_host_json_turns_both_flags_on() {
    let text = std::fs::read_to_string(repo_root().join("host.json")).unwrap();
    let host_json: Value = serde_json::from_str(&text).unwrap();
    let section = &host_json["customHandler"];
    assert_eq!(section["enableProxyingHttpRequest"], true);
    assert_eq!(section["enableForwardingHttpRequest"], true);
}

#[tokio::test]
async fn proxying_takes_chunked_bodies_and_the_query_as_written() {
    let app = start(false).await;
    assert_eq!(delivery(&app.host, "Deposit"), HttpDelivery::Proxied);
    let client = &app.client;

    let opened = post_chunked(
        client,
        "/api/OpenAccount/MODE-P",
        &json!({"overdraftLimit": "100.00"}),
    )
    .await;
    assert_eq!(opened.status().as_u16(), 201);
    let deposit = post_chunked(client, "/api/Deposit/MODE-P", &json!({"amount": "25.50"})).await;
    assert_eq!(deposit.status().as_u16(), 200);
    let balance = client.get("/api/GetBalance/MODE-P").await;
    let balance = balance.ok(200);
    assert_eq!(balance["balance"], "25.50");
    assert_eq!(balance["overdraftLimit"], "100.00");

    // The query as the client wrote it: the repeated parameter is seen as repeated.
    let repeated = client
        .get("/api/GetBalance/MODE-P?asOfSequence=1&asOfSequence=2")
        .await;
    repeated.problem(400);
    assert_eq!(repeated.slug(), "duplicate-query-parameter");

    // An escaped slash arrives escaped once more: the key is the literal text.
    let literal = client.post("/api/OpenAccount/a%2Fb", &json!({})).await;
    assert_eq!(literal.ok(201)["accountNumber"], "a%2Fb");

    check_invocation_id(&app, "MODE-P").await;
}

#[tokio::test]
async fn forwarding_mode_smoke() {
    let app = start(true).await;
    assert_eq!(delivery(&app.host, "Deposit"), HttpDelivery::Forwarded);
    let client = &app.client;

    // A command and a query.
    client
        .post(
            "/api/OpenAccount/MODE-F",
            &json!({"overdraftLimit": "10.00"}),
        )
        .await
        .ok(201);
    client
        .post("/api/deposit/MODE-F", &json!({"amount": "7.25"}))
        .await
        .ok(200);
    let balance = client.get("/API/GetBalance/MODE-F/").await;
    let balance = balance.ok(200);
    assert_eq!(balance["balance"], "7.25");
    assert_eq!(balance["available"], "17.25");

    // A chunked body never reaches the handler: the host fails the invocation.
    let before = app.host.invocations().len();
    let chunked = post_chunked(client, "/api/Deposit/MODE-F", &json!({"amount": "1.00"})).await;
    assert_eq!(chunked.status().as_u16(), 500);
    let failed = app
        .host
        .wait_for_invocations("Deposit", 2, WAIT)
        .await
        .unwrap();
    assert!(!failed[1].succeeded);
    assert!(app.host.invocations().len() > before);
    let balance = client.get("/api/GetBalance/MODE-F").await;
    assert_eq!(balance.ok(200)["balance"], "7.25");

    // The query rebuilt: repeated values arrive joined by a comma.
    let repeated = client
        .get("/api/GetBalance/MODE-F?asOfSequence=1&asOfSequence=2")
        .await;
    repeated.problem(400);
    assert_eq!(repeated.slug(), "invalid-query-parameter");

    // An escaped slash arrives as it came and decodes to a slash, which no key may hold.
    let slash = client.post("/api/OpenAccount/a%2Fb", &json!({})).await;
    slash.problem(400);
    assert_eq!(slash.slug(), "invalid-key");

    // 404 and 405, answered by the handler through the catch-all function.
    let unknown = client.get("/api/NoSuchFunction/1").await;
    unknown.problem(404);
    assert_eq!(unknown.slug(), "no-such-route");
    let wrong_method = client
        .send(client.http().get(client.url("/api/Deposit/MODE-F")))
        .await;
    wrong_method.problem(405);
    assert_eq!(wrong_method.slug(), "method-not-allowed");
    assert_eq!(wrong_method.headers["allow"], "POST");

    check_invocation_id(&app, "MODE-F").await;
}
