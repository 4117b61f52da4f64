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
//! sequence it names. What this module guarantees, per event of a delivery:
//! - **isolation**: a delivery is split into its events as JSON text, without building a
//!   `serde_json::Value` of any event (whose data may be nested deeper than a `Value` parses
//!   or hold numbers like `1e400`, both of which the event store accepts), and each event is
//!   decoded on its own; the projector then runs once per stream of the delivery (for the
//!   highest sequence any of its notifications names, which satisfies them all, so they do not
//!   race for the same rows), for at most [`MAX_CONCURRENT_NOTIFICATIONS`] streams at a time;
//! - **a notification that can never be applied is skipped, never the reason others are
//!   lost**: an event that is not a streamfold notification, a notification whose id is not
//!   the one streamfold derives from what it names (forged or damaged), and one the projector
//!   refuses for good (an event its projection refuses, corrupt data, a state too large) is
//!   logged with its index and reason, counted, and acknowledged, since Event Grid delivering
//!   it again could not change the outcome;
//! - **a transient failure is redelivered**: storage unavailable, contention, a notification
//!   ahead of the stream or a misconfiguration fail the delivery (the plain webhook) or the
//!   invocation (the `Projector`) with a 5xx, so Event Grid delivers it again; the projector is
//!   idempotent, so redelivering the whole batch is always safe.
//!
//! Only a plain-webhook body that is not JSON at all, or neither an array nor an object, is a
//! 400. Every log line carries the host's invocation id (from the request span and as a field).

use std::collections::BTreeMap;
use std::sync::Arc;

use bytes::Bytes;
use futures::StreamExt;
use serde::Deserialize;
use serde_json::json;
use serde_json::value::RawValue;
use warp::filters::BoxedFilter;
use warp::http::{HeaderValue, StatusCode};
use warp::reply::Response;
use warp::{Filter, Rejection, Reply};

use super::filters;
use super::invocation::{InvocationRequest, InvocationResponse};
use super::problem::{json_response, parse_json, reject, Problem};
use crate::app::App;
use crate::notify::{notification_id, Notification};
use crate::projection::ProjectionError;
use crate::readmodel::{ProjectOutcome, ReadModelError};
use crate::stream::{NotificationKind, StoreError, StreamId};

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
/// Notifications of one plain-webhook delivery applied at the same time (Event Grid sends up
/// to 5,000 events per delivery; each application holds a stream read and a row save).
pub const MAX_CONCURRENT_NOTIFICATIONS: usize = 8;
/// Skipped events a delivery's answer describes one by one (all of them are counted).
pub const MAX_REPORTED_SKIPS: usize = 20;
/// Content types that mark a CloudEvents delivery (accepted without `aeg-event-type`).
const CLOUDEVENTS_CONTENT_TYPES: [&str; 2] = [
    "application/cloudevents+json",
    "application/cloudevents-batch+json",
];

