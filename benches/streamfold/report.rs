//! The benchmark's result: one row per measured quantity, printed as one table and written as
//! JSON for comparisons between commits.
//!
//! Guarantees:
//! - every row has a stable `id` (`section.operation.variant.statistic`), so two JSON files
//!   from different commits can be compared row by row (`--baseline`);
//! - a target is only ever *reported* (`met`, `missed`, `n/a`), never asserted: timings on a
//!   shared machine drift, and the benchmark must not fail a build because of them;
//! - a quantity that cannot be measured yet is a row with status `n/a` and the reason, never an
//!   invented number.

use std::fmt::Write as _;
use std::path::Path;
use std::time::Duration;

use anyhow::Context;
use serde_json::{json, Value};

/// What a row's target says, and how it is checked.
#[derive(Debug, Clone, Copy)]
pub enum Target {
    /// streamfold / raw must be at most this (latencies: lower is better).
    RatioAtMost(f64),
    /// streamfold / raw must be at least this (throughputs: higher is better).
    RatioAtLeast(f64),
    /// The streamfold value itself must be at most this (in the row's unit).
    AtMost(f64),
    /// The streamfold value must be exactly this (request counts).
    Exactly(f64),
}

impl Target {
    fn describe(self) -> String {
        match self {
            Self::RatioAtMost(x) => format!("ratio <= {x}"),
            Self::RatioAtLeast(x) => format!("ratio >= {x}"),
            Self::AtMost(x) => format!("<= {}", trim_number(x)),
            Self::Exactly(x) => format!("= {}", trim_number(x)),
        }
    }

    fn check(self, value: Option<f64>, ratio: Option<f64>) -> Option<bool> {
        match self {
            Self::RatioAtMost(x) => ratio.map(|r| r <= x),
            Self::RatioAtLeast(x) => ratio.map(|r| r >= x),
            Self::AtMost(x) => value.map(|v| v <= x),
            Self::Exactly(x) => value.map(|v| (v - x).abs() < f64::EPSILON),
        }
    }
}

/// Whether a row met its target.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Status {
    Met,
    Missed,
    /// Measured, no target (a breakdown or context row).
    Info,
    /// Not measured, with the reason.
    NotAvailable(String),
}

impl Status {
    fn label(&self) -> &'static str {
        match self {
            Self::Met => "met",
            Self::Missed => "MISSED",
            Self::Info => "",
            Self::NotAvailable(_) => "n/a",
        }
    }
}

/// One measured quantity.
#[derive(Debug, Clone)]
pub struct Row {
    pub id: String,
    pub section: &'static str,
    pub operation: String,
    pub unit: &'static str,
    pub streamfold: Option<f64>,
    pub raw: Option<f64>,
    /// What the raw column is (the baseline this row is compared with).
    pub raw_what: String,
    pub target: Option<Target>,
    pub status: Status,
    pub note: String,
}

impl Row {
    /// A row comparing streamfold with a raw baseline; the status follows from the target.
    pub fn compare(
        id: impl Into<String>,
        section: &'static str,
        operation: impl Into<String>,
        unit: &'static str,
        streamfold: f64,
        raw: Option<f64>,
        raw_what: impl Into<String>,
    ) -> Self {
        Self {
            id: id.into(),
            section,
            operation: operation.into(),
            unit,
            streamfold: Some(streamfold),
            raw,
            raw_what: raw_what.into(),
            target: None,
            status: Status::Info,
            note: String::new(),
        }
    }

    /// A row that could not be measured.
    pub fn not_available(
        id: impl Into<String>,
        section: &'static str,
        operation: impl Into<String>,
        unit: &'static str,
        reason: impl Into<String>,
    ) -> Self {
        Self {
            id: id.into(),
            section,
            operation: operation.into(),
            unit,
            streamfold: None,
            raw: None,
            raw_what: String::new(),
            target: None,
            status: Status::NotAvailable(reason.into()),
            note: String::new(),
        }
    }

    /// Sets the target and evaluates it (a row without a value stays `n/a`).
    pub fn target(mut self, target: Target) -> Self {
        self.target = Some(target);
        if !matches!(self.status, Status::NotAvailable(_)) {
            self.status = match target.check(self.streamfold, self.ratio()) {
                Some(true) => Status::Met,
                Some(false) => Status::Missed,
                None => Status::NotAvailable("no value to check the target against".into()),
            };
        }
        self
    }

    pub fn note(mut self, note: impl Into<String>) -> Self {
        self.note = note.into();
        self
    }

    /// streamfold / raw, when both are known and raw is not zero.
    pub fn ratio(&self) -> Option<f64> {
        match (self.streamfold, self.raw) {
            (Some(s), Some(r)) if r != 0.0 => Some(s / r),
            _ => None,
        }
    }

