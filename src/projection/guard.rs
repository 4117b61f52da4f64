//! Stream guards: a domain's rules, enforced on events that other writers (the generic
//! AppendEvents API) append to the streams the domain owns.
//!
//! A domain registered with the app owns the streams of the entity types it registers a
//! [`StreamGuard`] for. An append to such a stream through [`guarded_append`] is validated
//! *through the domain*: the stream's current state is folded by the domain's own projection
//! (through the [`ProjectionRunner`], so snapshots and the state cache apply), and each new
//! event is checked by the guard against the state before it and then folded in by the same
//! projection, so a later event is checked against the state its predecessors make.
//!
//! Guarantees:
//! - **nothing a fold would refuse is written**: an event the guard refuses, or that the
//!   projection's `apply` refuses, refuses the whole append ([`GuardError::Refused`], naming
//!   the event's index, id, type and the reason) and nothing is written;
//! - **atomic with the state it was validated against**: the append is made with the exact
//!   version the state was folded at, so an append that lands is one the rules accepted after
//!   exactly the events it follows. A writer that got in between makes the append fail
//!   atomically; the state is folded again and the events checked again, within the
//!   [`super::ConflictBudget`], then [`ExecuteError::Contention`]. This is the command executor's loop
//!   ([`CommandExecutor`]): the guard is a command whose decision is "these events, if the
//!   expectation and the rules accept them";
//! - **the caller's expectation still holds**: it is checked against the version the state
//!   was folded at, before the rules (`WrongExpectedVersion` with the actual version, as an
//!   unguarded append answers), and the version used for the append meets it;
//! - **retries stay idempotent**: the events are the command's identity
//!   ([`Recognition::EventIds`]): before anything is refused (expectation or rules), the
//!   executor looks their ids up with an append that can never be written, so an exact retry
//!   of an append that landed is answered with the original outcome (`duplicate = true`) even
//!   though the state has moved since, and ids stored in another arrangement are
//!   `EventIdReused` — the same order of rules as an unguarded append. A retry that the rules
//!   still accept meets the same answer from the store itself;
//! - **an unreadable stream is not written**: when the current state cannot be folded
//!   ([`ProjectionError::Apply`]), nothing can be validated and the append is refused with
//!   that error.

use std::collections::BTreeMap;
use std::sync::Arc;

use async_trait::async_trait;
use time::OffsetDateTime;
use uuid::Uuid;

use super::{
    CommandExecutor, CommandOptions, CommandPolicy, ExecuteError, Projection, ProjectionError,
    ProjectionRunner, Recognition, RegistryError,
};
use crate::stream::{
    check_new_events, AppendOutcome, EntityType, ExpectedVersion, NewEvent, RecordedEvent,
    StoreError, StreamId,
};

/// A domain's check of events other writers append to its streams.
pub trait StreamGuard: Send + Sync + 'static {
    /// The projection whose state the rules are checked against (the domain's own state).
    type Projection: Projection;

    /// The projection; its `apply` folds each accepted event before the next one is checked
    /// (and refuses the append when it fails).
    fn projection(&self) -> &Self::Projection;

    /// Whether `event` may follow the events folded into `state`: `Err` with the reason, in
    /// words, when it may not (an unknown event type, data that is not what the domain
    /// writes, a transition its rules refuse). `event` is as it would be stored: the sequence
    /// it would get, its id, type, data and metadata, and the time of this check.
    fn check(
        &self,
        state: &<Self::Projection as Projection>::State,
        event: &RecordedEvent,
    ) -> Result<(), String>;
}

/// Why a guarded append wrote nothing.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum GuardError {
    /// Reading or writing the stream failed, or the caller's expectation is not met, or
    /// event ids were used before (as for any append), or the stream cannot be folded, or
    /// other writers kept changing it.
    #[error(transparent)]
    Failed(ExecuteError),

    /// The domain refuses one of the events.
    #[error("stream {stream}: event {index} ({event_type}, id {event_id}) is refused: {reason}")]
    Refused {
        stream: String,
        /// Position of the event in the append (0 = first).
        index: usize,
        event_id: Uuid,
        event_type: String,
        reason: String,
    },
}

