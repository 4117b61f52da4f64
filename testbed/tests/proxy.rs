//! The counting proxy in front of a small upstream that reports what it received, and in
//! front of real Azurite.

mod common;

use std::sync::{Arc, Mutex};

use bytes::Bytes;
use serde_json::{json, Value};
use streamfold_testbed::proxy::Fault;
use streamfold_testbed::raw::{self, RawRequest};
use streamfold_testbed::{Azurite, CountingProxy};
use warp::http::{HeaderMap, Method, StatusCode};
use warp::Filter;

use common::client;

/// Bytes of every upstream GET body.
const BODY_SIZE: usize = 1000;

/// An upstream on a free port: GET answers BODY_SIZE bytes; HEAD answers Content-Length
/// BODY_SIZE and no body; anything else answers what it received as JSON.
async fn upstream() -> u16 {
    let routes = raw::request().map(|request: RawRequest| {
        if request.method == Method::GET {
            let mut headers = HeaderMap::new();
            headers.insert("x-upstream", "1".parse().unwrap());
            return raw::response(StatusCode::OK, headers, vec![b'x'; BODY_SIZE]);
        }
        if request.method == Method::HEAD {
            let mut headers = HeaderMap::new();
            headers.insert("content-length", BODY_SIZE.to_string().parse().unwrap());
            return raw::response(StatusCode::OK, headers, Bytes::new());
        }
        let headers: serde_json::Map<String, Value> = request
            .headers
            .iter()
            .map(|(k, v)| (k.to_string(), json!(v.to_str().unwrap())))
            .collect();
        let echo = json!({
            "method": request.method.as_str(),
            "path": request.path,
            "query": request.query,
            "headers": headers,
            "body": String::from_utf8_lossy(&request.body),
        });
        raw::response(StatusCode::CREATED, HeaderMap::new(), echo.to_string())
    });
    raw::serve_on_free_port(routes).await.unwrap().port()
}

#[tokio::test]
async fn forwards_unchanged_and_counts() {
    let port = upstream().await;
    let proxy = CountingProxy::start(&format!("http://127.0.0.1:{port}/ignored/path"))
        .await
        .unwrap();
    let response = client()
        .put(format!(
            "{}/devstoreaccount1/Tables('t')?comp=x&%24filter=a%20eq%20%27b%27",
            proxy.url()
        ))
        .header("x-ms-date", "Wed, 01 May 2024 10:00:00 GMT")
        .header("authorization", "SharedKey devstoreaccount1:sig")
        .body("payload")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 201);
    let echo: Value = response.json().await.unwrap();
    assert_eq!(echo["method"], "PUT");
    assert_eq!(echo["path"], "/devstoreaccount1/Tables('t')");
    assert_eq!(echo["query"], "comp=x&%24filter=a%20eq%20%27b%27");
    assert_eq!(echo["body"], "payload");
    assert_eq!(
        echo["headers"]["x-ms-date"],
        "Wed, 01 May 2024 10:00:00 GMT"
    );
    assert_eq!(
        echo["headers"]["authorization"],
        "SharedKey devstoreaccount1:sig"
    );
    assert_eq!(echo["headers"]["content-length"], "7");
    // The upstream sees its own address as Host, not the proxy's.
    assert_eq!(echo["headers"]["host"], format!("127.0.0.1:{port}"));
    assert_eq!(proxy.requests(), 1);

    let response = client()
        .get(format!("{}/devstoreaccount1/c/b", proxy.url()))
        .send()
        .await
        .unwrap();
    assert_eq!(response.headers()["x-upstream"], "1");
    assert_eq!(response.bytes().await.unwrap().len(), BODY_SIZE);
    let head = client()
        .head(format!("{}/devstoreaccount1/c/b", proxy.url()))
        .send()
        .await
        .unwrap();
    assert_eq!(
        head.headers()["content-length"],
        BODY_SIZE.to_string().as_str()
    );

    assert_eq!(proxy.requests(), 3);
    assert_eq!(
        proxy.log(),
        [
            "PUT /devstoreaccount1/Tables('t')?comp=x&%24filter=a%20eq%20%27b%27",
            "GET /devstoreaccount1/c/b",
            "HEAD /devstoreaccount1/c/b",
        ]
    );
    // Only response bodies count: the PUT's echo, the GET's body, nothing for HEAD.
    let entries = proxy.entries();
    assert_eq!(entries[1].response_bytes, BODY_SIZE as u64);
    assert_eq!(entries[2].response_bytes, 0);
    assert_eq!(
        proxy.bytes_received_from_upstream(),
        entries[0].response_bytes + BODY_SIZE as u64
    );

    proxy.reset();
    assert_eq!(proxy.requests(), 0);
    assert_eq!(proxy.bytes_received_from_upstream(), 0);
    assert!(proxy.log().is_empty());
    client()
        .get(format!("{}/x", proxy.url()))
        .send()
        .await
        .unwrap();
    assert_eq!(proxy.requests(), 1);
    assert_eq!(proxy.bytes_received_from_upstream(), BODY_SIZE as u64);
}

