//! The application context every function shares: the backends (built once at start-up,
//! without I/O), the registered projections, and the stream guards of the domains that own
//! their streams ([`App::guard_streams`]; every write of another writer goes through
//! [`App::append`], which checks it against the owning domain's rules).
//!
//! An app is composed by an [`AppBuilder`] from any [`EventStore`] (with its snapshot store
//! and outbox, per entity type or for all), any [`ReadModelStore`] and any
//! [`NotificationSink`]: nothing here requires Azure. [`App::from_settings`] is that builder
//! fed from the app settings (Table storage, Append Blobs, Event Grid); [`App::in_memory`]
//! the same with every stream in memory.
//!
//! When notifications are on ([`crate::notify::NotificationSettings::enabled`]), every backend
//! is built with its notification outbox on and wrapped in a [`NotifyingStore`], so each
//! append records its pending notifications atomically and publishes them right after in the
//! background; [`App::dispatchers`] lists the backends' dispatchers for the
//! `NotificationSweep` timer function. With notifications off, nothing of this exists: no
//! outbox row is written and no dispatch runs.

use std::collections::HashMap;
use std::sync::Arc;

use crate::config::{BackendKind, ConfigError, Settings, StorageConnection, StorageTarget};
use crate::identity::ManagedIdentity;
use crate::notify::settings::{LOCAL_URL_SETTING, TOPIC_ENDPOINT_SETTING};
use crate::notify::{
    DeadLetterStore, Dispatcher, NotificationSink, NotificationTarget, NotifyingStore, Publisher,
    RaiseSwitches, RecentNotifications,
};
use crate::projection::{
    CommandPolicy, ConflictBudget, ExecuteError, GuardError, GuardRegistry, ProjectionRegistry,
    ProjectionRunner, RegistryError, SnapshotStore, StateCache, StreamGuard,
};
use crate::readmodel::{
    CheckpointCache, MemoryReadModelStore, ReadModelError, ReadModelProjector, ReadModelStore,
    TableReadModelStore,
};
use crate::storage::connection::StorageAccount;
use crate::storage::{BlobStore, MemoryStore, TableDeadLetters, TableSnapshotStore, TableStore};
use crate::stream::{
    AppendOutcome, EntityType, EventStore, ExpectedVersion, NewEvent, Outbox, StoreError, StreamId,
};

/// One backend: its event store and, where it has one, its snapshot store.
#[derive(Clone)]
pub struct Backend {
    pub events: Arc<dyn EventStore>,
    pub snapshots: Option<Arc<dyn SnapshotStore>>,
}

/// What an [`AppBuilder`] makes a [`Backend`] of: an event store, and optionally its snapshot
/// store and its notification outbox (with where refused notifications are kept).
#[derive(Clone)]
pub struct StoreSet {
    name: String,
    events: Arc<dyn EventStore>,
    snapshots: Option<Arc<dyn SnapshotStore>>,
    outbox: Option<(Arc<dyn Outbox>, Arc<dyn DeadLetterStore>)>,
}

impl StoreSet {
    /// An event store with no snapshots and no outbox; `name` identifies it in logs and in
    /// the notification sweep.
    pub fn new(name: impl Into<String>, events: Arc<dyn EventStore>) -> Self {
        Self {
            name: name.into(),
            events,
            snapshots: None,
            outbox: None,
        }
    }

    /// Projections over these streams resume from `snapshots`.
    pub fn with_snapshots(mut self, snapshots: Arc<dyn SnapshotStore>) -> Self {
        self.snapshots = Some(snapshots);
        self
    }

    /// The store's outbox (the pending notifications its appends record) and where the
    /// notifications the sink refuses for good are kept. Without one, the streams of this
    /// store raise no notifications even when the app has a sink.
    pub fn with_outbox(
        mut self,
        outbox: Arc<dyn Outbox>,
        dead_letters: Arc<dyn DeadLetterStore>,
    ) -> Self {
        self.outbox = Some((outbox, dead_letters));
        self
    }
}