impl From<ExecuteError> for GuardError {
    fn from(error: ExecuteError) -> Self {
        match error {
            // The projection's own refusal of an event is the domain's refusal.
            ExecuteError::Unfoldable {
                stream,
                index,
                event_id,
                event_type,
                reason,
            } => Self::Refused {
                stream,
                index,
                event_id,
                event_type,
                reason,
            },
            other => Self::Failed(other),
        }
    }
}

impl From<StoreError> for GuardError {
    fn from(error: StoreError) -> Self {
        Self::Failed(error.into())
    }
}

impl From<ProjectionError> for GuardError {
    fn from(error: ProjectionError) -> Self {
        Self::Failed(error.into())
    }
}

/// A [`StreamGuard`] with its types erased, so guards of different domains live in one map.
#[async_trait]
pub trait DynStreamGuard: Send + Sync {
    /// Appends `events` to `stream` if the domain accepts them (see the module guarantees),
    /// through `runner`'s event store.
    async fn append(
        &self,
        runner: &ProjectionRunner,
        stream: &StreamId,
        expected: ExpectedVersion,
        events: Vec<NewEvent>,
        policy: CommandPolicy,
    ) -> Result<AppendOutcome, GuardError>;
}

#[async_trait]
impl<G: StreamGuard> DynStreamGuard for G {
    async fn append(
        &self,
        runner: &ProjectionRunner,
        stream: &StreamId,
        expected: ExpectedVersion,
        events: Vec<NewEvent>,
        policy: CommandPolicy,
    ) -> Result<AppendOutcome, GuardError> {
        guarded_append(self, runner, stream, expected, events, policy).await
    }
}

/// Appends `events` to `stream` through `runner`'s event store if `guard` accepts them after
/// the stream's current state (see the module guarantees). `policy` bounds the folds made
/// when other writers get in between, and queues the commands of the stream in this process.
pub async fn guarded_append<G: StreamGuard>(
    guard: &G,
    runner: &ProjectionRunner,
    stream: &StreamId,
    expected: ExpectedVersion,
    events: Vec<NewEvent>,
    policy: CommandPolicy,
) -> Result<AppendOutcome, GuardError> {
    // What every store refuses without I/O (empty, bad event type, an id twice), refused
    // first, as an unguarded append would.
    check_new_events(&events)?;
    let executor = CommandExecutor::new(runner, guard.projection(), policy);
    let options = CommandOptions::recognised_by(Recognition::EventIds(events.clone()));
    let executed = executor
        .execute(stream, options, |state, version| {
            if !expected.is_met_by(version) {
                return Err(GuardError::from(StoreError::WrongExpectedVersion {
                    stream: stream.to_string(),
                    expected,
                    actual: version,
                }));
            }
            check_all(guard, stream, state.clone(), version, &events)?;
            Ok(events.clone())
        })
        .await?;
    Ok(executed.outcome)
}

/// Checks every event in order, each against the state its predecessors make.
fn check_all<G: StreamGuard>(
    guard: &G,
    stream: &StreamId,
    mut state: <G::Projection as Projection>::State,
    version: u64,
    events: &[NewEvent],
) -> Result<(), GuardError> {
    let now = OffsetDateTime::now_utc();
    for (index, (event, sequence)) in events.iter().zip(version.saturating_add(1)..).enumerate() {
        let refused = |reason: String| GuardError::Refused {
            stream: stream.to_string(),
            index,
            event_id: event.event_id,
            event_type: event.event_type.clone(),
            reason,
        };
        let proposed = RecordedEvent {
            sequence,
            event_id: event.event_id,
            event_type: event.event_type.clone(),
            data: event.data.clone(),
            timestamp: now,
            metadata: event.metadata.clone(),
        };
        guard.check(&state, &proposed).map_err(refused)?;
        guard
            .projection()
            .apply(&mut state, &proposed)
            .map_err(|e| refused(e.reason))?;
    }
    Ok(())
}

