//! The operator CLI (binary `streamfold`, `src/bin/streamfold.rs`): the commands an operator
//! runs against the app's storage with the handler's own settings and composition
//! ([`settings`]): `list`, `dump`, `verify`, `rebuild`, `notifications list|redrive|purge`,
//! `replay` and `delete`. Each command is a module here over the library's own operations
//! (the stores' `verify`, the read-model rebuild, the dispatchers, the publisher, erasure):
//! nothing here writes storage in a way the app does not.
//!
//! What a caller can rely on: names are checked before anything is read ([`names`]); stdout
//! carries only the command's output (problems, NDJSON), stderr the progress and summaries;
//! the exit code says how it went ([`EXIT_OK`], [`EXIT_PROBLEMS`], [`EXIT_USAGE`],
//! [`EXIT_FAILURE`], [`EXIT_INTERRUPTED`]); runs over a category can be stopped with Ctrl-C and
//! resumed ([`checkpoint`]).

pub mod category;
pub mod checkpoint;
pub mod names;
pub mod notifications;
pub mod progress;
pub mod read;
pub mod rebuild;
pub mod replay;
pub mod settings;
pub mod verify;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};
use reqwest::Url;
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;
use uuid::Uuid;

use crate::app::App;
use crate::erasure::{erase_stream, ErasureError};
use crate::notify::dispatch::DispatchError;
use crate::notify::PublishError;
use crate::readmodel::ReadModelError;
use crate::stream::{StoreError, StreamId};
use category::RunOptions;
use checkpoint::Stop;
use names::{parse_category, parse_stream, parse_target, NameError, Target};

/// Done, nothing wrong.
pub const EXIT_OK: u8 = 0;
/// Done, and problems were found (verify), or some items failed (redrive, rebuild).
pub const EXIT_PROBLEMS: u8 = 1;
/// Bad arguments or names; nothing was read or written.
pub const EXIT_USAGE: u8 = 2;
/// Settings, storage or the topic failed: the run stopped (a category run keeps its
/// checkpoint).
pub const EXIT_FAILURE: u8 = 3;
/// Stopped by Ctrl-C or SIGTERM; resume with `--resume`.
pub const EXIT_INTERRUPTED: u8 = 130;

/// Why a command could not run to its end.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum OpsError {
    #[error("{0}")]
    Usage(String),
    #[error(transparent)]
    Name(#[from] NameError),
    #[error("settings: {0}")]
    Settings(String),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    ReadModel(#[from] ReadModelError),
    #[error(transparent)]
    Dispatch(#[from] DispatchError),
    #[error(transparent)]
    Erasure(#[from] ErasureError),
    #[error("publishing: {0}")]
    Publish(#[source] PublishError),
    #[error("replaying {stream}: {source}")]
    Replay {
        stream: String,
        #[source]
        source: PublishError,
    },
    #[error("checkpoint {path}: {reason}")]
    Checkpoint { path: String, reason: String },
    #[error("writing the output: {0}")]
    Output(String),
}

impl OpsError {
    /// The exit code of a run that ended with this error.
    pub fn exit_code(&self) -> u8 {
        match self {
            Self::Usage(_) | Self::Name(_) => EXIT_USAGE,
            _ => EXIT_FAILURE,
        }
    }
}

/// The command line.
#[derive(Debug, Parser)]
#[command(
    name = "streamfold",
    version,
    about = "Operate streamfold's storage: list, dump and verify streams, rebuild read models, \
             handle notifications, replay history.",
    after_help = "Settings come from the environment, or from the Values of a local.settings.json \
                  (--settings, else the current directory's); the environment wins. Streams are \
                  <domain>/<entity>/<instance>, categories <domain>/<entity>. Exit codes: 0 ok, \
                  1 problems found, 2 bad arguments, 3 failure, 130 interrupted (resume with --resume)."
)]
pub struct Cli {
    /// A local.settings.json whose Values are the app settings.
    #[arg(long, global = true, value_name = "FILE")]
    pub settings: Option<PathBuf>,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// The streams of a category, one name per line.
    List {
        /// <domain>/<entity>
        category: String,
    },
    /// The events of a stream as NDJSON (sequence, eventId, eventType, time, metadata, payload).
    Dump {
        /// <domain>/<entity>/<instance>
        stream: String,
        #[arg(long, value_name = "N")]
        from_sequence: Option<u64>,
        #[arg(long, value_name = "N")]
        to_sequence: Option<u64>,
    },
    /// Checks a stream or every stream of a category; prints each problem, exit 1 when any.
    Verify {
        /// <domain>/<entity>/<instance> or <domain>/<entity>
        target: String,
        #[command(flatten)]
        run: RunArgs,
    },
    /// Recomputes a read model's rows from the streams.
    Rebuild {
        /// The read model's name (e.g. account).
        model: String,
        /// Only this category (<domain>/<entity>), when the model is registered for several.
        #[arg(long)]
        category: Option<String>,
        #[command(flatten)]
        run: RunArgs,
    },
    /// Publishes the notifications of history again, to a topic or a webhook.
    Replay {
        /// <domain>/<entity> (or one stream)
        target: String,
        /// From this sequence of each stream (default 1).
        #[arg(long, value_name = "N", conflicts_with = "from_time")]
        from_sequence: Option<u64>,
        /// The events recorded at or after this time (RFC 3339).
        #[arg(long, value_name = "TIME")]
        from_time: Option<String>,
        /// An Event Grid topic endpoint (https://<topic>.<region>-1.eventgrid.azure.net/api/events).
        #[arg(
            long,
            value_name = "ENDPOINT",
            required_unless_present = "to_webhook",
            conflicts_with = "to_webhook"
        )]
        to_topic: Option<String>,
        /// A webhook that takes Event Grid deliveries.
        #[arg(long, value_name = "URL")]
        to_webhook: Option<String>,
        /// The setting holding the topic's key (default: EventGridKeyValue; none: the managed identity).
        #[arg(long, value_name = "NAME", requires = "to_topic")]
        topic_key_setting: Option<String>,
        #[command(flatten)]
        run: RunArgs,
    },
    /// Pending and dead-lettered notifications.
    #[command(subcommand)]
    Notifications(NotificationsCommand),
    /// Erases a stream and what is derived from it (as DELETE /api/streams/...).
    Delete {
        /// <domain>/<entity>/<instance>
        stream: String,
        /// Yes, erase it.
        #[arg(long)]
        yes: bool,
    },
}

