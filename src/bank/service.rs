//! The bank's commands, written against streamfold's public API only.
//!
//! Every command runs through the library's command executor
//! (`streamfold::projection::CommandExecutor`): its rule is checked against the account's
//! state rehydrated from the stream, and the resulting event is appended with that state's
//! exact version as the expectation; if another writer got in first, the append fails
//! atomically and the command is decided again from fresh state, after a jittered wait,
//! within the app's conflict budget (`App::command_policy`). Two withdrawals can therefore
//! never both pass the same check, and concurrent deposits all land.
//!
//! A command sent with an idempotency key lands once however often it is sent: its event's id
//! is derived from the account, the key and its position, and the event carries the key and
//! the hash of the command's canonical request (`CommandContext::canonical_request` of the
//! library: the command's name, its amount in the stored form, its commentary and who sent it;
//! not the correlation id, which a retry may change). A retry is answered from the stored event and the account as of it:
//! [`CommandAnswer`] is a function of those alone, so the retry gets the first answer to the
//! byte, and moves nothing. The same key with another request is refused
//! (`ExecuteError::IdempotencyKeyReused`). A refused command writes nothing, so its key stays
//! unused.

use std::sync::Arc;

use rust_decimal::Decimal;
use streamfold::app::App;
use streamfold::functions::CommandContext;
use streamfold::projection::{
    AsOf, CommandExecutor, CommandOptions, ExecuteError, Idempotency, Projected, ProjectionError,
};
use streamfold::stream::{NewEvent, ReadRequest, RecordedEvent, StoreError, StreamId, StreamPage};

use super::account::{Account, AccountProjection, Refusal, Status};
use super::events::{AccountEvent, AccountOpened};
use super::money::format_money;
use super::{ACCOUNTS, SOURCE};

