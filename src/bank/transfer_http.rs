//! The transfer functions, at the seed's routes (one function.json folder each):
//! - `POST /api/TransferMoney/{transferId?}` with `{"from", "to", "amount", "commentary"?}`:
//!   starts a transfer (a new id when none is given) and carries it as far as it goes. 201 with
//!   the transfer when it was recorded now, 200 when the id was recorded before with the same
//!   request (a retry: it is carried on and answered as it stands), 409 `transfer-exists` with
//!   another request; refused up front, nothing written: 404 `account-not-found`, 422
//!   `account-closed` or `insufficient-funds`, 400 `same-account`; a transfer whose debit
//!   lost a race and was refused is 422 with the refusal's slug, `transferId` and `state`;
//! - `GET /api/GetTransferState/{transferId}`: the transfer's state (`requested`, `debited`,
//!   `completed`, `refunded`, `cancelled`, `refused`) and its recorded steps; 404
//!   `transfer-not-found`;
//! - `POST /api/CancelMoneyTransfer/{transferId}` (body optional `{"commentary"}`): cancels a
//!   transfer whose debit has not started (200; again: 200 as it is), else 409
//!   `transfer-not-cancellable` with its `state`;
//! - `POST /TransferSweep` (timer trigger, every minute): carries on every transfer not in a
//!   final state (interrupted by a crash or an outage), 8 at a time.

use futures::stream::{self, StreamExt};
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};
use serde_json::json;
use serde_json::value::RawValue;
use streamfold::functions::invocation::InvocationResponse;
use streamfold::functions::{with_state, CommandContext, DomainApi, Problem, Reply, Request};
use time::format_description::well_known::Rfc3339;
use uuid::Uuid;

use super::http::{account_key, unkeyed_context, with_commentary, CommentBody};
use super::money::{format_money, parse_amount, Sign};
use super::service::{Bank, BankError};
use super::transfer::{check_transfer_id, Phase, Transfer, TransferRequest, TRANSFERS};

pub const TRANSFER_FUNCTION: &str = "TransferMoney";
pub const STATE_FUNCTION: &str = "GetTransferState";
pub const CANCEL_FUNCTION: &str = "CancelMoneyTransfer";
pub const SWEEP_FUNCTION: &str = "TransferSweep";
/// The route parameter naming the transfer.
const TRANSFER_PARAMETER: &str = "transferId";
/// Transfers listed per page by the sweep.
pub const SWEEP_PAGE_SIZE: usize = 100;
/// Transfers carried on at once by the sweep.
pub const SWEEP_CONCURRENCY: usize = 8;

pub fn routes(api: DomainApi, bank: &Bank) -> DomainApi {
    api.post(
        TRANSFER_FUNCTION,
        "TransferMoney/{transferId?}",
        with_state(bank, start_transfer),
    )
    .get(
        STATE_FUNCTION,
        "GetTransferState/{transferId}",
        with_state(bank, get_state),
    )
    .post(
        CANCEL_FUNCTION,
        "CancelMoneyTransfer/{transferId}",
        with_state(bank, cancel_transfer),
    )
    .invocation(SWEEP_FUNCTION, with_state(bank, sweep_handler))
}

/// The transfer request; the seed's `MoneyTransferData` names (`SourceAccountNumber`,
/// `TargetAccountNumber`, `Amount`, `Commentary`) are read too (docs/seed-compatibility.md).
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct TransferBody {
    #[serde(alias = "SourceAccountNumber")]
    from: String,
    #[serde(alias = "TargetAccountNumber")]
    to: String,
    #[serde(alias = "Amount")]
    amount: Box<RawValue>,
    #[serde(alias = "Commentary")]
    commentary: Option<String>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct StepView<'a> {
    step: &'a str,
    sequence: u64,
    at: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    account_sequence: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    reason: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    problem: Option<&'a str>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct TransferView<'a> {
    transfer_id: &'a str,
    from: &'a str,
    to: &'a str,
    amount: String,
    state: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    commentary: Option<&'a str>,
    steps: Vec<StepView<'a>>,
    version: u64,
}

fn view(transfer: &Transfer) -> TransferView<'_> {
    TransferView {
        transfer_id: &transfer.id,
        from: &transfer.request.from,
        to: &transfer.request.to,
        amount: format_money(transfer.request.amount),
        state: transfer.phase.state(),
        commentary: transfer.commentary.as_deref(),
        steps: transfer
            .steps
            .iter()
            .map(|s| StepView {
                step: &s.step,
                sequence: s.sequence,
                at: s.at.format(&Rfc3339).unwrap_or_default(),
                account_sequence: s.data.account_sequence,
                reason: s.data.reason.as_deref(),
                problem: s.data.problem.as_deref(),
            })
            .collect(),
        version: transfer.version,
    }
}

fn transfer_id(id: &str) -> Result<(), Problem> {
    check_transfer_id(id).map_err(|reason| {
        Problem::bad_request("invalid-transfer-id", reason).with("transferId", id)
    })
}

/// The route's transfer id, as decoded (checked by [`transfer_id`]).
fn named_transfer(request: &Request) -> Option<String> {
    request.param(TRANSFER_PARAMETER).map(str::to_owned)
}

