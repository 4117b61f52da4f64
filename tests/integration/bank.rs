//! The bank example end to end: the assembled app under the host simulator on real Azurite,
//! over HTTP, on each storage backend.

use crate::support;

use serde_json::json;
use support::{Client, TestApp};

const APPEND_BLOB: &[(&str, &str)] = &[("Bank.Account", "AppendBlob;AzureWebJobsStorage")];

/// Open, deposit, withdraw into overdraft, refuse too much, limits, history, as-of balances,
/// closing: every rule of the bank, on whichever backend the app is configured with.
async fn scenario(client: &Client) {
    let opened = client
        .post(
            "/api/OpenAccount/ACC-1",
            &json!({"overdraftLimit": "100", "commentary": "new customer"}),
        )
        .await;
    let body = opened.ok(201);
    assert_eq!(body["balance"], "0.00");
    assert_eq!(body["overdraftLimit"], "100.00");
    assert_eq!(body["sequence"], 1);
    assert_eq!(body["status"], "open");

    client
        .post("/api/OpenAccount/ACC-1", &json!({}))
        .await
        .problem(409);

    let deposited = client
        .post("/api/Deposit/ACC-1", &json!({"amount": 25.5}))
        .await;
    assert_eq!(deposited.ok(200)["balance"], "25.50");
    assert_eq!(deposited.body["sequence"], 2);
    // 0.1 + 0.2 must be exactly 0.3: amounts never pass through floats.
    client
        .post("/api/Deposit/ACC-1", &json!({"amount": 0.1}))
        .await
        .ok(200);
    let d = client
        .post("/api/Deposit/ACC-1", &json!({"amount": "0.2"}))
        .await;
    assert_eq!(d.ok(200)["balance"], "25.80");

    let w = client
        .post("/api/Withdraw/ACC-1", &json!({"amount": "125.80"}))
        .await;
    assert_eq!(w.ok(200)["balance"], "-100.00");
    assert_eq!(w.body["inOverdraft"], true);
    let refused = client
        .post("/api/Withdraw/ACC-1", &json!({"amount": "0.01"}))
        .await;
    refused.problem(422);
    assert_eq!(refused.slug(), "insufficient-funds");
    assert_eq!(refused.body["available"], "0.00");

    // A limit below what is already overdrawn is refused; a larger one is fine.
    let limit = client
        .post("/api/SetOverdraftLimit/ACC-1", &json!({"limit": "99.99"}))
        .await;
    limit.problem(422);
    assert_eq!(limit.slug(), "limit-below-balance");
    client
        .post("/api/SetOverdraftLimit/ACC-1", &json!({"limit": 150}))
        .await
        .ok(200);

    let balance = client.get("/api/GetBalance/ACC-1").await;
    let b = balance.ok(200);
    assert_eq!(b["balance"], "-100.00");
    assert_eq!(b["overdraftLimit"], "150.00");
    assert_eq!(b["available"], "50.00");
    assert_eq!(b["sequence"], 6);

    let then = client.get("/api/GetBalance/ACC-1?asOfSequence=2").await;
    assert_eq!(then.ok(200)["balance"], "25.50");
    assert_eq!(then.body["sequence"], 2);
    client
        .get("/api/GetBalance/ACC-1?asOf=2000-01-01T00:00:00Z")
        .await
        .problem(404);
    let now = time::OffsetDateTime::now_utc()
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap();
    let as_of_now = client
        .get(&format!(
            "/api/GetBalance/ACC-1?asOf={}",
            now.replace('+', "%2B")
        ))
        .await;
    assert_eq!(as_of_now.ok(200)["balance"], "-100.00");

    let history = client.get("/api/GetAccountHistory/ACC-1?pageSize=4").await;
    let h = history.ok(200);
    assert_eq!(h["version"], 6);
    let events = h["events"].as_array().unwrap();
    assert_eq!(events.len(), 4);
    assert_eq!(events[0]["eventType"], "AccountOpened");
    assert_eq!(events[0]["metadata"]["commentary"], "new customer");
    assert_eq!(events[1]["data"]["amount"], "25.50");
    assert_eq!(h["nextFromSequence"], 5);
    let rest = client
        .get("/api/GetAccountHistory/ACC-1?fromSequence=5")
        .await;
    assert_eq!(rest.ok(200)["events"].as_array().unwrap().len(), 2);
    assert!(rest.body.get("nextFromSequence").is_none());

    // Closing needs a zero balance; a closed account refuses money.
    client
        .post("/api/CloseAccount/ACC-1", &json!({}))
        .await
        .problem(422);
    client
        .post("/api/Deposit/ACC-1", &json!({"amount": 100}))
        .await
        .ok(200);
    let closed = client
        .send(client.http().post(client.url("/api/CloseAccount/ACC-1")))
        .await;
    assert_eq!(closed.ok(200)["status"], "closed");
    let after = client
        .post("/api/Deposit/ACC-1", &json!({"amount": 1}))
        .await;
    after.problem(422);
    assert_eq!(after.slug(), "account-closed");

    client.get("/api/GetBalance/NOPE").await.problem(404);
    client
        .post("/api/Deposit/NOPE", &json!({"amount": 1}))
        .await
        .problem(404);
}