/// Composes an [`App`] from stores of any kind (see the module).
pub struct AppBuilder {
    settings: Settings,
    default: Option<StoreSet>,
    by_entity: Vec<(EntityType, StoreSet)>,
    by_target: Vec<(StorageTarget, StoreSet)>,
    read_model_store: Option<Arc<dyn ReadModelStore>>,
    notifications: Option<Notifications>,
}

impl AppBuilder {
    /// A builder with nothing in it; `settings` gives the tuning every app has (conflict
    /// budget, snapshot interval, state cache size); its storage settings are not used.
    pub fn new(settings: Settings) -> Self {
        Self {
            settings,
            default: None,
            by_entity: Vec::new(),
            by_target: Vec::new(),
            read_model_store: None,
            notifications: None,
        }
    }

    /// The stores of every entity type that has none of its own.
    pub fn store(mut self, stores: StoreSet) -> Self {
        self.default = Some(stores);
        self
    }

    /// The stores of the streams of `entity_type` (the last given for one entity type wins).
    pub fn store_for(mut self, entity_type: &EntityType, stores: StoreSet) -> Self {
        self.by_entity.retain(|(known, _)| known != entity_type);
        self.by_entity.push((entity_type.clone(), stores));
        self
    }

    /// Where read-model rows live.
    pub fn read_model_store(mut self, store: Arc<dyn ReadModelStore>) -> Self {
        self.read_model_store = Some(store);
        self
    }

    /// Where notifications go, and which are raised: every store with an outbox then records
    /// its appends' notifications atomically and publishes them right after, in the
    /// background ([`App::dispatchers`] lists one dispatcher per such store).
    pub fn notifications(mut self, sink: Arc<dyn NotificationSink>, raise: RaiseSwitches) -> Self {
        self.notifications = Some(Notifications { sink, raise });
        self
    }

    /// The app. No I/O happens here.
    pub fn build(self) -> App {
        let mut dispatchers = Vec::new();
        let mut backend = |stores: StoreSet| -> Backend {
            let (events, dispatcher) = match (&self.notifications, stores.outbox) {
                (Some(notifications), Some((outbox, dead_letters))) => {
                    let dispatcher = Arc::new(Dispatcher::new(
                        stores.name,
                        stores.events.clone(),
                        outbox,
                        notifications.sink.clone(),
                        dead_letters,
                        notifications.raise,
                    ));
                    let events: Arc<dyn EventStore> =
                        Arc::new(NotifyingStore::new(stores.events, dispatcher.clone()));
                    (events, Some(dispatcher))
                }
                _ => (stores.events, None),
            };
            dispatchers.extend(dispatcher);
            Backend {
                events,
                snapshots: stores.snapshots,
            }
        };
        let by_target: HashMap<StorageTarget, Backend> = self
            .by_target
            .into_iter()
            .map(|(target, stores)| (target, backend(stores)))
            .collect();
        let by_entity: HashMap<EntityType, Backend> = self
            .by_entity
            .into_iter()
            .map(|(entity_type, stores)| (entity_type, backend(stores)))
            .collect();
        let default = self.default.map(&mut backend);
        let command_policy = command_policy(&self.settings);
        App {
            state_cache: Arc::new(StateCache::new(self.settings.state_cache_bytes)),
            checkpoints: Arc::new(CheckpointCache::new()),
            settings: self.settings,
            by_entity,
            by_target,
            default,
            projections: ProjectionRegistry::default(),
            read_model_store: self.read_model_store,
            read_models: ProjectionRegistry::default(),
            dispatchers,
            guards: GuardRegistry::default(),
            command_policy,
            recent_notifications: RecentNotifications::new(),
        }
    }
}