/// The guards of an app, by domain and entity type.
#[derive(Clone, Default)]
pub struct GuardRegistry {
    by_entity: BTreeMap<EntityType, Arc<dyn DynStreamGuard>>,
}

impl GuardRegistry {
    /// Makes `guard` the owner of the streams of `entity_type`; one guard per entity type.
    pub fn register<G: StreamGuard>(
        &mut self,
        entity_type: &EntityType,
        guard: G,
    ) -> Result<&mut Self, RegistryError> {
        if self.by_entity.contains_key(entity_type) {
            return Err(RegistryError::DuplicateGuard {
                domain: entity_type.domain().to_owned(),
                entity: entity_type.entity().to_owned(),
            });
        }
        self.by_entity.insert(entity_type.clone(), Arc::new(guard));
        Ok(self)
    }

    /// The guard of `entity_type`, if a domain owns those streams.
    pub fn get(&self, entity_type: &EntityType) -> Option<Arc<dyn DynStreamGuard>> {
        self.by_entity.get(entity_type).cloned()
    }
}

impl std::fmt::Debug for GuardRegistry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list()
            .entries(self.by_entity.keys().map(|e| e.to_string()))
            .finish()
    }
}

#[cfg(test)]
pub(super) mod tests {
    use std::sync::atomic::{AtomicU32, Ordering};

    use serde_json::value::RawValue;

    use super::*;
    use crate::projection::ApplyError;
    use crate::storage::MemoryStore;
    use crate::stream::{EventStore, StoreDecorator};

    /// State: a balance that must never go below zero; events `In`/`Out` with an amount.
    pub(crate) struct Balance;

    impl Projection for Balance {
        type State = i64;
        fn name(&self) -> &str {
            "balance"
        }
        fn version(&self) -> u32 {
            1
        }
        fn initial(&self) -> i64 {
            0
        }
        fn apply(&self, balance: &mut i64, event: &RecordedEvent) -> Result<(), ApplyError> {
            let amount: i64 = serde_json::from_str(event.data.get())
                .map_err(|e| ApplyError::new(event, e.to_string()))?;
            let next = match event.event_type.as_str() {
                "In" => balance.checked_add(amount),
                "Out" => balance.checked_sub(amount),
                _ => return Ok(()),
            };
            *balance = next
                .filter(|b| *b >= 0)
                .ok_or_else(|| ApplyError::new(event, "the balance would go below zero"))?;
            Ok(())
        }
    }

    struct Guard;

    impl StreamGuard for Guard {
        type Projection = Balance;
        fn projection(&self) -> &Balance {
            &Balance
        }
        fn check(&self, _: &i64, event: &RecordedEvent) -> Result<(), String> {
            match event.event_type.as_str() {
                "In" | "Out" => Ok(()),
                other => Err(format!("{other} is not an event of this stream")),
            }
        }
    }

    pub(crate) fn event(event_type: &str, amount: i64) -> NewEvent {
        NewEvent::from_raw(
            event_type,
            RawValue::from_string(amount.to_string()).unwrap(),
        )
    }

    pub(crate) fn stream() -> StreamId {
        StreamId::new("Bank", "Account", "G1").unwrap()
    }

    /// A store that lets another writer append `competitor` right before each of the first
    /// `races` appends it is asked for.
    pub(crate) struct Racing {
        pub(crate) inner: MemoryStore,
        pub(crate) races: AtomicU32,
        pub(crate) competitor: fn() -> NewEvent,
    }

    #[async_trait]
    impl StoreDecorator for Racing {
        fn inner(&self) -> &dyn EventStore {
            &self.inner
        }

