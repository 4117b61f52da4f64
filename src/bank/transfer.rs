//! Transfers between two accounts, exactly once, each with a stream of its own
//! (`Bank/Transfer/{transferId}`) that records its steps.
//!
//! A transfer moves through these steps, each recorded on its stream by an append at the exact
//! version its decision read (so two processes advancing one transfer never both record a
//! step; the loser reads again and carries on from what the winner recorded):
//!
//! ```text
//! TransferRequested ─┬─> TransferCancelled                                (cancelled)
//!                    └─> TransferDebitStarted ─┬─> TransferRefused         (refused)
//!                                              └─> TransferDebited ─┬─> TransferCredited  (completed)
//!                                                                   └─> TransferCreditFailed
//!                                                                        └─> TransferRefunded (refunded)
//! ```
//!
//! Guarantees:
//! - **each account movement happens at most once**: the debit (`MoneyTransferredOut` on the
//!   source), the credit (`MoneyTransferredIn` on the target) and the refund
//!   (`MoneyTransferRefunded` on the source) are commands of the library's executor with
//!   event ids derived from the transfer id and the step (an idempotency key
//!   `transfer:{id}:{step}`), so the store recognises a repeated step in the atomic append and
//!   answers it as the first one, whichever process repeats it, however the account moved
//!   since (even when the rules would refuse it now);
//! - **cancel and debit exclude each other**: the debit is made only after
//!   `TransferDebitStarted` is recorded, and a cancellation only while it is not;
//! - **credit and refund exclude each other**: a refund is made only after
//!   `TransferCreditFailed` is recorded, and that is recorded only when the credit was refused
//!   for a reason that never goes away (the target does not exist or is closed);
//! - **an interrupted transfer is finished**: the steps are idempotent and the state is on the
//!   stream, so sending `TransferMoney` again with the same id and request, the
//!   `TransferSweep` timer, or any call to [`Bank::advance_transfer`] carries it on from its
//!   last recorded step, never doing one twice;
//! - the debit obeys the overdraft rule: checked before the transfer is recorded (refused up
//!   front, nothing written) and again by the debit itself (a race lost to a withdrawal is
//!   recorded as `TransferRefused` with the reason).

use std::collections::BTreeMap;

use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};
use streamfold::functions::CommandContext;
use streamfold::projection::{AsOf, CommandExecutor, CommandOptions, Idempotency, IdempotencyKey};
use streamfold::stream::{
    EntityType, EventMetadata, ExpectedVersion, NewEvent, ReadRequest, RecordedEvent, StoreError,
    StreamId,
};
use time::OffsetDateTime;

use super::account::{Account, AccountProjection, Refusal, Status};
use super::events::{AccountEvent, MoneyTransferred, TransferRefunded};
use super::service::{to_new_event, Bank, BankError};
use super::{DOMAIN, SOURCE};

/// Entity type of the transfer streams.
pub const TRANSFER_ENTITY: &str = "Transfer";
/// The transfer streams' entity type.
pub const TRANSFERS: EntityType = EntityType::from_static(DOMAIN, TRANSFER_ENTITY);
/// Longest transfer id.
pub const MAX_TRANSFER_ID_LEN: usize = 128;
/// Most steps one call of [`Bank::advance_transfer`] records (a transfer has at most 5).
const MAX_STEPS_PER_ADVANCE: usize = 16;

pub const TRANSFER_REQUESTED: &str = "TransferRequested";
pub const TRANSFER_DEBIT_STARTED: &str = "TransferDebitStarted";
pub const TRANSFER_DEBITED: &str = "TransferDebited";
pub const TRANSFER_CREDITED: &str = "TransferCredited";
pub const TRANSFER_CREDIT_FAILED: &str = "TransferCreditFailed";
pub const TRANSFER_REFUNDED: &str = "TransferRefunded";
pub const TRANSFER_CANCELLED: &str = "TransferCancelled";
pub const TRANSFER_REFUSED: &str = "TransferRefused";

/// Whether `id` is a transfer id: 1 to [`MAX_TRANSFER_ID_LEN`] ASCII letters, digits, `-`,
/// `_` or `.` (so it is a stream key and fits in the steps' idempotency keys).
pub fn check_transfer_id(id: &str) -> Result<(), String> {
    if id.is_empty() || id.len() > MAX_TRANSFER_ID_LEN {
        return Err(format!(
            "a transfer id has 1 to {MAX_TRANSFER_ID_LEN} characters"
        ));
    }
    if let Some(c) = id
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.')))
    {
        return Err(format!(
            "a transfer id has only ASCII letters, digits, '-', '_' and '.', not {c:?}"
        ));
    }
    Ok(())
}

/// What a transfer is asked to do.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TransferRequest {
    pub from: String,
    pub to: String,
    #[serde(with = "super::money::stored")]
    pub amount: Decimal,
}

