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

mod support;

use std::collections::BTreeMap;
use std::time::Duration;

use rust_decimal::Decimal;
use serde_json::{json, Value};
use streamfold_testbed::rng::SplitMix64;
use streamfold_testbed::topic::{Chaos, DeliveryRetry, Subscription, TopicConfig, TopicSim};
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