        async fn append(
            &self,
            stream: &StreamId,
            expected: ExpectedVersion,
            events: Vec<NewEvent>,
        ) -> Result<AppendOutcome, StoreError> {
            if self
                .races
                .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
                .is_ok()
            {
                self.inner
                    .append(stream, ExpectedVersion::Any, vec![(self.competitor)()])
                    .await?;
            }
            self.inner.append(stream, expected, events).await
        }
    }

    /// Three attempts, no waiting between them.
    pub(crate) fn budget() -> crate::projection::ConflictBudget {
        crate::projection::ConflictBudget {
            max_attempts: Some(3),
            first_backoff: std::time::Duration::ZERO,
            ..crate::projection::ConflictBudget::default()
        }
    }

    fn runner() -> ProjectionRunner {
        ProjectionRunner::new(Arc::new(MemoryStore::new()))
    }

    async fn append(
        runner: &ProjectionRunner,
        expected: ExpectedVersion,
        events: Vec<NewEvent>,
    ) -> Result<AppendOutcome, GuardError> {
        guarded_append(
            &Guard,
            runner,
            &stream(),
            expected,
            events,
            CommandPolicy::new(budget()),
        )
        .await
    }

    async fn version(runner: &ProjectionRunner) -> u64 {
        runner.store().version(&stream()).await.unwrap()
    }

    #[tokio::test]
    async fn accepted_events_land_and_refused_ones_write_nothing() {
        let runner = runner();
        let outcome = append(&runner, ExpectedVersion::NoStream, vec![event("In", 100)])
            .await
            .unwrap();
        assert_eq!((outcome.version, outcome.duplicate), (1, false));
        // The second event is checked against the state the first one makes.
        let refused = append(
            &runner,
            ExpectedVersion::Any,
            vec![event("Out", 60), event("Out", 60)],
        )
        .await
        .unwrap_err();
        match refused {
            GuardError::Refused {
                index, event_type, ..
            } => assert_eq!((index, event_type.as_str()), (1, "Out")),
            other => panic!("{other:?}"),
        }
        let unknown = append(&runner, ExpectedVersion::Any, vec![event("Bonus", 1)]).await;
        assert!(matches!(unknown, Err(GuardError::Refused { index: 0, .. })));
        assert_eq!(version(&runner).await, 1);
        append(
            &runner,
            ExpectedVersion::Exact(1),
            vec![event("Out", 60), event("Out", 40)],
        )
        .await
        .unwrap();
        assert_eq!(version(&runner).await, 3);
    }

    #[tokio::test]
    async fn the_callers_expectation_is_checked_first() {
        let runner = runner();
        append(&runner, ExpectedVersion::Any, vec![event("In", 1)])
            .await
            .unwrap();
        for expected in [ExpectedVersion::NoStream, ExpectedVersion::Exact(7)] {
            match append(&runner, expected, vec![event("In", 1)]).await {
                Err(GuardError::Failed(ExecuteError::Store(
                    StoreError::WrongExpectedVersion { actual, .. },
                ))) => {
                    assert_eq!(actual, 1)
                }
                other => panic!("{other:?}"),
            }
        }
        let missing = guarded_append(
            &Guard,
            &runner,
            &StreamId::new("Bank", "Account", "none").unwrap(),
            ExpectedVersion::Exists,
            vec![event("In", 1)],
            CommandPolicy::new(budget()),
        )
        .await;
        assert!(matches!(
            missing,
            Err(GuardError::Failed(ExecuteError::Store(
                StoreError::WrongExpectedVersion { actual: 0, .. }
            )))
        ));
        assert!(matches!(
            append(&runner, ExpectedVersion::Any, Vec::new()).await,
            Err(GuardError::Failed(ExecuteError::Store(
                StoreError::EmptyAppend
            )))
        ));
    }

