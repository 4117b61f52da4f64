//! Commands: decided on a stream's current state, appended with exactly that state's version,
//! and decided again from the fresh state when another writer got in first.
//!
//! [`CommandExecutor::execute`] is the one loop through which every domain's commands (the
//! bank's, and the stream guard's checks of the generic API, `super::guard`) reach a stream:
//! 1. **load**: the domain's projection folded to the stream's head by the
//!    [`ProjectionRunner`] (state cache and snapshots apply: on an instance that knows the
//!    stream, one request, the version);
//! 2. **decide**: the domain's closure turns the state (and its version) into events, or a
//!    refusal of its own type;
//! 3. **append** with `ExpectedVersion::Exact(version)`: checked in the same atomic storage
//!    operation as the write, so two commands never both pass a check against one state;
//! 0. **take the stream's turn** in this process ([`StreamTurns`]): commands on one stream in
//!    one process run one after the other, from the state the previous one left in the cache,
//!    so only other processes' commands can make an append lose;
//! 4. on a **version conflict** (another writer got in between): wait a random time below an
//!    exponentially growing bound ("full jitter", so writers that collided spread out) and go
//!    back to 1, within the [`ConflictBudget`] (a deadline, optionally a number of attempts);
//!    past it, [`ExecuteError::Contention`]. Any other storage error ends the command at once
//!    (the store retries what is worth retrying).
//!
//! Guarantees:
//! - **nothing the domain's own fold refuses is written**: the decided events are folded into
//!   the state before the append ([`ExecuteError::Unfoldable`] otherwise), and that fold is the
//!   state the command answers with ([`Executed::state`]);
//! - **a command lands at most once per identity** ([`Recognition`]): with an idempotency key
//!   (ids derived from it, `super::idempotency`) or with the caller's own event ids, a command
//!   that landed before is recognised by the store's event-id rule in the append itself and
//!   answered as the earlier append ([`Executed::outcome`] with `duplicate`, the events as
//!   stored, the state as of its last event): nothing is written, whatever moved since. Before
//!   a refusal is answered, the identity is looked up with an append that can never be written
//!   (expecting "no stream" of a stream that exists), so a retry the rules would refuse now (the
//!   funds were withdrawn since) still gets its first answer;
//! - **a key is one request**: a key whose stored events carry another request's hash is
//!   [`ExecuteError::IdempotencyKeyReused`], nothing written;
//! - a refusal writes nothing (so it consumes no key) and is answered as the domain gave it.

use std::sync::Arc;
use std::time::Duration;

use time::OffsetDateTime;
use tokio::time::Instant;
use uuid::Uuid;

use super::{AsOf, Idempotency, Projection, ProjectionError, ProjectionRunner, StreamTurns};
use crate::stream::{
    random_unit, AppendOutcome, ExpectedVersion, NewEvent, ReadRequest, RecordedEvent, StoreError,
    StreamId,
};

/// Default time a command keeps deciding again after lost races.
pub const DEFAULT_CONFLICT_DEADLINE: Duration = Duration::from_secs(30);
/// Bound of the wait after the first lost race; it doubles with each further one.
pub const FIRST_CONFLICT_BACKOFF: Duration = Duration::from_millis(4);
/// Largest bound of one wait between attempts.
pub const MAX_CONFLICT_BACKOFF: Duration = Duration::from_millis(200);
/// Events read at a time when looking for a key's events in a stream.
const LOCATE_CHUNK_EVENTS: u64 = 1_000;

/// How long and how often a command is decided again after losing races to other writers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConflictBudget {
    /// No attempt starts later than this after the first one (its wait counted).
    pub deadline: Duration,
    /// At most this many attempts, the first included (`None`: the deadline alone bounds them).
    pub max_attempts: Option<u32>,
    /// Bound of the wait after the first lost race (doubling after each further one).
    pub first_backoff: Duration,
    /// Largest bound of one wait.
    pub max_backoff: Duration,
}

