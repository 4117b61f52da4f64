//! Bad input always gets a 4xx `application/problem+json` answer that names the problem, and
//! writes nothing; a storage outage gets 503 in bounded time, never a hang.

use crate::support;

use std::time::Duration;

use serde_json::json;
use support::TestApp;

#[tokio::test]
async fn bad_input_is_named_and_writes_nothing() {
    let app = TestApp::start().await;
    let c = &app.client;
    c.post("/api/OpenAccount/GOOD-1", &json!({})).await.ok(201);
    c.post("/api/Deposit/GOOD-1", &json!({"amount": 10}))
        .await
        .ok(200);

    // (path, body, status, problem slug)
    let money_cases: Vec<(&str, &str, u16, &str)> = vec![
        (
            "/api/Deposit/GOOD-1",
            r#"{"amount": "#,
            400,
            "malformed-json",
        ),
        ("/api/Deposit/GOOD-1", r#"not json"#, 400, "malformed-json"),
        (
            "/api/Deposit/GOOD-1",
            r#"{"amount": true}"#,
            400,
            "invalid-amount",
        ),
        (
            "/api/Deposit/GOOD-1",
            r#"{"amount": [1]}"#,
            400,
            "invalid-amount",
        ),
        (
            "/api/Deposit/GOOD-1",
            r#"{"amount": null}"#,
            400,
            "invalid-amount",
        ),
        (
            "/api/Deposit/GOOD-1",
            r#"{"amount": -5}"#,
            400,
            "invalid-amount",
        ),
        (
            "/api/Deposit/GOOD-1",
            r#"{"amount": 0}"#,
            400,
            "invalid-amount",
        ),
        (
            "/api/Deposit/GOOD-1",
            r#"{"amount": "0.00"}"#,
            400,
            "invalid-amount",
        ),
        (
            "/api/Deposit/GOOD-1",
            r#"{"amount": "ten"}"#,
            400,
            "invalid-amount",
        ),
        (
            "/api/Deposit/GOOD-1",
            r#"{"amount": 1.001}"#,
            400,
            "invalid-amount",
        ),
        (
            "/api/Deposit/GOOD-1",
            r#"{"amount": "1e400"}"#,
            400,
            "invalid-amount",
        ),
        (
            "/api/Deposit/GOOD-1",
            r#"{"amount": 1, "commentary": 5}"#,
            400,
            "invalid-body",
        ),
        (
            "/api/Deposit/GOOD-1",
            r#"{"amount": 1, "amout": 2}"#,
            400,
            "invalid-body",
        ),
        ("/api/Deposit/GOOD-1", r#"{}"#, 400, "invalid-body"),
        ("/api/Deposit/GOOD-1", r#"[]"#, 400, "invalid-body"),
        (
            "/api/Withdraw/GOOD-1",
            r#"{"amount": -1}"#,
            400,
            "invalid-amount",
        ),
        (
            "/api/SetOverdraftLimit/GOOD-1",
            r#"{"limit": -1}"#,
            400,
            "invalid-amount",
        ),
        (
            "/api/OpenAccount/NEW-1",
            r#"{"overdraftLimit": "lots"}"#,
            400,
            "invalid-amount",
        ),
        (
            "/api/OpenAccount/NEW-1",
            r#"{"overdraftLimit": 1, "x": 1}"#,
            400,
            "invalid-body",
        ),
    ];
    for (path, body, status, slug) in money_cases {
        let reply = c.post_raw(path, body.to_owned()).await;
        reply.problem(status);
        assert_eq!(reply.slug(), slug, "{path} {body}: {}", reply.body);
    }

    let long = "x".repeat(300);
    let key_cases = [
        format!("/api/OpenAccount/{long}"),
        "/api/OpenAccount/a%23b".to_owned(),
        "/api/OpenAccount/a%3Fb".to_owned(),
        "/api/OpenAccount/a%5Cb".to_owned(),
        "/api/OpenAccount/a%2Fb".to_owned(),
        "/api/OpenAccount/a%01b".to_owned(),
        "/api/OpenAccount/%20lead".to_owned(),
        "/api/OpenAccount/%FF".to_owned(),
    ];
    for path in &key_cases {
        // Through the host's proxy these two arrive as the literal keys `a%2Fb` and `%FF`
        // (docs/host-modes.md; tests/integration/host_modes.rs checks both modes).
        if support::proxying() && (path.ends_with("a%2Fb") || path.ends_with("%FF")) {
            continue;
        }
        let reply = c.post_raw(path, "{}").await;
        reply.problem(400);
        assert!(
            ["invalid-key", "invalid-path"].contains(&reply.slug()),
            "{path}: {}",
            reply.body
        );
    }

    // Unknown routes and methods, an empty account number.
    for (method, path) in [
        ("GET", "/api/Nope"),
        ("POST", "/api/Deposit/"),
        ("GET", "/api/Deposit/GOOD-1"),
        ("DELETE", "/api/GetBalance/GOOD-1"),
    ] {
        let request = c
            .http()
            .request(method.parse().unwrap(), c.url(path))
            .header("content-type", "application/json")
            .body("{}");
        let reply = c.send(request).await;
        assert!(reply.status.is_client_error(), "{method} {path}: {reply:?}");
        assert_eq!(
            reply.content_type, "application/problem+json",
            "{method} {path}"
        );
    }

    // Query parameters.
    for path in [
        "/api/GetBalance/GOOD-1?asOfSequence=abc",
        "/api/GetBalance/GOOD-1?asOfSequence=-1",
        "/api/GetBalance/GOOD-1?asOf=yesterday",
        "/api/GetBalance/GOOD-1?asOf=2024-01-01T00:00:00Z&asOfSequence=1",
        "/api/GetBalance/GOOD-1?when=now",
        "/api/GetAccountHistory/GOOD-1?pageSize=0",
        "/api/GetAccountHistory/GOOD-1?pageSize=100000",
        "/api/streams/Bank/Account?pageSize=0",
    ] {
        c.get(path).await.problem(400);
    }
    let made_up = c.get("/api/streams/Bank/Account?continuation=%01").await;
    made_up.problem(400);
    assert_eq!(made_up.slug(), "invalid-continuation", "{}", made_up.body);

    // An oversized body.
    let huge = format!(
        r#"{{"amount": 1, "commentary": "{}"}}"#,
        "x".repeat(6 * 1024 * 1024)
    );
    let reply = c.post_raw("/api/Deposit/GOOD-1", huge).await;
    reply.problem(413);

    // The generic API.
    let append_cases: Vec<(&str, serde_json::Value, &str)> = vec![
        (
            "/api/streams/Shop/Cart/c1",
            json!({"expectedVersion": "sometimes", "events": [{"eventType": "A", "data": {}}]}),
            "invalid-expected-version",
        ),
        (
            "/api/streams/Shop/Cart/c1",
            json!({"expectedVersion": -1, "events": [{"eventType": "A", "data": {}}]}),
            "invalid-expected-version",
        ),
        (
            "/api/streams/Shop/Cart/c1",
            json!({"events": []}),
            "empty-append",
        ),
        (
            "/api/streams/Shop/Cart/c1",
            json!({"events": [{"eventType": "", "data": {}}]}),
            "invalid-event",
        ),
        (
            "/api/streams/Shop/Cart/c1",
            json!({"events": [{"eventType": "has space", "data": {}}]}),
            "invalid-event",
        ),
        (
            "/api/streams/Shop/Cart/c1",
            json!({"events": [{"eventType": "A"}]}),
            "invalid-body",
        ),
        (
            "/api/streams/Shop/Cart/c1",
            json!({"events": [{"eventType": "A", "data": {}, "eventId": "nope"}]}),
            "invalid-body",
        ),
        (
            "/api/streams/1Shop/Cart/c1",
            json!({"events": [{"eventType": "A", "data": {}}]}),
            "invalid-key",
        ),
        (
            "/api/streams/Shop/Ca.rt/c1",
            json!({"events": [{"eventType": "A", "data": {}}]}),
            "invalid-key",
        ),
    ];
    for (path, body, slug) in append_cases {
        let reply = c.post(path, &body).await;
        reply.problem(400);
        assert_eq!(reply.slug(), slug, "{path} {body}: {}", reply.body);
    }
    let id = uuid::Uuid::new_v4();
    let twice = c
        .post(
            "/api/streams/Shop/Cart/c1",
            &json!({"events": [{"eventType": "A", "data": {}, "eventId": id}, {"eventType": "B", "data": {}, "eventId": id}]}),
        )
        .await;
    twice.problem(400);

    // Nothing was written by any of it.
    let listed = c.get("/api/streams/Bank/Account").await;
    assert_eq!(listed.ok(200)["instances"], json!(["GOOD-1"]));
    c.get("/api/streams/Shop/Cart/c1").await.problem(404);
    let good = c.get("/api/streams/Bank/Account/GOOD-1").await;
    assert_eq!(good.ok(200)["version"], 2);
    let balance = c.get("/api/GetBalance/GOOD-1").await;
    assert_eq!(balance.ok(200)["balance"], "10.00");
}

#[tokio::test]
async fn storage_outage_answers_503_in_bounded_time() {
    let mut app = TestApp::start().await;
    let c = app.client.clone();
    c.post("/api/OpenAccount/OUT-1", &json!({})).await.ok(201);
    app.azurite.stop().await;
    for request in [
        c.http().get(c.url("/api/GetBalance/OUT-1")),
        c.http()
            .post(c.url("/api/Deposit/OUT-1"))
            .json(&json!({"amount": 1})),
        c.http().post(c.url("/api/OpenAccount/OUT-2")),
    ] {
        // Bounded: the client's own limit is far above the handler's; a hang fails here.
        let reply = tokio::time::timeout(Duration::from_secs(45), c.send(request))
            .await
            .expect("the handler answered within the bound");
        reply.problem(503);
        assert_eq!(reply.slug(), "storage-unavailable");
        assert!(reply.headers.contains_key("retry-after"));
    }
    // The handler serves again once storage is back (Azurite may not have saved the account
    // before it was killed, so 404 counts as served too).
    app.azurite.restart().await.unwrap();
    let mut answered = false;
    for _ in 0..50 {
        if c.get("/api/GetBalance/OUT-1").await.status != 503 {
            answered = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(answered, "GetBalance works again after the outage");
}

/// A value storage refuses because of what the caller sent is a 4xx naming it; any other
/// refusal is our fault and a 500. Azurite accepts what Azure refuses (an `asOf` before 1601,
/// for one), so a proxy in front of it answers as Azure would.
#[tokio::test]
async fn storage_refusals_of_caller_values_are_client_errors() {
    use streamfold_testbed::proxy::Fault;

    let azurite = streamfold_testbed::Azurite::start().await.unwrap();
    let storage = support::CountedStorage::start(&azurite).await;
    let (host, _dir) = support::start_host(vec![(
        "AzureWebJobsStorage".into(),
        storage.connection.clone(),
    )])
    .await;
    let c = support::Client::new(host.base_url());
    let path = "/api/streams/Shop/Cart/C-1";
    c.post(
        path,
        &json!({"events": [{"eventType": "Added", "data": {}}]}),
    )
    .await
    .ok(201);
    let read = format!("{path}?asOf=1700-01-01T00:00:00Z");

    storage
        .tables
        .inject(Fault::new("devstoreaccount1", 400, "OutOfRangeInput"));
    let refused = c.get(&read).await;
    let problem = refused.problem(400);
    assert_eq!(refused.slug(), "storage-refused-input", "{problem}");
    assert_eq!(problem["storageErrorCode"], "OutOfRangeInput");

    storage.tables.clear_faults();
    storage
        .tables
        .inject(Fault::new("devstoreaccount1", 400, "InvalidHeaderValue"));
    let ours = c.get(&read).await;
    ours.problem(500);
    assert_eq!(ours.slug(), "storage-error");

    storage.tables.clear_faults();
    c.get(&read).await.ok(200);
}
