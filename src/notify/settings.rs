//! Notification settings, read once at start-up from app settings (environment variables).
//!
//! | setting | meaning |
//! |---|---|
//! | `EventGridTopicEndpoint` | the custom topic's endpoint, e.g. `https://t.westeurope-1.eventgrid.azure.net/api/events` |
//! | `EventGridKeyValue` | the topic's access key, or |
//! | `EventGridKeySettingName` | the NAME of another setting that holds it (e.g. a Key Vault reference) |
//! | `EventGridClientId` | with no key: the client id of the user-assigned managed identity to publish as |
//! | `RaiseEntityCreationNotification` | `true`/`false`: raise `{Domain}.{Entity}.NewEntity` |
//! | `RaiseEventNotification` | `true`/`false`: raise `{Domain}.{Entity}.{EventType}` |
//! | `NotificationSchema` | `EventGridEvent` (default) or `CloudEvent` |
//! | `StreamfoldLocalEventGridUrl` | where notifications go when no topic is set |
//!
//! Where notifications go:
//! 1. `EventGridTopicEndpoint` set → that topic, with its key (one key setting; both at once is
//!    an error), or with no key at all, as the app's managed identity (a bearer token from the
//!    App Service identity endpoint for `https://eventgrid.azure.net/`: the identity needs the
//!    EventGrid Data Sender role); the endpoint must then be `https://` (or `http://` on a
//!    loopback address, for emulators and tests) and the app must have an identity;
//! 2. else `StreamfoldLocalEventGridUrl` set → that webhook;
//! 3. else, when not running in Azure (`WEBSITE_INSTANCE_ID` unset) → the local Functions
//!    host's Event Grid webhook, [`DEFAULT_LOCAL_EVENT_GRID_URL`], so `func start` (or the
//!    host simulator) delivers them to the `Projector` function with no topic at all;
//! 4. else nowhere.
//!
//! Defaults of the two switches: ON when notifications have somewhere to go (cases 1-3), OFF
//! otherwise. This departs from the seed (always off by default): the read models of the
//! bank example are built from notifications, so a configured target means they are wanted.
//! Setting a switch to `true` with nowhere to send is an error naming the switch.
//!
//! Every present but invalid value stops the start with a [`SettingError`] naming the setting.
//! The key is held in a [`TopicKey`], which `Debug` and `Display` never show.

use std::collections::HashMap;
use std::fmt;

use reqwest::Url;

use super::raise::RaiseSwitches;
use super::schema::NotificationSchema;
use crate::identity::{check_bearer_target, IdentityEndpoint};

pub const TOPIC_ENDPOINT_SETTING: &str = "EventGridTopicEndpoint";
pub const KEY_VALUE_SETTING: &str = "EventGridKeyValue";
pub const KEY_SETTING_NAME_SETTING: &str = "EventGridKeySettingName";
pub const RAISE_ENTITY_CREATION_SETTING: &str = "RaiseEntityCreationNotification";
pub const RAISE_EVENT_SETTING: &str = "RaiseEventNotification";
/// The seed's switch for `{Domain}.{Entity}.DeletedEntity`, raised when a stream is erased.
pub const RAISE_ENTITY_DELETION_SETTING: &str = "RaiseEntityDeletionNotification";
pub const SCHEMA_SETTING: &str = "NotificationSchema";
pub const LOCAL_URL_SETTING: &str = "StreamfoldLocalEventGridUrl";
/// Client id of the user-assigned managed identity that publishes when no key is set.
pub const CLIENT_ID_SETTING: &str = "EventGridClientId";
/// Set by App Service on every instance in Azure; its absence means "running locally".
pub const AZURE_INSTANCE_SETTING: &str = "WEBSITE_INSTANCE_ID";
/// The local Functions host's Event Grid webhook for the `Projector` function.
pub const DEFAULT_LOCAL_EVENT_GRID_URL: &str =
    "http://localhost:7071/runtime/webhooks/EventGrid?functionName=Projector";

/// A topic access key. Never shown by `Debug` or `Display`; read it with
/// [`TopicKey::expose`] only to put it in a request header.
#[derive(Clone, PartialEq, Eq)]
pub struct TopicKey(String);

