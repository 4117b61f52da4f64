//! Configuration, read once at start-up from app settings (environment variables), without I/O.
//!
//! Every setting that is present but wrong stops the start with a message naming the setting,
//! rather than failing on the first request that needs it. Secrets (connection strings, keys)
//! are held but never logged or shown by `Debug`.
//!
//! Storage is chosen per domain / entity type with the seed's convention
//! `{Domain}.{Entity}` = `Table;{ConnectionStringName}` or `AppendBlob;{ConnectionStringName}`,
//! falling back to `{Domain}.ALL`, `ALL.{Entity}`, `ALL.ALL`, then Table storage on
//! `AzureWebJobsStorage`. Linux App Service cannot pass dots in environment variable names, so
//! `Streamfold__{Domain}__{Entity}` means the same.
//!
//! A connection named `X` is the connection string in setting `X` or, when `X` is not set, an
//! identity-based connection by the Functions convention: `X__tableServiceUri` /
//! `X__blobServiceUri` (or `X__accountName`, for the public cloud's endpoints),
//! `X__credential` (`managedidentity`, the default and only one) and `X__clientId` (a
//! user-assigned identity). Requests then carry a token of the app's managed identity, so each
//! endpoint must be `https://` (or `http://` on a loopback address: emulators and tests), and the
//! app must have an identity (`IDENTITY_ENDPOINT`); both are checked here, at start-up.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::time::Duration;

use reqwest::Url;

use crate::identity::{check_bearer_target, IdentityEndpoint};
use crate::notify::NotificationSettings;
use crate::stream::{validate_name, EntityType};

/// The app setting holding the default connection string.
pub const DEFAULT_CONNECTION_SETTING: &str = "AzureWebJobsStorage";
/// Wildcard that matches every domain or every entity type in a storage setting.
pub const WILDCARD: &str = "ALL";
/// Prefix of the dot-free spelling of a storage setting.
pub const STORAGE_SETTING_PREFIX: &str = "Streamfold__";
/// Separator of the dot-free spelling.
pub const STORAGE_SETTING_SEPARATOR: &str = "__";
/// Events applied past the last snapshot before a projection run writes a new one.
pub const SNAPSHOT_EVERY_SETTING: &str = "StreamfoldSnapshotEvery";
pub const DEFAULT_SNAPSHOT_EVERY: u64 = 100;
/// MiB of projection states kept in process (see `crate::projection::StateCache`); 0 = none.
pub const STATE_CACHE_MIB_SETTING: &str = "StreamfoldStateCacheMiB";
pub const DEFAULT_STATE_CACHE_MIB: usize = 32;
/// Milliseconds a command keeps deciding again from fresh state after losing races to other
/// writers (with jittered exponential waits between attempts) before answering 409; see
/// `crate::projection::ConflictBudget`.
pub const CONFLICT_DEADLINE_MS_SETTING: &str = "StreamfoldConflictDeadlineMs";
pub const DEFAULT_CONFLICT_DEADLINE_MS: u64 =
    crate::projection::DEFAULT_CONFLICT_DEADLINE.as_millis() as u64;
