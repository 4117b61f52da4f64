//! The bank owns its streams at every door, and a bad stream never hurts another: end to end
//! through the host simulator on real Azurite.
//!
//! - The generic AppendEvents API writes to `Bank/Account` streams only what the bank's
//!   commands could have written (422 `invalid-domain-event` otherwise, nothing written),
//!   keeps exact retries idempotent, and owns `metadata.source` / `who`.
//! - Events the bank's fold refuses, written straight to storage with the library's
//!   `EventStore` (as data written before the guard, or by another tool, would be), make the
//!   queries of that account answer 500 `stream-unreadable` naming the stream and the event,
//!   never a panic; `Accounts`, `RebuildReadModels` and the Projector carry on with the other
//!   accounts and report the bad ones.

use crate::support;

use serde_json::{json, Value};
use streamfold::notify::{Notification, NotificationSchema};
use streamfold::readmodel::{Checkpoint, ReadModelStore, SaveCondition, TableReadModelStore};
use streamfold::storage::{StorageAccount, TableStore};
use streamfold::stream::{EventStore, ExpectedVersion, NewEvent, StreamId};
use support::{event_grid_webhook_path, recorded_events, Client, TestApp};

const NO_SELF_PUBLISHING: &[(&str, &str)] = &[
    ("RaiseEntityCreationNotification", "false"),
    ("RaiseEventNotification", "false"),
];

fn append_body(expected: Value, events: Value) -> Value {
    json!({"expectedVersion": expected, "events": events})
}

fn opened(limit: &str) -> Value {
    json!({"eventType": "AccountOpened", "data": {"overdraftLimit": limit}})
}

fn moved(event_type: &str, amount: Value) -> Value {
    json!({"eventType": event_type, "data": {"amount": amount}})
}

async fn append(client: &Client, account: &str, expected: Value, events: Value) -> support::Reply {
    client
        .post(
            &format!("/api/streams/Bank/Account/{account}"),
            &append_body(expected, events),
        )
        .await
}

/// Asserts a 422 `invalid-domain-event` for event `index`, and returns its reason.
fn refused(reply: &support::Reply, index: u64) -> String {
    let body = reply.problem(422);
    assert_eq!(reply.slug(), "invalid-domain-event", "{body}");
    assert_eq!(body["index"], index, "{body}");
    assert!(body["stream"]
        .as_str()
        .unwrap()
        .starts_with("Bank/Account/"));
    body["reason"].as_str().unwrap().to_owned()
}

async fn version(client: &Client, account: &str) -> usize {
    recorded_events(client, "Bank", "Account", account, 1)
        .await
        .len()
}

/// Item 1 of issue 9: what the generic API accepted before, and what it must refuse now.
#[tokio::test]
async fn the_generic_api_writes_only_what_the_bank_could_have_written() {
    let app = TestApp::start().await;
    let c = &app.client;

    // The three poisons of the issue: refused, and the stream is not created.
    let huge = append(
        c,
        "P1",
        json!("noStream"),
        json!([opened("79228162514264337593543950335")]),
    )
    .await;
    assert!(refused(&huge, 0).contains("at most"));
    let empty = append(
        c,
        "P1",
        json!("noStream"),
        json!([{"eventType": "AccountOpened", "data": {}}]),
    )
    .await;
    refused(&empty, 0);
    assert_eq!(version(c, "P1").await, 0);
    c.get("/api/GetBalance/P1").await.problem(404);

    // A valid opening through the generic API is accepted, then each bad event is refused
    // against the state it would follow.
    append(c, "P1", json!("noStream"), json!([opened("50.00")]))
        .await
        .ok(201);
    let cases: Vec<(Value, &str)> = vec![
        (json!([moved("MoneyDeposited", json!("-500"))]), "negative"),
        (json!([moved("MoneyDeposited", json!("0"))]), "zero"),
        (
            json!([moved("MoneyDeposited", json!("1_000"))]),
            "underscore",
        ),
        (json!([moved("MoneyDeposited", json!("1e2"))]), "exponent"),
        (json!([moved("MoneyDeposited", json!("1.001"))]), "places"),
        (
            json!([moved("MoneyDeposited", json!(5))]),
            "a number, not the stored string",
        ),
        (
            json!([moved("MoneyDeposited", json!("1000000000000000.01"))]),
            "above the maximum",
        ),
        (
            json!([{"eventType": "MoneyDeposited", "data": {"amount": "1.00", "bonus": true}}]),
            "unknown field",
        ),
        (
            json!([{"eventType": "MoneyDeposited", "data": "1.00"}]),
            "data not an object",
        ),
        (
            json!([{"eventType": "Bonus", "data": {}}]),
            "unknown event type",
        ),
        (json!([opened("0.00")]), "opened twice"),
        (
            json!([moved("MoneyWithdrawn", json!("50.01"))]),
            "beyond the available",
        ),
        (
            json!([{"eventType": "AccountClosed", "data": {}}, moved("MoneyDeposited", json!("1.00"))]),
            "money after closing",
        ),
    ];
    for (events, what) in cases {
        let reply = append(c, "P1", json!("any"), events).await;
        let index = if what == "money after closing" { 1 } else { 0 };
        let reason = refused(&reply, index);
        assert!(!reason.is_empty(), "{what}");
    }
    // The second event is checked against the state the first one makes.
    let two = append(
        c,
        "P1",
        json!(1),
        json!([
            moved("MoneyDeposited", json!("10.00")),
            moved("MoneyWithdrawn", json!("60.01"))
        ]),
    )
    .await;
    refused(&two, 1);
    assert_eq!(version(c, "P1").await, 1);

    // What the bank's commands write is accepted, and the account keeps working.
    append(
        c,
        "P1",
        json!(1),
        json!([
            moved("MoneyDeposited", json!("10.00")),
            moved("MoneyWithdrawn", json!("60.00"))
        ]),
    )
    .await
    .ok(201);
    let balance = c.get("/api/GetBalance/P1").await;
    assert_eq!(balance.ok(200)["balance"], "-50.00");
    c.post("/api/Deposit/P1", &json!({"amount": 1}))
        .await
        .ok(200);
    c.post("/api/RebuildReadModels", &json!({})).await.ok(200);
    let accounts = c.get("/api/Accounts").await;
    assert_eq!(accounts.ok(200)["accounts"][0]["balance"], "-49.00");

    // Streams no domain owns take any event, as before.
    c.post(
        "/api/streams/Shop/Cart/C1",
        &append_body(
            json!("any"),
            json!([{"eventType": "Anything", "data": {"x": -1}}]),
        ),
    )
    .await
    .ok(201);
}

