//! Running the read-model projector for Event Grid notifications, from either door: one
//! `Projector` invocation (one event), or one plain-webhook delivery (many events).
//!
//! Each event is decoded on its own into a notification streamfold sent (an event that is not
//! one, or whose id is not the one streamfold derives from what it names, is skipped); the
//! notifications of one stream are applied together, once, for the highest sequence among them.
//! A notification the projector can never apply is skipped and acknowledged; any other failure
//! answers the problem that makes Event Grid deliver again
//! ([`Problem::redelivery`](crate::functions::problem::Problem::redelivery)).

use std::collections::BTreeMap;
use std::sync::Arc;

use bytes::Bytes;
use futures::StreamExt;
use serde_json::json;
use serde_json::value::RawValue;
use warp::http::StatusCode;
use warp::reply::Response;
use warp::Reply;

use crate::app::App;
use crate::functions::invocation::{InvocationRequest, InvocationResponse};
use crate::functions::problem::{json_response, parse_json, Problem};
use crate::notify::{notification_id, Notification};
use crate::readmodel::{ProjectOutcome, ReadModelError};
use crate::stream::{NotificationKind, StreamId};

/// The Event Grid-triggered function (its folder name, and the path the host posts to).
pub const PROJECTOR_FUNCTION: &str = "Projector";
/// The name of its trigger binding in `functions/Projector/function.json`.
pub const PROJECTOR_BINDING: &str = "event";
/// Notifications of one plain-webhook delivery applied at the same time (Event Grid sends up
/// to 5,000 events per delivery; each application holds a stream read and a row save).
pub const MAX_CONCURRENT_NOTIFICATIONS: usize = 8;
/// Skipped events a delivery's answer describes one by one (all of them are counted).
pub const MAX_REPORTED_SKIPS: usize = 20;

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
        Err(error) if error.is_permanent() => Handled::Skipped(format!(
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

/// `POST /Projector`: one event, from the Functions host's Event Grid trigger.
pub(crate) async fn projector_handler(
    invocation_id: String,
    body: Bytes,
    app: Arc<App>,
) -> Response {
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
            Problem::redelivery(error).into_response()
        }
    }
}

/// The events of one plain-webhook delivery, decoded: the notifications grouped by stream
/// (with the highest sequence among them), and the events skipped with why. Owns what it holds,
/// so the delivery body can be dropped before the projector runs.
pub(crate) struct Delivery {
    received: usize,
    streams: BTreeMap<StreamId, (u64, Vec<(usize, Notification)>)>,
    skipped: Vec<(usize, String)>,
}

impl Delivery {
    /// Decodes each event on its own; the notifications of one stream are applied together,
    /// once, for the highest sequence among them (the projector brings every row to that event
    /// or later, which is what each of them asks for), so they do not race for the same rows.
    pub(crate) fn decode(invocation_id: &str, events: Vec<&RawValue>) -> Self {
        let mut skipped = Vec::new();
        let mut streams: BTreeMap<StreamId, (u64, Vec<(usize, Notification)>)> = BTreeMap::new();
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
        Self {
            received,
            streams,
            skipped,
        }
    }

    /// Runs the projector for each stream, [`MAX_CONCURRENT_NOTIFICATIONS`] at a time: 200 with
    /// the counts, or the problem that makes Event Grid deliver the whole batch again.
    pub(crate) async fn apply(
        self,
        app: &Arc<App>,
        invocation_id: &str,
    ) -> Result<Response, Problem> {
        let Self {
            received,
            streams,
            mut skipped,
        } = self;
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
                Err(error) if error.is_permanent() => {
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
            return Err(Problem::redelivery(error)
                .with("received", received)
                .with("processed", processed)
                .with("skipped", skipped_count)
                .with("failed", failed));
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
}