/// A step's data: the account event it made, or why it could not be made.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct StepData {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub account_sequence: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// The problem slug of a refusal (`insufficient-funds`, `account-closed`, ...).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub problem: Option<String>,
}

/// Where a transfer is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    Requested,
    DebitStarted,
    Debited,
    CreditFailed,
    Completed,
    Refunded,
    Cancelled,
    Refused,
}

impl Phase {
    /// The state clients see: `requested`, `debited`, `completed`, `refunded`, `cancelled`
    /// or `refused`.
    pub fn state(self) -> &'static str {
        match self {
            Self::Requested | Self::DebitStarted => "requested",
            Self::Debited | Self::CreditFailed => "debited",
            Self::Completed => "completed",
            Self::Refunded => "refunded",
            Self::Cancelled => "cancelled",
            Self::Refused => "refused",
        }
    }

    pub fn is_final(self) -> bool {
        matches!(
            self,
            Self::Completed | Self::Refunded | Self::Cancelled | Self::Refused
        )
    }
}

/// One recorded step.
#[derive(Debug, Clone)]
pub struct Step {
    pub step: String,
    pub sequence: u64,
    pub at: OffsetDateTime,
    pub data: StepData,
}

/// A transfer as its stream tells it.
#[derive(Debug, Clone)]
pub struct Transfer {
    pub id: String,
    pub request: TransferRequest,
    pub commentary: Option<String>,
    pub phase: Phase,
    pub steps: Vec<Step>,
    /// The transfer stream's version.
    pub version: u64,
}

impl Transfer {
    /// The refusal recorded by `TransferRefused`, if any.
    pub fn refusal(&self) -> Option<&StepData> {
        self.steps
            .iter()
            .find(|s| s.step == TRANSFER_REFUSED)
            .map(|s| &s.data)
    }

    /// Folds a transfer stream; `None` when it has no events. A step out of order is an error.
    fn fold(id: &str, events: &[RecordedEvent], version: u64) -> Result<Option<Self>, String> {
        let Some(first) = events.first() else {
            return Ok(None);
        };
        if first.event_type != TRANSFER_REQUESTED {
            return Err(format!("it starts with {}", first.event_type));
        }
        let request: TransferRequest =
            serde_json::from_str(first.data.get()).map_err(|e| e.to_string())?;
        let mut transfer = Transfer {
            id: id.to_owned(),
            request,
            commentary: first.metadata.commentary.clone(),
            phase: Phase::Requested,
            steps: Vec::new(),
            version,
        };
        for event in events {
            let next = match (transfer.phase, event.event_type.as_str()) {
                (_, TRANSFER_REQUESTED) if event.sequence == first.sequence => Phase::Requested,
                (Phase::Requested, TRANSFER_CANCELLED) => Phase::Cancelled,
                (Phase::Requested, TRANSFER_DEBIT_STARTED) => Phase::DebitStarted,
                (Phase::DebitStarted, TRANSFER_REFUSED) => Phase::Refused,
                (Phase::DebitStarted, TRANSFER_DEBITED) => Phase::Debited,
                (Phase::Debited, TRANSFER_CREDITED) => Phase::Completed,
                (Phase::Debited, TRANSFER_CREDIT_FAILED) => Phase::CreditFailed,
                (Phase::CreditFailed, TRANSFER_REFUNDED) => Phase::Refunded,
                (phase, other) => {
                    return Err(format!(
                        "event {} ({other}) cannot follow {phase:?}",
                        event.sequence
                    ))
                }
            };
            let data = if event.event_type == TRANSFER_REQUESTED {
                StepData::default()
            } else {
                serde_json::from_str(event.data.get()).map_err(|e| e.to_string())?
            };
            transfer.phase = next;
            transfer.steps.push(Step {
                step: event.event_type.clone(),
                sequence: event.sequence,
                at: event.timestamp,
                data,
            });
        }
        Ok(Some(transfer))
    }
}

/// How a step on an account ended.
enum Moved {
    /// Made now or before: the account event's sequence.
    Done(u64),
    /// Refused by the account's rules (never by storage): the problem slug and why.
    Refused(&'static str, String),
}

/// The problem slug of a refusal by an account's rules, when `error` is one.
fn refusal_slug(error: &BankError) -> Option<&'static str> {
    Some(match error {
        BankError::NotFound(_) | BankError::Refused(Refusal::NotOpened) => "account-not-found",
        BankError::Refused(Refusal::Closed) => "account-closed",
        BankError::Refused(Refusal::InsufficientFunds { .. }) => "insufficient-funds",
        BankError::Refused(Refusal::OutOfRange) => "balance-out-of-range",
        _ => return None,
    })
}

