//! A run over every stream of a category (verify, rebuild, replay): lists the instance keys,
//! then does each stream's work in turn with progress ([`super::progress`]), a checkpoint after
//! each stream and a clean stop on Ctrl-C ([`super::checkpoint`]).

use std::path::PathBuf;

use futures::future::BoxFuture;

use super::checkpoint::{Checkpoint, Stop};
use super::progress::Progress;
use super::OpsError;
use crate::stream::{EntityType, EventStore, StreamId};

/// Instance keys asked for per listing page.
pub const LIST_PAGE: usize = 1_000;

/// How a category run is driven.
pub struct RunOptions {
    /// The command and its arguments (a checkpoint resumes only the same run).
    pub run: String,
    pub checkpoint: PathBuf,
    pub resume: bool,
    pub stop: Stop,
    /// Stops as Ctrl-C would after this many streams (tests of resuming).
    pub stop_after: Option<u64>,
}

/// What one stream's work found.
#[derive(Debug, Default)]
pub struct StreamOutcome {
    /// Problems, each naming the stream.
    pub problems: Vec<String>,
    /// What was done (notifications sent, rows written...).
    pub count: u64,
}

/// What a run did, from its first start (a resumed run includes the runs before).
#[derive(Debug)]
pub struct RunReport {
    pub done: u64,
    pub total: u64,
    pub count: u64,
    pub problems: Vec<String>,
    pub interrupted: bool,
}

/// Every instance key of `category`, in the store's order.
pub async fn list_all(
    store: &dyn EventStore,
    category: &EntityType,
) -> Result<Vec<String>, OpsError> {
    let mut keys = Vec::new();
    let mut continuation: Option<String> = None;
    loop {
        let page = store
            .list_streams(category, continuation.as_deref(), LIST_PAGE)
            .await?;
        keys.extend(page.instances);
        match page.continuation {
            Some(next) => continuation = Some(next),
            None => return Ok(keys),
        }
    }
}

/// Runs `each` over the streams of `category` (see the module).
pub async fn over_category<'a, F>(
    label: &str,
    store: &dyn EventStore,
    category: &EntityType,
    options: &RunOptions,
    mut each: F,
) -> Result<RunReport, OpsError>
where
    F: FnMut(StreamId) -> BoxFuture<'a, Result<StreamOutcome, OpsError>>,
{
    let mut checkpoint = Checkpoint::start(&options.checkpoint, &options.run, options.resume)?;
    let keys = list_all(store, category).await?;
    let start = checkpoint.position(&keys);
    let total = u64::try_from(keys.len()).unwrap_or(u64::MAX);
    let done_before = u64::try_from(start).unwrap_or(u64::MAX);
    checkpoint.done = done_before;
    let mut progress = Progress::new(label, total, done_before);
    let mut interrupted = false;
    let mut this_run = 0u64;
    for key in keys.iter().skip(start) {
        if options.stop.requested() {
            interrupted = true;
            break;
        }
        let outcome = match category.stream(key.as_str()) {
            Ok(stream) => {
                let outcome = tokio::select! {
                    biased;
                    _ = options.stop.wait() => None,
                    outcome = each(stream) => Some(outcome),
                };
                match outcome {
                    Some(outcome) => outcome?,
                    None => {
                        interrupted = true;
                        break;
                    }
                }
            }
            Err(error) => StreamOutcome {
                problems: vec![format!(
                    "{category}/{key}: listed, but not a valid stream name: {error}"
                )],
                count: 0,
            },
        };
        checkpoint.problems.extend(outcome.problems);
        checkpoint.count = checkpoint.count.saturating_add(outcome.count);
        checkpoint.done = checkpoint.done.saturating_add(1);
        checkpoint.last = Some(key.clone());
        checkpoint.save(&options.checkpoint)?;
        progress.advance();
        this_run = this_run.saturating_add(1);
        if options.stop_after == Some(this_run) {
            options.stop.request();
        }
    }
    if !interrupted && options.stop.requested() && checkpoint.done < total {
        interrupted = true;
    }
    if interrupted {
        checkpoint.save(&options.checkpoint)?;
        progress.finish("interrupted");
        eprintln!(
            "interrupted after {} of {total} streams (the last done: {}); checkpoint in {}: \
             run the same command with --resume to carry on",
            checkpoint.done,
            checkpoint.last.as_deref().unwrap_or("none"),
            options.checkpoint.display()
        );
    } else {
        progress.finish("done");
        match std::fs::remove_file(&options.checkpoint) {
            Ok(()) => {}
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => {}
            Err(error) => {
                return Err(OpsError::Checkpoint {
                    path: options.checkpoint.display().to_string(),
                    reason: error.to_string(),
                })
            }
        }
    }
    Ok(RunReport {
        done: checkpoint.done,
        total,
        count: checkpoint.count,
        problems: checkpoint.problems,
        interrupted,
    })
}
