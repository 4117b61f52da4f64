//! The "done when": 20 accounts and a few thousand random operations over HTTP
//! (opens, deposits, withdrawals including refused ones, limit changes, some refused), their
//! notifications published to an Event Grid topic (the simulator) that delivers them to the
//! host's Projector webhook duplicated, reordered and with 30% of attempts failing — while
//! the operations go on. Once every delivery is done, every read-model row equals the replay
//! of its stream (`GetBalance`, `RunProjection`), and no delivery was given up.
//!
//! Publishing is the app's own: its topic settings point at the simulator, every append
//! records its notifications in the outbox and publishes them right after, and a final
//! `NotificationSweep` run publishes anything still pending — the whole production path.
//!
//! Everything random comes from one fixed seed (the operations, and the topic's chaos), so a
//! failure can be run again; which worker wins a race still depends on timing.
//!
//! A second test (issue 11, "notifications never block"), on both backends: notifications the
//! topic refuses for good mixed into several streams' traffic, with transient failures injected
//! between them. Every later notification still arrives, the refused ones are dead letters (with
//! the topic's status and text, listed by the `DeadLetters` admin function and counted by the
//! sweep), and they are re-driven once the topic accepts them.

use crate::support;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use rust_decimal::Decimal;
use serde_json::{json, Value};
use streamfold_testbed::rng::SplitMix64;
use streamfold_testbed::topic::{
    Chaos, DeliveryRetry, DownMode, Subscription, TopicConfig, TopicSim,
};
use support::{event_grid_webhook_path, publishing_to, Client, TestApp};

const SEED: u64 = 0x5eed_c4a0_5000_0001;
const ACCOUNTS: usize = 20;
/// Operations after the accounts are opened.
const OPERATIONS: usize = 2_400;
/// Operations between two publishing rounds.
const ROUND: usize = 200;
/// Clients sending operations at the same time.
const WORKERS: usize = 4;
/// How long every delivery may take to finish once all is published.
const IDLE_TIMEOUT: Duration = Duration::from_secs(240);
const DOMAIN: &str = "Bank";
const ENTITY: &str = "Account";
/// Longest wait for the app to have published every notification.
const PUBLISH_TIMEOUT: Duration = Duration::from_secs(120);

/// The operations' generator: reproducible from its seed.
struct Rng(SplitMix64);

impl Rng {
    fn new(seed: u64) -> Self {
        Self(SplitMix64::new(seed))
    }

    fn below(&mut self, n: u64) -> u64 {
        self.0.below(n)
    }

    /// An amount of money with cents, from 0.01 to `whole_max`.99.
    fn money(&mut self, whole_max: u64) -> String {
        format!("{}.{:02}", self.below(whole_max + 1), 1 + self.below(99))
    }
}

fn account_name(index: usize) -> String {
    format!("CHAOS-{index:02}")
}