#[tokio::test]
async fn bank_scenario_on_table_storage() {
    let app = TestApp::start().await;
    scenario(&app.client).await;
}

#[tokio::test]
async fn bank_scenario_on_append_blobs() {
    let app = TestApp::start_with(APPEND_BLOB).await;
    scenario(&app.client).await;
}

#[tokio::test]
async fn correlation_ids_are_stored_and_returned() {
    let app = TestApp::start().await;
    let c = &app.client;
    let opened = c
        .send(
            c.http()
                .post(c.url("/api/OpenAccount/CORR-1"))
                .header("x-correlation-id", "req-42"),
        )
        .await;
    assert_eq!(opened.ok(201)["correlationId"], "req-42");
    assert_eq!(opened.headers["x-correlation-id"], "req-42");
    let generated = c.post("/api/Deposit/CORR-1", &json!({"amount": 1})).await;
    let generated_id = generated.ok(200)["correlationId"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(uuid::Uuid::parse_str(&generated_id).is_ok());
    let history = c.get("/api/GetAccountHistory/CORR-1").await;
    let events = history.ok(200)["events"].as_array().unwrap().clone();
    assert_eq!(events[0]["metadata"]["correlationId"], "req-42");
    assert_eq!(
        events[1]["metadata"]["correlationId"],
        generated_id.as_str()
    );
    assert_eq!(events[0]["metadata"]["source"], "streamfold-bank");
}

/// Two withdrawals that would overdraw the account if both passed: exactly one succeeds,
/// whatever the interleaving (each is appended with the exact version its check saw).
async fn concurrent_withdrawals(client: &Client) {
    client
        .post("/api/OpenAccount/RACE-1", &json!({}))
        .await
        .ok(201);
    client
        .post("/api/Deposit/RACE-1", &json!({"amount": 100}))
        .await
        .ok(200);
    for round in 0..5 {
        let sixty = json!({"amount": 60});
        let (a, b) = tokio::join!(
            client.post("/api/Withdraw/RACE-1", &sixty),
            client.post("/api/Withdraw/RACE-1", &sixty),
        );
        let ok = [&a, &b].iter().filter(|r| r.status == 200).count();
        assert_eq!(ok, 1, "round {round}: {a:?} {b:?}");
        let loser = if a.status == 200 { &b } else { &a };
        assert_eq!(
            loser.problem(422)["type"],
            "urn:streamfold:problem:insufficient-funds"
        );
        let balance = client.get("/api/GetBalance/RACE-1").await;
        assert_eq!(balance.ok(200)["balance"], "40.00");
        client
            .post("/api/Deposit/RACE-1", &json!({"amount": 60}))
            .await
            .ok(200);
    }
}

#[tokio::test]
async fn concurrent_withdrawals_on_table_storage() {
    let app = TestApp::start().await;
    concurrent_withdrawals(&app.client).await;
}

#[tokio::test]
async fn concurrent_withdrawals_on_append_blobs() {
    let app = TestApp::start_with(APPEND_BLOB).await;
    concurrent_withdrawals(&app.client).await;
}

#[tokio::test]
async fn projections_and_the_overdraft_classification_run_through_the_generic_api() {
    let app = TestApp::start().await;
    let c = &app.client;
    c.post("/api/OpenAccount/P-1", &json!({"overdraftLimit": 50}))
        .await
        .ok(201);
    c.post("/api/Withdraw/P-1", &json!({"amount": 20}))
        .await
        .ok(200);
    c.post("/api/Deposit/P-1", &json!({"amount": 30}))
        .await
        .ok(200);

    let now = c.get("/api/projections/Bank/Account/P-1/account").await;
    assert_eq!(now.ok(200)["state"]["balance"], "10.00");
    assert_eq!(now.body["sequence"], 3);
    let in_overdraft = c
        .get("/api/projections/Bank/Account/P-1/in-overdraft?asOfSequence=2")
        .await;
    assert_eq!(in_overdraft.ok(200)["state"]["member"], true);
    let later = c
        .get("/api/projections/Bank/Account/P-1/in-overdraft")
        .await;
    assert_eq!(later.ok(200)["state"]["member"], false);

    let unknown = c.get("/api/projections/Bank/Account/P-1/nope").await;
    unknown.problem(404);
    assert!(unknown.body["registered"]
        .as_array()
        .unwrap()
        .contains(&json!("account")));
    c.get("/api/projections/Bank/Account/NOPE/account")
        .await
        .problem(404);
}
