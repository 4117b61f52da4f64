//! Erasure end to end, on both backends, through the host simulator on real Azurite: the bank's
//! `DeleteAccount` and the generic `DELETE /api/streams/...` remove the stream and everything
//! derived from it (snapshots, the read-model row, event-id records, outbox entries, the blob
//! id index), leave a tombstone holding no event data that refuses every writer with 410, make
//! readers see a stream that never existed (404), raise `DeletedEntity`, and can be asked again
//! (finishing an interrupted erasure).

use crate::support;

use futures::StreamExt;
use serde_json::{json, Value};
use streamfold::storage::StorageAccount;
use streamfold::testing::RawClients;
use streamfold_testbed::topic::{TopicConfig, TopicSim};
use support::{publishing_to, TestApp};

/// Every entity of `table` whose PartitionKey starts with `prefix`.
async fn rows(account: &StorageAccount, table: &str, prefix: &str) -> Vec<Value> {
    let filter = format!("PartitionKey ge '{prefix}' and PartitionKey lt '{prefix}~'");
    let mut pages = account
        .table_service_client()
        .unwrap()
        .table_client(table)
        .query()
        .filter(filter)
        .into_stream::<Value>();
    let mut rows = Vec::new();
    while let Some(page) = pages.next().await {
        match page {
            Ok(page) => rows.extend(page.entities),
            // A table never created holds nothing.
            Err(error) if error.to_string().contains("TableNotFound") => break,
            Err(error) => panic!("{error}"),
        }
    }
    rows
}

/// Every blob of the stream container whose name starts with `prefix`, with its length.
async fn blobs(account: &StorageAccount, prefix: &str) -> Vec<(String, u64)> {
    let mut pages = account
        .blob_service_client()
        .unwrap()
        .container_client("streamfold")
        .list_blobs()
        .prefix(prefix.to_owned())
        .into_stream();
    let mut names = Vec::new();
    while let Some(page) = pages.next().await {
        let page = page.unwrap();
        names.extend(
            page.blobs
                .blobs()
                .map(|b| (b.name.clone(), b.properties.content_length)),
        );
    }
    names
}

