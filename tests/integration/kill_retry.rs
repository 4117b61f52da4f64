//! Issue 11's crash test: handler processes are SIGKILLed at random moments (30 kills) while
//! clients run bank commands with `Idempotency-Key`s through 3 handler processes on one
//! Azurite, retrying each command (same key, any process) until it gets an answer. Afterwards
//! every account's balance is the sum of the acknowledged commands, its stream holds exactly
//! one event per acknowledged command (none applied twice, none lost), and after a
//! `NotificationSweep` the read model equals a replay. Run on both backends.
//!
//! The hosts, the retrying clients and the killer are the shared harness (`support::kills`).
//! Notifications go to each host's own Projector (its Event Grid webhook).

use crate::support;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::json;
use streamfold_testbed::rng::SplitMix64;
use streamfold_testbed::Azurite;
use support::kills::{lock, money, retry_until_answered, Bases, Fleet};
use support::{assert_row_matches_replay, run_sweep, Client};

const HOSTS: usize = 3;
const KILLS: usize = 30;
const ACCOUNTS: [&str; 3] = ["KR-1", "KR-2", "KR-3"];
const CLIENTS: u64 = 6;
const COMMANDS_PER_CLIENT: u64 = 30;

/// A host's settings: `backend` for the accounts, notifications to its own Projector.
fn settings(azurite: &Azurite, backend: &str, port: u16) -> Vec<(String, String)> {
    vec![
        (
            "AzureWebJobsStorage".to_owned(),
            azurite.connection_string(),
        ),
        (
            "Bank.Account".to_owned(),
            format!("{backend};AzureWebJobsStorage"),
        ),
        (
            "RaiseEntityCreationNotification".to_owned(),
            "true".to_owned(),
        ),
        ("RaiseEventNotification".to_owned(), "true".to_owned()),
        (
            "StreamfoldLocalEventGridUrl".to_owned(),
            format!("http://127.0.0.1:{port}/runtime/webhooks/EventGrid?functionName=Projector"),
        ),
    ]
}

/// One command: its account, the signed amount in cents, and its key.
#[derive(Debug, Clone)]
struct Command {
    account: &'static str,
    cents: i64,
    key: String,
}

/// Sends `command` until a process answers it; `Some(cents)` applied, `None` refused.
async fn settle(
    http: &reqwest::Client,
    bases: &Bases,
    command: &Command,
    seed: u64,
) -> Option<i64> {
    let (path, amount) = if command.cents >= 0 {
        ("Deposit", command.cents)
    } else {
        ("Withdraw", -command.cents)
    };
    let body = json!({ "amount": money(amount) });
    retry_until_answered(
        bases,
        seed,
        &format!("{command:?}"),
        |base| {
            http.post(format!("{base}/api/{path}/{}", command.account))
                .header("Idempotency-Key", &command.key)
                .json(&body)
        },
        |status, answer| match status {
            200 => Some(Some(command.cents)),
            422 if answer["type"] == "urn:streamfold:problem:insufficient-funds" => Some(None),
            400..=499 if status != 409 => panic!("{command:?}: {status} {answer}"),
            _ => None,
        },
    )
    .await
}

async fn killed_and_retried(backend: &str) {
    let azurite = Azurite::start().await.unwrap();
    let mut fleet = Fleet::start(&azurite, HOSTS, |azurite, port| {
        settings(azurite, backend, port)
    })
    .await;
    let bases = fleet.bases();
    let first = Client::new(fleet.host(0).base_url());
    for account in ACCOUNTS {
        first
            .post(
                &format!("/api/OpenAccount/{account}"),
                &json!({"overdraftLimit": "5"}),
            )
            .await
            .ok(201);
    }

    // Clients: deposits and withdrawals with fresh keys, each retried until answered.
    let applied: Arc<Mutex<BTreeMap<&str, (i64, u64)>>> = Arc::default();
    let mut clients = Vec::new();
    for client in 0..CLIENTS {
        let (bases, applied) = (bases.clone(), applied.clone());
        clients.push(tokio::spawn(async move {
            let http = reqwest::Client::new();
            let mut rng = SplitMix64::new(1_000 + client);
            for n in 0..COMMANDS_PER_CLIENT {
                let account = ACCOUNTS[(rng.next_u64() % ACCOUNTS.len() as u64) as usize];
                let cents = (1 + rng.next_u64() % 500) as i64;
                let cents = if rng.next_u64() % 3 == 0 {
                    -cents
                } else {
                    cents
                };
                let command = Command {
                    account,
                    cents,
                    // A structured-field string, as the IETF draft defines the header.
                    key: format!("\"c{client}-n{n}\""),
                };
                if let Some(cents) = settle(&http, &bases, &command, rng.next_u64()).await {
                    let mut applied = lock(&applied);
                    let entry = applied.entry(account).or_insert((0, 0));
                    entry.0 += cents;
                    entry.1 += 1;
                }
            }
        }));
    }

    // The killer: a random host's handler at random moments; a host killed twice is replaced.
    fleet.kill(KILLS, 7).await;
    for client in clients {
        client.await.unwrap();
    }
    fleet.wait_ready().await;

    // Every acknowledged command applied once: balances and event counts.
    let applied = lock(&applied).clone();
    let c = Client::new(fleet.host(0).base_url());
    for account in ACCOUNTS {
        let (cents, commands) = applied.get(account).copied().unwrap_or((0, 0));
        let balance = c.get(&format!("/api/GetBalance/{account}")).await;
        assert_eq!(balance.ok(200)["balance"], money(cents), "{account}");
        let events = support::recorded_events(&c, "Bank", "Account", account, 1).await;
        assert_eq!(
            events.len() as u64,
            commands + 1,
            "{account}: one event per acknowledged command, after AccountOpened"
        );
    }

    // After a sweep the read model equals a replay.
    run_sweep(&c, fleet.host(0), 1, Duration::from_secs(60)).await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        let rows = c.get("/api/Accounts").await;
        let rows = rows.ok(200)["accounts"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        let mut matching = 0;
        for account in ACCOUNTS {
            let replay = c.get(&format!("/api/GetBalance/{account}")).await;
            let row = rows.iter().find(|r| r["accountNumber"] == account);
            if let Some(row) = row {
                if support::ACCOUNT_FIELDS
                    .iter()
                    .all(|f| row[*f] == replay.body[*f])
                {
                    matching += 1;
                } else if tokio::time::Instant::now() > deadline {
                    assert_row_matches_replay(account, row, &replay.body);
                }
            }
        }
        if matching == ACCOUNTS.len() {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "read model rows never caught up: {rows:?}"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn table_commands_apply_once_through_kills_and_retries() {
    killed_and_retried("Table").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn blob_commands_apply_once_through_kills_and_retries() {
    killed_and_retried("AppendBlob").await;
}
