//! The application context every function shares: the configured backends (built once at
//! start-up, without I/O), the registered projections, and the stream guards of the domains
//! that own their streams ([`App::guard_streams`]; every write of another writer goes through
//! [`App::append`], which checks it against the owning domain's rules).
//!
//! When notifications are on ([`crate::notify::NotificationSettings::enabled`]), every backend
//! is built with its notification outbox on and wrapped in a [`NotifyingStore`], so each
//! append records its pending notifications atomically and publishes them right after in the
//! background; [`App::dispatchers`] lists the backends' dispatchers for the
//! `NotificationSweep` timer function. With notifications off, nothing of this exists: no
//! outbox row is written and no dispatch runs.

use std::collections::HashMap;
use std::sync::Arc;

use crate::config::{BackendKind, ConfigError, Settings, StorageTarget};
use crate::notify::settings::{LOCAL_URL_SETTING, TOPIC_ENDPOINT_SETTING};
use crate::notify::{
    Dispatcher, NotificationSink, NotificationTarget, NotifyingStore, Publisher, RaiseSwitches,
    TableDeadLetters,
};
use crate::projection::{
    CommandPolicy, ConflictBudget, GuardError, GuardRegistry, ProjectionRegistry, ProjectionRunner,
    RegistryError, SnapshotStore, StateCache, StreamGuard,
};
use crate::readmodel::{
    MemoryReadModelStore, ReadModelError, ReadModelProjector, ReadModelStore, TableReadModelStore,
};
use crate::storage::connection::StorageAccount;
use crate::storage::{BlobStore, MemoryStore, TableSnapshotStore, TableStore};
use crate::stream::{
    AppendOutcome, EntityType, EventStore, ExpectedVersion, NewEvent, Outbox, StoreError, StreamId,
};

/// One configured backend: its event store and, where it has one, its snapshot store.
#[derive(Clone)]
pub struct Backend {
    pub events: Arc<dyn EventStore>,
    pub snapshots: Option<Arc<dyn SnapshotStore>>,
}

/// Shared state of the function app.
pub struct App {
    settings: Settings,
    backends: HashMap<StorageTarget, Backend>,
    /// Used for every domain when the app runs without configured storage (unit tests).
    fallback: Option<Backend>,
    projections: ProjectionRegistry,
    /// Read models (`crate::readmodel`): where their rows live (`None` without storage
    /// settings) and which projections are kept as rows.
    read_model_store: Option<Arc<dyn ReadModelStore>>,
    read_models: ProjectionRegistry,
    /// One per backend when notifications are on; empty otherwise.
    dispatchers: Vec<Arc<Dispatcher>>,
    /// Projection states kept in process, shared by every runner.
    state_cache: Arc<StateCache>,
    /// The entity types a domain owns, with its check of other writers' events.
    guards: GuardRegistry,
    /// The conflict budget from the settings, and the turns of every command of this process.
    command_policy: CommandPolicy,
}

/// Where notifications go and which are raised, when they are on.
struct Notifications {
    sink: Arc<dyn NotificationSink>,
    raise: RaiseSwitches,
}

impl App {
    /// Builds a backend for every storage target the settings name. No I/O happens here: the
    /// first request to a backend creates its table or container.
    pub fn from_settings(settings: Settings) -> Result<Self, ConfigError> {
        let notifications = notifications(&settings)?;
        let mut backends = HashMap::new();
        let mut dispatchers = Vec::new();
        for target in settings.storage.targets() {
            if backends.contains_key(target) {
                continue;
            }
            let (backend, dispatcher) = build_backend(target, notifications.as_ref())?;
            backends.insert(target.clone(), backend);
            dispatchers.extend(dispatcher);
        }
        let read_model_store = match &settings.read_model_storage {
            Some(target) => Some(build_read_model_store(target)?),
            None => None,
        };
        let command_policy = CommandPolicy::new(conflict_budget(&settings));
        Ok(Self {
            state_cache: Arc::new(StateCache::new(settings.state_cache_bytes)),
            settings,
            backends,
            fallback: None,
            projections: ProjectionRegistry::default(),
            read_model_store,
            read_models: ProjectionRegistry::default(),
            dispatchers,
            guards: GuardRegistry::default(),
            command_policy,
        })
    }

    /// An app whose every stream lives in memory (for unit tests of functions).
    pub fn in_memory(settings: Settings) -> Self {
        let store = Arc::new(MemoryStore::new());
        let command_policy = CommandPolicy::new(conflict_budget(&settings));
        Self {
            state_cache: Arc::new(StateCache::new(settings.state_cache_bytes)),
            settings,
            backends: HashMap::new(),
            fallback: Some(Backend {
                events: store,
                snapshots: None,
            }),
            projections: ProjectionRegistry::default(),
            read_model_store: Some(Arc::new(MemoryReadModelStore::new())),
            read_models: ProjectionRegistry::default(),
            dispatchers: Vec::new(),
            guards: GuardRegistry::default(),
            command_policy,
        }
    }

    pub fn settings(&self) -> &Settings {
        &self.settings
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
                guard
                    .append(&runner, stream, expected, events, self.command_policy())
                    .await
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
        ))
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

    /// The notification dispatchers of the backends (empty when notifications are off).
    pub fn dispatchers(&self) -> &[Arc<Dispatcher>] {
        &self.dispatchers
    }

    /// The backend that holds the streams of `entity_type`.
    pub fn backend(&self, entity_type: &EntityType) -> Result<&Backend, StoreError> {
        self.settings
            .storage
            .resolve(entity_type)
            .and_then(|target| self.backends.get(target))
            .or(self.fallback.as_ref())
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

/// The backend of `target`, with its outbox on and its dispatcher when notifications are on.
fn build_backend(
    target: &StorageTarget,
    notifications: Option<&Notifications>,
) -> Result<(Backend, Option<Arc<Dispatcher>>), ConfigError> {
    let account =
        StorageAccount::from_connection_string(&target.connection_string).map_err(|e| {
            ConfigError {
                setting: target.connection_setting.clone(),
                reason: e.to_string(),
            }
        })?;
    // The dead letters of each event store have a partition of their own (`crate::notify::
    // deadletter`): the backend kind and the table or container name.
    let (events, outbox, dead_letter_partition): (Arc<dyn EventStore>, Arc<dyn Outbox>, String) =
        match target.kind {
            BackendKind::Table => {
                let store =
                    Arc::new(TableStore::new(account.clone()).with_outbox(notifications.is_some()));
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
    let snapshots: Option<Arc<dyn SnapshotStore>> =
        Some(Arc::new(TableSnapshotStore::new(account.clone())));
    let Some(notifications) = notifications else {
        return Ok((Backend { events, snapshots }, None));
    };
    let dispatcher = Arc::new(Dispatcher::new(
        format!("{:?};{}", target.kind, target.connection_setting),
        events.clone(),
        outbox,
        notifications.sink.clone(),
        Arc::new(TableDeadLetters::new(&account, dead_letter_partition)),
        notifications.raise,
    ));
    let backend = Backend {
        events: Arc::new(NotifyingStore::new(events, dispatcher.clone())),
        snapshots,
    };
    Ok((backend, Some(dispatcher)))
}

fn build_read_model_store(target: &StorageTarget) -> Result<Arc<dyn ReadModelStore>, ConfigError> {
    let account =
        StorageAccount::from_connection_string(&target.connection_string).map_err(|e| {
            ConfigError {
                setting: target.connection_setting.clone(),
                reason: e.to_string(),
            }
        })?;
    Ok(Arc::new(TableReadModelStore::new(&account)))
}
