//! The Event Grid topic simulator: its publish checks, and delivery with chaos and retries,
//! against a small webhook receiver in this file and through the host simulator's Event Grid
//! webhook to the echo-handler.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

mod common;

use serde_json::{json, Value};
use streamfold_testbed::hostsim::{HostConfig, HostSim};
use streamfold_testbed::raw::serve_on_free_port;
use streamfold_testbed::topic::{
    AttemptOutcome, Chaos, DeliveryRetry, DeliveryStats, DownMode, InputSchema, Subscription,
    TopicConfig, TopicSim, MAX_EVENTS_PER_REQUEST, MAX_REQUEST_BYTES,
};
use warp::http::HeaderMap;
use warp::{Filter, Reply};

use common::{client, received_at, stage_echo};

const IDLE: Duration = Duration::from_secs(60);

fn eg_event(id: &str) -> Value {
    json!({"id": id, "subject": "eventsourcing/Bank/Account/1", "eventType": "Bank.Account.Deposited",
           "eventTime": "2024-05-01T10:00:00.5Z", "data": {"n": id}, "dataVersion": "1.0"})
}

fn cloud_event(id: &str) -> Value {
    json!({"specversion": "1.0", "id": id, "source": "/streamfold/Bank/Account",
           "type": "Bank.Account.Deposited", "time": "2024-05-01T10:00:00Z",
           "subject": "eventsourcing/Bank/Account/1", "datacontenttype": "application/json",
           "data": {"n": id}})
}

struct Publish<'a> {
    sim: &'a TopicSim,
    key: Option<String>,
    content_type: &'a str,
    query: &'a str,
}

impl<'a> Publish<'a> {
    fn to(sim: &'a TopicSim) -> Self {
        Self {
            sim,
            key: Some(sim.key().to_owned()),
            content_type: "application/json",
            query: "?api-version=2018-01-01",
        }
    }

    async fn send(&self, body: impl Into<reqwest::Body>) -> reqwest::Result<(u16, String)> {
        let client = reqwest::Client::builder().no_proxy().build()?;
        let mut request = client
            .post(format!("{}{}", self.sim.endpoint(), self.query))
            .header("content-type", self.content_type)
            .body(body);
        if let Some(key) = &self.key {
            request = request.header("aeg-sas-key", key);
        }
        let response = request.send().await?;
        let status = response.status().as_u16();
        Ok((status, response.text().await?))
    }

    async fn json(&self, body: &Value) -> (u16, String) {
        self.send(body.to_string()).await.unwrap()
    }
}

#[tokio::test]
async fn accepts_a_valid_batch_and_records_it() {
    let sim = TopicSim::start(TopicConfig::default()).await.unwrap();
    let batch = json!([eg_event("a"), eg_event("b")]);
    assert_eq!(Publish::to(&sim).json(&batch).await.0, 200);
    assert_eq!(sim.received(), batch.as_array().unwrap().clone());
    let requests = sim.requests();
    assert_eq!(requests.len(), 1);
    assert_eq!((requests[0].status, requests[0].events), (200, 2));
    assert_eq!(sim.stats().accepted, 2);
}

#[tokio::test]
async fn checks_the_key_and_the_api_version() {
    let sim = TopicSim::start(TopicConfig::default()).await.unwrap();
    let batch = json!([eg_event("a")]);
    let mut publish = Publish::to(&sim);
    publish.key = None;
    assert_eq!(publish.json(&batch).await.0, 401);
    publish.key = Some("wrong".into());
    assert_eq!(publish.json(&batch).await.0, 401);
    let mut publish = Publish::to(&sim);
    publish.query = "";
    let (status, reason) = publish.json(&batch).await;
    assert_eq!(status, 400);
    assert!(reason.contains("api-version"), "{reason}");
    assert!(sim.received().is_empty());
}

