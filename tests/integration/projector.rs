//! The Projector and the bank's read models end to end: the assembled app under the host
//! simulator on real Azurite, notifications delivered to the host's Event Grid webhook the
//! way Event Grid delivers them — in order, duplicated, reversed (an event notified before its
//! predecessors) and concurrently — and after each delivery the account's row equals what
//! replaying its stream gives (`GetBalance`, `RunProjection .../account`). Also: the plain
//! webhook's handshakes, the `Accounts` filter and paging, and `RebuildReadModels` filling
//! rows that were never notified and replacing rows that are wrong.

use crate::support;

use rust_decimal::Decimal;
use serde_json::{json, Value};
use streamfold::notify::{Notification, NotificationSchema};
use streamfold::readmodel::{ReadModelStore, SaveCondition, TableReadModelStore};
use streamfold::storage::StorageAccount;
use streamfold::stream::{RecordedEvent, StreamId};
use streamfold_testbed::hostsim::{HostConfig, HostSim, TriggerValueEncoding};
use streamfold_testbed::Azurite;
use support::{recorded_events, Client, TestApp};

const DOMAIN: &str = "Bank";
const ENTITY: &str = "Account";
/// The bank's read model (the account projection).
const MODEL: &str = "account";
/// The app does not publish by itself here: each test delivers exactly what it means to.
const NO_SELF_PUBLISHING: &[(&str, &str)] = &[
    ("RaiseEntityCreationNotification", "false"),
    ("RaiseEventNotification", "false"),
];

async fn start() -> TestApp {
    TestApp::start_with(NO_SELF_PUBLISHING).await
}

fn stream(account: &str) -> StreamId {
    StreamId::new(DOMAIN, ENTITY, account).unwrap()
}

/// The stored events of an account.
async fn events(client: &Client, account: &str) -> Vec<RecordedEvent> {
    recorded_events(client, DOMAIN, ENTITY, account, 1).await
}

/// The notification of event `sequence` (1-based) of `account`, in `schema`, as JSON.
fn notification(
    events: &[RecordedEvent],
    account: &str,
    sequence: u64,
    schema: NotificationSchema,
) -> Value {
    let event = &events[sequence as usize - 1];
    let n = Notification::new_event(&stream(account), event);
    serde_json::from_slice(&schema.encode(&n).unwrap()).unwrap()
}

fn grid(events: &[RecordedEvent], account: &str, sequence: u64) -> Value {
    notification(
        events,
        account,
        sequence,
        NotificationSchema::EventGridEvent,
    )
}

/// Delivers `batch` to the host's Event Grid webhook for the Projector, as Event Grid does;
/// the host's status (202 when every invocation succeeded).
async fn deliver(client: &Client, batch: &[Value]) -> u16 {
    client
        .deliver_to_projector(serde_json::to_string(batch).unwrap())
        .await
}

async fn open(client: &Client, account: &str, limit: &str) {
    client
        .open_account(account, &json!({"overdraftLimit": limit}))
        .await;
}

/// Every row of the read model, by account number.
async fn rows(client: &Client, query: &str) -> Vec<Value> {
    let reply = client.get(&format!("/api/Accounts{query}")).await;
    let body = reply.ok(200);
    let accounts = body["accounts"].as_array().unwrap().clone();
    assert_eq!(body["count"], accounts.len());
    accounts
}

async fn row(client: &Client, account: &str) -> Option<Value> {
    rows(client, "")
        .await
        .into_iter()
        .find(|r| r["accountNumber"] == account)
}

