//! Progress of a long run, on stderr (stdout stays the command's output, e.g. NDJSON): a bar
//! redrawn in place when stderr is a terminal, plain lines otherwise (one per
//! [`PLAIN_EVERY`] streams and one at the end), so a log of a run in CI stays readable.

use std::io::{IsTerminal, Write};

/// Streams between two plain progress lines.
pub const PLAIN_EVERY: u64 = 100;
/// Width of the bar, in characters.
const BAR_WIDTH: u64 = 30;

/// One run's progress over `total` streams.
pub struct Progress {
    label: String,
    total: u64,
    done: u64,
    terminal: bool,
}

impl Progress {
    /// Progress of `label` over `total` streams, `done` of them done already (a resumed run).
    pub fn new(label: impl Into<String>, total: u64, done: u64) -> Self {
        let progress = Self {
            label: label.into(),
            total,
            done,
            terminal: std::io::stderr().is_terminal(),
        };
        if !progress.terminal {
            progress.line(if done > 0 { "resumed" } else { "started" });
        }
        progress
    }

    /// One more stream done.
    pub fn advance(&mut self) {
        self.done = self.done.saturating_add(1);
        if self.terminal {
            let filled = (self.done.min(self.total) * BAR_WIDTH)
                .checked_div(self.total)
                .unwrap_or(BAR_WIDTH);
            let bar: String = (0..BAR_WIDTH)
                .map(|i| if i < filled { '#' } else { '-' })
                .collect();
            let mut err = std::io::stderr().lock();
            let _ = write!(err, "\r{} [{bar}] {}/{}", self.label, self.done, self.total);
            let _ = err.flush();
        } else if self.done % PLAIN_EVERY == 0 {
            self.line("");
        }
    }

    /// The end of the run (finished, or interrupted: `how` says).
    pub fn finish(&self, how: &str) {
        if self.terminal {
            eprintln!();
        }
        self.line(how);
    }

    fn line(&self, note: &str) {
        let note = if note.is_empty() {
            String::new()
        } else {
            format!(" ({note})")
        };
        eprintln!("{}: {}/{} streams{note}", self.label, self.done, self.total);
    }
}
