//! Issue 12's transfer crash test: clients run many concurrent transfers among a few accounts
//! through 3 handler processes on one Azurite while handlers are SIGKILLed at random moments;
//! each client sends its transfer (same id and request, any process) until it gets an answer.
//! Afterwards, and after a `TransferSweep`: every transfer is final, the sum of the balances is
//! what was deposited, every completed transfer is reflected exactly once (one debit on its
//! source, one credit on its target, nothing else), every refused one not at all, and each
//! balance is its deposit plus the completed transfers in minus those out. Both backends.

use crate::support;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};

use serde_json::{json, Value};
use std::time::Duration;
use streamfold_testbed::rng::SplitMix64;
use streamfold_testbed::Azurite;
use support::kills::{lock, money, retry_until_answered, Bases, Fleet};
use support::Client;

const HOSTS: usize = 3;
const KILLS: usize = 20;
const ACCOUNTS: [&str; 4] = ["TK-1", "TK-2", "TK-3", "TK-4"];
/// Cents deposited in each account at the start.
const DEPOSIT_CENTS: i64 = 50_000;
const CLIENTS: u64 = 6;
const TRANSFERS_PER_CLIENT: u64 = 15;

/// A host's settings: `backend` for the whole bank.
fn settings(azurite: &Azurite, backend: &str) -> Vec<(String, String)> {
    vec![
        (
            "AzureWebJobsStorage".to_owned(),
            azurite.connection_string(),
        ),
        (
            "Bank.ALL".to_owned(),
            format!("{backend};AzureWebJobsStorage"),
        ),
    ]
}

#[derive(Debug, Clone)]
struct Transfer {
    id: String,
    from: &'static str,
    to: &'static str,
    cents: i64,
}

/// Sends `transfer` until a process answers it: its final state (`refused` for a refusal).
async fn settle(http: &reqwest::Client, bases: &Bases, transfer: &Transfer, seed: u64) -> String {
    let body = json!({"from": transfer.from, "to": transfer.to, "amount": money(transfer.cents)});
    retry_until_answered(
        bases,
        seed,
        &format!("{transfer:?}"),
        |base| {
            http.post(format!("{base}/api/TransferMoney/{}", transfer.id))
                .json(&body)
        },
        |status, answer| match status {
            200 | 201 => {
                let state = answer["state"].as_str().unwrap_or("").to_owned();
                assert!(
                    ["completed", "refunded"].contains(&state.as_str()),
                    "{transfer:?}: {answer}"
                );
                Some(state)
            }
            422 if answer["type"] == "urn:streamfold:problem:insufficient-funds" => {
                Some("refused".to_owned())
            }
            400..=499 => panic!("{transfer:?}: {status} {answer}"),
            _ => None,
        },
    )
    .await
}

