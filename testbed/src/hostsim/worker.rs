//! The custom handler process: started, polled until ready, restarted when it dies, and
//! stopped (SIGTERM, then SIGKILL after a grace period) — as the Functions host does.
//!
//! Guarantees, mirroring the host's `HttpWorkerProcess` / `HttpFunctionInvocationDispatcher`:
//! - the executable is `defaultExecutablePath` relative to the worker directory (the app root
//!   by default) when that file exists, else a program looked up on PATH; a file without its
//!   execute bit is refused with an error saying so (zip deploys from Windows lose it);
//! - arguments are `arguments`, then `defaultWorkerPath`, then `workerArguments`, with `%NAME%`
//!   replaced by the handler's environment variables (unknown names become empty);
//! - the environment is the simulator's own, plus the app settings, plus
//!   `FUNCTIONS_CUSTOMHANDLER_PORT`, `FUNCTIONS_HTTPWORKER_PORT` (the same port, chosen once and
//!   kept across restarts), `FUNCTIONS_CUSTOMHANDLER_WORKER_ID`, `FUNCTIONS_HTTPWORKER_ID` (a
//!   new id per process) and `FUNCTIONS_APP_ROOT_PATH`;
//! - readiness: `GET http://127.0.0.1:{port}/` every 25 ms; ANY HTTP answer (even 404) counts;
//!   a process that exits or stays silent past the start-up timeout is a failure;
//! - a process that fails or dies is restarted; after [`MAX_FAILURES`] failures less than
//!   [`FAILURE_WINDOW`] apart the supervisor gives up ([`HandlerState::Failed`]), as the host
//!   shuts itself down;
//! - the handler gets `PR_SET_PDEATHSIG = SIGKILL`: if the simulator is killed outright (no
//!   destructors run), the kernel kills the handler too instead of leaving it on its port;
//! - the handler's stdout and stderr are copied line by line to the simulator's stdout and
//!   stderr (optionally prefixed) and kept (the last [`OUTPUT_LINES_KEPT`] lines) for tests.

use std::collections::{BTreeMap, VecDeque};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use tokio::io::{AsyncBufReadExt, AsyncRead, BufReader};
use tokio::process::{Child, Command};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use super::app::HandlerDescription;

/// The port the handler must listen on.
pub const ENV_CUSTOMHANDLER_PORT: &str = "FUNCTIONS_CUSTOMHANDLER_PORT";
/// The same port, under the older `httpWorker` name.
pub const ENV_HTTPWORKER_PORT: &str = "FUNCTIONS_HTTPWORKER_PORT";
/// A new id for each handler process.
pub const ENV_CUSTOMHANDLER_WORKER_ID: &str = "FUNCTIONS_CUSTOMHANDLER_WORKER_ID";
/// The same id, under the older `httpWorker` name.
pub const ENV_HTTPWORKER_ID: &str = "FUNCTIONS_HTTPWORKER_ID";
/// The app root (script root) path.
pub const ENV_APP_ROOT_PATH: &str = "FUNCTIONS_APP_ROOT_PATH";

/// The host's readiness polling interval (`WorkerReadyCheckPollingIntervalMilliseconds`).
pub const READY_POLL_INTERVAL: Duration = Duration::from_millis(25);
/// How long one readiness request may take before it counts as "not answering yet".
const READY_REQUEST_TIMEOUT: Duration = Duration::from_secs(2);
/// Failures after which the host gives up (`ErrorEventsThreshold`).
pub const MAX_FAILURES: usize = 3;
/// Failures further apart than this start a new count (`WorkerRestartErrorIntervalThresholdInMinutes`).
pub const FAILURE_WINDOW: Duration = Duration::from_secs(30 * 60);
/// How many times a spawn failing with ETXTBSY is retried.
const BUSY_TEXT_RETRIES: u32 = 40;
/// The pause between those retries.
const BUSY_TEXT_PAUSE: Duration = Duration::from_millis(25);
/// Lines of handler output kept for [`Supervisor::output`].
pub const OUTPUT_LINES_KEPT: usize = 10_000;

/// Where the handler process stands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HandlerState {
    /// Started (this pid), not answering yet.
    Starting { pid: u32 },
    /// Answering on its port.
    Ready { pid: u32 },
    /// The last process failed (`reason`); another is about to start.
    Restarting { failures: usize, reason: String },
    /// The supervisor gave up; nothing will be invoked any more.
    Failed(String),
    /// Stopped on request.
    Stopped,
}

