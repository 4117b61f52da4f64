//! Event Grid notifications: "a stream was created" and "an event was appended", published
//! to an Event Grid custom topic (or, locally, straight to the Functions host's Event Grid
//! webhook) so Event Grid-triggered functions (the Projector) can react.
//!
//! What this module guarantees, and what it leaves to its callers:
//! - notifications are deterministic: the same stored event always gives the same
//!   notification, id included ([`notification`]), so redelivery and republishing are safe and
//!   receivers deduplicate by id; each one fits in one Event Grid event ([`raise`]);
//! - both Event Grid schemas are written by hand-made serde types ([`schema`]), and read back
//!   by [`Notification::from_event_slice`];
//! - publishing respects Event Grid's limits, retries only what can succeed later, and pauses
//!   while the topic refuses the key ([`publisher`]);
//! - settings are checked at start-up and the key never shows ([`settings`]);
//! - every acknowledged append is notified at least once ([`dispatch`]): the backends record
//!   pending notifications atomically with the events (their outbox, see
//!   [`crate::stream::Outbox`]), and the dispatcher publishes them into a [`NotificationSink`]
//!   before it moves the notified mark — right after each append ([`notifying_store`]), and
//!   from the `NotificationSweep` timer function for whatever is left;
//! - no notification blocks the ones after it: one the topic refuses for good becomes a dead
//!   letter ([`deadletter`]) that an operator can list and re-drive (the store's contract is the
//!   core's, [`DeadLetterStore`]; its adapters are in `crate::storage`);
//! - the notifications a process received lately are kept in a small log for people to watch
//!   ([`recent`]; one process's view, never a source of truth).

pub mod deadletter;
pub mod dispatch;
pub mod notifying_store;
pub mod publisher;
pub mod raise;
pub mod recent;
pub mod retry;
pub mod schema;
pub mod settings;

// The notification's shape and the sink contract are the core's (`crate::stream`, beside the
// other contracts); these paths name them here too, where they are raised and published.
pub use crate::stream::{notification, sink};
pub use crate::stream::{DeadLetter, DeadLetterPage, DeadLetterStore};
pub use crate::stream::{NotificationSink, PublishError};
pub use deadletter::MAX_REASON_CHARS;
pub use dispatch::{Dispatcher, RedriveReport, SweepReport, DEFAULT_SWEEP_LIMIT};
pub use notification::{
    notification_id, subject, Notification, NotificationData, NotificationKind, MAX_EVENT_BYTES,
    NOTIFICATION_NAMESPACE,
};
pub use notifying_store::NotifyingStore;
pub use publisher::{plan_batches, Publisher, MAX_EVENTS_PER_REQUEST, MAX_REQUEST_BYTES};
pub use raise::{notifications_for, RaiseSwitches};
pub use recent::{RecentNotification, RecentNotifications, RecentPage};
pub use retry::RetryPolicy;
pub use schema::{DecodeError, NotificationSchema};
pub use settings::{NotificationSettings, NotificationTarget, SettingError, TopicKey};
