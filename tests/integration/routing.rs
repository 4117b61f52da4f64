//! Routes through the Functions host simulator, as a client of the host sees them: literal
//! segments in any case reach their function (the host forwards the path as it came), unknown
//! paths are 404 problems, a function's path with another method is 405 with `Allow`.

use crate::support;

use serde_json::json;
use support::TestApp;

#[tokio::test]
async fn routes_answer_as_the_host_routes_them() {
    let app = TestApp::start().await;
    let client = &app.client;

    client
        .post("/api/OPENACCOUNT/Route-1", &json!({}))
        .await
        .ok(201);
    let deposit = client
        .post("/api/deposit/Route-1", &json!({"amount": "10.00"}))
        .await;
    assert_eq!(deposit.ok(200)["balance"], "10.00");
    let balance = client.get("/API/getBalance/Route-1/").await;
    assert_eq!(balance.ok(200)["balance"], "10.00");
    // The account number is a key: its case matters.
    let other = client.get("/api/GetBalance/ROUTE-1").await;
    assert_eq!(
        other.problem(404)["type"],
        "urn:streamfold:problem:account-not-found"
    );
    let stream = client.get("/api/STREAMS/Bank/Account/Route-1").await;
    assert_eq!(stream.ok(200)["version"], 2);

    for (method, path) in [
        ("GET", "/api/NoSuchFunction/1"),
        ("POST", "/api/NoSuchFunction/1"),
        ("GET", "/api/"),
        ("GET", "/api/GetBalance/Route-1/2024-01-01/extra"),
    ] {
        let request = client
            .http()
            .request(method.parse().unwrap(), client.url(path));
        let reply = client.send(request).await;
        reply.problem(404);
        assert_eq!(reply.slug(), "no-such-route", "{method} {path}");
    }
    for (method, path, allow) in [
        ("GET", "/api/deposit/Route-1", "POST"),
        (
            "PUT",
            "/api/streams/Bank/Account/Route-1",
            "DELETE, GET, POST",
        ),
        ("DELETE", "/api/Accounts", "GET"),
    ] {
        let request = client
            .http()
            .request(method.parse().unwrap(), client.url(path));
        let reply = client.send(request).await;
        reply.problem(405);
        assert_eq!(reply.slug(), "method-not-allowed", "{method} {path}");
        assert_eq!(reply.headers["allow"], allow, "{method} {path}");
    }
}