    /// An exact retry answers the original outcome though the state it was checked against
    /// has moved (the rules, or the caller's expectation, would refuse it now).
    #[tokio::test]
    async fn exact_retries_answer_the_original_outcome() {
        let runner = runner();
        append(&runner, ExpectedVersion::NoStream, vec![event("In", 100)])
            .await
            .unwrap();
        let withdrawal = vec![event("Out", 60)];
        let first = append(&runner, ExpectedVersion::Exact(1), withdrawal.clone())
            .await
            .unwrap();
        for _ in 0..2 {
            let again = append(&runner, ExpectedVersion::Exact(1), withdrawal.clone())
                .await
                .unwrap();
            assert!(again.duplicate);
            assert_eq!(
                (again.first_sequence, again.version),
                (first.first_sequence, first.version)
            );
        }
        // The same ids in another arrangement are reused ids, as for any append.
        let reused = vec![withdrawal[0].clone(), event("In", 1)];
        assert!(matches!(
            append(&runner, ExpectedVersion::Any, reused).await,
            Err(GuardError::Failed(ExecuteError::Store(
                StoreError::EventIdReused { .. }
            )))
        ));
        assert_eq!(version(&runner).await, 2);
    }

    /// A writer that gets in between the fold and the append makes the events be checked
    /// again against the new state: here that refuses them, so the rules hold whatever the
    /// interleaving.
    #[tokio::test]
    async fn a_race_is_checked_again_and_contention_is_bounded() {
        let store = Arc::new(Racing {
            inner: MemoryStore::new(),
            races: AtomicU32::new(0),
            competitor: || event("Out", 60),
        });
        let runner = ProjectionRunner::new(store.clone());
        append(&runner, ExpectedVersion::NoStream, vec![event("In", 100)])
            .await
            .unwrap();
        store.races.store(1, Ordering::SeqCst);
        let refused = append(&runner, ExpectedVersion::Any, vec![event("Out", 60)]).await;
        assert!(
            matches!(refused, Err(GuardError::Refused { .. })),
            "{refused:?}"
        );
        assert_eq!(version(&runner).await, 2);

        let store = Arc::new(Racing {
            inner: MemoryStore::new(),
            races: AtomicU32::new(u32::MAX),
            competitor: || event("In", 1),
        });
        let runner = ProjectionRunner::new(store);
        let contended = append(&runner, ExpectedVersion::Any, vec![event("In", 1)]).await;
        assert!(
            matches!(
                contended,
                Err(GuardError::Failed(ExecuteError::Contention {
                    attempts: 3,
                    ..
                }))
            ),
            "{contended:?}"
        );
        // Only the competitors were written.
        assert_eq!(version(&runner).await, 3);
    }

    #[tokio::test]
    async fn a_stream_that_cannot_be_folded_is_not_written() {
        let runner = runner();
        runner
            .store()
            .append(&stream(), ExpectedVersion::Any, vec![event("Out", 5)])
            .await
            .unwrap();
        let refused = append(&runner, ExpectedVersion::Any, vec![event("In", 5)]).await;
        assert!(
            matches!(
                refused,
                Err(GuardError::Failed(ExecuteError::Projection(
                    ProjectionError::Apply { .. }
                )))
            ),
            "{refused:?}"
        );
        assert_eq!(version(&runner).await, 1);
    }

    #[test]
    fn one_guard_per_entity_type() {
        let mut registry = GuardRegistry::default();
        registry
            .register(&EntityType::from_static("Bank", "Account"), Guard)
            .unwrap();
        assert!(matches!(
            registry.register(&EntityType::from_static("Bank", "Account"), Guard),
            Err(RegistryError::DuplicateGuard { .. })
        ));

        assert!(registry
            .get(&EntityType::from_static("Bank", "Account"))
            .is_some());
        assert!(registry
            .get(&EntityType::from_static("Bank", "Loan"))
            .is_none());
    }
}