impl HandlerState {
    /// The pid of the current process, when one runs.
    pub fn pid(&self) -> Option<u32> {
        match self {
            Self::Starting { pid } | Self::Ready { pid } => Some(*pid),
            _ => None,
        }
    }
}

/// How to run the handler.
#[derive(Debug, Clone)]
pub struct WorkerSpec {
    pub program: PathBuf,
    pub args: Vec<String>,
    pub working_directory: PathBuf,
    /// App settings and host variables (the worker id is added per process).
    pub env: Vec<(String, String)>,
    pub port: u16,
    pub startup_timeout: Duration,
    pub shutdown_grace: Duration,
    pub log_prefix: Option<String>,
}

impl WorkerSpec {
    /// Resolves the executable and arguments of `description` for an app at `app_root`.
    pub fn new(
        description: &HandlerDescription,
        app_root: &Path,
        settings: &BTreeMap<String, String>,
        port: u16,
    ) -> anyhow::Result<Self> {
        let program = resolve_executable(description)?;
        let mut env: Vec<(String, String)> = settings
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        env.push((ENV_CUSTOMHANDLER_PORT.into(), port.to_string()));
        env.push((ENV_HTTPWORKER_PORT.into(), port.to_string()));
        env.push((ENV_APP_ROOT_PATH.into(), app_root.display().to_string()));
        let lookup: BTreeMap<&str, &str> =
            env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        let mut args: Vec<String> = description
            .arguments
            .iter()
            .map(|a| expand(a, &lookup))
            .collect();
        if let Some(worker_path) = &description.default_worker_path {
            args.push(expand(worker_path, &lookup));
        }
        args.extend(
            description
                .worker_arguments
                .iter()
                .map(|a| expand(a, &lookup)),
        );
        Ok(Self {
            program,
            args,
            working_directory: description.working_directory.clone(),
            env,
            port,
            startup_timeout: Duration::from_secs(30),
            shutdown_grace: Duration::from_secs(10),
            log_prefix: None,
        })
    }
}

/// `%NAME%` → the variable's value (from `vars`, then the process environment), else nothing.
fn expand(text: &str, vars: &BTreeMap<&str, &str>) -> String {
    let mut out = String::new();
    let mut rest = text;
    while let Some(start) = rest.find('%') {
        let after = &rest[start + 1..];
        let Some(end) = after.find('%') else { break };
        let name = &after[..end];
        out.push_str(&rest[..start]);
        if let Some(value) = vars.get(name) {
            out.push_str(value);
        } else if let Ok(value) = std::env::var(name) {
            out.push_str(&value);
        }
        rest = &after[end + 1..];
    }
    out.push_str(rest);
    out
}

fn resolve_executable(description: &HandlerDescription) -> anyhow::Result<PathBuf> {
    let written = Path::new(&description.default_executable_path);
    let local = if written.is_absolute() {
        written.to_path_buf()
    } else {
        description.worker_directory.join(written)
    };
    if local.exists() {
        return check_executable(&local);
    }
    if written.components().count() == 1 {
        let path_var = std::env::var_os("PATH").unwrap_or_default();
        for dir in std::env::split_paths(&path_var) {
            let candidate = dir.join(written);
            if candidate.is_file() {
                return check_executable(&candidate);
            }
        }
    }
    bail!(
        "handler executable {:?} is neither in {} nor on PATH",
        description.default_executable_path,
        description.worker_directory.display()
    )
}

fn check_executable(path: &Path) -> anyhow::Result<PathBuf> {
    let metadata =
        std::fs::metadata(path).with_context(|| format!("reading {}", path.display()))?;
    if !metadata.is_file() {
        bail!("handler executable {} is not a file", path.display());
    }
    if metadata.permissions().mode() & 0o111 == 0 {
        bail!(
            "handler executable {} lacks its execute bit (run `chmod +x` on it; zip deploys \
             from Windows lose it)",
            path.display()
        );
    }
    Ok(path.to_path_buf())
}

/// State shared between the supervisor task and its owner.
struct Shared {
    pid: Mutex<Option<u32>>,
    starts: AtomicU32,
    output: Mutex<VecDeque<String>>,
}

/// Runs and watches the handler process.
pub struct Supervisor {
    state: watch::Receiver<HandlerState>,
    shutdown: watch::Sender<bool>,
    shared: Arc<Shared>,
    task: Option<JoinHandle<Option<ExitStatus>>>,
}