#[tokio::test]
async fn an_unreachable_upstream_gives_502() {
    let port = streamfold_testbed::free_port().unwrap();
    let proxy = CountingProxy::start(&format!("http://127.0.0.1:{port}"))
        .await
        .unwrap();
    let response = client()
        .get(format!("{}/devstoreaccount1", proxy.url()))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 502);
    assert_eq!(proxy.requests(), 1);
    assert_eq!(proxy.bytes_received_from_upstream(), 0);
}

#[tokio::test]
async fn passes_azurite_answers_through() {
    let azurite = Azurite::start().await.unwrap();
    let proxy = CountingProxy::start(&azurite.blob_endpoint())
        .await
        .unwrap();
    // An unsigned request: Azurite refuses it, and the refusal comes back unchanged.
    let direct = client()
        .get(format!("{}?comp=list", azurite.blob_endpoint()))
        .send()
        .await
        .unwrap();
    let direct_status = direct.status();
    let direct_body = direct.text().await.unwrap();
    let proxied = client()
        .get(format!("{}/devstoreaccount1?comp=list", proxy.url()))
        .send()
        .await
        .unwrap();
    assert_eq!(proxied.status(), direct_status);
    let proxied_body = proxied.text().await.unwrap();
    // Azurite's error bodies carry a request id and time: compare the error code.
    let code = |body: &str| {
        body.split("<Code>")
            .nth(1)
            .and_then(|rest| rest.split("</Code>").next())
            .map(str::to_string)
    };
    assert!(code(&proxied_body).is_some(), "{proxied_body}");
    assert_eq!(code(&proxied_body), code(&direct_body));
    assert_eq!(proxy.requests(), 1);
    assert_eq!(
        proxy.bytes_received_from_upstream(),
        proxied_body.len() as u64
    );
}

/// An upstream that answers 201 to everything and records the path of each request it got.
async fn recording_upstream() -> (u16, Arc<Mutex<Vec<String>>>) {
    let received = Arc::new(Mutex::new(Vec::new()));
    let record = received.clone();
    let routes = raw::request().map(move |request: RawRequest| {
        record.lock().unwrap().push(request.path);
        raw::response(StatusCode::CREATED, HeaderMap::new(), "done")
    });
    let port = raw::serve_on_free_port(routes).await.unwrap().port();
    (port, received)
}

/// Injected faults, each for the next n matching requests: one answered by the proxy (never
/// forwarded), one whose answer is replaced by an error after the upstream acted, one whose
/// connection is closed after the upstream acted (the client gets no answer at all).
#[tokio::test]
async fn faults_refuse_or_lose_the_answer_for_the_next_n_requests() {
    let (port, received) = recording_upstream().await;
    let proxy = CountingProxy::start(&format!("http://127.0.0.1:{port}"))
        .await
        .unwrap();
    proxy.inject(Fault::new("/refused", 400, "OutOfRangeInput").times(1));
    proxy.inject(Fault::answer_lost("/lost", 500, "InternalError").times(2));
    proxy.inject(Fault::connection_lost("/dropped").times(1));
    let post = |path: &str| {
        client()
            .post(format!("{}{path}", proxy.url()))
            .body("x")
            .send()
    };
    let received_now = || received.lock().unwrap().clone();

    let refused = post("/refused").await.unwrap();
    assert_eq!(refused.status(), 400);
    assert_eq!(refused.headers()["x-ms-error-code"], "OutOfRangeInput");
    assert!(
        received_now().is_empty(),
        "a refused request is not forwarded"
    );
    assert_eq!(post("/refused").await.unwrap().status(), 201, "spent");

    for _ in 0..2 {
        assert_eq!(post("/lost").await.unwrap().status(), 500);
    }
    assert_eq!(post("/lost").await.unwrap().status(), 201, "spent");

    let dropped = post("/dropped").await;
    assert!(dropped.is_err(), "no answer at all: {dropped:?}");
    assert_eq!(post("/dropped").await.unwrap().status(), 201, "spent");

    // The upstream acted on every request but the refused one.
    assert_eq!(
        received_now(),
        ["/refused", "/lost", "/lost", "/lost", "/dropped", "/dropped"]
    );
    let statuses: Vec<u16> = proxy.entries().iter().map(|e| e.status).collect();
    assert_eq!(statuses, [400, 201, 500, 500, 201, 0, 201]);
    assert_eq!(proxy.requests(), 7);
}