impl Default for ConflictBudget {
    fn default() -> Self {
        Self {
            deadline: DEFAULT_CONFLICT_DEADLINE,
            max_attempts: None,
            first_backoff: FIRST_CONFLICT_BACKOFF,
            max_backoff: MAX_CONFLICT_BACKOFF,
        }
    }
}

impl ConflictBudget {
    /// The wait after `lost` lost races (1 = the first), given `unit` in `[0, 1)` drawn at
    /// random: uniform below `min(first_backoff * 2^(lost-1), max_backoff)`.
    pub fn backoff(&self, lost: u32, unit: f64) -> Duration {
        let exponent = lost.saturating_sub(1).min(31);
        let bound = self
            .first_backoff
            .saturating_mul(1u32 << exponent)
            .min(self.max_backoff);
        bound.mul_f64(unit.clamp(0.0, 1.0))
    }

    /// Whether attempt `attempts + 1` may start `elapsed` after the first one.
    fn allows(&self, attempts: u32, elapsed: Duration) -> bool {
        elapsed <= self.deadline && self.max_attempts.is_none_or(|max| attempts < max)
    }
}

/// What the commands of an app share: how long to keep deciding again after lost races, and
/// the turns that queue the commands of one stream in this process.
#[derive(Debug, Clone, Default)]
pub struct CommandPolicy {
    pub budget: ConflictBudget,
    pub turns: Arc<StreamTurns>,
}

impl CommandPolicy {
    /// `budget`, with turns of its own.
    pub fn new(budget: ConflictBudget) -> Self {
        Self {
            budget,
            turns: Arc::default(),
        }
    }
}

/// How a command that landed before is recognised when it is sent again.
#[derive(Debug, Clone, Default)]
pub enum Recognition {
    /// It is not: the decided events keep the ids they were given.
    #[default]
    Unrecognised,
    /// By the ids of these events, which the caller chose (the generic API, where the events
    /// are the command); the decided events must be these.
    EventIds(Vec<NewEvent>),
    /// By an idempotency key: the decided events get ids derived from it, and the key and the
    /// request's hash in their metadata.
    Key(Idempotency),
}

/// How to run one command.
#[derive(Debug, Clone, Default)]
pub struct CommandOptions {
    pub recognition: Recognition,
    /// Decide the first attempt on the projection's initial state without reading, and append
    /// it expecting no stream (for a command that creates its stream: one request when the
    /// stream is new; when it exists, the state is read and the command decided on it).
    pub assume_new_stream: bool,
}

impl CommandOptions {
    /// Recognised by `recognition`, the state read first.
    pub fn recognised_by(recognition: Recognition) -> Self {
        Self {
            recognition,
            assume_new_stream: false,
        }
    }

    /// With an idempotency key when one is given.
    pub fn with_key(idempotency: Option<Idempotency>) -> Self {
        Self::recognised_by(idempotency.map_or(Recognition::Unrecognised, Recognition::Key))
    }

    /// The same, deciding the first attempt as if the stream were new.
    pub fn assuming_new_stream(mut self) -> Self {
        self.assume_new_stream = true;
        self
    }
}

/// A command that landed, now or before.
#[derive(Debug, Clone)]
pub struct Executed<S> {
    /// The append; `duplicate` when the command had landed before and nothing was written now.
    pub outcome: AppendOutcome,
    /// The stream's state right after the command's events (for a replay, as of the earlier
    /// append's last event): the same for the first answer and every replay.
    pub state: S,
    /// The command's events as stored (for a replay, as the earlier attempt stored them; for
    /// a new append, with the time the store recorded when it told it).
    pub events: Vec<RecordedEvent>,
}

impl<S> Executed<S> {
    /// Whether this is the answer of an earlier attempt (nothing written now).
    pub fn replayed(&self) -> bool {
        self.outcome.duplicate
    }
}