/// Optional: at most this many retries after lost races, besides the deadline (the setting
/// of earlier versions, where it was the only bound, 5 by default; unset now, so contention
/// is bounded by time alone).
pub const CONFLICT_RETRIES_SETTING: &str = "StreamfoldConflictRetries";
/// `false` turns group commit off: commands that wait for the same stream in one process are
/// then decided and written one at a time (see `crate::projection::CommandExecutor`).
pub const GROUP_COMMIT_SETTING: &str = "StreamfoldGroupCommit";
/// Names the app setting holding the connection string of read-model storage (Table storage;
/// see `crate::readmodel`); [`DEFAULT_CONNECTION_SETTING`] when absent.
pub const READ_MODEL_STORAGE_SETTING: &str = "StreamfoldReadModelStorage";
/// Most streams with pending notifications one run of the `NotificationSweep` timer function
/// publishes (per backend).
pub const NOTIFICATION_SWEEP_LIMIT_SETTING: &str = "StreamfoldNotificationSweepLimit";
pub const DEFAULT_NOTIFICATION_SWEEP_LIMIT: usize = crate::notify::DEFAULT_SWEEP_LIMIT;
/// Separator between a connection's name and the parts of an identity-based connection.
pub const CONNECTION_PART_SEPARATOR: &str = "__";
/// Identity-based connection parts (`{Connection}__{part}`), the Functions convention.
pub const TABLE_SERVICE_URI_PART: &str = "tableServiceUri";
pub const BLOB_SERVICE_URI_PART: &str = "blobServiceUri";
/// Read by the Functions host (queue triggers); accepted and unused by the handler.
pub const QUEUE_SERVICE_URI_PART: &str = "queueServiceUri";
pub const ACCOUNT_NAME_PART: &str = "accountName";
pub const CREDENTIAL_PART: &str = "credential";
pub const CLIENT_ID_PART: &str = "clientId";
/// The only credential an identity-based connection takes (case-insensitive).
pub const MANAGED_IDENTITY_CREDENTIAL: &str = "managedidentity";
/// Endpoint suffix of the public cloud, for `{Connection}__accountName`.
pub const PUBLIC_CLOUD_STORAGE_SUFFIX: &str = "core.windows.net";
/// Port the Functions host tells the handler to listen on.
pub const PORT_SETTING: &str = "FUNCTIONS_CUSTOMHANDLER_PORT";
pub const DEFAULT_PORT: u16 = 7072;

/// A setting that stops the start, with the setting's name.
#[derive(Debug, thiserror::Error)]
#[error("setting {setting}: {reason}")]
#[non_exhaustive]
pub struct ConfigError {
    pub setting: String,
    pub reason: String,
}

impl From<crate::notify::settings::SettingError> for ConfigError {
    fn from(error: crate::notify::settings::SettingError) -> Self {
        Self {
            setting: error.setting,
            reason: error.reason,
        }
    }
}

impl ConfigError {
    /// An error about `setting` (a domain's own settings use it too).
    pub fn new(setting: &str, reason: impl Into<String>) -> Self {
        Self {
            setting: setting.to_owned(),
            reason: reason.into(),
        }
    }
}

/// Which kind of storage holds a stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum BackendKind {
    Table,
    AppendBlob,
}

/// How a storage connection authenticates: a connection string (secret), or the app's managed
/// identity with the service endpoints.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum StorageConnection {
    ConnectionString(String),
    Identity(Box<IdentityConnection>),
}

impl fmt::Debug for StorageConnection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::ConnectionString(_) => f.write_str("ConnectionString(<redacted>)"),
            Self::Identity(identity) => identity.fmt(f),
        }
    }
}

/// An identity-based connection: where the services are, and which identity signs in.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[non_exhaustive]
pub struct IdentityConnection {
    pub table_endpoint: Option<Url>,
    pub blob_endpoint: Option<Url>,
    /// The user-assigned identity's client id; `None` for the system-assigned one.
    pub client_id: Option<String>,
    pub identity: IdentityEndpoint,
}

/// Where the streams of one domain / entity type live.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[non_exhaustive]
pub struct StorageTarget {
    pub kind: BackendKind,
    /// Name of the connection (the app setting, or the prefix of an identity-based one).
    pub connection_setting: String,
    pub connection: StorageConnection,
}

impl fmt::Debug for StorageTarget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StorageTarget")
            .field("kind", &self.kind)
            .field("connection_setting", &self.connection_setting)
            .field("connection", &self.connection)
            .finish()
    }
}

/// The storage rules: domain → entity → target, either with `ALL` wildcards (nested, so a
/// lookup borrows the names instead of building a key).
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct StorageRouting {
    rules: BTreeMap<String, BTreeMap<String, StorageTarget>>,
    default: Option<StorageTarget>,
}

