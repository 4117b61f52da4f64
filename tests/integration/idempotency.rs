//! The bank's commands under retries and contention, through the Functions host simulator on
//! Azurite, on both backends:
//! - a Deposit whose answer is lost (a proxy between the client and the host forwards it and
//!   drops the answer) and that is sent again with the same `Idempotency-Key` moves the money
//!   once, and the retry gets the answer the first attempt would have had; another handler
//!   process answers the same bytes; the same key with another body is 422
//!   `idempotency-key-reused`; a refused command leaves its key unused;
//! - 20 concurrent `Deposit 1` on one account from 3 handler processes (some sent twice at
//!   once with the same key, to two processes) all succeed, and each is applied once.

use crate::support;

use std::collections::BTreeSet;

use serde_json::{json, Value};
use streamfold_testbed::proxy::{CountingProxy, Fault};
use streamfold_testbed::Azurite;
use support::{start_host, start_hosts};

const KEY_HEADER: &str = "Idempotency-Key";
const REPLAYED_HEADER: &str = "idempotent-replayed";

/// An answer as the client received it: the exact body bytes, and the body parsed.
#[derive(Debug, Clone)]
struct Answer {
    status: u16,
    bytes: Vec<u8>,
    body: Value,
    replayed: bool,
}

impl Answer {
    fn slug(&self) -> &str {
        self.body["type"]
            .as_str()
            .unwrap_or("")
            .trim_start_matches("urn:streamfold:problem:")
    }
}

/// POSTs `body` to `base` + `path`, with `key` as the `Idempotency-Key` header value.
async fn post(base: &str, path: &str, key: Option<&str>, body: &Value) -> Answer {
    let http = reqwest::Client::new();
    let mut request = http.post(format!("{base}{path}")).json(body);
    if let Some(key) = key {
        request = request.header(KEY_HEADER, key);
    }
    let response = request.send().await.expect("request");
    let status = response.status().as_u16();
    let replayed = response
        .headers()
        .get(REPLAYED_HEADER)
        .is_some_and(|v| v == "true");
    let bytes = response.bytes().await.unwrap().to_vec();
    let body = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
    Answer {
        status,
        bytes,
        body,
        replayed,
    }
}

async fn get(base: &str, path: &str) -> Value {
    let response = reqwest::get(format!("{base}{path}")).await.unwrap();
    assert_eq!(response.status().as_u16(), 200, "GET {path}");
    response.json().await.unwrap()
}

async fn balance(base: &str, account: &str) -> String {
    get(base, &format!("/api/GetBalance/{account}")).await["balance"]
        .as_str()
        .unwrap()
        .to_owned()
}

/// The settings of a handler process keeping accounts on `backend` in `azurite`.
fn settings(azurite: &Azurite, backend: &str) -> Vec<(String, String)> {
    vec![
        ("AzureWebJobsStorage".into(), azurite.connection_string()),
        (
            "Bank.Account".into(),
            format!("{backend};AzureWebJobsStorage"),
        ),
    ]
}