impl Bank {
    fn transfer_stream(id: &str) -> Result<StreamId, BankError> {
        Ok(StreamId::new(DOMAIN, TRANSFER_ENTITY, id).map_err(StoreError::from)?)
    }

    /// The transfer `id`, as recorded; `TransferNotFound` when there is none.
    pub async fn transfer(&self, id: &str) -> Result<Transfer, BankError> {
        self.read_transfer(id)
            .await?
            .ok_or_else(|| BankError::TransferNotFound(id.to_owned()))
    }

    async fn read_transfer(&self, id: &str) -> Result<Option<Transfer>, BankError> {
        let stream = Self::transfer_stream(id)?;
        let store = self.app().store(&TRANSFERS)?;
        let slice = store.read(&stream, ReadRequest::all()).await?;
        Transfer::fold(id, &slice.events, slice.version).map_err(|reason| {
            BankError::Store(StoreError::Corrupt {
                stream: stream.to_string(),
                detail: reason,
            })
        })
    }

    /// Appends one step to the transfer at `transfer.version`; `false` when another writer
    /// recorded something first (read again and carry on).
    async fn record_step(
        &self,
        transfer: &Transfer,
        step: &str,
        data: &StepData,
        context: &CommandContext,
    ) -> Result<bool, BankError> {
        let stream = Self::transfer_stream(&transfer.id)?;
        let store = self.app().store(&TRANSFERS)?;
        let event = NewEvent::from_raw(step, serde_json::value::to_raw_value(data)?)
            .with_metadata(step_metadata(context, None));
        match store
            .append(
                &stream,
                ExpectedVersion::Exact(transfer.version),
                vec![event],
            )
            .await
        {
            Ok(_) => Ok(true),
            Err(StoreError::WrongExpectedVersion { .. }) => Ok(false),
            Err(e) => Err(e.into()),
        }
    }

    /// Starts transfer `id` (see the module): the request is checked against both accounts
    /// first (nothing is written when the debit would be refused or the target cannot take
    /// the money), recorded, and carried as far as it goes. The same id with the same request
    /// again carries the recorded transfer on and answers it (`created` false); with another
    /// request it is `TransferExists`.
    pub async fn start_transfer(
        &self,
        id: &str,
        request: &TransferRequest,
        context: &CommandContext,
    ) -> Result<(Transfer, bool), BankError> {
        loop {
            if let Some(existing) = self.read_transfer(id).await? {
                if existing.request != *request {
                    return Err(BankError::TransferExists(id.to_owned()));
                }
                return Ok((self.advance_transfer(id, context).await?, false));
            }
            let from = self.balance(&request.from, AsOf::Latest).await?.account;
            if from.status == Status::Closed {
                return Err(Refusal::Closed.into());
            }
            from.withdraw(request.amount)?;
            let to = self.balance(&request.to, AsOf::Latest).await?.account;
            if to.status == Status::Closed {
                return Err(Refusal::Closed.into());
            }
            let stream = Self::transfer_stream(id)?;
            let store = self.app().store(&TRANSFERS)?;
            let event = NewEvent::from_raw(
                TRANSFER_REQUESTED,
                serde_json::value::to_raw_value(request)?,
            )
            .with_metadata(step_metadata(context, context.commentary.clone()));
            match store
                .append(&stream, ExpectedVersion::NoStream, vec![event])
                .await
            {
                Ok(_) => return Ok((self.advance_transfer(id, context).await?, true)),
                // Another request with this id got in first: answer as a retry of it.
                Err(StoreError::WrongExpectedVersion { .. }) => continue,
                Err(e) => return Err(e.into()),
            }
        }
    }

    /// Carries transfer `id` on from its last recorded step to a final state (or as far as
    /// storage lets it: an outage is an error, and the next call resumes).
    pub async fn advance_transfer(
        &self,
        id: &str,
        context: &CommandContext,
    ) -> Result<Transfer, BankError> {
        for _ in 0..MAX_STEPS_PER_ADVANCE {
            let transfer = self.transfer(id).await?;
            let (step, data) = match transfer.phase {
                phase if phase.is_final() => return Ok(transfer),
                Phase::Requested => (TRANSFER_DEBIT_STARTED, StepData::default()),
                Phase::DebitStarted => match self.move_money(&transfer, Leg::Debit, context).await?
                {
                    Moved::Done(sequence) => (TRANSFER_DEBITED, StepData::done(sequence)),
                    Moved::Refused(slug, reason) => {
                        (TRANSFER_REFUSED, StepData::refused(slug, reason))
                    }
                },
                Phase::Debited => match self.move_money(&transfer, Leg::Credit, context).await? {
                    Moved::Done(sequence) => (TRANSFER_CREDITED, StepData::done(sequence)),
                    Moved::Refused(slug, reason) => {
                        (TRANSFER_CREDIT_FAILED, StepData::refused(slug, reason))
                    }
                },
                Phase::CreditFailed => {
                    match self.move_money(&transfer, Leg::Refund, context).await? {
                        Moved::Done(sequence) => (TRANSFER_REFUNDED, StepData::done(sequence)),
                        Moved::Refused(_, reason) => {
                            // Only a source account that no longer exists refuses a refund.
                            return Err(BankError::TransferStuck {
                                id: id.to_owned(),
                                reason,
                            });
                        }
                    }
                }
                _ => return Ok(transfer),
            };
            self.record_step(&transfer, step, &data, context).await?;
        }
        self.transfer(id).await
    }

