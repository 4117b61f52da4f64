//! Event Grid into the read-model projector, by either door:
//!
//! - **`Projector`** (function folder with an `eventGridTrigger`): the Functions host receives
//!   Event Grid's deliveries on its own webhook, answers the handshakes itself, and invokes
//!   `POST /Projector` once per event with the JSON invocation payload; the event is
//!   `Data.event`, as an object or as a string holding JSON, in either schema.
//! - **`EventGridWebhook`** (`POST` and `OPTIONS /api/eventgrid`): a plain Event Grid webhook
//!   for subscriptions that do not go through the host's extension (another system's topic,
//!   a subscription created without the `eventgrid_extension` key). It answers the Event Grid
//!   subscription validation handshake, the CloudEvents abuse-protection handshake, and
//!   `aeg-event-type: Notification` deliveries (a JSON array or one event, either schema).
//!
//! Each notification runs [`crate::readmodel::ReadModelProjector::project`] for the stream and
//! sequence it names. Success is only answered once every read model's row is at that
//! sequence or later; any failure answers 5xx, so Event Grid delivers again (the projector is
//! idempotent, so redelivery is always safe). A delivery that is not a streamfold
//! notification cannot succeed by being retried: the plain webhook refuses it with 400 (Event
//! Grid drops or dead-letters it), the `Projector` logs it and succeeds. Every log line
//! carries the host's invocation id (from the request span and as a field).

use std::sync::Arc;

use bytes::Bytes;
use futures::future::join_all;
use serde_json::{json, Value};
use warp::filters::BoxedFilter;
use warp::http::{HeaderValue, StatusCode};
use warp::reply::Response;
use warp::{Filter, Rejection, Reply};

use super::filters::{self, INVOCATION_ID_HEADER};
use super::invocation::{InvocationRequest, InvocationResponse};
use super::problem::{json_response, parse_json, reject, Problem};
use crate::app::App;
use crate::notify::Notification;
use crate::readmodel::{projector_for, ProjectOutcome, ReadModelError};
use crate::stream::StreamId;

/// The Event Grid-triggered function (its folder name, and the path the host posts to).
pub const PROJECTOR_FUNCTION: &str = "Projector";
/// The name of its trigger binding in `functions/Projector/function.json`.
pub const PROJECTOR_BINDING: &str = "event";
/// The plain webhook's route (under `/api`).
pub const WEBHOOK_ROUTE: &str = "eventgrid";
/// Header saying what an Event Grid delivery is.
pub const EVENT_TYPE_HEADER: &str = "aeg-event-type";
/// `aeg-event-type` of a delivery of events.
pub const NOTIFICATION: &str = "Notification";
/// `aeg-event-type` of the Event Grid schema's subscription handshake.
pub const SUBSCRIPTION_VALIDATION: &str = "SubscriptionValidation";
/// `aeg-event-type` sent when a subscription is deleted.
pub const UNSUBSCRIBE: &str = "Unsubscribe";
/// `eventType` of the subscription validation event.
pub const VALIDATION_EVENT_TYPE: &str = "Microsoft.EventGrid.SubscriptionValidationEvent";
/// CloudEvents abuse protection: the request header naming the sender.
pub const REQUEST_ORIGIN_HEADER: &str = "webhook-request-origin";
/// CloudEvents abuse protection: the response header granting it.
pub const ALLOWED_ORIGIN_HEADER: &str = "webhook-allowed-origin";
/// CloudEvents abuse protection: the response header with the granted rate.
pub const ALLOWED_RATE_HEADER: &str = "webhook-allowed-rate";
/// The rate granted: no limit (deliveries are idempotent and Event Grid paces itself).
pub const ALLOWED_RATE: &str = "*";
/// Content types that mark a CloudEvents delivery (accepted without `aeg-event-type`).
const CLOUDEVENTS_CONTENT_TYPES: [&str; 2] = [
    "application/cloudevents+json",
    "application/cloudevents-batch+json",
];