impl Supervisor {
    /// Starts the first process and returns at once (see [`Supervisor::wait_ready`]).
    pub fn start(spec: WorkerSpec) -> Self {
        let (state_tx, state) = watch::channel(HandlerState::Restarting {
            failures: 0,
            reason: "not started yet".into(),
        });
        let (shutdown, shutdown_rx) = watch::channel(false);
        let shared = Arc::new(Shared {
            pid: Mutex::new(None),
            starts: AtomicU32::new(0),
            output: Mutex::new(VecDeque::new()),
        });
        let task = tokio::spawn(supervise(spec, state_tx, shutdown_rx, shared.clone()));
        Self {
            state,
            shutdown,
            shared,
            task: Some(task),
        }
    }

    /// A receiver of state changes.
    pub fn state(&self) -> watch::Receiver<HandlerState> {
        self.state.clone()
    }

    /// Waits until the handler answers; fails when the supervisor gave up or stopped, or after
    /// `timeout`.
    pub async fn wait_ready(&self, timeout: Duration) -> anyhow::Result<u32> {
        wait_ready(self.state.clone(), timeout).await
    }

    /// The current process id.
    pub fn pid(&self) -> Option<u32> {
        *lock(&self.shared.pid)
    }

    /// How many processes were started so far.
    pub fn starts(&self) -> u32 {
        self.shared.starts.load(Ordering::SeqCst)
    }

    /// The handler's output lines kept so far (stdout and stderr interleaved).
    pub fn output(&self) -> Vec<String> {
        lock(&self.shared.output).iter().cloned().collect()
    }

    /// SIGKILLs the current process and waits until the supervisor has seen it die.
    pub async fn kill(&self) -> anyhow::Result<u32> {
        let pid = self.pid().context("no handler process is running")?;
        send_signal(pid, libc::SIGKILL)?;
        let mut state = self.state.clone();
        state
            .wait_for(|s| s.pid() != Some(pid))
            .await
            .context("the supervisor ended")?;
        Ok(pid)
    }

    /// SIGTERMs the process, waits up to the grace period (then SIGKILLs it), and returns
    /// its exit status.
    pub async fn stop(&mut self) -> Option<ExitStatus> {
        let _ = self.shutdown.send(true);
        match self.task.take() {
            Some(task) => task.await.ok().flatten(),
            None => None,
        }
    }
}

impl Drop for Supervisor {
    fn drop(&mut self) {
        let _ = self.shutdown.send(true);
        if let Some(pid) = *lock(&self.shared.pid) {
            let _ = send_signal(pid, libc::SIGKILL);
        }
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }
}