/// Why a command failed, other than the domain's own refusal.
#[derive(Debug, thiserror::Error)]
pub enum ExecuteError {
    #[error(transparent)]
    Store(#[from] StoreError),

    /// The stream's state cannot be folded, so nothing can be decided on it.
    #[error(transparent)]
    Projection(#[from] ProjectionError),

    /// Other writers kept changing the stream for the whole budget.
    #[error("stream {stream}: gave up after {attempts} attempts in {} ms: other writers kept changing the stream", elapsed.as_millis())]
    Contention {
        stream: String,
        attempts: u32,
        elapsed: Duration,
    },

    /// The idempotency key was used before in this stream with another request.
    #[error("stream {stream}: idempotency key {key:?} was used before with another request")]
    IdempotencyKeyReused { stream: String, key: String },

    /// The command decided an event its own projection refuses after the events before it.
    #[error("stream {stream}: event {index} ({event_type}, id {event_id}) is refused: {reason}")]
    Unfoldable {
        stream: String,
        /// Position of the event in the command (0 = first).
        index: usize,
        event_id: Uuid,
        event_type: String,
        reason: String,
    },
}

/// Runs commands on the streams of one runner's store, deciding them on `projection`'s state.
pub struct CommandExecutor<'a, P: Projection> {
    runner: &'a ProjectionRunner,
    projection: &'a P,
    policy: CommandPolicy,
}

impl<'a, P: Projection> CommandExecutor<'a, P> {
    pub fn new(runner: &'a ProjectionRunner, projection: &'a P, policy: CommandPolicy) -> Self {
        Self {
            runner,
            projection,
            policy,
        }
    }

    /// Runs one command on `stream` (see the module guarantees): `decide` gets the state and
    /// the version it is as of, and gives the events to append (none: nothing is written) or
    /// its refusal, which is answered as it is.
    pub async fn execute<R, D>(
        &self,
        stream: &StreamId,
        options: CommandOptions,
        mut decide: D,
    ) -> Result<Executed<P::State>, R>
    where
        R: From<ExecuteError> + Send,
        D: FnMut(&P::State, u64) -> Result<Vec<NewEvent>, R> + Send,
    {
        let CommandOptions {
            recognition,
            mut assume_new_stream,
        } = options;
        let started = Instant::now();
        let _turn = self.policy.turns.take(stream).await;
        let mut attempts: u32 = 0;
        loop {
            let assumed = std::mem::take(&mut assume_new_stream);
            let (state, version, expected) = if assumed {
                (self.projection.initial(), 0, ExpectedVersion::NoStream)
            } else {
                attempts = attempts.saturating_add(1);
                let current = self
                    .runner
                    .run(stream, self.projection, AsOf::Latest)
                    .await
                    .map_err(ExecuteError::from)?;
                let version = current.stream_version;
                (current.state, version, ExpectedVersion::Exact(version))
            };
            let events = match decide(&state, version) {
                Ok(events) => stamp(stream, &recognition, events),
                Err(refusal) if assumed => {
                    // Refused on the assumed state: decide on the real one.
                    drop(refusal);
                    continue;
                }
                Err(refusal) => {
                    return self
                        .refused(stream, &recognition, &state, version, refusal)
                        .await
                }
            };
            if events.is_empty() {
                return Ok(Executed {
                    outcome: AppendOutcome {
                        first_sequence: version.saturating_add(1),
                        version,
                        created: false,
                        duplicate: false,
                        recorded: None,
                    },
                    state,
                    events: Vec::new(),
                });
            }
            let now = OffsetDateTime::now_utc();
            let proposed = as_recorded(&events, version.saturating_add(1), now);
            let after = self.fold(stream, state.clone(), &proposed)?;
            match self
                .runner
                .store()
                .append(stream, expected, events.clone())
                .await
            {
                Ok(outcome) if !outcome.duplicate => {
                    self.runner
                        .remember_append(stream, self.projection, &events, &outcome);
                    let recorded = outcome.recorded.unwrap_or(now);
                    let stored = as_recorded(&events, outcome.first_sequence, recorded);
                    // The answer's state is folded from the events as stored, time included.
                    let state = if recorded == now {
                        after
                    } else {
                        self.fold(stream, state, &stored).unwrap_or(after)
                    };
                    return Ok(Executed {
                        outcome,
                        state,
                        events: stored,
                    });
                }
                Ok(earlier) => {
                    return Ok(self
                        .replay(stream, &recognition, earlier, (&state, version))
                        .await?)
                }
                Err(StoreError::WrongExpectedVersion { .. }) if assumed => continue,
                Err(StoreError::WrongExpectedVersion { .. }) => {
                    let budget = &self.policy.budget;
                    let wait = budget.backoff(attempts, random_unit());
                    let elapsed = started.elapsed();
                    if !budget.allows(attempts, elapsed.saturating_add(wait)) {
                        return Err(ExecuteError::Contention {
                            stream: stream.to_string(),
                            attempts,
                            elapsed,
                        }
                        .into());
                    }
                    tokio::time::sleep(wait).await;
                }
                Err(StoreError::EventIdReused { .. })
                    if matches!(recognition, Recognition::Key(_)) =>
                {
                    return Ok(self
                        .replay_located(stream, &recognition, (&state, version))
                        .await?)
                }
                Err(e) => return Err(ExecuteError::Store(e).into()),
            }
        }
    }