    fn to_json(&self) -> Value {
        json!({
            "id": self.id,
            "section": self.section,
            "operation": self.operation,
            "unit": self.unit,
            "streamfold": self.streamfold,
            "raw": self.raw,
            "rawWhat": self.raw_what,
            "ratio": self.ratio(),
            "target": self.target.map(Target::describe),
            "status": match &self.status {
                Status::Met => "met",
                Status::Missed => "missed",
                Status::Info => "info",
                Status::NotAvailable(_) => "n/a",
            },
            "reason": match &self.status {
                Status::NotAvailable(reason) => Some(reason.as_str()),
                _ => None,
            },
            "note": self.note,
        })
    }
}

/// Every row of one run, with what identifies the run.
#[derive(Debug, Default)]
pub struct Report {
    pub rows: Vec<Row>,
    /// Settings of the run (mode, sample counts...), copied into the JSON.
    pub settings: serde_json::Map<String, Value>,
    /// The 1-minute load average when each section started (other work on the machine).
    pub load_average: Vec<(String, f64)>,
    /// Sections that failed, with the whole chain of causes (the other sections still ran).
    pub failures: Vec<(String, String)>,
    /// Sections still to run when the JSON was written (empty once the run ended).
    pub pending: Vec<String>,
}

impl Report {
    pub fn extend(&mut self, rows: impl IntoIterator<Item = Row>) {
        self.rows.extend(rows);
    }

    /// Records the machine's 1-minute load average as `section` starts.
    pub fn note_load(&mut self, section: &str) {
        let load = std::fs::read_to_string("/proc/loadavg")
            .ok()
            .and_then(|text| text.split_whitespace().next()?.parse().ok());
        if let Some(load) = load {
            self.load_average.push((section.to_owned(), load));
        }
    }

    /// The table printed at the end of a run.
    pub fn table(&self) -> String {
        let headers = [
            "operation",
            "unit",
            "streamfold",
            "raw",
            "ratio",
            "target",
            "",
        ];
        let mut lines: Vec<[String; 7]> = Vec::new();
        let mut notes = Vec::new();
        for row in &self.rows {
            let mut status = row.status.label().to_owned();
            let footnote = match &row.status {
                Status::NotAvailable(reason) => Some(reason.clone()),
                _ if !row.note.is_empty() => Some(row.note.clone()),
                _ => None,
            };
            if let Some(text) = footnote {
                notes.push(text);
                let _ = write!(status, " [{}]", notes.len());
            }
            lines.push([
                row.operation.clone(),
                row.unit.to_owned(),
                format_value(row.streamfold),
                match row.raw {
                    Some(_) => format_value(row.raw),
                    None => "-".into(),
                },
                row.ratio().map_or("-".into(), |r| format!("{r:.2}x")),
                row.target.map_or(String::new(), Target::describe),
                status,
            ]);
        }
        let mut widths = headers.map(str::len);
        for line in &lines {
            for (width, cell) in widths.iter_mut().zip(line) {
                *width = (*width).max(cell.chars().count());
            }
        }
        let mut out = String::new();
        if !self.load_average.is_empty() {
            let loads: Vec<String> = self
                .load_average
                .iter()
                .map(|(section, load)| format!("{section} {load:.1}"))
                .collect();
            let _ = writeln!(
                out,
                "load average (1 min) as each section started: {}\n",
                loads.join(", ")
            );
        }
        let mut put = |cells: &[String]| {
            let mut text = String::new();
            for (i, (cell, width)) in cells.iter().zip(widths).enumerate() {
                let pad = width.saturating_sub(cell.chars().count());
                // Numbers right-aligned, words left-aligned.
                if (2..=4).contains(&i) {
                    let _ = write!(text, "{}{cell}  ", " ".repeat(pad));
                } else {
                    let _ = write!(text, "{cell}{}  ", " ".repeat(pad));
                }
            }
            out.push_str(text.trim_end());
            out.push('\n');
        };
        put(&headers.map(str::to_owned));
        put(&widths.map(|w| "-".repeat(w)));
        for line in &lines {
            put(line);
        }
        if !notes.is_empty() {
            out.push('\n');
            for (i, note) in notes.iter().enumerate() {
                let _ = writeln!(out, "[{}] {note}", i + 1);
            }
        }
        let raws: Vec<(&str, &str)> = self
            .rows
            .iter()
            .filter(|r| !r.raw_what.is_empty())
            .map(|r| (r.operation.as_str(), r.raw_what.as_str()))
            .collect();
        if !raws.is_empty() {
            out.push_str("\nraw baselines:\n");
            let mut seen = Vec::new();
            for (_, what) in raws {
                if !seen.contains(&what) {
                    seen.push(what);
                    let _ = writeln!(out, "- {what}");
                }
            }
        }
        out
    }

