//! Issue 11's crash test: handler processes are SIGKILLed at random moments (30 kills) while
//! clients run bank commands with `Idempotency-Key`s through 3 handler processes on one
//! Azurite, retrying each command (same key, any process) until it gets an answer. Afterwards
//! every account's balance is the sum of the acknowledged commands, its stream holds exactly
//! one event per acknowledged command (none applied twice, none lost), and after a
//! `NotificationSweep` the read model equals a replay. Run on both backends.
//!
//! The simulator gives up on a handler after 3 failures, as the host does; a host whose
//! handler was killed twice is replaced by a fresh host (a recycled instance), so the kills
//! keep coming. Notifications go to each host's own Projector (its Event Grid webhook).

use crate::support;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{json, Value};
use streamfold_testbed::hostsim::HostSim;
use streamfold_testbed::rng::SplitMix64;
use streamfold_testbed::Azurite;
use support::{assert_row_matches_replay, run_sweep, start_host_on, Client};

const HOSTS: usize = 3;
const KILLS: usize = 30;
const KILLS_PER_HOST: usize = 2;
const ACCOUNTS: [&str; 3] = ["KR-1", "KR-2", "KR-3"];
const CLIENTS: u64 = 6;
const COMMANDS_PER_CLIENT: u64 = 30;
/// How long a command keeps being retried before the test gives up on it.
const PATIENCE: Duration = Duration::from_secs(120);

/// The live hosts' base URLs, which clients pick from (replaced hosts drop out).
type Bases = Arc<Mutex<Vec<String>>>;

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

async fn start(azurite: &Azurite, backend: &str) -> (HostSim, tempfile::TempDir) {
    let port = streamfold_testbed::free_port().unwrap();
    let settings = vec![
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
    ];
    start_host_on(port, settings).await
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
    let mut rng = SplitMix64::new(seed);
    let (path, amount) = if command.cents >= 0 {
        ("Deposit", command.cents)
    } else {
        ("Withdraw", -command.cents)
    };
    let body = json!({"amount": format!("{}.{:02}", amount / 100, amount % 100)});
    let deadline = tokio::time::Instant::now() + PATIENCE;
    loop {
        assert!(
            tokio::time::Instant::now() < deadline,
            "{command:?} got no answer in {PATIENCE:?}"
        );
        let base = {
            let bases = lock(bases);
            let i = (rng.next_u64() % bases.len() as u64) as usize;
            bases[i].clone()
        };
        let sent = http
            .post(format!("{base}/api/{path}/{}", command.account))
            .header("Idempotency-Key", &command.key)
            .json(&body)
            .timeout(Duration::from_secs(20))
            .send()
            .await;
        if let Ok(response) = sent {
            let status = response.status().as_u16();
            let answer: Value = response.json().await.unwrap_or(Value::Null);
            match status {
                200 => return Some(command.cents),
                422 if answer["type"] == "urn:streamfold:problem:insufficient-funds" => {
                    return None
                }
                400..=499 if status != 409 => panic!("{command:?}: {status} {answer}"),
                _ => {}
            }
        }
        tokio::time::sleep(Duration::from_millis(20 + rng.next_u64() % 80)).await;
    }
}

async fn killed_and_retried(backend: &str) {
    let azurite = Azurite::start().await.unwrap();
    let mut hosts = Vec::new();
    for _ in 0..HOSTS {
        hosts.push(start(&azurite, backend).await);
    }
    let bases: Bases = Arc::new(Mutex::new(
        hosts.iter().map(|(h, _)| h.base_url()).collect(),
    ));
    let first = Client::new(hosts[0].0.base_url());
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
    let mut rng = SplitMix64::new(7);
    let mut kills_on = [0usize; HOSTS];
    let mut kills = 0;
    while kills < KILLS {
        tokio::time::sleep(Duration::from_millis(50 + rng.next_u64() % 250)).await;
        let i = (rng.next_u64() % HOSTS as u64) as usize;
        if kills_on[i] == KILLS_PER_HOST {
            let fresh = start(&azurite, backend).await;
            let old = std::mem::replace(&mut hosts[i], fresh);
            {
                let mut bases = lock(&bases);
                bases.retain(|b| *b != old.0.base_url());
                bases.push(hosts[i].0.base_url());
            }
            let _ = old.0.shutdown().await;
            kills_on[i] = 0;
            continue;
        }
        let host = &hosts[i].0;
        if host
            .wait_until_ready(Duration::from_secs(30))
            .await
            .is_err()
        {
            continue;
        }
        host.kill_handler().await.unwrap();
        kills_on[i] += 1;
        kills += 1;
    }
    for client in clients {
        client.await.unwrap();
    }
    for (host, _) in &hosts {
        host.wait_until_ready(Duration::from_secs(30))
            .await
            .unwrap();
    }

    // Every acknowledged command applied once: balances and event counts.
    let applied = lock(&applied).clone();
    let c = Client::new(hosts[0].0.base_url());
    for account in ACCOUNTS {
        let (cents, commands) = applied.get(account).copied().unwrap_or((0, 0));
        let balance = c.get(&format!("/api/GetBalance/{account}")).await;
        let want = format!(
            "{}{}.{:02}",
            if cents < 0 { "-" } else { "" },
            cents.abs() / 100,
            cents.abs() % 100
        );
        assert_eq!(balance.ok(200)["balance"], want, "{account}");
        let events = support::recorded_events(&c, "Bank", "Account", account, 1).await;
        assert_eq!(
            events.len() as u64,
            commands + 1,
            "{account}: one event per acknowledged command, after AccountOpened"
        );
    }

    // After a sweep the read model equals a replay.
    run_sweep(&c, &hosts[0].0, 1, Duration::from_secs(60)).await;
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
