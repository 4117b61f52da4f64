//! A stand-in for the Azure Functions host (`func host start`) running a custom handler app,
//! faithful to the parts of the host a custom handler can observe
//! (/work/shared/reference/functions-custom-handler.md, and the host's
//! `src/WebJobs.Script/Workers/Http/` code). Azure Functions Core Tools can't be installed on
//! these machines, so tests and the README's local run use this instead.
//!
//! What it guarantees (each module says how, and where it deliberately differs):
//! - [`app`]: host.json and the function.json files one level below the app root;
//!   local.settings.json `Values` as app settings (explicit settings win);
//! - [`worker`]: the handler started with the host's environment variables, polled until it
//!   answers, restarted when it dies (3 failures and it gives up), stopped with SIGTERM;
//! - [`server`] and [`route`]: the host's endpoints and HTTP routing (`/{routePrefix}/{route}`;
//!   a wrong method is a 404, as in the host);
//! - [`invoke`]: proxying (`enableProxyingHttpRequest`), forwarding
//!   (`enableForwardingHttpRequest`) and the JSON invocation payload, byte-for-byte as the host
//!   builds them where a handler can tell (docs/host-modes.md);
//! - [`eventgrid`]: the Event Grid webhook with its handshakes, one invocation per event;
//! - [`timer`] and [`ncrontab`]: timer triggers on their schedules, plus the admin endpoint
//!   `POST /admin/functions/{name}` to run any non-HTTP function at once;
//! - [`stage`]: a test's copy of an app template with the handler binary made executable.
//!
//! It is not a security boundary: keys (`?code=`, `x-functions-key`) are not checked, as
//! locally in the real host. Output bindings other than `http` are not executed; their values
//! are kept in [`InvocationRecord::outputs`] for tests to inspect.

pub mod app;
pub mod eventgrid;
pub mod invoke;
pub mod ncrontab;
pub mod route;
pub mod server;
pub mod stage;
pub mod timer;
pub mod worker;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::ExitStatus;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use serde_json::Value;
use tokio::sync::{oneshot, watch};
use tokio::task::JoinHandle;

pub use app::{AppDefinition, FunctionDef, Trigger};
pub use invoke::{InvocationRecord, HOST_VERSION};
pub use stage::stage_app;
pub use worker::HandlerState;

/// The port `func host start` uses by default.
pub const DEFAULT_PORT: u16 = 7071;
/// The host's start-up timeout for a handler.
pub const DEFAULT_STARTUP_TIMEOUT: Duration = Duration::from_secs(30);
/// How long [`HostSim::shutdown`] waits after SIGTERM before SIGKILL.
pub const DEFAULT_SHUTDOWN_GRACE: Duration = Duration::from_secs(10);

/// How trigger values (Event Grid events, admin inputs to Event Grid functions) are put in
/// `Data`. The reference says a handler must accept both an object and a string holding JSON.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum TriggerValueEncoding {
    /// The event as a JSON object.
    #[default]
    Object,
    /// The event's JSON text in a JSON string.
    JsonString,
    /// The event's JSON text JSON-encoded once more, in a JSON string (what the host's
    /// `JsonConvert.SerializeObject(string)` produces for string-typed trigger values).
    DoubleEncodedString,
}

impl TriggerValueEncoding {
    /// Encodes a trigger value.
    pub fn encode(self, value: Value) -> Value {
        match self {
            Self::Object => value,
            Self::JsonString => Value::String(value.to_string()),
            Self::DoubleEncodedString => {
                Value::String(Value::String(value.to_string()).to_string())
            }
        }
    }
}

