//! `streamfold rebuild <read model> [--category D/E]`: recomputes a registered read model's
//! rows from the streams (`crate::readmodel::rebuild_instances`, as `RebuildReadModels` does),
//! one stream at a time with progress and a checkpoint, so a long rebuild can be stopped and
//! resumed. Rows a concurrent projector took further are kept; a stream the model cannot fold
//! gets its row marked and is named (exit 1), as is a stream that could not be rebuilt.

use futures::FutureExt;

use super::category::{over_category, RunOptions, StreamOutcome};
use super::{OpsError, EXIT_INTERRUPTED, EXIT_OK, EXIT_PROBLEMS};
use crate::app::App;
use crate::readmodel::{rebuild_instances, ReadModelProjector, RebuildReport};
use crate::stream::EntityType;

/// The categories that have read model `name` (only `category` when given).
pub fn categories_of(
    app: &App,
    name: &str,
    category: Option<&EntityType>,
) -> Result<Vec<EntityType>, OpsError> {
    let found: Vec<EntityType> = app
        .read_models()
        .entity_types()
        .filter(|et| category.is_none_or(|c| c == *et))
        .filter(|et| app.read_models().names(et).contains(&name))
        .cloned()
        .collect();
    if found.is_empty() {
        let mut known: Vec<String> = app
            .read_models()
            .entity_types()
            .flat_map(|et| {
                app.read_models()
                    .names(et)
                    .into_iter()
                    .map(move |n| format!("{n} ({et})"))
            })
            .collect();
        known.sort();
        return Err(OpsError::Usage(format!(
            "no read model {name:?}{}; the registered ones: {}",
            category.map(|c| format!(" of {c}")).unwrap_or_default(),
            if known.is_empty() {
                "none".to_owned()
            } else {
                known.join(", ")
            }
        )));
    }
    Ok(found)
}

/// Rebuilds read model `name` of `category`.
pub async fn rebuild(
    app: &App,
    name: &str,
    category: &EntityType,
    options: &RunOptions,
) -> Result<u8, OpsError> {
    let model = app
        .read_models()
        .get(category, name)
        .ok_or_else(|| OpsError::Usage(format!("no read model {name:?} of {category}")))?;
    let store = app.store(category)?;
    let projector = ReadModelProjector::new(store.clone(), app.read_model_store()?, vec![model]);
    let label = format!("rebuild {name} of {category}");
    let projector = &projector;
    let run = over_category(&label, store.as_ref(), category, options, |stream| {
        async move {
            let mut report = RebuildReport::default();
            rebuild_instances(
                projector,
                stream.entity_type(),
                vec![stream.instance().to_owned()],
                &mut report,
            )
            .await;
            let mut problems: Vec<String> = report
                .failures
                .iter()
                .map(|f| format!("{stream}: not rebuilt: {}", f.error))
                .collect();
            problems.extend(report.unreadable_streams.iter().map(|u| {
                format!(
                    "{stream}: read model {} cannot fold event {}: {}",
                    u.model, u.sequence, u.reason
                )
            }));
            Ok(StreamOutcome {
                problems,
                count: report.written,
            })
        }
        .boxed()
    })
    .await?;
    for problem in &run.problems {
        println!("{problem}");
    }
    eprintln!(
        "rebuilt read model {name} of {category}: {} stream(s), {} row(s) written, {} problem(s)",
        run.done,
        run.count,
        run.problems.len()
    );
    Ok(match (run.interrupted, run.problems.is_empty()) {
        (true, _) => EXIT_INTERRUPTED,
        (false, true) => EXIT_OK,
        (false, false) => EXIT_PROBLEMS,
    })
}
