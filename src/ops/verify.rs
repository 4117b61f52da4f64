//! `streamfold verify <stream|category>`: each stream checked by its backend's
//! [`EventStore::verify`] (Table: the partition's rows; Append Blobs: the segments, the
//! event-id index and the notification marker), every problem printed on stdout as
//! `<stream>: <problem>`, and a non-zero exit when there is any. A healthy stream prints
//! nothing on stdout (the summary line goes to stderr).

use futures::FutureExt;

use super::category::{over_category, RunOptions, StreamOutcome};
use super::names::Target;
use super::{OpsError, EXIT_INTERRUPTED, EXIT_OK, EXIT_PROBLEMS};
use crate::app::App;
use crate::stream::{EventStore, StreamId};

/// Runs the command; returns the exit code.
pub async fn verify(app: &App, target: &Target, options: &RunOptions) -> Result<u8, OpsError> {
    let store = app.store(target.category())?;
    match target {
        Target::Stream(stream) => {
            let outcome = verify_stream(store.as_ref(), stream).await?;
            if outcome.problems.is_empty()
                && store.version(stream).await? == 0
                && !store.is_erased(stream).await?
            {
                eprintln!("{stream}: no such stream");
                return Ok(EXIT_PROBLEMS);
            }
            Ok(report(&outcome.problems, 1, false))
        }
        Target::Category(category) => {
            let label = format!("verify {category}");
            let run = over_category(&label, store.as_ref(), category, options, |stream| {
                let store = store.clone();
                async move { verify_stream(store.as_ref(), &stream).await }.boxed()
            })
            .await?;
            Ok(report(&run.problems, run.done, run.interrupted))
        }
    }
}

/// The problems of one stream, each prefixed with its name.
async fn verify_stream(
    store: &dyn EventStore,
    stream: &StreamId,
) -> Result<StreamOutcome, OpsError> {
    let problems = store.verify(stream).await?;
    Ok(StreamOutcome {
        problems: problems
            .into_iter()
            .map(|problem| format!("{stream}: {problem}"))
            .collect(),
        count: 1,
    })
}

/// Prints the problems and the summary; the exit code.
fn report(problems: &[String], streams: u64, interrupted: bool) -> u8 {
    for problem in problems {
        println!("{problem}");
    }
    let plural = if streams == 1 { "" } else { "s" };
    match (problems.len(), interrupted) {
        (0, false) => {
            eprintln!("verified {streams} stream{plural}: no problems found");
            EXIT_OK
        }
        (n, false) => {
            eprintln!("verified {streams} stream{plural}: {n} problem(s) found");
            EXIT_PROBLEMS
        }
        (n, true) => {
            eprintln!("verified {streams} stream{plural} before the interruption: {n} problem(s) found so far");
            EXIT_INTERRUPTED
        }
    }
}