/// What the operations got back, by kind and status.
type Tally = BTreeMap<(&'static str, u16), u64>;

/// One random operation; statuses other than the expected ones fail the test.
async fn random_operation(client: &Client, rng: &mut Rng, tally: &mut Tally) {
    let account = account_name(rng.below(ACCOUNTS as u64) as usize);
    let roll = rng.below(100);
    let (kind, path, body) = match roll {
        0..=34 => (
            "deposit",
            format!("/api/Deposit/{account}"),
            json!({"amount": rng.money(200)}),
        ),
        35..=74 => (
            "withdraw",
            format!("/api/Withdraw/{account}"),
            // Often more than balance + limit: refused with 422.
            json!({"amount": rng.money(300)}),
        ),
        75..=91 => (
            "limit",
            format!("/api/SetOverdraftLimit/{account}"),
            // Sometimes below what is already overdrawn: refused with 422.
            json!({"limit": rng.money(150)}),
        ),
        92..=95 => (
            "open-again",
            format!("/api/OpenAccount/{account}"),
            json!({}),
        ),
        _ => (
            "unknown-account",
            format!("/api/Deposit/NOPE-{}", rng.below(1_000)),
            json!({"amount": "1"}),
        ),
    };
    let reply = client.post(&path, &body).await;
    let status = reply.status.as_u16();
    let expected: &[u16] = match kind {
        "deposit" => &[200, 409],
        "withdraw" | "limit" => &[200, 409, 422],
        "open-again" => &[409],
        _ => &[404],
    };
    assert!(
        expected.contains(&status),
        "{kind} {path}: {status} {}",
        reply.body
    );
    *tally.entry((kind, status)).or_default() += 1;
}

/// Waits until the topic accepted at least `expected` notifications, running the sweep once
/// at the end of the operations so nothing pending is left to the next timer.
async fn wait_published(app: &TestApp, topic: &TopicSim, expected: u64) {
    support::run_sweep(&app.client, &app.host, 1, PUBLISH_TIMEOUT).await;
    let deadline = tokio::time::Instant::now() + PUBLISH_TIMEOUT;
    while topic.stats().accepted < expected {
        assert!(
            tokio::time::Instant::now() < deadline,
            "published {} of {expected} notifications",
            topic.stats().accepted
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn decimal(value: &Value) -> Decimal {
    value
        .as_str()
        .unwrap_or_else(|| panic!("not a decimal string: {value}"))
        .parse()
        .unwrap()
}

#[tokio::test]
async fn read_models_are_exact_under_duplicated_reordered_failing_delivery() {
    let port = streamfold_testbed::free_port().unwrap();
    let webhook = format!(
        "http://127.0.0.1:{port}{}",
        event_grid_webhook_path("Projector")
    );
    let chaos = Chaos {
        seed: SEED,
        duplicate: 0.3,
        reorder: 0.5,
        max_delay: Duration::from_millis(200),
        transient_failure: 0.3,
    };
    // Event Grid's schedule is minutes; a shorter one keeps the run short. Enough attempts
    // that a 30% failure rate (plus the app's own 5xx on contention) never exhausts them.
    let retry = DeliveryRetry {
        schedule: [10, 20, 50, 100, 200, 400]
            .into_iter()
            .map(Duration::from_millis)
            .collect(),
        max_attempts: 30,
        timeout: Duration::from_secs(30),
        jitter: 0.5,
    };
    let topic = TopicSim::start(
        TopicConfig::default().subscribe(
            Subscription::new(webhook)
                .with_chaos(chaos)
                .with_retry(retry),
        ),
    )
    .await
    .unwrap();
    let app = TestApp::start_on(port, publishing_to(&topic)).await;
    let client = &app.client;

    let mut rng = Rng::new(SEED);
    for index in 0..ACCOUNTS {
        let limit = rng.money(100);
        client
            .post(
                &format!("/api/OpenAccount/{}", account_name(index)),
                &json!({"overdraftLimit": limit}),
            )
            .await
            .ok(201);
    }
    let mut tally = Tally::new();
    for round in 0..OPERATIONS / ROUND {
        let workers = (0..WORKERS).map(|worker| {
            let client = client.clone();
            let seed = rng.0.next_u64() ^ (round * WORKERS + worker) as u64;
            async move {
                let mut rng = Rng::new(seed);
                let mut tally = Tally::new();
                for _ in 0..ROUND / WORKERS {
                    random_operation(&client, &mut rng, &mut tally).await;
                }
                tally
            }
        });
        for worker_tally in futures::future::join_all(workers).await {
            for (key, count) in worker_tally {
                *tally.entry(key).or_default() += count;
            }
        }
    }
    println!("operations: {tally:?}");
    assert!(
        tally.get(&("withdraw", 422)).is_some_and(|n| *n > 0),
        "some withdrawals were refused"
    );

    // One NewEntity per account and one notification per event.
    let mut versions = Vec::new();
    for index in 0..ACCOUNTS {
        let head = client
            .get(&format!(
                "/api/streams/{DOMAIN}/{ENTITY}/{}?fromSequence={}",
                account_name(index),
                u32::MAX
            ))
            .await;
        versions.push(head.ok(200)["version"].as_u64().unwrap());
    }
    let expected: u64 = versions.iter().map(|v| v + 1).sum();
    wait_published(&app, &topic, expected).await;

    topic.wait_idle(IDLE_TIMEOUT).await.unwrap();
    let stats = topic.stats();
    println!("expected {expected} notifications; deliveries: {stats:?}");
    // At least once: a background dispatch racing the sweep may publish an event twice.
    assert!(stats.accepted >= expected);
    let ids: std::collections::BTreeSet<String> = topic
        .received()
        .iter()
        .map(|e| e["id"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(
        ids.len() as u64,
        expected,
        "every notification, by its deterministic id"
    );
    assert_eq!(stats.dropped, 0, "every delivery got through in the end");
    assert!(stats.duplicated > 0 && stats.delayed > 0 && stats.injected_failures > 0);
    assert_eq!(stats.delivered, stats.accepted + stats.duplicated);

    let rows = client.get("/api/Accounts").await;
    let rows = rows.ok(200)["accounts"].as_array().unwrap().clone();
    assert_eq!(rows.len(), ACCOUNTS);
    for (index, row) in rows.iter().enumerate() {
        let account = account_name(index);
        assert_eq!(row["accountNumber"], account.as_str());
        let replay = client.get(&format!("/api/GetBalance/{account}")).await;
        let replay = replay.ok(200);
        support::assert_row_matches_replay(&account, row, replay);
        assert_eq!(
            row["sequence"], versions[index],
            "{account}: the row is at the stream's end"
        );
        let projected = client
            .get(&format!(
                "/api/projections/{DOMAIN}/{ENTITY}/{account}/account"
            ))
            .await;
        let state = &projected.ok(200)["state"];
        assert_eq!(decimal(&row["balance"]), decimal(&state["balance"]));
        assert_eq!(
            decimal(&row["overdraftLimit"]),
            decimal(&state["overdraftLimit"])
        );
        let classified = client
            .get(&format!(
                "/api/projections/{DOMAIN}/{ENTITY}/{account}/in-overdraft"
            ))
            .await;
        assert_eq!(
            row["inOverdraft"],
            classified.ok(200)["state"]["member"],
            "{account}"
        );
    }
    let in_overdraft = client.get("/api/Accounts?inOverdraft=true").await;
    let expected = rows.iter().filter(|r| r["inOverdraft"] == true).count();
    assert_eq!(in_overdraft.ok(200)["count"], expected);
}

// ---------------------------------------------------------------------------------------------
// Notifications the topic refuses for good never block a stream.

const POISON_SEED: u64 = 0x5eed_dead_1e77_0011;
/// Events whose data holds this are refused by the topic, for good, until told otherwise.
const POISON_MARKER: &str = "\"poison\":true";
const POISON_STREAMS: usize = 4;
/// Appends through the app (published right away, in the background).
const POISON_APPENDS: usize = 60;
/// Appends by another process while nothing publishes (published by the sweep).
const QUIET_APPENDS: usize = 20;
/// Chance that an event is poison.
const POISON_CHANCE: f64 = 0.15;
/// Chance that a transient failure (503 or 429) is injected before an append.
const TRANSIENT_CHANCE: f64 = 0.15;
/// How long the test waits for something that should happen in a few seconds.
const PATIENCE: Duration = Duration::from_secs(120);

fn cart(index: usize) -> String {
    format!("cart-{index}")
}

/// The notification ids of events `sequences` of `Shop/Cart/{instance}`, split into the ones
/// the topic accepts and the poison ones (a first event's NewEntity carries its payload too).
#[derive(Default)]
struct Expected {
    accepted: BTreeSet<String>,
    poison: BTreeSet<String>,
}

impl Expected {
    fn add(&mut self, instance: &str, sequence: u64, poison: bool) {
        use streamfold::notify::{notification_id, NotificationKind};
        let stream = streamfold::stream::StreamId::new("Shop", "Cart", instance).unwrap();
        let mut ids = vec![notification_id(
            &stream,
            sequence,
            NotificationKind::NewEvent,
        )];
        if sequence == 1 {
            ids.push(notification_id(&stream, 1, NotificationKind::NewEntity));
        }
        let set = if poison {
            &mut self.poison
        } else {
            &mut self.accepted
        };
        set.extend(ids.into_iter().map(|id| id.to_string()));
    }
}

fn received_ids(topic: &TopicSim) -> BTreeSet<String> {
    topic
        .received()
        .iter()
        .map(|e| e["id"].as_str().unwrap().to_owned())
        .collect()
}

async fn wait_until(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + PATIENCE;
    while !done() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "waited too long: {what}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Every dead letter the `DeadLetters` function lists, page after page.
async fn dead_letters(client: &Client) -> Vec<Value> {
    let mut letters = Vec::new();
    let mut continuation: Option<String> = None;
    loop {
        let path = match &continuation {
            Some(c) => format!("/api/notifications/deadletters?pageSize=4&continuation={c}"),
            None => "/api/notifications/deadletters?pageSize=4".to_owned(),
        };
        let reply = client.get(&path).await;
        let page = reply.ok(200).clone();
        letters.extend(page["deadLetters"].as_array().unwrap().iter().cloned());
        match page["continuation"].as_str() {
            Some(next) => continuation = Some(next.to_owned()),
            None => return letters,
        }
    }
}

fn letter_ids(letters: &[Value]) -> BTreeSet<String> {
    letters
        .iter()
        .map(|l| l["id"].as_str().unwrap().to_owned())
        .collect()
}

async fn refused_notifications_never_block(backend: &str) {
    use streamfold::stream::{EventStore, ExpectedVersion, NewEvent, Outbox, StreamId};

    let topic = TopicSim::start(TopicConfig::default()).await.unwrap();
    topic.refuse_matching(POISON_MARKER, 400);
    let mut settings = publishing_to(&topic);
    settings.push(("ALL.ALL".into(), format!("{backend};AzureWebJobsStorage")));
    let app = TestApp::start_on(0, settings).await;
    let client = &app.client;
    let account = streamfold::storage::StorageAccount::from_connection_string(
        &app.azurite.connection_string(),
    )
    .unwrap();
    // The app's own storage, read and written as another process would.
    let (store, outbox): (Arc<dyn EventStore>, Arc<dyn Outbox>) = match backend {
        "Table" => {
            let store = Arc::new(streamfold::storage::TableStore::new(account).with_outbox(true));
            (store.clone(), store)
        }
        _ => {
            let store = Arc::new(streamfold::storage::BlobStore::new(account));
            (store.clone(), store)
        }
    };

    let mut rng = Rng::new(POISON_SEED);
    let mut expected = Expected::default();
    let mut versions = [0u64; POISON_STREAMS];
    let mut n = 0u64;
    let mut next_data = |rng: &mut Rng| -> (bool, Value) {
        n += 1;
        let poison = rng.0.unit() < POISON_CHANCE;
        (poison, json!({"n": n, "poison": poison}))
    };

    // 1. Traffic through the app: each append publishes right away, in the background.
    for _ in 0..POISON_APPENDS {
        if rng.0.unit() < TRANSIENT_CHANCE {
            topic.fail_next(1, if rng.below(2) == 0 { 503 } else { 429 });
        }
        let index = rng.below(POISON_STREAMS as u64) as usize;
        let count = 1 + rng.below(3) as usize;
        let mut events = Vec::new();
        for _ in 0..count {
            let (poison, data) = next_data(&mut rng);
            versions[index] += 1;
            expected.add(&cart(index), versions[index], poison);
            events.push(json!({"eventType": "ItemAdded", "data": data}));
        }
        let reply = client
            .post(
                &format!("/api/streams/Shop/Cart/{}", cart(index)),
                &json!({"expectedVersion": "any", "events": events}),
            )
            .await;
        assert_eq!(reply.ok(201)["version"], versions[index]);
    }
    assert!(!expected.poison.is_empty(), "the seed makes some poison");
    wait_until("every accepted notification of the app's appends", || {
        expected.accepted.is_subset(&received_ids(&topic))
    })
    .await;
    // The background dispatches have dead-lettered the poison and marked every stream.
    let deadline = tokio::time::Instant::now() + PATIENCE;
    while !outbox.pending(None, 100).await.unwrap().streams.is_empty() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "streams still pending"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // 2. Traffic from another process (no background publish): the sweep publishes it.
    let poison_before = expected.poison.len();
    for _ in 0..QUIET_APPENDS {
        let index = rng.below(POISON_STREAMS as u64) as usize;
        let (poison, data) = next_data(&mut rng);
        versions[index] += 1;
        expected.add(&cart(index), versions[index], poison);
        let event = NewEvent::new("ItemAdded", &data).unwrap();
        let stream = StreamId::new("Shop", "Cart", cart(index)).unwrap();
        store
            .append(&stream, ExpectedVersion::Any, vec![event])
            .await
            .unwrap();
    }
    let quiet_poison = expected.poison.len() - poison_before;
    assert!(quiet_poison > 0, "the seed makes some poison for the sweep");
    let sweep = support::run_sweep(client, &app.host, 1, PATIENCE).await;
    assert!(sweep.succeeded, "dead letters are no failure: {sweep:?}");
    assert_eq!(
        sweep.return_value["deadLettered"].as_u64().unwrap() as usize,
        quiet_poison,
        "{sweep:?}"
    );
    assert!(
        sweep
            .logs
            .iter()
            .any(|l| l.contains(&format!("{quiet_poison} dead-lettered"))),
        "{:?}",
        sweep.logs
    );
    let received = received_ids(&topic);
    assert!(
        expected.accepted.is_subset(&received),
        "every later notification arrived: missing {:?}",
        expected.accepted.difference(&received).collect::<Vec<_>>()
    );
    assert!(received.is_disjoint(&expected.poison));

    println!(
        "{backend}: {} notifications accepted, {} refused for good ({quiet_poison} by the sweep); \
         {} publish requests",
        expected.accepted.len(),
        expected.poison.len(),
        topic.requests().len()
    );

    // 3. The dead letters: exactly the poison, with the topic's status and text.
    let letters = dead_letters(client).await;
    assert_eq!(letter_ids(&letters), expected.poison);
    assert_eq!(letters.len(), expected.poison.len(), "one letter each");
    for letter in &letters {
        assert_eq!(letter["status"], 400, "{letter}");
        assert!(
            letter["reason"]
                .as_str()
                .unwrap()
                .contains("refused for good"),
            "{letter}"
        );
        assert!(letter["backend"].as_str().unwrap().starts_with(backend));
        assert_eq!(letter["domain"], "Shop");
    }

    // 4. Re-driven while the topic still refuses them: kept. While it is down: 503, kept.
    let first = letters[0]["id"].as_str().unwrap().to_owned();
    let again = client
        .post(
            "/api/notifications/deadletters/redrive",
            &json!({"ids": [first]}),
        )
        .await;
    assert_eq!(again.ok(200)["refused"], 1);
    topic.set_down(DownMode::Unavailable).await.unwrap();
    let down = client
        .post("/api/notifications/deadletters/redrive", &json!({}))
        .await;
    assert_eq!(
        down.problem(503)["type"],
        "urn:streamfold:problem:notifications-unavailable"
    );
    topic.set_up().await.unwrap();
    assert_eq!(letter_ids(&dead_letters(client).await), expected.poison);

    // 5. Once the topic accepts them, one re-drive publishes every one and forgets it.
    topic.accept_all();
    let redriven = client
        .post("/api/notifications/deadletters/redrive", &json!({}))
        .await;
    let redriven = redriven.ok(200);
    assert_eq!(
        redriven["redriven"].as_u64().unwrap() as usize,
        expected.poison.len(),
        "{redriven}"
    );
    assert_eq!(redriven["remaining"], 0);
    assert!(dead_letters(client).await.is_empty());
    let received = received_ids(&topic);
    assert!(expected.poison.is_subset(&received));
    assert!(expected.accepted.is_subset(&received));
}

#[tokio::test]
async fn table_refused_notifications_are_dead_lettered_and_never_block() {
    refused_notifications_never_block("Table").await;
}

#[tokio::test]
async fn blob_refused_notifications_are_dead_lettered_and_never_block() {
    refused_notifications_never_block("AppendBlob").await;
}
