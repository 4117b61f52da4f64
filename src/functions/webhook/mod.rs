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
//! The Event Grid webhook protocol (headers, handshakes, the shape of a delivery) is
//! `eventgrid.rs`; decoding notifications and running the projector for them is `projector.rs`.
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

use std::sync::Arc;

use bytes::Bytes;
use warp::filters::BoxedFilter;
use warp::reply::Response;
use warp::{Filter, Rejection};

use super::filters;
use super::problem::reject;
use crate::app::App;

mod eventgrid;
mod projector;
#[cfg(test)]
mod tests;

pub use eventgrid::{
    ALLOWED_ORIGIN_HEADER, ALLOWED_RATE, ALLOWED_RATE_HEADER, EVENT_TYPE_HEADER, NOTIFICATION,
    REQUEST_ORIGIN_HEADER, SUBSCRIPTION_VALIDATION, UNSUBSCRIBE, VALIDATION_EVENT_TYPE,
};
pub use projector::{
    MAX_CONCURRENT_NOTIFICATIONS, MAX_REPORTED_SKIPS, PROJECTOR_BINDING, PROJECTOR_FUNCTION,
};

/// The plain webhook's route (under `/api`).
pub const WEBHOOK_ROUTE: &str = "eventgrid";

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
        .then(projector::projector_handler);
    let handshake = warp::options()
        .and(warp::path("api"))
        .and(warp::path(WEBHOOK_ROUTE))
        .and(warp::path::end())
        .and(filters::optional_text_header(REQUEST_ORIGIN_HEADER))
        .and_then(eventgrid::abuse_protection);
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

/// `POST /api/eventgrid`: the protocol's own requests are answered by `eventgrid`, a
/// delivery of events is applied by `projector`.
async fn webhook_handler(
    event_type: Option<String>,
    content_type: Option<String>,
    invocation_id: String,
    body: Bytes,
    app: Arc<App>,
) -> Result<Response, Rejection> {
    let answer = eventgrid::protocol_answer(
        event_type.as_deref(),
        content_type.as_deref(),
        &body,
        &invocation_id,
    )
    .map_err(reject)?;
    if let Some(answer) = answer {
        return Ok(answer);
    }
    let events = eventgrid::delivered_events(&body).map_err(reject)?;
    let delivery = projector::Delivery::decode(&invocation_id, events);
    drop(body);
    delivery.apply(&app, &invocation_id).await.map_err(reject)
}