/// Shared state of the function app.
pub struct App {
    settings: Settings,
    /// Stores given for one entity type ([`AppBuilder::store_for`]).
    by_entity: HashMap<EntityType, Backend>,
    /// Stores of the storage targets the settings route entity types to.
    by_target: HashMap<StorageTarget, Backend>,
    /// The stores of every entity type that has none of its own.
    default: Option<Backend>,
    projections: ProjectionRegistry,
    /// Read models (`crate::readmodel`): where their rows live (`None` without storage
    /// settings) and which projections are kept as rows.
    read_model_store: Option<Arc<dyn ReadModelStore>>,
    read_models: ProjectionRegistry,
    /// One per backend when notifications are on; empty otherwise.
    dispatchers: Vec<Arc<Dispatcher>>,
    /// Projection states kept in process, shared by every runner.
    state_cache: Arc<StateCache>,
    /// Read-model rows this process saw, shared by every projector.
    checkpoints: Arc<CheckpointCache>,
    /// The entity types a domain owns, with its check of other writers' events.
    guards: GuardRegistry,
    /// The conflict budget from the settings, and the turns of every command of this process.
    command_policy: CommandPolicy,
    /// The notifications this process received lately (for watching; see the module).
    recent_notifications: RecentNotifications,
}

/// Where notifications go and which are raised, when they are on.
struct Notifications {
    sink: Arc<dyn NotificationSink>,
    raise: RaiseSwitches,
}

impl App {
    /// A builder of an app of any stores (see [`AppBuilder`]).
    pub fn builder(settings: Settings) -> AppBuilder {
        AppBuilder::new(settings)
    }

    /// The app the settings describe: a backend for every storage target they name (Table
    /// storage or Append Blobs, with snapshots in Table storage), read models in Table
    /// storage, notifications to Event Grid or a local webhook when they are on. No I/O
    /// happens here: the first request to a backend creates its table or container.
    pub fn from_settings(settings: Settings) -> Result<Self, ConfigError> {
        let notifications = notifications(&settings)?;
        let mut builder = AppBuilder::new(settings.clone());
        for target in settings.storage.targets() {
            if builder.by_target.iter().any(|(known, _)| known == target) {
                continue;
            }
            let stores = build_stores(target, notifications.is_some())?;
            builder.by_target.push((target.clone(), stores));
        }
        if let Some(target) = &settings.read_model_storage {
            builder = builder.read_model_store(build_read_model_store(target)?);
        }
        if let Some(Notifications { sink, raise }) = notifications {
            builder = builder.notifications(sink, raise);
        }
        Ok(builder.build())
    }

    /// An app whose every stream and read-model row lives in memory (for unit tests of
    /// functions).
    pub fn in_memory(settings: Settings) -> Self {
        AppBuilder::new(settings)
            .store(StoreSet::new("memory", Arc::new(MemoryStore::new())))
            .read_model_store(Arc::new(MemoryReadModelStore::new()))
            .build()
    }

    pub fn settings(&self) -> &Settings {
        &self.settings
    }

    /// The notifications this process received lately (the Projector and the plain webhook log
    /// each one they decode).
    pub fn recent_notifications(&self) -> &RecentNotifications {
        &self.recent_notifications
    }

    pub fn projections(&self) -> &ProjectionRegistry {
        &self.projections
    }

    pub fn projections_mut(&mut self) -> &mut ProjectionRegistry {
        &mut self.projections
    }

    /// The projections kept as read models (rows updated from notifications).
    pub fn read_models(&self) -> &ProjectionRegistry {
        &self.read_models
    }

    pub fn read_models_mut(&mut self) -> &mut ProjectionRegistry {
        &mut self.read_models
    }

    /// Makes a domain the owner of the streams of `entity_type`: every append to them
    /// through [`App::append`] (the generic AppendEvents API) is checked by `guard` against
    /// the stream's state (see [`crate::projection::guarded_append`]). One guard per entity
    /// type.
    pub fn guard_streams<G: StreamGuard>(
        &mut self,
        entity_type: &EntityType,
        guard: G,
    ) -> Result<&mut Self, RegistryError> {
        self.guards.register(entity_type, guard)?;
        Ok(self)
    }