/// The account's row equals the replay of its whole stream, in both generic and bank terms.
async fn assert_row_is_exact(client: &Client, account: &str) {
    let row = row(client, account)
        .await
        .unwrap_or_else(|| panic!("no row for {account}"));
    let balance = client.get(&format!("/api/GetBalance/{account}")).await;
    let replay = balance.ok(200);
    support::assert_row_matches_replay(account, &row, replay);
    let projection = client
        .get(&format!(
            "/api/projections/{DOMAIN}/{ENTITY}/{account}/{MODEL}"
        ))
        .await;
    let projected = projection.ok(200);
    assert_eq!(row["sequence"], projected["sequence"]);
    let state = &projected["state"];
    assert_eq!(row["status"], state["status"]);
    for (field, state_field) in [("balance", "balance"), ("overdraftLimit", "overdraftLimit")] {
        assert_eq!(
            decimal(&row[field]),
            decimal(&state[state_field]),
            "{account}.{field}"
        );
    }
}

fn decimal(value: &Value) -> Decimal {
    value.as_str().unwrap().parse().unwrap()
}

/// The sequence the row of `account` is at.
async fn row_sequence(client: &Client, account: &str) -> Option<u64> {
    row(client, account)
        .await
        .map(|r| r["sequence"].as_u64().unwrap())
}

fn projector_runs(app: &TestApp) -> Vec<streamfold_testbed::hostsim::InvocationRecord> {
    app.host
        .invocations()
        .into_iter()
        .filter(|i| i.function == "Projector")
        .collect()
}

/// Events an invocation folded in, from its log line (`account 5→15 (10 applied, attempt 1)`).
fn applied_in(logs: &[String]) -> u64 {
    logs.iter()
        .filter_map(|line| {
            let (before, _) = line.split_once(" applied")?;
            before.rsplit('(').next()?.parse::<u64>().ok()
        })
        .sum()
}

#[tokio::test]
async fn rows_stay_exact_under_ordered_duplicated_reversed_and_concurrent_delivery() {
    let app = start().await;
    let c = &app.client;
    let acc = "ACC-1";

    // In order.
    open(c, acc, "100").await;
    let e = events(c, acc).await;
    let first = Notification::new_entity(&stream(acc), &e[0]);
    let new_entity: Value =
        serde_json::from_slice(&NotificationSchema::EventGridEvent.encode(&first).unwrap())
            .unwrap();
    assert_eq!(deliver(c, &[new_entity, grid(&e, acc, 1)]).await, 202);
    assert_eq!(row_sequence(c, acc).await, Some(1));
    assert_row_is_exact(c, acc).await;
    c.deposit(acc, "10.10").await;
    let e = events(c, acc).await;
    assert_eq!(deliver(c, &[grid(&e, acc, 2)]).await, 202);
    assert_eq!(row_sequence(c, acc).await, Some(2));
    assert_row_is_exact(c, acc).await;

    // Duplicated: nothing changes.
    assert_eq!(
        deliver(c, &[grid(&e, acc, 2), grid(&e, acc, 1), grid(&e, acc, 2)]).await,
        202
    );
    assert_eq!(row_sequence(c, acc).await, Some(2));
    assert_row_is_exact(c, acc).await;

    // Reversed: event 5 is notified first, so 3 and 4 are applied with it (the gap is
    // filled); their own notifications then change nothing.
    c.deposit(acc, "5").await;
    c.withdraw(acc, "50").await;
    c.post(
        &format!("/api/SetOverdraftLimit/{acc}"),
        &json!({"limit": "60"}),
    )
    .await
    .ok(200);
    let e = events(c, acc).await;
    assert_eq!(deliver(c, &[grid(&e, acc, 5)]).await, 202);
    assert_eq!(row_sequence(c, acc).await, Some(5));
    assert_row_is_exact(c, acc).await;
    let row5 = row(c, acc).await;
    assert_eq!(deliver(c, &[grid(&e, acc, 4)]).await, 202);
    assert_eq!(deliver(c, &[grid(&e, acc, 3)]).await, 202);
    assert_eq!(row(c, acc).await, row5);
    assert_eq!(row5.as_ref().unwrap()["inOverdraft"], true);

    // Concurrent: ten more events, every notification twice, in two deliveries at once (the
    // host invokes the Projector once per event, in parallel).
    for i in 0..10 {
        if i % 3 == 0 {
            c.withdraw(acc, "1.25").await;
        } else {
            c.deposit(acc, "2.50").await;
        }
    }
    let e = events(c, acc).await;
    assert_eq!(e.len(), 15);
    let before = projector_runs(&app).len();
    let batch: Vec<Value> = (6..=15).rev().map(|n| grid(&e, acc, n)).collect();
    let (a, b) = futures::join!(deliver(c, &batch), deliver(c, &batch));
    assert_eq!((a, b), (202, 202));
    assert_eq!(row_sequence(c, acc).await, Some(15));
    assert_row_is_exact(c, acc).await;
    let runs = projector_runs(&app);
    assert!(
        runs.iter().all(|i| i.succeeded),
        "a lost race is retried within the invocation"
    );
    let concurrent = &runs[before..];
    assert_eq!(concurrent.len(), 20);
    // Across the twenty invocations, the ten new events were folded into saved rows exactly
    // once in all (each invocation logs how many it applied).
    let applied: u64 = concurrent.iter().map(|r| applied_in(&r.logs)).sum();
    assert_eq!(
        applied,
        10,
        "{:#?}",
        concurrent.iter().map(|r| &r.logs).collect::<Vec<_>>()
    );

    // A notification about an event the stream does not have fails, for a redelivery. (It
    // carries the id streamfold derives for event 16: one with another id is forged, and is
    // acknowledged and skipped.)
    let mut sixteenth = e[14].clone();
    sixteenth.sequence = 16;
    let ahead = notification(&[sixteenth], acc, 1, NotificationSchema::EventGridEvent);
    assert_eq!(deliver(c, &[ahead]).await, 500);
    assert_eq!(row_sequence(c, acc).await, Some(15));
}

