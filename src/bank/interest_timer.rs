//! The daily interest run: accrues the day's interest for every account, a page of accounts
//! at a time, with bounded concurrency and a position kept in storage so that a run that dies
//! part-way is finished by the next one.
//!
//! Guarantees:
//! - **never twice a day**: each account's accrual is the AccrueInterest command
//!   ([`super::interest`]), which decides "once per UTC day" from the account's own stream in
//!   its atomic append; the run's position only saves work, it is not what prevents a double
//!   accrual, so overlapping runs, a retried timer or a crash between an accrual and the
//!   position write are all harmless;
//! - **resumable**: the position is a stream of its own, `Bank/InterestRun/{YYYY-MM-DD}`, one
//!   `AccrualPageDone` event (the account listing's continuation after the page) per page whose
//!   accounts were all accrued (or found already accrued, closed, or not opened), appended at the
//!   run stream's exact version (the last page's has no continuation: the day is finished). A
//!   run starts after the last page recorded for the day; when the day is finished it does
//!   nothing. A page with an
//!   account that failed (storage outage) is not recorded: the run stops and fails (500, so the
//!   host records a failed run), and the next run starts again at that page;
//! - **bounded**: at most [`ACCRUAL_CONCURRENCY`] accruals at a time, pages of
//!   [`ACCRUAL_PAGE_SIZE`] accounts.
//!
//! The function is timer-triggered at 01:30 UTC like the seed's, and again every hour until
//! 23:30 (`0 30 1-23 * * *`): once the day's run is finished, the later occurrences read the
//! run stream and stop, and a run that died (or a 01:30 occurrence missed while no instance ran)
//! is finished the same day.

use futures::stream::{self, StreamExt};
use serde::{Deserialize, Serialize};
use streamfold::functions::CommandContext;
use streamfold::projection::decode_data;
use streamfold::stream::{
    EntityType, ExpectedVersion, NewEvent, ReadRequest, StoreError, StreamId,
};
use time::{Date, OffsetDateTime};

use super::account::Refusal;
use super::interest::{format_day, InterestRates};
use super::service::{Bank, BankError};
use super::{ACCOUNTS, DOMAIN, SOURCE};

/// The timer function (its folder name, and the path the host posts to).
pub const TIMER_FUNCTION: &str = "AccrueInterestTimer";
/// Entity type of the run-position streams (instance key: the day).
pub const RUN_ENTITY: &str = "InterestRun";
/// The streams of the interest runs, one per day.
pub const RUNS: EntityType = EntityType::from_static(DOMAIN, RUN_ENTITY);
/// Accounts per page of the run.
pub const ACCRUAL_PAGE_SIZE: usize = 100;
/// Accruals in flight at once.
pub const ACCRUAL_CONCURRENCY: usize = 8;
/// Event: a page of accounts is done.
pub const PAGE_DONE: &str = "AccrualPageDone";

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct PageDone {
    /// The listing's continuation after the page (`None`: it was the last page).
    continuation: Option<String>,
    accounts: u64,
}

/// What one run did.
#[derive(Debug, Clone, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RunReport {
    pub day: String,
    /// The day had been finished before this run.
    pub already_finished: bool,
    /// Pages recorded before this run started (where it resumed).
    pub resumed_after_pages: u64,
    pub pages: u64,
    pub accrued: u64,
    pub already_accrued: u64,
    /// Closed accounts, and streams with no opened account.
    pub skipped: u64,
    pub failed: u64,
    /// Another run recorded a page first; this one stopped (its accruals were harmless).
    pub overtaken: bool,
    pub finished: bool,
}

/// Where the day's run stands: the last continuation recorded, and whether it finished.
struct Position {
    version: u64,
    pages: u64,
    continuation: Option<String>,
    finished: bool,
}

async fn position(bank: &Bank, stream: &StreamId) -> Result<Position, BankError> {
    let store = bank.app().store(&RUNS)?;
    let slice = store.read(stream, ReadRequest::all()).await?;
    let mut position = Position {
        version: slice.version,
        pages: 0,
        continuation: None,
        finished: false,
    };
    for event in &slice.events {
        if event.event_type == PAGE_DONE {
            let page: PageDone = decode_data(event).map_err(|e| {
                BankError::Store(StoreError::Corrupt {
                    stream: stream.to_string(),
                    detail: e.to_string(),
                })
            })?;
            position.pages = position.pages.saturating_add(1);
            position.finished |= page.continuation.is_none();
            position.continuation = page.continuation;
        }
    }
    Ok(position)
}

