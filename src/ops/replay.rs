//! `streamfold replay <category|stream> (--from-sequence N | --from-time T)
//! (--to-topic <endpoint> | --to-webhook <url>)`: publishes again the notifications of history
//! so that a system that subscribes today can catch up. They are the notifications the app
//! raises (`crate::notify::notifications_for`: `NewEntity` with the first event and one per
//! event), with the same ids (receivers deduplicate), in the app's schema
//! (`NotificationSchema`), through the app's publisher (`crate::notify::Publisher`: Event
//! Grid's batch limits, retries). To a topic, with the key of the settings
//! (`EventGridKeyValue`), of the setting `--topic-key-setting` names, or as the managed
//! identity when there is none; to a webhook, as a Functions host's Event Grid webhook takes
//! them (`aeg-event-type: Notification`). Streams go in listing order, each in sequence order;
//! the checkpoint after each stream makes an interrupted replay resumable, and a stream cut
//! short by the interruption is sent again whole (at least once, as Event Grid delivers).

use std::collections::HashMap;

use futures::FutureExt;
use reqwest::Url;
use time::OffsetDateTime;

use super::category::{over_category, RunOptions, StreamOutcome};
use super::names::Target;
use super::{OpsError, EXIT_INTERRUPTED, EXIT_OK};
use crate::app::App;
use crate::notify::settings::{
    KEY_SETTING_NAME_SETTING, KEY_VALUE_SETTING, RAISE_ENTITY_CREATION_SETTING,
    RAISE_EVENT_SETTING, TOPIC_ENDPOINT_SETTING,
};
use crate::notify::{
    notifications_for, NotificationSettings, NotificationTarget, Publisher, RaiseSwitches,
};
use crate::stream::{EventStore, ReadRequest, StreamId};

/// Events read (and their notifications published) per request.
pub const REPLAY_PAGE: u64 = 500;

/// Where a replay starts in each stream.
#[derive(Debug, Clone, Copy)]
pub enum From {
    Sequence(u64),
    Time(OffsetDateTime),
}

/// Where replayed notifications go.
#[derive(Debug, Clone)]
pub enum Destination {
    Topic {
        endpoint: Url,
        key_setting: Option<String>,
    },
    Webhook(Url),
}

/// The publisher to `destination`, in the schema of the settings `pairs`.
pub fn publisher(
    pairs: &HashMap<String, String>,
    destination: &Destination,
) -> Result<Publisher, OpsError> {
    let mut pairs = pairs.clone();
    // Whatever the app raises, a replay has somewhere to send to.
    pairs.insert(RAISE_EVENT_SETTING.into(), "true".into());
    pairs.insert(RAISE_ENTITY_CREATION_SETTING.into(), "true".into());
    let target = match destination {
        Destination::Webhook(url) => NotificationTarget::LocalWebhook { url: url.clone() },
        Destination::Topic {
            endpoint,
            key_setting,
        } => {
            pairs.insert(TOPIC_ENDPOINT_SETTING.into(), endpoint.to_string());
            if let Some(name) = key_setting {
                pairs.remove(KEY_VALUE_SETTING);
                pairs.insert(KEY_SETTING_NAME_SETTING.into(), name.clone());
            }
            NotificationSettings::from_map(&pairs)
                .map_err(|e| OpsError::Settings(e.to_string()))?
                .target
                .ok_or_else(|| OpsError::Settings("no topic to replay to".into()))?
        }
    };
    let schema = NotificationSettings::from_map(&pairs)
        .map_err(|e| OpsError::Settings(e.to_string()))?
        .schema;
    Publisher::new(target, schema).map_err(OpsError::Publish)
}

/// Replays the notifications of `target` from `from` with `publisher`.
pub async fn replay(
    app: &App,
    target: &Target,
    from: From,
    publisher: &Publisher,
    options: &RunOptions,
) -> Result<u8, OpsError> {
    let store = app.store(target.category())?;
    let (sent, interrupted, streams) = match target {
        Target::Stream(stream) => (
            replay_stream(store.as_ref(), stream, from, publisher)
                .await?
                .count,
            false,
            1,
        ),
        Target::Category(category) => {
            let label = format!("replay {category}");
            let store_ref = store.as_ref();
            let run = over_category(&label, store_ref, category, options, |stream| {
                async move { replay_stream(store_ref, &stream, from, publisher).await }.boxed()
            })
            .await?;
            (run.count, run.interrupted, run.done)
        }
    };
    eprintln!(
        "replayed {sent} notification(s) of {streams} stream(s) to {}",
        publisher.url().origin().ascii_serialization()
    );
    Ok(if interrupted {
        EXIT_INTERRUPTED
    } else {
        EXIT_OK
    })
}

/// Publishes the notifications of one stream's events from `from`.
async fn replay_stream(
    store: &dyn EventStore,
    stream: &StreamId,
    from: From,
    publisher: &Publisher,
) -> Result<StreamOutcome, OpsError> {
    let mut next = match from {
        From::Sequence(sequence) => sequence.max(1),
        From::Time(_) => 1,
    };
    let mut sent = 0u64;
    loop {
        let slice = store
            .read(
                stream,
                ReadRequest::range(next, Some(next.saturating_add(REPLAY_PAGE - 1))),
            )
            .await?;
        let Some(last) = slice.events.last().map(|e| e.sequence) else {
            break;
        };
        let events: Vec<_> = match from {
            From::Time(time) => slice
                .events
                .into_iter()
                .filter(|e| e.timestamp >= time)
                .collect(),
            From::Sequence(_) => slice.events,
        };
        let notifications = notifications_for(stream, &events, RaiseSwitches::ALL);
        if !notifications.is_empty() {
            publisher
                .publish(&notifications)
                .await
                .map_err(|source| OpsError::Replay {
                    stream: stream.to_string(),
                    source,
                })?;
            sent = sent.saturating_add(u64::try_from(notifications.len()).unwrap_or(u64::MAX));
        }
        if last >= slice.version {
            break;
        }
        next = last.saturating_add(1);
    }
    Ok(StreamOutcome {
        problems: Vec::new(),
        count: sent,
    })
}