/// `POST /Projector` and `POST|OPTIONS /api/eventgrid`.
pub fn routes(app: Arc<App>) -> BoxedFilter<(Response,)> {
    let with_app = warp::any().map(move || app.clone());
    let invocation_id = warp::header::optional::<String>(INVOCATION_ID_HEADER)
        .map(|id: Option<String>| id.unwrap_or_default());
    let projector = warp::post()
        .and(warp::path(PROJECTOR_FUNCTION))
        .and(warp::path::end())
        .and(invocation_id)
        .and(filters::body())
        .and(with_app.clone())
        .then(projector_handler);
    let handshake = warp::options()
        .and(warp::path("api"))
        .and(warp::path(WEBHOOK_ROUTE))
        .and(warp::path::end())
        .and(warp::header::optional::<String>(REQUEST_ORIGIN_HEADER))
        .and_then(abuse_protection);
    let deliveries = warp::post()
        .and(warp::path("api"))
        .and(warp::path(WEBHOOK_ROUTE))
        .and(warp::path::end())
        .and(warp::header::optional::<String>(EVENT_TYPE_HEADER))
        .and(warp::header::optional::<String>("content-type"))
        .and(invocation_id)
        .and(filters::body())
        .and(with_app)
        .and_then(webhook_handler);
    projector
        .or(handshake)
        .unify()
        .or(deliveries)
        .unify()
        .boxed()
}

impl From<ReadModelError> for Problem {
    fn from(error: ReadModelError) -> Self {
        let detail = error.to_string();
        match error {
            ReadModelError::Store(e) => e.into(),
            ReadModelError::Projection(e) => e.into(),
            ReadModelError::InvalidKey(e) => crate::stream::StoreError::from(e).into(),
            ReadModelError::Contention {
                model, attempts, ..
            } => Problem::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "read-model-contention",
                detail,
            )
            .with("model", model)
            .with("attempts", attempts),
            ReadModelError::AheadOfStream {
                sequence, version, ..
            } => Problem::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "notification-ahead-of-stream",
                detail,
            )
            .with("sequence", sequence)
            .with("version", version),
            ReadModelError::StateTooLarge {
                model,
                bytes,
                limit,
                ..
            } => {
                tracing::error!(error = %detail, "read model state too large");
                Problem::new(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "read-model-state-too-large",
                    detail,
                )
                .with("model", model)
                .with("bytes", bytes)
                .with("limit", limit)
            }
        }
    }
}

/// Why a delivered event is not something the projector can act on.
fn not_a_notification(reason: impl std::fmt::Display) -> Problem {
    Problem::bad_request(
        "not-a-notification",
        format!("the event is not a streamfold notification: {reason}"),
    )
}

/// Runs the projector for one notification.
async fn project(
    app: &App,
    notification: &Notification,
) -> Result<Vec<ProjectOutcome>, ReadModelError> {
    let data = &notification.data;
    let stream = StreamId::new(&data.domain, &data.entity, &data.instance)?;
    if app
        .read_models()
        .names(stream.domain(), stream.entity())
        .is_empty()
    {
        // Nothing to keep for this entity type: no storage needs to be reachable.
        return Ok(Vec::new());
    }
    projector_for(app, stream.domain(), stream.entity())?
        .project(&stream, data.sequence_number)
        .await
}

/// One line about what the projector did, for the host's logs.
fn describe(notification: &Notification, outcomes: &[ProjectOutcome]) -> String {
    let data = &notification.data;
    let models: Vec<String> = outcomes
        .iter()
        .map(|o| {
            if o.duplicate {
                format!("{} already at {}", o.model, o.after)
            } else {
                format!(
                    "{} {}→{} ({} applied, attempt {})",
                    o.model, o.before, o.after, o.applied, o.attempts
                )
            }
        })
        .collect();
    let models = if models.is_empty() {
        "no read models registered".to_owned()
    } else {
        models.join("; ")
    };
    format!(
        "notification {} for {}/{}/{} event {}: {models}",
        notification.id, data.domain, data.entity, data.instance, data.sequence_number
    )
}

