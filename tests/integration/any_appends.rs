//! An append that states no expectation has nothing to conflict with: 96 concurrent generic
//! appends with `"expectedVersion": "any"` to one stream, through three handler processes
//! behind the Functions host simulator, are all answered 201 (never 503, never 409), on both
//! backends; afterwards the stream holds every acknowledged event once, at the sequence it was
//! acknowledged with, and nothing else. A retry of one of them (same event id) after all the
//! others is answered with its original outcome and writes nothing.

use crate::support;

use std::collections::HashMap;

use serde_json::json;
use streamfold_testbed::Azurite;
use support::{all_streams_on, assert_stream_holds_exactly, start_hosts};

const PROCESSES: usize = 3;
const APPENDS: usize = 96;
const PATH: &str = "/api/streams/Load/Any/one";

async fn concurrent_any_appends_all_answer_201(backend: &str) {
    let azurite = Azurite::start().await.unwrap();
    let (_hosts, clients) = start_hosts(PROCESSES, all_streams_on(&azurite, backend)).await;

    let tasks: Vec<_> = (0..APPENDS)
        .map(|n| {
            let client = clients[n % PROCESSES].clone();
            tokio::spawn(async move {
                let event_id = uuid::Uuid::new_v4();
                let body = json!({
                    "expectedVersion": "any",
                    "events": [{"eventType": "Counted", "data": {"n": n}, "eventId": event_id}],
                });
                let reply = client.post(PATH, &body).await;
                (n, event_id, body, reply)
            })
        })
        .collect();
    let mut acked: HashMap<uuid::Uuid, u64> = HashMap::new();
    let mut first = None;
    for task in tasks {
        let (n, event_id, body, reply) = task.await.unwrap();
        assert_eq!(
            reply.status.as_u16(),
            201,
            "append {n} on {backend}: {}",
            reply.body
        );
        let sequence = reply.body["version"].as_u64().unwrap();
        assert!(acked.insert(event_id, sequence).is_none());
        first.get_or_insert((body, sequence));
    }

    // Every append stored once.
    assert_eq!(acked.len(), APPENDS);
    assert_stream_holds_exactly(&clients[0], PATH, &acked).await;

    // A client that lost the answer of the first append sends it again, after all the others,
    // to another process: the same outcome, nothing written.
    let (retry, sequence) = first.unwrap();
    let again = clients[1].post(PATH, &retry).await;
    assert_eq!(
        again.ok(201)["version"].as_u64(),
        Some(sequence),
        "{}",
        again.body
    );
    let after = clients[2].get(&format!("{PATH}?fromSequence=1000")).await;
    assert_eq!(after.ok(200)["version"].as_u64().unwrap() as usize, APPENDS);
}

#[tokio::test]
async fn concurrent_any_appends_all_answer_201_on_table_storage() {
    concurrent_any_appends_all_answer_201("Table").await;
}

#[tokio::test]
async fn concurrent_any_appends_all_answer_201_on_append_blobs() {
    concurrent_any_appends_all_answer_201("AppendBlob").await;
}