/// Options of a run over a category.
#[derive(Debug, Args)]
pub struct RunArgs {
    /// Carry on from the checkpoint of an interrupted run of the same command.
    #[arg(long)]
    pub resume: bool,
    /// Where the checkpoint is kept (default: streamfold-<command>-<domain>-<entity>.checkpoint.json).
    #[arg(long, value_name = "FILE")]
    pub checkpoint: Option<PathBuf>,
    /// Stop as Ctrl-C does after this many streams (for tests of resuming).
    #[arg(long, hide = true, value_name = "N")]
    pub stop_after: Option<u64>,
}

#[derive(Debug, Subcommand)]
pub enum NotificationsCommand {
    /// Pending streams and dead letters, as NDJSON.
    List {
        #[arg(long, conflicts_with = "dead")]
        pending: bool,
        #[arg(long)]
        dead: bool,
        /// Most pending streams listed per backend.
        #[arg(long, default_value_t = 10_000)]
        limit: usize,
    },
    /// Publishes dead letters again (all, or --id), or with --pending the outboxes' pending ones.
    Redrive {
        #[arg(long = "id", value_name = "ID", conflicts_with = "pending")]
        ids: Vec<Uuid>,
        #[arg(long)]
        pending: bool,
        #[arg(long, default_value_t = 10_000)]
        limit: usize,
    },
    /// Forgets dead letters (--dead), or marks pending notifications notified (--pending).
    Purge {
        #[arg(long, required_unless_present = "pending", conflicts_with = "pending")]
        dead: bool,
        #[arg(long)]
        pending: bool,
        /// Dead letters to purge.
        #[arg(long = "id", value_name = "ID", requires = "dead")]
        ids: Vec<Uuid>,
        /// Streams whose pending notifications to purge.
        #[arg(long = "stream", value_name = "STREAM", requires = "pending")]
        streams: Vec<String>,
        /// Every one.
        #[arg(long)]
        all: bool,
        #[arg(long, default_value_t = 10_000)]
        limit: usize,
    },
}

/// The binary's whole `main`: parses the arguments, reads the settings, composes the app as
/// the handler does (`register` adds the domain's projections and read models), runs the
/// command and says how it went.
pub fn main(register: impl FnOnce(&mut App) -> anyhow::Result<()>) -> ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("streamfold: {error}");
            return ExitCode::from(EXIT_FAILURE);
        }
    };
    let code = runtime.block_on(async {
        match run(cli, register).await {
            Ok(code) => code,
            Err(error) => {
                eprintln!("streamfold: {error}");
                error.exit_code()
            }
        }
    });
    ExitCode::from(code)
}

