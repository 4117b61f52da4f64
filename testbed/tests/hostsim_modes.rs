//! The simulator's two raw-HTTP modes against the echo-handler, as docs/host-modes.md writes
//! them down: what `enableProxyingHttpRequest` and `enableForwardingHttpRequest` each send the
//! handler (path, query, headers, the invocation id, chunked bodies), and which one host.json
//! gets when it names both.

mod common;

use std::path::Path;

use serde_json::{json, Value};
use streamfold_testbed::hostsim::app::HttpDelivery;
use streamfold_testbed::hostsim::{HostConfig, HostSim, Trigger};

use common::{client, received, stage_echo, write, WAIT};

/// An app with one catch-all HTTP function, `flags` being the customHandler flags.
fn app(flags: Value) -> tempfile::TempDir {
    let template = tempfile::tempdir().unwrap();
    let mut custom_handler = json!({
        "description": {"defaultExecutablePath": "handler", "workingDirectory": "", "arguments": []}
    });
    for (key, value) in flags.as_object().unwrap() {
        custom_handler[key] = value.clone();
    }
    write(
        &template.path().join("host.json"),
        &json!({"version": "2.0", "customHandler": custom_handler}).to_string(),
    );
    write(
        &template.path().join("Echo/function.json"),
        r#"{"bindings":[{"type":"httpTrigger","direction":"in","name":"req","methods":["get","post"],"route":"echo/{*rest}"},{"type":"http","direction":"out","name":"res"}]}"#,
    );
    stage_echo(template.path())
}

async fn start(dir: &Path) -> HostSim {
    let mut config = HostConfig::new(dir);
    config.run_timers = false;
    config.log_prefix = Some("[echo] ".into());
    HostSim::start(config).await.unwrap()
}

fn delivery(host: &HostSim) -> HttpDelivery {
    match &host.app().function("Echo").unwrap().trigger {
        Trigger::Http(http) => http.delivery,
        other => panic!("{other:?}"),
    }
}

/// A request with the headers a client might try to spoof, and a repeated one.
fn request(
    host: &HostSim,
    method: reqwest::Method,
    path_and_query: &str,
) -> reqwest::RequestBuilder {
    client()
        .request(method, format!("{}{path_and_query}", host.base_url()))
        .header("user-agent", "test-client/1")
        .header("x-azure-functions-invocationid", "spoofed")
        .header("x-forwarded-for", "6.6.6.6")
        .header("x-forwarded-host", "evil.example")
        .header("forwarded", "for=6.6.6.6")
        .header("x-multi", "one")
        .header("x-multi", "two")
}

/// A body sent chunked (no Content-Length).
fn chunked(text: &'static str) -> reqwest::Body {
    reqwest::Body::wrap_stream(futures::stream::iter([
        Ok::<_, std::io::Error>(bytes::Bytes::from_static(&text.as_bytes()[..2])),
        Ok(bytes::Bytes::from_static(&text.as_bytes()[2..])),
    ]))
}

fn header<'a>(echo: &'a Value, name: &str) -> &'a Value {
    &echo["headers"][name]
}

