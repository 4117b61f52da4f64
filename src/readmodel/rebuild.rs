//! Recomputing every read-model row of a domain / entity type from its streams, for when rows
//! are missing (streams written before the read model existed, notifications that never came)
//! or wrong (a bug fixed, a row edited by hand).
//!
//! Each stream is replayed from its first event, once for all read models (by the fold engine
//! the projector uses, in chunks), and each row is
//! written with the same conditions the projector uses, so a rebuild can run while
//! notifications are being handled:
//! - a missing row is created ("must not exist");
//! - a row equal to the replay is left alone;
//! - a row behind the replay, or at the same sequence with another state or projection
//!   version, is replaced (If-Match);
//! - a row *ahead* of the replay is left alone when a concurrent projector legitimately got
//!   further (the stream has grown to the row's sequence since the replay); when the stream
//!   has not, the row claims events that do not exist and is replaced.
//!
//! A lost save race makes the stream be replayed again, at most
//! [`super::MAX_SAVE_ATTEMPTS`] times. Streams are handled [`REBUILD_CONCURRENCY`] at a time;
//! a stream that fails is counted and reported without stopping the others.
//!
//! A stream holding an event a read model's projection refuses is not a failure of the
//! rebuild: its row is written *failed*, exactly as the projector marks it (so the two agree),
//! and the stream is counted in `unreadable` and described (the first few) in
//! `unreadableStreams`.

use futures::future::join_all;
use futures::StreamExt;
use serde::Serialize;

use super::projector::ReadModelProjector;
use super::{ReadModelError, MAX_SAVE_ATTEMPTS};
use crate::projection::{fold_stream, AsOf, DynProjection, Fold, Lane, OnRefusal, ProjectionError};
use crate::stream::{Checkpoint, FoldFailure, SaveCondition, SaveOutcome, StoredCheckpoint};
use crate::stream::{EntityType, StreamId};

/// Streams rebuilt at the same time.
pub const REBUILD_CONCURRENCY: usize = 8;
/// Instance keys listed per page.
pub const REBUILD_LIST_PAGE: usize = 500;
/// Failures described in a report (all are counted).
pub const MAX_REPORTED_FAILURES: usize = 10;

/// What a rebuild did, counted in rows (one per read model and stream) unless said otherwise.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RebuildReport {
    /// Streams replayed.
    pub streams: u64,
    /// Rows created or replaced.
    pub written: u64,
    /// Rows already equal to the replay.
    pub unchanged: u64,
    /// Rows left alone because a concurrent projector had taken them further.
    pub newer: u64,
    /// Streams that could not be rebuilt.
    pub failed: u64,
    /// The first few failures: instance key and error.
    pub failures: Vec<RebuildFailure>,
    /// Streams holding an event some read model's projection refuses (counted in `streams`
    /// too: their rows were written, marked failed).
    pub unreadable: u64,
    /// The first few of them: instance key, the refused event's sequence, and why.
    pub unreadable_streams: Vec<UnreadableStream>,
}

/// A stream whose events a read model cannot fold.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct UnreadableStream {
    pub instance: String,
    pub model: String,
    pub sequence: u64,
    pub reason: String,
}

/// A stream that could not be rebuilt.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RebuildFailure {
    pub instance: String,
    pub error: String,
}

/// What became of one row.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum RowResult {
    Written,
    Unchanged,
    Newer,
}

/// What to do with one row, given the replay.
enum Decision {
    Done(RowResult),
    Save(SaveCondition),
    /// The stream grew since the replay and the row cannot be trusted: replay again.
    Replay,
}

/// Recomputes every row of the projector's read models for the streams of `entity_type`. Fails only when the streams cannot be listed; per-stream failures are in the
/// report.
pub async fn rebuild(
    projector: &ReadModelProjector,
    entity_type: &EntityType,
) -> Result<RebuildReport, ReadModelError> {
    let mut report = RebuildReport::default();
    if projector.models.is_empty() {
        return Ok(report);
    }
    let mut continuation: Option<String> = None;
    loop {
        let page = projector
            .events
            .list_streams(entity_type, continuation.as_deref(), REBUILD_LIST_PAGE)
            .await?;
        rebuild_instances(projector, entity_type, page.instances, &mut report).await;
        match page.continuation {
            Some(next) => continuation = Some(next),
            None => break,
        }
    }
    tracing::info!(entity_type = %entity_type, ?report, "read models rebuilt");
    Ok(report)
}

