//! Runs a registered projection over one stream on demand, as of a sequence number or a time:
//! `GET /api/projections/{domain}/{entity}/{instance}/{projection}?asOfSequence=&asOf=`
//! (function folder `RunProjection`).

use std::sync::Arc;

use serde_json::json;
use warp::filters::BoxedFilter;
use warp::http::StatusCode;
use warp::reply::Response;
use warp::{Filter, Rejection};

use super::filters::{self, as_of_params, only_known_params, StreamSegments};
use super::problem::{json_response, reject, Problem};
use crate::app::App;

/// The route of this module.
pub fn routes(app: Arc<App>) -> BoxedFilter<(Response,)> {
    let with_app = warp::any().map(move || app.clone());
    warp::get()
        .and(warp::path!("api" / "projections" / ..))
        .and(filters::stream_segments())
        .and(filters::decoded_segment())
        .and(warp::path::end())
        .and(filters::query_pairs())
        .and(with_app)
        .and_then(run_handler)
        .boxed()
}

async fn run_handler(
    segments: StreamSegments,
    name: String,
    query: Vec<(String, String)>,
    app: Arc<App>,
) -> Result<Response, Rejection> {
    let stream = segments.stream_id().map_err(reject)?;
    only_known_params(&query, &["asOfSequence", "asOf"]).map_err(reject)?;
    let as_of = as_of_params(&query).map_err(reject)?;
    let Some(projection) = app.projections().get(stream.entity_type(), &name) else {
        let known = app.projections().names(stream.entity_type());
        return Err(reject(
            Problem::not_found(
                "projection-not-found",
                format!(
                    "no projection {name:?} is registered for {}.{}",
                    stream.domain(),
                    stream.entity()
                ),
            )
            .with("registered", known),
        ));
    };
    let runner = app.runner(stream.entity_type()).map_err(reject)?;
    let mut results = runner
        .run_many(&stream, &[projection.as_ref()], as_of)
        .await
        .map_err(reject)?;
    let result = results.pop().ok_or_else(|| {
        reject(Problem::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            "the projection runner returned no result",
        ))
    })?;
    if result.stream_version == 0 {
        return Err(reject(Problem::not_found(
            "stream-not-found",
            format!("stream {stream} does not exist"),
        )));
    }
    Ok(json_response(
        StatusCode::OK,
        &json!({
            "domain": stream.domain(),
            "entity": stream.entity(),
            "instance": stream.instance(),
            "projection": name,
            "projectionVersion": projection.version(),
            "state": result.state,
            "sequence": result.sequence,
            "streamVersion": result.stream_version,
        }),
    ))
}
