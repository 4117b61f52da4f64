//! One notification never costs the others: Event Grid deliveries that mix a good notification
//! with ones whose payload a `serde_json::Value` cannot hold (nested 200 deep, `1e400`) and a
//! forged one, through the plain webhook, and good, forged and foreign events through the
//! host's Event Grid extension (the `Projector`), on real Azurite. The good ones are applied, the forged one is skipped and
//! counted, and the delivery is acknowledged; a storage outage still fails it, so Event Grid
//! delivers it again.

use crate::support;

use serde_json::value::RawValue;
use serde_json::{json, Value};
use streamfold::notify::{Notification, NotificationSchema};
use streamfold::stream::{RecordedEvent, StreamId};
use support::{recorded_events, Client, TestApp};

/// The app does not publish by itself: each test delivers exactly what it means to.
const NO_SELF_PUBLISHING: &[(&str, &str)] = &[
    ("RaiseEntityCreationNotification", "false"),
    ("RaiseEventNotification", "false"),
];

fn stream(account: &str) -> StreamId {
    StreamId::new("Bank", "Account", account).unwrap()
}

/// The notification of `event` of `account` with its payload replaced by `payload` (JSON
/// text), as the text Event Grid would deliver.
fn with_payload(
    account: &str,
    event: &RecordedEvent,
    payload: &str,
    schema: NotificationSchema,
) -> String {
    let mut n = Notification::new_event(&stream(account), event);
    n.data.payload = Some(RawValue::from_string(payload.to_owned()).unwrap());
    String::from_utf8(schema.encode(&n).unwrap()).unwrap()
}

fn plain(account: &str, event: &RecordedEvent) -> String {
    let n = Notification::new_event(&stream(account), event);
    String::from_utf8(NotificationSchema::EventGridEvent.encode(&n).unwrap()).unwrap()
}

fn forged(account: &str, event: &RecordedEvent) -> String {
    let mut n = Notification::new_event(&stream(account), event);
    n.id = uuid::Uuid::new_v4();
    String::from_utf8(NotificationSchema::EventGridEvent.encode(&n).unwrap()).unwrap()
}

async fn open_and_deposit(c: &Client, account: &str) -> Vec<RecordedEvent> {
    c.open_account(account, &json!({})).await;
    c.deposit(account, "5").await;
    recorded_events(c, "Bank", "Account", account, 1).await
}

async fn row_sequence(c: &Client, account: &str) -> Option<u64> {
    let rows = c.get("/api/Accounts?pageSize=1000").await;
    rows.ok(200)["accounts"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["accountNumber"] == account)
        .and_then(|r| r["sequence"].as_u64())
}

async fn webhook(c: &Client, body: String) -> support::Reply {
    c.send(
        c.http()
            .post(c.url("/api/eventgrid"))
            .header("aeg-event-type", "Notification")
            .header("content-type", "application/json")
            .body(body),
    )
    .await
}

/// Delivers `events` (JSON texts) through the host's Event Grid webhook; the host's status.
async fn through_host(c: &Client, events: &[String]) -> u16 {
    c.deliver_to_projector(format!("[{}]", events.join(",")))
        .await
}

#[tokio::test]
async fn a_delivery_is_applied_notification_by_notification() {
    let mut app = TestApp::start_with(NO_SELF_PUBLISHING).await;
    let c = &app.client.clone();
    let e = open_and_deposit(c, "ISO-1").await;
    assert_eq!(e.len(), 2);
    let nested = format!("{}1{}", "[".repeat(200), "]".repeat(200));
    let body = format!(
        "[{},{},{},{}]",
        plain("ISO-1", &e[0]),
        with_payload("ISO-1", &e[1], &nested, NotificationSchema::EventGridEvent),
        with_payload(
            "ISO-1",
            &e[1],
            r#"{"amount":1e400}"#,
            NotificationSchema::CloudEvent
        ),
        forged("ISO-1", &e[0]),
    );
    assert!(serde_json::from_str::<Value>(&body).is_err());
    let reply = webhook(c, body).await;
    let answer = reply.ok(200);
    assert_eq!(answer["received"], 4, "{answer}");
    assert_eq!(answer["processed"], 3, "{answer}");
    assert_eq!(answer["skipped"], 1, "{answer}");
    assert_eq!(answer["skippedEvents"][0]["index"], 3, "{answer}");
    assert_eq!(row_sequence(c, "ISO-1").await, Some(2));

    // Through the host's extension: one invocation per event, every one acknowledged. (The
    // host parses a delivery itself before invoking, so what it cannot parse never reaches
    // the handler; the handler's unit tests send such payloads to `/Projector` directly.)
    let e = open_and_deposit(c, "ISO-2").await;
    let foreign = json!({
        "id": "1", "eventType": "Microsoft.Storage.BlobCreated", "subject": "/x",
        "eventTime": "2024-05-01T10:00:00Z", "data": {"url": "https://x"}, "dataVersion": "1"
    });
    let status = through_host(
        c,
        &[
            plain("ISO-2", &e[1]),
            forged("ISO-2", &e[0]),
            foreign.to_string(),
        ],
    )
    .await;
    assert_eq!(status, 202);
    assert_eq!(row_sequence(c, "ISO-2").await, Some(2));

    // Storage down: nothing can be applied, and Event Grid must deliver again.
    let e = open_and_deposit(c, "ISO-3").await;
    app.azurite.stop().await;
    let reply = webhook(
        c,
        format!("[{},{}]", plain("ISO-3", &e[0]), forged("ISO-3", &e[0])),
    )
    .await;
    let problem = reply.problem(503);
    assert_eq!(problem["failed"], 1, "{problem}");
    assert_eq!(problem["skipped"], 1, "{problem}");
    assert_ne!(through_host(c, &[plain("ISO-3", &e[1])]).await, 202);
}
