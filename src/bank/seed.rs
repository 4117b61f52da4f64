//! The seed's own HTTP contract (the "retail bank" example of EventsSourcing-on-Azure-Functions),
//! as documented aliases served by the bank's commands and queries, so a client written for the
//! seed works against streamfold unchanged (docs/seed-compatibility.md):
//!
//! - `POST /api/DepositMoney/{accountnumber}` with `{"DepositAmount", "Commentary"?, "Source"?}`;
//! - `POST /api/WithdrawMoney/{accountnumber}` with `{"AmountWithdrawn", "Commentary"?}`;
//! - `GET /api/GetBalance/{accountnumber}/{asOfDate}`: a date (`2024-05-01`, its 00:00 UTC) or
//!   an RFC 3339 time;
//! - `GET /api/GetAllAccounts/{asOfDate?}`: every account number;
//! - the seed's bodies of `OpenAccount` (`OpeningBalance`, `ClientName`, `Commentary`) and
//!   `SetOverdraftLimit` (`NewOverdraftLimit`, `Commentary`), which share their routes with the
//!   bank's own functions, are read by those ([`super::http`]).
//!
//! Field names are matched ignoring case and `null` is "absent", as the seed's JSON reader
//! (Newtonsoft) does; amounts are read in the bank's strict decimal grammar. Answers are the
//! bank's (the account, money as strings) with the seed's response fields added: `Message`,
//! `InError` and, for queries and withdrawals, `SequenceNumber`; a refusal is the bank's
//! problem+json with `InError: true` and `Message` (its `detail`) added, and the bank's status
//! (422 where the seed said 403; the document lists each).

use std::collections::BTreeMap;

use rust_decimal::Decimal;
use serde_json::value::RawValue;
use serde_json::{json, Map, Value};
use streamfold::functions::filters::CORRELATION_ID_HEADER;
use streamfold::functions::{with_state, DomainApi, Problem, Reply, Request};
use streamfold::projection::{AsOf, IdempotencyKey};
use time::format_description::well_known::Rfc3339;
use time::macros::format_description;
use time::{Date, OffsetDateTime, UtcOffset};

use super::http::{account_number, command_request, with_commentary};
use super::money::{format_money, parse_amount, Sign};
use super::service::{AccountView, Bank, CommandAnswer};

/// The seed's routes that streamfold serves under their own names.
pub const DEPOSIT_MONEY_ROUTE: &str = "DepositMoney/{accountnumber}";
pub const WITHDRAW_MONEY_ROUTE: &str = "WithdrawMoney/{accountnumber}";
pub const GET_BALANCE_AS_OF_ROUTE: &str = "GetBalance/{accountnumber}/{asOfDate}";
pub const GET_ALL_ACCOUNTS_ROUTE: &str = "GetAllAccounts/{asOfDate?}";
/// Most account numbers GetAllAccounts lists (then `truncated`; ListStreams pages further).
pub const MAX_LISTED_ACCOUNTS: usize = 10_000;
/// Instance keys read per page while listing.
const LIST_PAGE: usize = 1_000;
/// What is appended to an OpenAccount's idempotency key for its opening deposit.
pub const OPENING_DEPOSIT_KEY_SUFFIX: &str = "#OpeningBalance";
/// The commentary of the deposit an `OpeningBalance` makes (the seed's words).
pub const OPENING_DEPOSIT_COMMENTARY: &str = "Opening deposit";

/// The route parameter of the seed's date.
const AS_OF_DATE_PARAMETER: &str = "asOfDate";

/// The seed's routes that are not the bank's own.
pub fn routes(api: DomainApi, bank: &Bank) -> DomainApi {
    api.post(
        "DepositMoney",
        DEPOSIT_MONEY_ROUTE,
        with_state(bank, |bank, request| {
            seed_command(Money::Deposit, bank, request)
        }),
    )
    .post(
        "WithdrawMoney",
        WITHDRAW_MONEY_ROUTE,
        with_state(bank, |bank, request| {
            seed_command(Money::Withdraw, bank, request)
        }),
    )
    .get(
        "GetBalanceAsOfDate",
        GET_BALANCE_AS_OF_ROUTE,
        with_state(bank, balance_as_of),
    )
    .get(
        "GetAllAccounts",
        GET_ALL_ACCOUNTS_ROUTE,
        with_state(bank, all_accounts),
    )
}