/// Runs (or resumes) the accrual of `day` for every account.
pub async fn run(bank: &Bank, day: Date, rates: &InterestRates) -> Result<RunReport, BankError> {
    let run_stream = RUNS.stream(format_day(day)).map_err(StoreError::from)?;
    let mut at = position(bank, &run_stream).await?;
    let mut report = RunReport {
        day: format_day(day),
        already_finished: at.finished,
        resumed_after_pages: at.pages,
        ..RunReport::default()
    };
    if at.finished {
        report.finished = true;
        return Ok(report);
    }
    let accounts = bank.app().store(&ACCOUNTS)?;
    let runs = bank.app().store(&RUNS)?;
    let context = CommandContext {
        correlation_id: format!("interest-run-{}", format_day(day)),
        commentary: Some("daily interest accrual".to_owned()),
        who: Some(TIMER_FUNCTION.to_owned()),
        idempotency_key: None,
    };
    loop {
        let page = accounts
            .list_streams(&ACCOUNTS, at.continuation.as_deref(), ACCRUAL_PAGE_SIZE)
            .await?;
        let outcomes: Vec<Result<bool, BankError>> = stream::iter(page.instances.clone())
            .map(|account| {
                let (bank, context, rates) = (bank.clone(), context.clone(), *rates);
                async move {
                    bank.accrue_interest(&account, day, &rates, &context)
                        .await
                        .map(|accrual| accrual.accrued.is_some())
                }
            })
            .buffer_unordered(ACCRUAL_CONCURRENCY)
            .collect()
            .await;
        for outcome in outcomes {
            match outcome {
                Ok(true) => report.accrued = report.accrued.saturating_add(1),
                Ok(false) => report.already_accrued = report.already_accrued.saturating_add(1),
                Err(BankError::NotFound(_) | BankError::Refused(Refusal::Closed)) => {
                    report.skipped = report.skipped.saturating_add(1)
                }
                Err(error) => {
                    tracing::error!(day = %report.day, %error, "interest accrual failed");
                    report.failed = report.failed.saturating_add(1);
                }
            }
        }
        if report.failed > 0 {
            return Ok(report);
        }
        let done = PageDone {
            continuation: page.continuation.clone(),
            accounts: page.instances.len() as u64,
        };
        let event = NewEvent::from_raw(PAGE_DONE, serde_json::value::to_raw_value(&done)?)
            .with_metadata(streamfold::stream::EventMetadata {
                source: Some(SOURCE.to_owned()),
                correlation_id: Some(context.correlation_id.clone()),
                ..Default::default()
            });
        match runs
            .append(&run_stream, ExpectedVersion::Exact(at.version), vec![event])
            .await
        {
            Ok(outcome) => at.version = outcome.version,
            Err(StoreError::WrongExpectedVersion { .. }) => {
                report.overtaken = true;
                return Ok(report);
            }
            Err(e) => return Err(e.into()),
        }
        report.pages = report.pages.saturating_add(1);
        match page.continuation {
            Some(next) => at.continuation = Some(next),
            None => {
                report.finished = true;
                return Ok(report);
            }
        }
    }
}

