//! The seed's own HTTP contract (docs/seed-compatibility.md): a client written for the seed's
//! example sends its routes and bodies, exactly as the seed's client serialises them (PascalCase
//! names, `null` for what it leaves out, decimals as JSON numbers), and gets the bank's answers
//! with the seed's `Message`, `InError` and `SequenceNumber`; through the host simulator, on
//! each storage backend.

use crate::support;

use serde_json::json;
use support::{Client, TestApp};

const APPEND_BLOB: &[(&str, &str)] = &[("Bank.Account", "AppendBlob;AzureWebJobsStorage")];

async fn seed_client_scenario(client: &Client) {
    // The seed's AccountOpeningData, as Newtonsoft writes it.
    let opened = client
        .post(
            "/api/OpenAccount/SEED-1",
            &json!({"Commentary": null, "OpeningBalance": 100.00, "ClientName": "Ada"}),
        )
        .await;
    let body = opened.ok(201);
    assert_eq!(body["InError"], false);
    assert_eq!(body["Message"], "Account SEED-1 created");
    assert_eq!(
        body["balance"], "100.00",
        "the opening balance is deposited"
    );
    assert_eq!(body["SequenceNumber"], 2);
    let again = client
        .post("/api/OpenAccount/SEED-1", &json!({"Commentary": "twice"}))
        .await;
    again.problem(409);
    assert_eq!(again.body["InError"], true);
    assert_eq!(again.body["Message"], again.body["detail"]);

    let deposited = client
        .post(
            "/api/DepositMoney/SEED-1",
            &json!({"Commentary": "salary", "DepositAmount": 25.5, "Source": "till"}),
        )
        .await;
    let body = deposited.ok(200);
    assert_eq!(body["balance"], "125.50");
    assert_eq!(body["Message"], "25.50 deposited to account SEED-1");
    assert_eq!(body["InError"], false);
    assert_eq!(body["SequenceNumber"], 3);

    let limit = client
        .post(
            "/api/SetOverdraftLimit/SEED-1",
            &json!({"NewOverdraftLimit": 50, "Commentary": null}),
        )
        .await;
    assert_eq!(limit.ok(200)["overdraftLimit"], "50.00");
    assert_eq!(
        limit.body["Message"],
        "50.00 set as the new overdraft limit for account SEED-1"
    );

    let withdrawn = client
        .post(
            "/api/withdrawmoney/SEED-1",
            &json!({"amountWithdrawn": "150", "commentary": "rent"}),
        )
        .await;
    let body = withdrawn.ok(200);
    assert_eq!(body["balance"], "-24.50");
    assert_eq!(
        body["Message"],
        "150.00 withdrawn from account SEED-1 (New balance: -24.50, overdraft: 50.00)"
    );
    let refused = client
        .post(
            "/api/WithdrawMoney/SEED-1",
            &json!({"AmountWithdrawn": 1000, "Commentary": null}),
        )
        .await;
    refused.problem(422);
    assert_eq!(refused.slug(), "insufficient-funds");
    assert_eq!(refused.body["InError"], true);
    assert!(refused.body["Message"]
        .as_str()
        .unwrap()
        .contains("25.50 is available"));

    // Bad seed input is refused before anything is written.
    for (path, body, slug) in [
        (
            "/api/DepositMoney/SEED-1",
            json!({"DepositAmount": "1e2"}),
            "invalid-amount",
        ),
        (
            "/api/DepositMoney/SEED-1",
            json!({"Amount": 1}),
            "unknown-field",
        ),
        ("/api/DepositMoney/SEED-1", json!({}), "invalid-amount"),
        (
            "/api/WithdrawMoney/NOBODY",
            json!({"AmountWithdrawn": 1}),
            "account-not-found",
        ),
    ] {
        let answer = client.post(path, &body).await;
        assert!(answer.status.is_client_error(), "{path} {body}");
        assert_eq!(answer.slug(), slug, "{path} {body}");
        assert_eq!(answer.body["InError"], true);
    }
    let history = client.get("/api/GetAccountHistory/SEED-1").await;
    assert_eq!(history.ok(200)["version"], 5, "nothing written by refusals");

    // As of a date (its 00:00 UTC) and as of a time.
    let long_ago = client.get("/api/GetBalance/SEED-1/2000-01-01").await;
    long_ago.problem(404);
    assert_eq!(long_ago.body["InError"], true);
    let now = client.get("/api/GetBalance/SEED-1/9999-12-31").await;
    let body = now.ok(200);
    assert_eq!(body["balance"], "-24.50");
    assert_eq!(body["SequenceNumber"], 5);
    assert_eq!(body["Message"], "Balance for account SEED-1 is -24.50");
    let events = &history.body["events"];
    let deposit_time = events[2]["timestamp"].as_str().unwrap();
    let at_deposit = client
        .get(&format!("/api/GetBalance/SEED-1/{deposit_time}"))
        .await;
    let body = at_deposit.ok(200);
    // Every event stamped at or before that time (the deposit, and any later event of the
    // same instant), as GetBalance?asOf= answers.
    let native = client
        .get(&format!("/api/GetBalance/SEED-1?asOf={deposit_time}"))
        .await;
    let expected = native.ok(200);
    assert!(body["SequenceNumber"].as_u64().unwrap() >= 3);
    assert_eq!(body["SequenceNumber"], expected["sequence"]);
    assert_eq!(body["balance"], expected["balance"]);
    let bad = client.get("/api/GetBalance/SEED-1/01%2F05%2F2024").await;
    assert_eq!(bad.status.as_u16(), 400, "{:?}", bad.body);

    client
        .post("/api/OpenAccount/SEED-2", &json!({"ClientName": null}))
        .await
        .ok(201);
    for path in ["/api/GetAllAccounts", "/api/GetAllAccounts/2024-05-01"] {
        let all = client.get(path).await;
        let body = all.ok(200);
        assert_eq!(
            body["accountNumbers"],
            json!(["SEED-1", "SEED-2"]),
            "{path}"
        );
        assert_eq!(body["Message"], "Account numbers: SEED-1,SEED-2");
        assert_eq!(body["truncated"], false);
    }
    client
        .get("/api/GetAllAccounts/not-a-date")
        .await
        .problem(400);

    // The seed's PayInterest body (InterestPayData) is read by the bank's PayInterest.
    let paid = client
        .post("/api/PayInterest/SEED-2", &json!({"Commentary": null}))
        .await;
    assert_eq!(paid.ok(200)["paid"], "0.00");

    // The seed's MoneyTransferData, to the seed's TransferMoney route.
    client
        .post("/api/DepositMoney/SEED-2", &json!({"DepositAmount": 40}))
        .await
        .ok(200);
    let transfer = client
        .post(
            "/api/TransferMoney/seed-transfer-1",
            &json!({"Amount": 15, "SourceAccountNumber": "SEED-2",
                    "TargetAccountNumber": "SEED-1", "Commentary": null}),
        )
        .await;
    assert!(transfer.status.is_success(), "{:?}", transfer.body);
    for _ in 0..100 {
        let state = client.get("/api/GetTransferState/seed-transfer-1").await;
        if state.ok(200)["state"] == "completed" {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    let state = client.get("/api/GetTransferState/seed-transfer-1").await;
    assert_eq!(state.ok(200)["state"], "completed");
    let from = client.get("/api/GetBalance/SEED-2").await;
    assert_eq!(from.ok(200)["balance"], "25.00");
    let to = client.get("/api/GetBalance/SEED-1").await;
    assert_eq!(to.ok(200)["balance"], "-9.50");
}

#[tokio::test]
async fn a_seed_client_works_unchanged_on_table_storage() {
    let app = TestApp::start().await;
    seed_client_scenario(&app.client).await;
}

#[tokio::test]
async fn a_seed_client_works_unchanged_on_append_blobs() {
    let app = TestApp::start_with(APPEND_BLOB).await;
    seed_client_scenario(&app.client).await;
}

/// A retried seed OpenAccount with an opening balance replays both of its commands.
#[tokio::test]
async fn a_retried_seed_opening_deposits_once() {
    let app = TestApp::start().await;
    let http = app.client.http();
    let send = || {
        http.post(app.client.url("/api/OpenAccount/SEED-3"))
            .header("idempotency-key", "\"open-seed-3\"")
            .json(&json!({"OpeningBalance": 10, "Commentary": null, "ClientName": null}))
    };
    let first = app.client.send(send()).await;
    assert_eq!(first.ok(201)["balance"], "10.00");
    let second = app.client.send(send()).await;
    assert_eq!(second.ok(201), &first.body);
    assert_eq!(second.headers.get("idempotent-replayed").unwrap(), "true");
    let balance = app.client.get("/api/GetBalance/SEED-3").await;
    assert_eq!(balance.ok(200)["balance"], "10.00");
    assert_eq!(balance.body["sequence"], 2);
}