/// A seed refusal: the bank's problem with the seed's `InError` and `Message`.
pub fn seed_problem(problem: Problem) -> Problem {
    let message = problem.detail().to_owned();
    problem.with("InError", true).with("Message", message)
}

/// Reads a seed body: a JSON object (or nothing), its field names lower-cased (the seed's
/// reader ignores case), `null` fields dropped; a field not in `known` is refused.
pub fn seed_fields(
    body: &[u8],
    known: &[&str],
) -> Result<BTreeMap<String, Box<RawValue>>, Problem> {
    let text: &[u8] = if body.iter().all(u8::is_ascii_whitespace) {
        b"{}"
    } else {
        body
    };
    let fields: BTreeMap<String, Box<RawValue>> = serde_json::from_slice(text).map_err(|e| {
        Problem::bad_request(
            "invalid-json",
            format!("the body must be a JSON object: {e}"),
        )
    })?;
    let mut out = BTreeMap::new();
    for (name, value) in fields {
        let lower = name.to_ascii_lowercase();
        let Some(canonical) = known.iter().find(|k| k.eq_ignore_ascii_case(&lower)) else {
            return Err(Problem::bad_request(
                "unknown-field",
                format!("the body has no field {name:?} (fields: {known:?})"),
            )
            .with("field", name));
        };
        if value.get() == "null" {
            continue;
        }
        if out.insert(canonical.to_ascii_lowercase(), value).is_some() {
            return Err(Problem::bad_request(
                "duplicate-field",
                format!("the body names {canonical} twice"),
            ));
        }
    }
    Ok(out)
}

/// A seed string field (`Commentary`, `Source`, ...), when present.
pub fn seed_string(
    fields: &BTreeMap<String, Box<RawValue>>,
    name: &str,
) -> Result<Option<String>, Problem> {
    fields
        .get(&name.to_ascii_lowercase())
        .map(|raw| {
            serde_json::from_str::<String>(raw.get()).map_err(|_| {
                Problem::bad_request("invalid-field", format!("{name} must be a string"))
                    .with("field", name)
            })
        })
        .transpose()
}

/// A seed amount field, in the bank's grammar.
pub fn seed_amount(
    fields: &BTreeMap<String, Box<RawValue>>,
    name: &'static str,
    sign: Sign,
) -> Result<Option<Decimal>, Problem> {
    fields
        .get(&name.to_ascii_lowercase())
        .map(|raw| {
            parse_amount(name, raw, sign).map_err(|e| {
                Problem::bad_request("invalid-amount", e.to_string()).with("field", e.field)
            })
        })
        .transpose()
}

/// The idempotency key of the deposit an OpenAccount's `OpeningBalance` makes: the command's
/// own key with [`OPENING_DEPOSIT_KEY_SUFFIX`], so a retry of the opening replays both.
pub fn opening_deposit_key(key: &IdempotencyKey) -> Result<IdempotencyKey, Problem> {
    IdempotencyKey::new(&format!("{}{OPENING_DEPOSIT_KEY_SUFFIX}", key.as_str())).map_err(|e| {
        Problem::bad_request(
            "invalid-idempotency-key",
            format!(
                "with an OpeningBalance, the key must leave room for {OPENING_DEPOSIT_KEY_SUFFIX:?}: {e}"
            ),
        )
    })
}

