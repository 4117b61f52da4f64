//! The app with no key at all: storage and the topic reached as the app's managed identity, as
//! `infra/main.bicep` deploys it. The handler's environment holds identity-based connections
//! (`AzureWebJobsStorage__tableServiceUri`, `__blobServiceUri`, `__credential`, `__clientId`), the
//! topic by endpoint alone (`EventGridTopicEndpoint`, `EventGridClientId`), and the App Service
//! identity endpoint (`IDENTITY_ENDPOINT`, `IDENTITY_HEADER`), served by the testbed's fake
//! identity. Storage is Azurite behind proxies that take only that identity's bearer tokens (and
//! re-sign for Azurite); the topic simulator takes only its tokens for Event Grid too.

use crate::support;

use std::time::Duration;

use serde_json::json;
use streamfold_testbed::bearer::BearerStorageProxy;
use streamfold_testbed::identity::FakeIdentity;
use streamfold_testbed::topic::{Subscription, TopicConfig, TopicSim};
use streamfold_testbed::Azurite;
use support::{event_grid_webhook_path, start_host_on, Client};

const STORAGE: &str = "https://storage.azure.com/";
const EVENT_GRID: &str = "https://eventgrid.azure.net/";
const CLIENT_ID: &str = "8a4f4c4e-0000-4000-8000-000000000001";

struct KeylessApp {
    identity: FakeIdentity,
    tables: BearerStorageProxy,
    blobs: BearerStorageProxy,
    topic: TopicSim,
    host: streamfold_testbed::HostSim,
    client: Client,
    settings: Vec<(String, String)>,
    _azurite: Azurite,
    _dir: tempfile::TempDir,
}

/// The app with the identity's tokens lasting `lifetime` seconds.
async fn start(lifetime: u64) -> KeylessApp {
    let azurite = Azurite::start().await.expect("start Azurite");
    let identity = FakeIdentity::start(Some(CLIENT_ID)).await.unwrap();
    identity.set_lifetime(lifetime);
    let (tables, blobs) = BearerStorageProxy::start_both(&azurite, identity.check(STORAGE))
        .await
        .unwrap();
    let port = streamfold_testbed::free_port().unwrap();
    let webhook = format!(
        "http://127.0.0.1:{port}{}",
        event_grid_webhook_path("Projector")
    );
    let topic = TopicSim::start(
        TopicConfig::default()
            .accept_bearer(identity.check(EVENT_GRID))
            .subscribe(Subscription::new(webhook)),
    )
    .await
    .unwrap();
    let settings: Vec<(String, String)> = [
        ("AzureWebJobsStorage__tableServiceUri", tables.endpoint()),
        ("AzureWebJobsStorage__blobServiceUri", blobs.endpoint()),
        ("AzureWebJobsStorage__credential", "managedidentity".into()),
        ("AzureWebJobsStorage__clientId", CLIENT_ID.into()),
        // One entity type on Append Blobs, so both services are reached with tokens.
        (
            "Streamfold__Ledger__Entry",
            "AppendBlob;AzureWebJobsStorage".into(),
        ),
        ("IDENTITY_ENDPOINT", identity.endpoint()),
        ("IDENTITY_HEADER", identity.header().into()),
        ("EventGridTopicEndpoint", topic.endpoint()),
        ("EventGridClientId", CLIENT_ID.into()),
        ("RaiseEntityCreationNotification", "true".into()),
        ("RaiseEventNotification", "true".into()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v))
    .collect();
    let (host, dir) = start_host_on(port, settings.clone()).await;
    let client = Client::new(host.base_url());
    KeylessApp {
        identity,
        tables,
        blobs,
        topic,
        host,
        client,
        settings,
        _azurite: azurite,
        _dir: dir,
    }
}

