//! One stream's dispatch: publish what its outbox says is pending, then move its notified mark.
//!
//! Guarantees:
//! - **Publish before marking.** Notifications for events `(notified, version]` are published
//!   through the [`NotificationSink`](crate::notify::NotificationSink) first; the mark moves only
//!   after the sink accepted all of them (or each one it refused for good is a dead letter, below).
//!   A crash, a failed publish or a failed mark in between leaves the stream pending, and a later
//!   dispatch publishes the same notifications again (same ids: receivers drop duplicates). Nothing
//!   is ever marked that was not published or dead-lettered, so delivery is at-least-once, never
//!   at-most-once.
//! - **A refused notification never blocks its stream.** When the sink refuses some notifications
//!   for good ([`PublishError::refused`]: a 4xx other than 401, 403, 408 and 429, 413 included),
//!   the refused request is split in halves and each half published on its own, down to the single
//!   notification that is refused; that one is written to the
//!   [`DeadLetterStore`](crate::stream::DeadLetterStore) with the status, the topic's error text
//!   and the time, and the stream's later notifications go on. The count is in
//!   [`DispatchOutcome::dead_lettered`] and the sweep's report, and each letter is logged.
//!   [`Dispatcher::redrive`](super::Dispatcher::redrive) publishes dead letters again (rebuilt from
//!   the stored events) and forgets those the topic accepts.
//! - **The mark never hides newer events.** The mark is moved with the outbox's concurrency token
//!   ([`Outbox::mark_notified`](crate::stream::Outbox::mark_notified)); when it changed (a
//!   concurrent append on Table storage, or another dispatcher), the stream is read again and the
//!   events it does not know were published are published before it tries again
//!   ([`MAX_MARK_ROUNDS`] times). A stream that keeps moving on under its dispatch is *busy*, not
//!   failed: everything the dispatch saw was published, and the appends that moved it on start
//!   dispatches of their own (or the next sweep takes them).
//! - **Bounded memory.** Events are read and published [`READ_CHUNK_EVENTS`] at a time, however
//!   long the stream was pending.

use std::ops::Range;

use serde::Serialize;

use super::{DispatchError, Dispatcher};
use crate::notify::notification::Notification;
use crate::notify::publisher::PublishError;
use crate::notify::raise::notifications_for;
use crate::stream::{DeadLetter, PendingStream, ReadRequest, StoreError, StreamId};

/// Events read (and their notifications published) at a time.
pub const READ_CHUNK_EVENTS: u64 = 500;
/// Times one dispatch re-reads a stream whose mark moved under it before leaving it pending.
pub const MAX_MARK_ROUNDS: usize = 3;

/// What one dispatch did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct DispatchOutcome {
    /// Notifications the sink accepted.
    pub published: usize,
    /// Notifications the sink refused for good, now dead letters.
    pub dead_lettered: usize,
    /// Whether the mark now covers every event seen pending (false: the stream kept moving on
    /// while it was dispatched, and is left pending for the dispatch of its newer events).
    pub marked: bool,
}

/// What publishing a list of notifications came to.
#[derive(Debug, Clone, Copy, Default)]
struct Delivered {
    published: usize,
    dead_lettered: usize,
}

impl Dispatcher {
    /// Publishes what is pending for `stream` (nothing when nothing is).
    pub async fn dispatch(&self, stream: &StreamId) -> Result<DispatchOutcome, DispatchError> {
        match self.read_pending(stream).await? {
            Some(pending) => self.drain(pending).await,
            None => Ok(DispatchOutcome {
                marked: true,
                ..DispatchOutcome::default()
            }),
        }
    }

    pub(super) async fn read_pending(
        &self,
        stream: &StreamId,
    ) -> Result<Option<PendingStream>, DispatchError> {
        self.outbox
            .pending_for(stream)
            .await
            .map_err(|source| DispatchError::Store {
                stream: stream.to_string(),
                source,
            })
    }

    /// Publishes `pending` and marks it, re-reading when the mark moved (see the module
    /// documentation).
    pub(super) async fn drain(
        &self,
        mut pending: PendingStream,
    ) -> Result<DispatchOutcome, DispatchError> {
        let stream = pending.stream.clone();
        let store_error = |source| DispatchError::Store {
            stream: stream.to_string(),
            source,
        };
        // Events up to here are published (by this call, or before it).
        let mut published_to = pending.notified;
        let mut outcome = DispatchOutcome::default();
        for _ in 0..MAX_MARK_ROUNDS {
            let from = published_to.max(pending.notified);
            if pending.version > from {
                let delivered = self.publish_range(&stream, from, pending.version).await?;
                outcome.published += delivered.published;
                outcome.dead_lettered += delivered.dead_lettered;
                published_to = pending.version;
            }
            if self
                .outbox
                .mark_notified(&pending)
                .await
                .map_err(store_error)?
            {
                outcome.marked = true;
                return Ok(outcome);
            }
            match self.read_pending(&stream).await? {
                Some(again) => pending = again,
                None => {
                    outcome.marked = true;
                    return Ok(outcome);
                }
            }
        }
        Ok(outcome)
    }

