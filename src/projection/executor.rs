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
//!
//! **Group commit** (on unless [`CommandPolicy::one_at_a_time`]): commands on one stream that
//! wait for its turn in this process leave word in the stream's lobby (`super::group`); the
//! one that gets the turn leads them as one group:
//! - each member is decided in arrival order (the leader first) on the exact state the ones
//!   before it left, as if it ran alone after them, and folded like a command alone; all the
//!   events go in ONE append with the version the group was decided on, so the group lands
//!   whole or not at all, and each member is answered with its own events, sequences and
//!   state, as one-at-a-time execution in that order would answer it (property-tested);
//! - a refusal or an unfoldable decision is that member's alone: it writes nothing and the
//!   members after it are decided as if it had not come;
//! - a lost race (another process wrote) decides the whole group again on the fresh state;
//! - an append that fails for a reason that may be one member's (an id stored before, a
//!   retried key, too large) wrote nothing: the group dissolves and each member runs alone,
//!   so idempotency keys keep their rules (their ids and hashes travel in their events, in
//!   the same append as the rest of the command);
//! - a group holds at most [`MAX_GROUP_EVENTS`] events and [`MAX_GROUP_DATA_BYTES`] of data,
//!   within every backend's atomic append; a member past that waits for the next group;
//! - a stream with one writer at a time never groups: the lobby is empty when it gets the
//!   turn, and the command runs exactly as alone;
//! - if a leader's caller goes away while the group is being decided, nothing was written and
//!   the members run alone; if it goes away while the append is in flight, the members are
//!   answered `Unavailable` with `maybe_applied` (a retry with a key finds out), as a lost
//!   storage answer would be.

use std::sync::Arc;
use std::time::Duration;

use time::OffsetDateTime;
use tokio::time::Instant;
use uuid::Uuid;

use super::group::{CommandGroups, FromMember, Seat, Ticket, ToMember};
use super::{
    AsOf, Idempotency, Projection, ProjectionError, ProjectionRunner, StreamTurn, StreamTurns,
};
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
/// Most events one group writes: the smallest backend limit of one atomic append (Table
/// storage's 48 events per entity group transaction; an Append Blob block holds more). A
/// member whose events would pass it waits for the next group.
pub const MAX_GROUP_EVENTS: usize = 48;
/// Most bytes of event data one group writes, well inside every backend's atomic append (a
/// Table transaction and an Append Blob block are 4 MiB, with each event's metadata, keys
/// and framing on top of its data).
pub const MAX_GROUP_DATA_BYTES: usize = 1024 * 1024;

/// How long and how often a command is decided again after losing races to other writers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
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
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct CommandPolicy {
    pub budget: ConflictBudget,
    pub turns: Arc<StreamTurns>,
    /// Where commands waiting for one stream's turn meet to be written together.
    pub groups: Arc<CommandGroups>,
    /// Whether commands that wait for the same stream are written together (group commit);
    /// off, each is decided and written on its own.
    pub group_commit: bool,
}

impl Default for CommandPolicy {
    fn default() -> Self {
        Self::new(ConflictBudget::default())
    }
}

impl CommandPolicy {
    /// `budget`, with turns and groups of its own, group commit on.
    pub fn new(budget: ConflictBudget) -> Self {
        Self {
            budget,
            turns: Arc::default(),
            groups: Arc::default(),
            group_commit: true,
        }
    }

