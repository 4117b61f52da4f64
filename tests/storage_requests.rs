//! What one operation costs in storage requests, counted by a proxy in front of Azurite: an
//! append with a known expected version is exactly one request (the seed's design costs
//! three).

mod support;

use serde_json::json;
use streamfold_testbed::Azurite;
use support::{start_host, Client, CountedStorage};

#[tokio::test]
async fn an_append_with_a_known_version_is_one_table_request() {
    let azurite = Azurite::start().await.unwrap();
    let counted = CountedStorage::start(&azurite).await;
    let (proxy, connection) = (&counted.tables, counted.connection.clone());
    let (host, _dir) = start_host(vec![("AzureWebJobsStorage".into(), connection)]).await;
    let c = Client::new(host.base_url());
    let path = "/api/streams/Shop/Cart/c1";

    // The first request of the process creates the table; not counted.
    c.post(
        path,
        &json!({"expectedVersion": "noStream", "events": [{"eventType": "Created", "data": {}}]}),
    )
    .await
    .ok(201);

    proxy.reset();
    c.post(
        path,
        &json!({"expectedVersion": 1, "events": [{"eventType": "Added", "data": {"sku": "a"}}]}),
    )
    .await
    .ok(201);
    assert_eq!(
        proxy.requests(),
        1,
        "append with a known version: {:?}",
        proxy.log()
    );

    // A refused append: the failed transaction, then reads to tell an idempotent retry from a
    // conflict and to report the actual version. Only the failure path pays for them.
    proxy.reset();
    c.post(
        path,
        &json!({"expectedVersion": "noStream", "events": [{"eventType": "Created", "data": {}}]}),
    )
    .await
    .problem(409);
    assert!(proxy.requests() <= 3, "refused append: {:?}", proxy.log());

    proxy.reset();
    c.post(
        "/api/streams/Shop/Cart/c2",
        &json!({"expectedVersion": "noStream", "events": [{"eventType": "Created", "data": {}}]}),
    )
    .await
    .ok(201);
    assert_eq!(proxy.requests(), 1, "new stream: {:?}", proxy.log());

    proxy.reset();
    c.post("/api/OpenAccount/A-1", &json!({})).await.ok(201);
    assert_eq!(proxy.requests(), 1, "open account: {:?}", proxy.log());
}