/// The caller's expectation is answered as before, and an exact retry gets the original
/// result even when the state it was checked against has moved since.
#[tokio::test]
async fn expectations_and_retries_through_the_guard() {
    let app = TestApp::start().await;
    let c = &app.client;
    c.post("/api/OpenAccount/R1", &json!({})).await.ok(201);
    c.post("/api/Deposit/R1", &json!({"amount": "100"}))
        .await
        .ok(200);

    let stale = append(
        c,
        "R1",
        json!(1),
        json!([moved("MoneyDeposited", json!("1.00"))]),
    )
    .await;
    stale.problem(409);
    assert_eq!(stale.slug(), "wrong-expected-version");
    assert_eq!(stale.body["actualVersion"], 2);

    let withdrawal = json!([{
        "eventType": "MoneyWithdrawn",
        "eventId": "6a1f9a57-7a55-4a0e-9a34-5d0a3c1b9e01",
        "data": {"amount": "100.00"}
    }]);
    let first = append(c, "R1", json!(2), withdrawal.clone()).await;
    assert_eq!(first.ok(201)["version"], 3);
    // The retry's expectation (2) and its rules (100.00 of 0.00 available) would both refuse
    // it now; it is the same append, so it answers the original result.
    for expected in [json!(2), json!("any")] {
        let again = append(c, "R1", expected, withdrawal.clone()).await;
        let body = again.ok(201);
        assert_eq!(body["duplicate"], true, "{body}");
        assert_eq!(
            (body["firstSequence"].clone(), body["version"].clone()),
            (json!(3), json!(3))
        );
    }
    // The same id with other events is a reused id, as on any stream.
    let mut mixed = withdrawal.as_array().unwrap().clone();
    mixed.push(moved("MoneyDeposited", json!("1.00")));
    let reused = append(c, "R1", json!("any"), Value::Array(mixed)).await;
    reused.problem(409);
    assert_eq!(reused.slug(), "event-id-reused");
    assert_eq!(version(c, "R1").await, 3);
}