/// How to run the simulator.
#[derive(Debug, Clone)]
pub struct HostConfig {
    /// The script root: host.json and the function folders.
    pub app_dir: PathBuf,
    /// App settings (environment variables of the handler); they override
    /// local.settings.json `Values`.
    pub settings: Vec<(String, String)>,
    /// The simulator's port on 127.0.0.1; 0 picks a free one.
    pub port: u16,
    /// Prefix for the handler's output lines copied to the simulator's stdout/stderr.
    pub log_prefix: Option<String>,
    /// How long a handler may take to answer its first request.
    pub startup_timeout: Duration,
    /// How long [`HostSim::shutdown`] waits after SIGTERM.
    pub shutdown_grace: Duration,
    /// Run timer triggers on their schedules (the admin endpoint works either way).
    pub run_timers: bool,
    /// How Event Grid events are put in `Data`.
    pub trigger_value_encoding: TriggerValueEncoding,
}

impl HostConfig {
    /// Defaults: a free port, no settings, 30 s start-up timeout, timers on.
    pub fn new(app_dir: impl Into<PathBuf>) -> Self {
        Self {
            app_dir: app_dir.into(),
            settings: Vec::new(),
            port: 0,
            log_prefix: None,
            startup_timeout: DEFAULT_STARTUP_TIMEOUT,
            shutdown_grace: DEFAULT_SHUTDOWN_GRACE,
            run_timers: true,
            trigger_value_encoding: TriggerValueEncoding::Object,
        }
    }

    /// Adds an app setting.
    pub fn setting(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.settings.push((key.into(), value.into()));
        self
    }
}

/// What the front door, the timers and the webhook share.
pub struct SimState {
    pub app: AppDefinition,
    pub invoker: invoke::Invoker,
    pub encoding: TriggerValueEncoding,
    pub state: watch::Receiver<HandlerState>,
}

/// A running simulator: the host's HTTP endpoints, the handler process, the timers.
/// Dropping it kills the handler (SIGKILL) and stops serving.
pub struct HostSim {
    sim: Arc<SimState>,
    supervisor: worker::Supervisor,
    port: u16,
    handler_port: u16,
    server_stop: Option<oneshot::Sender<()>>,
    server: Option<JoinHandle<()>>,
    timers: Vec<JoinHandle<()>>,
}

impl HostSim {
    /// Loads the app, starts the handler, waits until it answers, then serves.
    pub async fn start(config: HostConfig) -> anyhow::Result<Self> {
        let mut settings: BTreeMap<String, String> = app::read_local_settings(&config.app_dir)?
            .into_iter()
            .collect();
        settings.extend(config.settings.iter().cloned());
        let app = AppDefinition::load(&config.app_dir, &settings)?;
        for (name, reason) in &app.errors {
            println!("[hostsim] function {name} is in error and will not run: {reason}");
        }
        let handler_port = crate::free_port()?;
        let mut spec =
            worker::WorkerSpec::new(&app.host.handler, &app.root, &settings, handler_port)?;
        spec.startup_timeout = config.startup_timeout;
        spec.shutdown_grace = config.shutdown_grace;
        spec.log_prefix = config.log_prefix.clone();
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", config.port))
            .await
            .with_context(|| format!("binding 127.0.0.1:{}", config.port))?;
        let port = listener.local_addr()?.port();

        let supervisor = worker::Supervisor::start(spec);
        // Every failure may take the full start-up timeout, and the host tries 3 times.
        let patience =
            config.startup_timeout * (worker::MAX_FAILURES as u32) + Duration::from_secs(5);
        supervisor.wait_ready(patience).await?;

        let invoker = invoke::Invoker::new(
            handler_port,
            supervisor.state(),
            config.startup_timeout * (worker::MAX_FAILURES as u32),
            app.host.function_timeout,
            Arc::new(invoke::Records::new()),
        )?;
        let sim = Arc::new(SimState {
            app,
            invoker,
            encoding: config.trigger_value_encoding,
            state: supervisor.state(),
        });
        let (server_stop, stopped) = oneshot::channel::<()>();
        let server = tokio::spawn(server::serve(listener, sim.clone(), async move {
            let _ = stopped.await;
        }));
        let timers = if config.run_timers {
            timer::spawn_schedulers(&sim)
        } else {
            Vec::new()
        };
        let host = Self {
            sim,
            supervisor,
            port,
            handler_port,
            server_stop: Some(server_stop),
            server: Some(server),
            timers,
        };
        host.print_functions();
        Ok(host)
    }