#[tokio::test]
async fn refuses_event_grid_events_that_break_the_schema() {
    let sim = TopicSim::start(TopicConfig::default()).await.unwrap();
    let publish = Publish::to(&sim);
    let broken = |field: &str, value: Option<Value>| {
        let mut event = eg_event("x");
        match value {
            Some(v) => event[field] = v,
            None => {
                event.as_object_mut().unwrap().remove(field);
            }
        }
        json!([eg_event("ok"), event])
    };
    for (field, value, expect) in [
        ("id", None, "id is required"),
        ("subject", Some(json!(3)), "subject must be a string"),
        ("eventType", Some(json!("")), "eventType must not be empty"),
        ("eventTime", None, "eventTime is required"),
        ("eventTime", Some(json!("01/05/2024")), "RFC 3339"),
        ("data", None, "data is required"),
        ("dataVersion", None, "dataVersion is required"),
        ("topic", Some(Value::Null), "topic must be omitted"),
        ("metadataVersion", Some(json!("2")), "metadataVersion"),
    ] {
        let (status, reason) = publish.json(&broken(field, value)).await;
        assert_eq!(status, 400, "{field}");
        assert!(
            reason.contains("event 1") && reason.contains(expect),
            "{field}: {reason}"
        );
    }
    // The topic's own resource id is allowed; so is a matching metadataVersion.
    let mut event = eg_event("y");
    event["topic"] = json!(sim.resource_id());
    event["metadataVersion"] = json!("1");
    assert_eq!(publish.json(&json!([event])).await.0, 200);
    // Not an array, not JSON, wrong content type.
    assert_eq!(publish.json(&eg_event("z")).await.0, 400);
    assert_eq!(publish.send("[{").await.unwrap().0, 400);
    let mut cloud_type = Publish::to(&sim);
    cloud_type.content_type = "application/cloudevents-batch+json";
    assert_eq!(cloud_type.json(&json!([eg_event("z")])).await.0, 400);
    // All or nothing: only the one valid request was recorded.
    assert_eq!(sim.received().len(), 1);
}

#[tokio::test]
async fn refuses_cloud_events_that_break_the_spec() {
    let sim = TopicSim::start(TopicConfig::with_schema(InputSchema::CloudEvent))
        .await
        .unwrap();
    let mut publish = Publish::to(&sim);
    publish.content_type = "application/cloudevents-batch+json; charset=utf-8";
    assert_eq!(publish.json(&json!([cloud_event("a")])).await.0, 200);
    let cases: Vec<(Value, &str)> = vec![
        (json!({"specversion": "0.3"}), "specversion"),
        (json!({"specversion": null}), "specversion"),
        (json!({"source": null}), "source"),
        (json!({"type": ""}), "type must not be empty"),
        (json!({"time": "noon"}), "RFC 3339"),
        (json!({"subject": 1}), "subject must be a string"),
        (json!({"data_base64": "AA=="}), "data_base64"),
        (json!({"Extension": "x"}), "attribute name"),
    ];
    for (change, expect) in cases {
        let mut event = cloud_event("b");
        for (k, v) in change.as_object().unwrap() {
            if v.is_null() {
                event.as_object_mut().unwrap().remove(k);
            } else {
                event[k] = v.clone();
            }
        }
        let (status, reason) = publish.json(&json!([event])).await;
        assert_eq!(status, 400, "{change}");
        assert!(reason.contains(expect), "{change}: {reason}");
    }
    // One event in structured mode; an Event Grid content type is refused.
    let mut single = Publish::to(&sim);
    single.content_type = "application/cloudevents+json";
    assert_eq!(single.json(&cloud_event("c")).await.0, 200);
    assert_eq!(
        Publish::to(&sim).json(&json!([cloud_event("d")])).await.0,
        400
    );
    assert_eq!(sim.received().len(), 2);
}

#[tokio::test]
async fn enforces_the_size_and_count_limits() {
    let sim = TopicSim::start(TopicConfig::default()).await.unwrap();
    let publish = Publish::to(&sim);
    // One event of just under the limit is accepted; one byte more of data is 413.
    let fill = |total: usize| {
        let mut event = eg_event("big");
        event["data"] = json!("");
        let base = json!([event]).to_string().len();
        event["data"] = json!("x".repeat(total - base));
        let body = json!([event]).to_string();
        assert_eq!(body.len(), total);
        body
    };
    assert_eq!(publish.send(fill(MAX_REQUEST_BYTES)).await.unwrap().0, 200);
    let (status, reason) = publish.send(fill(MAX_REQUEST_BYTES + 1)).await.unwrap();
    assert_eq!(status, 413);
    assert!(reason.contains("request"), "{reason}");
    // Too many (small) events.
    let tiny = json!({"id": "i", "subject": "s", "eventType": "t", "eventTime": "2024-05-01T10:00:00Z",
                      "data": null, "dataVersion": ""});
    let many = Value::Array(vec![tiny.clone(); MAX_EVENTS_PER_REQUEST + 1]);
    assert!(many.to_string().len() < MAX_REQUEST_BYTES);
    let (status, reason) = publish.json(&many).await;
    assert_eq!(status, 413);
    assert!(reason.contains("5000"), "{reason}");
    let just_enough = Value::Array(vec![tiny; MAX_EVENTS_PER_REQUEST]);
    assert_eq!(publish.json(&just_enough).await.0, 200);
    assert_eq!(sim.received().len(), 1 + MAX_EVENTS_PER_REQUEST);
}