/// Recomputes every read model's row of the streams `instances` of `entity_type`
/// ([`REBUILD_CONCURRENCY`] at a time), adding what became of them to `report` (the operator
/// CLI's `streamfold rebuild` takes a category one stream at a time through it).
pub async fn rebuild_instances(
    projector: &ReadModelProjector,
    entity_type: &EntityType,
    instances: Vec<String>,
    report: &mut RebuildReport,
) {
    if projector.models.is_empty() {
        return;
    }
    let results: Vec<(String, Result<Vec<RowOutcome>, ReadModelError>)> =
        futures::stream::iter(instances.into_iter().map(|instance| async move {
            let result = match entity_type.stream(instance.as_str()) {
                Ok(stream) => rebuild_stream(projector, &stream).await,
                Err(e) => Err(e.into()),
            };
            (instance, result)
        }))
        .buffer_unordered(REBUILD_CONCURRENCY)
        .collect()
        .await;
    for (instance, result) in results {
        match result {
            Ok(rows) => {
                report.streams += 1;
                let mut refused = None;
                for (row, failure) in rows {
                    match row {
                        RowResult::Written => report.written += 1,
                        RowResult::Unchanged => report.unchanged += 1,
                        RowResult::Newer => report.newer += 1,
                    }
                    refused = refused.or(failure);
                }
                if let Some((model, failure)) = refused {
                    tracing::warn!(entity_type = %entity_type, instance, model, sequence = failure.sequence, reason = failure.reason, "a read model cannot fold an event of the stream; its row is marked unreadable");
                    report.unreadable += 1;
                    if report.unreadable_streams.len() < MAX_REPORTED_FAILURES {
                        report.unreadable_streams.push(UnreadableStream {
                            instance,
                            model,
                            sequence: failure.sequence,
                            reason: failure.reason,
                        });
                    }
                }
            }
            Err(error) => {
                tracing::warn!(entity_type = %entity_type, instance, error = %error, "read model rebuild failed for a stream");
                report.failed += 1;
                if report.failures.len() < MAX_REPORTED_FAILURES {
                    report.failures.push(RebuildFailure {
                        instance,
                        error: error.to_string(),
                    });
                }
            }
        }
    }
}

/// What became of one row, with the refusal the row is marked with, if any (model name and
/// failure).
type RowOutcome = (RowResult, Option<(String, FoldFailure)>);

/// Rebuilds every read model's row of one stream.
async fn rebuild_stream(
    projector: &ReadModelProjector,
    stream: &StreamId,
) -> Result<Vec<RowOutcome>, ReadModelError> {
    let models = &projector.models;
    let mut results: Vec<Option<RowOutcome>> = vec![None; models.len()];
    let mut pending: Vec<usize> = (0..models.len()).collect();
    for _ in 0..MAX_SAVE_ATTEMPTS {
        if pending.is_empty() {
            break;
        }
        let Some(replays) = replay(projector, stream, &pending).await? else {
            // Listed, but gone (or never written): nothing to rebuild.
            return Ok(Vec::new());
        };
        let loads = join_all(
            pending
                .iter()
                .map(|&i| projector.store.load(models[i].name(), stream)),
        )
        .await;
        let mut saves = Vec::new();
        let mut again = Vec::new();
        for ((&index, replayed), loaded) in pending.iter().zip(replays).zip(loads) {
            let loaded = loaded?;
            let failure = replayed
                .failure
                .clone()
                .map(|f| (models[index].name().to_owned(), f));
            match decide(
                projector,
                stream,
                models[index].as_ref(),
                &replayed,
                loaded.as_ref(),
            )
            .await?
            {
                Decision::Done(result) => results[index] = Some((result, failure)),
                Decision::Save(condition) => saves.push((index, replayed, condition, failure)),
                Decision::Replay => again.push(index),
            }
        }
        let outcomes = join_all(saves.iter().map(|(index, checkpoint, condition, _)| {
            projector
                .store
                .save(models[*index].name(), stream, checkpoint, condition)
        }))
        .await;
        for ((index, _, _, failure), outcome) in saves.into_iter().zip(outcomes) {
            match outcome? {
                SaveOutcome::Saved { .. } => results[index] = Some((RowResult::Written, failure)),
                SaveOutcome::Conflict => again.push(index),
            }
        }
        pending = again;
    }
    if let Some(&index) = pending.first() {
        return Err(ReadModelError::Contention {
            model: models[index].name().to_owned(),
            stream: stream.to_string(),
            attempts: MAX_SAVE_ATTEMPTS,
        });
    }
    Ok(results.into_iter().flatten().collect())
}

