//! The interest functions (one function.json folder each):
//! - `POST /api/AccrueInterest/{accountnumber}` (body optional: `{"commentary"}`; a rate or any
//!   other field is 400): accrues today's (UTC) interest once. 200 with `alreadyAccrued: false`
//!   and the day's `interest` (amount, annual rate, balance at the start of the day) when this
//!   call accrued it; 200 with `alreadyAccrued: true` and no `interest` when the day was accrued
//!   before (nothing written). 404 `account-not-found`, 422 `account-closed`;
//! - `POST /api/PayInterest/{accountnumber}` (body optional: `{"commentary"}`, an
//!   `Idempotency-Key` header honoured as by the other commands): pays the accrued interest
//!   into the balance and zeroes it; `paid` is the amount moved (`"0.00"` with nothing
//!   accrued, nothing written), `overdraftExtended` says whether the limit was raised to pay
//!   debit interest;
//! - `POST /AccrueInterestTimer` (timer trigger): the daily run ([`super::interest_timer`]).

use serde::Serialize;
use serde_json::json;
use streamfold::functions::invocation::InvocationResponse;
use streamfold::functions::{with_state, DomainApi, Problem, Reply, Request};

use super::http::{account_key, command_request, unkeyed_context, with_commentary, CommentBody};
use super::interest::{format_day, format_interest, InterestRates};
use super::interest_timer::{self, TIMER_FUNCTION};
use super::money::format_money;
use super::service::Bank;

/// The function accruing one account's interest.
pub const ACCRUE_FUNCTION: &str = "AccrueInterest";
/// The function paying one account's accrued interest.
pub const PAY_FUNCTION: &str = "PayInterest";

/// `POST /api/AccrueInterest/{accountnumber}`, `POST /api/PayInterest/{accountnumber}` and
/// `POST /AccrueInterestTimer`.
pub fn routes(api: DomainApi, bank: &Bank) -> DomainApi {
    api.post(
        ACCRUE_FUNCTION,
        "AccrueInterest/{accountnumber}",
        with_state(bank, accrue),
    )
    .post(
        PAY_FUNCTION,
        "PayInterest/{accountnumber}",
        with_state(bank, pay),
    )
    .invocation(TIMER_FUNCTION, with_state(bank, timer_handler))
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct InterestBody {
    amount: String,
    annual_rate: String,
    balance_at_start_of_day: String,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct AccrualBody<'a> {
    account_number: &'a str,
    day: String,
    already_accrued: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    interest: Option<InterestBody>,
    accrued_interest: String,
    balance: String,
    sequence: u64,
}

async fn accrue(bank: Bank, request: Request) -> Result<Reply, Problem> {
    // Accruing is once a day by itself: a key adds nothing, and is accepted and ignored.
    let (account_number, _keyed) = command_request(&request)?;
    account_key(&account_number)?;
    let body: CommentBody = request.json()?;
    let ctx = with_commentary(unkeyed_context(&request), body.commentary)?;
    let rates = InterestRates::current();
    let day = interest_timer::day_now(&rates);
    let accrual = bank
        .accrue_interest(&account_number, day, &rates, &ctx)
        .await?;
    let account = &accrual.view.account;
    Reply::ok(&AccrualBody {
        account_number: &account_number,
        day: format_day(accrual.day),
        already_accrued: accrual.accrued.is_none(),
        interest: accrual.accrued.as_ref().map(|a| InterestBody {
            amount: format_interest(a.amount),
            annual_rate: a.annual_rate.normalize().to_string(),
            balance_at_start_of_day: format_money(a.balance),
        }),
        accrued_interest: format_interest(account.accrued_interest),
        balance: format_money(account.balance),
        sequence: accrual.view.sequence,
    })
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct PaymentBody<'a> {
    account_number: &'a str,
    paid: String,
    /// The accrued interest the payment zeroed.
    accrued_paid: String,
    overdraft_extended: bool,
    balance: String,
    overdraft_limit: String,
    accrued_interest: String,
    sequence: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    correlation_id: Option<&'a str>,
}

async fn pay(bank: Bank, request: Request) -> Result<Reply, Problem> {
    let (account_number, context) = command_request(&request)?;
    account_key(&account_number)?;
    let body: CommentBody = request.json()?;
    let ctx = with_commentary(context, body.commentary)?;
    let payment = bank.pay_interest(&account_number, &ctx).await?;
    let account = &payment.view.account;
    Ok(Reply::ok(&PaymentBody {
        account_number: &account_number,
        paid: format_money(payment.paid),
        accrued_paid: format_interest(payment.accrued),
        overdraft_extended: payment.overdraft_extended.is_some(),
        balance: format_money(account.balance),
        overdraft_limit: format_money(account.overdraft_limit),
        accrued_interest: format_interest(account.accrued_interest),
        sequence: payment.view.sequence,
        correlation_id: payment.correlation_id.as_deref(),
    })?
    .replayed(payment.replayed))
}

async fn timer_handler(bank: Bank, request: Request) -> Result<Reply, Problem> {
    let invocation_id = request.invocation_id();
    let rates = InterestRates::current();
    let day = interest_timer::day_now(&rates);
    let mut response = InvocationResponse::default();
    match interest_timer::run(&bank, day, &rates).await {
        Ok(report) => {
            response.log(format!(
                "interest run for {}: {} page(s) after {} recorded before, {} accrued, {} \
                 already accrued, {} skipped, {} failed{}{}",
                report.day,
                report.pages,
                report.resumed_after_pages,
                report.accrued,
                report.already_accrued,
                report.skipped,
                report.failed,
                if report.finished { ", finished" } else { "" },
                if report.overtaken {
                    ", overtaken by another run"
                } else {
                    ""
                },
            ));
            response.return_value = json!(report);
            if report.failed == 0 {
                return Reply::ok(&response);
            }
            tracing::error!(%invocation_id, failed = report.failed, "interest run incomplete");
            Err(Problem::internal(
                "interest-run-incomplete",
                format!(
                    "{} account(s) could not be accrued for {}; the next run resumes at their page",
                    report.failed, report.day
                ),
            )
            .with("failed", report.failed))
        }
        Err(error) => {
            tracing::error!(%invocation_id, %error, "interest run failed");
            Err(Problem::from(error))
        }
    }
}