async fn projector_handler(invocation_id: String, body: Bytes, app: Arc<App>) -> Response {
    let request: InvocationRequest = match parse_json(&body) {
        Ok(request) => request,
        Err(problem) => return problem.into_response(),
    };
    let mut response = InvocationResponse::default();
    let Some(event) = request.binding(PROJECTOR_BINDING) else {
        tracing::error!(%invocation_id, "the invocation has no Data.{PROJECTOR_BINDING}");
        return Problem::bad_request(
            "missing-binding",
            format!("the invocation has no Data.{PROJECTOR_BINDING}"),
        )
        .into_response();
    };
    let notification = match Notification::from_event_json(&event) {
        Ok(notification) => notification,
        Err(e) => {
            // Retrying cannot make it one: succeed, so Event Grid does not deliver it again.
            tracing::warn!(%invocation_id, error = %e, "ignoring an event that is not a streamfold notification");
            response.log(format!("ignored: {}", not_a_notification(e).detail()));
            return json_response(StatusCode::OK, &response);
        }
    };
    match project(&app, &notification).await {
        Ok(outcomes) => {
            response.log(describe(&notification, &outcomes));
            json_response(StatusCode::OK, &response)
        }
        Err(error) => {
            tracing::error!(
                %invocation_id,
                notification = %notification.id,
                error = %error,
                transient = error.is_transient(),
                "projector failed; Event Grid will deliver the notification again"
            );
            let mut problem = Problem::from(error);
            if problem.status().is_client_error() {
                // The host turns any failure into a redelivery; say so with a server error.
                problem = Problem::new(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "projector-failed",
                    problem.detail().to_owned(),
                );
            }
            problem.into_response()
        }
    }
}

async fn abuse_protection(origin: Option<String>) -> Result<Response, Rejection> {
    let origin = origin
        .map(|o| o.trim().to_owned())
        .filter(|o| !o.is_empty())
        .ok_or_else(|| {
            reject(Problem::bad_request(
                "missing-header",
                format!("an OPTIONS request must carry {REQUEST_ORIGIN_HEADER}"),
            ))
        })?;
    let allowed = HeaderValue::from_str(&origin).map_err(|_| {
        reject(Problem::bad_request(
            "invalid-header",
            format!("{REQUEST_ORIGIN_HEADER} is not a valid header value"),
        ))
    })?;
    let mut response = Response::new(Default::default());
    response
        .headers_mut()
        .insert(ALLOWED_ORIGIN_HEADER, allowed);
    response
        .headers_mut()
        .insert(ALLOWED_RATE_HEADER, HeaderValue::from_static(ALLOWED_RATE));
    Ok(response)
}

/// The events of a delivery body: a JSON array, or one event.
fn delivered_events(body: &[u8]) -> Result<Vec<Value>, Problem> {
    match parse_json::<Value>(body)? {
        Value::Array(events) => Ok(events),
        event @ Value::Object(_) => Ok(vec![event]),
        _ => Err(Problem::bad_request(
            "invalid-body",
            "a delivery is a JSON array of events or one event",
        )),
    }
}

/// `data.validationCode` of the first event of a validation handshake.
fn validation_code(events: &[Value]) -> Result<String, Problem> {
    let invalid = |detail: &str| Problem::bad_request("invalid-validation-event", detail);
    let event = events
        .first()
        .ok_or_else(|| invalid("the subscription validation delivery has no event"))?;
    let event_type = event
        .get("eventType")
        .or_else(|| event.get("type"))
        .and_then(Value::as_str);
    if event_type != Some(VALIDATION_EVENT_TYPE) {
        return Err(invalid(&format!(
            "the subscription validation event's eventType must be {VALIDATION_EVENT_TYPE}"
        )));
    }
    let data = match event.get("data") {
        Some(Value::String(text)) => serde_json::from_str(text).unwrap_or(Value::Null),
        Some(other) => other.clone(),
        None => Value::Null,
    };
    match data.get("validationCode") {
        Some(Value::String(code)) if !code.is_empty() => Ok(code.clone()),
        _ => Err(invalid(
            "the subscription validation event has no data.validationCode",
        )),
    }
}

