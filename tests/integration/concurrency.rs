//! Many writers in many processes on ONE stream, each appending with the exact version it
//! last saw: afterwards the stream is contiguous from 1, every acknowledged append is there
//! exactly once at the sequence it was acknowledged with, and no rejected one is.

use crate::support;

use std::collections::HashMap;

use serde_json::json;
use streamfold_testbed::Azurite;
use support::{all_streams_on, assert_stream_holds_exactly, start_hosts, Client};

const PROCESSES: usize = 3;
const WRITERS: usize = 32;
const APPENDS_PER_WRITER: usize = 4;
const PATH: &str = "/api/streams/Load/Counter/one";

/// What one writer saw acknowledged: event id → sequence.
async fn writer(client: Client, writer: usize) -> (HashMap<uuid::Uuid, u64>, Vec<uuid::Uuid>) {
    let mut acked = HashMap::new();
    let mut rejected = Vec::new();
    while acked.len() < APPENDS_PER_WRITER {
        // Learn the version without reading events (a range past the end).
        let head = client
            .get(&format!("{PATH}?fromSequence={}", u32::MAX))
            .await;
        let version = match head.status.as_u16() {
            200 => head.body["version"].as_u64().unwrap(),
            404 => 0,
            other => panic!("read failed: {other} {}", head.body),
        };
        let event_id = uuid::Uuid::new_v4();
        let reply = client
            .post(
                PATH,
                &json!({
                    "expectedVersion": version,
                    "events": [{"eventType": "Incremented", "data": {"writer": writer}, "eventId": event_id}],
                }),
            )
            .await;
        match reply.status.as_u16() {
            201 => {
                let sequence = reply.body["version"].as_u64().unwrap();
                assert_eq!(sequence, version + 1, "appended right after what it saw");
                acked.insert(event_id, sequence);
            }
            409 => {
                assert_eq!(reply.slug(), "wrong-expected-version", "{}", reply.body);
                assert!(reply.body["actualVersion"].as_u64().unwrap() > version);
                rejected.push(event_id);
            }
            other => panic!("append failed: {other} {}", reply.body),
        }
    }
    (acked, rejected)
}

async fn writers_in_processes_on_one_stream(backend: &str) {
    let azurite = Azurite::start().await.unwrap();
    let (_hosts, clients) = start_hosts(PROCESSES, all_streams_on(&azurite, backend)).await;

    let tasks: Vec<_> = (0..WRITERS)
        .map(|w| tokio::spawn(writer(clients[w % PROCESSES].clone(), w)))
        .collect();
    let mut acked = HashMap::new();
    let mut rejected = Vec::new();
    for task in tasks {
        let (a, r) = task.await.unwrap();
        acked.extend(a);
        rejected.extend(r);
    }
    assert_eq!(acked.len(), WRITERS * APPENDS_PER_WRITER);

    assert_stream_holds_exactly(&clients[0], PATH, &acked).await;
    for id in rejected {
        assert!(!acked.contains_key(&id));
    }
}

#[tokio::test]
async fn three_processes_and_32_writers_on_one_table_stream() {
    writers_in_processes_on_one_stream("Table").await;
}

#[tokio::test]
async fn three_processes_and_32_writers_on_one_blob_stream() {
    writers_in_processes_on_one_stream("AppendBlob").await;
}