/// Runs `cli` (see [`main`]); the exit code.
pub async fn run(
    cli: Cli,
    register: impl FnOnce(&mut App) -> anyhow::Result<()>,
) -> Result<u8, OpsError> {
    // Names first: a bad one is refused before any setting is read.
    let target = match &cli.command {
        Command::List { category } => Some(Target::Category(parse_category(category)?)),
        Command::Dump { stream, .. } | Command::Delete { stream, .. } => {
            Some(Target::Stream(parse_stream(stream)?))
        }
        Command::Verify { target, .. } | Command::Replay { target, .. } => {
            Some(parse_target(target)?)
        }
        Command::Rebuild { category, .. } => category
            .as_deref()
            .map(parse_category)
            .transpose()?
            .map(Target::Category),
        Command::Notifications(_) => None,
    };
    let pairs = settings::load(cli.settings.as_deref(), std::env::vars())?;
    let mut app = settings::app(&pairs)?;
    register(&mut app).map_err(|e| OpsError::Settings(e.to_string()))?;
    let stop = Stop::on_signals();
    let run_options = |command: &str, run: &RunArgs, target: Option<&Target>, args: String| {
        let category = target.map(Target::category);
        RunOptions {
            run: format!("{command} {args}"),
            checkpoint: run.checkpoint.clone().unwrap_or_else(|| match category {
                Some(category) => checkpoint::default_path(command, category),
                None => PathBuf::from(format!("streamfold-{command}.checkpoint.json")),
            }),
            resume: run.resume,
            stop: stop.clone(),
            stop_after: run.stop_after,
        }
    };
    match (cli.command, target) {
        (Command::List { .. }, Some(Target::Category(category))) => {
            read::list(&app, &category).await
        }
        (
            Command::Dump {
                from_sequence,
                to_sequence,
                ..
            },
            Some(Target::Stream(stream)),
        ) => read::dump(&app, &stream, from_sequence, to_sequence).await,
        (Command::Verify { target: name, run }, Some(target)) => {
            let options = run_options("verify", &run, Some(&target), name);
            verify::verify(&app, &target, &options).await
        }
        (Command::Rebuild { model, run, .. }, category) => {
            let category = category.map(|t| t.category().clone());
            let mut code = EXIT_OK;
            for category in rebuild::categories_of(&app, &model, category.as_ref())? {
                let target = Target::Category(category.clone());
                let options = run_options(
                    "rebuild",
                    &run,
                    Some(&target),
                    format!("{model} {category}"),
                );
                code = code.max(rebuild::rebuild(&app, &model, &category, &options).await?);
            }
            Ok(code)
        }
        (
            Command::Replay {
                target: name,
                from_sequence,
                from_time,
                to_topic,
                to_webhook,
                topic_key_setting,
                run,
            },
            Some(target),
        ) => {
            let from = match (from_sequence, from_time) {
                (_, Some(time)) => {
                    replay::From::Time(OffsetDateTime::parse(&time, &Rfc3339).map_err(|e| {
                        OpsError::Usage(format!(
                            "--from-time {time:?} is not an RFC 3339 time: {e}"
                        ))
                    })?)
                }
                (sequence, None) => replay::From::Sequence(sequence.unwrap_or(1)),
            };
            let url = |text: &str, what: &str| {
                Url::parse(text).map_err(|e| OpsError::Usage(format!("{what} {text:?}: {e}")))
            };
            let destination = match (to_topic, to_webhook) {
                (Some(endpoint), _) => replay::Destination::Topic {
                    endpoint: url(&endpoint, "--to-topic")?,
                    key_setting: topic_key_setting,
                },
                (None, Some(webhook)) => {
                    replay::Destination::Webhook(url(&webhook, "--to-webhook")?)
                }
                (None, None) => {
                    return Err(OpsError::Usage("give --to-topic or --to-webhook".into()))
                }
            };
            let publisher = replay::publisher(&pairs, &destination)?;
            let args = format!("{name} {from:?} {destination:?}");
            let options = run_options("replay", &run, Some(&target), args);
            replay::replay(&app, &target, from, &publisher, &options).await
        }
        (Command::Notifications(command), _) => match command {
            NotificationsCommand::List {
                pending,
                dead,
                limit,
            } => {
                let which = match (pending, dead) {
                    (true, _) => notifications::Which::Pending,
                    (false, true) => notifications::Which::Dead,
                    (false, false) => notifications::Which::Both,
                };
                notifications::list(&app, which, limit).await
            }
            NotificationsCommand::Redrive {
                ids,
                pending,
                limit,
            } => notifications::redrive(&app, &ids, pending, limit).await,
            NotificationsCommand::Purge {
                dead,
                ids,
                streams,
                all,
                limit,
                ..
            } => {
                if dead {
                    notifications::purge_dead(&app, &ids, all).await
                } else {
                    let streams = streams.iter().map(|s| parse_stream(s)).collect::<Result<
                        Vec<StreamId>,
                        _,
                    >>(
                    )?;
                    notifications::purge_pending(&app, &streams, all, limit).await
                }
            }
        },
        (Command::Delete { yes, .. }, Some(Target::Stream(stream))) => {
            if !yes {
                return Err(OpsError::Usage(format!(
                    "erasing {stream} cannot be undone: add --yes"
                )));
            }
            match erase_stream(&app, &stream).await {
                Ok(report) => {
                    println!(
                        "{}",
                        serde_json::to_string(&report)
                            .map_err(|e| OpsError::Output(e.to_string()))?
                    );
                    Ok(EXIT_OK)
                }
                Err(ErasureError::NotFound(stream)) => {
                    eprintln!("{stream}: no such stream");
                    Ok(EXIT_PROBLEMS)
                }
                Err(error) => Err(error.into()),
            }
        }
        (_, _) => Err(OpsError::Usage("the command's name does not fit it".into())),
    }
}