    /// Whether a domain owns the streams of `entity_type`.
    pub fn is_guarded(&self, entity_type: &EntityType) -> bool {
        self.guards.get(entity_type).is_some()
    }

    /// Appends for a writer outside the owning domain (the generic API): through the domain's
    /// guard when one owns the stream, straight to the store otherwise. Appends of the owning
    /// domain's own commands go to [`App::store`]: they are decided by its rules already.
    pub async fn append(
        &self,
        stream: &StreamId,
        expected: ExpectedVersion,
        events: Vec<NewEvent>,
    ) -> Result<AppendOutcome, GuardError> {
        match self.guards.get(stream.entity_type()) {
            Some(guard) => {
                let runner = self.runner(stream.entity_type())?;
                let result = guard
                    .append(&runner, stream, expected, events, self.command_policy())
                    .await;
                // The guard checks the caller's expectation against the state it folds, which
                // an erased stream has not: the store says why the stream is not there.
                if let Err(GuardError::Failed(ExecuteError::Store(
                    StoreError::WrongExpectedVersion { actual: 0, .. },
                ))) = &result
                {
                    let store = self.store(stream.entity_type())?;
                    if store.is_erased(stream).await? {
                        return Err(GuardError::Failed(ExecuteError::Store(
                            StoreError::StreamErased {
                                stream: stream.to_string(),
                            },
                        )));
                    }
                }
                result
            }
            None => Ok(self
                .store(stream.entity_type())?
                .append(stream, expected, events)
                .await?),
        }
    }

    /// What every command (a domain's own, or a guarded append) runs with: how long and how
    /// often it is decided again after losing races to other writers
    /// (`StreamfoldConflictDeadlineMs`, and `StreamfoldConflictRetries` when set), and the
    /// turns that queue the commands of one stream in this process.
    pub fn command_policy(&self) -> CommandPolicy {
        self.command_policy.clone()
    }

    /// The projector for the read models of `entity_type`: its event store, the
    /// read-model store and the registered read models of that entity type.
    pub fn read_model_projector(
        &self,
        entity_type: &EntityType,
    ) -> Result<ReadModelProjector, ReadModelError> {
        Ok(ReadModelProjector::new(
            self.store(entity_type)?,
            self.read_model_store()?,
            self.read_models().projections(entity_type),
        )
        .with_cache(self.checkpoints.clone()))
    }

    /// Where read-model rows live.
    pub fn read_model_store(&self) -> Result<Arc<dyn ReadModelStore>, StoreError> {
        self.read_model_store.clone().ok_or_else(|| {
            StoreError::Misconfigured(format!(
                "no read-model storage is configured (set AzureWebJobsStorage or {})",
                crate::config::READ_MODEL_STORAGE_SETTING
            ))
        })
    }

    /// Replaces the read-model store (tests use their own).
    pub fn with_read_model_store(mut self, store: Arc<dyn ReadModelStore>) -> Self {
        self.read_model_store = Some(store);
        self
    }

    /// The projection states this process keeps (every runner's cache).
    pub fn state_cache(&self) -> &Arc<StateCache> {
        &self.state_cache
    }

    /// The notification dispatchers of the backends (empty when notifications are off).
    pub fn dispatchers(&self) -> &[Arc<Dispatcher>] {
        &self.dispatchers
    }

    /// The backend that holds the streams of `entity_type`: its own, else the one the
    /// storage settings route it to, else the default.
    pub fn backend(&self, entity_type: &EntityType) -> Result<&Backend, StoreError> {
        self.by_entity
            .get(entity_type)
            .or_else(|| {
                self.settings
                    .storage
                    .resolve(entity_type)
                    .and_then(|target| self.by_target.get(target))
            })
            .or(self.default.as_ref())
            .ok_or_else(|| {
                StoreError::Misconfigured(format!(
                    "no storage is configured for {domain}.{entity} (set AzureWebJobsStorage or {domain}.{entity})",
                    domain = entity_type.domain(),
                    entity = entity_type.entity(),
                ))
            })
    }

