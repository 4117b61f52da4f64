//! Why a publish did not deliver every notification, in terms a caller can act on: how many
//! went through, whether trying again later can help, which ones were refused for good.
//! Part of the [`super::NotificationSink`] contract, so it lives with it in the core: every
//! sink (the Event Grid publisher in `crate::notify`, test sinks) shares it without depending
//! on the publisher.

use std::ops::Range;
use std::time::Duration;

use uuid::Uuid;

use super::notification::MAX_EVENT_BYTES;

/// Why notifications were not all published.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PublishError {
    /// A notification cannot fit in one request; nothing was sent.
    #[error("notification {id} (index {index}) is {bytes} bytes, over the {MAX_EVENT_BYTES}-byte limit of one request")]
    EventTooLarge {
        index: usize,
        id: Uuid,
        bytes: usize,
    },
    /// A notification could not be encoded; nothing was sent.
    #[error("notification {id} (index {index}) could not be encoded: {reason}")]
    Encode {
        index: usize,
        id: Uuid,
        reason: String,
    },
    /// A 4xx other than 401, 403, 408 and 429 (400, 404, 413, ...): the receiver refused the
    /// request holding `batch`, for good.
    #[error("{endpoint} refused notifications {batch:?} with {status}: {body}")]
    Rejected {
        status: u16,
        body: String,
        endpoint: String,
        batch: Range<usize>,
    },
    /// 401 or 403: the key is wrong (rotated, say) or lacks access; publishing pauses.
    #[error("{endpoint} refused the key with {status} (check the topic key setting): {body}")]
    Unauthorized {
        status: u16,
        body: String,
        endpoint: String,
        batch: Range<usize>,
    },
    /// Nothing was sent: publishing is paused since the topic refused the key.
    #[error(
        "publishing to {endpoint} is paused for another {}s: the topic refused the key with \
         {status}: {body}",
        remaining.as_secs()
    )]
    Paused {
        status: u16,
        body: String,
        endpoint: String,
        remaining: Duration,
        batch: Range<usize>,
    },
    /// Every attempt failed with a transient error (5xx, 408, 429, timeout, connection).
    #[error("{endpoint} unavailable after {attempts} attempt(s): {last}")]
    Unavailable {
        attempts: u32,
        last: String,
        endpoint: String,
        batch: Range<usize>,
    },
    /// The HTTP client could not be built.
    #[error("could not build the HTTP client: {0}")]
    Client(String),
}

impl PublishError {
    /// How many notifications, from the start of the slice given, were accepted before the
    /// failure.
    pub fn published(&self) -> usize {
        match self {
            Self::Rejected { batch, .. }
            | Self::Unauthorized { batch, .. }
            | Self::Paused { batch, .. }
            | Self::Unavailable { batch, .. } => batch.start,
            _ => 0,
        }
    }

    /// True when trying again later may succeed (the receiver was unavailable).
    pub fn is_transient(&self) -> bool {
        matches!(self, Self::Unavailable { .. })
    }

    /// True when no notification can be published for now, whatever it holds: the receiver
    /// is unavailable or refuses the key. Callers stop publishing and leave the rest pending.
    pub fn stops_publishing(&self) -> bool {
        matches!(
            self,
            Self::Unavailable { .. }
                | Self::Unauthorized { .. }
                | Self::Paused { .. }
                | Self::Client(_)
        )
    }

    /// The notifications (indexes into the slice given) refused for good, when that is what
    /// happened: the request the receiver refused, or the one notification that cannot be sent
    /// at all. Those before `published()` were accepted; the others were not sent.
    pub fn refused(&self) -> Option<Range<usize>> {
        match self {
            Self::Rejected { batch, .. } => Some(batch.clone()),
            Self::EventTooLarge { index, .. } | Self::Encode { index, .. } => {
                Some(*index..index.saturating_add(1))
            }
            _ => None,
        }
    }

    /// The receiver's status of a refusal (none when nothing was sent).
    pub fn status(&self) -> Option<u16> {
        match self {
            Self::Rejected { status, .. }
            | Self::Unauthorized { status, .. }
            | Self::Paused { status, .. } => Some(*status),
            _ => None,
        }
    }
}
