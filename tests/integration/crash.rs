//! The crash test: the handler process is killed (SIGKILL) between the write and the
//! publish; after the host restarts it and the `NotificationSweep` function runs, every
//! acknowledged event has been delivered at least once.
//!
//! How the kill lands between the write and the publish: the topic simulator is told to leave
//! the next publish requests unanswered (a hung topic), one per stream. Each append is
//! acknowledged (201), its background dispatch sends its publish, and the publish hangs; once
//! every stream's publish is hanging — and the topic has accepted nothing — the handler is
//! killed. Nothing of those appends has been published, and nothing was marked. Run on both
//! backends (Table outbox row; Append Blob marker).

use crate::support;

use std::collections::BTreeSet;
use std::time::Duration;

use serde_json::{json, Value};
use streamfold::notify::{notification_id, NotificationKind};
use streamfold::stream::StreamId;
use streamfold_testbed::topic::{TopicConfig, TopicSim};
use support::{publishing_to, TestApp};

/// How long the test waits for what should take a second or two.
const PATIENCE: Duration = Duration::from_secs(60);
/// Streams written before the crash, and events per append.
const STREAMS: [&str; 4] = ["k1", "k2", "k3", "k4 ü"];
/// Appends per stream before the crash (the later ones while the first publish hangs).
const APPENDS_PER_STREAM: u64 = 2;

/// The ids every acknowledged event of `instance` (at `version`) must have been published with.
fn expected_ids(instance: &str, version: u64) -> BTreeSet<String> {
    let stream = StreamId::new("Shop", "Cart", instance).unwrap();
    let mut ids =
        BTreeSet::from([notification_id(&stream, 1, NotificationKind::NewEntity).to_string()]);
    for sequence in 1..=version {
        ids.insert(notification_id(&stream, sequence, NotificationKind::NewEvent).to_string());
    }
    ids
}

fn received_ids(topic: &TopicSim) -> BTreeSet<String> {
    topic
        .received()
        .iter()
        .map(|event| event["id"].as_str().unwrap().to_owned())
        .collect()
}

async fn killed_between_write_and_publish(backend: &str) {
    let topic = TopicSim::start(TopicConfig::default()).await.unwrap();
    let mut settings = publishing_to(&topic);
    settings.push(("ALL.ALL".into(), format!("{backend};AzureWebJobsStorage")));
    let app = TestApp::start_on(0, settings).await;

    // One hanging publish per stream: each stream's first background dispatch.
    topic.stall_next(STREAMS.len());
    let mut acknowledged = Vec::new();
    for instance in STREAMS {
        let path = format!(
            "/api/streams/Shop/Cart/{}",
            percent_encoding::utf8_percent_encode(instance, percent_encoding::NON_ALPHANUMERIC)
        );
        let mut version = 0;
        for _ in 0..APPENDS_PER_STREAM {
            let expected = if version == 0 {
                json!("noStream")
            } else {
                json!(version)
            };
            let reply = app
                .client
                .post(
                    &path,
                    &json!({"expectedVersion": expected, "events": [{"eventType": "ItemAdded", "data": {"v": version}}]}),
                )
                .await;
            version = reply.ok(201)["version"].as_u64().unwrap();
        }
        acknowledged.push((instance, version));
    }

    // Wait until every stream's publish hangs at the topic, then kill the handler.
    let waited = tokio::time::timeout(PATIENCE, async {
        while topic.requests().iter().filter(|r| r.status == 0).count() < STREAMS.len() {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await;
    assert!(waited.is_ok(), "publishes seen: {:?}", topic.requests());
    assert!(topic.received().is_empty(), "published before the crash");
    let starts = app.host.handler_starts();
    let killed = app.host.kill_handler().await.unwrap();
    topic.release_stalls();
    app.host.wait_until_ready(PATIENCE).await.unwrap();
    assert_eq!(app.host.handler_starts(), starts + 1);
    assert_ne!(app.host.handler_pid(), Some(killed));
    // The killed process published nothing (its hanging requests were answered 503, to a
    // closed connection).
    assert!(topic.received().is_empty());

    // The restarted handler knows nothing of the lost dispatches: the sweep finds them.
    let sweep = support::run_sweep(&app.client, &app.host, 1, PATIENCE).await;
    assert!(sweep.succeeded, "{sweep:?}");
    let report: &Value = &sweep.return_value;
    assert_eq!(report["pending"], STREAMS.len());
    assert_eq!(report["failed"], 0);

    let expected: BTreeSet<String> = acknowledged
        .iter()
        .flat_map(|(instance, version)| expected_ids(instance, *version))
        .collect();
    let received = received_ids(&topic);
    let missing: Vec<&String> = expected.difference(&received).collect();
    assert!(
        missing.is_empty(),
        "acknowledged but never published: {missing:?}"
    );
    // Every notification the topic got is one of these (at least once; duplicates allowed).
    assert!(received.is_subset(&expected));
}

#[tokio::test]
async fn table_notifications_survive_a_crash_between_write_and_publish() {
    killed_between_write_and_publish("Table").await;
}

#[tokio::test]
async fn blob_notifications_survive_a_crash_between_write_and_publish() {
    killed_between_write_and_publish("AppendBlob").await;
}
