//! The bank's commands, written against streamfold's public API only.
//!
//! Every rule is checked against state rehydrated from the stream, and the resulting event is
//! appended with that state's exact version as the expectation: if another writer got in
//! first, the append fails atomically and the command is decided again from fresh state, a
//! bounded number of times. Two withdrawals can therefore never both pass the same check.

use std::sync::Arc;

use rust_decimal::Decimal;
use streamfold::app::App;
use streamfold::projection::{AsOf, Projected, ProjectionError};
use streamfold::stream::{
    EventMetadata, ExpectedVersion, NewEvent, ReadRequest, RecordedEvent, StoreError, StreamId,
};

use super::account::{Account, AccountProjection, Refusal, Status};
use super::events::{AccountEvent, AccountOpened};
use super::{DOMAIN, ENTITY, SOURCE};

/// Why a command failed.
#[derive(Debug, thiserror::Error)]
pub enum BankError {
    #[error(transparent)]
    Refused(#[from] Refusal),
    #[error("account {0} already exists")]
    AlreadyExists(String),
    #[error("account {0} does not exist")]
    NotFound(String),
    #[error("gave up after {attempts} attempts: other writers kept changing the account")]
    TooMuchContention { attempts: u32 },
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Projection(#[from] ProjectionError),
    #[error("event data could not be serialized: {0}")]
    Serialize(#[from] serde_json::Error),
}

/// Who asks, for the event metadata.
#[derive(Debug, Clone, Default)]
pub struct CommandContext {
    pub correlation_id: String,
    pub commentary: Option<String>,
    pub who: Option<String>,
}

impl CommandContext {
    fn metadata(&self) -> EventMetadata {
        EventMetadata {
            correlation_id: Some(self.correlation_id.clone()),
            commentary: self.commentary.clone(),
            who: self.who.clone(),
            source: Some(SOURCE.to_owned()),
            ..EventMetadata::default()
        }
    }
}

/// The account after a command, and the sequence number it is as of.
#[derive(Debug, Clone)]
pub struct AccountView {
    pub account: Account,
    pub sequence: u64,
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

    pub fn stream(account_number: &str) -> Result<StreamId, StoreError> {
        Ok(StreamId::new(DOMAIN, ENTITY, account_number)?)
    }

    /// Opens an account: atomically refused when the stream exists (no separate read).
    pub async fn open(
        &self,
        account_number: &str,
        overdraft_limit: Decimal,
        context: &CommandContext,
    ) -> Result<AccountView, BankError> {
        let stream = Self::stream(account_number)?;
        let event = AccountEvent::Opened(AccountOpened { overdraft_limit });
        // Checked as the fold will check it (the stream is new, so the state is the initial one).
        let account = Account::default().accept(&event)?;
        let store = self.app.store(DOMAIN, ENTITY)?;
        match store
            .append(
                &stream,
                ExpectedVersion::NoStream,
                vec![to_new_event(&event, context)?],
            )
            .await
        {
            Ok(outcome) => Ok(AccountView {
                account,
                sequence: outcome.version,
            }),
            Err(StoreError::WrongExpectedVersion { .. }) => {
                Err(BankError::AlreadyExists(account_number.to_owned()))
            }
            Err(e) => Err(e.into()),
        }
    }

    pub async fn deposit(
        &self,
        account_number: &str,
        amount: Decimal,
        context: &CommandContext,
    ) -> Result<AccountView, BankError> {
        self.execute(account_number, context, |a| a.deposit(amount))
            .await
    }

    pub async fn withdraw(
        &self,
        account_number: &str,
        amount: Decimal,
        context: &CommandContext,
    ) -> Result<AccountView, BankError> {
        self.execute(account_number, context, |a| a.withdraw(amount))
            .await
    }

    pub async fn set_overdraft_limit(
        &self,
        account_number: &str,
        limit: Decimal,
        context: &CommandContext,
    ) -> Result<AccountView, BankError> {
        self.execute(account_number, context, |a| a.set_overdraft_limit(limit))
            .await
    }

    pub async fn close(
        &self,
        account_number: &str,
        context: &CommandContext,
    ) -> Result<AccountView, BankError> {
        self.execute(account_number, context, Account::close).await
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
            .runner(DOMAIN, ENTITY)?
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

    /// Events `from..` of the account, at most `page_size` of them.
    pub async fn history(
        &self,
        account_number: &str,
        from: u64,
        page_size: u64,
    ) -> Result<HistoryPage, BankError> {
        let stream = Self::stream(account_number)?;
        let store = self.app.store(DOMAIN, ENTITY)?;
        let to = from.saturating_add(page_size.saturating_sub(1));
        let slice = store
            .read(&stream, ReadRequest::range(from, Some(to)))
            .await?;
        if slice.version == 0 {
            return Err(BankError::NotFound(account_number.to_owned()));
        }
        let next = (to < slice.version).then_some(to + 1);
        Ok(HistoryPage {
            version: slice.version,
            events: slice.events,
            next,
        })
    }

    /// Decides a command on fresh state and appends its event with that state's exact
    /// version; on a lost race, decides again (bounded).
    async fn execute(
        &self,
        account_number: &str,
        context: &CommandContext,
        decide: impl Fn(&Account) -> Result<AccountEvent, Refusal>,
    ) -> Result<AccountView, BankError> {
        let stream = Self::stream(account_number)?;
        let store = self.app.store(DOMAIN, ENTITY)?;
        let runner = self.app.runner(DOMAIN, ENTITY)?;
        let attempts = self.app.settings().conflict_retries + 1;
        for _ in 0..attempts {
            let current = runner
                .run(&stream, &AccountProjection, AsOf::Latest)
                .await?;
            if current.state.status == Status::NotOpened {
                return Err(BankError::NotFound(account_number.to_owned()));
            }
            let event = decide(&current.state)?;
            // The state the event leads to, by the same rules the fold applies: a command
            // never writes what a later fold would refuse.
            let account = current.state.accept(&event)?;
            let expected = ExpectedVersion::Exact(current.sequence);
            let new_events = vec![to_new_event(&event, context)?];
            match store.append(&stream, expected, new_events.clone()).await {
                Ok(outcome) => {
                    // The next command or query of this instance starts from here.
                    runner.remember_append(&stream, &AccountProjection, &new_events, &outcome);
                    return Ok(AccountView {
                        account,
                        sequence: outcome.version,
                    });
                }
                Err(StoreError::WrongExpectedVersion { .. }) => continue,
                Err(e) => return Err(e.into()),
            }
        }
        Err(BankError::TooMuchContention { attempts })
    }
}

fn to_new_event(event: &AccountEvent, context: &CommandContext) -> Result<NewEvent, BankError> {
    Ok(NewEvent::from_raw(event.event_type(), event.to_raw()?).with_metadata(context.metadata()))
}