#[tokio::test]
async fn injected_failures_and_downtime() {
    let sim = TopicSim::start(TopicConfig::default()).await.unwrap();
    let publish = Publish::to(&sim);
    let batch = json!([eg_event("a")]);
    sim.fail_next(2, 503);
    sim.fail_next(1, 429);
    let statuses: Vec<u16> = futures_statuses(&publish, &batch, 4).await;
    assert_eq!(statuses, [503, 503, 429, 200]);

    sim.set_down(DownMode::Unavailable).await.unwrap();
    assert_eq!(publish.json(&batch).await.0, 503);
    sim.set_down(DownMode::Refuse).await.unwrap();
    let err = publish.send(batch.to_string()).await.unwrap_err();
    assert!(err.is_connect(), "{err:?}");
    sim.set_up().await.unwrap();
    assert_eq!(publish.json(&batch).await.0, 200);
    assert_eq!(sim.received().len(), 2);
}

#[tokio::test]
async fn stalled_requests_get_no_answer_until_released() {
    let sim = TopicSim::start(TopicConfig::default()).await.unwrap();
    sim.stall_next(1);
    let client = client();
    let send = || {
        client
            .post(format!("{}?api-version=2018-01-01", sim.endpoint()))
            .header("content-type", "application/json")
            .header("aeg-sas-key", sim.key())
            .body(json!([eg_event("a")]).to_string())
    };
    let err = send()
        .timeout(Duration::from_millis(200))
        .send()
        .await
        .unwrap_err();
    assert!(err.is_timeout(), "{err:?}");
    assert_eq!(send().send().await.unwrap().status(), 200);
    // A stalled request still waiting is answered 503 when released.
    sim.stall_next(1);
    let waiting = tokio::spawn(send().send());
    while sim.requests().len() < 3 {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    sim.release_stalls();
    assert_eq!(waiting.await.unwrap().unwrap().status(), 503);
    let statuses: Vec<u16> = sim.requests().iter().map(|r| r.status).collect();
    assert_eq!(statuses, [0, 200, 0]);
    assert_eq!(sim.received().len(), 1);
}

async fn futures_statuses(publish: &Publish<'_>, batch: &Value, n: usize) -> Vec<u16> {
    let mut out = Vec::new();
    for _ in 0..n {
        out.push(publish.json(batch).await.0);
    }
    out
}

/// What the webhook saw: one entry per request.
#[derive(Debug, Clone)]
struct Seen {
    body: Value,
    content_type: String,
    event_type_header: Option<String>,
    delivery_count: u32,
}

type Answer = Arc<dyn Fn(&str, u32) -> (u16, Duration) + Send + Sync>;

/// A webhook on a free port that records every request and answers `answer(event id,
/// aeg-delivery-count)` (status, delay before answering).
async fn webhook(answer: Answer) -> (String, Arc<Mutex<Vec<Seen>>>) {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let record = seen.clone();
    let route = warp::post()
        .and(warp::header::headers_cloned())
        .and(warp::body::bytes())
        .then(move |headers: HeaderMap, body: bytes::Bytes| {
            let record = record.clone();
            let answer = answer.clone();
            async move {
                let body: Value = serde_json::from_slice(&body).unwrap();
                let header = |name: &str| {
                    headers
                        .get(name)
                        .and_then(|v| v.to_str().ok())
                        .map(str::to_owned)
                };
                let delivery_count: u32 = header("aeg-delivery-count").unwrap().parse().unwrap();
                let event = if body.is_array() { &body[0] } else { &body };
                let id = event["id"].as_str().unwrap().to_owned();
                record.lock().unwrap().push(Seen {
                    content_type: header("content-type").unwrap_or_default(),
                    event_type_header: header("aeg-event-type"),
                    delivery_count,
                    body,
                });
                let (status, delay) = answer(&id, delivery_count);
                tokio::time::sleep(delay).await;
                warp::reply::with_status("", warp::http::StatusCode::from_u16(status).unwrap())
                    .into_response()
            }
        });
    let address = serve_on_free_port(route).await.unwrap();
    let url = format!("http://{address}/runtime/webhooks/EventGrid?functionName=Projector");
    (url, seen)
}

fn ok_always() -> Answer {
    Arc::new(|_, _| (200, Duration::ZERO))
}

fn fast_retry(max_attempts: u32) -> DeliveryRetry {
    DeliveryRetry {
        schedule: vec![Duration::from_millis(5), Duration::from_millis(10)],
        max_attempts,
        timeout: Duration::from_secs(5),
        jitter: 0.5,
    }
}

#[tokio::test]
async fn delivers_each_event_alone_with_event_grid_headers() {
    let (url, seen) = webhook(ok_always()).await;
    let sim = TopicSim::start(TopicConfig::default().subscribe(Subscription::new(url)))
        .await
        .unwrap();
    let ids: Vec<String> = (0..20).map(|i| format!("e{i}")).collect();
    let batch = Value::Array(ids.iter().map(|id| eg_event(id)).collect());
    assert_eq!(Publish::to(&sim).json(&batch).await.0, 200);
    sim.wait_idle(IDLE).await.unwrap();
    let seen = seen.lock().unwrap().clone();
    assert_eq!(seen.len(), 20);
    for s in &seen {
        let events = s.body.as_array().expect("an array of one event");
        assert_eq!(events.len(), 1);
        assert_eq!(events[0]["topic"], json!(sim.resource_id()));
        assert_eq!(events[0]["metadataVersion"], "1");
        assert_eq!(s.event_type_header.as_deref(), Some("Notification"));
        assert!(s.content_type.starts_with("application/json"));
        assert_eq!(s.delivery_count, 0);
    }
    let mut got: Vec<String> = seen
        .iter()
        .map(|s| s.body[0]["id"].as_str().unwrap().to_owned())
        .collect();
    got.sort();
    let mut want = ids.clone();
    want.sort();
    assert_eq!(got, want);
    let stats = sim.stats();
    assert_eq!((stats.delivered, stats.dropped, stats.pending), (20, 0, 0));
}

#[tokio::test]
async fn delivers_cloud_events_as_single_objects() {
    let (url, seen) = webhook(ok_always()).await;
    let config =
        TopicConfig::with_schema(InputSchema::CloudEvent).subscribe(Subscription::new(url));
    let sim = TopicSim::start(config).await.unwrap();
    let mut publish = Publish::to(&sim);
    publish.content_type = "application/cloudevents-batch+json; charset=utf-8";
    assert_eq!(publish.json(&json!([cloud_event("c1")])).await.0, 200);
    sim.wait_idle(IDLE).await.unwrap();
    let seen = seen.lock().unwrap().clone();
    assert_eq!(seen.len(), 1);
    assert_eq!(seen[0].body, cloud_event("c1"));
    assert!(seen[0]
        .content_type
        .starts_with("application/cloudevents+json"));
}

#[tokio::test]
async fn retries_failures_and_timeouts_but_drops_400_and_413() {
    // e-500: 500 twice, then 200. e-slow: too slow once, then 200. e-400, e-413: refused.
    // e-dead: always 503.
    let answer: Answer = Arc::new(|id, count| match (id, count) {
        ("e-500", 0 | 1) => (500, Duration::ZERO),
        ("e-slow", 0) => (200, Duration::from_secs(3)),
        ("e-400", _) => (400, Duration::ZERO),
        ("e-413", _) => (413, Duration::ZERO),
        ("e-dead", _) => (503, Duration::ZERO),
        _ => (200, Duration::ZERO),
    });
    let (url, seen) = webhook(answer).await;
    let mut retry = fast_retry(4);
    retry.timeout = Duration::from_millis(300);
    let sim =
        TopicSim::start(TopicConfig::default().subscribe(Subscription::new(url).with_retry(retry)))
            .await
            .unwrap();
    let ids = ["e-500", "e-slow", "e-400", "e-413", "e-dead", "e-ok"];
    let batch = Value::Array(ids.iter().map(|id| eg_event(id)).collect());
    assert_eq!(Publish::to(&sim).json(&batch).await.0, 200);
    sim.wait_idle(IDLE).await.unwrap();

    let mut attempts: BTreeMap<String, Vec<AttemptOutcome>> = BTreeMap::new();
    for a in sim.delivery_log() {
        attempts.entry(a.event_id).or_default().push(a.outcome);
    }
    use AttemptOutcome::*;
    assert_eq!(attempts["e-500"], [Status(500), Status(500), Status(200)]);
    assert!(
        matches!(&attempts["e-slow"][..], [Error(_), Status(200)]),
        "{:?}",
        attempts["e-slow"]
    );
    assert_eq!(attempts["e-400"], [Status(400)]);
    assert_eq!(attempts["e-413"], [Status(413)]);
    assert_eq!(attempts["e-dead"], vec![Status(503); 4]);
    assert_eq!(attempts["e-ok"], [Status(200)]);
    // Each retry says how many attempts came before it.
    let counts: Vec<u32> = seen
        .lock()
        .unwrap()
        .iter()
        .filter(|s| s.body[0]["id"] == "e-500")
        .map(|s| s.delivery_count)
        .collect();
    assert_eq!(counts, [0, 1, 2]);
    let stats = sim.stats();
    assert_eq!(stats.delivered, 3);
    assert_eq!(stats.dropped, 3);
    assert_eq!(stats.failed_attempts, 2 + 1 + 1 + 1 + 4);
}

/// Every attempt of a chaos run: (event id, copy, attempt, outcome), sorted.
type AttemptLog = Vec<(String, u32, u32, AttemptOutcome)>;

/// A chaos run: what the webhook saw, per event id (delivery counts), the attempt log, the
/// counters, and the order requests reached the webhook.
async fn chaos_run(
    seed: u64,
) -> (
    HashMap<String, Vec<u32>>,
    AttemptLog,
    DeliveryStats,
    Vec<String>,
) {
    // The webhook fails the first attempt of every third event.
    let answer: Answer = Arc::new(|id, count| {
        let n: u32 = id.trim_start_matches('e').parse().unwrap();
        if n.is_multiple_of(3) && count == 0 {
            (500, Duration::ZERO)
        } else {
            (200, Duration::ZERO)
        }
    });
    let (url, seen) = webhook(answer).await;
    let chaos = Chaos {
        seed,
        duplicate: 0.3,
        reorder: 0.5,
        max_delay: Duration::from_millis(40),
        transient_failure: 0.2,
    };
    let subscription = Subscription::new(url)
        .with_chaos(chaos)
        .with_retry(fast_retry(10));
    let sim = TopicSim::start(TopicConfig::default().subscribe(subscription))
        .await
        .unwrap();
    let publish = Publish::to(&sim);
    let ids: Vec<String> = (0..60).map(|i| format!("e{i}")).collect();
    for chunk in ids.chunks(6) {
        let batch = Value::Array(chunk.iter().map(|id| eg_event(id)).collect());
        assert_eq!(publish.json(&batch).await.0, 200);
    }
    sim.wait_idle(IDLE).await.unwrap();
    let mut per_event: HashMap<String, Vec<u32>> = HashMap::new();
    let order: Vec<String> = seen
        .lock()
        .unwrap()
        .iter()
        .map(|s| {
            let id = s.body[0]["id"].as_str().unwrap().to_owned();
            per_event
                .entry(id.clone())
                .or_default()
                .push(s.delivery_count);
            id
        })
        .collect();
    let mut log: Vec<_> = sim
        .delivery_log()
        .into_iter()
        .map(|a| (a.event_id, a.copy, a.attempt, a.outcome))
        .collect();
    log.sort_by(|a, b| (&a.0, a.1, a.2).cmp(&(&b.0, b.1, b.2)));
    (per_event, log, sim.stats(), order)
}

#[tokio::test]
async fn chaos_is_at_least_once_unordered_and_reproducible() {
    let (per_event, log, stats, order) = chaos_run(42).await;
    // At least once: every event reached the webhook with a 2xx at least once.
    assert_eq!(stats.accepted, 60);
    assert_eq!(stats.dropped, 0);
    assert_eq!(stats.delivered, 60 + stats.duplicated);
    assert_eq!(stats.pending, 0);
    for i in 0..60 {
        assert!(
            per_event.contains_key(&format!("e{i}")),
            "e{i} never delivered"
        );
    }
    // The chaos happened: duplicates, injected failures, retries, reordering.
    assert!(stats.duplicated > 0, "{stats:?}");
    assert!(stats.injected_failures > 0, "{stats:?}");
    assert!(stats.delayed > 0, "{stats:?}");
    let successes: usize = per_event.values().map(Vec::len).sum();
    assert!(successes as u64 > 60);
    let mut first_seen = Vec::new();
    for id in &order {
        if !first_seen.contains(id) {
            first_seen.push(id.clone());
        }
    }
    let published: Vec<String> = (0..60).map(|i| format!("e{i}")).collect();
    assert_ne!(first_seen, published, "deliveries arrived in publish order");

    // Same seed, same choices: the same attempts with the same outcomes.
    let (_, log_again, stats_again, _) = chaos_run(42).await;
    assert_eq!(log, log_again);
    assert_eq!(stats, stats_again);
    // Another seed, other choices.
    let (_, log_other, _, _) = chaos_run(43).await;
    assert_ne!(log, log_other);
}

/// An app with one Event Grid function, `Projector`, run by the echo-handler (which fails an
/// invocation whose event has `data.fail == true`).
fn projector_app() -> tempfile::TempDir {
    let template = tempfile::tempdir().unwrap();
    let root = template.path();
    let host_json = json!({
        "version": "2.0",
        "customHandler": {"description": {"defaultExecutablePath": "handler"}}
    });
    std::fs::write(root.join("host.json"), host_json.to_string()).unwrap();
    std::fs::create_dir(root.join("Projector")).unwrap();
    std::fs::write(
        root.join("Projector/function.json"),
        r#"{"bindings":[{"type":"eventGridTrigger","direction":"in","name":"event"}]}"#,
    )
    .unwrap();
    stage_echo(root)
}

#[tokio::test]
async fn delivers_through_the_host_simulator_webhook_in_both_schemas() {
    let app = projector_app();
    let host = HostSim::start(HostConfig::new(app.path())).await.unwrap();
    let url = format!(
        "{}/runtime/webhooks/EventGrid?functionName=Projector",
        host.base_url()
    );
    for (schema, content_type, event) in [
        (
            InputSchema::EventGridEvent,
            "application/json",
            eg_event as fn(&str) -> Value,
        ),
        (
            InputSchema::CloudEvent,
            "application/cloudevents-batch+json",
            cloud_event,
        ),
    ] {
        let subscription = Subscription::new(url.clone()).with_retry(fast_retry(3));
        let sim = TopicSim::start(TopicConfig::with_schema(schema).subscribe(subscription))
            .await
            .unwrap();
        let mut publish = Publish::to(&sim);
        publish.content_type = content_type;
        let mut failing = event("bad");
        failing["data"] = json!({"fail": true});
        let batch = json!([event("good-1"), failing, event("good-2")]);
        assert_eq!(publish.json(&batch).await.0, 200);
        sim.wait_idle(IDLE).await.unwrap();

        let mut outcomes: BTreeMap<String, Vec<AttemptOutcome>> = BTreeMap::new();
        for a in sim.delivery_log() {
            outcomes.entry(a.event_id).or_default().push(a.outcome);
        }
        use AttemptOutcome::Status;
        assert_eq!(outcomes["good-1"], [Status(202)], "{schema:?}");
        assert_eq!(outcomes["good-2"], [Status(202)], "{schema:?}");
        // The handler fails it, the host answers 500, the topic retries, then drops it.
        assert_eq!(outcomes["bad"], vec![Status(500); 3], "{schema:?}");
        let stats = sim.stats();
        assert_eq!((stats.delivered, stats.dropped), (2, 1), "{schema:?}");
    }
    // The handler saw every attempt: 2 + 3 per schema.
    assert_eq!(received_at(&host, "/Projector").await.len(), 10);
    host.shutdown().await.unwrap();
}