impl StorageRouting {
    /// The target for a domain / entity type, by the seed's fallback order. `None` when no rule
    /// matches and `AzureWebJobsStorage` is not set.
    pub fn resolve(&self, entity_type: &EntityType) -> Option<&StorageTarget> {
        let (domain, entity) = (entity_type.domain(), entity_type.entity());
        [
            (domain, entity),
            (domain, WILDCARD),
            (WILDCARD, entity),
            (WILDCARD, WILDCARD),
        ]
        .iter()
        .find_map(|(d, e)| self.rules.get(*d)?.get(*e))
        .or(self.default.as_ref())
    }

    /// Every distinct target, so backends can be built once at start-up.
    pub fn targets(&self) -> impl Iterator<Item = &StorageTarget> {
        self.rules
            .values()
            .flat_map(BTreeMap::values)
            .chain(self.default.iter())
    }
}

/// Everything streamfold reads from app settings.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct Settings {
    pub port: u16,
    pub storage: StorageRouting,
    pub snapshot_every: u64,
    /// Bytes of projection states kept in process (0 = none).
    pub state_cache_bytes: usize,
    /// How long a command keeps deciding again after lost races.
    pub conflict_deadline: Duration,
    /// At most this many retries after lost races, when set.
    pub conflict_retries: Option<u32>,
    /// Whether commands waiting for one stream are written together (on by default).
    pub group_commit: bool,
    /// Where read-model rows live (Table storage); `None` when no connection string is set.
    pub read_model_storage: Option<StorageTarget>,
    /// Event Grid notifications (see `crate::notify::settings`).
    pub notifications: NotificationSettings,
    /// Pending streams one notification sweep publishes, per backend (at least 1).
    pub notification_sweep_limit: usize,
}

impl Settings {
    /// Reads the process environment.
    pub fn from_env() -> Result<Self, ConfigError> {
        Self::from_pairs(std::env::vars())
    }