async fn a_retried_command_lands_once(backend: &str) {
    let azurite = Azurite::start().await.unwrap();
    let (first_host, _first_dir) = start_host(settings(&azurite, backend)).await;
    let host = first_host.base_url();
    // Between the client and the host: loses the answers of the requests it is told to.
    let proxy = CountingProxy::start(&host).await.unwrap();
    let via_proxy = proxy.url();
    let account = "IDEM-1";
    let opened = post(
        &host,
        &format!("/api/OpenAccount/{account}"),
        None,
        &json!({}),
    )
    .await;
    assert_eq!(opened.status, 201, "{:?}", opened.body);

    // The Deposit lands, its answer is lost.
    let deposit = format!("/api/Deposit/{account}");
    proxy.inject(Fault::answer_lost("/api/Deposit/", 502, "AnswerLost"));
    let lost = post(
        &via_proxy,
        &deposit,
        Some("\"dep-1\""),
        &json!({"amount": "25.00"}),
    )
    .await;
    assert_eq!(lost.status, 502);
    proxy.clear_faults();
    assert_eq!(
        balance(&host, account).await,
        "25.00",
        "the first attempt landed"
    );

    // The client sends it again with the same key: the first answer, nothing moved.
    let retry = post(
        &via_proxy,
        &deposit,
        Some("\"dep-1\""),
        &json!({"amount": "25.00"}),
    )
    .await;
    assert_eq!(retry.status, 200, "{:?}", retry.body);
    assert_eq!(balance(&host, account).await, "25.00", "moved once");
    assert_eq!(retry.body["balance"], "25.00");
    assert_eq!(retry.body["sequence"], 2);
    assert!(retry.replayed);

    // Another handler process on the same storage answers the same bytes (the amount
    // written another way is the same request).
    let (second_host, _second_dir) = start_host(settings(&azurite, backend)).await;
    let other = second_host.base_url();
    let elsewhere = post(&other, &deposit, Some("\"dep-1\""), &json!({"amount": 25})).await;
    assert_eq!(elsewhere.status, 200);
    assert!(elsewhere.replayed);
    assert_eq!(
        String::from_utf8_lossy(&elsewhere.bytes),
        String::from_utf8_lossy(&retry.bytes)
    );

    // The same key with another request: refused, nothing moved.
    for base in [&host, &other] {
        let reused = post(
            base,
            &deposit,
            Some("\"dep-1\""),
            &json!({"amount": "26.00"}),
        )
        .await;
        assert_eq!(reused.status, 422, "{:?}", reused.body);
        assert_eq!(reused.slug(), "idempotency-key-reused");
        assert_eq!(reused.body["idempotencyKey"], "dep-1");
        let reused = post(
            base,
            &format!("/api/Withdraw/{account}"),
            Some("\"dep-1\""),
            &json!({"amount": "25.00"}),
        )
        .await;
        assert_eq!(reused.slug(), "idempotency-key-reused", "{:?}", reused.body);
    }
    assert_eq!(balance(&host, account).await, "25.00");

    // An answer received is the answer of every retry, byte for byte, from any process, even
    // once the account has moved on and the rules would refuse the command now.
    let withdraw = format!("/api/Withdraw/{account}");
    let first = post(&host, &withdraw, Some("\"w-1\""), &json!({"amount": "20"})).await;
    assert_eq!(
        (first.status, first.replayed),
        (200, false),
        "{:?}",
        first.body
    );
    for base in [&host, &other] {
        let again = post(
            base,
            &withdraw,
            Some("\"w-1\""),
            &json!({"amount": "20.00"}),
        )
        .await;
        assert_eq!((again.status, again.replayed), (200, true));
        assert_eq!(again.bytes, first.bytes);
    }
    assert_eq!(balance(&host, account).await, "5.00");

    // A refused command writes nothing and leaves its key unused.
    let refused = post(&host, &withdraw, Some("\"w-2\""), &json!({"amount": "100"})).await;
    assert_eq!(
        (refused.status, refused.slug()),
        (422, "insufficient-funds")
    );
    let topped = post(&other, &deposit, None, &json!({"amount": "200"})).await;
    assert_eq!(topped.status, 200);
    let later = post(
        &other,
        &withdraw,
        Some("\"w-2\""),
        &json!({"amount": "100"}),
    )
    .await;
    assert_eq!(
        (later.status, later.replayed),
        (200, false),
        "{:?}",
        later.body
    );
    assert_eq!(balance(&host, account).await, "105.00");

    // A key names a command of one account: the same key on another account is another one.
    let second = "IDEM-2";
    let opened = post(
        &other,
        &format!("/api/OpenAccount/{second}"),
        Some("\"dep-1\""),
        &json!({}),
    )
    .await;
    assert_eq!((opened.status, opened.replayed), (201, false));
    let again = post(
        &host,
        &format!("/api/OpenAccount/{second}"),
        Some("\"dep-1\""),
        &json!({}),
    )
    .await;
    assert_eq!(
        (again.status, again.replayed),
        (201, true),
        "{:?}",
        again.body
    );
    assert_eq!(again.bytes, opened.bytes);
    let exists = post(
        &host,
        &format!("/api/OpenAccount/{second}"),
        None,
        &json!({}),
    )
    .await;
    assert_eq!((exists.status, exists.slug()), (409, "account-exists"));

    // A key that is not a structured-field string of 1 to 255 characters: 400, nothing moved.
    let too_long = format!("\"{}\"", "k".repeat(256));
    for bad in ["dep-2", "\"\"", too_long.as_str(), "\"a\", \"b\""] {
        let invalid = post(&host, &deposit, Some(bad), &json!({"amount": "1"})).await;
        assert_eq!(invalid.status, 400, "{bad}: {:?}", invalid.body);
        assert_eq!(invalid.slug(), "invalid-idempotency-key");
    }
    assert_eq!(balance(&host, account).await, "105.00");

    // The history holds each command once, with its key.
    let history = get(&host, &format!("/api/GetAccountHistory/{account}")).await;
    let events = history["events"].as_array().unwrap();
    let keys: Vec<&str> = events
        .iter()
        .map(|e| e["metadata"]["idempotencyKey"].as_str().unwrap_or("-"))
        .collect();
    assert_eq!(keys, ["-", "dep-1", "w-1", "-", "w-2"]);
}

