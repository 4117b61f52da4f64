//! Structured logs: one JSON object per line on stdout, where the Functions host collects a
//! custom handler's output. Spans carry the host's invocation id (see `functions::server`), so
//! every line of one invocation can be found by it. `RUST_LOG` sets the filter (default
//! [`DEFAULT_FILTER`]: `info`, without warp's per-request lines, which the handler's own
//! access-log line replaces).

use tracing_subscriber::EnvFilter;

/// The log filter when `RUST_LOG` is not set.
pub const DEFAULT_FILTER: &str = "info,warp::filters::trace=off";

/// Installs the JSON subscriber; later calls do nothing.
pub fn init() {
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(DEFAULT_FILTER));
    let _ = tracing_subscriber::fmt()
        .json()
        .with_current_span(true)
        .with_span_list(false)
        .with_env_filter(filter)
        .with_writer(std::io::stdout)
        .try_init();
}

/// Completes on SIGTERM (the host stopping the worker) or SIGINT (Ctrl-C).
pub async fn shutdown_signal() {
    let interrupt = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        match signal(SignalKind::terminate()) {
            Ok(mut terminate) => {
                tokio::select! {
                    _ = interrupt => {}
                    _ = terminate.recv() => {}
                }
            }
            Err(_) => {
                let _ = interrupt.await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = interrupt.await;
    }
    tracing::info!("shutting down: finishing requests in flight");
}