/// The rows of the read models in `pending` as a full replay of `stream` makes them (with the
/// fold engine, in chunks, one read of the stream for all of them): the state at the stream's
/// version, or the failed row of the first event the projection refuses (as the projector
/// makes it, so the two agree). `None` when the stream has no event.
async fn replay(
    projector: &ReadModelProjector,
    stream: &StreamId,
    pending: &[usize],
) -> Result<Option<Vec<Checkpoint>>, ReadModelError> {
    let models: Vec<&dyn DynProjection> = pending
        .iter()
        .map(|&i| projector.models[i].as_ref())
        .collect();
    let mut folds: Vec<Box<dyn Fold + '_>> = models.iter().map(|m| m.start()).collect();
    let mut lanes: Vec<Lane<'_>> = models
        .iter()
        .zip(folds.iter_mut())
        .map(|(m, fold)| Lane::new(m.name(), m.version(), fold.as_mut()))
        .collect();
    let version = fold_stream(
        projector.events.as_ref(),
        stream,
        &mut lanes,
        AsOf::Latest,
        None,
        OnRefusal::StopFold,
        |_| Ok::<(), ReadModelError>(()),
    )
    .await?;
    if version == 0 {
        return Ok(None);
    }
    let mut rows = Vec::with_capacity(lanes.len());
    for (mut lane, model) in lanes.into_iter().zip(models) {
        let state_error = |source| ProjectionError::State {
            projection: model.name().to_owned(),
            source,
        };
        rows.push(match lane.take_refused() {
            Some(error) => {
                let initial = model.start().to_raw().map_err(state_error)?;
                Checkpoint::failed(
                    model.name(),
                    initial,
                    model.version(),
                    error.sequence,
                    &error,
                )
            }
            None => Checkpoint {
                sequence: version,
                ..lane
                    .to_stored()
                    .map_err(state_error)?
                    .as_row_of(model.name())
            },
        });
    }
    Ok(Some(rows))
}

async fn decide(
    projector: &ReadModelProjector,
    stream: &StreamId,
    model: &dyn DynProjection,
    replayed: &Checkpoint,
    loaded: Option<&StoredCheckpoint>,
) -> Result<Decision, ReadModelError> {
    let Some(row) = loaded else {
        return Ok(Decision::Save(SaveCondition::MustNotExist));
    };
    if row.checkpoint == *replayed {
        return Ok(Decision::Done(RowResult::Unchanged));
    }
    let replace = Decision::Save(SaveCondition::IfMatch(row.etag.clone()));
    if row.checkpoint.sequence <= replayed.sequence || replayed.failure.is_some() {
        // No projector can take a row past an event the projection refuses: a row past it
        // was folded by code that did not refuse it, and is replaced by the failed row.
        return Ok(replace);
    }
    // The row is ahead of the replay: legitimate only if the stream has grown that far.
    let version = projector.events.version(stream).await?;
    let same_version = row.checkpoint.projection_version == model.version();
    Ok(if version == replayed.sequence {
        tracing::warn!(
            stream = %stream,
            model = model.name(),
            row_sequence = row.checkpoint.sequence,
            stream_version = version,
            "read model row is past the end of the stream; replacing it"
        );
        replace
    } else if same_version && row.checkpoint.sequence <= version {
        Decision::Done(RowResult::Newer)
    } else {
        Decision::Replay
    })
}
