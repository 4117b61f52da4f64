//! The bank's HTTP functions (the public contract; one function.json folder each):
//! `POST /api/OpenAccount/{accountnumber}`, `POST /api/Deposit/{accountnumber}`,
//! `POST /api/Withdraw/{accountnumber}`, `POST /api/SetOverdraftLimit/{accountnumber}`,
//! `POST /api/CloseAccount/{accountnumber}`, `GET /api/GetBalance/{accountnumber}`,
//! `GET /api/GetAccountHistory/{accountnumber}`.
//!
//! Money goes out as strings with two decimal places (`"12.50"`), so no client parses it into
//! a float by accident; it comes in as a JSON number or string.
//!
//! Every command takes an optional `Idempotency-Key` header
//! (`streamfold::functions::idempotency`): the same key with the same request answers what the
//! first attempt answered (status and body, to the byte, with `Idempotent-Replayed: true`)
//! and moves nothing; with another request it is 422 `idempotency-key-reused`. A command's
//! answer is a function of the account right after its event and the correlation id stored
//! with it, nothing else, which is what makes a replay the same answer.

use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use streamfold::functions::filters::CORRELATION_ID_HEADER;
use streamfold::functions::{with_state, CommandContext, DomainApi, Problem, Reply, Request};
use streamfold::stream::RecordedEvent;

use super::account::{Refusal, Status};
use super::money::{format_money, parse_amount, Sign};
use super::seed;
use super::service::{AccountView, Bank, BankError, CommandAnswer};

/// The route parameter naming the account.
pub const ACCOUNT_PARAMETER: &str = "accountnumber";

/// Longest commentary stored with an event.
pub const MAX_COMMENTARY_LEN: usize = 1024;
/// Events per page of GetAccountHistory, unless asked otherwise.
pub const DEFAULT_HISTORY_PAGE: u64 = 100;
/// Largest page of GetAccountHistory.
pub const MAX_HISTORY_PAGE: u64 = 1000;

impl From<BankError> for Problem {
    fn from(error: BankError) -> Self {
        let detail = error.to_string();
        match error {
            BankError::Refused(Refusal::NotOpened) | BankError::NotFound(_) => {
                Problem::not_found("account-not-found", detail)
            }
            BankError::Refused(Refusal::Closed) => Problem::unprocessable("account-closed", detail),
            BankError::Refused(Refusal::AlreadyOpened) => {
                Problem::conflict("account-exists", detail)
            }
            BankError::Refused(Refusal::InvalidAmount(e)) => {
                Problem::bad_request("invalid-amount", detail).with("field", e.field)
            }
            BankError::Refused(Refusal::OutOfRange) => {
                Problem::unprocessable("balance-out-of-range", detail)
            }
            BankError::Refused(Refusal::InsufficientFunds {
                available,
                balance,
                overdraft_limit,
            }) => Problem::unprocessable("insufficient-funds", detail)
                .with("available", format_money(available))
                .with("balance", format_money(balance))
                .with("overdraftLimit", format_money(overdraft_limit)),
            BankError::Refused(Refusal::LimitBelowBalance { balance, limit }) => {
                Problem::unprocessable("limit-below-balance", detail)
                    .with("balance", format_money(balance))
                    .with("limit", format_money(limit))
            }
            BankError::Refused(Refusal::AlreadyAccrued { day, last }) => {
                Problem::conflict("interest-already-accrued", detail)
                    .with("day", day.to_string())
                    .with("lastAccrualDay", last.to_string())
            }
            BankError::Refused(Refusal::InterestMismatch(_)) => {
                Problem::unprocessable("invalid-interest", detail)
            }
            BankError::Refused(Refusal::BalanceNotZero { balance }) => {
                Problem::unprocessable("balance-not-zero", detail)
                    .with("balance", format_money(balance))
            }
            BankError::AlreadyExists(_) => Problem::conflict("account-exists", detail),
            BankError::Execute(e) => e.into(),
            BankError::Store(e) => e.into(),
            BankError::Projection(e) => e.into(),
            BankError::TransferNotFound(id) => {
                Problem::not_found("transfer-not-found", detail).with("transferId", id)
            }
            BankError::TransferExists(id) => {
                Problem::conflict("transfer-exists", detail).with("transferId", id)
            }
            BankError::TransferNotCancellable { id, state } => {
                Problem::conflict("transfer-not-cancellable", detail)
                    .with("transferId", id)
                    .with("state", state)
            }
            BankError::TransferStuck { id, .. } => {
                Problem::internal("transfer-stuck", detail).with("transferId", id)
            }
            BankError::Serialize(_) => Problem::internal("internal", detail),
        }
    }
}

