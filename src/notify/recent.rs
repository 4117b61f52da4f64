//! The notifications this process received lately, for people watching (the web front end's
//! live view): a bounded log in memory, in arrival order, each entry with a position that only
//! grows, so a reader asks for "everything after position N" and never sees one twice.
//!
//! What it guarantees: at most [`RECENT_CAPACITY`] entries are kept (the oldest go first), a
//! notification id is logged once however often Event Grid delivers it while it is still in
//! the log, and a reader that fell behind by more than the capacity is told so (`missed`). What
//! it does not: it is one process's view (every instance of a scaled-out app logs what Event
//! Grid delivered to it) and it is empty after a restart. It is a window for watching, never a
//! source of truth; the streams and read models are.

use std::collections::VecDeque;
use std::sync::Mutex;

use serde::Serialize;
use time::OffsetDateTime;
use uuid::Uuid;

use super::Notification;

/// Entries kept.
pub const RECENT_CAPACITY: usize = 200;
/// Most entries one read returns.
pub const RECENT_PAGE: usize = 100;

/// One received notification, as the live view shows it.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RecentNotification {
    /// This entry's position in the log (1, 2, ...).
    pub position: u64,
    pub id: Uuid,
    /// `{Domain}.{Entity}.NewEntity` or `{Domain}.{Entity}.{EventType}`.
    pub event_type: String,
    pub domain: String,
    pub entity: String,
    pub instance: String,
    pub sequence_number: u64,
    /// When the event was appended.
    #[serde(with = "time::serde::rfc3339")]
    pub time: OffsetDateTime,
    /// When this process received it.
    #[serde(with = "time::serde::rfc3339")]
    pub received: OffsetDateTime,
}

/// A read of the log.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RecentPage {
    pub notifications: Vec<RecentNotification>,
    /// Pass as `after` next time.
    pub last_position: u64,
    /// Entries after the asked position that left the log before this read.
    pub missed: u64,
}

#[derive(Default)]
struct Log {
    entries: VecDeque<RecentNotification>,
    last_position: u64,
}

/// The log (one per app; see [`crate::app::App::recent_notifications`]).
#[derive(Default)]
pub struct RecentNotifications {
    log: Mutex<Log>,
}

impl RecentNotifications {
    pub fn new() -> Self {
        Self::default()
    }

    /// Logs a received notification, unless the log holds it already.
    pub fn record(&self, notification: &Notification) {
        let Ok(mut log) = self.log.lock() else {
            return;
        };
        if log.entries.iter().any(|e| e.id == notification.id) {
            return;
        }
        log.last_position = log.last_position.saturating_add(1);
        let data = &notification.data;
        let entry = RecentNotification {
            position: log.last_position,
            id: notification.id,
            event_type: notification.event_type.clone(),
            domain: data.domain.clone(),
            entity: data.entity.clone(),
            instance: data.instance.clone(),
            sequence_number: data.sequence_number,
            time: notification.time,
            received: OffsetDateTime::now_utc(),
        };
        log.entries.push_back(entry);
        while log.entries.len() > RECENT_CAPACITY {
            log.entries.pop_front();
        }
    }

    /// The entries after position `after`, oldest first, at most [`RECENT_PAGE`].
    pub fn after(&self, after: u64) -> RecentPage {
        let Ok(log) = self.log.lock() else {
            return RecentPage {
                notifications: Vec::new(),
                last_position: after,
                missed: 0,
            };
        };
        let first_kept = log
            .entries
            .front()
            .map_or(log.last_position.saturating_add(1), |e| e.position);
        let missed = first_kept.saturating_sub(after.saturating_add(1));
        let notifications: Vec<RecentNotification> = log
            .entries
            .iter()
            .filter(|e| e.position > after)
            .take(RECENT_PAGE)
            .cloned()
            .collect();
        let last_position = notifications.last().map_or(
            after
                .max(first_kept.saturating_sub(1))
                .min(log.last_position),
            |e| e.position,
        );
        RecentPage {
            notifications,
            last_position,
            missed,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::notify::{notifications_for, NotificationKind, RaiseSwitches};
    use crate::stream::{EventMetadata, RecordedEvent, StreamId};

    fn notification(sequence: u64) -> Notification {
        let stream = StreamId::new("Bank", "Account", "ACC-1").unwrap();
        let event = RecordedEvent {
            event_id: Uuid::new_v4(),
            event_type: "MoneyDeposited".into(),
            sequence,
            data: serde_json::value::to_raw_value(&serde_json::json!({"amount": "1.00"})).unwrap(),
            metadata: EventMetadata::default(),
            timestamp: OffsetDateTime::now_utc(),
        };
        let all = notifications_for(&stream, std::slice::from_ref(&event), RaiseSwitches::ALL);
        all.into_iter()
            .find(|n| n.data.notification_kind == NotificationKind::NewEvent)
            .unwrap()
    }

    #[test]
    fn a_reader_gets_each_entry_once_in_order_and_duplicates_are_logged_once() {
        let log = RecentNotifications::new();
        let (a, b) = (notification(1), notification(2));
        log.record(&a);
        log.record(&a);
        log.record(&b);
        let page = log.after(0);
        let sequences: Vec<u64> = page
            .notifications
            .iter()
            .map(|n| n.sequence_number)
            .collect();
        assert_eq!(sequences, [1, 2]);
        assert_eq!(page.last_position, 2);
        assert_eq!(page.missed, 0);
        assert!(log.after(2).notifications.is_empty());
        assert_eq!(log.after(2).last_position, 2);
    }

    #[test]
    fn the_log_is_bounded_and_a_late_reader_is_told_what_it_missed() {
        let log = RecentNotifications::new();
        let total = RECENT_CAPACITY as u64 + 10;
        for sequence in 1..=total {
            log.record(&notification(sequence));
        }
        let page = log.after(0);
        assert_eq!(page.missed, 10);
        assert_eq!(page.notifications.len(), RECENT_PAGE);
        assert_eq!(page.notifications[0].position, 11);
        let rest = log.after(page.last_position);
        assert_eq!(rest.missed, 0);
        assert_eq!(rest.last_position, total);
    }
}