    /// The run as JSON.
    pub fn to_json(&self, run: &RunInfo) -> Value {
        json!({
            "schema": 1,
            "benchmark": "streamfold",
            "timestamp": run.timestamp,
            "commit": run.commit,
            "dirty": run.dirty,
            "machine": {"cpus": run.cpus},
            "settings": Value::Object(self.settings.clone()),
            "loadAverage1m": self
                .load_average
                .iter()
                .map(|(section, load)| (section.clone(), json!(load)))
                .collect::<serde_json::Map<_, _>>(),
            "rows": self.rows.iter().map(Row::to_json).collect::<Vec<_>>(),
            "failedSections": self
                .failures
                .iter()
                .map(|(section, error)| json!({"section": section, "error": error}))
                .collect::<Vec<_>>(),
            "pendingSections": self.pending,
        })
    }

    /// Records that `section` failed with `error` (printed with its causes).
    pub fn fail(&mut self, section: &str, error: String) {
        self.failures.push((section.to_owned(), error));
    }

    /// The failed sections and their causes, for the end of the printed report.
    pub fn failures_text(&self) -> String {
        let mut out = String::new();
        for (section, error) in &self.failures {
            let _ = writeln!(out, "section {section} FAILED: {error}");
        }
        out
    }

    /// How this run's ratios (or values, for rows without a raw baseline) moved against an
    /// earlier run's JSON.
    pub fn compare_with(&self, baseline: &Value) -> String {
        let mut out = String::new();
        let earlier = baseline["rows"].as_array().cloned().unwrap_or_default();
        let _ = writeln!(
            out,
            "compared with {} ({}):",
            baseline["commit"].as_str().unwrap_or("?"),
            baseline["timestamp"].as_str().unwrap_or("?")
        );
        for row in &self.rows {
            let Some(before) = earlier.iter().find(|r| r["id"] == row.id.as_str()) else {
                continue;
            };
            // Counts compare as counts; measurements with a raw baseline as ratios.
            let ratios = match row.unit {
                "requests" => None,
                _ => row.ratio().zip(before["ratio"].as_f64()),
            };
            let (now, then, what) = match ratios {
                Some((now, then)) => (now, then, "ratio"),
                None => match (row.streamfold, before["streamfold"].as_f64()) {
                    (Some(now), Some(then)) => (now, then, row.unit),
                    _ => continue,
                },
            };
            let change = if then != 0.0 {
                format!("{:+.0}%", (now / then - 1.0) * 100.0)
            } else {
                "-".into()
            };
            let _ = writeln!(
                out,
                "  {:<92} {what:>9}: {} -> {}  ({change})",
                row.operation,
                format_value(Some(then)),
                format_value(Some(now)),
            );
        }
        out
    }
}

/// What identifies a run.
#[derive(Debug, Clone)]
pub struct RunInfo {
    pub timestamp: String,
    pub commit: Option<String>,
    pub dirty: bool,
    pub cpus: usize,
}

/// Writes `value` as pretty JSON to `path`, creating its folder.
pub fn write_json(path: &Path, value: &Value) -> anyhow::Result<()> {
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent)
            .with_context(|| format!("creating {}", parent.display()))?;
    }
    let text = serde_json::to_string_pretty(value)?;
    std::fs::write(path, text + "\n").with_context(|| format!("writing {}", path.display()))
}

fn format_value(value: Option<f64>) -> String {
    match value {
        None => "-".into(),
        Some(v) if v == v.trunc() && v.abs() < 1e9 => format!("{v:.0}"),
        Some(v) if v.abs() >= 100.0 => format!("{v:.0}"),
        Some(v) if v.abs() >= 10.0 => format!("{v:.1}"),
        Some(v) => format!("{v:.2}"),
    }
}

fn trim_number(value: f64) -> String {
    format_value(Some(value))
}

/// Latency samples and their percentiles.
#[derive(Debug, Clone, Default)]
pub struct Samples {
    durations: Vec<Duration>,
}

impl Samples {
    pub fn with_capacity(n: usize) -> Self {
        Self {
            durations: Vec::with_capacity(n),
        }
    }

    pub fn push(&mut self, d: Duration) {
        self.durations.push(d);
    }

    pub fn len(&self) -> usize {
        self.durations.len()
    }

    /// The nearest-rank percentile `p` (0 < p ≤ 100) in milliseconds; `None` without samples.
    pub fn percentile_ms(&self, p: f64) -> Option<f64> {
        if self.durations.is_empty() {
            return None;
        }
        let mut sorted = self.durations.clone();
        sorted.sort_unstable();
        let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
        let index = rank.clamp(1, sorted.len()) - 1;
        Some(sorted[index].as_secs_f64() * 1000.0)
    }

    /// The median in milliseconds.
    pub fn median_ms(&self) -> Option<f64> {
        self.percentile_ms(50.0)
    }

    /// The mean in milliseconds; `None` without samples.
    pub fn mean_ms(&self) -> Option<f64> {
        let total: Duration = self.durations.iter().sum();
        let count = u32::try_from(self.durations.len())
            .ok()
            .filter(|&n| n > 0)?;
        Some((total / count).as_secs_f64() * 1000.0)
    }
}