/// Waits on a state receiver until the handler is ready (see [`Supervisor::wait_ready`]).
pub async fn wait_ready(
    mut state: watch::Receiver<HandlerState>,
    timeout: Duration,
) -> anyhow::Result<u32> {
    let wait = state.wait_for(|s| {
        matches!(
            s,
            HandlerState::Ready { .. } | HandlerState::Failed(_) | HandlerState::Stopped
        )
    });
    let reached = match tokio::time::timeout(timeout, wait).await {
        Ok(Ok(state)) => state.clone(),
        Ok(Err(_)) => bail!("the handler supervisor ended"),
        Err(_) => bail!("the handler was not ready within {timeout:?}"),
    };
    match reached {
        HandlerState::Ready { pid } => Ok(pid),
        HandlerState::Failed(reason) => bail!("the handler failed: {reason}"),
        _ => bail!("the handler was stopped"),
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

fn send_signal(pid: u32, signal: libc::c_int) -> anyhow::Result<()> {
    let pid = libc::pid_t::try_from(pid).context("pid out of range")?;
    // SAFETY: kill(2) has no memory-safety preconditions; a stale pid yields ESRCH.
    let result = unsafe { libc::kill(pid, signal) };
    if result != 0 {
        bail!(
            "kill({pid}, {signal}) failed: {}",
            std::io::Error::last_os_error()
        );
    }
    Ok(())
}

fn log(message: &str) {
    println!("[hostsim] {message}");
}

async fn supervise(
    spec: WorkerSpec,
    state: watch::Sender<HandlerState>,
    mut shutdown: watch::Receiver<bool>,
    shared: Arc<Shared>,
) -> Option<ExitStatus> {
    let client = match reqwest::Client::builder()
        .no_proxy()
        .timeout(READY_REQUEST_TIMEOUT)
        .build()
    {
        Ok(client) => client,
        Err(error) => {
            let _ = state.send(HandlerState::Failed(format!("HTTP client: {error}")));
            return None;
        }
    };
    let mut failures: Vec<Instant> = Vec::new();
    loop {
        let mut child = match spawn_retrying_busy_text(&spec, &shared).await {
            Ok(child) => child,
            Err(error) => {
                let reason = format!("{error:#}");
                log(&format!("could not start the handler: {reason}"));
                let _ = state.send(HandlerState::Failed(reason));
                return None;
            }
        };
        let pid = child.id().unwrap_or_default();
        *lock(&shared.pid) = Some(pid);
        shared.starts.fetch_add(1, Ordering::SeqCst);
        let _ = state.send(HandlerState::Starting { pid });

        let reason = tokio::select! {
            _ = stop_requested(&mut shutdown) => {
                return stop_child(&mut child, &spec, &state, &shared).await;
            }
            status = child.wait() => describe_exit("exited during start-up", status),
            ready = poll_ready(&client, spec.port, spec.startup_timeout) => {
                if ready {
                    log(&format!("handler (pid {pid}) is ready on port {}", spec.port));
                    let _ = state.send(HandlerState::Ready { pid });
                    tokio::select! {
                        _ = stop_requested(&mut shutdown) => {
                            return stop_child(&mut child, &spec, &state, &shared).await;
                        }
                        status = child.wait() => describe_exit("exited", status),
                    }
                } else {
                    let _ = child.kill().await;
                    format!(
                        "did not answer on port {} within {:?}",
                        spec.port, spec.startup_timeout
                    )
                }
            }
        };
        *lock(&shared.pid) = None;
        let now = Instant::now();
        if failures
            .last()
            .is_some_and(|last| now.duration_since(*last) > FAILURE_WINDOW)
        {
            failures.clear();
        }
        failures.push(now);
        log(&format!("handler (pid {pid}) {reason}"));
        if failures.len() >= MAX_FAILURES {
            let message = format!(
                "the handler failed {} times; giving up (last: {reason})",
                failures.len()
            );
            log(&message);
            let _ = state.send(HandlerState::Failed(message));
            return None;
        }
        log("restarting the handler");
        let _ = state.send(HandlerState::Restarting {
            failures: failures.len(),
            reason,
        });
    }
}

/// Completes when a stop is requested (or the owner is gone).
async fn stop_requested(shutdown: &mut watch::Receiver<bool>) {
    let _ = shutdown.wait_for(|stop| *stop).await;
}

fn describe_exit(what: &str, status: std::io::Result<ExitStatus>) -> String {
    match status {
        Ok(status) => format!("{what} ({status})"),
        Err(error) => format!("{what} (status unknown: {error})"),
    }
}

async fn stop_child(
    child: &mut Child,
    spec: &WorkerSpec,
    state: &watch::Sender<HandlerState>,
    shared: &Shared,
) -> Option<ExitStatus> {
    let status = match child.id() {
        Some(pid) => {
            log(&format!("stopping the handler (SIGTERM to pid {pid})"));
            let _ = send_signal(pid, libc::SIGTERM);
            match tokio::time::timeout(spec.shutdown_grace, child.wait()).await {
                Ok(status) => status.ok(),
                Err(_) => {
                    log(&format!(
                        "handler still running after {:?}; killing it",
                        spec.shutdown_grace
                    ));
                    let _ = child.kill().await;
                    child.wait().await.ok()
                }
            }
        }
        None => child.wait().await.ok(),
    };
    *lock(&shared.pid) = None;
    if let Some(status) = status {
        log(&format!("handler stopped ({status})"));
    }
    let _ = state.send(HandlerState::Stopped);
    status
}

/// Spawns the handler, retrying while exec fails with ETXTBSY ("text file busy"): in a
/// multi-threaded process (parallel tests) a freshly copied executable can still be open for
/// writing in another thread's forked child for a moment (rust-lang/rust#114554).
async fn spawn_retrying_busy_text(
    spec: &WorkerSpec,
    shared: &Arc<Shared>,
) -> anyhow::Result<Child> {
    let mut attempts = 0;
    loop {
        match spawn(spec, shared) {
            Err(error)
                if attempts < BUSY_TEXT_RETRIES && error.raw_os_error() == Some(libc::ETXTBSY) =>
            {
                attempts += 1;
                tokio::time::sleep(BUSY_TEXT_PAUSE).await;
            }
            result => {
                return result.with_context(|| format!("starting {}", spec.program.display()))
            }
        }
    }
}

fn spawn(spec: &WorkerSpec, shared: &Arc<Shared>) -> std::io::Result<Child> {
    let worker_id = uuid::Uuid::new_v4().to_string();
    let mut command = Command::new(&spec.program);
    command
        .args(&spec.args)
        .current_dir(&spec.working_directory)
        .envs(spec.env.iter().map(|(k, v)| (k, v)))
        .env(ENV_CUSTOMHANDLER_WORKER_ID, &worker_id)
        .env(ENV_HTTPWORKER_ID, &worker_id)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    // SAFETY: the closure runs in the forked child before exec and only calls prctl(2),
    // which is async-signal-safe. It asks the kernel to SIGKILL the handler if the thread
    // that started it dies, so a simulator killed outright leaves no orphan on the port.
    unsafe {
        command.pre_exec(|| {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let mut child = command.spawn()?;
    if let Some(stdout) = child.stdout.take() {
        tokio::spawn(copy_lines(
            stdout,
            false,
            spec.log_prefix.clone(),
            shared.clone(),
        ));
    }
    if let Some(stderr) = child.stderr.take() {
        tokio::spawn(copy_lines(
            stderr,
            true,
            spec.log_prefix.clone(),
            shared.clone(),
        ));
    }
    Ok(child)
}

async fn copy_lines(
    stream: impl AsyncRead + Unpin,
    is_stderr: bool,
    prefix: Option<String>,
    shared: Arc<Shared>,
) {
    let mut reader = BufReader::new(stream);
    let mut buffer = Vec::new();
    loop {
        buffer.clear();
        match reader.read_until(b'\n', &mut buffer).await {
            Ok(0) | Err(_) => return,
            Ok(_) => {}
        }
        let line = String::from_utf8_lossy(&buffer);
        let line = line.trim_end_matches(['\n', '\r']);
        let prefix = prefix.as_deref().unwrap_or("");
        if is_stderr {
            eprintln!("{prefix}{line}");
        } else {
            println!("{prefix}{line}");
        }
        let mut output = lock(&shared.output);
        if output.len() >= OUTPUT_LINES_KEPT {
            output.pop_front();
        }
        output.push_back(line.to_string());
    }
}

/// Polls `GET /` every [`READY_POLL_INTERVAL`] until any HTTP answer (true) or `timeout` (false).
async fn poll_ready(client: &reqwest::Client, port: u16, timeout: Duration) -> bool {
    let url = format!("http://127.0.0.1:{port}/");
    let deadline = Instant::now() + timeout;
    loop {
        match client.get(&url).send().await {
            Ok(_) => return true,
            Err(error) if error.is_connect() || error.is_timeout() => {}
            // Any other failure means something answered (the host's rule: only a socket
            // error means "not ready").
            Err(_) => return true,
        }
        if Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(READY_POLL_INTERVAL).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percent_references_expand() {
        let vars = BTreeMap::from([("PORT", "7")]);
        assert_eq!(expand("--port=%PORT%", &vars), "--port=7");
        assert_eq!(expand("%NOT_SET_ANYWHERE_42%x", &vars), "x");
        assert_eq!(expand("100%", &vars), "100%");
    }

    #[test]
    fn a_file_without_execute_bit_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let exe = dir.path().join("handler");
        std::fs::write(&exe, "#!/bin/sh\n").unwrap();
        std::fs::set_permissions(&exe, std::fs::Permissions::from_mode(0o644)).unwrap();
        let description = HandlerDescription {
            default_executable_path: "handler".into(),
            default_worker_path: None,
            arguments: vec![],
            worker_arguments: vec![],
            worker_directory: dir.path().to_path_buf(),
            working_directory: dir.path().to_path_buf(),
        };
        let error = resolve_executable(&description).unwrap_err().to_string();
        assert!(error.contains("execute bit"), "{error}");
        std::fs::set_permissions(&exe, std::fs::Permissions::from_mode(0o755)).unwrap();
        assert_eq!(resolve_executable(&description).unwrap(), exe);
    }

    #[test]
    fn programs_on_path_are_found() {
        let description = HandlerDescription {
            default_executable_path: "sh".into(),
            default_worker_path: None,
            arguments: vec![],
            worker_arguments: vec![],
            worker_directory: std::env::temp_dir(),
            working_directory: std::env::temp_dir(),
        };
        assert!(resolve_executable(&description).is_ok());
    }
}