    fn print_functions(&self) {
        println!("[hostsim] listening on {}", self.base_url());
        println!("[hostsim] Functions:");
        for function in &self.sim.app.functions {
            let disabled = if function.disabled { " (disabled)" } else { "" };
            match &function.trigger {
                Trigger::Http(_) => println!(
                    "[hostsim]   {}: {}{disabled}",
                    function.name,
                    function
                        .describe()
                        .replace("] /", &format!("] {}/", self.base_url()))
                ),
                _ => println!(
                    "[hostsim]   {}: {}{disabled}",
                    function.name,
                    function.describe()
                ),
            }
        }
    }

    /// `http://127.0.0.1:{port}`.
    pub fn base_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// The simulator's port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The port the handler was told to listen on (`FUNCTIONS_CUSTOMHANDLER_PORT`).
    pub fn handler_port(&self) -> u16 {
        self.handler_port
    }

    /// The loaded app (functions, host settings, functions in error).
    pub fn app(&self) -> &AppDefinition {
        &self.sim.app
    }

    /// The handler's pid, when a process runs.
    pub fn handler_pid(&self) -> Option<u32> {
        self.supervisor.pid()
    }

    /// The handler's current state.
    pub fn handler_state(&self) -> HandlerState {
        self.supervisor.state().borrow().clone()
    }

    /// A receiver of handler state changes (to notice the simulator giving up, say).
    pub fn handler_state_changes(&self) -> watch::Receiver<HandlerState> {
        self.supervisor.state()
    }

    /// How many handler processes were started (1 + restarts).
    pub fn handler_starts(&self) -> u32 {
        self.supervisor.starts()
    }

    /// SIGKILLs the handler (a crash) and returns once the simulator has noticed; it then
    /// restarts it. Returns the killed pid.
    pub async fn kill_handler(&self) -> anyhow::Result<u32> {
        self.supervisor.kill().await
    }

    /// Waits until the handler answers (after a restart, say); returns its pid.
    pub async fn wait_until_ready(&self, timeout: Duration) -> anyhow::Result<u32> {
        self.supervisor.wait_ready(timeout).await
    }

    /// The handler's output lines so far (stdout and stderr), for assertions.
    pub fn handler_output(&self) -> Vec<String> {
        self.supervisor.output()
    }

    /// Every invocation so far.
    pub fn invocations(&self) -> Vec<InvocationRecord> {
        self.sim.invoker.records.all()
    }

    /// Waits until `count` invocations of `function` were recorded; returns them all.
    pub async fn wait_for_invocations(
        &self,
        function: &str,
        count: usize,
        timeout: Duration,
    ) -> anyhow::Result<Vec<InvocationRecord>> {
        self.sim
            .invoker
            .records
            .wait_for(function, count, timeout)
            .await
    }

    /// Stops the timers and the front door, then SIGTERMs the handler and waits for it to
    /// exit (SIGKILL after the grace period). Returns the handler's exit status.
    pub async fn shutdown(mut self) -> anyhow::Result<Option<ExitStatus>> {
        for timer in self.timers.drain(..) {
            timer.abort();
        }
        if let Some(stop) = self.server_stop.take() {
            let _ = stop.send(());
        }
        let status = self.supervisor.stop().await;
        if let Some(server) = self.server.take() {
            let _ = tokio::time::timeout(Duration::from_secs(5), server).await;
        }
        Ok(status)
    }
}

impl Drop for HostSim {
    fn drop(&mut self) {
        for timer in self.timers.drain(..) {
            timer.abort();
        }
        if let Some(stop) = self.server_stop.take() {
            let _ = stop.send(());
        }
        if let Some(server) = self.server.take() {
            server.abort();
        }
        // The supervisor's own Drop SIGKILLs the handler.
    }
}