    /// Answers the domain's refusal, unless the command landed before: then its first answer.
    async fn refused<R: From<ExecuteError>>(
        &self,
        stream: &StreamId,
        recognition: &Recognition,
        state: &P::State,
        version: u64,
        refusal: R,
    ) -> Result<Executed<P::State>, R> {
        let probe = match recognition {
            Recognition::Unrecognised => return Err(refusal),
            Recognition::EventIds(events) => events.clone(),
            Recognition::Key(idempotency) => vec![idempotency.probe(stream)],
        };
        // A stream with no events holds no ids; and expecting "no stream" of it would write.
        if version == 0 {
            return Err(refusal);
        }
        match self
            .runner
            .store()
            .append(stream, ExpectedVersion::NoStream, probe)
            .await
        {
            Ok(earlier) if earlier.duplicate => Ok(self
                .replay(stream, recognition, earlier, (state, version))
                .await?),
            Ok(outcome) => {
                // Streams never cease to exist, so this cannot happen; say so loudly if it does.
                tracing::error!(
                    stream = %stream,
                    version,
                    new_version = outcome.version,
                    "an append expecting no stream was written to a stream that existed"
                );
                Err(refusal)
            }
            Err(StoreError::WrongExpectedVersion { .. }) => Err(refusal),
            Err(StoreError::EventIdReused { .. }) if matches!(recognition, Recognition::Key(_)) => {
                Ok(self
                    .replay_located(stream, recognition, (state, version))
                    .await?)
            }
            Err(e) => Err(ExecuteError::Store(e).into()),
        }
    }

    /// The answer of the earlier append `earlier` of this command: its events as stored
    /// (checked against the key's request), and the state as of its last event (`current`,
    /// the state at a version, when that is the one).
    async fn replay(
        &self,
        stream: &StreamId,
        recognition: &Recognition,
        earlier: AppendOutcome,
        current: (&P::State, u64),
    ) -> Result<Executed<P::State>, ExecuteError> {
        let events = self
            .runner
            .store()
            .read(
                stream,
                ReadRequest::range(earlier.first_sequence, Some(earlier.version)),
            )
            .await?
            .events;
        let expected_len = earlier
            .version
            .checked_sub(earlier.first_sequence)
            .and_then(|n| n.checked_add(1));
        if expected_len != Some(events.len() as u64) {
            return Err(StoreError::Corrupt {
                stream: stream.to_string(),
                detail: format!(
                    "events {}..={} were reported stored but {} of them were read",
                    earlier.first_sequence,
                    earlier.version,
                    events.len()
                ),
            }
            .into());
        }
        if let Recognition::Key(idempotency) = recognition {
            if !idempotency.matches(&events) {
                return Err(ExecuteError::IdempotencyKeyReused {
                    stream: stream.to_string(),
                    key: idempotency.key().to_string(),
                });
            }
        }
        let state = match current {
            (state, version) if version == earlier.version => state.clone(),
            _ => {
                self.runner
                    .run(stream, self.projection, AsOf::Sequence(earlier.version))
                    .await?
                    .state
            }
        };
        Ok(Executed {
            outcome: AppendOutcome {
                duplicate: true,
                recorded: None,
                ..earlier
            },
            state,
            events,
        })
    }