#[tokio::test]
async fn events_passed_as_json_strings_and_cloud_events_reach_the_projector() {
    // A host that passes each event JSON-encoded twice in a string, as the real host does for
    // string-typed trigger values; the handler must decode it.
    let azurite = Azurite::start().await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    support::assemble_app(dir.path());
    let mut config = HostConfig::new(dir.path());
    config.settings = vec![
        ("AzureWebJobsStorage".into(), azurite.connection_string()),
        ("RUST_LOG".into(), "warn".into()),
    ];
    config.settings.extend(
        NO_SELF_PUBLISHING
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string())),
    );
    config.run_timers = false;
    config.trigger_value_encoding = TriggerValueEncoding::DoubleEncodedString;
    let host = HostSim::start(config).await.unwrap();
    let c = &Client::new(host.base_url());

    open(c, "S-1", "0").await;
    c.deposit("S-1", "1").await;
    let e = events(c, "S-1").await;
    assert_eq!(deliver(c, &[grid(&e, "S-1", 1)]).await, 202);
    assert_row_is_exact(c, "S-1").await;
    let runs = host.invocations();
    assert!(runs
        .iter()
        .any(|r| r.function == "Projector" && r.succeeded));

    c.deposit("S-1", "2").await;
    let e = events(c, "S-1").await;
    let cloud = notification(&e, "S-1", 3, NotificationSchema::CloudEvent);
    assert_eq!(deliver(c, &[cloud]).await, 202);
    assert_eq!(row_sequence(c, "S-1").await, Some(3));
    assert_row_is_exact(c, "S-1").await;
}