impl TopicKey {
    pub fn new(key: impl Into<String>) -> Self {
        Self(key.into())
    }

    /// The key itself.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for TopicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("TopicKey(<redacted>)")
    }
}

impl fmt::Display for TopicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

/// Where notifications are published. `Debug` leaves out URL query strings: a deployed
/// webhook URL carries its key as `code=`.
#[derive(Clone, PartialEq, Eq)]
pub enum NotificationTarget {
    /// An Event Grid custom topic: `aeg-sas-key` header, `api-version` query parameter.
    Topic { endpoint: Url, key: TopicKey },
    /// An Event Grid custom topic reached as the app's managed identity (user-assigned with
    /// `client_id`): `Authorization: Bearer` header, `api-version` query parameter.
    TopicWithIdentity {
        endpoint: Url,
        identity: IdentityEndpoint,
        client_id: Option<String>,
    },
    /// An Event Grid webhook of a Functions host (local development): header
    /// `aeg-event-type: Notification`, no key.
    LocalWebhook { url: Url },
}

impl fmt::Debug for NotificationTarget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Topic { endpoint, key } => f
                .debug_struct("Topic")
                .field("endpoint", &without_query(endpoint))
                .field("key", key)
                .finish(),
            Self::TopicWithIdentity {
                endpoint,
                identity,
                client_id,
            } => f
                .debug_struct("TopicWithIdentity")
                .field("endpoint", &without_query(endpoint))
                .field("identity", identity)
                .field("client_id", client_id)
                .finish(),
            Self::LocalWebhook { url } => f
                .debug_struct("LocalWebhook")
                .field("url", &without_query(url))
                .finish(),
        }
    }
}

/// A URL as shown in logs and errors: its query string (which may hold a key) replaced by
/// `?…` when there is one.
pub fn without_query(url: &Url) -> String {
    let mut shown = url.clone();
    let had_query = shown.query().is_some();
    shown.set_query(None);
    if had_query {
        format!("{shown}?…")
    } else {
        shown.to_string()
    }
}

/// The notification part of the app settings.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct NotificationSettings {
    /// `None` when notifications have nowhere to go (then `raise` is all off).
    pub target: Option<NotificationTarget>,
    pub raise: RaiseSwitches,
    pub schema: NotificationSchema,
    /// Whether erasing a stream raises `{Domain}.{Entity}.DeletedEntity`
    /// (`RaiseEntityDeletionNotification`; on by default when notifications have somewhere to
    /// go).
    pub raise_entity_deletion: bool,
}

impl NotificationSettings {
    /// Reads the process environment.
    pub fn from_env() -> Result<Self, SettingError> {
        Self::from_pairs(std::env::vars())
    }

    /// Reads settings from name/value pairs (the environment, or a test's map).
    pub fn from_pairs(
        pairs: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Self, SettingError> {
        let env: HashMap<String, String> = pairs.into_iter().collect();
        Self::from_map(&env)
    }

    /// Reads settings from a map of app settings.
    pub fn from_map(env: &HashMap<String, String>) -> Result<Self, SettingError> {
        let target = target(env)?;
        let default = target.is_some();
        let raise = RaiseSwitches {
            entity_creation: switch(env, RAISE_ENTITY_CREATION_SETTING, default)?,
            event: switch(env, RAISE_EVENT_SETTING, default)?,
        };
        let raise_entity_deletion = switch(env, RAISE_ENTITY_DELETION_SETTING, default)?;
        if target.is_none() {
            for (name, on) in [
                (RAISE_ENTITY_CREATION_SETTING, raise.entity_creation),
                (RAISE_EVENT_SETTING, raise.event),
                (RAISE_ENTITY_DELETION_SETTING, raise_entity_deletion),
            ] {
                if on {
                    return Err(error(
                        name,
                        format!(
                            "is true but notifications have nowhere to go in Azure: set \
                             {TOPIC_ENDPOINT_SETTING} (or {LOCAL_URL_SETTING})"
                        ),
                    ));
                }
            }
        }
        let schema = match value(env, SCHEMA_SETTING) {
            None => NotificationSchema::default(),
            Some(v) => v.parse().map_err(|reason| error(SCHEMA_SETTING, reason))?,
        };
        Ok(Self {
            target,
            raise,
            schema,
            raise_entity_deletion,
        })
    }

    /// True when notifications are published at all.
    pub fn enabled(&self) -> bool {
        self.target.is_some() && self.raise.any()
    }
}

/// A notification setting that is present but wrong, with the setting's name (the app's
/// configuration turns it into its own error).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("setting {setting}: {reason}")]
#[non_exhaustive]
pub struct SettingError {
    pub setting: String,
    pub reason: String,
}

fn error(setting: &str, reason: impl Into<String>) -> SettingError {
    SettingError {
        setting: setting.to_owned(),
        reason: reason.into(),
    }
}

/// A setting's trimmed value; empty counts as unset.
fn value<'a>(env: &'a HashMap<String, String>, name: &str) -> Option<&'a str> {
    env.get(name).map(|v| v.trim()).filter(|v| !v.is_empty())
}