    /// The event store for `entity_type`.
    pub fn store(&self, entity_type: &EntityType) -> Result<Arc<dyn EventStore>, StoreError> {
        Ok(self.backend(entity_type)?.events.clone())
    }

    /// A projection runner over the streams of `entity_type`, with snapshots where the backend
    /// keeps them, and the app's state cache.
    pub fn runner(&self, entity_type: &EntityType) -> Result<ProjectionRunner, StoreError> {
        let backend = self.backend(entity_type)?;
        let runner =
            ProjectionRunner::new(backend.events.clone()).with_cache(self.state_cache.clone());
        Ok(match &backend.snapshots {
            Some(snapshots) => {
                runner.with_snapshots(snapshots.clone(), self.settings.snapshot_every)
            }
            None => runner,
        })
    }
}

/// How long and how often a command is decided again after losing races to other writers:
/// `StreamfoldConflictDeadlineMs`, and `StreamfoldConflictRetries` when set.
/// The commands' policy the settings ask for.
fn command_policy(settings: &Settings) -> CommandPolicy {
    let policy = CommandPolicy::new(conflict_budget(settings));
    if settings.group_commit {
        policy
    } else {
        policy.one_at_a_time()
    }
}

fn conflict_budget(settings: &Settings) -> ConflictBudget {
    ConflictBudget {
        deadline: settings.conflict_deadline,
        max_attempts: settings
            .conflict_retries
            .map(|retries| retries.saturating_add(1)),
        ..ConflictBudget::default()
    }
}

/// The sink and switches of the settings, when notifications are on.
fn notifications(settings: &Settings) -> Result<Option<Notifications>, ConfigError> {
    let publisher = Publisher::from_settings(&settings.notifications).map_err(|e| {
        let setting = match settings.notifications.target {
            Some(NotificationTarget::LocalWebhook { .. }) => LOCAL_URL_SETTING,
            _ => TOPIC_ENDPOINT_SETTING,
        };
        ConfigError {
            setting: setting.to_owned(),
            reason: e.to_string(),
        }
    })?;
    Ok(publisher.map(|publisher| Notifications {
        sink: Arc::new(publisher),
        raise: settings.notifications.raise,
    }))
}

/// The stores of `target`, with its outbox on when notifications are on.
fn build_stores(target: &StorageTarget, notify: bool) -> Result<StoreSet, ConfigError> {
    let account = storage_account(target)?;
    // The dead letters of each event store have a partition of their own (`crate::notify::
    // deadletter`): the backend kind and the table or container name.
    let (events, outbox, dead_letter_partition): (Arc<dyn EventStore>, Arc<dyn Outbox>, String) =
        match target.kind {
            BackendKind::Table => {
                let store = Arc::new(TableStore::new(account.clone()).with_outbox(notify));
                let partition = format!("{:?}|{}", target.kind, store.table_name());
                (store.clone(), store, partition)
            }
            // Appends to blobs write nothing for the outbox: pending notifications are derived
            // from the content (`crate::storage::blob::outbox`).
            BackendKind::AppendBlob => {
                let store = Arc::new(BlobStore::new(account.clone()));
                let partition = format!("{:?}|{}", target.kind, store.container_name());
                (store.clone(), store, partition)
            }
        };
    // Snapshots of blob streams live in Table storage of the same account too: they are
    // small, replaced in place, and read by key, which is what tables do well.
    let stores = StoreSet::new(
        format!("{:?};{}", target.kind, target.connection_setting),
        events,
    )
    .with_snapshots(Arc::new(TableSnapshotStore::new(account.clone())));
    Ok(match notify {
        true => stores.with_outbox(
            outbox,
            Arc::new(TableDeadLetters::new(&account, dead_letter_partition)),
        ),
        false => stores,
    })
}

