//! The notification publisher against the Event Grid topic simulator (real HTTP on loopback):
//! both schemas, batching within Event Grid's limits, oversized payloads, retries and what is
//! not retried, key checks, deterministic ids; and a cross-check of the events streamfold
//! publishes with the official Azure SDK for Python (`tests/eventgrid_sdk.py`).

use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::value::RawValue;
use serde_json::{json, Value};
use time::OffsetDateTime;
use uuid::Uuid;

use streamfold::notify::{
    notifications_for, Notification, NotificationKind, NotificationSchema, NotificationSettings,
    NotificationSink, NotificationTarget, PublishError, Publisher, RaiseSwitches, RetryPolicy,
    TopicKey, MAX_EVENTS_PER_REQUEST, MAX_REQUEST_BYTES,
};
use streamfold::stream::{EventMetadata, RecordedEvent, StreamId};
use streamfold_testbed::topic::{DownMode, InputSchema, TopicConfig, TopicSim};

/// Environment variable naming a Python with `azure-eventgrid` installed (set by
/// scripts/test.sh).
const PYTHON_VAR: &str = "STREAMFOLD_PYTHON";

fn stream(instance: &str) -> StreamId {
    StreamId::new("Bank", "Account", instance).unwrap()
}

fn recorded(sequence: u64, event_type: &str, data: &str) -> RecordedEvent {
    RecordedEvent {
        sequence,
        event_id: Uuid::new_v4(),
        event_type: event_type.into(),
        data: RawValue::from_string(data.into()).unwrap(),
        timestamp: OffsetDateTime::now_utc(),
        metadata: EventMetadata {
            correlation_id: Some(format!("corr-{sequence}")),
            causation_id: None,
            ..Default::default()
        },
    }
}

/// `count` events of about `payload_bytes` each for one stream, NewEntity included.
fn history(instance: &str, count: u64, payload_bytes: usize) -> Vec<Notification> {
    let events: Vec<RecordedEvent> = (1..=count)
        .map(|seq| {
            let data = json!({"amount": "10.00", "memo": "m".repeat(payload_bytes)}).to_string();
            recorded(seq, "Deposited", &data)
        })
        .collect();
    notifications_for(&stream(instance), &events, RaiseSwitches::ALL)
}

/// Retries fast enough for tests, still exponential with jitter.
fn fast_retry(max_attempts: u32) -> RetryPolicy {
    RetryPolicy {
        max_attempts,
        initial_backoff: Duration::from_millis(5),
        max_backoff: Duration::from_millis(40),
        max_elapsed: Duration::from_secs(30),
        request_timeout: Duration::from_secs(10),
    }
}

fn publisher_for(sim: &TopicSim, schema: NotificationSchema) -> Publisher {
    let target = NotificationTarget::Topic {
        endpoint: sim.endpoint().parse().unwrap(),
        key: TopicKey::new(sim.key()),
    };
    Publisher::new(target, schema)
        .unwrap()
        .with_retry_policy(fast_retry(5))
}

#[tokio::test]
async fn publishes_event_grid_events() {
    let sim = TopicSim::start(TopicConfig::default()).await.unwrap();
    let publisher = publisher_for(&sim, NotificationSchema::EventGridEvent);
    assert!(publisher
        .url()
        .query()
        .unwrap()
        .contains("api-version=2018-01-01"));
    let notifications = history("42", 3, 10);
    publisher.publish(&notifications).await.unwrap();

    let received = sim.received();
    assert_eq!(received.len(), 4, "NewEntity + 3 events");
    for (sent, got) in notifications.iter().zip(&received) {
        let encoded: Value =
            serde_json::from_slice(&NotificationSchema::EventGridEvent.encode(sent).unwrap())
                .unwrap();
        assert_eq!(&encoded, got);
        assert!(got.get("topic").is_none());
        assert_eq!(Notification::from_event_json(got).unwrap().id, sent.id);
    }
    assert_eq!(received[0]["eventType"], "Bank.Account.NewEntity");
    assert_eq!(received[1]["eventType"], "Bank.Account.Deposited");
    assert_eq!(received[1]["subject"], "eventsourcing/Bank/Account/42");
    assert_eq!(received[1]["data"]["sequenceNumber"], 1);
    assert_eq!(received[1]["data"]["correlationId"], "corr-1");
    assert_eq!(received[3]["data"]["payload"]["amount"], "10.00");
    let requests = sim.requests();
    assert_eq!(requests.len(), 1);
    assert_eq!(
        requests[0].content_type.as_deref(),
        Some("application/json; charset=utf-8")
    );
}