    /// Cancels transfer `id` when its debit has not started; a cancelled one is answered as it
    /// is; any other is `TransferNotCancellable`.
    pub async fn cancel_transfer(
        &self,
        id: &str,
        context: &CommandContext,
    ) -> Result<Transfer, BankError> {
        loop {
            let transfer = self.transfer(id).await?;
            match transfer.phase {
                Phase::Cancelled => return Ok(transfer),
                Phase::Requested => {
                    let data = StepData {
                        reason: context.commentary.clone(),
                        ..StepData::default()
                    };
                    if self
                        .record_step(&transfer, TRANSFER_CANCELLED, &data, context)
                        .await?
                    {
                        return self.transfer(id).await;
                    }
                }
                phase => {
                    return Err(BankError::TransferNotCancellable {
                        id: id.to_owned(),
                        state: phase.state(),
                    })
                }
            }
        }
    }

    /// One account movement of a transfer, at most once (see the module).
    async fn move_money(
        &self,
        transfer: &Transfer,
        leg: Leg,
        context: &CommandContext,
    ) -> Result<Moved, BankError> {
        let request = &transfer.request;
        let (account, event, label) = match leg {
            Leg::Debit => (
                &request.from,
                AccountEvent::TransferredOut(MoneyTransferred {
                    transfer_id: transfer.id.clone(),
                    account: request.to.clone(),
                    amount: request.amount,
                }),
                "debit",
            ),
            Leg::Credit => (
                &request.to,
                AccountEvent::TransferredIn(MoneyTransferred {
                    transfer_id: transfer.id.clone(),
                    account: request.from.clone(),
                    amount: request.amount,
                }),
                "credit",
            ),
            Leg::Refund => (
                &request.from,
                AccountEvent::TransferRefunded(TransferRefunded {
                    transfer_id: transfer.id.clone(),
                    amount: request.amount,
                }),
                "refund",
            ),
        };
        let key = IdempotencyKey::new(&format!("transfer:{}:{label}", transfer.id))
            .map_err(|e| BankError::Store(StoreError::Misconfigured(e.to_string())))?;
        let canonical = serde_json::to_vec(&BTreeMap::from([
            ("transfer", transfer.id.as_str()),
            ("step", label),
            ("from", request.from.as_str()),
            ("to", request.to.as_str()),
            ("amount", &super::money::format_money(request.amount)),
        ]))?;
        let stream = Self::stream(account)?;
        let runner = self.app().runner(&super::ACCOUNTS)?;
        let executor =
            CommandExecutor::new(&runner, &AccountProjection, self.app().command_policy());
        let step_context = CommandContext {
            commentary: Some(format!("transfer {} ({label})", transfer.id)),
            ..context.clone()
        };
        let outcome = executor
            .execute(
                &stream,
                CommandOptions::with_key(Some(Idempotency::new(key, &canonical))),
                |account_state: &Account, _version| {
                    if account_state.status == Status::NotOpened {
                        return Err(BankError::NotFound(account.clone()));
                    }
                    account_state.accept(&event)?;
                    Ok(vec![to_new_event(&event, &step_context)?])
                },
            )
            .await;
        match outcome {
            Ok(executed) => Ok(Moved::Done(
                executed
                    .events
                    .last()
                    .map_or(executed.outcome.version, |e| e.sequence),
            )),
            Err(error) => match refusal_slug(&error) {
                Some(slug) => Ok(Moved::Refused(slug, error.to_string())),
                None => Err(error),
            },
        }
    }
}

#[derive(Debug, Clone, Copy)]
enum Leg {
    Debit,
    Credit,
    Refund,
}

impl StepData {
    fn done(account_sequence: u64) -> Self {
        Self {
            account_sequence: Some(account_sequence),
            ..Self::default()
        }
    }

    fn refused(slug: &str, reason: String) -> Self {
        Self {
            reason: Some(reason),
            problem: Some(slug.to_owned()),
            ..Self::default()
        }
    }
}

fn step_metadata(context: &CommandContext, commentary: Option<String>) -> EventMetadata {
    EventMetadata {
        commentary,
        ..context.metadata(SOURCE)
    }
}