async fn erasure_through_the_host(backend: &str) {
    let topic = TopicSim::start(TopicConfig::default()).await.unwrap();
    let mut settings = publishing_to(&topic);
    settings.push(("ALL.ALL".into(), format!("{backend};AzureWebJobsStorage")));
    settings.push(("RaiseEntityDeletionNotification".into(), "true".into()));
    // A snapshot on every projection run, so the erasure has snapshots to remove.
    settings.push(("StreamfoldSnapshotEvery".into(), "1".into()));
    let app = TestApp::start_on(0, settings).await;
    let client = &app.client;
    let account = StorageAccount::from_connection_string(&app.azurite.connection_string()).unwrap();

    client
        .post("/api/OpenAccount/ACC-1", &json!({"overdraftLimit": "10"}))
        .await
        .ok(201);
    for amount in ["5", "7.50", "1"] {
        client
            .post("/api/Deposit/ACC-1", &json!({ "amount": amount }))
            .await
            .ok(200);
    }
    client
        .post("/api/OpenAccount/ACC-2", &json!({}))
        .await
        .ok(201);
    client.get("/api/GetBalance/ACC-1").await.ok(200);
    client
        .post("/api/RebuildReadModels", &json!({}))
        .await
        .ok(200);
    let listed = client.get("/api/Accounts").await;
    assert_eq!(listed.ok(200)["accounts"].as_array().unwrap().len(), 2);
    let partition = "Bank|Account|ACC-1";
    assert!(!rows(&account, "streamfoldsnapshots", partition)
        .await
        .is_empty());

    let erased = client.post("/api/DeleteAccount/ACC-1", &json!({})).await;
    let report = erased.ok(200);
    assert_eq!(report["erasedVersion"], 4);
    assert_eq!(report["resumed"], false);
    assert_eq!(report["notified"], true);
    assert_eq!(report["readModels"], json!(["account"]));

    // Readers: an account that never existed.
    assert_eq!(
        client.get("/api/GetBalance/ACC-1").await.slug(),
        "account-not-found"
    );
    assert_eq!(
        client.get("/api/GetAccountHistory/ACC-1").await.slug(),
        "account-not-found"
    );
    let read = client.get("/api/streams/Bank/Account/ACC-1").await;
    assert_eq!(read.status.as_u16(), 404, "{:?}", read.body);
    let instances = client.get("/api/streams/Bank/Account").await;
    assert_eq!(instances.ok(200)["instances"], json!(["ACC-2"]));
    let listed = client.get("/api/Accounts").await;
    let rows_left = listed.ok(200)["accounts"].as_array().unwrap().clone();
    assert_eq!(rows_left.len(), 1, "{rows_left:?}");
    // Writers: refused by the tombstone, whatever they expect.
    let reopened = client.post("/api/OpenAccount/ACC-1", &json!({})).await;
    assert_eq!(
        (reopened.status.as_u16(), reopened.slug()),
        (410, "stream-erased")
    );
    assert_eq!(
        client
            .post("/api/Deposit/ACC-1", &json!({"amount": "1"}))
            .await
            .slug(),
        "account-not-found"
    );
    for expected in [json!("any"), json!("noStream"), json!("exists"), json!(4)] {
        let append = client
            .post(
                "/api/streams/Bank/Account/ACC-1",
                &json!({"expectedVersion": expected, "events": [{"eventType": "AccountOpened", "data": {"overdraftLimit": "0.00"}}]}),
            )
            .await;
        assert_eq!(
            (append.status.as_u16(), append.slug()),
            (410, "stream-erased"),
            "{expected}"
        );
    }

    // What is left in storage: the tombstone, holding no event data, and nothing derived.
    assert!(rows(&account, "streamfoldsnapshots", partition)
        .await
        .is_empty());
    assert!(
        rows(&account, "streamfoldreadmodels", "Bank|Account|account")
            .await
            .iter()
            .all(|row| row["RowKey"] != "ACC-1")
    );
    match backend {
        "Table" => {
            let left = rows(&account, "streamfold", partition).await;
            assert_eq!(left.len(), 1, "{left:?}");
            assert_eq!(left[0]["RowKey"], "E-0000000001");
            assert!(left[0].get("Data").is_none() && left[0].get("EventType").is_none());
        }
        _ => {
            let left = blobs(&account, "Bank/Account/ACC-1").await;
            assert_eq!(
                left,
                vec![
                    ("Bank/Account/ACC-1".to_owned(), 0),
                    ("Bank/Account/ACC-1/000000.jsonl".to_owned(), 0)
                ]
            );
            assert!(blobs(&account, "_outbox/Bank/Account/ACC-1")
                .await
                .is_empty());
            assert!(rows(
                &account,
                "streamfoldblobids",
                "streamfold|Bank|Account|ACC-1|"
            )
            .await
            .is_empty());
        }
    }

    // Asked again (a retry, or an erasure interrupted before): finished, and said so.
    let again = client
        .send(
            client
                .http()
                .delete(client.url("/api/streams/Bank/Account/ACC-1")),
        )
        .await;
    let again = again.ok(200);
    assert_eq!(
        (again["resumed"].clone(), again["erasedVersion"].clone()),
        (json!(true), json!(4))
    );
    let missing = client
        .send(
            client
                .http()
                .delete(client.url("/api/streams/Shop/Cart/never")),
        )
        .await;
    assert_eq!(
        (missing.status.as_u16(), missing.slug()),
        (404, "stream-not-found")
    );
    let missing = client.post("/api/DeleteAccount/NOPE", &json!({})).await;
    assert_eq!(
        (missing.status.as_u16(), missing.slug()),
        (404, "account-not-found")
    );

    // A stream no domain owns, with more events than one storage transaction or page holds.
    for batch in 0..30 {
        let events: Vec<Value> = (0..40)
            .map(|i| json!({"eventType": "ItemAdded", "data": {"n": batch * 40 + i}}))
            .collect();
        client
            .post(
                "/api/streams/Shop/Cart/big",
                &json!({"expectedVersion": "any", "events": events}),
            )
            .await
            .ok(201);
    }
    let erased = client
        .send(
            client
                .http()
                .delete(client.url("/api/streams/Shop/Cart/big")),
        )
        .await;
    assert_eq!(erased.ok(200)["erasedVersion"], 1200);
    for expected in [json!(1200), json!("any")] {
        let append = client
            .post(
                "/api/streams/Shop/Cart/big",
                &json!({"expectedVersion": expected, "events": [{"eventType": "ItemAdded", "data": {}}]}),
            )
            .await;
        assert_eq!(
            (append.status.as_u16(), append.slug()),
            (410, "stream-erased")
        );
    }
    let append = client
        .post(
            "/api/streams/Shop/Cart/big",
            &json!({"events": [{"eventType": "ItemAdded", "data": {}}]}),
        )
        .await;
    assert_eq!(
        (append.status.as_u16(), append.slug()),
        (410, "stream-erased")
    );
    if backend == "Table" {
        assert_eq!(rows(&account, "streamfold", "Shop|Cart|big").await.len(), 1);
    }

    // The DeletedEntity notifications (the bank's, and the cart's), each once per id.
    let deleted: Vec<Value> = topic
        .received()
        .into_iter()
        .filter(|event| {
            event["eventType"]
                .as_str()
                .is_some_and(|t| t.ends_with(".DeletedEntity"))
        })
        .collect();
    let types: Vec<&str> = deleted
        .iter()
        .map(|e| e["eventType"].as_str().unwrap())
        .collect();
    assert!(types.contains(&"Bank.Account.DeletedEntity"), "{types:?}");
    assert!(types.contains(&"Shop.Cart.DeletedEntity"), "{types:?}");
    let bank = deleted
        .iter()
        .find(|e| e["eventType"] == "Bank.Account.DeletedEntity")
        .unwrap();
    assert_eq!(bank["subject"], "eventsourcing/Bank/Account/ACC-1");
    assert_eq!(bank["data"]["sequenceNumber"], 4);
    assert!(bank["data"].get("payload").is_none());
}

#[tokio::test]
async fn erasure_on_table_storage() {
    erasure_through_the_host("Table").await;
}

#[tokio::test]
async fn erasure_on_append_blobs() {
    erasure_through_the_host("AppendBlob").await;
}