/// Why a command failed.
#[derive(Debug, thiserror::Error)]
pub enum BankError {
    #[error(transparent)]
    Refused(#[from] Refusal),
    #[error("account {0} already exists")]
    AlreadyExists(String),
    #[error("account {0} does not exist")]
    NotFound(String),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Projection(#[from] ProjectionError),
    /// Contention past the budget, an idempotency key reused with another request, ...
    #[error(transparent)]
    Execute(ExecuteError),
    #[error("event data could not be serialized: {0}")]
    Serialize(#[from] serde_json::Error),
    #[error("transfer {0} does not exist")]
    TransferNotFound(String),
    #[error("transfer {0} exists with another request (from, to or amount)")]
    TransferExists(String),
    #[error(
        "transfer {id} is {state}: only a transfer whose debit has not started can be cancelled"
    )]
    TransferNotCancellable { id: String, state: &'static str },
    #[error("transfer {id} cannot be refunded: {reason}")]
    TransferStuck { id: String, reason: String },
}

impl From<ExecuteError> for BankError {
    fn from(error: ExecuteError) -> Self {
        match error {
            ExecuteError::Store(e) => Self::Store(e),
            ExecuteError::Projection(e) => Self::Projection(e),
            other => Self::Execute(other),
        }
    }
}

/// The account after a command, and the sequence number it is as of.
#[derive(Debug, Clone)]
pub struct AccountView {
    pub account: Account,
    pub sequence: u64,
}

/// What a command answers: the account right after its event and the correlation id stored
/// with it; for a replay (the same idempotency key and request again), those of the first
/// attempt.
#[derive(Debug, Clone)]
pub struct CommandAnswer {
    pub view: AccountView,
    /// The correlation id stored with the command's event.
    pub correlation_id: Option<String>,
    /// Whether this repeats an earlier attempt's answer (nothing was written now).
    pub replayed: bool,
}

/// One page of an account's history.
#[derive(Debug, Clone)]
pub struct HistoryPage {
    pub version: u64,
    pub events: Vec<RecordedEvent>,
    /// Sequence number to ask for next, when there is more.
    pub next: Option<u64>,
}

/// The bank's command and query side.
#[derive(Clone)]
pub struct Bank {
    app: Arc<App>,
}

impl Bank {
    pub fn new(app: Arc<App>) -> Self {
        Self { app }
    }

    /// The app the bank runs in (for the bank's other modules).
    pub(super) fn app(&self) -> &Arc<App> {
        &self.app
    }

    pub fn stream(account_number: &str) -> Result<StreamId, StoreError> {
        Ok(ACCOUNTS.stream(account_number)?)
    }

    /// Opens an account: when the stream is new, one append expecting no stream (no read);
    /// when it exists, `AlreadyExists` (or, for a retry of the command that opened it, its
    /// first answer).
    pub async fn open(
        &self,
        account_number: &str,
        overdraft_limit: Decimal,
        context: &CommandContext,
    ) -> Result<CommandAnswer, BankError> {
        let command = Command {
            name: "OpenAccount",
            amount: Some(overdraft_limit),
            creates: true,
        };
        self.execute(account_number, context, command, |account| {
            if account.status != Status::NotOpened {
                return Err(BankError::AlreadyExists(account_number.to_owned()));
            }
            Ok(AccountEvent::Opened(AccountOpened { overdraft_limit }))
        })
        .await
    }

    pub async fn deposit(
        &self,
        account_number: &str,
        amount: Decimal,
        context: &CommandContext,
    ) -> Result<CommandAnswer, BankError> {
        let command = Command::on_account("Deposit", Some(amount));
        self.execute(account_number, context, command, |a| Ok(a.deposit(amount)?))
            .await
    }

    pub async fn withdraw(
        &self,
        account_number: &str,
        amount: Decimal,
        context: &CommandContext,
    ) -> Result<CommandAnswer, BankError> {
        let command = Command::on_account("Withdraw", Some(amount));
        self.execute(
            account_number,
            context,
            command,
            |a| Ok(a.withdraw(amount)?),
        )
        .await
    }

    pub async fn set_overdraft_limit(
        &self,
        account_number: &str,
        limit: Decimal,
        context: &CommandContext,
    ) -> Result<CommandAnswer, BankError> {
        let command = Command::on_account("SetOverdraftLimit", Some(limit));
        self.execute(account_number, context, command, |a| {
            Ok(a.set_overdraft_limit(limit)?)
        })
        .await
    }

    pub async fn close(
        &self,
        account_number: &str,
        context: &CommandContext,
    ) -> Result<CommandAnswer, BankError> {
        let command = Command::on_account("CloseAccount", None);
        self.execute(account_number, context, command, |a| Ok(a.close()?))
            .await
    }

    /// The account as of now, a sequence number or a time; `NotFound` when it was not open
    /// then.
    pub async fn balance(
        &self,
        account_number: &str,
        as_of: AsOf,
    ) -> Result<AccountView, BankError> {
        let stream = Self::stream(account_number)?;
        let Projected {
            state, sequence, ..
        } = self
            .app
            .runner(&ACCOUNTS)?
            .run(&stream, &AccountProjection, as_of)
            .await?;
        if state.status == Status::NotOpened {
            return Err(BankError::NotFound(account_number.to_owned()));
        }
        Ok(AccountView {
            account: state,
            sequence,
        })
    }

    /// A page of the account numbers that have a stream (`continuation` from the page before).
    pub async fn list_accounts(
        &self,
        continuation: Option<&str>,
        page_size: usize,
    ) -> Result<StreamPage, BankError> {
        let store = self.app.store(&ACCOUNTS)?;
        Ok(store
            .list_streams(&ACCOUNTS, continuation, page_size)
            .await?)
    }

    /// Events `from..` of the account, at most `page_size` of them.
    pub async fn history(
        &self,
        account_number: &str,
        from: u64,
        page_size: u64,
    ) -> Result<HistoryPage, BankError> {
        let stream = Self::stream(account_number)?;
        let store = self.app.store(&ACCOUNTS)?;
        let to = from.saturating_add(page_size.saturating_sub(1));
        let slice = store
            .read(&stream, ReadRequest::range(from, Some(to)))
            .await?;
        if slice.version == 0 {
            return Err(BankError::NotFound(account_number.to_owned()));
        }
        let next = (to < slice.version).then(|| to.saturating_add(1));
        Ok(HistoryPage {
            version: slice.version,
            events: slice.events,
            next,
        })
    }

    /// Runs `command` through the library's executor: `decide` sees the account's current
    /// state (an account that is not open is `NotFound`, unless the command creates it), its
    /// event is checked by the rules the fold applies, and appended with the state's exact
    /// version; a retry of a keyed command answers as the first attempt did.
    async fn execute(
        &self,
        account_number: &str,
        context: &CommandContext,
        command: Command,
        decide: impl Fn(&Account) -> Result<AccountEvent, BankError> + Send + Sync,
    ) -> Result<CommandAnswer, BankError> {
        let stream = Self::stream(account_number)?;
        let runner = self.app.runner(&ACCOUNTS)?;
        let executor = CommandExecutor::new(&runner, &AccountProjection, self.app.command_policy());
        let mut options = CommandOptions::with_key(command.idempotency(context)?);
        if command.creates {
            options = options.assuming_new_stream();
        }
        let executed = executor
            .execute(&stream, options, |account: &Account, _version| {
                if account.status == Status::NotOpened && !command.creates {
                    return Err(BankError::NotFound(account_number.to_owned()));
                }
                let event = decide(account)?;
                // Checked as the fold will check it: a command never writes what a later fold
                // would refuse (an amount out of range, a balance that would overflow).
                account.accept(&event)?;
                Ok(vec![to_new_event(&event, context)?])
            })
            .await?;
        Ok(CommandAnswer {
            correlation_id: executed
                .events
                .first()
                .and_then(|event| event.metadata.correlation_id.clone()),
            replayed: executed.replayed(),
            view: AccountView {
                account: executed.state,
                sequence: executed.outcome.version,
            },
        })
    }
}

/// A command's name and amount (for its canonical request), and whether it creates the
/// account.
#[derive(Debug, Clone, Copy)]
struct Command {
    name: &'static str,
    amount: Option<Decimal>,
    creates: bool,
}

impl Command {
    fn on_account(name: &'static str, amount: Option<Decimal>) -> Self {
        Self {
            name,
            amount,
            creates: false,
        }
    }

    /// The command's idempotency when `context` has a key: its canonical request
    /// ([`CommandContext::canonical_request`]) with the amount spelt as stored (`12.5`,
    /// `"12.50"` and `12.50` are one amount).
    pub(super) fn idempotency(
        &self,
        context: &CommandContext,
    ) -> Result<Option<Idempotency>, serde_json::Error> {
        context.idempotency(self.name, self.amount.map(format_money).as_deref())
    }
}

pub(super) fn to_new_event(
    event: &AccountEvent,
    context: &CommandContext,
) -> Result<NewEvent, BankError> {
    Ok(NewEvent::from_raw(event.event_type(), event.to_raw()?)
        .with_metadata(context.metadata(SOURCE)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use streamfold::projection::IdempotencyKey;

    /// The bank's Deposit spells its amount as stored before it is hashed, so `12.5` is the
    /// request the library pins (`functions::command`): the hash every keyed deposit has
    /// stored so far.
    #[test]
    fn a_deposit_hashes_as_stored_keyed_deposits_did() {
        let context = CommandContext {
            correlation_id: "left-out".to_owned(),
            commentary: Some("rent".to_owned()),
            who: None,
            idempotency_key: Some(IdempotencyKey::new("k-1").unwrap()),
        };
        let deposit = Command::on_account("Deposit", Some("12.5".parse().unwrap()));
        let idempotency = deposit.idempotency(&context).unwrap().unwrap();
        assert_eq!(
            idempotency.request_hash(),
            "baf9863609f001eb7c8455b9e4a85157e061acda362b8f6e04f193eb4c2c58e9"
        );
    }
}