/// Item 10 of issue 9: `source` and `who` are the server's.
#[tokio::test]
async fn source_and_who_are_the_servers_to_set() {
    let app = TestApp::start().await;
    let c = &app.client;
    for (field, value) in [
        ("source", json!("streamfold-bank")),
        ("who", json!("admin")),
    ] {
        let mut event = json!({"eventType": "Anything", "data": {}});
        event["metadata"] = json!({ field: value });
        let reply = append(
            c,
            "M1",
            json!("any"),
            json!([{"eventType": "AccountOpened", "data": {"overdraftLimit": "0.00"}}, event]),
        )
        .await;
        reply.problem(400);
        assert_eq!(reply.slug(), "server-owned-metadata");
        assert_eq!(reply.body["index"], 1);
        assert_eq!(reply.body["field"], format!("metadata.{field}"));
    }
    assert_eq!(version(c, "M1").await, 0);
    // Unknown metadata fields are refused too (the document allows none).
    let unknown = append(
        c,
        "M1",
        json!("any"),
        json!([{"eventType": "AccountOpened", "data": {"overdraftLimit": "0.00"}, "metadata": {"role": "x"}}]),
    )
    .await;
    unknown.problem(400);

    append(
        c,
        "M1",
        json!("any"),
        json!([{"eventType": "AccountOpened", "data": {"overdraftLimit": "0.00"},
                "metadata": {"commentary": "migrated", "causationId": "c-1", "source": null}}]),
    )
    .await
    .ok(201);
    c.post(
        "/api/streams/Shop/Cart/C1",
        &append_body(json!("any"), json!([{"eventType": "Anything", "data": {}}])),
    )
    .await
    .ok(201);
    c.post("/api/Deposit/M1", &json!({"amount": 1}))
        .await
        .ok(200);
    let events = c.get("/api/GetAccountHistory/M1").await;
    let events = events.ok(200)["events"].as_array().unwrap().clone();
    assert_eq!(events[0]["metadata"]["source"], "streamfold-api");
    assert_eq!(events[0]["metadata"]["commentary"], "migrated");
    assert!(events[0]["metadata"].get("who").is_none());
    assert_eq!(events[1]["metadata"]["source"], "streamfold-bank");
    let cart = c.get("/api/streams/Shop/Cart/C1").await;
    assert_eq!(
        cart.ok(200)["events"][0]["metadata"]["source"],
        "streamfold-api"
    );
}