    /// The same, each command decided and written on its own.
    pub fn one_at_a_time(mut self) -> Self {
        self.group_commit = false;
        self
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
#[non_exhaustive]
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
#[non_exhaustive]
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
            assume_new_stream,
        } = options;
        let started = Instant::now();
        let mut alone = assume_new_stream || !self.policy.group_commit;
        let key = self.group_key(stream);
        loop {
            if alone {
                let _turn = self.policy.turns.take(stream).await;
                return self
                    .run_alone(
                        stream,
                        &recognition,
                        assume_new_stream,
                        &mut decide,
                        started,
                    )
                    .await;
            }
            let mut ticket = self.policy.groups.join::<P::State>(&key);
            let arrival = tokio::select! {
                biased;
                message = ticket.inbox.recv() => Arrival::Claimed(message),
                turn = self.policy.turns.take(stream) => Arrival::Turn(turn),
            };
            let first = match arrival {
                Arrival::Claimed(message) => message,
                Arrival::Turn(turn) => {
                    if self.policy.groups.leave::<P::State>(&key, ticket.id) {
                        let seats = self.policy.groups.claim::<P::State>(&key);
                        if seats.is_empty() {
                            let _turn = turn;
                            return self
                                .run_alone(stream, &recognition, false, &mut decide, started)
                                .await;
                        }
                        return self
                            .lead(stream, turn, &recognition, &mut decide, seats, started)
                            .await;
                    }
                    // Claimed by a leader that has gone (its caller went away): what it said
                    // is in the inbox.
                    drop(turn);
                    ticket.inbox.recv().await
                }
            };
            match self
                .follow(stream, &recognition, &mut decide, &mut ticket, first)
                .await
            {
                Followed::Done(result) => return result,
                Followed::Alone => alone = true,
                Followed::Rejoin => {}
            }
        }
    }

    /// Where this executor's commands on `stream` meet to be written together.
    fn group_key(&self, stream: &StreamId) -> String {
        format!(
            "{stream}\n{}\n{}",
            self.projection.name(),
            std::any::type_name::<P>()
        )
    }

    /// One command on its own, the stream's turn held by the caller: load, decide, append,
    /// decide again after a lost race.
    async fn run_alone<R, D>(
        &self,
        stream: &StreamId,
        recognition: &Recognition,
        mut assume_new_stream: bool,
        decide: &mut D,
        started: Instant,
    ) -> Result<Executed<P::State>, R>
    where
        R: From<ExecuteError> + Send,
        D: FnMut(&P::State, u64) -> Result<Vec<NewEvent>, R> + Send,
    {
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
                Ok(events) => stamp(stream, recognition, events),
                Err(refusal) if assumed => {
                    // Refused on the assumed state: decide on the real one.
                    drop(refusal);
                    continue;
                }
                Err(refusal) => {
                    return self
                        .refused(stream, recognition, &state, version, refusal)
                        .await
                }
            };
            if events.is_empty() {
                return Ok(unchanged(state, version));
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
                    return Ok(self.landed(stream, outcome, stored, state, after, now));
                }
                Ok(earlier) => {
                    return Ok(self
                        .replay(stream, recognition, earlier, (&state, version))
                        .await?)
                }
                Err(StoreError::WrongExpectedVersion { .. }) if assumed => continue,
                Err(StoreError::WrongExpectedVersion { .. }) => {
                    self.back_off(stream, attempts, started).await?;
                }
                Err(StoreError::EventIdReused { .. })
                    if matches!(recognition, Recognition::Key(_)) =>
                {
                    return Ok(self
                        .replay_located(stream, recognition, (&state, version))
                        .await?)
                }
                Err(e) => return Err(ExecuteError::Store(e).into()),
            }
        }
    }

    /// After `attempts` lost races: waits the jittered backoff, or is
    /// [`ExecuteError::Contention`] when the budget allows no further attempt.
    async fn back_off(
        &self,
        stream: &StreamId,
        attempts: u32,
        started: Instant,
    ) -> Result<(), ExecuteError> {
        let budget = &self.policy.budget;
        let wait = budget.backoff(attempts, random_unit());
        let elapsed = started.elapsed();
        if !budget.allows(attempts, elapsed.saturating_add(wait)) {
            return Err(ExecuteError::Contention {
                stream: stream.to_string(),
                attempts,
                elapsed,
            });
        }
        tokio::time::sleep(wait).await;
        Ok(())
    }

    /// The answer of a command whose `stored` events landed as `outcome`: `after` is the state
    /// folded from them with their times as proposed (`proposed_at`); when the store recorded
    /// another time, the answer's state is folded again from the events as stored.
    fn landed(
        &self,
        stream: &StreamId,
        outcome: AppendOutcome,
        stored: Vec<RecordedEvent>,
        before: P::State,
        after: P::State,
        proposed_at: OffsetDateTime,
    ) -> Executed<P::State> {
        let state = if outcome
            .recorded
            .is_none_or(|recorded| recorded == proposed_at)
        {
            after
        } else {
            self.fold(stream, before, &stored).unwrap_or(after)
        };
        Executed {
            outcome,
            state,
            events: stored,
        }
    }

    /// Leads a group: the stream's turn held, decides its own command and the claimed
    /// `seats`' one after another, each on the state the ones before it left, and writes all
    /// their events in one append; answers each member; decides them all again after a lost
    /// race (see the module guarantees on group commit).
    async fn lead<R, D>(
        &self,
        stream: &StreamId,
        turn: StreamTurn,
        recognition: &Recognition,
        decide: &mut D,
        seats: Vec<Seat<P::State>>,
        started: Instant,
    ) -> Result<Executed<P::State>, R>
    where
        R: From<ExecuteError> + Send,
        D: FnMut(&P::State, u64) -> Result<Vec<NewEvent>, R> + Send,
    {
        // The leader is member 0 (no seat), then the others in the order they arrived.
        let mut members: Vec<Option<Seat<P::State>>> = Vec::with_capacity(seats.len() + 1);
        members.push(None);
        members.extend(seats.into_iter().map(Some));
        let mut attempts: u32 = 0;
        loop {
            attempts = attempts.saturating_add(1);
            let current = match self.runner.run(stream, self.projection, AsOf::Latest).await {
                Ok(current) => current,
                Err(e) => {
                    // Nothing written: each member finds out on its own.
                    tell_all(&members, || ToMember::Alone);
                    return Err(ExecuteError::from(e).into());
                }
            };
            let version = current.stream_version;
            let mut state = current.state;
            let now = OffsetDateTime::now_utc();
            let mut events: Vec<NewEvent> = Vec::new();
            let mut bytes = 0usize;
            let mut decisions: Vec<Decision<P::State>> = Vec::with_capacity(members.len());
            let mut own_refusal: Option<(R, P::State, u64)> = None;
            for member in &mut members {
                let at = version.saturating_add(events.len() as u64);
                let decided = match member {
                    None => match decide(&state, at) {
                        Ok(own) => Some(Ok(stamp(stream, recognition, own))),
                        Err(refusal) => {
                            own_refusal = Some((refusal, state.clone(), at));
                            Some(Err(()))
                        }
                    },
                    Some(seat) => ask(seat, &state, at).await,
                };
                let decision = match decided {
                    None => Decision::Gone,
                    Some(Err(())) => Decision::Refused,
                    Some(Ok(decided)) if decided.is_empty() => Decision::Unchanged {
                        state: state.clone(),
                        version: at,
                    },
                    Some(Ok(decided)) => {
                        let size: usize = decided.iter().map(|e| e.data.get().len()).sum();
                        if member.is_some()
                            && (events.len().saturating_add(decided.len()) > MAX_GROUP_EVENTS
                                || bytes.saturating_add(size) > MAX_GROUP_DATA_BYTES)
                        {
                            Decision::Rejoin
                        } else {
                            let proposed = as_recorded(&decided, at.saturating_add(1), now);
                            match self.fold(stream, state.clone(), &proposed) {
                                Ok(after) => {
                                    let before = std::mem::replace(&mut state, after.clone());
                                    let first = events.len();
                                    events.extend(decided);
                                    bytes = bytes.saturating_add(size);
                                    Decision::Write {
                                        first,
                                        len: events.len() - first,
                                        before,
                                        after,
                                    }
                                }
                                Err(refused) => Decision::Unfoldable(refused),
                            }
                        }
                    }
                };
                decisions.push(decision);
            }
            // Members that are gone or wait for the next group leave this one.
            let mut index = 0;
            members.retain(|member| {
                let keep = match decisions.get(index) {
                    Some(Decision::Gone) => false,
                    Some(Decision::Rejoin) => {
                        tell(member, ToMember::Rejoin);
                        false
                    }
                    _ => true,
                };
                index += 1;
                keep
            });
            decisions.retain(|d| !matches!(d, Decision::Gone | Decision::Rejoin));
            let outcome = if events.is_empty() {
                None
            } else {
                match self
                    .runner
                    .store()
                    .append(stream, ExpectedVersion::Exact(version), events.clone())
                    .await
                {
                    Ok(outcome) if !outcome.duplicate => Some(outcome),
                    Err(StoreError::WrongExpectedVersion { .. }) => {
                        if let Err(e) = self.back_off(stream, attempts, started).await {
                            if let ExecuteError::Contention {
                                attempts, elapsed, ..
                            } = &e
                            {
                                let (attempts, elapsed) = (*attempts, *elapsed);
                                tell_all(&members, || ToMember::Contention { attempts, elapsed });
                            }
                            return Err(e.into());
                        }
                        continue;
                    }
                    Err(e) => match copy_failure(&e) {
                        // A failure every member shares (and may have written): each gets it.
                        Some(_) => {
                            tell_all(&members, || {
                                ToMember::Failed(copy_failure(&e).unwrap_or_else(|| {
                                    StoreError::unavailable("the group's append failed")
                                }))
                            });
                            return Err(ExecuteError::Store(e).into());
                        }
                        // Nothing was written, and the cause may be one member's (an id used
                        // before, a retried key, too large): each runs on its own, this one
                        // first (it holds the turn).
                        None => {
                            return self
                                .dissolve(stream, turn, recognition, decide, &members, started)
                                .await
                        }
                    },
                    // All of it was stored before (every member a retry): each answers alone.
                    Ok(_) => {
                        return self
                            .dissolve(stream, turn, recognition, decide, &members, started)
                            .await
                    }
                }
            };
            if let Some(outcome) = &outcome {
                self.runner
                    .remember_append(stream, self.projection, &events, outcome);
            }
            let recorded = outcome.and_then(|o| o.recorded).unwrap_or(now);
            let mut own = None;
            for (member, decision) in members.iter().zip(decisions) {
                let message = match decision {
                    Decision::Write {
                        first,
                        len,
                        before,
                        after,
                    } => {
                        let Some(group) = outcome else { continue };
                        let first_sequence = group.first_sequence.saturating_add(first as u64);
                        let mine = events.get(first..first.saturating_add(len)).unwrap_or(&[]);
                        ToMember::Landed {
                            outcome: AppendOutcome {
                                first_sequence,
                                version: first_sequence
                                    .saturating_add(len as u64)
                                    .saturating_sub(1),
                                created: group.created && first == 0,
                                duplicate: false,
                                recorded: group.recorded,
                            },
                            stored: as_recorded(mine, first_sequence, recorded),
                            before,
                            after,
                            proposed_at: now,
                        }
                    }
                    Decision::Unchanged { state, version } => {
                        ToMember::Unchanged { state, version }
                    }
                    Decision::Refused => ToMember::Refused,
                    Decision::Unfoldable(ExecuteError::Unfoldable {
                        index,
                        event_id,
                        event_type,
                        reason,
                        ..
                    }) => ToMember::Unfoldable {
                        index,
                        event_id,
                        event_type,
                        reason,
                    },
                    Decision::Unfoldable(_) | Decision::Gone | Decision::Rejoin => ToMember::Alone,
                };
                match member {
                    Some(seat) => {
                        // A member that went away needs no answer.
                        let _ = seat.to.send(message);
                    }
                    None => own = Some(message),
                }
            }
            drop(turn);
            return match own {
                Some(ToMember::Landed {
                    outcome,
                    stored,
                    before,
                    after,
                    proposed_at,
                }) => Ok(self.landed(stream, outcome, stored, before, after, proposed_at)),
                Some(ToMember::Unchanged { state, version }) => Ok(unchanged(state, version)),
                Some(ToMember::Unfoldable {
                    index,
                    event_id,
                    event_type,
                    reason,
                }) => Err(ExecuteError::Unfoldable {
                    stream: stream.to_string(),
                    index,
                    event_id,
                    event_type,
                    reason,
                }
                .into()),
                Some(ToMember::Refused) => match own_refusal {
                    Some((refusal, state, at)) => {
                        self.refused(stream, recognition, &state, at, refusal).await
                    }
                    None => {
                        self.dissolve_own(stream, recognition, decide, started)
                            .await
                    }
                },
                _ => {
                    self.dissolve_own(stream, recognition, decide, started)
                        .await
                }
            };
        }
    }

    /// Ends a group whose append wrote nothing for a reason that may be one member's: every
    /// other member runs on its own after this one, which runs on its own now (it holds the
    /// turn), so each gets the answer it would have got alone.
    async fn dissolve<R, D>(
        &self,
        stream: &StreamId,
        turn: StreamTurn,
        recognition: &Recognition,
        decide: &mut D,
        members: &[Option<Seat<P::State>>],
        started: Instant,
    ) -> Result<Executed<P::State>, R>
    where
        R: From<ExecuteError> + Send,
        D: FnMut(&P::State, u64) -> Result<Vec<NewEvent>, R> + Send,
    {
        tell_all(members, || ToMember::Alone);
        let result = self
            .run_alone(stream, recognition, false, decide, started)
            .await;
        drop(turn);
        result
    }

    /// The leader's own command, when the group could not answer it: on its own, in turn.
    async fn dissolve_own<R, D>(
        &self,
        stream: &StreamId,
        recognition: &Recognition,
        decide: &mut D,
        started: Instant,
    ) -> Result<Executed<P::State>, R>
    where
        R: From<ExecuteError> + Send,
        D: FnMut(&P::State, u64) -> Result<Vec<NewEvent>, R> + Send,
    {
        let _turn = self.policy.turns.take(stream).await;
        self.run_alone(stream, recognition, false, decide, started)
            .await
    }

    /// A member's side of a group: decides on the states the leader sends, until the leader
    /// says how the group ended for it. `first` is the leader's first message (`None`: the
    /// leader went away).
    async fn follow<R, D>(
        &self,
        stream: &StreamId,
        recognition: &Recognition,
        decide: &mut D,
        ticket: &mut Ticket<P::State>,
        first: Option<ToMember<P::State>>,
    ) -> Followed<P::State, R>
    where
        R: From<ExecuteError> + Send,
        D: FnMut(&P::State, u64) -> Result<Vec<NewEvent>, R> + Send,
    {
        let mut message = first;
        // The last state it was asked to decide on, and its refusal of it.
        let mut seen: Option<(P::State, u64)> = None;
        let mut refusal: Option<R> = None;
        let mut in_flight = false;
        loop {
            let Some(next) = message else {
                // The leader went away (its caller did). Before this member's events were
                // given to it, nothing of them can have been written: run alone. After,
                // the append may have landed: answer as a lost storage answer would.
                return if in_flight {
                    Followed::Done(Err(ExecuteError::Store(StoreError::Unavailable {
                        message: format!(
                            "stream {stream}: the command was written in a group whose leader \
                             went away before the storage answered"
                        ),
                        maybe_applied: true,
                    })
                    .into()))
                } else {
                    Followed::Alone
                };
            };
            match next {
                ToMember::Decide { state, version } => {
                    let reply = match decide(&state, version) {
                        Ok(events) => {
                            refusal = None;
                            in_flight = !events.is_empty();
                            FromMember::Events(stamp(stream, recognition, events))
                        }
                        Err(refused) => {
                            refusal = Some(refused);
                            in_flight = false;
                            FromMember::Refused
                        }
                    };
                    seen = Some((state, version));
                    if ticket.reply.send(reply).is_err() {
                        return if in_flight {
                            Followed::Done(Err(ExecuteError::Store(StoreError::Unavailable {
                                message: format!(
                                    "stream {stream}: the command's group ended before it \
                                     could answer"
                                ),
                                maybe_applied: true,
                            })
                            .into()))
                        } else {
                            Followed::Alone
                        };
                    }
                }
                ToMember::Landed {
                    outcome,
                    stored,
                    before,
                    after,
                    proposed_at,
                } => {
                    return Followed::Done(Ok(self.landed(
                        stream,
                        outcome,
                        stored,
                        before,
                        after,
                        proposed_at,
                    )))
                }
                ToMember::Unchanged { state, version } => {
                    return Followed::Done(Ok(unchanged(state, version)))
                }
                ToMember::Refused => {
                    return match (refusal.take(), seen.take()) {
                        (Some(refused), Some((state, version))) => Followed::Done(
                            self.refused(stream, recognition, &state, version, refused)
                                .await,
                        ),
                        _ => Followed::Alone,
                    }
                }
                ToMember::Unfoldable {
                    index,
                    event_id,
                    event_type,
                    reason,
                } => {
                    return Followed::Done(Err(ExecuteError::Unfoldable {
                        stream: stream.to_string(),
                        index,
                        event_id,
                        event_type,
                        reason,
                    }
                    .into()))
                }
                ToMember::Contention { attempts, elapsed } => {
                    return Followed::Done(Err(ExecuteError::Contention {
                        stream: stream.to_string(),
                        attempts,
                        elapsed,
                    }
                    .into()))
                }
                ToMember::Failed(e) => return Followed::Done(Err(ExecuteError::Store(e).into())),
                ToMember::Alone => return Followed::Alone,
                ToMember::Rejoin => return Followed::Rejoin,
            }
            message = ticket.inbox.recv().await;
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

/// How a waiting command's wait ended.
enum Arrival<S> {
    /// A leader claimed it (its first message; `None`: the leader already went away).
    Claimed(Option<ToMember<S>>),
    /// It got the stream's turn.
    Turn(StreamTurn),
}

/// How a member's part in a group ended.
enum Followed<S, R> {
    Done(Result<Executed<S>, R>),
    /// Run on its own, in turn, without joining a group.
    Alone,
    /// Wait for the next group.
    Rejoin,
}

/// What one member of a group decided, as its leader keeps it.
enum Decision<S> {
    /// Its events are the group's `first..first + len`; `before`/`after`: the state around them.
    Write {
        first: usize,
        len: usize,
        before: S,
        after: S,
    },
    /// No events: nothing to write; the state and version it saw.
    Unchanged { state: S, version: u64 },
    /// It refused (its refusal is its own).
    Refused,
    /// The projection refuses its events ([`ExecuteError::Unfoldable`]).
    Unfoldable(ExecuteError),
    /// It went away (its caller did).
    Gone,
    /// The group is full without it.
    Rejoin,
}

/// The answer of a command that decided no events: nothing written.
fn unchanged<S>(state: S, version: u64) -> Executed<S> {
    Executed {
        outcome: AppendOutcome {
            first_sequence: version.saturating_add(1),
            version,
            created: false,
            duplicate: false,
            recorded: None,
        },
        state,
        events: Vec::new(),
    }
}

/// Asks a member to decide on `state` at `version`: `None` when it went away.
async fn ask<S: Clone>(
    seat: &mut Seat<S>,
    state: &S,
    version: u64,
) -> Option<Result<Vec<NewEvent>, ()>> {
    seat.to
        .send(ToMember::Decide {
            state: state.clone(),
            version,
        })
        .ok()?;
    match seat.from.recv().await? {
        FromMember::Events(events) => Some(Ok(events)),
        FromMember::Refused => Some(Err(())),
    }
}

/// Tells one member (not the leader) how the group ended for it.
fn tell<S>(member: &Option<Seat<S>>, message: ToMember<S>) {
    if let Some(seat) = member {
        // A member that went away needs no answer.
        let _ = seat.to.send(message);
    }
}

/// Tells every member but the leader the same.
fn tell_all<S>(members: &[Option<Seat<S>>], message: impl Fn() -> ToMember<S>) {
    for member in members {
        tell(member, message());
    }
}

/// The same failure for another member, when it is one that concerns the whole append (the
/// storage, not one member's events): `None` otherwise.
fn copy_failure(e: &StoreError) -> Option<StoreError> {
    match e {
        StoreError::Unavailable {
            message,
            maybe_applied,
        } => Some(StoreError::Unavailable {
            message: message.clone(),
            maybe_applied: *maybe_applied,
        }),
        StoreError::Corrupt { stream, detail } => Some(StoreError::Corrupt {
            stream: stream.clone(),
            detail: detail.clone(),
        }),
        StoreError::Misconfigured(detail) => Some(StoreError::Misconfigured(detail.clone())),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicU32, Ordering};
    use std::sync::Arc;

    use super::*;
    use crate::projection::guard::tests::{budget, event, stream, Balance, Racing};
    use crate::projection::IdempotencyKey;
    use crate::storage::MemoryStore;
    use crate::stream::{EventStore, StoreDecorator};

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

    /// A runner over a memory store whose stream holds one deposit of `amount`.
    async fn funded(amount: i64) -> ProjectionRunner {
        let runner = ProjectionRunner::new(Arc::new(MemoryStore::new()));
        CommandExecutor::new(&runner, &Balance, CommandPolicy::new(budget()))
            .execute(&stream(), CommandOptions::default(), deposit(amount))
            .await
            .unwrap();
        runner
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

    /// The attempts after which a deposit under `budget` gave up on contention.
    async fn attempts_until_contention(runner: &ProjectionRunner, budget: ConflictBudget) -> u32 {
        let executor = CommandExecutor::new(runner, &Balance, CommandPolicy::new(budget));
        match executor
            .execute(&stream(), CommandOptions::default(), deposit(5))
            .await
        {
            Err(TestError::Failed(ExecuteError::Contention { attempts, .. })) => attempts,
            other => panic!("not contention: {other:?}"),
        }
    }

    #[tokio::test]
    async fn contention_past_the_budget_writes_nothing() {
        let store = racing(u32::MAX);
        let runner = ProjectionRunner::new(store.clone());
        assert_eq!(attempts_until_contention(&runner, budget()).await, 3);
        assert_eq!(version(&runner).await, 3, "only the competitors' events");

        // A deadline already past allows no second attempt.
        let no_time = ConflictBudget {
            deadline: Duration::ZERO,
            max_attempts: None,
            first_backoff: Duration::from_millis(1),
            max_backoff: Duration::from_millis(1),
        };
        assert_eq!(attempts_until_contention(&runner, no_time).await, 1);
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
        let runner = funded(100).await;
        let executor = CommandExecutor::new(&runner, &Balance, CommandPolicy::new(budget()));
        let s = stream();
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
        let runner = funded(10).await;
        let executor = CommandExecutor::new(&runner, &Balance, CommandPolicy::new(budget()));
        let s = stream();
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
        let runner = funded(3).await;
        let executor = CommandExecutor::new(&runner, &Balance, CommandPolicy::new(budget()));
        let s = stream();
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

    /// Group commit: a store whose first append waits for a permit (so that the commands
    /// behind it queue), and that counts appends.
    struct Gated {
        inner: MemoryStore,
        /// Before these appends (1 = the first), another writer appends `In 1`.
        race_before: Vec<u32>,
        gate: tokio::sync::Semaphore,
        closed: std::sync::atomic::AtomicBool,
        appends: AtomicU32,
    }

    impl Gated {
        fn new(race_before: &[u32]) -> Arc<Self> {
            Arc::new(Self {
                inner: MemoryStore::new(),
                race_before: race_before.to_vec(),
                gate: tokio::sync::Semaphore::new(0),
                closed: std::sync::atomic::AtomicBool::new(true),
                appends: AtomicU32::new(0),
            })
        }
    }

    #[async_trait::async_trait]
    impl StoreDecorator for Gated {
        fn inner(&self) -> &dyn EventStore {
            &self.inner
        }

        async fn append(
            &self,
            stream: &StreamId,
            expected: ExpectedVersion,
            events: Vec<NewEvent>,
        ) -> std::result::Result<AppendOutcome, StoreError> {
            if self.closed.swap(false, Ordering::SeqCst) {
                if let Ok(permit) = self.gate.acquire().await {
                    permit.forget();
                }
            }
            let n = self.appends.fetch_add(1, Ordering::SeqCst) + 1;
            if self.race_before.contains(&n) {
                self.inner
                    .append(stream, ExpectedVersion::Any, vec![event("In", 1)])
                    .await?;
            }
            self.inner.append(stream, expected, events).await
        }
    }

    /// A command of the property test.
    #[derive(Debug, Clone)]
    enum Command {
        Deposit(i64),
        /// Refused when the balance does not cover it.
        Withdraw(i64),
        /// Decides an `Out` whatever the balance: unfoldable when it does not cover it.
        Overdraw(i64),
        /// Two events at once.
        Split(i64, i64),
        /// Decides nothing.
        Nothing,
    }

    impl Command {
        fn decide(&self, balance: i64) -> Result<Vec<NewEvent>> {
            Ok(match *self {
                Self::Deposit(amount) => vec![event("In", amount)],
                Self::Withdraw(amount) if balance < amount => {
                    return Err(TestError::Refused("insufficient funds"))
                }
                Self::Withdraw(amount) | Self::Overdraw(amount) => vec![event("Out", amount)],
                Self::Split(a, b) => vec![event("In", a), event("Out", b)],
                Self::Nothing => Vec::new(),
            })
        }
    }

    /// What a command was answered, in terms that compare between runs.
    #[derive(Debug, PartialEq, Eq)]
    enum Answer {
        Written {
            state: i64,
            first_sequence: u64,
            version: u64,
            events: Vec<(u64, String, String)>,
        },
        Unchanged {
            state: i64,
            version: u64,
        },
        Refused,
        Unfoldable(usize),
        Failed(String),
    }

    fn answer(result: Result<Executed<i64>>) -> Answer {
        match result {
            Ok(done) if done.events.is_empty() => Answer::Unchanged {
                state: done.state,
                version: done.outcome.version,
            },
            Ok(done) => Answer::Written {
                state: done.state,
                first_sequence: done.outcome.first_sequence,
                version: done.outcome.version,
                events: done
                    .events
                    .iter()
                    .map(|e| (e.sequence, e.event_type.clone(), e.data.get().to_owned()))
                    .collect(),
            },
            Err(TestError::Refused(_)) => Answer::Refused,
            Err(TestError::Failed(ExecuteError::Unfoldable { index, .. })) => {
                Answer::Unfoldable(index)
            }
            Err(TestError::Failed(e)) => Answer::Failed(e.to_string()),
        }
    }

    fn no_wait() -> ConflictBudget {
        ConflictBudget {
            first_backoff: Duration::ZERO,
            max_backoff: Duration::ZERO,
            ..ConflictBudget::default()
        }
    }

    /// The stream's events as (sequence, type, data).
    async fn history(store: &dyn crate::stream::EventStore) -> Vec<(u64, String, String)> {
        store
            .read(&stream(), ReadRequest::all())
            .await
            .unwrap()
            .events
            .iter()
            .map(|e| (e.sequence, e.event_type.clone(), e.data.get().to_owned()))
            .collect()
    }

    /// Runs `first` (whose append waits at the gate), then `commands` arriving while it is in
    /// flight, all on one stream; the answers in arrival order, the history and the number of
    /// appends the store was asked for.
    async fn grouped(
        first: i64,
        commands: &[Command],
        race_before: &[u32],
    ) -> (Vec<Answer>, Vec<(u64, String, String)>, u32) {
        let store = Gated::new(race_before);
        let runner = ProjectionRunner::new(store.clone());
        let executor = CommandExecutor::new(&runner, &Balance, CommandPolicy::new(no_wait()));
        let s = stream();
        let blocker = executor.execute(&s, CommandOptions::default(), deposit(first));
        let queued = commands.iter().map(|command| {
            executor.execute(&s, CommandOptions::default(), move |balance: &i64, _| {
                command.decide(*balance)
            })
        });
        let opener = async {
            // Every command above has been polled once (arrived) before this runs.
            store.gate.add_permits(1);
        };
        let (first_answer, answers, ()) =
            futures::join!(blocker, futures::future::join_all(queued), opener);
        assert!(first_answer.is_ok());
        let answers = answers.into_iter().map(answer).collect();
        (
            answers,
            history(&*store).await,
            store.appends.load(Ordering::SeqCst),
        )
    }

    /// The same commands one at a time, in the same order, each with the whole stream to
    /// itself (group commit off).
    async fn one_at_a_time(
        first: i64,
        competitors: &[usize],
        commands: &[Command],
    ) -> (Vec<Answer>, Vec<(u64, String, String)>) {
        let store = Arc::new(MemoryStore::new());
        let runner = ProjectionRunner::new(store.clone());
        let executor = CommandExecutor::new(
            &runner,
            &Balance,
            CommandPolicy::new(no_wait()).one_at_a_time(),
        );
        let s = stream();
        let mut answers = Vec::new();
        for (n, command) in std::iter::once(None)
            .chain(commands.iter().map(Some))
            .enumerate()
        {
            for _ in 0..competitors.iter().filter(|at| **at == n).count() {
                crate::stream::EventStore::append(
                    &*store,
                    &s,
                    ExpectedVersion::Any,
                    vec![event("In", 1)],
                )
                .await
                .unwrap();
            }
            match command {
                None => {
                    executor
                        .execute(&s, CommandOptions::default(), deposit(first))
                        .await
                        .unwrap();
                }
                Some(command) => answers.push(answer(
                    executor
                        .execute(&s, CommandOptions::default(), |balance: &i64, _| {
                            command.decide(*balance)
                        })
                        .await,
                )),
            }
        }
        (answers, history(&*store).await)
    }

    fn command() -> impl proptest::strategy::Strategy<Value = Command> {
        use proptest::prelude::*;
        prop_oneof![
            (1i64..50).prop_map(Command::Deposit),
            (1i64..80).prop_map(Command::Withdraw),
            (1i64..80).prop_map(Command::Overdraw),
            (1i64..30, 1i64..60).prop_map(|(a, b)| Command::Split(a, b)),
            Just(Command::Nothing),
        ]
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(64))]

        /// Commands that arrive together are answered exactly as one at a time in their order
        /// would answer them (each refusal or unfoldable decision its own), and whatever they
        /// write is written in ONE append.
        #[test]
        fn a_group_answers_as_one_at_a_time(
            first in 0i64..100,
            commands in proptest::collection::vec(command(), 1..12),
        ) {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_time()
                .build()
                .unwrap();
            let (answers, history, appends) = runtime.block_on(grouped(first, &commands, &[]));
            let (expected, expected_history) =
                runtime.block_on(one_at_a_time(first, &[], &commands));
            proptest::prop_assert_eq!(&answers, &expected);
            proptest::prop_assert_eq!(&history, &expected_history);
            let wrote = expected.iter().any(|a| matches!(a, Answer::Written { .. }));
            proptest::prop_assert_eq!(appends, 1 + u32::from(wrote), "the first, then the group's");
        }
    }

    /// A group that loses the race to another writer is decided again, every member on the
    /// state that writer left, and still written in one append.
    #[tokio::test(flavor = "current_thread")]
    async fn a_group_that_lost_a_race_is_decided_again() {
        let commands = [
            Command::Withdraw(11),
            Command::Deposit(5),
            Command::Withdraw(16),
            Command::Nothing,
        ];
        // The group's first append (the second of all) loses a race.
        let (answers, history, appends) = grouped(10, &commands, &[2]).await;
        let (expected, expected_history) = one_at_a_time(10, &[1], &commands).await;
        assert_eq!(answers, expected);
        assert_eq!(history, expected_history);
        // Decided again with the competitor's event, 11 covers the withdrawal it refused on 10.
        assert!(
            matches!(answers[0], Answer::Written { state: 0, .. }),
            "{answers:?}"
        );
        assert_eq!(answers[2], Answer::Refused);
        // The first's append, the group's two.
        assert_eq!(appends, 3);
    }

    /// Nothing groups for a stream with one writer at a time: each command its own append.
    #[tokio::test(flavor = "current_thread")]
    async fn one_writer_at_a_time_is_written_as_before() {
        let store = Gated::new(&[]);
        store.closed.store(false, Ordering::SeqCst);
        let runner = ProjectionRunner::new(store.clone());
        let executor = CommandExecutor::new(&runner, &Balance, CommandPolicy::new(no_wait()));
        for n in 1..=5 {
            let done = executor
                .execute(&stream(), CommandOptions::default(), deposit(n))
                .await
                .unwrap();
            assert_eq!(done.outcome.first_sequence, n as u64);
        }
        assert_eq!(store.appends.load(Ordering::SeqCst), 5);
        assert!(executor.policy.groups.is_empty());
    }

    /// Keyed commands written together carry their keys in the group's one append, and a
    /// group holding a retry (ids stored before) answers every member as it would alone.
    #[tokio::test(flavor = "current_thread")]
    async fn keyed_commands_in_a_group_keep_their_keys_and_retries_answer_the_first() {
        let store = Gated::new(&[]);
        let runner = ProjectionRunner::new(store.clone());
        let executor = CommandExecutor::new(&runner, &Balance, CommandPolicy::new(no_wait()));
        let s = stream();
        let (first, a, b, ()) = futures::join!(
            executor.execute(&s, CommandOptions::default(), deposit(10)),
            executor.execute(&s, keyed("k-a", "deposit 5"), deposit(5)),
            executor.execute(&s, keyed("k-b", "withdraw 12"), withdraw(12)),
            async { store.gate.add_permits(1) },
        );
        first.unwrap();
        let (a, b) = (a.unwrap(), b.unwrap());
        assert_eq!(
            store.appends.load(Ordering::SeqCst),
            2,
            "one append for both"
        );
        assert_eq!((a.outcome.first_sequence, a.state), (2, 15));
        assert_eq!((b.outcome.first_sequence, b.state), (3, 3));
        let stored = runner
            .store()
            .read(&s, ReadRequest::range(2, Some(3)))
            .await
            .unwrap()
            .events;
        let keys: Vec<_> = stored
            .iter()
            .map(|e| e.metadata.idempotency_key.clone())
            .collect();
        assert_eq!(keys, [Some("k-a".to_owned()), Some("k-b".to_owned())]);

        // Both retried, together with a new command.
        store.closed.store(true, Ordering::SeqCst);
        let (_, again_a, c, again_b, ()) = futures::join!(
            executor.execute(&s, CommandOptions::default(), deposit(1)),
            executor.execute(&s, keyed("k-a", "deposit 5"), deposit(5)),
            executor.execute(&s, CommandOptions::default(), deposit(7)),
            executor.execute(&s, keyed("k-b", "withdraw 12"), withdraw(12)),
            async { store.gate.add_permits(1) },
        );
        let (again_a, c, again_b) = (again_a.unwrap(), c.unwrap(), again_b.unwrap());
        assert!(again_a.replayed() && again_b.replayed());
        assert_eq!((again_a.outcome.version, again_a.state), (2, 15));
        assert_eq!((again_b.outcome.version, again_b.state), (3, 3));
        assert!(!c.replayed());
        assert_eq!((c.outcome.version, c.state), (5, 11));
        assert_eq!(version(&runner).await, 5);
    }
}
