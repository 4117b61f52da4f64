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
use support::{start_host, Client};

const PROCESSES: usize = 3;
const APPENDS: usize = 96;
const PATH: &str = "/api/streams/Load/Any/one";

async fn concurrent_any_appends_all_answer_201(backend: &str) {
    let azurite = Azurite::start().await.unwrap();
    let mut hosts = Vec::new();
    for _ in 0..PROCESSES {
        let settings = vec![
            ("AzureWebJobsStorage".into(), azurite.connection_string()),
            ("ALL.ALL".into(), format!("{backend};AzureWebJobsStorage")),
        ];
        hosts.push(start_host(settings).await);
    }
    let clients: Vec<Client> = hosts
        .iter()
        .map(|(h, _)| Client::new(h.base_url()))
        .collect();

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

    let stream = clients[0].get(&format!("{PATH}?pageSize=1000")).await;
    let body = stream.ok(200);
    assert_eq!(body["version"].as_u64().unwrap() as usize, APPENDS);
    let events = body["events"].as_array().unwrap();
    assert_eq!(events.len(), APPENDS, "every append stored once");
    for (i, event) in events.iter().enumerate() {
        let sequence = event["sequence"].as_u64().unwrap();
        assert_eq!(sequence, i as u64 + 1, "contiguous from 1");
        let id = uuid::Uuid::parse_str(event["eventId"].as_str().unwrap()).unwrap();
        assert_eq!(
            acked.get(&id),
            Some(&sequence),
            "acknowledged at this sequence"
        );
    }

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
