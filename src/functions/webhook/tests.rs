//! The webhook's route tests: both doors, both handshakes, and per-event isolation, over the
//! in-memory app.

use std::sync::Arc;

use serde_json::value::RawValue;
use serde_json::{json, Value};

use super::*;
use crate::app::App;
use crate::config::Settings;
use crate::notify::{Notification, NotificationSchema};
use crate::stream::{EntityType, ExpectedVersion, NewEvent, RecordedEvent, StreamId};
use crate::testing::EventCount;

const COUNT: EventCount = EventCount::new().refusing("Poison");

async fn app_with_stream(events: usize) -> (Arc<App>, StreamId, Vec<RecordedEvent>) {
    let mut app = App::in_memory(Settings::from_pairs(Vec::new()).unwrap());
    app.read_models_mut()
        .register(&EntityType::from_static("Bank", "Account"), COUNT)
        .unwrap();
    let stream = StreamId::new("Bank", "Account", "A 1").unwrap();
    let store = app
        .store(&EntityType::from_static("Bank", "Account"))
        .unwrap();
    let new = (0..events)
        .map(|_| NewEvent::from_raw("Happened", RawValue::from_string("{}".into()).unwrap()))
        .collect();
    store
        .append(&stream, ExpectedVersion::NoStream, new)
        .await
        .unwrap();
    let recorded = store
        .read(&stream, crate::stream::ReadRequest::all())
        .await
        .unwrap()
        .events;
    (Arc::new(app), stream, recorded)
}

/// Serves the routes on a free loopback port, as the handler does; the base URL.
async fn serve_routes(app: Arc<App>) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(crate::functions::serve(
        listener,
        routes(app),
        std::future::pending(),
    ));
    base
}

struct Answer {
    status: u16,
    headers: reqwest::header::HeaderMap,
    body: Value,
}

async fn send(request: reqwest::RequestBuilder) -> Answer {
    let response = request.send().await.unwrap();
    let status = response.status().as_u16();
    let headers = response.headers().clone();
    let bytes = response.bytes().await.unwrap();
    let body = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
    Answer {
        status,
        headers,
        body,
    }
}

async fn count_row(app: &App, stream: &StreamId) -> Option<u64> {
    let row = app
        .read_model_store()
        .unwrap()
        .load("count", stream)
        .await
        .unwrap()?;
    Some(row.checkpoint.sequence)
}

fn event(schema: NotificationSchema, stream: &StreamId, recorded: &RecordedEvent) -> Value {
    let n = Notification::new_event(stream, recorded);
    serde_json::from_slice(&schema.encode(&n).unwrap()).unwrap()
}

#[tokio::test]
async fn projector_invocations_accept_objects_and_strings_in_either_schema() {
    let (app, stream, recorded) = app_with_stream(3).await;
    let base = serve_routes(app.clone()).await;
    let http = reqwest::Client::new();
    let invoke = |event: Value| {
        http.post(format!("{base}/Projector"))
            .json(&json!({"Data": {"event": event}, "Metadata": {}}))
    };

    let second = event(NotificationSchema::CloudEvent, &stream, &recorded[1]);
    let answer = send(invoke(Value::String(second.to_string()))).await;
    assert_eq!(answer.status, 200, "{}", answer.body);
    let log = answer.body["Logs"][0].as_str().unwrap().to_owned();
    // It reads to the end of the stream: event 3 is applied too.
    assert!(log.contains("count 0→3 (3 applied"), "{log}");
    assert_eq!(count_row(&app, &stream).await, Some(3));

    let third = event(NotificationSchema::EventGridEvent, &stream, &recorded[2]);
    let duplicate = send(invoke(third)).await;
    assert_eq!(duplicate.status, 200);
    let log = duplicate.body["Logs"][0].as_str().unwrap().to_owned();
    assert!(log.contains("count already at 3"), "{log}");

    // Not a notification: logged and acknowledged, nothing changes.
    let foreign = send(invoke(json!({"id": "x", "data": {}}))).await;
    assert_eq!(foreign.status, 200);
    assert!(foreign.body["Logs"][0]
        .as_str()
        .unwrap()
        .starts_with("ignored"));

    // An entity type without read models: acknowledged, nothing to do.
    let cart = StreamId::new("Shop", "Cart", "1").unwrap();
    let other = event(NotificationSchema::EventGridEvent, &cart, &recorded[0]);
    let ignored = send(invoke(other)).await;
    assert_eq!(ignored.status, 200);
    let log = ignored.body["Logs"][0].as_str().unwrap().to_owned();
    assert!(log.contains("no read models registered"), "{log}");

    // A notification ahead of the stream fails, for a redelivery.
    let mut ninth = recorded[2].clone();
    ninth.sequence = 9;
    let ahead = event(NotificationSchema::EventGridEvent, &stream, &ninth);
    let failed = send(invoke(ahead)).await;
    assert_eq!(failed.status, 503, "{}", failed.body);
    assert_eq!(count_row(&app, &stream).await, Some(3));
}