#[tokio::test]
async fn publishes_cloud_events() {
    let sim = TopicSim::start(TopicConfig::with_schema(InputSchema::CloudEvent))
        .await
        .unwrap();
    let publisher = publisher_for(&sim, NotificationSchema::CloudEvent);
    let notifications = history("ce-1", 2, 10);
    publisher.publish(&notifications).await.unwrap();
    let received = sim.received();
    assert_eq!(received.len(), 3);
    for (sent, got) in notifications.iter().zip(&received) {
        assert_eq!(got["specversion"], "1.0");
        assert_eq!(got["id"], sent.id.to_string());
        assert_eq!(got["type"], sent.event_type);
        assert_eq!(got["source"], "/streamfold/Bank/Account");
        assert_eq!(got["datacontenttype"], "application/json");
        assert_eq!(Notification::from_event_json(got).unwrap().id, sent.id);
    }
    assert_eq!(
        sim.requests()[0].content_type.as_deref(),
        Some("application/cloudevents-batch+json; charset=utf-8")
    );
}

#[tokio::test]
async fn splits_large_publishes_within_the_limits() {
    let sim = TopicSim::start(TopicConfig::default()).await.unwrap();
    let publisher = publisher_for(&sim, NotificationSchema::EventGridEvent);
    // About 3.6 MB in 61 notifications of about 60 KB.
    let notifications = history("big", 60, 60_000);
    let total: usize = notifications
        .iter()
        .map(|n| NotificationSchema::EventGridEvent.encode(n).unwrap().len())
        .sum();
    assert!(total > 3 * MAX_REQUEST_BYTES, "{total}");
    publisher.publish(&notifications).await.unwrap();

    let requests = sim.requests();
    assert!(requests.len() >= 4, "{requests:?}");
    for r in &requests {
        assert_eq!(r.status, 200);
        assert!(r.bytes <= MAX_REQUEST_BYTES, "{} bytes", r.bytes);
        assert!(r.events <= MAX_EVENTS_PER_REQUEST);
    }
    // Packed greedily: no two neighbouring requests would have fitted in one.
    for pair in requests.windows(2) {
        assert!(pair[0].bytes + pair[1].bytes - 1 > MAX_REQUEST_BYTES);
    }
    let ids: Vec<String> = sim
        .received()
        .iter()
        .map(|e| e["id"].as_str().unwrap().to_owned())
        .collect();
    let sent: Vec<String> = notifications.iter().map(|n| n.id.to_string()).collect();
    assert_eq!(ids, sent, "all delivered, in order");
}