/// A bank command's request, `POST /api/{name}/{accountnumber}`: its context (the
/// correlation id and the `Idempotency-Key`, 400 when malformed, before anything else is
/// looked at) and the account number (one reading for every command route: the bank's own,
/// the interest commands and the seed's aliases).
pub(super) fn command_request(request: &Request) -> Result<(String, CommandContext), Problem> {
    let context = request.command_context()?;
    Ok((account_number(request), context))
}

/// The context of a command that takes no idempotency key (the header is not read).
pub(super) fn unkeyed_context(request: &Request) -> CommandContext {
    CommandContext {
        correlation_id: request.correlation_id().to_owned(),
        ..CommandContext::default()
    }
}

/// The route's account number, as decoded (checked by [`account_key`]).
pub(super) fn account_number(request: &Request) -> String {
    request
        .param(ACCOUNT_PARAMETER)
        .unwrap_or_default()
        .to_owned()
}

/// The commands on an existing account, each with its function (its route is
/// `{function}/{accountnumber}`).
const COMMANDS: [(&str, Command); 4] = [
    ("Deposit", Command::Deposit),
    ("Withdraw", Command::Withdraw),
    ("SetOverdraftLimit", Command::SetOverdraftLimit),
    ("CloseAccount", Command::Close),
];

/// The bank's routes.
pub fn routes(api: DomainApi, bank: &Bank) -> DomainApi {
    let api = api.post(
        "OpenAccount",
        "OpenAccount/{accountnumber}",
        with_state(bank, open_account),
    );
    let api = COMMANDS.into_iter().fold(api, |api, (function, kind)| {
        api.post(
            function,
            &format!("{function}/{{{ACCOUNT_PARAMETER}}}"),
            with_state(bank, move |bank: Bank, request: Request| {
                run_command(kind, bank, request)
            }),
        )
    });
    api.get(
        "GetBalance",
        "GetBalance/{accountnumber}",
        with_state(bank, get_balance),
    )
    .get(
        "GetAccountHistory",
        "GetAccountHistory/{accountnumber}",
        with_state(bank, get_account_history),
    )
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct OpenBody {
    overdraft_limit: Option<Box<RawValue>>,
    commentary: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct MoneyBody {
    amount: Box<RawValue>,
    commentary: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct LimitBody {
    limit: Box<RawValue>,
    commentary: Option<String>,
}

/// A body with only a commentary (CloseAccount, AccrueInterest, PayInterest); the seed's
/// `InterestPayData` spells it `Commentary` (docs/seed-compatibility.md).
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub(super) struct CommentBody {
    #[serde(alias = "Commentary")]
    pub(super) commentary: Option<String>,
}

/// The account as clients see it.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct AccountBody<'a> {
    account_number: &'a str,
    status: Status,
    balance: String,
    overdraft_limit: String,
    available: String,
    in_overdraft: bool,
    /// Interest accrued and not paid yet, with six decimal places.
    accrued_interest: String,
    /// The sequence number of the last event this view includes.
    sequence: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    correlation_id: Option<&'a str>,
}

pub(super) fn account_response(
    status: u16,
    account_number: &str,
    view: &AccountView,
    correlation_id: Option<&str>,
) -> Result<Reply, Problem> {
    let a = &view.account;
    // Only a state no valid history makes (a hand-edited snapshot) has no available amount.
    let available = a.available().ok_or_else(|| {
        tracing::error!(
            account = account_number,
            sequence = view.sequence,
            "account state is out of range"
        );
        Problem::internal(
            "account-state-out-of-range",
            format!(
                "the state of account {account_number} as of sequence {} is out of range",
                view.sequence
            ),
        )
        .with("sequence", view.sequence)
    })?;
    let reply = Reply::json(
        status,
        &AccountBody {
            account_number,
            status: a.status,
            balance: format_money(a.balance),
            overdraft_limit: format_money(a.overdraft_limit),
            available: format_money(available),
            in_overdraft: a.in_overdraft(),
            accrued_interest: super::interest::format_interest(a.accrued_interest),
            sequence: view.sequence,
            correlation_id,
        },
    )?;
    Ok(match correlation_id {
        Some(id) => reply.with_header(CORRELATION_ID_HEADER, id),
        None => reply,
    })
}

/// A command's answer: `status` with the account after it (the same for a replay, which also
/// says `Idempotent-Replayed: true`).
fn command_response(
    status: u16,
    account_number: &str,
    answer: &CommandAnswer,
) -> Result<Reply, Problem> {
    Ok(account_response(
        status,
        account_number,
        &answer.view,
        answer.correlation_id.as_deref(),
    )?
    .replayed(answer.replayed))
}

/// `context` with the client's `commentary`, checked (400 `invalid-commentary` when longer
/// than [`MAX_COMMENTARY_LEN`] characters).
pub(super) fn with_commentary(
    context: CommandContext,
    commentary: Option<String>,
) -> Result<CommandContext, Problem> {
    if commentary
        .as_ref()
        .is_some_and(|c| c.chars().count() > MAX_COMMENTARY_LEN)
    {
        return Err(Problem::bad_request(
            "invalid-commentary",
            format!("commentary must be at most {MAX_COMMENTARY_LEN} characters"),
        ));
    }
    Ok(CommandContext {
        commentary,
        ..context
    })
}

fn amount(field: &'static str, raw: &RawValue, sign: Sign) -> Result<Decimal, Problem> {
    parse_amount(field, raw, sign)
        .map_err(|e| Problem::bad_request("invalid-amount", e.to_string()).with("field", e.field))
}

/// Validates the account number before any body is looked at, so the problem names it.
pub(super) fn account_key(account_number: &str) -> Result<(), Problem> {
    Bank::stream(account_number)
        .map(|_| ())
        .map_err(Problem::from)
}

async fn open_account(bank: Bank, request: Request) -> Result<Reply, Problem> {
    let (account_number, context) = command_request(&request)?;
    account_key(&account_number)?;
    let body: OpenBody = match request.json() {
        Ok(parsed) => parsed,
        Err(problem) => match seed::seed_fields(request.body(), SEED_OPEN_FIELDS) {
            Ok(fields) => {
                return open_seed_account(account_number, context, fields, bank)
                    .await
                    .map_err(seed::seed_problem)
            }
            Err(_) => return Err(problem),
        },
    };
    let limit = match &body.overdraft_limit {
        Some(raw) => amount("overdraftLimit", raw, Sign::NonNegative)?,
        None => Decimal::ZERO,
    };
    let ctx = with_commentary(context, body.commentary)?;
    let answer = bank.open(&account_number, limit, &ctx).await?;
    command_response(201, &account_number, &answer)
}

/// A command on an existing account, as named by its route.
#[derive(Debug, Clone, Copy)]
enum Command {
    Deposit,
    Withdraw,
    SetOverdraftLimit,
    Close,
}

/// The command with its validated arguments.
enum Action {
    Deposit(Decimal),
    Withdraw(Decimal),
    SetOverdraftLimit(Decimal),
    Close,
}

/// Parses and validates a command's body into its action and commentary.
fn parse_command(command: Command, request: &Request) -> Result<(Action, Option<String>), Problem> {
    Ok(match command {
        Command::Deposit | Command::Withdraw => {
            let body: MoneyBody = request.json()?;
            let value = amount("amount", &body.amount, Sign::Positive)?;
            let action = match command {
                Command::Deposit => Action::Deposit(value),
                _ => Action::Withdraw(value),
            };
            (action, body.commentary)
        }
        Command::SetOverdraftLimit => {
            let body: LimitBody = request.json()?;
            let limit = amount("limit", &body.limit, Sign::NonNegative)?;
            (Action::SetOverdraftLimit(limit), body.commentary)
        }
        Command::Close => {
            let body: CommentBody = request.json()?;
            (Action::Close, body.commentary)
        }
    })
}

/// Deposit, Withdraw, SetOverdraftLimit and CloseAccount: validate, decide on fresh state,
/// answer with the account after the command.
async fn run_command(command: Command, bank: Bank, request: Request) -> Result<Reply, Problem> {
    let (account_number, context) = command_request(&request)?;
    account_key(&account_number)?;
    let (action, commentary) = match parse_command(command, &request) {
        Ok(parsed) => parsed,
        Err(rejection) => match command {
            Command::SetOverdraftLimit => {
                match seed::seed_fields(request.body(), SEED_LIMIT_FIELDS) {
                    Ok(fields) => {
                        return set_seed_limit(account_number, context, fields, bank)
                            .await
                            .map_err(seed::seed_problem)
                    }
                    Err(_) => return Err(rejection),
                }
            }
            _ => return Err(rejection),
        },
    };
    let ctx = with_commentary(context, commentary)?;
    let answer = match action {
        Action::Deposit(amount) => bank.deposit(&account_number, amount, &ctx).await,
        Action::Withdraw(amount) => bank.withdraw(&account_number, amount, &ctx).await,
        Action::SetOverdraftLimit(limit) => {
            bank.set_overdraft_limit(&account_number, limit, &ctx).await
        }
        Action::Close => bank.close(&account_number, &ctx).await,
    }?;
    command_response(200, &account_number, &answer)
}

async fn get_balance(bank: Bank, request: Request) -> Result<Reply, Problem> {
    let account_number = account_number(&request);
    account_key(&account_number)?;
    request.only_known_params(&["asOfSequence", "asOf"])?;
    let as_of = request.as_of_params()?;
    let view = bank.balance(&account_number, as_of).await?;
    account_response(200, &account_number, &view, None)
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct HistoryBody<'a> {
    account_number: &'a str,
    version: u64,
    events: &'a [RecordedEvent],
    /// Pass as `fromSequence` for the next page; absent on the last page.
    #[serde(skip_serializing_if = "Option::is_none")]
    next_from_sequence: Option<u64>,
}

async fn get_account_history(bank: Bank, request: Request) -> Result<Reply, Problem> {
    let account_number = account_number(&request);
    account_key(&account_number)?;
    request.only_known_params(&["fromSequence", "pageSize"])?;
    let from = request.u64_param("fromSequence")?.unwrap_or(1).max(1);
    let page_size = request
        .u64_param("pageSize")?
        .unwrap_or(DEFAULT_HISTORY_PAGE);
    if !(1..=MAX_HISTORY_PAGE).contains(&page_size) {
        return Err(Problem::bad_request(
            "invalid-page-size",
            format!("pageSize must be between 1 and {MAX_HISTORY_PAGE}"),
        ));
    }
    let page = bank.history(&account_number, from, page_size).await?;
    Reply::ok(&HistoryBody {
        account_number: &account_number,
        version: page.version,
        events: &page.events,
        next_from_sequence: page.next,
    })
}

/// The seed's OpenAccount body (`AccountOpeningData`).
const SEED_OPEN_FIELDS: &[&str] = &["OpeningBalance", "ClientName", "Commentary"];
/// The seed's SetOverdraftLimit body (`OverdraftSetData`).
const SEED_LIMIT_FIELDS: &[&str] = &["NewOverdraftLimit", "Commentary"];

/// OpenAccount with the seed's body: opens the account (no overdraft limit, as the seed's
/// does) and, with an `OpeningBalance`, deposits it as a second command (the seed's two
/// appends; with an idempotency key, the deposit's key is derived from it, so a retry replays
/// both). `ClientName` is read and not kept: streamfold's account has no owner
/// (docs/seed-compatibility.md).
async fn open_seed_account(
    account_number: String,
    context: CommandContext,
    fields: std::collections::BTreeMap<String, Box<RawValue>>,
    bank: Bank,
) -> Result<Reply, Problem> {
    let opening = seed::seed_amount(&fields, "OpeningBalance", Sign::Positive)?;
    seed::seed_string(&fields, "ClientName")?;
    let commentary = seed::seed_string(&fields, "Commentary")?;
    let deposit_key = match (&context.idempotency_key, opening) {
        (Some(key), Some(_)) => Some(seed::opening_deposit_key(key)?),
        _ => None,
    };
    let ctx = with_commentary(context.clone(), commentary)?;
    let mut answer = bank.open(&account_number, Decimal::ZERO, &ctx).await?;
    if let Some(amount) = opening {
        let ctx = CommandContext {
            idempotency_key: deposit_key,
            ..with_commentary(context, Some(seed::OPENING_DEPOSIT_COMMENTARY.to_owned()))?
        };
        answer = bank.deposit(&account_number, amount, &ctx).await?;
    }
    seed::seed_command_response(
        201,
        &account_number,
        &answer,
        format!("Account {account_number} created"),
    )
}

/// SetOverdraftLimit with the seed's body.
async fn set_seed_limit(
    account_number: String,
    context: CommandContext,
    fields: std::collections::BTreeMap<String, Box<RawValue>>,
    bank: Bank,
) -> Result<Reply, Problem> {
    let limit =
        seed::seed_amount(&fields, "NewOverdraftLimit", Sign::NonNegative)?.ok_or_else(|| {
            Problem::bad_request("invalid-amount", "NewOverdraftLimit is required")
                .with("field", "NewOverdraftLimit")
        })?;
    let commentary = seed::seed_string(&fields, "Commentary")?;
    let ctx = with_commentary(context, commentary)?;
    let answer = bank
        .set_overdraft_limit(&account_number, limit, &ctx)
        .await?;
    seed::seed_command_response(
        200,
        &account_number,
        &answer,
        format!(
            "{} set as the new overdraft limit for account {account_number}",
            format_money(limit)
        ),
    )
}