fn switch(env: &HashMap<String, String>, name: &str, default: bool) -> Result<bool, SettingError> {
    match value(env, name) {
        None => Ok(default),
        Some(v) if v.eq_ignore_ascii_case("true") => Ok(true),
        Some(v) if v.eq_ignore_ascii_case("false") => Ok(false),
        Some(v) => Err(error(name, format!("{v:?} is neither true nor false"))),
    }
}

fn http_url(name: &str, raw: &str) -> Result<Url, SettingError> {
    let url = Url::parse(raw).map_err(|e| error(name, format!("{raw:?} is not a URL: {e}")))?;
    if !matches!(url.scheme(), "http" | "https") || url.host_str().is_none() {
        return Err(error(name, format!("{raw:?} is not an http(s) URL")));
    }
    Ok(url)
}

fn target(env: &HashMap<String, String>) -> Result<Option<NotificationTarget>, SettingError> {
    let key = key(env)?;
    let client_id = value(env, CLIENT_ID_SETTING).map(str::to_owned);
    if let Some(raw) = value(env, TOPIC_ENDPOINT_SETTING) {
        let endpoint = http_url(TOPIC_ENDPOINT_SETTING, raw)?;
        let Some((setting, key)) = key else {
            // No key: publish as the app's managed identity.
            check_bearer_target(&endpoint).map_err(|why| error(TOPIC_ENDPOINT_SETTING, why))?;
            let identity = IdentityEndpoint::from_settings(env).map_err(|why| {
                error(
                    TOPIC_ENDPOINT_SETTING,
                    format!(
                        "no key ({KEY_VALUE_SETTING} or {KEY_SETTING_NAME_SETTING}) and no \
                         managed identity to publish with: {why}"
                    ),
                )
            })?;
            return Ok(Some(NotificationTarget::TopicWithIdentity {
                endpoint,
                identity,
                client_id,
            }));
        };
        if client_id.is_some() {
            return Err(error(
                CLIENT_ID_SETTING,
                format!("names the identity to publish with, but {setting} sets a key: set one of the two"),
            ));
        }
        return Ok(Some(NotificationTarget::Topic { endpoint, key }));
    }
    if let Some((setting, _)) = key {
        return Err(error(
            setting,
            format!("a topic key is set but {TOPIC_ENDPOINT_SETTING} is not"),
        ));
    }
    if let Some(raw) = value(env, LOCAL_URL_SETTING) {
        let url = http_url(LOCAL_URL_SETTING, raw)?;
        return Ok(Some(NotificationTarget::LocalWebhook { url }));
    }
    if value(env, AZURE_INSTANCE_SETTING).is_some() {
        return Ok(None);
    }
    let url = http_url(LOCAL_URL_SETTING, DEFAULT_LOCAL_EVENT_GRID_URL)?;
    Ok(Some(NotificationTarget::LocalWebhook { url }))
}