#[tokio::test]
async fn a_deposit_retried_after_its_answer_was_lost_lands_once_on_table() {
    a_retried_command_lands_once("Table").await;
}

#[tokio::test]
async fn a_deposit_retried_after_its_answer_was_lost_lands_once_on_append_blob() {
    a_retried_command_lands_once("AppendBlob").await;
}

const PROCESSES: usize = 3;
const DEPOSITS: usize = 20;

async fn concurrent_deposits_all_land(backend: &str) {
    let azurite = Azurite::start().await.unwrap();
    let (hosts, _clients) = start_hosts(PROCESSES, settings(&azurite, backend)).await;
    let bases: Vec<String> = hosts.iter().map(|(h, _)| h.base_url()).collect();
    let account = "HOT-1";
    let opened = post(
        &bases[0],
        &format!("/api/OpenAccount/{account}"),
        None,
        &json!({}),
    )
    .await;
    assert_eq!(opened.status, 201);

    // Deposit i goes to process i % 3; the even ones carry a key and are sent a second time
    // at once, to the next process, as a client retrying early would.
    let path = format!("/api/Deposit/{account}");
    let mut tasks = Vec::new();
    for i in 0..DEPOSITS {
        let key = (i % 2 == 0).then(|| format!("\"deposit-{i}\""));
        let copies = if key.is_some() { 2 } else { 1 };
        for copy in 0..copies {
            let base = bases[(i + copy) % PROCESSES].clone();
            let path = path.clone();
            let key = key.clone();
            tasks.push(tokio::spawn(async move {
                let answer = post(&base, &path, key.as_deref(), &json!({"amount": 1})).await;
                (i, answer)
            }));
        }
    }
    let mut answers: Vec<Vec<Answer>> = vec![Vec::new(); DEPOSITS];
    for task in tasks {
        let (i, answer) = task.await.unwrap();
        assert_eq!(answer.status, 200, "deposit {i}: {:?}", answer.body);
        answers[i].push(answer);
    }

    // Each deposit applied once, at its own sequence; both copies of a keyed one answered
    // the same bytes.
    let mut sequences = BTreeSet::new();
    for (i, copies) in answers.iter().enumerate() {
        if let [a, b] = copies.as_slice() {
            assert_eq!(a.bytes, b.bytes, "deposit {i}");
        }
        sequences.insert(copies[0].body["sequence"].as_u64().unwrap());
    }
    assert_eq!(
        sequences,
        (2..=DEPOSITS as u64 + 1).collect::<BTreeSet<_>>()
    );
    assert_eq!(balance(&bases[1], account).await, "20.00");
    let history = get(
        &bases[2],
        &format!("/api/GetAccountHistory/{account}?pageSize=1000"),
    )
    .await;
    assert_eq!(history["events"].as_array().unwrap().len(), DEPOSITS + 1);
}

#[tokio::test]
async fn twenty_concurrent_deposits_from_three_processes_all_land_on_table() {
    concurrent_deposits_all_land("Table").await;
}

#[tokio::test]
async fn twenty_concurrent_deposits_from_three_processes_all_land_on_append_blob() {
    concurrent_deposits_all_land("AppendBlob").await;
}