#[tokio::test]
async fn proxying_sends_the_raw_query_and_the_proxy_headers_and_streams_chunked_bodies() {
    // Both flags: proxying wins, as in the host's InvokeAsync.
    let dir = app(json!({"enableProxyingHttpRequest": true, "enableForwardingHttpRequest": true}));
    let host = start(dir.path()).await;
    assert_eq!(delivery(&host), HttpDelivery::Proxied);

    let response = request(
        &host,
        reqwest::Method::POST,
        "/API/Echo/a%2Fb/caf%C3%A9?x=1&x=2&Y=%41+b",
    )
    .header("content-type", "text/plain")
    .body("hello")
    .send()
    .await
    .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["x-echo"], "forwarded");
    let echo: Value = response.json().await.unwrap();
    // The path as the client wrote it, but %2F, whose `%` YARP escapes again.
    assert_eq!(echo["path"], "/API/Echo/a%252Fb/caf%C3%A9");
    // The query exactly as written.
    assert_eq!(echo["query"], "x=1&x=2&Y=%41+b");
    assert_eq!(echo["body"], "hello");
    assert_eq!(header(&echo, "content-length"), &json!(["5"]));
    assert_eq!(header(&echo, "content-type"), &json!(["text/plain"]));
    // The handler's own address as Host; the client's in X-Forwarded-Host.
    assert_eq!(
        header(&echo, "host"),
        &json!([format!("127.0.0.1:{}", host.handler_port())])
    );
    assert_eq!(
        header(&echo, "x-forwarded-host"),
        &json!([format!("127.0.0.1:{}", host.port())])
    );
    assert_eq!(header(&echo, "x-forwarded-for"), &json!(["127.0.0.1"]));
    assert_eq!(header(&echo, "x-forwarded-proto"), &json!(["http"]));
    assert!(echo["headers"].get("forwarded").is_none());
    assert_eq!(header(&echo, "x-multi"), &json!(["one, two"]));
    // The User-Agent untouched; the host's headers replace a client's.
    assert_eq!(header(&echo, "user-agent"), &json!(["test-client/1"]));
    assert_eq!(
        header(&echo, "x-azure-functions-hostversion"),
        &json!(["4.0.0.0"])
    );
    let records = host.wait_for_invocations("Echo", 1, WAIT).await.unwrap();
    let id = &records[0].invocation_id;
    assert_eq!(
        header(&echo, "x-azure-functions-invocationid"),
        &json!([id])
    );
    assert_eq!(header(&echo, "x-ms-invocation-id"), &json!([id]));

    // A chunked body reaches the handler, chunked.
    let echo: Value = request(&host, reqwest::Method::POST, "/api/echo/chunks")
        .body(chunked("streamed"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(echo["body"], "streamed");
    assert_eq!(header(&echo, "transfer-encoding"), &json!(["chunked"]));
    assert!(echo["headers"].get("content-length").is_none());

    // A GET sends no body and no content headers.
    let echo: Value = request(&host, reqwest::Method::GET, "/api/echo")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(echo["query"], Value::Null);
    assert!(echo["headers"].get("content-length").is_none());
    assert!(echo["headers"].get("transfer-encoding").is_none());
}

#[tokio::test]
async fn forwarding_rebuilds_the_query_appends_the_hosts_headers_and_fails_chunked_bodies() {
    let dir = app(json!({"enableForwardingHttpRequest": true}));
    let host = start(dir.path()).await;
    assert_eq!(delivery(&host), HttpDelivery::Forwarded);

    let echo: Value = request(
        &host,
        reqwest::Method::POST,
        "/API/Echo/a%2Fb/caf%C3%A9?x=1&x=2&Y=%41+b",
    )
    .body("hello")
    .send()
    .await
    .unwrap()
    .json()
    .await
    .unwrap();
    assert_eq!(echo["path"], "/API/Echo/a%2Fb/caf%C3%A9");
    assert_eq!(echo["query"], "x=1%2C2&Y=A%20b");
    assert_eq!(echo["body"], "hello");
    // The client's Host and forwarding headers go through untouched.
    assert_eq!(
        header(&echo, "host"),
        &json!([format!("127.0.0.1:{}", host.port())])
    );
    assert_eq!(header(&echo, "x-forwarded-for"), &json!(["6.6.6.6"]));
    assert_eq!(header(&echo, "x-forwarded-host"), &json!(["evil.example"]));
    assert!(echo["headers"].get("x-ms-invocation-id").is_none());
    assert_eq!(header(&echo, "x-multi"), &json!(["one, two"]));
    assert_eq!(
        header(&echo, "user-agent"),
        &json!(["test-client/1 Azure-Functions-Host/4.0.0.0"])
    );
    // The host's invocation id after the client's, on one line.
    let records = host.wait_for_invocations("Echo", 1, WAIT).await.unwrap();
    let id = &records[0].invocation_id;
    assert_eq!(
        header(&echo, "x-azure-functions-invocationid"),
        &json!([format!("spoofed, {id}")])
    );

    // A chunked request fails in the host: 500, the handler never sees it.
    let response = request(&host, reqwest::Method::POST, "/api/echo/chunks")
        .body(chunked("streamed"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 500);
    let records = host.wait_for_invocations("Echo", 2, WAIT).await.unwrap();
    assert!(!records[1].succeeded);
    assert!(records[1]
        .error
        .as_deref()
        .unwrap()
        .contains("Transfer-Encoding: chunked"));
    assert!(received(&host)
        .await
        .iter()
        .all(|r| r["path"] != "/api/echo/chunks"));
}

#[tokio::test]
async fn neither_flag_means_the_json_payload() {
    let dir = app(json!({}));
    let host = start(dir.path()).await;
    assert_eq!(delivery(&host), HttpDelivery::Payload);
    let response = client()
        .get(format!("{}/api/echo/x", host.base_url()))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["x-echo"], "payload");
}