    /// [`Self::replay`] of a key whose events are not where one append's retry would find
    /// them (the store answered `EventIdReused`: the command wrote another number of events
    /// before): finds them by reading the stream.
    async fn replay_located(
        &self,
        stream: &StreamId,
        recognition: &Recognition,
        current: (&P::State, u64),
    ) -> Result<Executed<P::State>, ExecuteError> {
        let Recognition::Key(idempotency) = recognition else {
            return Err(StoreError::EventIdReused {
                stream: stream.to_string(),
                event_id: Uuid::nil(),
            }
            .into());
        };
        match self.locate(stream, idempotency).await? {
            Some((first, last)) => {
                let earlier = AppendOutcome {
                    first_sequence: first,
                    version: last,
                    created: first == 1,
                    duplicate: true,
                    recorded: None,
                };
                self.replay(stream, recognition, earlier, current).await
            }
            // Some of the key's ids hold events of other writes.
            None => Err(ExecuteError::IdempotencyKeyReused {
                stream: stream.to_string(),
                key: idempotency.key().to_string(),
            }),
        }
    }

    /// The sequences of the run of events carrying the key's ids in order, from its first.
    async fn locate(
        &self,
        stream: &StreamId,
        idempotency: &Idempotency,
    ) -> Result<Option<(u64, u64)>, ExecuteError> {
        let first_id = idempotency.event_id(stream, 0);
        let mut found: Option<(u64, u64)> = None;
        let mut from = 1u64;
        loop {
            let to = from.saturating_add(LOCATE_CHUNK_EVENTS - 1);
            let slice = self
                .runner
                .store()
                .read(stream, ReadRequest::range(from, Some(to)))
                .await?;
            for event in &slice.events {
                found = match found {
                    None if event.event_id == first_id => Some((event.sequence, event.sequence)),
                    None => None,
                    Some((first, last)) => {
                        let index = event
                            .sequence
                            .checked_sub(first)
                            .and_then(|i| usize::try_from(i).ok());
                        let next = last.checked_add(1) == Some(event.sequence)
                            && index
                                .is_some_and(|i| event.event_id == idempotency.event_id(stream, i));
                        if !next {
                            return Ok(found);
                        }
                        Some((first, event.sequence))
                    }
                };
            }
            if to >= slice.version || slice.events.is_empty() {
                return Ok(found);
            }
            from = to.saturating_add(1);
        }
    }