/// The account as the bank shows it, with the seed's response fields.
pub fn seed_account_body(
    account_number: &str,
    view: &AccountView,
    message: String,
    correlation_id: Option<&str>,
) -> Result<Value, Problem> {
    let a = &view.account;
    let available = a.available().ok_or_else(|| {
        Problem::internal(
            "account-state-out-of-range",
            format!(
                "the state of account {account_number} as of sequence {} is out of range",
                view.sequence
            ),
        )
    })?;
    let mut body = Map::new();
    body.insert("accountNumber".into(), json!(account_number));
    body.insert("status".into(), json!(a.status));
    body.insert("balance".into(), json!(format_money(a.balance)));
    body.insert(
        "overdraftLimit".into(),
        json!(format_money(a.overdraft_limit)),
    );
    body.insert("available".into(), json!(format_money(available)));
    body.insert("inOverdraft".into(), json!(a.in_overdraft()));
    body.insert("sequence".into(), json!(view.sequence));
    if let Some(id) = correlation_id {
        body.insert("correlationId".into(), json!(id));
    }
    body.insert("Message".into(), json!(message));
    body.insert("InError".into(), json!(false));
    body.insert("SequenceNumber".into(), json!(view.sequence));
    Ok(Value::Object(body))
}

/// A command's answer in the seed's shape (with the replay header of a replay).
pub fn seed_command_response(
    status: u16,
    account_number: &str,
    answer: &CommandAnswer,
    message: String,
) -> Result<Reply, Problem> {
    let body = seed_account_body(
        account_number,
        &answer.view,
        message,
        answer.correlation_id.as_deref(),
    )?;
    let reply = Reply::json(status, &body)?.replayed(answer.replayed);
    Ok(match answer.correlation_id.as_deref() {
        Some(id) => reply.with_header(CORRELATION_ID_HEADER, id),
        None => reply,
    })
}

#[derive(Debug, Clone, Copy)]
enum Money {
    Deposit,
    Withdraw,
}

async fn seed_command(kind: Money, bank: Bank, request: Request) -> Result<Reply, Problem> {
    run_seed_command(kind, bank, request)
        .await
        .map_err(seed_problem)
}

async fn run_seed_command(kind: Money, bank: Bank, request: Request) -> Result<Reply, Problem> {
    let (account_number, context) = command_request(&request)?;
    let body = request.body();
    Bank::stream(&account_number)?;
    let (amount_field, known): (&'static str, &[&str]) = match kind {
        Money::Deposit => ("DepositAmount", &["DepositAmount", "Commentary", "Source"]),
        Money::Withdraw => ("AmountWithdrawn", &["AmountWithdrawn", "Commentary"]),
    };
    let fields = seed_fields(body, known)?;
    let amount = seed_amount(&fields, amount_field, Sign::Positive)?.ok_or_else(|| {
        Problem::bad_request("invalid-amount", format!("{amount_field} is required"))
            .with("field", amount_field)
    })?;
    // The seed's `Source` of a deposit is accepted (a client sends it) and not kept: streamfold's
    // `source` metadata is the server's own (docs/seed-compatibility.md).
    seed_string(&fields, "Source")?;
    let commentary = seed_string(&fields, "Commentary")?;
    let ctx = with_commentary(context, commentary)?;
    let (answer, message) = match kind {
        Money::Deposit => {
            let answer = bank.deposit(&account_number, amount, &ctx).await?;
            let message = format!(
                "{} deposited to account {account_number}",
                format_money(amount)
            );
            (answer, message)
        }
        Money::Withdraw => {
            let answer = bank.withdraw(&account_number, amount, &ctx).await?;
            let a = &answer.view.account;
            let message = format!(
                "{} withdrawn from account {account_number} (New balance: {}, overdraft: {})",
                format_money(amount),
                format_money(a.balance),
                format_money(a.overdraft_limit)
            );
            (answer, message)
        }
    };
    seed_command_response(200, &account_number, &answer, message)
}