async fn transfers_survive_kills(backend: &str) {
    let azurite = Azurite::start().await.unwrap();
    let mut fleet = Fleet::start(&azurite, HOSTS, |azurite, _| settings(azurite, backend)).await;
    let bases = fleet.bases();
    let first = Client::new(fleet.host(0).base_url());
    for account in ACCOUNTS {
        first.open_account(account, &json!({})).await;
        first.deposit(account, &money(DEPOSIT_CENTS)).await;
    }

    let outcomes: Arc<Mutex<BTreeMap<String, (Transfer, String)>>> = Arc::default();
    let mut clients = Vec::new();
    for client in 0..CLIENTS {
        let (bases, outcomes) = (bases.clone(), outcomes.clone());
        clients.push(tokio::spawn(async move {
            let http = reqwest::Client::new();
            let mut rng = SplitMix64::new(5_000 + client);
            for n in 0..TRANSFERS_PER_CLIENT {
                let from = (rng.next_u64() % ACCOUNTS.len() as u64) as usize;
                let step = 1 + (rng.next_u64() % (ACCOUNTS.len() as u64 - 1)) as usize;
                let to = (from + step) % ACCOUNTS.len();
                let transfer = Transfer {
                    id: format!("K-c{client}-n{n}"),
                    from: ACCOUNTS[from],
                    to: ACCOUNTS[to],
                    cents: (1 + rng.next_u64() % 30_000) as i64,
                };
                let state = settle(&http, &bases, &transfer, rng.next_u64()).await;
                lock(&outcomes).insert(transfer.id.clone(), (transfer, state));
            }
        }));
    }

    fleet.kill(KILLS, 11).await;
    for client in clients {
        client.await.unwrap();
    }
    fleet.wait_ready().await;
    let c = Client::new(fleet.host(0).base_url());
    let outcomes = lock(&outcomes).clone();
    assert_eq!(outcomes.len() as u64, CLIENTS * TRANSFERS_PER_CLIENT);

    // The sweep carries on anything a killed process left (the clients got final answers, so
    // it must find nothing unfinished that was answered).
    let run = support::run_timer(
        &c,
        fleet.host(0),
        "TransferSweep",
        1,
        Duration::from_secs(120),
    )
    .await;
    assert!(run.succeeded, "{run:?}");

    // Every transfer's recorded state is its answer; refused ones may be unrecorded.
    let mut want: BTreeMap<&str, i64> = ACCOUNTS.iter().map(|a| (*a, DEPOSIT_CENTS)).collect();
    let mut completed = BTreeSet::new();
    for (id, (transfer, state)) in &outcomes {
        let recorded = c.get(&format!("/api/GetTransferState/{id}")).await;
        match state.as_str() {
            "refused" => {
                if recorded.status.as_u16() == 200 {
                    assert_eq!(recorded.body["state"], "refused", "{id}");
                } else {
                    recorded.problem(404);
                }
            }
            other => {
                assert_eq!(recorded.ok(200)["state"], other, "{id}");
                assert_eq!(other, "completed", "{id}: no account closes here");
                *want.get_mut(transfer.from).unwrap() -= transfer.cents;
                *want.get_mut(transfer.to).unwrap() += transfer.cents;
                completed.insert(id.clone());
            }
        }
    }
    assert!(!completed.is_empty());
    println!(
        "{backend}: {} transfers, {} completed, {} refused, {} kills",
        outcomes.len(),
        completed.len(),
        outcomes.len() - completed.len(),
        KILLS
    );

    // Balances: the sum never changes, each is its deposit plus what moved.
    let mut sum = 0i64;
    for account in ACCOUNTS {
        let reply = c.get(&format!("/api/GetBalance/{account}")).await;
        let balance = reply.ok(200)["balance"].as_str().unwrap().to_owned();
        assert_eq!(balance, money(want[account]), "{account}");
        sum += want[account];
    }
    assert_eq!(sum, DEPOSIT_CENTS * ACCOUNTS.len() as i64);

    // Each completed transfer exactly once on each side, nothing for any other.
    let mut outs = Vec::new();
    let mut ins = Vec::new();
    for account in ACCOUNTS {
        for event in support::recorded_events(&c, "Bank", "Account", account, 1).await {
            let data: Value = serde_json::from_str(event.data.get()).unwrap();
            let id = data["transferId"].as_str().map(str::to_owned);
            match event.event_type.as_str() {
                "MoneyTransferredOut" => outs.push((id.unwrap(), account)),
                "MoneyTransferredIn" => ins.push((id.unwrap(), account)),
                "MoneyTransferRefunded" => panic!("{account}: a refund, but no account closed"),
                _ => {}
            }
        }
    }
    for (list, side) in [(&outs, "debit"), (&ins, "credit")] {
        let ids: Vec<&String> = list.iter().map(|(id, _)| id).collect();
        let unique: BTreeSet<&String> = ids.iter().copied().collect();
        assert_eq!(ids.len(), unique.len(), "a {side} made twice");
        assert_eq!(
            unique,
            completed.iter().collect::<BTreeSet<_>>(),
            "{side}s are exactly the completed transfers"
        );
    }
    for (id, account) in &outs {
        assert_eq!(outcomes[id].0.from, *account, "{id}");
    }
    for (id, account) in &ins {
        assert_eq!(outcomes[id].0.to, *account, "{id}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn table_transfers_apply_once_through_kills_and_retries() {
    transfers_survive_kills("Table").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn blob_transfers_apply_once_through_kills_and_retries() {
    transfers_survive_kills("AppendBlob").await;
}