fn build_read_model_store(target: &StorageTarget) -> Result<Arc<dyn ReadModelStore>, ConfigError> {
    let account = storage_account(target)?;
    Ok(Arc::new(TableReadModelStore::new(&account)))
}

/// The storage account of a target: from its connection string, or reached as the app's
/// managed identity (identity-based connection).
fn storage_account(target: &StorageTarget) -> Result<StorageAccount, ConfigError> {
    let account = match &target.connection {
        StorageConnection::ConnectionString(cs) => StorageAccount::from_connection_string(cs),
        StorageConnection::Identity(connection) => StorageAccount::with_identity(
            connection.table_endpoint.clone(),
            connection.blob_endpoint.clone(),
            ManagedIdentity::new(&connection.identity, connection.client_id.clone()),
        ),
    };
    account.map_err(|e| ConfigError {
        setting: target.connection_setting.clone(),
        reason: e.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::notify::dispatch::tests::MemoryOutbox;
    use crate::storage::MemoryDeadLetters;
    use crate::testing::MemorySink;

    const ORDERS: EntityType = EntityType::from_static("Shop", "Order");
    const CARTS: EntityType = EntityType::from_static("Shop", "Cart");

    fn event() -> NewEvent {
        NewEvent::from_raw(
            "Happened",
            serde_json::value::RawValue::from_string("{}".into()).unwrap(),
        )
    }

    /// Stores of any kind, given per entity type and for all, with a sink of any kind: each
    /// entity type's appends land in its own store, and only a store with an outbox notifies.
    #[tokio::test]
    async fn an_app_is_built_from_any_stores_and_sink() {
        let orders = Arc::new(MemoryStore::new());
        let others = Arc::new(MemoryStore::new());
        let sink = Arc::new(MemorySink::new());
        let app = App::builder(Settings::from_pairs(Vec::new()).unwrap())
            .store(StoreSet::new("others", others.clone()))
            .store_for(
                &ORDERS,
                StoreSet::new("orders", orders.clone()).with_outbox(
                    Arc::new(MemoryOutbox::new(orders.clone())),
                    Arc::new(MemoryDeadLetters::default()),
                ),
            )
            .read_model_store(Arc::new(MemoryReadModelStore::new()))
            .notifications(sink.clone(), RaiseSwitches::ALL)
            .build();
        assert_eq!(app.dispatchers().len(), 1, "one store has an outbox");
        assert!(app.read_model_store().is_ok());
        let order = ORDERS.stream("o-1").unwrap();
        let cart = CARTS.stream("c-1").unwrap();
        for stream in [&order, &cart] {
            app.append(stream, ExpectedVersion::NoStream, vec![event()])
                .await
                .unwrap();
        }
        assert_eq!(orders.version(&order).await.unwrap(), 1);
        assert_eq!(orders.version(&cart).await.unwrap(), 0);
        assert_eq!(others.version(&cart).await.unwrap(), 1);
        assert_eq!(others.version(&order).await.unwrap(), 0);
        app.dispatchers()[0].dispatch(&order).await.unwrap();
        let published = sink.published();
        assert!(published.iter().any(|n| n.data.instance == "o-1"));
        assert!(published.iter().all(|n| n.data.instance != "c-1"));
    }

    /// Without a default store, an entity type with none is a configuration error, not a
    /// panic; without a read-model store, so is a read model.
    #[test]
    fn missing_stores_are_misconfigured() {
        let app = App::builder(Settings::from_pairs(Vec::new()).unwrap())
            .store_for(
                &ORDERS,
                StoreSet::new("orders", Arc::new(MemoryStore::new())),
            )
            .build();
        assert!(app.store(&ORDERS).is_ok());
        assert!(matches!(
            app.store(&CARTS),
            Err(StoreError::Misconfigured(_))
        ));
        assert!(matches!(
            app.read_model_store(),
            Err(StoreError::Misconfigured(_))
        ));
    }
}