/// The seed's `asOfDate`: a date (`2024-05-01`, meaning its 00:00 UTC) or an RFC 3339 time,
/// in UTC.
pub fn parse_as_of_date(text: &str) -> Result<OffsetDateTime, Problem> {
    let invalid = || {
        Problem::bad_request(
            "invalid-as-of-date",
            format!(
                "asOfDate must be a date such as 2024-05-01 or an RFC 3339 time such as \
                 2024-05-01T10:00:00Z, not {text:?}"
            ),
        )
        .with("parameter", "asOfDate")
    };
    let date_format = format_description!("[year]-[month]-[day]");
    if let Ok(date) = Date::parse(text, &date_format) {
        return Ok(date.midnight().assume_utc());
    }
    let time = OffsetDateTime::parse(&text.replace(' ', "+"), &Rfc3339).map_err(|_| invalid())?;
    time.checked_to_offset(UtcOffset::UTC).ok_or_else(invalid)
}

async fn balance_as_of(bank: Bank, request: Request) -> Result<Reply, Problem> {
    async {
        let account_number = account_number(&request);
        Bank::stream(&account_number)?;
        request.only_known_params(&[])?;
        let time = parse_as_of_date(request.param(AS_OF_DATE_PARAMETER).unwrap_or_default())?;
        let view = bank.balance(&account_number, AsOf::Time(time)).await?;
        let message = format!(
            "Balance for account {account_number} is {}",
            format_money(view.account.balance)
        );
        let body = seed_account_body(&account_number, &view, message, None)?;
        Reply::ok(&body)
    }
    .await
    .map_err(seed_problem)
}

async fn all_accounts(bank: Bank, request: Request) -> Result<Reply, Problem> {
    async {
        request.only_known_params(&[])?;
        // The seed takes a date here and does not use it; so it is checked, then ignored.
        if let Some(date) = request.param(AS_OF_DATE_PARAMETER) {
            parse_as_of_date(date)?;
        }
        let mut numbers: Vec<String> = Vec::new();
        let mut continuation: Option<String> = None;
        let mut truncated = false;
        loop {
            let page = bank
                .list_accounts(continuation.as_deref(), LIST_PAGE)
                .await?;
            numbers.extend(page.instances);
            if numbers.len() >= MAX_LISTED_ACCOUNTS {
                truncated = numbers.len() > MAX_LISTED_ACCOUNTS || page.continuation.is_some();
                numbers.truncate(MAX_LISTED_ACCOUNTS);
                break;
            }
            match page.continuation {
                Some(next) => continuation = Some(next),
                None => break,
            }
        }
        let message = format!("Account numbers: {}", numbers.join(","));
        Reply::ok(&json!({
            "accountNumbers": numbers,
            "truncated": truncated,
            "Message": message,
            "InError": false,
        }))
    }
    .await
    .map_err(seed_problem)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn as_of_dates_are_dates_at_midnight_utc_or_rfc_3339_times() {
        let midnight = parse_as_of_date("2024-05-01").unwrap();
        assert_eq!(midnight.to_string(), "2024-05-01 0:00:00.0 +00:00:00");
        let time = parse_as_of_date("2024-05-01T10:30:00+02:00").unwrap();
        assert_eq!(time.offset(), UtcOffset::UTC);
        assert_eq!(time.hour(), 8);
        for bad in [
            "05/01/2024",
            "2024-5-1",
            "yesterday",
            "2024-05-01T10:30",
            "",
        ] {
            assert!(parse_as_of_date(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn seed_bodies_ignore_case_and_nulls_and_refuse_unknown_fields() {
        let fields = seed_fields(
            br#"{"depositamount": 12.5, "Commentary": null, "SOURCE": "till"}"#,
            &["DepositAmount", "Commentary", "Source"],
        )
        .unwrap();
        assert_eq!(fields["depositamount"].get(), "12.5");
        assert!(!fields.contains_key("commentary"));
        assert_eq!(
            seed_string(&fields, "Source").unwrap().as_deref(),
            Some("till")
        );
        let unknown = seed_fields(br#"{"Amount": 1}"#, &["DepositAmount"]).unwrap_err();
        assert_eq!(unknown.status().as_u16(), 400);
        let twice = seed_fields(
            br#"{"DepositAmount": 1, "depositAmount": 2}"#,
            &["DepositAmount"],
        )
        .unwrap_err();
        assert!(twice.detail().contains("twice"));
    }
}
