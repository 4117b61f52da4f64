//! `streamfold notifications list|redrive|purge`: the notifications still pending in each
//! backend's outbox and those the topic refused for good (dead letters), through the same
//! dispatchers the handler runs (`crate::notify::Dispatcher`): `redrive` publishes dead
//! letters again from their stored events (or, with `--pending`, sweeps the outboxes as
//! `NotificationSweep` does); `purge` forgets dead letters, or marks pending notifications as
//! notified without publishing them — for a subscriber that will never want them. Purging
//! everything asks for `--all`. Output is NDJSON on stdout, one line per item or report.

use std::sync::Arc;

use serde_json::{json, Value};
use uuid::Uuid;

use super::{OpsError, EXIT_OK, EXIT_PROBLEMS};
use crate::app::App;
use crate::notify::{Dispatcher, RedriveReport, SweepReport};
use crate::stream::StreamId;

/// Dead letters read per page.
pub const DEAD_LETTER_PAGE: usize = 100;

/// Which notifications a command is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Which {
    Pending,
    Dead,
    Both,
}

fn dispatchers(app: &App) -> Result<&[Arc<Dispatcher>], OpsError> {
    match app.dispatchers() {
        [] => Err(OpsError::Settings(
            "notifications are off in these settings (no topic, or both Raise... settings \
             false): there is no outbox or dead-letter store to work on"
                .to_owned(),
        )),
        dispatchers => Ok(dispatchers),
    }
}

fn print(value: &Value) {
    println!("{value}");
}

/// `notifications list`.
pub async fn list(app: &App, which: Which, limit: usize) -> Result<u8, OpsError> {
    let mut pending_count = 0usize;
    let mut dead_count = 0usize;
    for dispatcher in dispatchers(app)? {
        let backend = dispatcher.name();
        if which != Which::Dead {
            let scan = dispatcher.outbox().pending(None, limit).await?;
            for pending in &scan.streams {
                pending_count += 1;
                print(&json!({
                    "backend": backend, "state": "pending", "stream": pending.stream.to_string(),
                    "notified": pending.notified, "version": pending.version,
                }));
            }
            for entry in &scan.unreadable {
                print(
                    &json!({"backend": backend, "state": "unreadable", "key": entry.key,
                    "detail": entry.detail}),
                );
            }
        }
        if which != Which::Pending {
            let mut after = None;
            loop {
                let page = dispatcher.dead_letters(after, DEAD_LETTER_PAGE).await?;
                for letter in &page.letters {
                    dead_count += 1;
                    let mut line = serde_json::to_value(letter)
                        .map_err(|e| OpsError::Output(e.to_string()))?;
                    if let Value::Object(fields) = &mut line {
                        fields.insert("backend".into(), json!(backend));
                        fields.insert("state".into(), json!("deadLettered"));
                    }
                    print(&line);
                }
                match page.next {
                    Some(next) => after = Some(next),
                    None => break,
                }
            }
        }
    }
    eprintln!("{pending_count} pending stream(s), {dead_count} dead letter(s)");
    Ok(EXIT_OK)
}

/// `notifications redrive`: dead letters (all, or `ids`), or with `pending` the outboxes.
pub async fn redrive(app: &App, ids: &[Uuid], pending: bool, limit: usize) -> Result<u8, OpsError> {
    let mut ok = true;
    for dispatcher in dispatchers(app)? {
        let backend = dispatcher.name();
        if pending {
            let report: SweepReport = dispatcher.sweep(limit).await?;
            ok &= report.failed == 0 && report.skipped == 0 && report.paused.is_none();
            print(&json!({"backend": backend, "sweep": report}));
        } else {
            let wanted = (!ids.is_empty()).then_some(ids);
            let (report, _found): (RedriveReport, _) = dispatcher.redrive(wanted, limit).await?;
            ok &= report.refused == 0
                && report.failed == 0
                && report.remaining == 0
                && report.stopped.is_none();
            print(&json!({"backend": backend, "redrive": report}));
        }
    }
    Ok(if ok { EXIT_OK } else { EXIT_PROBLEMS })
}

/// `notifications purge --dead`: forgets dead letters (`ids`, or every one with `all`).
pub async fn purge_dead(app: &App, ids: &[Uuid], all: bool) -> Result<u8, OpsError> {
    if ids.is_empty() && !all {
        return Err(OpsError::Usage(
            "name the dead letters to purge (--id ID ...), or purge them all with --all".into(),
        ));
    }
    let mut purged = 0usize;
    for dispatcher in dispatchers(app)? {
        let store = dispatcher.dead_letter_store();
        let mut chosen: Vec<Uuid> = Vec::new();
        if all {
            let mut after = None;
            loop {
                let page = dispatcher.dead_letters(after, DEAD_LETTER_PAGE).await?;
                chosen.extend(page.letters.iter().map(|l| l.id));
                match page.next {
                    Some(next) => after = Some(next),
                    None => break,
                }
            }
        } else {
            for id in ids {
                if store.get(*id).await?.is_some() {
                    chosen.push(*id);
                }
            }
        }
        for id in chosen {
            store.remove(id).await?;
            purged += 1;
            print(&json!({"backend": dispatcher.name(), "purged": id, "state": "deadLettered"}));
        }
    }
    eprintln!("{purged} dead letter(s) purged");
    Ok(EXIT_OK)
}

/// `notifications purge --pending`: marks the pending notifications of `streams` (or of every
/// stream, up to `limit`, with `all`) as notified, publishing nothing.
pub async fn purge_pending(
    app: &App,
    streams: &[StreamId],
    all: bool,
    limit: usize,
) -> Result<u8, OpsError> {
    if streams.is_empty() && !all {
        return Err(OpsError::Usage(
            "name the streams whose pending notifications to purge (--stream D/E/I ...), or \
             purge them all with --all"
                .into(),
        ));
    }
    let mut purged = 0usize;
    let mut moved = 0usize;
    for dispatcher in dispatchers(app)? {
        let outbox = dispatcher.outbox();
        let mut found = Vec::new();
        if all {
            found = outbox.pending(None, limit).await?.streams;
        } else {
            for stream in streams {
                found.extend(outbox.pending_for(stream).await?);
            }
        }
        for pending in found {
            if outbox.mark_notified(&pending).await? {
                purged += 1;
                print(
                    &json!({"backend": dispatcher.name(), "purged": pending.stream.to_string(),
                    "state": "pending", "notified": pending.version}),
                );
            } else {
                moved += 1;
                eprintln!(
                    "{}: moved on while purged (a new append); left pending",
                    pending.stream
                );
            }
        }
    }
    eprintln!("{purged} stream(s) purged of pending notifications");
    Ok(if moved == 0 { EXIT_OK } else { EXIT_PROBLEMS })
}
