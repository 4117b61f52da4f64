//! Whether the rows of a stream this process has no entry for are probably not written yet,
//! which lets the projector save them without loading them first.
//!
//! The projector may skip the load of such rows and save what it folded from the first event
//! with "must not exist": the save's condition checks the guess atomically, so a wrong guess
//! writes nothing and is handled as a lost race (the next attempt loads the rows). The guess
//! therefore never changes a row's content, only the requests spent on it: a right guess saves
//! the load (one request of three); a wrong one costs the refused insert and the events read
//! again (two requests).
//!
//! Guessing pays while more than two thirds of the rows met for the first time are absent:
//! new streams (an account just opened) rather than a process meeting old streams after a start
//! or a scale-out. [`FirstRowOdds`] keeps a score of what the process found: up by
//! [`ABSENT_STEP`] for each such row that was absent (a load that found nothing, or a guessed
//! insert that succeeded), down by [`PRESENT_STEP`] for each that was there (a load that
//! found it, or a guessed insert refused), kept between 0 and [`MAX_SCORE`]. Its drift is
//! upward exactly when more than `PRESENT_STEP / (ABSENT_STEP + PRESENT_STEP)` = 2/3 of the
//! rows are absent. The projector guesses while the score is at least [`GUESS_FROM`]; a
//! process starts at 0, so it loads until it has seen several new rows, and a run of
//! existing rows stops the guessing within a few notifications.

use std::sync::atomic::{AtomicU32, Ordering};

/// What one first-seen row that was absent adds to the score.
pub const ABSENT_STEP: u32 = 1;
/// What one first-seen row that was there takes from the score.
pub const PRESENT_STEP: u32 = 2;
/// The score's ceiling: how much evidence of absent rows is remembered.
pub const MAX_SCORE: u32 = 16;
/// The score from which the projector guesses that a first-seen row is absent.
pub const GUESS_FROM: u32 = 8;

/// The process's evidence on whether rows it meets for the first time exist.
#[derive(Debug, Default)]
pub struct FirstRowOdds {
    score: AtomicU32,
}

impl FirstRowOdds {
    /// Whether to save first-seen rows without loading them.
    pub fn guess_absent(&self) -> bool {
        self.score.load(Ordering::Relaxed) >= GUESS_FROM
    }

    /// Records what was found of a row met for the first time.
    pub fn observe(&self, absent: bool) {
        // The closure always returns Some, so the update cannot fail.
        let _ = self
            .score
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |score| {
                Some(if absent {
                    score.saturating_add(ABSENT_STEP).min(MAX_SCORE)
                } else {
                    score.saturating_sub(PRESENT_STEP)
                })
            });
    }

    /// The current score (for tests and diagnostics).
    pub fn score(&self) -> u32 {
        self.score.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn guessing_starts_after_enough_absent_rows_and_stops_after_a_few_present_ones() {
        let odds = FirstRowOdds::default();
        assert!(!odds.guess_absent(), "a fresh process loads");
        for _ in 1..GUESS_FROM {
            odds.observe(true);
        }
        assert!(!odds.guess_absent());
        odds.observe(true);
        assert!(odds.guess_absent());
        for _ in 0..100 {
            odds.observe(true);
        }
        assert_eq!(odds.score(), MAX_SCORE, "the evidence is bounded");
        // From the ceiling, (MAX - GUESS_FROM) / PRESENT_STEP + 1 present rows stop it.
        for _ in 0..(MAX_SCORE - GUESS_FROM) / PRESENT_STEP {
            odds.observe(false);
        }
        assert!(odds.guess_absent());
        odds.observe(false);
        assert!(!odds.guess_absent());
        for _ in 0..100 {
            odds.observe(false);
        }
        assert_eq!(odds.score(), 0);
    }

    #[test]
    fn the_score_rises_only_when_more_than_two_thirds_are_absent() {
        // Two absent, one present: no drift (the break-even point) ...
        let odds = FirstRowOdds::default();
        for _ in 0..50 {
            odds.observe(true);
            odds.observe(true);
            odds.observe(false);
        }
        assert!(odds.score() < GUESS_FROM, "{}", odds.score());
        // ... three absent, one present: upward.
        let odds = FirstRowOdds::default();
        for _ in 0..50 {
            for _ in 0..3 {
                odds.observe(true);
            }
            odds.observe(false);
        }
        assert!(odds.guess_absent(), "{}", odds.score());
    }
}