/// Polls `Accounts` until the read model shows `account` (the Projector got its notification).
async fn wait_for_read_model(client: &Client, account: &str) -> bool {
    for _ in 0..200 {
        let reply = client.get("/api/Accounts").await;
        if reply.status == 200 && reply.body.to_string().contains(account) {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    false
}

#[tokio::test]
async fn the_app_runs_on_tokens_alone_with_no_key_in_its_environment() {
    let app = start(3600).await;
    // No secret of storage or the topic anywhere in what the handler is given.
    for (name, value) in &app.settings {
        for secret in [
            "AccountKey",
            "SharedAccessSignature",
            streamfold_testbed::azurite::KEY,
        ] {
            assert!(!value.contains(secret), "{name} carries a key");
        }
        assert!(
            !matches!(
                name.as_str(),
                "AzureWebJobsStorage" | "EventGridKeyValue" | "EventGridKeySettingName"
            ),
            "{name} is set"
        );
    }
    assert!(std::env::var("AzureWebJobsStorage").is_err());
    let client = &app.client;

    client
        .post("/api/OpenAccount/MI-1", &json!({"overdraftLimit": "10"}))
        .await
        .ok(201);
    client
        .post("/api/Deposit/MI-1", &json!({"amount": "25.50"}))
        .await
        .ok(200);
    let balance = client.get("/api/GetBalance/MI-1").await;
    assert_eq!(balance.ok(200)["balance"], "25.50");
    client
        .post(
            "/api/streams/Ledger/Entry/E-1",
            &json!({"expectedVersion": "noStream", "events": [{"eventType": "Booked", "data": {"n": 1}}]}),
        )
        .await
        .ok(201);
    let read = client.get("/api/streams/Ledger/Entry/E-1").await;
    assert_eq!(read.ok(200)["version"], 1);

    // Both services were reached with tokens, none refused; the topic took the notifications
    // with a token, and delivered them to the Projector.
    assert!(app.tables.accepted() > 0 && app.blobs.accepted() > 0);
    assert_eq!((app.tables.refused(), app.blobs.refused()), (0, 0));
    assert!(
        wait_for_read_model(client, "MI-1").await,
        "the Projector never saw MI-1"
    );
    assert!(!app.topic.received().is_empty());
    assert_eq!(
        app.identity.refused(),
        0,
        "every token request named the identity rightly"
    );

    // Tokens are cached: more requests fetch no new token.
    let storage_tokens = app.identity.issued_for(STORAGE);
    let topic_tokens = app.identity.issued_for(EVENT_GRID);
    assert!(storage_tokens >= 1 && topic_tokens >= 1);
    for _ in 0..5 {
        client
            .post("/api/Deposit/MI-1", &json!({"amount": "1"}))
            .await
            .ok(200);
    }
    assert_eq!(app.identity.issued_for(STORAGE), storage_tokens);

    // No log line carries a token or the identity header.
    let output = app.host.handler_output().join("\n");
    assert!(!output.contains("fake-token-"), "a token was logged");
    assert!(
        !output.contains(app.identity.header()),
        "the identity header was logged"
    );
}

#[tokio::test]
async fn a_missing_token_is_a_503_that_says_why_and_tokens_are_renewed_before_they_expire() {
    // Tokens that expire within the renewal margin (60 s < 5 min) are renewed on every use.
    let app = start(60).await;
    let client = &app.client;

    // The identity endpoint is down before the first request: no token at all, so storage
    // cannot be reached: 503 problem+json, and a log line that says why.
    app.identity.set_down(true);
    let reply = client.get("/api/GetBalance/MI-2").await;
    reply.problem(503);
    assert_eq!(reply.slug(), "storage-unavailable");
    let output = app.host.handler_output().join("\n");
    assert!(
        output.contains("no managed identity token"),
        "no log line says the token is missing: {output}"
    );
    assert!(!output.contains(app.identity.header()));

    // Back up: served, and each use renews the short-lived token.
    app.identity.set_down(false);
    client
        .post("/api/OpenAccount/MI-2", &json!({}))
        .await
        .ok(201);
    let before = app.identity.issued_for(STORAGE);
    client.get("/api/GetBalance/MI-2").await.ok(200);
    assert!(
        app.identity.issued_for(STORAGE) > before,
        "a token about to expire was reused"
    );

    // A renewal that fails while the token is still valid keeps using it, and says so.
    app.identity.set_down(true);
    client.get("/api/GetBalance/MI-2").await.ok(200);
    let output = app.host.handler_output().join("\n");
    assert!(output.contains("using the cached one"), "{output}");
}
