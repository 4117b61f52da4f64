//! Transfers through the host simulator on both backends: TransferMoney moves money once
//! (a retry with the same id answers the transfer as it stands), refuses up front what the
//! debit or the target cannot take (nothing written), GetTransferState shows the state and
//! steps, CancelMoneyTransfer cancels only a transfer not yet debited, and the TransferSweep
//! timer finishes an interrupted transfer, refunding the debit when the target closed meanwhile.

use crate::support;

use std::time::Duration;

use serde_json::{json, Value};
use streamfold::storage::StorageAccount;
use streamfold::testing::RawClients;
use support::{Client, TestApp};

const BLOB: (&str, &str) = ("Bank.ALL", "AppendBlob;AzureWebJobsStorage");
const SWEEP: &str = "TransferSweep";

async fn open(client: &Client, account: &str, deposit: Option<&str>) {
    client.open_account(account, &json!({})).await;
    if let Some(amount) = deposit {
        client.deposit(account, amount).await;
    }
}

async fn balance(client: &Client, account: &str) -> String {
    let reply = client.get(&format!("/api/GetBalance/{account}")).await;
    reply.ok(200)["balance"].as_str().unwrap().to_owned()
}

fn steps(transfer: &Value) -> Vec<String> {
    transfer["steps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["step"].as_str().unwrap().to_owned())
        .collect()
}

/// Account events of `account` with their transfer ids, by type.
async fn transfer_events(client: &Client, account: &str, event_type: &str) -> Vec<String> {
    support::recorded_events(client, "Bank", "Account", account, 1)
        .await
        .iter()
        .filter(|e| e.event_type == event_type)
        .map(|e| {
            let data: Value = serde_json::from_str(e.data.get()).unwrap();
            data["transferId"].as_str().unwrap().to_owned()
        })
        .collect()
}

/// Records a transfer's request straight on its stream (as a process that died right after
/// recording it would leave it).
async fn requested_only(client: &Client, id: &str, from: &str, to: &str, amount: &str) {
    client
        .post(
            &format!("/api/streams/Bank/Transfer/{id}"),
            &json!({"expectedVersion": "noStream", "events": [{
                "eventType": "TransferRequested",
                "data": {"from": from, "to": to, "amount": amount}
            }]}),
        )
        .await
        .ok(201);
}

async fn run_sweep(app: &TestApp, nth: usize) -> Value {
    let run = support::run_timer(&app.client, &app.host, SWEEP, nth, Duration::from_secs(60)).await;
    assert!(run.succeeded, "{run:?}");
    run.return_value
}

async fn scenario(app: &TestApp) {
    let client = &app.client;
    open(client, "TA", Some("100")).await;
    open(client, "TB", None).await;
    open(client, "TC", None).await;

    let body = json!({"from": "TA", "to": "TB", "amount": "30", "commentary": "rent"});
    let done = client.post("/api/TransferMoney/T-1", &body).await;
    let done = done.ok(201).clone();
    assert_eq!(done["state"], "completed", "{done}");
    assert_eq!(done["commentary"], "rent");
    assert_eq!(
        steps(&done),
        [
            "TransferRequested",
            "TransferDebitStarted",
            "TransferDebited",
            "TransferCredited"
        ]
    );
    assert_eq!(balance(client, "TA").await, "70.00");
    assert_eq!(balance(client, "TB").await, "30.00");

    // A retry: the transfer as it stands, nothing moved again.
    let again = client.post("/api/transfermoney/T-1", &body).await;
    assert_eq!(again.ok(200)["state"], "completed");
    assert_eq!(balance(client, "TA").await, "70.00");
    assert_eq!(
        transfer_events(client, "TA", "MoneyTransferredOut").await,
        ["T-1"]
    );
    assert_eq!(
        transfer_events(client, "TB", "MoneyTransferredIn").await,
        ["T-1"]
    );
    let other = client
        .post(
            "/api/TransferMoney/T-1",
            &json!({"from": "TA", "to": "TB", "amount": "31"}),
        )
        .await;
    assert_eq!(
        other.problem(409)["type"],
        "urn:streamfold:problem:transfer-exists"
    );

    // Without an id: one is made.
    let fresh = client
        .post(
            "/api/TransferMoney",
            &json!({"from": "TB", "to": "TA", "amount": 5}),
        )
        .await;
    let fresh = fresh.ok(201);
    assert_eq!(fresh["state"], "completed");
    let fresh_id = fresh["transferId"].as_str().unwrap().to_owned();
    let state = client
        .get(&format!("/api/GetTransferState/{fresh_id}"))
        .await;
    assert_eq!(state.ok(200)["state"], "completed");

    // Refused up front: nothing written.
    let broke = client
        .post(
            "/api/TransferMoney/T-2",
            &json!({"from": "TA", "to": "TB", "amount": "1000"}),
        )
        .await;
    let broke = broke.problem(422);
    assert_eq!(broke["type"], "urn:streamfold:problem:insufficient-funds");
    client.get("/api/GetTransferState/T-2").await.problem(404);
    let unknown = client
        .post(
            "/api/TransferMoney/T-3",
            &json!({"from": "TA", "to": "NOPE", "amount": "1"}),
        )
        .await;
    assert_eq!(
        unknown.problem(404)["type"],
        "urn:streamfold:problem:account-not-found"
    );
    client
        .post("/api/CloseAccount/TC", &json!({}))
        .await
        .ok(200);
    let closed = client
        .post(
            "/api/TransferMoney/T-4",
            &json!({"from": "TA", "to": "TC", "amount": "1"}),
        )
        .await;
    assert_eq!(
        closed.problem(422)["type"],
        "urn:streamfold:problem:account-closed"
    );
    let same = client
        .post(
            "/api/TransferMoney/T-5",
            &json!({"from": "TA", "to": "TA", "amount": "1"}),
        )
        .await;
    assert_eq!(
        same.problem(400)["type"],
        "urn:streamfold:problem:same-account"
    );
    let bad_id = client
        .post(
            "/api/TransferMoney/bad%20id",
            &json!({"from": "TA", "to": "TB", "amount": "1"}),
        )
        .await;
    assert_eq!(
        bad_id.problem(400)["type"],
        "urn:streamfold:problem:invalid-transfer-id"
    );
    let missing = client.get("/api/GetTransferState/NOPE").await;
    assert_eq!(
        missing.problem(404)["type"],
        "urn:streamfold:problem:transfer-not-found"
    );

    // Cancelling: only before the debit.
    let late = client
        .post("/api/CancelMoneyTransfer/T-1", &json!({}))
        .await;
    let late = late.problem(409);
    assert_eq!(
        late["type"],
        "urn:streamfold:problem:transfer-not-cancellable"
    );
    assert_eq!(late["state"], "completed");
    requested_only(client, "T-CAN", "TA", "TB", "5.00").await;
    let cancelled = client
        .post(
            "/api/CancelMoneyTransfer/T-CAN",
            &json!({"commentary": "changed my mind"}),
        )
        .await;
    assert_eq!(cancelled.ok(200)["state"], "cancelled");
    let twice = client
        .post("/api/CancelMoneyTransfer/T-CAN", &json!({}))
        .await;
    assert_eq!(twice.ok(200)["state"], "cancelled");

    // Interrupted transfers, finished by the sweep: one completes, one is refunded because its
    // target closed before the credit.
    requested_only(client, "T-INT", "TA", "TB", "10.00").await;
    open(client, "TD", None).await;
    requested_only(client, "T-REF", "TB", "TD", "4.00").await;
    client
        .post("/api/CloseAccount/TD", &json!({}))
        .await
        .ok(200);
    let report = run_sweep(app, 1).await;
    assert_eq!(report["finished"], 2, "{report}");
    let int = client.get("/api/GetTransferState/T-INT").await;
    assert_eq!(int.ok(200)["state"], "completed");
    let refunded = client.get("/api/GetTransferState/T-REF").await;
    let refunded = refunded.ok(200);
    assert_eq!(refunded["state"], "refunded", "{refunded}");
    assert_eq!(
        steps(refunded),
        [
            "TransferRequested",
            "TransferDebitStarted",
            "TransferDebited",
            "TransferCreditFailed",
            "TransferRefunded"
        ]
    );
    let cancelled = client.get("/api/GetTransferState/T-CAN").await;
    assert_eq!(cancelled.ok(200)["state"], "cancelled");
    // TA: 100 - 30 + 5 - 10; TB: 30 - 5 + 10 (its 4 went out and came back).
    assert_eq!(balance(client, "TA").await, "65.00");
    assert_eq!(balance(client, "TB").await, "35.00");
    assert_eq!(balance(client, "TD").await, "0.00");
    assert_eq!(
        transfer_events(client, "TB", "MoneyTransferRefunded").await,
        ["T-REF"]
    );
    // A second sweep finds nothing to do.
    assert_eq!(run_sweep(app, 2).await["finished"], 0);
}

#[tokio::test]
async fn transfers_on_table_storage() {
    let app = TestApp::start().await;
    scenario(&app).await;
}

#[tokio::test]
async fn transfers_on_append_blobs() {
    let app = TestApp::start_with(&[BLOB]).await;
    scenario(&app).await;
}

/// A transfer whose stream the Append Blob backend created but never wrote: a writer killed
/// between creating the stream's first segment and appending to it leaves that segment empty,
/// and listings show the stream. The sweep passes over it (it used to count it failed and
/// answer 500 on every run), it is no transfer, and the id can still be used.
#[tokio::test]
async fn the_sweep_passes_over_a_transfer_stream_a_killed_writer_left_empty() {
    let app = TestApp::start_with(&[BLOB]).await;
    let client = &app.client;
    open(client, "EA", Some("20")).await;
    open(client, "EB", None).await;
    requested_only(client, "T-HALF", "EA", "EB", "5.00").await;
    let account = StorageAccount::from_connection_string(&app.azurite.connection_string()).unwrap();
    account
        .blob_service_client()
        .unwrap()
        .container_client("streamfold")
        .blob_client("Bank/Transfer/T-EMPTY/000000.jsonl")
        .put_append_blob()
        .await
        .unwrap();

    let report = run_sweep(&app, 1).await;
    assert_eq!(report["transfers"], 2, "{report}");
    assert_eq!(report["finished"], 1, "{report}");
    assert_eq!(report["failed"], 0, "{report}");
    let empty = client.get("/api/GetTransferState/T-EMPTY").await;
    assert_eq!(
        empty.problem(404)["type"],
        "urn:streamfold:problem:transfer-not-found"
    );
    let made = client
        .post(
            "/api/TransferMoney/T-EMPTY",
            &json!({"from": "EA", "to": "EB", "amount": "2.00"}),
        )
        .await;
    assert_eq!(made.ok(201)["state"], "completed");
    assert_eq!(balance(client, "EB").await, "7.00");
}