    /// Publishes the notifications of events `(after, to]`.
    async fn publish_range(
        &self,
        stream: &StreamId,
        after: u64,
        to: u64,
    ) -> Result<Delivered, DispatchError> {
        // Only the first event raises anything when per-event notifications are off.
        let to = if self.raise.event { to } else { to.min(1) };
        let mut delivered = Delivered::default();
        let mut next = after.saturating_add(1);
        while next <= to {
            let end = to.min(next.saturating_add(READ_CHUNK_EVENTS - 1));
            let slice = self
                .store
                .read(stream, ReadRequest::range(next, Some(end)))
                .await
                .map_err(|source| DispatchError::Store {
                    stream: stream.to_string(),
                    source,
                })?;
            let expected = end - next + 1;
            if slice.events.len() as u64 != expected {
                return Err(DispatchError::Store {
                    stream: stream.to_string(),
                    source: StoreError::Corrupt {
                        stream: stream.to_string(),
                        detail: format!(
                            "the outbox says events {next}..={end} are pending, but {} of them \
                             were read (stream version {})",
                            slice.events.len(),
                            slice.version
                        ),
                    },
                });
            }
            let notifications = notifications_for(stream, &slice.events, self.raise);
            let chunk = self.deliver(stream, &notifications).await?;
            delivered.published += chunk.published;
            delivered.dead_lettered += chunk.dead_lettered;
            next = end.saturating_add(1);
        }
        Ok(delivered)
    }

    /// Publishes `notifications` in order, dead-lettering each one the sink refuses for good
    /// (found by splitting the refused request in halves, see the module documentation).
    async fn deliver(
        &self,
        stream: &StreamId,
        notifications: &[Notification],
    ) -> Result<Delivered, DispatchError> {
        let mut delivered = Delivered::default();
        // Ranges still to publish; the next one is last.
        let mut todo: Vec<Range<usize>> = Vec::new();
        todo.push(0..notifications.len());
        while let Some(range) = todo.pop() {
            let Some(slice) = notifications.get(range.clone()).filter(|s| !s.is_empty()) else {
                continue;
            };
            let error = match self.sink.publish(slice).await {
                Ok(()) => {
                    delivered.published += slice.len();
                    continue;
                }
                Err(error) => error,
            };
            // The refused part, as indexes into `notifications`, when it lies within the range.
            let refused = error
                .refused()
                .map(|r| (range.start + r.start)..(range.start + r.end))
                .filter(|r| !r.is_empty() && r.end <= range.end);
            let Some(refused) = refused else {
                return Err(DispatchError::Publish {
                    stream: stream.to_string(),
                    source: error,
                });
            };
            let accepted = error.published().min(refused.start - range.start);
            delivered.published += accepted;
            // In the order they are to be published (pushed in reverse): what was not sent
            // before the refused part, the refused part (halved, or one notification that is
            // dead-lettered), and the rest.
            todo.push(refused.end..range.end);
            if refused.len() == 1 {
                if let Some(notification) = notifications.get(refused.start) {
                    self.dead_letter(stream, notification, &error).await?;
                    delivered.dead_lettered += 1;
                }
            } else {
                let middle = refused.start + refused.len() / 2;
                todo.push(middle..refused.end);
                todo.push(refused.start..middle);
            }
            todo.push((range.start + accepted)..refused.start);
        }
        Ok(delivered)
    }

    async fn dead_letter(
        &self,
        stream: &StreamId,
        notification: &Notification,
        error: &PublishError,
    ) -> Result<(), DispatchError> {
        let letter = DeadLetter::new(notification, error);
        tracing::warn!(backend = %self.name, stream = %stream,
            sequence = letter.sequence_number, id = %letter.id, status = ?letter.status,
            reason = %letter.reason,
            "notification refused for good by the topic: dead-lettered, the stream goes on");
        self.dead_letters
            .put(&letter)
            .await
            .map_err(|source| DispatchError::Store {
                stream: stream.to_string(),
                source,
            })
    }
}
