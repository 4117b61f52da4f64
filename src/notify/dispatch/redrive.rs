//! Dead letters again: listing them, and publishing them again from their stored events.
//!
//! A letter the sink accepts is forgotten; one it refuses again is kept with the new reason and
//! time; a letter whose event cannot be read is kept and counted. Nothing is attempted while
//! the sink is paused, and a re-drive stops at the first failure of the sink itself.

use serde::Serialize;
use uuid::Uuid;

use super::{DispatchError, Dispatcher};
use crate::notify::notification::Notification;
use crate::stream::{DeadLetter, DeadLetterPage, ReadRequest, StoreError};

/// What one re-drive of dead letters did.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RedriveReport {
    /// Letters published, and forgotten.
    pub redriven: usize,
    /// Letters the sink refused again (kept, with the new reason and time).
    pub refused: usize,
    /// Letters that could not be re-driven (their event could not be read): kept.
    pub failed: usize,
    /// Letters not attempted: the sink stopped publishing, or more letters than the limit.
    pub remaining: usize,
    /// Rows of the dead letters that could not be read.
    pub unreadable: usize,
    /// Why publishing stopped, when it did.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stopped: Option<String>,
}

impl RedriveReport {
    /// Adds the counts of `other` (the first stop reason is kept).
    pub fn add(&mut self, other: &RedriveReport) {
        self.redriven += other.redriven;
        self.refused += other.refused;
        self.failed += other.failed;
        self.remaining += other.remaining;
        self.unreadable += other.unreadable;
        if self.stopped.is_none() {
            self.stopped.clone_from(&other.stopped);
        }
    }
}

impl Dispatcher {
    /// Up to `limit` dead letters of this backend with an id after `after`, in id order.
    pub async fn dead_letters(
        &self,
        after: Option<Uuid>,
        limit: usize,
    ) -> Result<DeadLetterPage, DispatchError> {
        self.dead_letters
            .list(after, limit)
            .await
            .map_err(DispatchError::DeadLetters)
    }

    /// Publishes dead letters again: those of `ids` that are this backend's (the others are
    /// not found here and ignored), or when `ids` is `None` up to `limit` of them in id order.
    /// A letter the sink accepts is forgotten; one it refuses again is kept with the new reason.
    /// Stops at the first failure of the sink itself (unavailable, key refused). Returns the
    /// report and the ids of `ids` found here.
    pub async fn redrive(
        &self,
        ids: Option<&[Uuid]>,
        limit: usize,
    ) -> Result<(RedriveReport, Vec<Uuid>), DispatchError> {
        let mut report = RedriveReport::default();
        let mut letters = Vec::new();
        match ids {
            Some(ids) => {
                for id in ids {
                    let letter = self
                        .dead_letters
                        .get(*id)
                        .await
                        .map_err(DispatchError::DeadLetters)?;
                    letters.extend(letter);
                }
            }
            None => {
                let page = self.dead_letters(None, limit).await?;
                report.unreadable = page.unreadable.len();
                if page.next.is_some() {
                    // At least one more than the page: the exact count would need a scan.
                    report.remaining = 1;
                }
                letters = page.letters;
            }
        }
        let found: Vec<Uuid> = letters.iter().map(|l| l.id).collect();
        if let Some(reason) = self.sink.paused() {
            report.remaining += letters.len();
            report.stopped = Some(reason);
            return Ok((report, found));
        }
        let total = letters.len();
        for (done, letter) in letters.into_iter().enumerate() {
            match self.redrive_one(&letter).await {
                Ok(Redriven::Published) => report.redriven += 1,
                Ok(Redriven::Refused) => report.refused += 1,
                Ok(Redriven::Failed) => report.failed += 1,
                Err(error) if error.is_sink_unavailable() => {
                    report.remaining += total - done;
                    report.stopped = Some(error.to_string());
                    break;
                }
                Err(error) => return Err(error),
            }
        }
        tracing::info!(backend = %self.name, redriven = report.redriven, refused = report.refused,
            failed = report.failed, remaining = report.remaining, "dead letters re-driven");
        Ok((report, found))
    }

    async fn redrive_one(&self, letter: &DeadLetter) -> Result<Redriven, DispatchError> {
        let stream = match letter.stream() {
            Ok(stream) => stream,
            Err(error) => {
                tracing::warn!(backend = %self.name, id = %letter.id, %error,
                    "dead letter of no stream: kept");
                return Ok(Redriven::Failed);
            }
        };
        let store_error = |source| DispatchError::Store {
            stream: stream.to_string(),
            source,
        };
        let sequence = letter.sequence_number;
        let slice = match self
            .store
            .read(&stream, ReadRequest::range(sequence, Some(sequence)))
            .await
        {
            Ok(slice) => slice,
            Err(error @ StoreError::Unavailable { .. }) => return Err(store_error(error)),
            Err(error) => {
                tracing::warn!(backend = %self.name, id = %letter.id, stream = %stream,
                    %error, "dead letter whose event cannot be read: kept");
                return Ok(Redriven::Failed);
            }
        };
        let Some(event) = slice.events.iter().find(|e| e.sequence == sequence) else {
            tracing::warn!(backend = %self.name, id = %letter.id, stream = %stream, sequence,
                "dead letter of an event the stream does not have: kept");
            return Ok(Redriven::Failed);
        };
        let notification = Notification::build(letter.notification_kind, &stream, event);
        match self.sink.publish(std::slice::from_ref(&notification)).await {
            Ok(()) => {
                self.dead_letters
                    .remove(letter.id)
                    .await
                    .map_err(store_error)?;
                Ok(Redriven::Published)
            }
            Err(error) if error.refused().is_some() => {
                let again = DeadLetter::new(&notification, &error);
                tracing::warn!(backend = %self.name, id = %letter.id, stream = %stream,
                    status = ?again.status, reason = %again.reason,
                    "dead letter refused again: kept");
                self.dead_letters.put(&again).await.map_err(store_error)?;
                Ok(Redriven::Refused)
            }
            Err(source) => Err(DispatchError::Publish {
                stream: stream.to_string(),
                source,
            }),
        }
    }
}

/// What re-driving one dead letter came to.
enum Redriven {
    Published,
    Refused,
    Failed,
}