/// `POST /Projector` and `POST|OPTIONS /api/eventgrid`.
pub fn routes(app: Arc<App>) -> BoxedFilter<(Response,)> {
    let with_app = warp::any().map(move || app.clone());
    let invocation_id = filters::invocation_id();
    let projector = warp::post()
        .and(warp::path(PROJECTOR_FUNCTION))
        .and(warp::path::end())
        .and(invocation_id.clone())
        .and(filters::body())
        .and(with_app.clone())
        .then(projector_handler);
    let handshake = warp::options()
        .and(warp::path("api"))
        .and(warp::path(WEBHOOK_ROUTE))
        .and(warp::path::end())
        .and(filters::optional_text_header(REQUEST_ORIGIN_HEADER))
        .and_then(abuse_protection);
    let deliveries = warp::post()
        .and(warp::path("api"))
        .and(warp::path(WEBHOOK_ROUTE))
        .and(warp::path::end())
        .and(filters::optional_text_header(EVENT_TYPE_HEADER))
        .and(filters::optional_text_header("content-type"))
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

/// What became of one delivered event.
enum Handled {
    /// Applied (or already applied, or nothing to keep): what the projector did, in words.
    Applied(String),
    /// It can never be applied: why, in words. Logged and acknowledged.
    Skipped(String),
    /// It may apply later: Event Grid must deliver it again.
    Failed {
        notification: uuid::Uuid,
        error: ReadModelError,
    },
}

/// The stream a notification names, if the notification is what streamfold would have sent
/// about it: valid keys, `instanceKey` equal to `instance`, a sequence number, and the id
/// streamfold derives from the stream, sequence and kind (a forged or damaged notification
/// has another).
fn authentic_stream(notification: &Notification) -> Result<StreamId, String> {
    let data = &notification.data;
    let stream = StreamId::new(&data.domain, &data.entity, &data.instance)
        .map_err(|e| format!("it names no valid stream: {e}"))?;
    if data.instance_key != data.instance {
        return Err("its instanceKey is not its instance".to_owned());
    }
    if data.sequence_number == 0 {
        return Err("its sequenceNumber is 0 (events are numbered from 1)".to_owned());
    }
    let expected = notification_id(&stream, data.sequence_number, notification.kind());
    if notification.id != expected {
        return Err(format!(
            "its id {} is not the id of notification {} of {stream} event {} ({expected})",
            notification.id,
            notification.kind().as_str(),
            data.sequence_number
        ));
    }
    Ok(stream)
}

/// Whether delivering a notification again can never change how `error` ends: the projector
/// refuses one of the stream's events or its state, or the stored data is corrupt. Everything
/// else (storage unavailable, contention, ahead of the stream, a misconfiguration an operator
/// can fix) is worth a redelivery.
fn is_permanent(error: &ReadModelError) -> bool {
    match error {
        ReadModelError::Projection(ProjectionError::Store(e)) | ReadModelError::Store(e) => {
            matches!(e, StoreError::Corrupt { .. } | StoreError::InvalidKey(_))
        }
        ReadModelError::Projection(_)
        | ReadModelError::InvalidKey(_)
        | ReadModelError::StateTooLarge { .. } => true,
        ReadModelError::Contention { .. } | ReadModelError::AheadOfStream { .. } => false,
    }
}

/// Decodes one delivered event (JSON text, either schema) into a notification streamfold sent
/// and the stream it names; otherwise why it is skipped.
fn decode(event: &str) -> Result<(Notification, StreamId), String> {
    let notification = Notification::from_event_slice(event.as_bytes())
        .map_err(|e| format!("the event is not a streamfold notification: {e}"))?;
    let stream = authentic_stream(&notification).map_err(|reason| {
        format!(
            "notification {} is not one streamfold sent: {reason}",
            notification.id
        )
    })?;
    Ok((notification, stream))
}

/// Decodes one delivered event and runs the projector for it.
async fn handle(app: &App, event: &str) -> Handled {
    let (notification, stream) = match decode(event) {
        Ok(decoded) => decoded,
        Err(reason) => return Handled::Skipped(reason),
    };
    app.recent_notifications().record(&notification);
    if notification.kind() == NotificationKind::DeletedEntity {
        // The eraser removed the stream's read-model rows before raising this.
        return Handled::Applied(format!(
            "notification {}: {stream} was erased; nothing to keep",
            notification.id
        ));
    }
    match project(app, &stream, notification.data.sequence_number).await {
        Ok(outcomes) => Handled::Applied(describe(&notification, &outcomes)),
        // An event of an erased stream is gone for good: redelivering it cannot help.
        Err(ReadModelError::AheadOfStream { .. }) if is_erased(app, &stream).await => {
            Handled::Applied(format!(
                "notification {}: {stream} was erased; nothing to keep",
                notification.id
            ))
        }
        Err(error) if is_permanent(&error) => Handled::Skipped(format!(
            "notification {} can never be applied: {error}",
            notification.id
        )),
        Err(error) => Handled::Failed {
            notification: notification.id,
            error,
        },
    }
}

/// Whether `stream` was erased (an unreachable store answers "no": the notification is then
/// delivered again, as for any other transient failure).
async fn is_erased(app: &App, stream: &StreamId) -> bool {
    match app.store(stream.entity_type()) {
        Ok(store) => store.is_erased(stream).await.unwrap_or(false),
        Err(_) => false,
    }
}

/// Runs the projector for event `sequence` of `stream`.
async fn project(
    app: &App,
    stream: &StreamId,
    sequence: u64,
) -> Result<Vec<ProjectOutcome>, ReadModelError> {
    if app.read_models().names(stream.entity_type()).is_empty() {
        // Nothing to keep for this entity type: no storage needs to be reachable.
        return Ok(Vec::new());
    }
    app.read_model_projector(stream.entity_type())?
        .project(stream, sequence)
        .await
}

/// The answer that makes Event Grid deliver again: `error`'s problem when it is a server
/// error, else a 500 (the host and Event Grid drop a delivery answered with 400 or 413).
fn redelivery(error: ReadModelError) -> Problem {
    let problem = Problem::from(error);
    if problem.status().is_server_error() {
        problem
    } else {
        Problem::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "projector-failed",
            problem.detail().to_owned(),
        )
    }
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
    match handle(&app, event.get()).await {
        Handled::Applied(line) => {
            response.log(line);
            json_response(StatusCode::OK, &response)
        }
        Handled::Skipped(reason) => {
            // Retrying cannot change it: succeed, so Event Grid does not deliver it again.
            tracing::warn!(%invocation_id, %reason, "skipping an event that can never be applied");
            response.log(format!("ignored: {reason}"));
            json_response(StatusCode::OK, &response)
        }
        Handled::Failed {
            notification,
            error,
        } => {
            tracing::error!(
                %invocation_id,
                %notification,
                error = %error,
                transient = error.is_transient(),
                "projector failed; Event Grid will deliver the notification again"
            );
            // The host turns any failure into a redelivery; say so with a server error.
            redelivery(error).into_response()
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

/// The events of a delivery body, each as its JSON text: the elements of a JSON array, or
/// the body itself when it is one object. Nothing inside an event is parsed here (an element
/// may be nested to any depth); a body that is not JSON, or neither an array nor an object,
/// is a 400.
fn delivered_events(body: &[u8]) -> Result<Vec<&RawValue>, Problem> {
    let text = std::str::from_utf8(body).map_err(|e| {
        Problem::bad_request("malformed-json", format!("request body: not UTF-8: {e}"))
    })?;
    let trimmed = text.trim_start_matches(|c: char| c.is_ascii_whitespace() || c == '\u{feff}');
    let parsed = if trimmed.starts_with('[') {
        serde_json::from_str::<Vec<&RawValue>>(trimmed)
    } else if trimmed.starts_with('{') {
        serde_json::from_str::<&RawValue>(trimmed).map(|event| vec![event])
    } else {
        return Err(Problem::bad_request(
            "invalid-body",
            "a delivery is a JSON array of events or one event",
        ));
    };
    parsed.map_err(|e| {
        Problem::bad_request("malformed-json", format!("request body: {e}"))
            .with("line", e.line())
            .with("column", e.column())
    })
}

/// What the subscription validation event is read for (either schema).
#[derive(Deserialize)]
struct ValidationEvent<'a> {
    #[serde(default, rename = "eventType")]
    event_type: Option<String>,
    #[serde(default, rename = "type")]
    kind: Option<String>,
    #[serde(default, borrow)]
    data: Option<&'a RawValue>,
}

#[derive(Deserialize)]
struct ValidationData {
    #[serde(default, rename = "validationCode")]
    validation_code: Option<String>,
}

/// `data.validationCode` of the first event of a validation handshake.
fn validation_code(events: &[&RawValue]) -> Result<String, Problem> {
    let invalid = |detail: &str| Problem::bad_request("invalid-validation-event", detail);
    let event = events
        .first()
        .ok_or_else(|| invalid("the subscription validation delivery has no event"))?;
    let event: ValidationEvent<'_> = serde_json::from_str(event.get())
        .map_err(|_| invalid("the subscription validation event is not an event object"))?;
    if event.event_type.or(event.kind).as_deref() != Some(VALIDATION_EVENT_TYPE) {
        return Err(invalid(&format!(
            "the subscription validation event's eventType must be {VALIDATION_EVENT_TYPE}"
        )));
    }
    // `data` is an object, or a string holding one.
    let data = event.data.map(RawValue::get).unwrap_or("null");
    let unwrapped = if data.starts_with('"') {
        serde_json::from_str::<String>(data).ok()
    } else {
        None
    };
    let code = serde_json::from_str::<ValidationData>(unwrapped.as_deref().unwrap_or(data))
        .ok()
        .and_then(|d| d.validation_code)
        .filter(|code| !code.is_empty());
    code.ok_or_else(|| invalid("the subscription validation event has no data.validationCode"))
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

    // Each event decoded on its own; the notifications of one stream are applied together,
    // once, for the highest sequence among them (the projector brings every row to that event
    // or later, which is what each of them asks for), so they do not race for the same rows.
    let mut skipped = Vec::new();
    let mut streams: BTreeMap<StreamId, (u64, Vec<(usize, Notification)>)> = BTreeMap::new();
    let events = delivered_events(&body).map_err(reject)?;
    let received = events.len();
    for (index, event) in events.into_iter().enumerate() {
        match decode(event.get()) {
            Ok((notification, stream)) => {
                let group = streams.entry(stream).or_default();
                group.0 = group.0.max(notification.data.sequence_number);
                group.1.push((index, notification));
            }
            Err(reason) => {
                tracing::warn!(%invocation_id, index, %reason, "skipping an event that can never be applied");
                skipped.push((index, reason));
            }
        }
    }
    drop(body);
    let mut results = futures::stream::iter(streams)
        .map(|(stream, (sequence, members))| {
            let app = app.clone();
            async move {
                let result = project(&app, &stream, sequence).await;
                (members, result)
            }
        })
        .buffer_unordered(MAX_CONCURRENT_NOTIFICATIONS);
    let mut processed = 0usize;
    let mut failure = None;
    let mut failed = 0usize;
    while let Some((members, result)) = results.next().await {
        match result {
            Ok(outcomes) => {
                for (index, notification) in &members {
                    processed += 1;
                    tracing::info!(%invocation_id, index, "{}", describe(notification, &outcomes));
                }
            }
            Err(error) if is_permanent(&error) => {
                for (index, notification) in members {
                    let reason = format!(
                        "notification {} can never be applied: {error}",
                        notification.id
                    );
                    tracing::warn!(%invocation_id, index, %reason, "skipping an event that can never be applied");
                    skipped.push((index, reason));
                }
            }
            Err(error) => {
                for (index, notification) in &members {
                    tracing::error!(
                        %invocation_id,
                        index,
                        notification = %notification.id,
                        error = %error,
                        "projector failed; Event Grid will deliver the notification again"
                    );
                    failed += 1;
                }
                failure.get_or_insert(error);
            }
        }
    }
    skipped.sort_by_key(|(index, _)| *index);
    let skipped_count = skipped.len();
    let described: Vec<_> = skipped
        .into_iter()
        .take(MAX_REPORTED_SKIPS)
        .map(|(index, reason)| json!({ "index": index, "reason": reason }))
        .collect();
    if let Some(error) = failure {
        return Err(reject(
            redelivery(error)
                .with("received", received)
                .with("processed", processed)
                .with("skipped", skipped_count)
                .with("failed", failed),
        ));
    }
    Ok(json_response(
        StatusCode::OK,
        &json!({
            "received": received,
            "processed": processed,
            "skipped": skipped_count,
            "skippedEvents": described,
        }),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Settings;
    use crate::notify::NotificationSchema;
    use crate::projection::{ApplyError, Projection};
    use crate::stream::{EntityType, ExpectedVersion, NewEvent, RecordedEvent};
    use serde_json::Value;

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
        fn apply(&self, n: &mut u64, event: &RecordedEvent) -> Result<(), ApplyError> {
            if event.event_type == "Poison" {
                return Err(ApplyError::new(event, "this projection refuses it"));
            }
            *n += 1;
            Ok(())
        }
    }

    async fn app_with_stream(events: usize) -> (Arc<App>, StreamId, Vec<RecordedEvent>) {
        let mut app = App::in_memory(Settings::from_pairs(Vec::new()).unwrap());
        app.read_models_mut()
            .register(&EntityType::from_static("Bank", "Account"), Count)
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

    /// Read-model rows in memory, counting the loads.
    #[derive(Default)]
    struct CountedRows {
        rows: crate::readmodel::MemoryReadModelStore,
        loads: std::sync::atomic::AtomicUsize,
    }

    #[async_trait::async_trait]
    impl crate::readmodel::ReadModelStore for CountedRows {
        async fn load(
            &self,
            model: &str,
            stream: &StreamId,
        ) -> Result<Option<crate::readmodel::StoredCheckpoint>, crate::readmodel::ReadModelStoreError>
        {
            self.loads.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            self.rows.load(model, stream).await
        }
        async fn save(
            &self,
            model: &str,
            stream: &StreamId,
            checkpoint: &crate::readmodel::Checkpoint,
            condition: &crate::readmodel::SaveCondition,
        ) -> Result<crate::readmodel::SaveOutcome, crate::readmodel::ReadModelStoreError> {
            self.rows.save(model, stream, checkpoint, condition).await
        }
        async fn list(
            &self,
            model: &str,
            entity_type: &EntityType,
            continuation: Option<&str>,
            page_size: usize,
        ) -> Result<crate::readmodel::ReadModelPage, crate::readmodel::ReadModelStoreError>
        {
            self.rows
                .list(model, entity_type, continuation, page_size)
                .await
        }
    }

    #[tokio::test]
    async fn the_notifications_of_one_stream_are_applied_once_per_delivery() {
        let (app, stream, recorded) = app_with_stream(3).await;
        let other = append_one(&app, "B", "Happened", "{}").await;
        let rows = Arc::new(CountedRows::default());
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
        assert_eq!(rows.loads.load(std::sync::atomic::Ordering::SeqCst), 2);
        assert_eq!(count_row(&app, &stream).await, Some(3));
    }
}