    /// `state` after `events`, by the projection; the first it refuses is named.
    fn fold(
        &self,
        stream: &StreamId,
        mut state: P::State,
        events: &[RecordedEvent],
    ) -> Result<P::State, ExecuteError> {
        for (index, event) in events.iter().enumerate() {
            self.projection
                .apply(&mut state, event)
                .map_err(|e| ExecuteError::Unfoldable {
                    stream: stream.to_string(),
                    index,
                    event_id: event.event_id,
                    event_type: event.event_type.clone(),
                    reason: e.reason,
                })?;
        }
        Ok(state)
    }
}

/// The decided events as they are written under `recognition`.
fn stamp(stream: &StreamId, recognition: &Recognition, events: Vec<NewEvent>) -> Vec<NewEvent> {
    match recognition {
        Recognition::Key(idempotency) => idempotency.stamp(stream, events),
        Recognition::Unrecognised | Recognition::EventIds(_) => events,
    }
}

/// `events` as a read would return them, from `first_sequence`, recorded at `timestamp`.
fn as_recorded(
    events: &[NewEvent],
    first_sequence: u64,
    timestamp: OffsetDateTime,
) -> Vec<RecordedEvent> {
    events
        .iter()
        .zip(first_sequence..)
        .map(|(event, sequence)| RecordedEvent {
            sequence,
            event_id: event.event_id,
            event_type: event.event_type.clone(),
            data: event.data.clone(),
            timestamp,
            metadata: event.metadata.clone(),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicU32, Ordering};
    use std::sync::Arc;

    use super::*;
    use crate::projection::guard::tests::{budget, event, stream, Balance, Racing};
    use crate::projection::IdempotencyKey;
    use crate::storage::MemoryStore;

    /// What the test domain refuses.
    #[derive(Debug)]
    enum TestError {
        Refused(&'static str),
        Failed(ExecuteError),
    }

    impl From<ExecuteError> for TestError {
        fn from(e: ExecuteError) -> Self {
            Self::Failed(e)
        }
    }

    type Result<T> = std::result::Result<T, TestError>;

    /// A withdrawal: refused when the balance does not cover it.
    fn withdraw(amount: i64) -> impl FnMut(&i64, u64) -> Result<Vec<NewEvent>> + Send {
        move |balance, _| {
            if *balance < amount {
                return Err(TestError::Refused("insufficient funds"));
            }
            Ok(vec![event("Out", amount)])
        }
    }

    fn deposit(amount: i64) -> impl FnMut(&i64, u64) -> Result<Vec<NewEvent>> + Send {
        move |_, _| Ok(vec![event("In", amount)])
    }

    fn keyed(key: &str, request: &str) -> CommandOptions {
        CommandOptions::with_key(Some(Idempotency::new(
            IdempotencyKey::new(key).unwrap(),
            request.as_bytes(),
        )))
    }

    fn racing(races: u32) -> Arc<Racing> {
        Arc::new(Racing {
            inner: MemoryStore::new(),
            races: AtomicU32::new(races),
            competitor: || event("In", 1),
        })
    }

    async fn version(runner: &ProjectionRunner) -> u64 {
        runner.store().version(&stream()).await.unwrap()
    }

    #[tokio::test]
    async fn lost_races_are_decided_again_until_the_command_lands() {
        let store = racing(0);
        let runner = ProjectionRunner::new(store.clone());
        let unlimited = ConflictBudget {
            first_backoff: Duration::ZERO,
            ..ConflictBudget::default()
        };
        let executor = CommandExecutor::new(&runner, &Balance, CommandPolicy::new(unlimited));
        store.races.store(20, Ordering::SeqCst);
        let mut seen = Vec::new();
        let executed = executor
            .execute(&stream(), CommandOptions::default(), |balance: &i64, v| {
                seen.push((*balance, v));
                Ok::<_, TestError>(vec![event("In", 100)])
            })
            .await
            .unwrap();
        // Each attempt decided on the state the competitor's event made.
        assert_eq!(seen.len(), 21);
        assert!(seen.iter().zip(0u64..).all(|(s, n)| *s == (n as i64, n)));
        assert_eq!(executed.state, 120);
        assert_eq!((executed.outcome.version, executed.replayed()), (21, false));
        assert_eq!(executed.events.len(), 1);
        assert_eq!(executed.events[0].sequence, 21);
    }

    #[tokio::test]
    async fn contention_past_the_budget_writes_nothing() {
        let store = racing(u32::MAX);
        let runner = ProjectionRunner::new(store.clone());
        let executor = CommandExecutor::new(&runner, &Balance, CommandPolicy::new(budget()));
        let result = executor
            .execute(&stream(), CommandOptions::default(), deposit(5))
            .await;
        assert!(
            matches!(
                result,
                Err(TestError::Failed(ExecuteError::Contention {
                    attempts: 3,
                    ..
                }))
            ),
            "{result:?}"
        );
        assert_eq!(version(&runner).await, 3, "only the competitors' events");

        // A deadline already past allows no second attempt.
        let no_time = ConflictBudget {
            deadline: Duration::ZERO,
            max_attempts: None,
            first_backoff: Duration::from_millis(1),
            max_backoff: Duration::from_millis(1),
        };
        let executor = CommandExecutor::new(&runner, &Balance, CommandPolicy::new(no_time));
        let result = executor
            .execute(&stream(), CommandOptions::default(), deposit(5))
            .await;
        assert!(
            matches!(
                result,
                Err(TestError::Failed(ExecuteError::Contention {
                    attempts: 1,
                    ..
                }))
            ),
            "{result:?}"
        );
    }

    #[test]
    fn waits_grow_exponentially_below_a_cap_with_full_jitter() {
        let b = ConflictBudget::default();
        assert_eq!(b.backoff(1, 0.0), Duration::ZERO);
        assert_eq!(
            b.backoff(1, 0.999_999),
            FIRST_CONFLICT_BACKOFF.mul_f64(0.999_999)
        );
        assert_eq!(b.backoff(3, 0.5), FIRST_CONFLICT_BACKOFF.saturating_mul(2));
        assert_eq!(b.backoff(40, 0.5), MAX_CONFLICT_BACKOFF / 2);
        assert!(b.allows(1_000, DEFAULT_CONFLICT_DEADLINE));
        assert!(!b.allows(1, DEFAULT_CONFLICT_DEADLINE + Duration::from_millis(1)));
        let capped = ConflictBudget {
            max_attempts: Some(2),
            ..b
        };
        assert!(capped.allows(1, Duration::ZERO) && !capped.allows(2, Duration::ZERO));
    }

    #[tokio::test]
    async fn a_keyed_command_lands_once_and_its_retries_answer_the_first_answer() {
        let runner = ProjectionRunner::new(Arc::new(MemoryStore::new()));
        let executor = CommandExecutor::new(&runner, &Balance, CommandPolicy::new(budget()));
        let s = stream();
        executor
            .execute(&s, CommandOptions::default(), deposit(100))
            .await
            .unwrap();
        let first = executor
            .execute(&s, keyed("w-1", "withdraw 60"), withdraw(60))
            .await
            .unwrap();
        assert_eq!(
            (first.state, first.outcome.version, first.replayed()),
            (40, 2, false)
        );
        let stored = &first.events[0].metadata;
        assert_eq!(stored.idempotency_key.as_deref(), Some("w-1"));
        assert!(stored.request_hash.is_some());

        // The same key and request: the rules would refuse it now (40 left), yet it answers
        // as the first attempt did, and writes nothing; also after the stream moved on.
        for _ in 0..2 {
            let again = executor
                .execute(&s, keyed("w-1", "withdraw 60"), withdraw(60))
                .await
                .unwrap();
            assert!(again.replayed());
            assert_eq!((again.state, again.outcome.version), (40, 2));
            assert_eq!(again.events[0].event_id, first.events[0].event_id);
            executor
                .execute(&s, CommandOptions::default(), deposit(1))
                .await
                .unwrap();
        }
        assert_eq!(version(&runner).await, 4);
        // The same key with another request.
        let reused = executor
            .execute(&s, keyed("w-1", "withdraw 61"), withdraw(1))
            .await;
        assert!(
            matches!(
                reused,
                Err(TestError::Failed(ExecuteError::IdempotencyKeyReused { .. }))
            ),
            "{reused:?}"
        );
        // The same key on another stream is another command.
        let other = StreamId::new("Bank", "Account", "G2").unwrap();
        let elsewhere = executor
            .execute(&other, keyed("w-1", "withdraw 60"), deposit(7))
            .await
            .unwrap();
        assert!(!elsewhere.replayed());
        assert_eq!(version(&runner).await, 4);
    }

    #[tokio::test]
    async fn a_refusal_writes_nothing_and_leaves_the_key_unused() {
        let runner = ProjectionRunner::new(Arc::new(MemoryStore::new()));
        let executor = CommandExecutor::new(&runner, &Balance, CommandPolicy::new(budget()));
        let s = stream();
        executor
            .execute(&s, CommandOptions::default(), deposit(10))
            .await
            .unwrap();
        let refused = executor
            .execute(&s, keyed("w-2", "withdraw 50"), withdraw(50))
            .await;
        assert!(matches!(refused, Err(TestError::Refused(_))), "{refused:?}");
        assert_eq!(version(&runner).await, 1);
        executor
            .execute(&s, CommandOptions::default(), deposit(100))
            .await
            .unwrap();
        let landed = executor
            .execute(&s, keyed("w-2", "withdraw 50"), withdraw(50))
            .await
            .unwrap();
        assert_eq!((landed.state, landed.replayed()), (60, false));
        // A refusal without a key on a new stream reads nothing more.
        let none = StreamId::new("Bank", "Account", "none").unwrap();
        let refused = executor
            .execute(&none, keyed("w-3", "withdraw 1"), withdraw(1))
            .await;
        assert!(matches!(refused, Err(TestError::Refused(_))));
    }

    /// A retry whose decision has another number of events than the first attempt's finds the
    /// first attempt's events by reading the stream.
    #[tokio::test]
    async fn a_retry_deciding_another_number_of_events_still_answers_the_first() {
        let runner = ProjectionRunner::new(Arc::new(MemoryStore::new()));
        let executor = CommandExecutor::new(&runner, &Balance, CommandPolicy::new(budget()));
        let s = stream();
        executor
            .execute(&s, CommandOptions::default(), deposit(3))
            .await
            .unwrap();
        let first = executor
            .execute(&s, keyed("split", "pay 2 twice"), |_: &i64, _| {
                Ok::<_, TestError>(vec![event("Out", 1), event("Out", 1)])
            })
            .await
            .unwrap();
        assert_eq!(
            (first.outcome.first_sequence, first.outcome.version),
            (2, 3)
        );
        executor
            .execute(&s, CommandOptions::default(), deposit(5))
            .await
            .unwrap();
        // One event now (and a refusal after it): both find the two stored ones.
        let one = executor
            .execute(&s, keyed("split", "pay 2 twice"), |_: &i64, _| {
                Ok::<_, TestError>(vec![event("Out", 2)])
            })
            .await
            .unwrap();
        let refused = executor
            .execute(&s, keyed("split", "pay 2 twice"), withdraw(1_000))
            .await
            .unwrap();
        for again in [one, refused] {
            assert!(again.replayed());
            assert_eq!(
                (again.outcome.first_sequence, again.outcome.version),
                (2, 3)
            );
            assert_eq!(again.state, 1);
            assert_eq!(again.events.len(), 2);
        }
        assert_eq!(version(&runner).await, 4);
    }

    #[tokio::test]
    async fn a_command_that_creates_its_stream_appends_without_reading_first() {
        let runner = ProjectionRunner::new(Arc::new(MemoryStore::new()));
        let executor = CommandExecutor::new(&runner, &Balance, CommandPolicy::new(budget()));
        let s = stream();
        let open = |key: &str| keyed(key, "open").assuming_new_stream();
        let decide = |balance: &i64, version: u64| {
            if version > 0 {
                return Err(TestError::Refused("exists"));
            }
            Ok(vec![event("In", 5 + *balance)])
        };
        let first = executor.execute(&s, open("o-1"), decide).await.unwrap();
        assert_eq!((first.outcome.version, first.outcome.created), (1, true));
        let retry = executor.execute(&s, open("o-1"), decide).await.unwrap();
        assert!(retry.replayed() && retry.outcome.created);
        assert_eq!(retry.state, 5);
        let other = executor.execute(&s, open("o-2"), decide).await;
        assert!(
            matches!(other, Err(TestError::Refused("exists"))),
            "{other:?}"
        );
        assert_eq!(version(&runner).await, 1);
    }

    #[tokio::test]
    async fn nothing_the_projection_refuses_is_written() {
        let runner = ProjectionRunner::new(Arc::new(MemoryStore::new()));
        let executor = CommandExecutor::new(&runner, &Balance, CommandPolicy::new(budget()));
        let result = executor
            .execute(&stream(), CommandOptions::default(), |_: &i64, _| {
                Ok::<_, TestError>(vec![event("In", 1), event("Out", 2)])
            })
            .await;
        assert!(
            matches!(
                result,
                Err(TestError::Failed(ExecuteError::Unfoldable { index: 1, .. }))
            ),
            "{result:?}"
        );
        assert_eq!(version(&runner).await, 0);
    }
}