async fn webhook_handler(
    event_type: Option<String>,
    content_type: Option<String>,
    invocation_id: String,
    body: Bytes,
    app: Arc<App>,
) -> Result<Response, Rejection> {
    let is_cloud_events = content_type.as_deref().is_some_and(|ct| {
        let ct = ct.to_ascii_lowercase();
        CLOUDEVENTS_CONTENT_TYPES.iter().any(|t| ct.starts_with(t))
    });
    let kind = match event_type.as_deref().map(str::trim) {
        Some(kind) => kind.to_owned(),
        None if is_cloud_events => NOTIFICATION.to_owned(),
        None => {
            return Err(reject(Problem::bad_request(
                "missing-header",
                format!("an Event Grid delivery carries {EVENT_TYPE_HEADER}"),
            )))
        }
    };
    if kind.eq_ignore_ascii_case(SUBSCRIPTION_VALIDATION) {
        let code = validation_code(&delivered_events(&body).map_err(reject)?).map_err(reject)?;
        tracing::info!(%invocation_id, "Event Grid subscription validated");
        return Ok(json_response(
            StatusCode::OK,
            &json!({ "validationResponse": code }),
        ));
    }
    if kind.eq_ignore_ascii_case(UNSUBSCRIBE) {
        return Ok(json_response(StatusCode::OK, &json!({})));
    }
    if !kind.eq_ignore_ascii_case(NOTIFICATION) {
        return Err(reject(Problem::bad_request(
            "unknown-event-type",
            format!(
                "{EVENT_TYPE_HEADER} must be {NOTIFICATION}, {SUBSCRIPTION_VALIDATION} or {UNSUBSCRIBE}, not {kind:?}"
            ),
        )));
    }

    let events = delivered_events(&body).map_err(reject)?;
    let mut notifications = Vec::with_capacity(events.len());
    let mut undecodable = Vec::new();
    for (index, event) in events.iter().enumerate() {
        match Notification::from_event_json(event) {
            Ok(n) => notifications.push(n),
            Err(e) => undecodable.push((index, e.to_string())),
        }
    }
    let results = join_all(notifications.iter().map(|n| project(&app, n))).await;
    let mut failure = None;
    for (notification, result) in notifications.iter().zip(results) {
        match result {
            Ok(outcomes) => tracing::info!(%invocation_id, "{}", describe(notification, &outcomes)),
            Err(error) => {
                tracing::error!(
                    %invocation_id,
                    notification = %notification.id,
                    error = %error,
                    "projector failed; Event Grid will deliver the notification again"
                );
                failure.get_or_insert(error);
            }
        }
    }
    if let Some(error) = failure {
        let problem = Problem::from(error);
        // Only a server error makes Event Grid deliver again (400 and 413 are dropped).
        return Err(reject(if problem.status().is_server_error() {
            problem
        } else {
            Problem::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "projector-failed",
                problem.detail().to_owned(),
            )
        }));
    }
    if let Some((index, reason)) = undecodable.first() {
        tracing::warn!(%invocation_id, index, reason, "refusing an event that is not a streamfold notification");
        return Err(reject(
            not_a_notification(reason)
                .with("index", *index)
                .with("refused", undecodable.len()),
        ));
    }
    Ok(json_response(
        StatusCode::OK,
        &json!({ "processed": notifications.len() }),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Settings;
    use crate::notify::NotificationSchema;
    use crate::projection::{ApplyError, Projection};
    use crate::stream::{ExpectedVersion, NewEvent, RecordedEvent};
    use serde_json::value::RawValue;

    struct Count;

    impl Projection for Count {
        type State = u64;
        fn name(&self) -> &str {
            "count"
        }
        fn version(&self) -> u32 {
            1
        }
        fn initial(&self) -> u64 {
            0
        }
        fn apply(&self, n: &mut u64, _: &RecordedEvent) -> Result<(), ApplyError> {
            *n += 1;
            Ok(())
        }
    }

    async fn app_with_stream(events: usize) -> (Arc<App>, StreamId, Vec<RecordedEvent>) {
        let mut app = App::in_memory(Settings::from_pairs(Vec::new()).unwrap());
        app.read_models_mut()
            .register("Bank", "Account", Count)
            .unwrap();
        let stream = StreamId::new("Bank", "Account", "A 1").unwrap();
        let store = app.store("Bank", "Account").unwrap();
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
        let mut ahead = event(NotificationSchema::EventGridEvent, &stream, &recorded[2]);
        ahead["data"]["sequenceNumber"] = json!(9);
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

        // An array with a foreign event: the notification is handled, the delivery refused.
        let mixed = send(
            http.post(&url)
                .header(EVENT_TYPE_HEADER, NOTIFICATION)
                .json(&json!([
                    event(NotificationSchema::EventGridEvent, &stream, &recorded[1]),
                    {"id": "x"}
                ])),
        )
        .await;
        assert_eq!(mixed.status, 400);
        assert_eq!(mixed.body["index"], 1);
        assert_eq!(count_row(&app, &stream).await, Some(2));

        let unknown = send(
            http.post(&url)
                .header(EVENT_TYPE_HEADER, "Surprise")
                .json(&json!([])),
        )
        .await;
        assert_eq!(unknown.status, 400);
    }
}
