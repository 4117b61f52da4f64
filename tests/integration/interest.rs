//! Interest through the host simulator on both backends: AccrueInterest accrues once per
//! account per UTC day (also under concurrent calls), from the balance at the start of the day;
//! PayInterest pays the accrued interest rounded to the currency and extends the overdraft for
//! debit interest; the daily timer function accrues every open account once.
//!
//! The app runs with `BankInterestDayOffset=1`, so "today" is tomorrow and its start-of-day
//! balance includes what the test has just done (no test waits for midnight).

use crate::support;

use std::time::Duration;

use serde_json::{json, Value};
use support::{Client, TestApp};

const DAY_AHEAD: (&str, &str) = ("BankInterestDayOffset", "1");
const BLOB: (&str, &str) = ("Bank.Account", "AppendBlob;AzureWebJobsStorage");
const TIMER: &str = "AccrueInterestTimer";

async fn open(client: &Client, account: &str, limit: &str, deposit: Option<&str>) {
    client
        .open_account(account, &json!({"overdraftLimit": limit}))
        .await;
    if let Some(amount) = deposit {
        client.deposit(account, amount).await;
    }
}

async fn event_types(client: &Client, account: &str) -> Vec<String> {
    let history = client
        .get(&format!("/api/GetAccountHistory/{account}"))
        .await;
    history.ok(200)["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["eventType"].as_str().unwrap().to_owned())
        .collect()
}

fn count(types: &[String], wanted: &str) -> usize {
    types.iter().filter(|t| *t == wanted).count()
}

async fn scenario(app: &TestApp) {
    let client = &app.client;
    open(client, "INT-1", "0", Some("1000")).await;

    let first = client.post("/api/AccrueInterest/INT-1", &json!({})).await;
    let first = first.ok(200).clone();
    assert_eq!(first["alreadyAccrued"], false, "{first}");
    assert_eq!(first["interest"]["amount"], "0.041096");
    assert_eq!(first["interest"]["annualRate"], "1.5");
    assert_eq!(first["interest"]["balanceAtStartOfDay"], "1000.00");
    assert_eq!(first["accruedInterest"], "0.041096");

    // The same day again: nothing written, and it says so.
    let again = client
        .post("/api/AccrueInterest/INT-1", &json!({"commentary": "again"}))
        .await;
    let again = again.ok(200);
    assert_eq!(again["alreadyAccrued"], true, "{again}");
    assert!(again.get("interest").is_none());
    assert_eq!(again["day"], first["day"]);
    assert_eq!(again["accruedInterest"], "0.041096");
    assert_eq!(again["sequence"], first["sequence"]);
    assert_eq!(
        count(&event_types(client, "INT-1").await, "InterestAccrued"),
        1
    );

    let balance = client.get("/api/GetBalance/INT-1").await;
    assert_eq!(balance.ok(200)["accruedInterest"], "0.041096");

    // Many concurrent calls on one account: one accrual.
    open(client, "INT-2", "0", Some("500")).await;
    let empty = json!({});
    let calls = (0..12).map(|_| client.post("/api/AccrueInterest/INT-2", &empty));
    let answers = futures::future::join_all(calls).await;
    let made = answers
        .iter()
        .filter(|a| a.ok(200)["alreadyAccrued"] == false)
        .count();
    assert_eq!(made, 1);
    assert_eq!(
        count(&event_types(client, "INT-2").await, "InterestAccrued"),
        1
    );

    // Paying: rounded to the currency, accrued interest zeroed; again pays nothing.
    let paid = client.post("/api/PayInterest/INT-1", &json!({})).await;
    let paid = paid.ok(200);
    assert_eq!(paid["paid"], "0.04", "{paid}");
    assert_eq!(paid["accruedPaid"], "0.041096");
    assert_eq!(paid["balance"], "1000.04");
    assert_eq!(paid["accruedInterest"], "0.000000");
    assert_eq!(paid["overdraftExtended"], false);
    let nothing = client.post("/api/PayInterest/INT-1", &json!({})).await;
    assert_eq!(nothing.ok(200)["paid"], "0.00");
    assert_eq!(
        count(&event_types(client, "INT-1").await, "InterestPaid"),
        1
    );

    // Debit interest past the overdraft limit: the limit is extended in the same append.
    open(client, "INT-3", "100", None).await;
    client
        .post("/api/Withdraw/INT-3", &json!({"amount": "100"}))
        .await
        .ok(200);
    let accrued = client.post("/api/AccrueInterest/INT-3", &json!({})).await;
    let accrued = accrued.ok(200);
    assert_eq!(accrued["interest"]["amount"], "-0.049315", "{accrued}");
    assert_eq!(accrued["interest"]["annualRate"], "18");
    let paid = client.post("/api/PayInterest/INT-3", &json!({})).await;
    let paid = paid.ok(200);
    assert_eq!(paid["paid"], "-0.05", "{paid}");
    assert_eq!(paid["overdraftExtended"], true);
    assert_eq!(paid["overdraftLimit"], "100.05");
    assert_eq!(paid["balance"], "-100.05");
    let types = event_types(client, "INT-3").await;
    assert_eq!(
        types[types.len() - 2..],
        ["OverdraftLimitSet".to_owned(), "InterestPaid".to_owned()]
    );

    // Refusals: unknown accounts, closed accounts, a rate in the body.
    for route in ["AccrueInterest", "PayInterest"] {
        let missing = client.post(&format!("/api/{route}/NOPE"), &json!({})).await;
        assert_eq!(
            missing.problem(404)["type"],
            "urn:streamfold:problem:account-not-found"
        );
        let rate = client
            .post(&format!("/api/{route}/INT-1"), &json!({"annualRate": "99"}))
            .await;
        rate.problem(400);
    }
    open(client, "INT-4", "0", None).await;
    client
        .post("/api/CloseAccount/INT-4", &json!({}))
        .await
        .ok(200);
    let closed = client.post("/api/AccrueInterest/INT-4", &json!({})).await;
    assert_eq!(
        closed.problem(422)["type"],
        "urn:streamfold:problem:account-closed"
    );

    // The timer function: every open account not yet accrued today, once.
    open(client, "INT-5", "0", Some("200")).await;
    let run = support::run_timer(client, &app.host, TIMER, 1, Duration::from_secs(60)).await;
    assert!(run.succeeded, "{run:?}");
    let report: &Value = &run.return_value;
    assert_eq!(report["accrued"], 1, "{report}"); // INT-5
    assert_eq!(report["alreadyAccrued"], 3, "{report}"); // INT-1, INT-2, INT-3
    assert_eq!(report["skipped"], 1, "{report}"); // INT-4, closed
    assert_eq!(report["finished"], true);
    assert_eq!(
        count(&event_types(client, "INT-5").await, "InterestAccrued"),
        1
    );
}

#[tokio::test]
async fn interest_on_table_storage() {
    let app = TestApp::start_with(&[DAY_AHEAD]).await;
    scenario(&app).await;
}

#[tokio::test]
async fn interest_on_append_blobs() {
    let app = TestApp::start_with(&[DAY_AHEAD, BLOB]).await;
    scenario(&app).await;
}