#[tokio::test]
async fn oversized_payload_is_sent_as_a_reference() {
    let sim = TopicSim::start(TopicConfig::default()).await.unwrap();
    let publisher = publisher_for(&sim, NotificationSchema::EventGridEvent);
    let big = json!({"blob": "b".repeat(1_200_000)}).to_string();
    let event = recorded(5, "Uploaded", &big);
    let small = recorded(6, "Noted", r#"{"ok":true}"#);
    let notifications = notifications_for(&stream("ACC 7-x"), &[event, small], RaiseSwitches::ALL);
    publisher.publish(&notifications).await.unwrap();
    let received = sim.received();
    assert_eq!(received.len(), 2);
    let data = &received[0]["data"];
    assert!(data.get("payload").is_none());
    assert_eq!(data["payloadTooLarge"], true);
    assert_eq!(
        data["payloadRef"],
        "/api/streams/Bank/Account/ACC%207-x?fromSequence=5&toSequence=5"
    );
    assert_eq!(received[1]["data"]["payload"], json!({"ok": true}));
    assert!(received[1]["data"].get("payloadTooLarge").is_none());
}

#[tokio::test]
async fn retries_503_and_429_then_succeeds() {
    let sim = TopicSim::start(TopicConfig::default()).await.unwrap();
    let publisher = publisher_for(&sim, NotificationSchema::EventGridEvent);
    sim.fail_next(2, 503);
    sim.fail_next(1, 429);
    sim.fail_next(1, 500);
    publisher.publish(&history("r", 1, 10)).await.unwrap();
    let statuses: Vec<u16> = sim.requests().iter().map(|r| r.status).collect();
    assert_eq!(statuses, [503, 503, 429, 500, 200]);
    assert_eq!(sim.received().len(), 2);
}

#[tokio::test]
async fn a_request_that_times_out_is_retried() {
    let sim = TopicSim::start(TopicConfig::default()).await.unwrap();
    let mut retry = fast_retry(5);
    retry.request_timeout = Duration::from_millis(300);
    let publisher =
        publisher_for(&sim, NotificationSchema::EventGridEvent).with_retry_policy(retry);
    sim.stall_next(2);
    // A hung topic must not hang the publisher: the bound is far above 2 timeouts + backoff.
    tokio::time::timeout(
        Duration::from_secs(30),
        publisher.publish(&history("t", 1, 10)),
    )
    .await
    .expect("the publisher waited on a hung request")
    .unwrap();
    let statuses: Vec<u16> = sim.requests().iter().map(|r| r.status).collect();
    assert_eq!(statuses, [0, 0, 200], "two stalls, then accepted");
    assert_eq!(sim.received().len(), 2);
}

#[tokio::test]
async fn gives_up_after_the_attempt_limit() {
    let sim = TopicSim::start(TopicConfig::default()).await.unwrap();
    let publisher =
        publisher_for(&sim, NotificationSchema::EventGridEvent).with_retry_policy(fast_retry(3));
    sim.fail_next(3, 503);
    let err = publisher.publish(&history("r", 1, 10)).await.unwrap_err();
    match &err {
        PublishError::Unavailable {
            attempts, batch, ..
        } => {
            assert_eq!(*attempts, 3);
            assert_eq!(batch.clone(), 0..2);
        }
        other => panic!("{other:?}"),
    }
    assert!(err.is_transient());
    assert_eq!(err.published(), 0);
    assert_eq!(sim.requests().len(), 3);

    // Connection refused is retried too, then reported.
    sim.set_down(DownMode::Refuse).await.unwrap();
    let err = publisher.publish(&history("r", 1, 10)).await.unwrap_err();
    assert!(
        matches!(&err, PublishError::Unavailable { attempts: 3, last, .. } if last.contains("connection")),
        "{err:?}"
    );
    sim.set_up().await.unwrap();
    publisher.publish(&history("r", 1, 10)).await.unwrap();
    assert_eq!(sim.received().len(), 2);
}

#[tokio::test]
async fn does_not_retry_400_or_413() {
    for status in [400u16, 413] {
        let sim = TopicSim::start(TopicConfig::default()).await.unwrap();
        let publisher = publisher_for(&sim, NotificationSchema::EventGridEvent);
        sim.fail_next(1, status);
        let err = publisher.publish(&history("r", 1, 10)).await.unwrap_err();
        assert!(
            matches!(&err, PublishError::Rejected { status: s, .. } if *s == status),
            "{err:?}"
        );
        assert!(!err.is_transient());
        assert_eq!(sim.requests().len(), 1, "{status} must not be retried");
    }
    // A real 400: Event Grid schema events sent to a CloudEvents topic.
    let sim = TopicSim::start(TopicConfig::with_schema(InputSchema::CloudEvent))
        .await
        .unwrap();
    let publisher = publisher_for(&sim, NotificationSchema::EventGridEvent);
    let err = publisher.publish(&history("r", 1, 10)).await.unwrap_err();
    match err {
        PublishError::Rejected { status, body, .. } => {
            assert_eq!(status, 400);
            assert!(body.contains("content type"), "{body}");
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(sim.requests().len(), 1);
}

#[tokio::test]
async fn a_wrong_key_stops_publishing_and_stays_secret() {
    let sim = TopicSim::start(TopicConfig::default()).await.unwrap();
    let target = NotificationTarget::Topic {
        endpoint: sim.endpoint().parse().unwrap(),
        key: TopicKey::new("not-the-key-s3cret"),
    };
    let publisher = Publisher::new(target, NotificationSchema::EventGridEvent)
        .unwrap()
        .with_retry_policy(fast_retry(5));
    let err = publisher.publish(&history("k", 1, 10)).await.unwrap_err();
    assert!(
        matches!(&err, PublishError::Unauthorized { status: 401, .. }),
        "{err:?}"
    );
    assert!(err.stops_publishing() && err.refused().is_none());
    assert_eq!(sim.requests().len(), 1, "401 is not retried");
    assert!(!format!("{err} {err:?} {publisher:?}").contains("s3cret"));
    assert!(sim.received().is_empty());

    // Any other 4xx (a wrong path here) refuses the request for good: the caller dead-letters.
    let target = NotificationTarget::Topic {
        endpoint: format!("http://127.0.0.1:{}/api/nothing", sim.port())
            .parse()
            .unwrap(),
        key: TopicKey::new(sim.key()),
    };
    let publisher = Publisher::new(target, NotificationSchema::EventGridEvent).unwrap();
    let err = publisher.publish(&history("k", 1, 10)).await.unwrap_err();
    assert!(
        matches!(&err, PublishError::Rejected { status: 404, .. }),
        "{err:?}"
    );
    assert_eq!(err.refused(), Some(0..2), "the whole request");
}

/// A key the topic refuses (rotated on the topic) pauses the publisher and its clones: no
/// request at all until the pause ends, then one request that finds out whether the key works
/// again; a refusal then pauses for longer, an acceptance ends the pause.
#[tokio::test]
async fn a_refused_key_pauses_every_clone_of_the_publisher() {
    let sim = TopicSim::start(TopicConfig::default()).await.unwrap();
    let pause = Duration::from_secs(1);
    let margin = Duration::from_millis(50);
    let publisher =
        publisher_for(&sim, NotificationSchema::EventGridEvent).with_auth_pause(pause, pause * 4);
    let clone = publisher.clone();
    sim.revoke_key(true);
    let err = publisher.publish(&history("p", 1, 10)).await.unwrap_err();
    assert!(
        matches!(&err, PublishError::Unauthorized { status: 401, .. }),
        "{err:?}"
    );
    assert_eq!(sim.requests().len(), 1);
    for _ in 0..5 {
        let err = clone.publish(&history("p", 1, 10)).await.unwrap_err();
        assert!(
            matches!(&err, PublishError::Paused { status: 401, .. }),
            "{err:?}"
        );
        assert!(err.stops_publishing());
    }
    assert!(publisher.paused().is_some_and(|why| why.contains("401")));
    assert_eq!(sim.requests().len(), 1, "nothing is sent while paused");

    // After the pause, one probe; refused again, the next pause is twice as long.
    tokio::time::sleep(pause + margin).await;
    assert!(publisher.paused().is_none());
    let err = publisher.publish(&history("p", 1, 10)).await.unwrap_err();
    assert!(matches!(&err, PublishError::Unauthorized { .. }), "{err:?}");
    assert_eq!(sim.requests().len(), 2);
    match clone.publish(&history("p", 1, 10)).await.unwrap_err() {
        PublishError::Paused { remaining, .. } => assert!(remaining > pause, "{remaining:?}"),
        other => panic!("{other:?}"),
    }

    sim.revoke_key(false);
    tokio::time::sleep(pause * 2 + margin).await;
    clone.publish(&history("p", 1, 10)).await.unwrap();
    assert!(publisher.paused().is_none());
    assert_eq!(sim.received().len(), 2);
}

#[tokio::test]
async fn settings_build_a_working_publisher() {
    let sim = TopicSim::start(TopicConfig::with_schema(InputSchema::CloudEvent))
        .await
        .unwrap();
    let settings = NotificationSettings::from_pairs([
        ("EventGridTopicEndpoint".to_string(), sim.endpoint()),
        (
            "EventGridKeySettingName".to_string(),
            "TopicKey".to_string(),
        ),
        ("TopicKey".to_string(), sim.key().to_string()),
        ("NotificationSchema".to_string(), "CloudEvent".to_string()),
    ])
    .unwrap();
    let publisher = Publisher::from_settings(&settings).unwrap().unwrap();
    let sink: Arc<dyn NotificationSink> = Arc::new(publisher);
    sink.publish(&history("s", 1, 10)).await.unwrap();
    assert_eq!(sim.received().len(), 2);
}

#[tokio::test]
async fn ids_are_deterministic_so_receivers_can_drop_duplicates() {
    let sim = TopicSim::start(TopicConfig::default()).await.unwrap();
    let publisher = publisher_for(&sim, NotificationSchema::EventGridEvent);
    // The same stream and sequence, built twice (e.g. by two processes after a crash).
    let first = history("dup", 2, 10);
    let again = history("dup", 2, 10);
    let ids = |ns: &[Notification]| ns.iter().map(|n| n.id).collect::<Vec<_>>();
    assert_eq!(ids(&first), ids(&again));
    assert_ne!(ids(&history("other", 2, 10)), ids(&first));
    publisher.publish(&first).await.unwrap();
    publisher.publish(&again).await.unwrap();
    let received = sim.received();
    assert_eq!(received.len(), 6);
    for (a, b) in received[..3].iter().zip(&received[3..]) {
        assert_eq!(a["id"], b["id"]);
        assert_eq!(a["eventType"], b["eventType"]);
        assert_eq!(a["data"]["sequenceNumber"], b["data"]["sequenceNumber"]);
    }
    let kinds: Vec<NotificationKind> = first.iter().map(Notification::kind).collect();
    assert_eq!(
        kinds,
        [
            NotificationKind::NewEntity,
            NotificationKind::NewEvent,
            NotificationKind::NewEvent
        ]
    );
}

/// Records what a Functions host's Event Grid webhook would receive.
async fn local_webhook() -> (
    String,
    Arc<Mutex<Vec<(Option<String>, Option<String>, Value)>>>,
) {
    use warp::{Filter, Reply};
    let seen = Arc::new(Mutex::new(Vec::new()));
    let record = seen.clone();
    let route = warp::post()
        .and(warp::query::raw().or(warp::any().map(String::new)).unify())
        .and(warp::header::optional::<String>("aeg-event-type"))
        .and(warp::header::optional::<String>("aeg-sas-key"))
        .and(warp::body::json())
        .map(
            move |query: String, kind: Option<String>, key: Option<String>, body: Value| {
                assert_eq!(query, "functionName=Projector");
                record.lock().unwrap().push((kind, key, body));
                warp::reply::with_status("", warp::http::StatusCode::ACCEPTED).into_response()
            },
        );
    let address = streamfold_testbed::raw::serve_on_free_port(route)
        .await
        .unwrap();
    (
        format!(
            "http://{address}{}",
            crate::support::event_grid_webhook_path("Projector")
        ),
        seen,
    )
}

#[tokio::test]
async fn local_loop_posts_to_the_host_webhook() {
    let (url, seen) = local_webhook().await;
    let settings =
        NotificationSettings::from_pairs([("StreamfoldLocalEventGridUrl".to_string(), url)])
            .unwrap();
    let publisher = Publisher::from_settings(&settings).unwrap().unwrap();
    publisher.publish(&history("loc", 1, 10)).await.unwrap();
    let seen = seen.lock().unwrap().clone();
    assert_eq!(seen.len(), 1);
    let (kind, key, body) = &seen[0];
    assert_eq!(kind.as_deref(), Some("Notification"));
    assert_eq!(key, &None);
    assert_eq!(body.as_array().unwrap().len(), 2);
}

/// The events of every shape streamfold publishes, as the topic received them.
async fn published_events(schema: NotificationSchema) -> Vec<Value> {
    let input = match schema {
        NotificationSchema::EventGridEvent => InputSchema::EventGridEvent,
        NotificationSchema::CloudEvent => InputSchema::CloudEvent,
    };
    let sim = TopicSim::start(TopicConfig::with_schema(input))
        .await
        .unwrap();
    let publisher = publisher_for(&sim, schema);
    let mut with_causation = recorded(2, "Withdrawn", r#"{"amount":"0.10000000000000000001"}"#);
    with_causation.metadata.causation_id = Some("cmd-9".into());
    let events = [
        recorded(1, "Opened", r#"{"owner":"Zoë \"Z\" O'Brien"}"#),
        with_causation,
        recorded(3, "Noted", "null"),
        recorded(
            4,
            "Uploaded",
            &json!({"blob": "b".repeat(1_100_000)}).to_string(),
        ),
    ];
    let notifications = notifications_for(&stream("Zoë's 1 ü %"), &events, RaiseSwitches::ALL);
    assert!(notifications[4].data.payload_too_large);
    publisher.publish(&notifications).await.unwrap();
    sim.received()
}

#[tokio::test]
async fn official_python_sdk_parses_our_events() {
    let python = std::env::var(PYTHON_VAR).unwrap_or_else(|_| {
        panic!(
            "{PYTHON_VAR} is not set: it must name a Python with azure-eventgrid installed \
             (scripts/test.sh sets it to .venv/bin/python after `pip install -r requirements-test.txt`)"
        )
    });
    let events = json!({
        "eventGridEvents": published_events(NotificationSchema::EventGridEvent).await,
        "cloudEvents": published_events(NotificationSchema::CloudEvent).await,
    });
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("events.json");
    std::fs::write(&file, events.to_string()).unwrap();
    let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/eventgrid_sdk.py");
    let output = tokio::process::Command::new(&python)
        .arg(&script)
        .arg(&file)
        .output()
        .await
        .unwrap_or_else(|e| panic!("running {python}: {e}"));
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "the SDK cross-check failed:\n{stdout}\n{stderr}"
    );
    assert!(
        stdout.contains("checked 5 EventGridEvents and 5 CloudEvents"),
        "{stdout}"
    );
}