    /// Reads settings from name/value pairs (the environment, or a test's map).
    pub fn from_pairs(
        pairs: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Self, ConfigError> {
        let env: HashMap<String, String> = pairs.into_iter().collect();
        Ok(Self {
            port: parse_or(&env, PORT_SETTING, DEFAULT_PORT)?,
            storage: storage_routing(&env)?,
            snapshot_every: parse_or(&env, SNAPSHOT_EVERY_SETTING, DEFAULT_SNAPSHOT_EVERY)?,
            state_cache_bytes: parse_or(&env, STATE_CACHE_MIB_SETTING, DEFAULT_STATE_CACHE_MIB)?
                .saturating_mul(1024 * 1024),
            conflict_deadline: Duration::from_millis(parse_or(
                &env,
                CONFLICT_DEADLINE_MS_SETTING,
                DEFAULT_CONFLICT_DEADLINE_MS,
            )?),
            conflict_retries: optional(&env, CONFLICT_RETRIES_SETTING)?,
            group_commit: flag(&env, GROUP_COMMIT_SETTING, true)?,
            read_model_storage: read_model_storage(&env)?,
            notifications: NotificationSettings::from_map(&env)?,
            notification_sweep_limit: positive(
                &env,
                NOTIFICATION_SWEEP_LIMIT_SETTING,
                DEFAULT_NOTIFICATION_SWEEP_LIMIT,
            )?,
        })
    }
}

fn positive(
    env: &HashMap<String, String>,
    name: &str,
    default: usize,
) -> Result<usize, ConfigError> {
    match parse_or(env, name, default)? {
        0 => Err(ConfigError::new(name, "must be at least 1")),
        n => Ok(n),
    }
}

/// `true` or `false` (any case) when the setting is present and not blank.
fn flag(env: &HashMap<String, String>, name: &str, default: bool) -> Result<bool, ConfigError> {
    match env
        .get(name)
        .map(|v| v.trim().to_ascii_lowercase())
        .as_deref()
    {
        None | Some("") => Ok(default),
        Some("true") => Ok(true),
        Some("false") => Ok(false),
        Some(v) => Err(ConfigError::new(
            name,
            format!("{v:?} is neither true nor false"),
        )),
    }
}

/// A number when the setting is present and not blank.
fn optional<T: std::str::FromStr>(
    env: &HashMap<String, String>,
    name: &str,
) -> Result<Option<T>, ConfigError> {
    match env.get(name).map(|v| v.trim()) {
        None | Some("") => Ok(None),
        Some(v) => v
            .parse()
            .map(Some)
            .map_err(|_| ConfigError::new(name, format!("{v:?} is not a valid number"))),
    }
}

fn parse_or<T: std::str::FromStr>(
    env: &HashMap<String, String>,
    name: &str,
    default: T,
) -> Result<T, ConfigError> {
    match env.get(name).map(|v| v.trim()) {
        None | Some("") => Ok(default),
        Some(v) => v
            .parse()
            .map_err(|_| ConfigError::new(name, format!("{v:?} is not a valid number"))),
    }
}

/// Splits a setting name into (domain, entity) when it is a storage setting.
fn storage_setting_key(name: &str) -> Option<(&str, &str)> {
    let (domain, entity) = match name.strip_prefix(STORAGE_SETTING_PREFIX) {
        Some(rest) => rest.split_once(STORAGE_SETTING_SEPARATOR)?,
        None => name.split_once('.')?,
    };
    let is_name = |s: &str| s == WILDCARD || validate_name("name", s).is_ok();
    (is_name(domain) && is_name(entity)).then_some((domain, entity))
}

fn storage_routing(env: &HashMap<String, String>) -> Result<StorageRouting, ConfigError> {
    let mut rules: BTreeMap<String, BTreeMap<String, StorageTarget>> = BTreeMap::new();
    for (name, value) in env {
        let Some((domain, entity)) = storage_setting_key(name) else {
            continue;
        };
        let target = parse_target(env, name, value)?;
        let entities = rules.entry(domain.to_owned()).or_default();
        if let Some(previous) = entities.insert(entity.to_owned(), target.clone()) {
            if previous != target {
                return Err(ConfigError::new(
                    name,
                    format!("conflicts with another setting for {domain}.{entity}"),
                ));
            }
        }
    }
    let default = connection(env, DEFAULT_CONNECTION_SETTING)?.map(|connection| StorageTarget {
        kind: BackendKind::Table,
        connection_setting: DEFAULT_CONNECTION_SETTING.to_owned(),
        connection,
    });
    Ok(StorageRouting { rules, default })
}

/// The read-model storage: the connection string named by [`READ_MODEL_STORAGE_SETTING`], or
/// `AzureWebJobsStorage` when that setting is absent.
fn read_model_storage(env: &HashMap<String, String>) -> Result<Option<StorageTarget>, ConfigError> {
    let named = env
        .get(READ_MODEL_STORAGE_SETTING)
        .map(|v| v.trim())
        .filter(|v| !v.is_empty());
    let connection_setting = named.unwrap_or(DEFAULT_CONNECTION_SETTING);
    match (connection(env, connection_setting)?, named) {
        (Some(connection), _) => Ok(Some(StorageTarget {
            kind: BackendKind::Table,
            connection_setting: connection_setting.to_owned(),
            connection,
        })),
        (None, Some(name)) => Err(ConfigError::new(
            READ_MODEL_STORAGE_SETTING,
            format!("names connection {name:?}, which is not set"),
        )),
        (None, None) => Ok(None),
    }
}

/// The connection named `name`: the connection string in setting `name`, else the
/// identity-based connection of the `{name}__*` settings, else `None`.
pub fn connection(
    env: &HashMap<String, String>,
    name: &str,
) -> Result<Option<StorageConnection>, ConfigError> {
    if let Some(cs) = env.get(name).filter(|v| !v.trim().is_empty()) {
        return Ok(Some(StorageConnection::ConnectionString(cs.clone())));
    }
    let part_name = |part: &str| format!("{name}{CONNECTION_PART_SEPARATOR}{part}");
    let part = |p: &str| {
        env.get(&part_name(p))
            .map(|v| v.trim())
            .filter(|v| !v.is_empty())
    };
    let uri = |p: &str| -> Result<Option<Url>, ConfigError> {
        let Some(raw) = part(p) else {
            return Ok(None);
        };
        let url = Url::parse(raw)
            .ok()
            .filter(|u| u.host_str().is_some())
            .ok_or_else(|| ConfigError::new(&part_name(p), format!("{raw:?} is not a URL")))?;
        check_bearer_target(&url).map_err(|why| ConfigError::new(&part_name(p), why))?;
        Ok(Some(url))
    };
    let mut table_endpoint = uri(TABLE_SERVICE_URI_PART)?;
    let mut blob_endpoint = uri(BLOB_SERVICE_URI_PART)?;
    if let Some(account) = part(ACCOUNT_NAME_PART) {
        if table_endpoint.is_some() || blob_endpoint.is_some() {
            return Err(ConfigError::new(
                &part_name(ACCOUNT_NAME_PART),
                format!(
                    "set either {} or the service URIs, not both",
                    part_name(ACCOUNT_NAME_PART)
                ),
            ));
        }
        if account.is_empty()
            || !account
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit())
        {
            return Err(ConfigError::new(
                &part_name(ACCOUNT_NAME_PART),
                "a storage account name is lowercase letters and digits",
            ));
        }
        let at = |service: &str| {
            Url::parse(&format!(
                "https://{account}.{service}.{PUBLIC_CLOUD_STORAGE_SUFFIX}"
            ))
            .ok()
        };
        table_endpoint = at("table");
        blob_endpoint = at("blob");
    }
    let other_parts = [CREDENTIAL_PART, CLIENT_ID_PART, QUEUE_SERVICE_URI_PART];
    if table_endpoint.is_none() && blob_endpoint.is_none() {
        return match other_parts.iter().find(|p| part(p).is_some()) {
            Some(p) => Err(ConfigError::new(
                &part_name(p),
                format!(
                    "an identity-based connection needs {} or {} (or {})",
                    part_name(TABLE_SERVICE_URI_PART),
                    part_name(BLOB_SERVICE_URI_PART),
                    part_name(ACCOUNT_NAME_PART)
                ),
            )),
            None => Ok(None),
        };
    }
    if let Some(credential) = part(CREDENTIAL_PART) {
        if !credential.eq_ignore_ascii_case(MANAGED_IDENTITY_CREDENTIAL) {
            return Err(ConfigError::new(
                &part_name(CREDENTIAL_PART),
                format!("{credential:?}: the only credential supported is {MANAGED_IDENTITY_CREDENTIAL}"),
            ));
        }
    }
    let identity = IdentityEndpoint::from_settings(env)
        .map_err(|why| ConfigError::new(&part_name(CREDENTIAL_PART), why.to_string()))?;
    Ok(Some(StorageConnection::Identity(Box::new(
        IdentityConnection {
            table_endpoint,
            blob_endpoint,
            client_id: part(CLIENT_ID_PART).map(str::to_owned),
            identity,
        },
    ))))
}