#[tokio::test]
async fn the_plain_webhook_answers_both_handshakes_and_deliveries() {
    let (app, stream, recorded) = app_with_stream(2).await;
    let base = serve_routes(app.clone()).await;
    let url = format!("{base}/api/eventgrid");
    let http = reqwest::Client::new();

    let validation = send(
        http.post(&url)
            .header(EVENT_TYPE_HEADER, SUBSCRIPTION_VALIDATION)
            .json(&json!([{
                "id": "1", "eventType": VALIDATION_EVENT_TYPE, "subject": "",
                "eventTime": "2024-01-01T00:00:00Z", "dataVersion": "1",
                "data": {"validationCode": "abc-123", "validationUrl": "https://x"}
            }])),
    )
    .await;
    assert_eq!(validation.status, 200);
    assert_eq!(validation.body, json!({"validationResponse": "abc-123"}));

    let options = send(
        http.request(reqwest::Method::OPTIONS, &url)
            .header("WebHook-Request-Origin", "eventgrid.azure.net"),
    )
    .await;
    assert_eq!(options.status, 200);
    assert_eq!(
        options.headers[ALLOWED_ORIGIN_HEADER],
        "eventgrid.azure.net"
    );
    assert_eq!(options.headers[ALLOWED_RATE_HEADER], ALLOWED_RATE);
    let no_origin = send(http.request(reqwest::Method::OPTIONS, &url)).await;
    assert_eq!(no_origin.status, 400);

    // One CloudEvent, no aeg-event-type: its content type says what it is.
    let single = send(
        http.post(&url)
            .header(
                "content-type",
                "application/cloudevents+json; charset=utf-8",
            )
            .body(event(NotificationSchema::CloudEvent, &stream, &recorded[0]).to_string()),
    )
    .await;
    assert_eq!(single.status, 200, "{}", single.body);
    assert_eq!(count_row(&app, &stream).await, Some(2));

    // An array with a foreign event: the notification is handled, the other skipped.
    let mixed = send(
        http.post(&url)
            .header(EVENT_TYPE_HEADER, NOTIFICATION)
            .json(&json!([
                event(NotificationSchema::EventGridEvent, &stream, &recorded[1]),
                {"id": "x"}
            ])),
    )
    .await;
    assert_eq!(mixed.status, 200, "{}", mixed.body);
    assert_eq!(mixed.body["processed"], 1);
    assert_eq!(mixed.body["skipped"], 1);
    assert_eq!(mixed.body["skippedEvents"][0]["index"], 1);
    assert_eq!(count_row(&app, &stream).await, Some(2));

    let unknown = send(
        http.post(&url)
            .header(EVENT_TYPE_HEADER, "Surprise")
            .json(&json!([])),
    )
    .await;
    assert_eq!(unknown.status, 400);
}