#[tokio::test]
async fn the_plain_webhook_answers_handshakes_and_applies_deliveries() {
    let app = start().await;
    let c = &app.client;
    let validation = c
        .send(
            c.http()
                .post(c.url("/api/eventgrid"))
                .header("aeg-event-type", "SubscriptionValidation")
                .json(&json!([{
                    "id": "2d1781af-3a4c-4d7c-bd0c-e34b19da4e66",
                    "topic": "/subscriptions/x/resourceGroups/g/providers/Microsoft.EventGrid/topics/t",
                    "subject": "", "eventTime": "2024-05-01T10:00:00Z", "dataVersion": "2", "metadataVersion": "1",
                    "eventType": "Microsoft.EventGrid.SubscriptionValidationEvent",
                    "data": {"validationCode": "512d38b6-c7b8-40c8-89fe-f46f9e9622b6", "validationUrl": "https://rp/validate"}
                }])),
        )
        .await;
    assert_eq!(
        validation.ok(200),
        &json!({"validationResponse": "512d38b6-c7b8-40c8-89fe-f46f9e9622b6"})
    );

    let handshake = c
        .send(
            c.http()
                .request(reqwest::Method::OPTIONS, c.url("/api/eventgrid"))
                .header("WebHook-Request-Origin", "eventgrid.azure.net"),
        )
        .await;
    assert_eq!(handshake.status.as_u16(), 200);
    assert_eq!(
        handshake.headers["webhook-allowed-origin"],
        "eventgrid.azure.net"
    );
    assert!(handshake.headers.contains_key("webhook-allowed-rate"));

    open(c, "W-1", "10").await;
    c.withdraw("W-1", "4").await;
    let e = events(c, "W-1").await;
    // One CloudEvent, as Event Grid delivers a CloudEvents subscription.
    let one = c
        .send(
            c.http()
                .post(c.url("/api/eventgrid"))
                .header("aeg-event-type", "Notification")
                .header(
                    "content-type",
                    "application/cloudevents+json; charset=utf-8",
                )
                .body(notification(&e, "W-1", 1, NotificationSchema::CloudEvent).to_string()),
        )
        .await;
    assert_eq!(one.ok(200)["processed"], 1);
    assert_eq!(row_sequence(c, "W-1").await, Some(2));
    assert_row_is_exact(c, "W-1").await;

    // An array in the Event Grid schema, with a duplicate.
    let batch = c
        .send(
            c.http()
                .post(c.url("/api/eventgrid"))
                .header("aeg-event-type", "Notification")
                .json(&json!([grid(&e, "W-1", 2), grid(&e, "W-1", 2)])),
        )
        .await;
    assert_eq!(batch.ok(200)["processed"], 2);

    // Something that is not a streamfold notification is skipped and counted (acknowledged,
    // so Event Grid does not deliver it again).
    let foreign = c
        .send(
            c.http()
                .post(c.url("/api/eventgrid"))
                .header("aeg-event-type", "Notification")
                .json(&json!([{"id": "1", "eventType": "Microsoft.Storage.BlobCreated", "subject": "/x", "eventTime": "2024-05-01T10:00:00Z", "data": {"url": "https://x"}, "dataVersion": "1"}])),
        )
        .await;
    let foreign = foreign.ok(200);
    assert_eq!(foreign["processed"], 0);
    assert_eq!(foreign["skipped"], 1);
}