fn parse_target(
    env: &HashMap<String, String>,
    name: &str,
    value: &str,
) -> Result<StorageTarget, ConfigError> {
    let (kind, connection_setting) = value.split_once(';').ok_or_else(|| {
        ConfigError::new(
            name,
            format!("{value:?} must look like Table;<ConnectionStringSetting> or AppendBlob;<ConnectionStringSetting>"),
        )
    })?;
    let kind = match kind.trim() {
        k if k.eq_ignore_ascii_case("Table") => BackendKind::Table,
        k if k.eq_ignore_ascii_case("AppendBlob") => BackendKind::AppendBlob,
        other => {
            return Err(ConfigError::new(
                name,
                format!("unknown storage backend {other:?} (use Table or AppendBlob)"),
            ))
        }
    };
    let connection_setting = connection_setting.trim();
    let connection = connection(env, connection_setting)?.ok_or_else(|| {
        ConfigError::new(
            name,
            format!(
                "names connection {connection_setting:?}, which is not set (neither a connection \
                 string nor {connection_setting}__tableServiceUri / __blobServiceUri / __accountName)"
            ),
        )
    })?;
    Ok(StorageTarget {
        kind,
        connection_setting: connection_setting.to_owned(),
        connection,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(pairs: &[(&str, &str)]) -> Result<Settings, ConfigError> {
        Settings::from_pairs(pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())))
    }

    #[test]
    fn defaults_to_table_on_azure_web_jobs_storage() {
        let s = settings(&[("AzureWebJobsStorage", "UseDevelopmentStorage=true")]).unwrap();
        let t = s
            .storage
            .resolve(&EntityType::from_static("Bank", "Account"))
            .unwrap();
        assert_eq!(t.kind, BackendKind::Table);
        assert_eq!(t.connection_setting, "AzureWebJobsStorage");
        assert_eq!(s.snapshot_every, DEFAULT_SNAPSHOT_EVERY);
    }

    #[test]
    fn fallback_order_is_the_seeds() {
        let s = settings(&[
            ("AzureWebJobsStorage", "a"),
            ("Other", "b"),
            ("Bank.Account", "AppendBlob;Other"),
            ("Bank.ALL", "Table;Other"),
            ("Streamfold__ALL__Loan", "AppendBlob;AzureWebJobsStorage"),
            ("ALL.ALL", "Table;AzureWebJobsStorage"),
        ])
        .unwrap();
        let r = |d: &str, e: &str| {
            s.storage
                .resolve(&EntityType::new(d, e).unwrap())
                .unwrap()
                .clone()
        };
        assert_eq!(r("Bank", "Account").kind, BackendKind::AppendBlob);
        assert_eq!(r("Bank", "Account").connection_setting, "Other");
        assert_eq!(r("Bank", "Card").kind, BackendKind::Table);
        assert_eq!(r("Bank", "Card").connection_setting, "Other");
        assert_eq!(r("Shop", "Loan").kind, BackendKind::AppendBlob);
        assert_eq!(r("Shop", "Cart").connection_setting, "AzureWebJobsStorage");
    }

    #[test]
    fn bad_settings_name_themselves() {
        let err = settings(&[("Bank.Account", "Cosmos;X"), ("X", "y")]).unwrap_err();
        assert_eq!(err.setting, "Bank.Account");
        assert!(err.reason.contains("Cosmos"));
        let err = settings(&[("Streamfold__Bank__Account", "Table;Missing")]).unwrap_err();
        assert_eq!(err.setting, "Streamfold__Bank__Account");
        assert!(err.reason.contains("Missing"));
        let err = settings(&[(SNAPSHOT_EVERY_SETTING, "lots")]).unwrap_err();
        assert_eq!(err.setting, SNAPSHOT_EVERY_SETTING);
    }

    #[test]
    fn secrets_stay_out_of_debug() {
        let s = settings(&[("AzureWebJobsStorage", "AccountKey=secret")]).unwrap();
        assert!(!format!("{s:?}").contains("secret"));
    }

    #[test]
    fn read_model_storage_defaults_to_azure_web_jobs_storage() {
        let s = settings(&[("AzureWebJobsStorage", "a")]).unwrap();
        let t = s.read_model_storage.unwrap();
        assert_eq!(t.connection_setting, DEFAULT_CONNECTION_SETTING);
        assert_eq!(t.kind, BackendKind::Table);
        let s = settings(&[(READ_MODEL_STORAGE_SETTING, "Views"), ("Views", "b")]).unwrap();
        assert_eq!(
            s.read_model_storage.unwrap().connection,
            StorageConnection::ConnectionString("b".into())
        );
        assert!(settings(&[]).unwrap().read_model_storage.is_none());
        let err = settings(&[(READ_MODEL_STORAGE_SETTING, "Missing")]).unwrap_err();
        assert_eq!(err.setting, READ_MODEL_STORAGE_SETTING);
    }

    #[test]
    fn notification_settings_are_read_and_checked_at_start_up() {
        let s = settings(&[
            (
                "EventGridTopicEndpoint",
                "https://t.westeurope-1.eventgrid.azure.net/api/events",
            ),
            ("EventGridKeyValue", "s3cret"),
            ("RaiseEventNotification", "false"),
        ])
        .unwrap();
        assert!(s.notifications.enabled());
        assert!(s.notifications.raise.entity_creation && !s.notifications.raise.event);
        assert_eq!(s.notification_sweep_limit, DEFAULT_NOTIFICATION_SWEEP_LIMIT);
        assert!(!format!("{s:?}").contains("s3cret"));
        let err = settings(&[("RaiseEventNotification", "maybe")]).unwrap_err();
        assert_eq!(err.setting, "RaiseEventNotification");
        let err = settings(&[("EventGridTopicEndpoint", "https://t/api/events")]).unwrap_err();
        assert_eq!(err.setting, "EventGridTopicEndpoint");
        for bad in ["0", "x"] {
            let err = settings(&[(NOTIFICATION_SWEEP_LIMIT_SETTING, bad)]).unwrap_err();
            assert_eq!(err.setting, NOTIFICATION_SWEEP_LIMIT_SETTING);
        }
        let s = settings(&[(NOTIFICATION_SWEEP_LIMIT_SETTING, "7")]).unwrap();
        assert_eq!(s.notification_sweep_limit, 7);
    }

    #[test]
    fn contention_is_bounded_by_time_and_optionally_by_retries() {
        let s = settings(&[]).unwrap();
        assert_eq!(
            s.conflict_deadline,
            Duration::from_millis(DEFAULT_CONFLICT_DEADLINE_MS)
        );
        assert_eq!(s.conflict_retries, None);
        let s = settings(&[
            (CONFLICT_DEADLINE_MS_SETTING, "250"),
            (CONFLICT_RETRIES_SETTING, "5"),
        ])
        .unwrap();
        assert_eq!(s.conflict_deadline, Duration::from_millis(250));
        assert_eq!(s.conflict_retries, Some(5));
        for name in [CONFLICT_DEADLINE_MS_SETTING, CONFLICT_RETRIES_SETTING] {
            let err = settings(&[(name, "-1")]).unwrap_err();
            assert_eq!(err.setting, name);
        }
    }

    const IDENTITY: [(&str, &str); 2] = [
        ("IDENTITY_ENDPOINT", "http://127.0.0.1:41741/msi/token"),
        ("IDENTITY_HEADER", "hdr-s3cret"),
    ];

    fn with_identity(pairs: &[(&'static str, &'static str)]) -> Vec<(&'static str, &'static str)> {
        IDENTITY.iter().chain(pairs).copied().collect()
    }

    #[test]
    fn identity_based_connections_by_the_functions_convention() {
        let s = settings(&with_identity(&[
            (
                "AzureWebJobsStorage__tableServiceUri",
                "https://acct.table.core.windows.net/",
            ),
            (
                "AzureWebJobsStorage__blobServiceUri",
                "https://acct.blob.core.windows.net/",
            ),
            (
                "AzureWebJobsStorage__queueServiceUri",
                "https://acct.queue.core.windows.net/",
            ),
            ("AzureWebJobsStorage__credential", "ManagedIdentity"),
            ("AzureWebJobsStorage__clientId", "cid"),
            ("Streamfold__Bank__Ledger", "AppendBlob;Other"),
            ("Other__accountName", "other2"),
        ]))
        .unwrap();
        let t = s
            .storage
            .resolve(&EntityType::from_static("Bank", "Account"))
            .unwrap();
        let StorageConnection::Identity(c) = &t.connection else {
            panic!("{t:?}");
        };
        assert_eq!(
            c.table_endpoint.as_ref().unwrap().host_str(),
            Some("acct.table.core.windows.net")
        );
        assert_eq!(c.client_id.as_deref(), Some("cid"));
        let StorageConnection::Identity(c) = &s
            .storage
            .resolve(&EntityType::from_static("Bank", "Ledger"))
            .unwrap()
            .connection
        else {
            panic!();
        };
        assert_eq!(
            c.blob_endpoint.as_ref().unwrap().as_str(),
            "https://other2.blob.core.windows.net/"
        );
        assert_eq!(c.client_id, None);
        assert!(matches!(
            s.read_model_storage.as_ref().unwrap().connection,
            StorageConnection::Identity(_)
        ));
        assert!(!format!("{s:?}").contains("s3cret"));
        // A connection string of the same name wins, as in Functions.
        let s = settings(&with_identity(&[
            ("AzureWebJobsStorage", "UseDevelopmentStorage=true"),
            (
                "AzureWebJobsStorage__tableServiceUri",
                "https://acct.table.core.windows.net",
            ),
        ]))
        .unwrap();
        assert!(matches!(
            s.storage
                .resolve(&EntityType::from_static("Bank", "Account"))
                .unwrap()
                .connection,
            StorageConnection::ConnectionString(_)
        ));
    }

    #[test]
    fn identity_based_connections_are_checked_at_start_up() {
        let cases: &[(&[(&str, &str)], &str)] = &[
            // A bearer token never goes over plain http beyond loopback.
            (
                &[(
                    "AzureWebJobsStorage__tableServiceUri",
                    "http://acct.table.core.windows.net",
                )],
                "AzureWebJobsStorage__tableServiceUri",
            ),
            (
                &[("AzureWebJobsStorage__blobServiceUri", "not a url")],
                "AzureWebJobsStorage__blobServiceUri",
            ),
            (
                &[
                    (
                        "AzureWebJobsStorage__tableServiceUri",
                        "https://a.table.core.windows.net",
                    ),
                    ("AzureWebJobsStorage__credential", "clientsecret"),
                ],
                "AzureWebJobsStorage__credential",
            ),
            (
                &[("AzureWebJobsStorage__clientId", "cid")],
                "AzureWebJobsStorage__clientId",
            ),
            (
                &[
                    ("AzureWebJobsStorage__accountName", "acct"),
                    (
                        "AzureWebJobsStorage__tableServiceUri",
                        "https://acct.table.core.windows.net",
                    ),
                ],
                "AzureWebJobsStorage__accountName",
            ),
            (
                &[("AzureWebJobsStorage__accountName", "Not_Valid")],
                "AzureWebJobsStorage__accountName",
            ),
        ];
        for (pairs, setting) in cases {
            let err = settings(&with_identity(pairs)).unwrap_err();
            assert_eq!(&err.setting, setting, "{pairs:?}: {err}");
        }
        // Loopback http is fine (emulators, tests).
        assert!(settings(&with_identity(&[(
            "AzureWebJobsStorage__tableServiceUri",
            "http://127.0.0.1:10002/devstoreaccount1"
        )]))
        .is_ok());
        // No identity endpoint: the app has no managed identity.
        let err = settings(&[(
            "AzureWebJobsStorage__tableServiceUri",
            "https://acct.table.core.windows.net",
        )])
        .unwrap_err();
        assert_eq!(err.setting, "AzureWebJobsStorage__credential");
        assert!(err.reason.contains("IDENTITY_ENDPOINT"), "{err}");
    }

    #[test]
    fn unrelated_dotted_names_are_ignored() {
        assert!(settings(&[("a.b.c", "x"), ("1.x", "y")]).is_ok());
    }
}