async fn start_transfer(bank: Bank, request: Request) -> Result<Reply, Problem> {
    let id = named_transfer(&request).unwrap_or_else(|| Uuid::new_v4().to_string());
    transfer_id(&id)?;
    let body: TransferBody = request.json()?;
    account_key(&body.from)?;
    account_key(&body.to)?;
    let amount: Decimal = parse_amount("amount", &body.amount, Sign::Positive).map_err(|e| {
        Problem::bad_request("invalid-amount", e.to_string()).with("field", e.field)
    })?;
    if body.from == body.to {
        return Err(Problem::bad_request(
            "same-account",
            "a transfer moves money between two different accounts",
        ));
    }
    let ctx = with_commentary(unkeyed_context(&request), body.commentary)?;
    let transfer_request = TransferRequest {
        from: body.from,
        to: body.to,
        amount,
    };
    let (transfer, created) = bank.start_transfer(&id, &transfer_request, &ctx).await?;
    if transfer.phase == Phase::Refused {
        let refusal = transfer.refusal().cloned().unwrap_or_default();
        let slug = refusal.problem.as_deref().unwrap_or("transfer-refused");
        let problem = match slug {
            "account-not-found" => Problem::not_found(slug, refusal.reason.unwrap_or_default()),
            _ => Problem::unprocessable(slug, refusal.reason.unwrap_or_default()),
        };
        return Err(problem
            .with("transferId", transfer.id.as_str())
            .with("state", transfer.phase.state()));
    }
    Reply::json(if created { 201 } else { 200 }, &view(&transfer))
}

async fn get_state(bank: Bank, request: Request) -> Result<Reply, Problem> {
    let id = named_transfer(&request).unwrap_or_default();
    transfer_id(&id)?;
    request.only_known_params(&[])?;
    let transfer = bank.transfer(&id).await?;
    Reply::ok(&view(&transfer))
}

async fn cancel_transfer(bank: Bank, request: Request) -> Result<Reply, Problem> {
    let id = named_transfer(&request).unwrap_or_default();
    transfer_id(&id)?;
    let body: CommentBody = request.json()?;
    let ctx = with_commentary(unkeyed_context(&request), body.commentary)?;
    let transfer = bank.cancel_transfer(&id, &ctx).await?;
    Reply::ok(&view(&transfer))
}

/// What one sweep did.
#[derive(Debug, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct SweepReport {
    pub transfers: u64,
    /// Found not final and carried on to a final state.
    pub finished: u64,
    pub failed: u64,
}

/// Carries on every transfer that is not in a final state.
pub async fn sweep(bank: &Bank) -> Result<SweepReport, BankError> {
    let store = bank.app().store(&TRANSFERS)?;
    let ctx = CommandContext {
        correlation_id: format!("transfer-sweep-{}", Uuid::new_v4()),
        who: Some(SWEEP_FUNCTION.to_owned()),
        ..CommandContext::default()
    };
    let mut report = SweepReport::default();
    let mut continuation = None;
    loop {
        let page = store
            .list_streams(&TRANSFERS, continuation.as_deref(), SWEEP_PAGE_SIZE)
            .await?;
        report.transfers = report.transfers.saturating_add(page.instances.len() as u64);
        let outcomes: Vec<Result<bool, BankError>> = stream::iter(page.instances)
            .map(|id| {
                let (bank, ctx) = (bank.clone(), ctx.clone());
                async move {
                    match carry_on(&bank, &id, &ctx).await {
                        // Listed, but no transfer: a stream without events (see
                        // `EventStore::list_streams`) is nothing to carry on.
                        Err(BankError::TransferNotFound(_)) => Ok(false),
                        outcome => outcome,
                    }
                }
            })
            .buffer_unordered(SWEEP_CONCURRENCY)
            .collect()
            .await;
        for outcome in outcomes {
            match outcome {
                Ok(true) => report.finished = report.finished.saturating_add(1),
                Ok(false) => {}
                Err(error) => {
                    tracing::error!(%error, "a transfer could not be carried on");
                    report.failed = report.failed.saturating_add(1);
                }
            }
        }
        match page.continuation {
            Some(next) => continuation = Some(next),
            None => return Ok(report),
        }
    }
}

/// Carries the listed transfer `id` on unless it is final: `true` when it is final now.
async fn carry_on(bank: &Bank, id: &str, ctx: &CommandContext) -> Result<bool, BankError> {
    let transfer = bank.transfer(id).await?;
    if transfer.phase.is_final() {
        return Ok(false);
    }
    bank.advance_transfer(id, ctx)
        .await
        .map(|t| t.phase.is_final())
}

async fn sweep_handler(bank: Bank, request: Request) -> Result<Reply, Problem> {
    let invocation_id = request.invocation_id();
    let mut response = InvocationResponse::default();
    match sweep(&bank).await {
        Ok(report) => {
            response.log(format!(
                "{} transfer(s) seen, {} carried on to a final state, {} failed",
                report.transfers, report.finished, report.failed
            ));
            let failed = report.failed;
            response.return_value = json!(report);
            if failed == 0 {
                return Reply::ok(&response);
            }
            tracing::error!(%invocation_id, failed, "transfers remain unfinished");
            Err(Problem::internal(
                "transfer-sweep-incomplete",
                format!("{failed} transfer(s) could not be carried on; the next run tries again"),
            )
            .with("failed", failed))
        }
        Err(error) => {
            tracing::error!(%invocation_id, %error, "transfer sweep failed");
            Err(Problem::from(error))
        }
    }
}