/// Appends one event of `event_type` with `data` (JSON text) to a new stream `instance`.
async fn append_one(app: &App, instance: &str, event_type: &str, data: &str) -> RecordedEvent {
    let stream = StreamId::new("Bank", "Account", instance).unwrap();
    let store = app
        .store(&EntityType::from_static("Bank", "Account"))
        .unwrap();
    let event = NewEvent::from_raw(event_type, RawValue::from_string(data.into()).unwrap());
    store
        .append(&stream, ExpectedVersion::NoStream, vec![event])
        .await
        .unwrap();
    let mut events = store
        .read(&stream, crate::stream::ReadRequest::all())
        .await
        .unwrap()
        .events;
    events.pop().unwrap()
}

/// One notification as the JSON text a delivery carries.
fn text(schema: NotificationSchema, notification: &Notification) -> String {
    String::from_utf8(schema.encode(notification).unwrap()).unwrap()
}

#[tokio::test]
async fn a_delivery_applies_each_notification_on_its_own() {
    let (app, stream, recorded) = app_with_stream(2).await;
    // Data the event store accepts but a serde_json::Value does not hold.
    let nested = format!("{}{}", "[".repeat(200), "]".repeat(200));
    let deep = append_one(&app, "Deep", "Happened", &nested).await;
    let huge = append_one(&app, "Huge", "Happened", r#"{"n":1e400}"#).await;
    let poison = append_one(&app, "P", "Poison", "{}").await;
    let at = |instance: &str| StreamId::new("Bank", "Account", instance).unwrap();
    let mut forged = Notification::new_event(&stream, &recorded[0]);
    forged.id = uuid::Uuid::from_u128(7);
    let body = format!(
        "[{},{},{},{},{},{},42]",
        text(
            NotificationSchema::EventGridEvent,
            &Notification::new_event(&stream, &recorded[1])
        ),
        text(
            NotificationSchema::CloudEvent,
            &Notification::new_event(&at("Deep"), &deep)
        ),
        text(
            NotificationSchema::EventGridEvent,
            &Notification::new_entity(&at("Huge"), &huge)
        ),
        text(NotificationSchema::EventGridEvent, &forged),
        r#"{"id":"x","data":{"payload":1e400}}"#,
        text(
            NotificationSchema::EventGridEvent,
            &Notification::new_event(&at("P"), &poison)
        ),
    );
    assert!(serde_json::from_str::<Value>(&body).is_err());
    let base = serve_routes(app.clone()).await;
    let answer = send(
        reqwest::Client::new()
            .post(format!("{base}/api/eventgrid"))
            .header(EVENT_TYPE_HEADER, NOTIFICATION)
            .header("content-type", "application/json")
            .body(body),
    )
    .await;
    assert_eq!(answer.status, 200, "{}", answer.body);
    assert_eq!(answer.body["received"], 7);
    // The poisoned stream's notification is handled by the projector (its row is marked).
    assert_eq!(answer.body["processed"], 4);
    assert_eq!(answer.body["skipped"], 3);
    let indexes: Vec<u64> = answer.body["skippedEvents"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["index"].as_u64().unwrap())
        .collect();
    assert_eq!(indexes, [3, 4, 6]);
    let reason = |i: usize| answer.body["skippedEvents"][i]["reason"].as_str().unwrap();
    assert!(
        reason(0).contains("not one streamfold sent"),
        "{}",
        reason(0)
    );
    assert!(
        reason(1).contains("not a streamfold notification"),
        "{}",
        reason(1)
    );
    assert!(
        reason(2).contains("not a streamfold notification"),
        "{}",
        reason(2)
    );
    assert_eq!(count_row(&app, &stream).await, Some(2));
    assert_eq!(count_row(&app, &at("Deep")).await, Some(1));
    assert_eq!(count_row(&app, &at("Huge")).await, Some(1));

    // Through the host's invocation too: the event as an object, and as a string.
    let invoke = |event: &str| {
        reqwest::Client::new()
            .post(format!("{base}/Projector"))
            .header("content-type", "application/json")
            .body(format!(r#"{{"Data":{{"event":{event}}},"Metadata":{{}}}}"#))
    };
    let deep_event = text(
        NotificationSchema::EventGridEvent,
        &Notification::new_entity(&at("Deep"), &deep),
    );
    for event in [
        deep_event.clone(),
        serde_json::to_string(&deep_event).unwrap(),
    ] {
        let applied = send(invoke(&event)).await;
        assert_eq!(applied.status, 200, "{}", applied.body);
        let log = applied.body["Logs"][0].as_str().unwrap();
        assert!(log.contains("count already at 1"), "{log}");
    }
    for event in [
        text(NotificationSchema::CloudEvent, &forged),
        r#""not json at all""#.to_owned(),
        r#"{"id":"x","data":{"payload":1e400}}"#.to_owned(),
    ] {
        let ignored = send(invoke(&event)).await;
        assert_eq!(ignored.status, 200, "{}", ignored.body);
        let log = ignored.body["Logs"][0].as_str().unwrap();
        assert!(log.starts_with("ignored"), "{log}");
    }

    // Only a body that is not JSON, or neither an array nor an object, is refused.
    for body in ["[1,", "7", "\"x\""] {
        let refused = send(
            reqwest::Client::new()
                .post(format!("{base}/api/eventgrid"))
                .header(EVENT_TYPE_HEADER, NOTIFICATION)
                .body(body),
        )
        .await;
        assert_eq!(refused.status, 400, "{body}");
    }
}

#[tokio::test]
async fn a_storage_outage_answers_5xx_for_a_redelivery() {
    let (app, stream, recorded) = app_with_stream(1).await;
    let mut app = Arc::into_inner(app).unwrap();
    // Read-model rows in a storage account nothing answers for.
    let unreachable = crate::storage::connection::StorageAccount::from_connection_string(
        "UseDevelopmentStorage=true;DevelopmentStorageProxyUri=http://127.0.0.1:1",
    )
    .unwrap();
    app = app.with_read_model_store(Arc::new(crate::readmodel::TableReadModelStore::new(
        &unreachable,
    )));
    let base = serve_routes(Arc::new(app)).await;
    let good = text(
        NotificationSchema::EventGridEvent,
        &Notification::new_event(&stream, &recorded[0]),
    );
    let delivery = send(
        reqwest::Client::new()
            .post(format!("{base}/api/eventgrid"))
            .header(EVENT_TYPE_HEADER, NOTIFICATION)
            .body(format!(r#"[{good},{{"id":"x"}}]"#)),
    )
    .await;
    assert_eq!(delivery.status, 503, "{}", delivery.body);
    assert_eq!(delivery.body["failed"], 1);
    assert_eq!(delivery.body["skipped"], 1);
    let invocation = send(
        reqwest::Client::new()
            .post(format!("{base}/Projector"))
            .body(format!(r#"{{"Data":{{"event":{good}}}}}"#)),
    )
    .await;
    assert_eq!(invocation.status, 503, "{}", invocation.body);
}

#[tokio::test]
async fn the_notifications_of_one_stream_are_applied_once_per_delivery() {
    let (app, stream, recorded) = app_with_stream(3).await;
    let other = append_one(&app, "B", "Happened", "{}").await;
    let rows = Arc::new(crate::readmodel::MemoryReadModelStore::new());
    let app = Arc::new(
        Arc::into_inner(app)
            .unwrap()
            .with_read_model_store(rows.clone()),
    );
    let mut events: Vec<String> = (0..20)
        .map(|i| {
            text(
                NotificationSchema::EventGridEvent,
                &Notification::new_event(&stream, &recorded[i % 3]),
            )
        })
        .collect();
    events.push(text(
        NotificationSchema::CloudEvent,
        &Notification::new_entity(&StreamId::new("Bank", "Account", "B").unwrap(), &other),
    ));
    let base = serve_routes(app.clone()).await;
    let answer = send(
        reqwest::Client::new()
            .post(format!("{base}/api/eventgrid"))
            .header(EVENT_TYPE_HEADER, NOTIFICATION)
            .body(format!("[{}]", events.join(","))),
    )
    .await;
    assert_eq!(answer.status, 200, "{}", answer.body);
    assert_eq!(answer.body["processed"], 21);
    // One projector run per stream: one load of each stream's row.
    assert_eq!(rows.loads(), 2);
    assert_eq!(count_row(&app, &stream).await, Some(3));
}