/// Item 3 of issue 9, through the commands.
#[tokio::test]
async fn commands_refuse_amounts_outside_the_grammar() {
    let app = TestApp::start().await;
    let c = &app.client;
    c.post("/api/OpenAccount/D1", &json!({})).await.ok(201);
    for amount in [
        r#""1_000""#,
        r#""1e2""#,
        "1e2",
        r#""0x10""#,
        r#""+5""#,
        r#"" 5""#,
        r#""1 0""#,
        r#"".5""#,
        r#""5.""#,
        r#""12.500""#,
        r#""""#,
    ] {
        let reply = c
            .post_raw("/api/Deposit/D1", format!(r#"{{"amount": {amount}}}"#))
            .await;
        reply.problem(400);
        assert_eq!(reply.slug(), "invalid-amount", "{amount}");
        assert_eq!(reply.body["field"], "amount", "{amount}");
    }
    let balance = c.get("/api/GetBalance/D1").await;
    assert_eq!(balance.ok(200)["sequence"], 1);
}

/// Stored events the fold refuses, written straight to the app's storage.
async fn poison(app: &TestApp, account: &str, events: Vec<(&str, &str)>) {
    let account_store =
        StorageAccount::from_connection_string(&app.azurite.connection_string()).unwrap();
    let store = TableStore::new(account_store);
    let stream = StreamId::new("Bank", "Account", account).unwrap();
    let events = events
        .into_iter()
        .map(|(event_type, data)| {
            NewEvent::from_raw(
                event_type,
                serde_json::value::RawValue::from_string(data.to_owned()).unwrap(),
            )
        })
        .collect();
    store
        .append(&stream, ExpectedVersion::Any, events)
        .await
        .unwrap();
}

/// Asserts the `stream-unreadable` problem naming `account` and event `sequence`.
fn unreadable(reply: &support::Reply, account: &str, sequence: u64) {
    let body = reply.problem(500);
    assert_eq!(reply.slug(), "stream-unreadable", "{body}");
    assert_eq!(body["stream"], format!("Bank/Account/{account}"), "{body}");
    assert_eq!(body["sequence"], sequence, "{body}");
}

#[tokio::test]
async fn a_poisoned_stream_answers_a_problem_and_hurts_no_other() {
    let app = TestApp::start_with(NO_SELF_PUBLISHING).await;
    let c = &app.client;
    c.post("/api/OpenAccount/GOOD-1", &json!({})).await.ok(201);
    c.post("/api/Deposit/GOOD-1", &json!({"amount": 5}))
        .await
        .ok(200);
    poison(
        &app,
        "BAD-1",
        vec![(
            "AccountOpened",
            r#"{"overdraftLimit":"79228162514264337593543950335"}"#,
        )],
    )
    .await;
    poison(&app, "BAD-2", vec![("AccountOpened", "{}")]).await;
    poison(
        &app,
        "BAD-3",
        vec![
            ("AccountOpened", r#"{"overdraftLimit":"0.00"}"#),
            ("MoneyDeposited", r#"{"amount":"-500"}"#),
        ],
    )
    .await;

    // Queries, commands, projections and appends of a bad account: a problem that names the
    // stream and the event, never a dropped connection or an empty 500.
    unreadable(&c.get("/api/GetBalance/BAD-1").await, "BAD-1", 1);
    unreadable(
        &c.post("/api/Deposit/BAD-1", &json!({"amount": 1})).await,
        "BAD-1",
        1,
    );
    unreadable(&c.get("/api/GetBalance/BAD-2").await, "BAD-2", 1);
    unreadable(&c.get("/api/GetBalance/BAD-3").await, "BAD-3", 2);
    unreadable(
        &c.get("/api/projections/Bank/Account/BAD-3/account").await,
        "BAD-3",
        2,
    );
    unreadable(
        &append(
            c,
            "BAD-3",
            json!("any"),
            json!([moved("MoneyDeposited", json!("1.00"))]),
        )
        .await,
        "BAD-3",
        2,
    );
    // Before the refused event, the account reads.
    let before = c.get("/api/GetBalance/BAD-3?asOfSequence=1").await;
    assert_eq!(before.ok(200)["balance"], "0.00");

    // The Projector marks the bad row and succeeds (no redelivery for ever).
    let events = recorded_events(c, "Bank", "Account", "BAD-3", 1).await;
    let stream = StreamId::new("Bank", "Account", "BAD-3").unwrap();
    let notification = Notification::new_event(&stream, &events[1]);
    let delivery: Value = serde_json::from_slice(
        &NotificationSchema::EventGridEvent
            .encode(&notification)
            .unwrap(),
    )
    .unwrap();
    let status = c
        .http()
        .post(c.url(&event_grid_webhook_path("Projector")))
        .header("aeg-event-type", "Notification")
        .json(&vec![delivery])
        .send()
        .await
        .unwrap()
        .status()
        .as_u16();
    assert_eq!(status, 202);

    // The rebuild carries on and counts the bad streams; it still answers 200.
    let rebuilt = c.post("/api/RebuildReadModels", &json!({})).await;
    let report = rebuilt.ok(200);
    assert_eq!(report["streams"], 4, "{report}");
    assert_eq!(report["failed"], 0, "{report}");
    assert_eq!(report["unreadable"], 3, "{report}");
    let mut named: Vec<&str> = report["unreadableStreams"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["instance"].as_str().unwrap())
        .collect();
    named.sort_unstable();
    assert_eq!(named, ["BAD-1", "BAD-2", "BAD-3"]);

    // The listing answers the good accounts and reports the bad rows apart.
    let listing = c.get("/api/Accounts").await;
    let body = listing.ok(200);
    let accounts = body["accounts"].as_array().unwrap();
    assert_eq!(accounts.len(), 1, "{body}");
    assert_eq!(accounts[0]["accountNumber"], "GOOD-1");
    assert_eq!(accounts[0]["balance"], "5.00");
    let bad: Vec<(&str, u64)> = body["unreadable"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            (
                r["accountNumber"].as_str().unwrap(),
                r["sequence"].as_u64().unwrap(),
            )
        })
        .collect();
    assert_eq!(bad, [("BAD-1", 1), ("BAD-2", 1), ("BAD-3", 2)]);
    let overdraft = c.get("/api/Accounts?inOverdraft=false").await;
    assert_eq!(overdraft.ok(200)["count"], 1);

    // A row edited by hand into a state no fold makes (its available amount overflows) is
    // reported too, not a failure of the page.
    let rows = TableReadModelStore::new(
        &StorageAccount::from_connection_string(&app.azurite.connection_string()).unwrap(),
    );
    let max = "79228162514264337593543950335";
    let edited = Checkpoint {
        projection: "account".into(),
        max_timestamp: None,
        state: serde_json::value::RawValue::from_string(format!(
            r#"{{"status":"open","balance":"{max}","overdraftLimit":"{max}"}}"#
        ))
        .unwrap(),
        sequence: 1,
        projection_version: 4, // the account projection's version (src/bank/account.rs)
        failure: None,
    };
    let saved = rows
        .save(
            "account",
            &StreamId::new("Bank", "Account", "EDIT-1").unwrap(),
            &edited,
            &SaveCondition::MustNotExist,
        )
        .await
        .unwrap();
    assert!(saved.is_saved());
    let listing = c.get("/api/Accounts").await;
    let body = listing.ok(200);
    assert_eq!(body["count"], 1, "{body}");
    assert_eq!(body["unreadable"][3]["accountNumber"], "EDIT-1", "{body}");

    // The good account is untouched by all of it.
    c.post("/api/Withdraw/GOOD-1", &json!({"amount": 5}))
        .await
        .ok(200);
}
