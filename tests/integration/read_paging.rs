//! `ReadStream` answers in pages: a default and a maximum page size, `nextFromSequence` to walk
//! on, and `toSequence` / `asOf` still honoured across pages, on both backends (real Azurite
//! through the host simulator). Walking the pages gives exactly the stream, in order.

use crate::support;

use serde_json::{json, Value};
use support::{Client, TestApp};

/// Events in the test stream (longer than two default pages).
const EVENTS: u64 = 250;
/// Events per append while building it.
const BATCH: u64 = 25;

async fn build(c: &Client, path: &str) {
    for first in (1..=EVENTS).step_by(BATCH as usize) {
        let events: Vec<Value> = (first..first + BATCH)
            .map(|n| json!({"eventType": "Added", "data": {"n": n}}))
            .collect();
        c.post(
            path,
            &json!({"expectedVersion": first - 1, "events": events}),
        )
        .await
        .ok(201);
    }
}

/// Walks the pages from `query` to the end: the sequence numbers of each page.
async fn walk(c: &Client, path: &str, query: &str) -> Vec<Vec<u64>> {
    let mut pages = Vec::new();
    let mut from = None::<u64>;
    loop {
        let url = match from {
            Some(from) => format!("{path}?{query}&fromSequence={from}"),
            None => format!("{path}?{query}"),
        };
        let reply = c.get(&url).await;
        let body = reply.ok(200);
        assert_eq!(body["version"], EVENTS);
        let sequences: Vec<u64> = body["events"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| {
                let sequence = e["sequence"].as_u64().unwrap();
                assert_eq!(e["data"]["n"], sequence);
                sequence
            })
            .collect();
        pages.push(sequences);
        match body.get("nextFromSequence") {
            Some(next) => from = Some(next.as_u64().unwrap()),
            None => break,
        }
        assert!(pages.len() <= EVENTS as usize, "the pages end");
    }
    pages
}

async fn pages_walk_the_stream(settings: &[(&str, &str)]) {
    let app = TestApp::start_with(settings).await;
    let c = &app.client;
    let path = "/api/streams/Shop/Cart/paged";
    build(c, path).await;

    // The default page, then pages of 100 to the end.
    let pages = walk(c, path, "pageSize=100").await;
    let lengths: Vec<usize> = pages.iter().map(Vec::len).collect();
    assert_eq!(lengths, [100, 100, 50]);
    let all: Vec<u64> = pages.concat();
    assert_eq!(all, (1..=EVENTS).collect::<Vec<_>>());
    let first = c.get(path).await;
    let first = first.ok(200);
    assert_eq!(first["events"].as_array().unwrap().len(), 100);
    assert_eq!(first["nextFromSequence"], 101);

    // The largest page; a range ends the walk at its end.
    let whole = walk(c, path, "pageSize=1000").await;
    assert_eq!(whole.len(), 1);
    assert_eq!(whole[0].len(), EVENTS as usize);
    let ranged = walk(c, path, "pageSize=60&toSequence=130").await;
    let lengths: Vec<usize> = ranged.iter().map(Vec::len).collect();
    assert_eq!(lengths, [60, 60, 10]);
    let ranged = c
        .get(&format!("{path}?fromSequence=120&toSequence=130"))
        .await;
    let ranged = ranged.ok(200);
    assert_eq!(ranged["events"].as_array().unwrap().len(), 11);
    assert!(ranged.get("nextFromSequence").is_none());

    // asOf still applies, page by page (every event is older than now).
    let now = time::OffsetDateTime::now_utc()
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap();
    let as_of = walk(c, path, &format!("pageSize=200&asOf={now}")).await;
    assert_eq!(as_of.concat().len(), EVENTS as usize);
    let before = c
        .get(&format!("{path}?asOf=2000-01-01T00:00:00Z&pageSize=100"))
        .await;
    let before = before.ok(200);
    assert_eq!(before["events"].as_array().unwrap().len(), 0);
    assert!(
        before.get("nextFromSequence").is_none(),
        "nothing more as of a time before the stream: {before}"
    );
    // As of a time in the middle: the page that meets the first later event is the last one
    // (events 101..=125 were appended together, so they share event 120's time).
    let page = c
        .get(&format!("{path}?fromSequence=120&toSequence=120"))
        .await;
    let page = page.ok(200);
    let middle = page["events"][0]["timestamp"].as_str().unwrap().to_owned();
    let middle = middle.replace('+', "%2B");
    let prefix = walk(c, path, &format!("pageSize=100&asOf={middle}")).await;
    let lengths: Vec<usize> = prefix.iter().map(Vec::len).collect();
    assert_eq!(
        lengths,
        [100, 25],
        "the walk ends where asOf cuts the stream"
    );

    // Past the end: no events, no next page.
    let past = c.get(&format!("{path}?fromSequence={}", EVENTS + 1)).await;
    let past = past.ok(200);
    assert_eq!(past["events"].as_array().unwrap().len(), 0);
    assert!(past.get("nextFromSequence").is_none());
    let far = c.get(&format!("{path}?fromSequence={}", u64::MAX)).await;
    assert!(far.ok(200).get("nextFromSequence").is_none());

    for size in ["0", "1001", "x"] {
        let refused = c.get(&format!("{path}?pageSize={size}")).await;
        refused.problem(400);
    }
    assert_eq!(
        c.get(&format!("{path}?pageSize=0")).await.slug(),
        "invalid-page-size"
    );
}

#[tokio::test]
async fn table_stream_pages_walk_the_stream() {
    pages_walk_the_stream(&[]).await;
}

#[tokio::test]
async fn blob_stream_pages_walk_the_stream() {
    pages_walk_the_stream(&[("Shop.Cart", "AppendBlob;AzureWebJobsStorage")]).await;
}
