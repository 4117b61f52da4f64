//! Background dispatches: after an append that wrote events, a dispatch of that stream starts
//! in the background and the append answers at once.
//!
//! Guarantees:
//! - **Appends never wait.** [`Dispatcher::trigger`] spawns the dispatch and returns; its
//!   failures are logged and left to the sweep.
//! - **Bounded.** Per stream one background dispatch runs at a time (a later append asks it to
//!   run once more), at most [`MAX_BACKGROUND_STREAMS`] streams are dispatched in the
//!   background at once, and after the sink stopped publishing (unavailable, or the key
//!   refused), background dispatches pause for [`SINK_COOLDOWN`] so that an outage does not
//!   start a retry schedule per append. Work in flight when the process stops is simply redone
//!   by the sweep.

use std::collections::HashMap;
use std::sync::{Arc, MutexGuard};
use std::time::{Duration, Instant};

use super::{lock, Dispatcher};
use crate::stream::StreamId;

/// Most streams dispatched in the background at once; appends to further streams are left to
/// the sweep.
pub const MAX_BACKGROUND_STREAMS: usize = 1_024;
/// How long background dispatches pause after the sink stopped publishing.
pub const SINK_COOLDOWN: Duration = Duration::from_secs(30);

/// State of the background dispatches.
#[derive(Default)]
pub(super) struct Background {
    /// Streams being dispatched; `true` when an append asked for one more run.
    pub(super) running: HashMap<StreamId, bool>,
    /// No background dispatch starts before this.
    pub(super) paused_until: Option<Instant>,
}

impl Dispatcher {
    /// Starts a dispatch of `stream` in the background (see the module documentation); never
    /// waits and never fails. Needs a Tokio runtime.
    pub fn trigger(self: &Arc<Self>, stream: &StreamId) {
        if !self.raise.any() {
            return;
        }
        {
            let mut background = self.background();
            if background
                .paused_until
                .is_some_and(|until| Instant::now() < until)
            {
                tracing::debug!(backend = %self.name, stream = %stream,
                    "the sink failed recently: notifications left for the sweep");
                return;
            }
            if let Some(again) = background.running.get_mut(stream) {
                *again = true;
                return;
            }
            if background.running.len() >= MAX_BACKGROUND_STREAMS {
                tracing::debug!(backend = %self.name, stream = %stream,
                    "too many background dispatches: notifications left for the sweep");
                return;
            }
            background.running.insert(stream.clone(), false);
        }
        let this = self.clone();
        let stream = stream.clone();
        tokio::spawn(async move {
            loop {
                let failed = match this.dispatch(&stream).await {
                    Ok(outcome) => {
                        tracing::debug!(backend = %this.name, stream = %stream,
                            published = outcome.published,
                            dead_lettered = outcome.dead_lettered, marked = outcome.marked,
                            "notifications dispatched");
                        false
                    }
                    Err(error) => {
                        if error.is_sink_unavailable() {
                            this.background().paused_until = Some(Instant::now() + SINK_COOLDOWN);
                        }
                        // A paused sink has said why once already (the publisher's own line).
                        if this.sink.paused().is_some() {
                            tracing::debug!(backend = %this.name, stream = %stream,
                                error = %error, "notifications left pending for the sweep");
                        } else {
                            tracing::warn!(backend = %this.name, stream = %stream,
                                error = %error, "notifications left pending for the sweep");
                        }
                        true
                    }
                };
                let mut background = this.background();
                match background.running.get_mut(&stream) {
                    Some(again) if *again && !failed => *again = false,
                    _ => {
                        background.running.remove(&stream);
                        return;
                    }
                }
            }
        });
    }

    pub(super) fn background(&self) -> MutexGuard<'_, Background> {
        lock(&self.background)
    }
}
