//! Group commit's meeting point: where the commands on one stream that wait for the stream's
//! turn in this process leave word, so that the command that gets the turn can take them along
//! and write all of them in ONE append ([`super::CommandExecutor`] decides and answers them).
//!
//! Guarantees:
//! - a waiting command is in at most one group: [`CommandGroups::claim`] takes seats out of the
//!   lobby under one lock, and a command that gets the turn first leaves it
//!   ([`CommandGroups::leave`] says whether it was still there, i.e. unclaimed);
//! - the decide closures never move: a member decides in its own task, on the state the
//!   leader sends it, and answers with its events ([`ToMember`], [`FromMember`]); only owned
//!   values cross tasks;
//! - lobbies are keyed by the stream, the projection's name and its type, so only commands
//!   decided on the same fold meet; an empty lobby is removed, so the map holds only streams
//!   with commands waiting.

use std::any::{Any, TypeId};
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard};

use time::OffsetDateTime;
use tokio::sync::mpsc;

use crate::stream::{AppendOutcome, NewEvent, RecordedEvent, StoreError};

/// What a group's leader tells one member.
#[derive(Debug)]
pub(crate) enum ToMember<S> {
    /// Decide on this state, as of this version (earlier members' events included).
    Decide { state: S, version: u64 },
    /// The group's append landed with this member's events as `outcome` says: `before` and
    /// `after` are the state around them, `after` folded with their times as `proposed_at`.
    Landed {
        outcome: AppendOutcome,
        stored: Vec<RecordedEvent>,
        before: S,
        after: S,
        proposed_at: OffsetDateTime,
    },
    /// It decided no events; the group landed (or wrote nothing): this is the state it saw.
    Unchanged { state: S, version: u64 },
    /// Its refusal stands: the state it was last asked to decide on is the stream's.
    Refused,
    /// Its events are refused by the projection (event `index` of its own).
    Unfoldable {
        index: usize,
        event_id: uuid::Uuid,
        event_type: String,
        reason: String,
    },
    /// Other writers kept the stream moving for the leader's whole budget.
    Contention {
        attempts: u32,
        elapsed: std::time::Duration,
    },
    /// The group's append failed this way (the leader's answer too).
    Failed(StoreError),
    /// Run on your own, after this group (nothing of yours was written).
    Alone,
    /// The group is full: wait for the next one (nothing of yours was written).
    Rejoin,
}

/// What a member answers to [`ToMember::Decide`].
#[derive(Debug)]
pub(crate) enum FromMember {
    /// Its events, stamped as its recognition wants them.
    Events(Vec<NewEvent>),
    /// It refused (the member keeps its refusal until the group's fate is known).
    Refused,
}

/// A waiting command's place in a lobby, as the leader that claims it sees it.
#[derive(Debug)]
pub(crate) struct Seat<S> {
    id: u64,
    pub to: mpsc::UnboundedSender<ToMember<S>>,
    pub from: mpsc::UnboundedReceiver<FromMember>,
}

/// The same place, as the waiting command sees it.
#[derive(Debug)]
pub(crate) struct Ticket<S> {
    pub id: u64,
    pub inbox: mpsc::UnboundedReceiver<ToMember<S>>,
    pub reply: mpsc::UnboundedSender<FromMember>,
}

/// The lobbies of every stream with commands waiting in this process.
#[derive(Debug, Default)]
pub struct CommandGroups {
    lobbies: Mutex<HashMap<(String, TypeId), Box<dyn Any + Send>>>,
    next_id: AtomicU64,
}

impl CommandGroups {
    fn lobbies(&self) -> MutexGuard<'_, HashMap<(String, TypeId), Box<dyn Any + Send>>> {
        // Every update leaves the map whole, so a poisoned lock still holds a sound map.
        self.lobbies
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Takes a seat in `key`'s lobby (for states of type `S`).
    pub(crate) fn join<S: Send + 'static>(&self, key: &str) -> Ticket<S> {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let (to, inbox) = mpsc::unbounded_channel();
        let (reply, from) = mpsc::unbounded_channel();
        let mut lobbies = self.lobbies();
        let seats = lobbies
            .entry((key.to_owned(), TypeId::of::<S>()))
            .or_insert_with(|| Box::new(Vec::<Seat<S>>::new()));
        if let Some(seats) = seats.downcast_mut::<Vec<Seat<S>>>() {
            seats.push(Seat { id, to, from });
        }
        Ticket { id, inbox, reply }
    }

    /// Leaves `key`'s lobby; false when a leader claimed the seat before.
    pub(crate) fn leave<S: Send + 'static>(&self, key: &str, id: u64) -> bool {
        let mut lobbies = self.lobbies();
        let map_key = (key.to_owned(), TypeId::of::<S>());
        let Some(seats) = lobbies
            .get_mut(&map_key)
            .and_then(|seats| seats.downcast_mut::<Vec<Seat<S>>>())
        else {
            return false;
        };
        let before = seats.len();
        seats.retain(|seat| seat.id != id);
        let left = seats.len() < before;
        if seats.is_empty() {
            lobbies.remove(&map_key);
        }
        left
    }

    /// Every seat of `key`'s lobby, in the order they were taken; the lobby is emptied.
    pub(crate) fn claim<S: Send + 'static>(&self, key: &str) -> Vec<Seat<S>> {
        self.lobbies()
            .remove(&(key.to_owned(), TypeId::of::<S>()))
            .and_then(|seats| seats.downcast::<Vec<Seat<S>>>().ok())
            .map_or_else(Vec::new, |seats| *seats)
    }

    /// Commands waiting in `key`'s lobby (for tests and diagnostics).
    pub fn waiting<S: Send + 'static>(&self, key: &str) -> usize {
        self.lobbies()
            .get(&(key.to_owned(), TypeId::of::<S>()))
            .and_then(|seats| seats.downcast_ref::<Vec<Seat<S>>>())
            .map_or(0, Vec::len)
    }

    /// Streams with commands waiting.
    pub fn len(&self) -> usize {
        self.lobbies().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}
