//! Timer triggers: each enabled `timerTrigger` function runs on its NCRONTAB schedule (UTC),
//! one invocation at a time (the next occurrence is computed after the previous invocation
//! ends, so a slow run skips occurrences rather than overlapping, as the timer trigger's
//! singleton lock does), and once at start when `runOnStartup` is true.
//!
//! The handler receives `Data.{binding}` = the host's `TimerInfo` as JSON:
//! `{"Schedule":{"AdjustForDST":true},"ScheduleStatus":{"Last","Next","LastUpdated"},"IsPastDue":false}`.

use std::sync::Arc;

use serde_json::{json, Map, Value};
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;
use tokio::task::JoinHandle;

use super::app::Trigger;
use super::ncrontab::Schedule;
use super::SimState;

/// The `TimerInfo` JSON for an occurrence: `last` (the previous occurrence, if any) and
/// `next` (the one after this run).
pub fn timer_info(last: Option<OffsetDateTime>, next: Option<OffsetDateTime>) -> Value {
    let format = |t: Option<OffsetDateTime>| {
        t.and_then(|t| t.format(&Rfc3339).ok())
            .map(Value::String)
            .unwrap_or(Value::Null)
    };
    let now = OffsetDateTime::now_utc();
    json!({
        "Schedule": { "AdjustForDST": true },
        "ScheduleStatus": {
            "Last": format(last),
            "Next": format(next),
            "LastUpdated": format(Some(now)),
        },
        "IsPastDue": false,
    })
}

/// Starts one scheduler task per enabled timer function.
pub fn spawn_schedulers(sim: &Arc<SimState>) -> Vec<JoinHandle<()>> {
    sim.app
        .functions
        .iter()
        .filter(|f| !f.disabled)
        .filter_map(|f| match &f.trigger {
            Trigger::Timer {
                binding,
                schedule,
                run_on_startup,
            } => Some(tokio::spawn(run_schedule(
                sim.clone(),
                f.name.clone(),
                binding.clone(),
                schedule.clone(),
                *run_on_startup,
            ))),
            _ => None,
        })
        .collect()
}

async fn run_schedule(
    sim: Arc<SimState>,
    function: String,
    binding: String,
    schedule: Schedule,
    run_on_startup: bool,
) {
    let mut last: Option<OffsetDateTime> = None;
    if run_on_startup {
        let next = schedule.next_after(OffsetDateTime::now_utc());
        invoke(&sim, &function, &binding, None, next).await;
    }
    loop {
        let Some(due) = schedule.next_after(OffsetDateTime::now_utc()) else {
            println!(
                "[hostsim] timer {function}: no next occurrence of {}",
                schedule.expression()
            );
            return;
        };
        let wait = due - OffsetDateTime::now_utc();
        if let Ok(wait) = std::time::Duration::try_from(wait) {
            tokio::time::sleep(wait).await;
        }
        let next = schedule.next_after(due);
        invoke(&sim, &function, &binding, last, next).await;
        last = Some(due);
    }
}

async fn invoke(
    sim: &SimState,
    function: &str,
    binding: &str,
    last: Option<OffsetDateTime>,
    next: Option<OffsetDateTime>,
) {
    let mut data = Map::new();
    data.insert(binding.to_string(), timer_info(last, next));
    sim.invoker
        .invoke(function, "timer", data, Map::new())
        .await;
}
