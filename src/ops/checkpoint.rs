//! Interrupting and resuming a run over a category. A run lists the category's instance keys
//! first (so its progress has a total), then takes the streams one at a time in that order,
//! and after each one writes a checkpoint file: which run it is (command and arguments), the
//! last instance key done, how many are done, and what was found so far. The file is replaced
//! atomically (written beside, then renamed), so a run killed at any point leaves the last
//! complete checkpoint. Ctrl-C (or SIGTERM) stops a run between streams, or in the middle of
//! one (whose work is then done again on resume), and it exits [`super::EXIT_INTERRUPTED`]
//! naming the file. `--resume` reads the file, lists again, and carries on after the last key
//! done (if that stream is gone since, after where it would sort); a finished run removes it.
//! Each stream's work is safe to repeat (verify reads, rebuild converges, replayed
//! notifications keep their ids), so at worst one stream is done twice.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use tokio::sync::Notify;

use super::OpsError;

/// Where a run keeps its checkpoint when `--checkpoint` is not given: in the current
/// directory, named after the command and the category.
pub fn default_path(command: &str, category: &crate::stream::EntityType) -> PathBuf {
    PathBuf::from(format!(
        "streamfold-{command}-{}-{}.checkpoint.json",
        category.domain(),
        category.entity()
    ))
}

/// What a run has done so far.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Checkpoint {
    /// The command and its arguments: a checkpoint resumes only the same run.
    pub run: String,
    /// The last instance key done.
    pub last: Option<String>,
    /// Streams done.
    pub done: u64,
    /// What the run counted so far (notifications sent, rows written...).
    pub count: u64,
    /// What the run found so far (verify's problems, rebuild's failures), each naming its stream.
    pub problems: Vec<String>,
}

impl Checkpoint {
    /// The checkpoint of `run` in `path`: a fresh one, or the one there when resuming.
    pub fn start(path: &Path, run: &str, resume: bool) -> Result<Self, OpsError> {
        let fresh = Self {
            run: run.to_owned(),
            ..Self::default()
        };
        if !resume {
            return Ok(fresh);
        }
        let bad = |reason: String| OpsError::Checkpoint {
            path: path.display().to_string(),
            reason,
        };
        let text = std::fs::read_to_string(path).map_err(|e| bad(format!("cannot resume: {e}")))?;
        let stored: Self = serde_json::from_str(&text).map_err(|e| bad(e.to_string()))?;
        if stored.run != run {
            return Err(bad(format!(
                "it is the checkpoint of another run ({:?}), not of {run:?}",
                stored.run
            )));
        }
        Ok(stored)
    }

    /// Writes the checkpoint to `path` (atomically: beside it, then renamed over it).
    pub fn save(&self, path: &Path) -> Result<(), OpsError> {
        let bad = |e: std::io::Error| OpsError::Checkpoint {
            path: path.display().to_string(),
            reason: e.to_string(),
        };
        let mut temporary = path.as_os_str().to_owned();
        temporary.push(".tmp");
        let temporary = PathBuf::from(temporary);
        let text = serde_json::to_vec_pretty(self).map_err(|e| bad(e.into()))?;
        std::fs::write(&temporary, text).map_err(bad)?;
        std::fs::rename(&temporary, path).map_err(bad)
    }

    /// Where a run of `keys` (in listing order) carries on: after the last key done, or after
    /// where it would sort when it is not listed any more.
    pub fn position(&self, keys: &[String]) -> usize {
        match &self.last {
            None => 0,
            Some(last) => match keys.iter().position(|k| k == last) {
                Some(index) => index.saturating_add(1),
                None => keys
                    .iter()
                    .take_while(|k| k.as_str() < last.as_str())
                    .count(),
            },
        }
    }
}

/// The stop request of a run: Ctrl-C, SIGTERM, or (tests) a number of streams.
#[derive(Clone, Default)]
pub struct Stop {
    flag: Arc<AtomicBool>,
    notify: Arc<Notify>,
}

impl Stop {
    /// A stop that Ctrl-C and SIGTERM request.
    pub fn on_signals() -> Self {
        let stop = Self::default();
        let signalled = stop.clone();
        tokio::spawn(async move {
            crate::telemetry::shutdown_signal().await;
            signalled.request();
        });
        stop
    }

    pub fn request(&self) {
        self.flag.store(true, Ordering::SeqCst);
        self.notify.notify_waiters();
    }

    pub fn requested(&self) -> bool {
        self.flag.load(Ordering::SeqCst)
    }

    /// Returns once a stop is requested.
    pub async fn wait(&self) {
        loop {
            let notified = self.notify.notified();
            if self.requested() {
                return;
            }
            notified.await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_checkpoint_resumes_only_its_run_after_its_last_key() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.json");
        let mut checkpoint = Checkpoint::start(&path, "verify A/B", false).unwrap();
        checkpoint.last = Some("k2".to_owned());
        checkpoint.done = 2;
        checkpoint.save(&path).unwrap();
        let resumed = Checkpoint::start(&path, "verify A/B", true).unwrap();
        assert_eq!(resumed, checkpoint);
        assert!(Checkpoint::start(&path, "verify A/C", true).is_err());
        let keys: Vec<String> = ["k1", "k2", "k3"].map(String::from).to_vec();
        assert_eq!(resumed.position(&keys), 2);
        let gone: Vec<String> = ["k1", "k3"].map(String::from).to_vec();
        assert_eq!(resumed.position(&gone), 1);
        assert!(Checkpoint::start(&dir.path().join("none"), "x", true).is_err());
    }
}
