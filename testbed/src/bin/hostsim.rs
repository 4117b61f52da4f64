//! `hostsim`: runs a custom handler function app locally, in place of `func host start`
//! (Azure Functions Core Tools can't be installed on these machines).
//!
//! Usage: `hostsim [--port 7071] [--setting KEY=VALUE ...] [--log-prefix TEXT] [--no-timers] APP_DIR`
//!
//! `APP_DIR/local.settings.json` `Values` become app settings (`--setting` wins); the port
//! defaults to its `Host.LocalHttpPort`, else 7071. Ctrl-C or SIGTERM stops the handler
//! gracefully (SIGTERM, then SIGKILL after 10 s). Exits non-zero when the handler can't start
//! or fails three times, as the host shuts down.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{bail, Context};
use streamfold_testbed::hostsim::{app, HandlerState, HostConfig, HostSim, DEFAULT_PORT};
use tokio::signal::unix::{signal, SignalKind};

const USAGE: &str = "usage: hostsim [--port PORT] [--setting KEY=VALUE ...] [--log-prefix TEXT] [--no-timers] APP_DIR";

struct Args {
    app_dir: PathBuf,
    port: Option<u16>,
    settings: Vec<(String, String)>,
    log_prefix: Option<String>,
    run_timers: bool,
}

fn parse_args() -> anyhow::Result<Args> {
    let mut args = std::env::args().skip(1);
    let mut app_dir = None;
    let mut port = None;
    let mut settings = Vec::new();
    let mut log_prefix = None;
    let mut run_timers = true;
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--port" | "-p" => {
                let value = args.next().context("--port needs a value")?;
                port = Some(
                    value
                        .parse()
                        .with_context(|| format!("bad port {value:?}"))?,
                );
            }
            "--setting" | "-s" => {
                let value = args.next().context("--setting needs KEY=VALUE")?;
                let (key, value) = value
                    .split_once('=')
                    .with_context(|| format!("--setting {value:?} is not KEY=VALUE"))?;
                settings.push((key.to_string(), value.to_string()));
            }
            "--log-prefix" => log_prefix = Some(args.next().context("--log-prefix needs a value")?),
            "--no-timers" => run_timers = false,
            "--help" | "-h" => {
                println!("{USAGE}");
                std::process::exit(0);
            }
            other if other.starts_with('-') => bail!("unknown option {other:?}\n{USAGE}"),
            other => {
                if app_dir.is_some() {
                    bail!("more than one APP_DIR\n{USAGE}");
                }
                app_dir = Some(PathBuf::from(other));
            }
        }
    }
    let app_dir = app_dir.with_context(|| format!("APP_DIR is missing\n{USAGE}"))?;
    Ok(Args {
        app_dir,
        port,
        settings,
        log_prefix,
        run_timers,
    })
}

async fn run() -> anyhow::Result<()> {
    let args = parse_args()?;
    // Registered before anything starts, so an early signal still stops the handler cleanly.
    let mut terminate = signal(SignalKind::terminate())?;
    let mut interrupt = signal(SignalKind::interrupt())?;
    let port = args
        .port
        .or_else(|| app::local_http_port(&args.app_dir))
        .unwrap_or(DEFAULT_PORT);
    let mut config = HostConfig::new(&args.app_dir);
    config.port = port;
    config.settings = args.settings;
    config.log_prefix = args.log_prefix;
    config.run_timers = args.run_timers;
    let host = HostSim::start(config).await?;
    println!("[hostsim] Host started; press Ctrl-C to stop");

    let mut states = host.handler_state_changes();
    let gave_up = async {
        match states
            .wait_for(|s| matches!(s, HandlerState::Failed(_)))
            .await
        {
            Ok(state) => match &*state {
                HandlerState::Failed(reason) => reason.clone(),
                _ => String::new(),
            },
            Err(_) => "the handler supervisor ended".to_string(),
        }
    };
    tokio::select! {
        _ = interrupt.recv() => println!("[hostsim] Ctrl-C: shutting down"),
        _ = terminate.recv() => println!("[hostsim] SIGTERM: shutting down"),
        reason = gave_up => {
            drop(host);
            bail!("shutting down: {reason}");
        }
    }
    let status = host.shutdown().await?;
    if let Some(status) = status {
        println!("[hostsim] handler exited ({status})");
    }
    Ok(())
}

#[tokio::main]
async fn main() -> ExitCode {
    match run().await {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("hostsim: {error:#}");
            ExitCode::FAILURE
        }
    }
}