/// The day a run at `now` accrues for.
pub fn day_now(rates: &InterestRates) -> Date {
    rates.day_at(OffsetDateTime::now_utc())
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use rust_decimal::Decimal;
    use streamfold::app::App;
    use streamfold::config::Settings;

    use super::*;

    async fn bank_with(accounts: usize) -> Bank {
        let mut app = App::in_memory(Settings::from_pairs(Vec::new()).unwrap());
        crate::bank::register(&mut app).unwrap();
        let bank = Bank::new(Arc::new(app));
        let ctx = CommandContext::default();
        for i in 0..accounts {
            let number = format!("R-{i:04}");
            bank.open(&number, Decimal::ZERO, &ctx).await.unwrap();
            bank.deposit(&number, Decimal::from(1000), &ctx)
                .await
                .unwrap();
        }
        bank
    }

    /// Tomorrow: its start-of-day balance includes what the test just did.
    fn tomorrow() -> Date {
        OffsetDateTime::now_utc().date().next_day().unwrap()
    }

    async fn accruals(bank: &Bank, account: &str) -> usize {
        let store = bank.app().store(&ACCOUNTS).unwrap();
        let stream = Bank::stream(account).unwrap();
        let slice = store.read(&stream, ReadRequest::all()).await.unwrap();
        slice
            .events
            .iter()
            .filter(|e| e.event_type == crate::bank::events::INTEREST_ACCRUED)
            .count()
    }

    #[tokio::test]
    async fn a_run_that_died_part_way_is_resumed_and_never_accrues_twice() {
        let total = ACCRUAL_PAGE_SIZE * 2 + 30;
        let bank = bank_with(total).await;
        let day = tomorrow();
        let rates = InterestRates::default();
        // A run that died: it accrued the first page and recorded it, and accrued 10 accounts of
        // the second page without recording that page.
        let store = bank.app().store(&ACCOUNTS).unwrap();
        let first = store
            .list_streams(&ACCOUNTS, None, ACCRUAL_PAGE_SIZE)
            .await
            .unwrap();
        let second = store
            .list_streams(&ACCOUNTS, first.continuation.as_deref(), ACCRUAL_PAGE_SIZE)
            .await
            .unwrap();
        let ctx = CommandContext::default();
        for account in first
            .instances
            .iter()
            .chain(second.instances.iter().take(10))
        {
            let accrual = bank
                .accrue_interest(account, day, &rates, &ctx)
                .await
                .unwrap();
            assert!(accrual.accrued.is_some());
        }
        let run_stream = RUNS.stream(format_day(day)).unwrap();
        let page = PageDone {
            continuation: first.continuation.clone(),
            accounts: first.instances.len() as u64,
        };
        bank.app()
            .store(&RUNS)
            .unwrap()
            .append(
                &run_stream,
                ExpectedVersion::NoStream,
                vec![NewEvent::from_raw(
                    PAGE_DONE,
                    serde_json::value::to_raw_value(&page).unwrap(),
                )],
            )
            .await
            .unwrap();

        let report = run(&bank, day, &rates).await.unwrap();
        assert_eq!(report.resumed_after_pages, 1);
        assert_eq!(report.pages, 2, "{report:?}");
        assert!(report.finished);
        assert_eq!(report.already_accrued, 10, "{report:?}");
        assert_eq!(report.accrued as usize, total - ACCRUAL_PAGE_SIZE - 10);
        assert_eq!(report.failed, 0);
        for i in 0..total {
            assert_eq!(accruals(&bank, &format!("R-{i:04}")).await, 1, "R-{i:04}");
        }
        // The day is finished: the next run does nothing.
        let again = run(&bank, day, &rates).await.unwrap();
        assert!(again.already_finished && again.finished);
        assert_eq!(again.accrued + again.already_accrued, 0);
    }

    #[tokio::test]
    async fn closed_accounts_are_skipped_and_concurrent_runs_accrue_once() {
        let bank = bank_with(12).await;
        let ctx = CommandContext::default();
        bank.open("R-closed", Decimal::ZERO, &ctx).await.unwrap();
        bank.close("R-closed", &ctx).await.unwrap();
        let day = tomorrow();
        let rates = InterestRates::default();
        let (a, b) = tokio::join!(run(&bank, day, &rates), run(&bank, day, &rates));
        let (a, b) = (a.unwrap(), b.unwrap());
        assert_eq!(a.accrued + b.accrued, 12, "{a:?} {b:?}");
        assert_eq!(a.skipped.max(b.skipped), 1);
        for i in 0..12 {
            assert_eq!(accruals(&bank, &format!("R-{i:04}")).await, 1);
        }
        let view = bank
            .balance("R-0000", streamfold::projection::AsOf::Latest)
            .await
            .unwrap();
        assert_eq!(view.account.accrued_interest, Decimal::new(41_096, 6));
    }
}