/// The topic key and the setting it came from, if any key setting is present.
fn key(env: &HashMap<String, String>) -> Result<Option<(&'static str, TopicKey)>, SettingError> {
    match (
        value(env, KEY_VALUE_SETTING),
        value(env, KEY_SETTING_NAME_SETTING),
    ) {
        (Some(_), Some(_)) => Err(error(
            KEY_SETTING_NAME_SETTING,
            format!("set only one of {KEY_VALUE_SETTING} and {KEY_SETTING_NAME_SETTING}"),
        )),
        (Some(key), None) => Ok(Some((KEY_VALUE_SETTING, TopicKey::new(key)))),
        (None, Some(name)) => {
            let key = value(env, name).ok_or_else(|| {
                error(
                    KEY_SETTING_NAME_SETTING,
                    format!("names setting {name:?}, which is not set"),
                )
            })?;
            Ok(Some((KEY_SETTING_NAME_SETTING, TopicKey::new(key))))
        }
        (None, None) => Ok(None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(pairs: &[(&str, &str)]) -> Result<NotificationSettings, SettingError> {
        NotificationSettings::from_pairs(pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())))
    }

    const ENDPOINT: &str = "https://t.westeurope-1.eventgrid.azure.net/api/events";

    #[test]
    fn topic_with_a_key_value() {
        let s = settings(&[
            (TOPIC_ENDPOINT_SETTING, ENDPOINT),
            (KEY_VALUE_SETTING, "k3y"),
        ])
        .unwrap();
        let Some(NotificationTarget::Topic { endpoint, key }) = &s.target else {
            panic!("{s:?}");
        };
        assert_eq!(endpoint.as_str(), ENDPOINT);
        assert_eq!(key.expose(), "k3y");
        assert_eq!(s.raise, RaiseSwitches::ALL);
        assert_eq!(s.schema, NotificationSchema::EventGridEvent);
        assert!(s.enabled());
    }

    #[test]
    fn topic_by_endpoint_alone_publishes_as_the_managed_identity() {
        let s = settings(&[
            (TOPIC_ENDPOINT_SETTING, ENDPOINT),
            ("IDENTITY_ENDPOINT", "http://127.0.0.1:41741/msi/token"),
            ("IDENTITY_HEADER", "s3cret"),
            (CLIENT_ID_SETTING, "0000-cid"),
        ])
        .unwrap();
        let Some(NotificationTarget::TopicWithIdentity {
            endpoint,
            client_id,
            ..
        }) = &s.target
        else {
            panic!("{s:?}");
        };
        assert_eq!(endpoint.as_str(), ENDPOINT);
        assert_eq!(client_id.as_deref(), Some("0000-cid"));
        assert!(s.enabled());
        assert!(!format!("{s:?}").contains("s3cret"));
        // A loopback emulator may be plain http.
        let s = settings(&[
            (TOPIC_ENDPOINT_SETTING, "http://127.0.0.1:9/api/events"),
            ("IDENTITY_ENDPOINT", "http://127.0.0.1:41741/msi/token"),
            ("IDENTITY_HEADER", "h"),
        ])
        .unwrap();
        assert!(matches!(
            s.target,
            Some(NotificationTarget::TopicWithIdentity { .. })
        ));
    }

    #[test]
    fn key_from_a_named_setting() {
        let s = settings(&[
            (TOPIC_ENDPOINT_SETTING, ENDPOINT),
            (KEY_SETTING_NAME_SETTING, "MyTopicKey"),
            ("MyTopicKey", "s3cret"),
            (SCHEMA_SETTING, "CloudEvent"),
            (RAISE_ENTITY_CREATION_SETTING, "FALSE"),
        ])
        .unwrap();
        let Some(NotificationTarget::Topic { key, .. }) = &s.target else {
            panic!();
        };
        assert_eq!(key.expose(), "s3cret");
        assert_eq!(s.schema, NotificationSchema::CloudEvent);
        assert!(!s.raise.entity_creation && s.raise.event);
    }

    #[test]
    fn the_key_never_shows() {
        let s = settings(&[
            (TOPIC_ENDPOINT_SETTING, ENDPOINT),
            (KEY_VALUE_SETTING, "s3cret"),
        ])
        .unwrap();
        assert!(!format!("{s:?}").contains("s3cret"));
        assert!(!format!("{s:#?}").contains("s3cret"));
        let key = TopicKey::new("s3cret");
        assert!(!format!("{key} {key:?}").contains("s3cret"));
    }

    #[test]
    fn local_loop_by_default_and_nothing_in_azure() {
        let s = settings(&[]).unwrap();
        let Some(NotificationTarget::LocalWebhook { url }) = &s.target else {
            panic!();
        };
        assert_eq!(url.as_str(), DEFAULT_LOCAL_EVENT_GRID_URL);
        assert!(s.enabled());

        let s = settings(&[(LOCAL_URL_SETTING, "http://127.0.0.1:9/x?functionName=P")]).unwrap();
        assert!(
            matches!(&s.target, Some(NotificationTarget::LocalWebhook { url }) if url.port() == Some(9))
        );

        let s = settings(&[(AZURE_INSTANCE_SETTING, "abc")]).unwrap();
        assert_eq!(s.target, None);
        assert_eq!(s.raise, RaiseSwitches::NONE);
        assert!(!s.enabled());
        let err = settings(&[
            (AZURE_INSTANCE_SETTING, "abc"),
            (RAISE_EVENT_SETTING, "true"),
        ])
        .unwrap_err();
        assert_eq!(err.setting, RAISE_EVENT_SETTING);
    }

    #[test]
    fn invalid_values_name_their_setting() {
        let cases: &[(&[(&str, &str)], &str)] = &[
            (
                &[
                    (TOPIC_ENDPOINT_SETTING, "not a url"),
                    (KEY_VALUE_SETTING, "k"),
                ],
                TOPIC_ENDPOINT_SETTING,
            ),
            (
                &[
                    (TOPIC_ENDPOINT_SETTING, "ftp://x/api/events"),
                    (KEY_VALUE_SETTING, "k"),
                ],
                TOPIC_ENDPOINT_SETTING,
            ),
            (
                &[(TOPIC_ENDPOINT_SETTING, ENDPOINT)],
                TOPIC_ENDPOINT_SETTING,
            ),
            (
                &[
                    (
                        TOPIC_ENDPOINT_SETTING,
                        "http://t.westeurope-1.eventgrid.azure.net/api/events",
                    ),
                    ("IDENTITY_ENDPOINT", "http://127.0.0.1:41741/msi/token"),
                    ("IDENTITY_HEADER", "s3cret"),
                ],
                TOPIC_ENDPOINT_SETTING,
            ),
            (
                &[
                    (TOPIC_ENDPOINT_SETTING, ENDPOINT),
                    (KEY_VALUE_SETTING, "k"),
                    (CLIENT_ID_SETTING, "c"),
                ],
                CLIENT_ID_SETTING,
            ),
            (
                &[
                    (TOPIC_ENDPOINT_SETTING, ENDPOINT),
                    (KEY_SETTING_NAME_SETTING, "Nope"),
                ],
                KEY_SETTING_NAME_SETTING,
            ),
            (
                &[
                    (TOPIC_ENDPOINT_SETTING, ENDPOINT),
                    (KEY_VALUE_SETTING, "k"),
                    (KEY_SETTING_NAME_SETTING, "k"),
                ],
                KEY_SETTING_NAME_SETTING,
            ),
            (&[(KEY_VALUE_SETTING, "k")], KEY_VALUE_SETTING),
            (&[(RAISE_EVENT_SETTING, "yes")], RAISE_EVENT_SETTING),
            (
                &[(RAISE_ENTITY_CREATION_SETTING, "1")],
                RAISE_ENTITY_CREATION_SETTING,
            ),
            (&[(SCHEMA_SETTING, "Avro")], SCHEMA_SETTING),
            (&[(LOCAL_URL_SETTING, "localhost:7071")], LOCAL_URL_SETTING),
        ];
        for (pairs, setting) in cases {
            let err = settings(pairs).unwrap_err();
            assert_eq!(&err.setting, setting, "{pairs:?}: {err}");
            assert!(!err.to_string().contains("s3cret"));
        }
    }
}