#[tokio::test]
async fn accounts_filter_by_overdraft_and_rebuild_fills_and_fixes_rows() {
    let app = start().await;
    let c = &app.client;
    open(c, "A", "50").await;
    c.withdraw("A", "30").await;
    open(c, "B", "0").await;
    c.deposit("B", "10").await;
    open(c, "C", "0").await; // never notified
    for account in ["A", "B"] {
        let e = events(c, account).await;
        assert_eq!(deliver(c, &[grid(&e, account, 2)]).await, 202);
    }
    let all = rows(c, "").await;
    let names: Vec<&str> = all
        .iter()
        .map(|r| r["accountNumber"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["A", "B"]);
    let overdrawn = rows(c, "?inOverdraft=true").await;
    assert_eq!(overdrawn.len(), 1);
    assert_eq!(overdrawn[0]["accountNumber"], "A");
    assert_eq!(overdrawn[0]["balance"], "-30.00");
    let fine = rows(c, "?inOverdraft=FALSE").await;
    assert_eq!(fine.len(), 1);
    assert_eq!(fine[0]["accountNumber"], "B");
    c.get("/api/Accounts?inOverdraft=maybe").await.problem(400);
    c.get("/api/Accounts?overdrawn=true").await.problem(400);
    // The group agrees with the in-overdraft classification run over the stream.
    let classified = c
        .get(&format!(
            "/api/projections/{DOMAIN}/{ENTITY}/A/in-overdraft"
        ))
        .await;
    assert_eq!(classified.ok(200)["state"]["member"], true);

    // Rebuild: C's row is created, A and B are already right.
    let report = c.post("/api/RebuildReadModels", &json!({})).await;
    let r = report.ok(200);
    assert_eq!(r["models"], json!(["account"]));
    assert_eq!(
        (
            r["streams"].as_u64(),
            r["written"].as_u64(),
            r["unchanged"].as_u64()
        ),
        (Some(3), Some(1), Some(2)),
        "{r}"
    );
    assert_eq!(r["failed"], 0);
    for account in ["A", "B", "C"] {
        assert_row_is_exact(c, account).await;
    }

    // Make B's row wrong at its own sequence, as a bug or a hand edit would.
    let account = StorageAccount::from_connection_string(&app.azurite.connection_string()).unwrap();
    let store = TableReadModelStore::new(&account);
    let loaded = store.load(MODEL, &stream("B")).await.unwrap().unwrap();
    let mut wrong = loaded.checkpoint.clone();
    wrong.state = serde_json::value::RawValue::from_string(
        r#"{"status":"open","balance":"999.00","overdraftLimit":"0"}"#.into(),
    )
    .unwrap();
    assert!(store
        .save(
            MODEL,
            &stream("B"),
            &wrong,
            &SaveCondition::IfMatch(loaded.etag)
        )
        .await
        .unwrap()
        .is_saved());
    assert_eq!(row(c, "B").await.unwrap()["balance"], "999.00");
    // A duplicate notification does not repair it (the row is at that sequence already)...
    let e = events(c, "B").await;
    assert_eq!(deliver(c, &[grid(&e, "B", 2)]).await, 202);
    assert_eq!(row(c, "B").await.unwrap()["balance"], "999.00");
    // ...a rebuild does, and touches nothing else.
    let report = c.post("/api/RebuildReadModels", &json!({})).await;
    let r = report.ok(200);
    assert_eq!(
        (r["written"].as_u64(), r["unchanged"].as_u64()),
        (Some(1), Some(2)),
        "{r}"
    );
    for account in ["A", "B", "C"] {
        assert_row_is_exact(c, account).await;
    }
}

/// One `GET /api/Accounts` with these query pairs (encoded by the client).
async fn accounts_page(client: &Client, query: &[(&str, &str)]) -> support::Reply {
    client
        .send(client.http().get(client.url("/api/Accounts")).query(query))
        .await
}

/// Follows `continuation` from the first page with `pageSize` = `page_size` and the `extra`
/// query pairs, to the page that has none: the account numbers of each page.
async fn walk(client: &Client, page_size: usize, extra: &[(&str, &str)]) -> Vec<Vec<String>> {
    let size = page_size.to_string();
    let mut pages = Vec::new();
    let mut continuation: Option<String> = None;
    loop {
        assert!(pages.len() < 100, "the walk does not end: {pages:?}");
        let mut query = vec![("pageSize", size.as_str())];
        query.extend_from_slice(extra);
        if let Some(c) = &continuation {
            query.push(("continuation", c.as_str()));
        }
        let reply = accounts_page(client, &query).await;
        let body = reply.ok(200);
        let accounts = body["accounts"].as_array().unwrap();
        assert_eq!(body["count"], accounts.len(), "{body}");
        assert!(accounts.len() <= page_size, "{body}");
        pages.push(
            accounts
                .iter()
                .map(|a| a["accountNumber"].as_str().unwrap().to_owned())
                .collect(),
        );
        match body.get("continuation") {
            None => return pages,
            Some(next) => continuation = Some(next.as_str().unwrap().to_owned()),
        }
    }
}

#[tokio::test]
async fn accounts_are_listed_in_pages_following_continuations() {
    let app = start().await;
    let c = &app.client;
    // In key order: `'` sorts before `-`, and puts a quote in a continuation.
    let all = ["A-1", "A-2", "B'1", "B-2", "C-1", "C-2", "D-1"];
    let overdrawn = ["A-2", "D-1"];
    // Opened out of order; the rows come from a rebuild (nothing is notified here).
    for account in all.iter().rev() {
        open(c, account, "50").await;
        if overdrawn.contains(account) {
            c.withdraw(account, "30").await;
        } else {
            c.deposit(account, "10").await;
        }
    }
    let report = c.post("/api/RebuildReadModels", &json!({})).await;
    let r = report.ok(200);
    assert_eq!(
        (r["streams"].as_u64(), r["written"].as_u64()),
        (Some(7), Some(7)),
        "{r}"
    );

    // One default page holds them all, and says it is the last.
    let whole = accounts_page(c, &[]).await;
    let whole = whole.ok(200);
    assert!(whole.get("continuation").is_none(), "{whole}");
    let names: Vec<&str> = whole["accounts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["accountNumber"].as_str().unwrap())
        .collect();
    assert_eq!(names, all);

    // Pages of 3: every account exactly once, in order, each page as read.
    let pages = walk(c, 3, &[]).await;
    assert_eq!(
        pages,
        [
            vec!["A-1", "A-2", "B'1"],
            vec!["B-2", "C-1", "C-2"],
            vec!["D-1"]
        ]
    );
    // The rows of a page are those of the whole listing.
    let second = accounts_page(c, &[("pageSize", "3"), ("continuation", "B'1")]).await;
    assert_eq!(
        second.ok(200)["accounts"].as_array().unwrap()[..],
        whole["accounts"].as_array().unwrap()[3..6]
    );
    // A page size that divides the rows exactly, or a larger one: one page, no continuation.
    for size in [7, 1000] {
        assert_eq!(walk(c, size, &[]).await, [all.to_vec()], "{size}");
    }
    let ones = walk(c, 1, &[]).await;
    assert_eq!(ones.concat(), all);
    assert!(ones.iter().all(|page| page.len() == 1), "{ones:?}");

    // The filter applies to each page read: short pages, even an empty one, while more follow.
    assert_eq!(
        walk(c, 3, &[("inOverdraft", "true")]).await,
        [vec!["A-2"], vec![], vec!["D-1"]]
    );
    assert_eq!(
        walk(c, 3, &[("inOverdraft", "false")]).await,
        [vec!["A-1", "B'1"], vec!["B-2", "C-1", "C-2"], vec![]]
    );

    // An empty continuation is the first page.
    let first = accounts_page(c, &[("pageSize", "3"), ("continuation", "")]).await;
    assert_eq!(first.ok(200)["continuation"], "B'1");

    // Bad values: 400 problems naming the parameter, with ListStreams' slugs.
    for (size, slug) in [
        ("0", "invalid-page-size"),
        ("1001", "invalid-page-size"),
        ("ten", "invalid-query-parameter"),
        ("-1", "invalid-query-parameter"),
    ] {
        let reply = accounts_page(c, &[("pageSize", size)]).await;
        assert_eq!(reply.problem(400)["parameter"], "pageSize", "{size}");
        assert_eq!(reply.slug(), slug, "{size}");
        // ListStreams answers the same value with the same slug.
        let streams = c
            .send(
                c.http()
                    .get(c.url(&format!("/api/streams/{DOMAIN}/{ENTITY}")))
                    .query(&[("pageSize", size)]),
            )
            .await;
        streams.problem(400);
        assert_eq!(streams.slug(), slug, "ListStreams {size}");
    }
    let too_long = "k".repeat(257);
    for bad in ["a/b", "x#y", "tab\t", too_long.as_str()] {
        let reply = accounts_page(c, &[("continuation", bad)]).await;
        assert_eq!(reply.problem(400)["parameter"], "continuation", "{bad:?}");
        assert_eq!(reply.slug(), "invalid-continuation");
    }
    let unknown = accounts_page(c, &[("page", "2")]).await;
    unknown.problem(400);
    assert_eq!(unknown.slug(), "unknown-query-parameter");
}
