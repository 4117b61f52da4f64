//! The async runtime a handler process serves on: a multi-threaded runtime with one worker
//! thread fewer than the CPUs the process may use, and at least one.
//!
//! Why one fewer: the Functions host runs beside the custom handler on the same instance and
//! forwards every request to it, spending about as much CPU on the forward as the handler
//! spends on the request (the host simulator's profile in `docs/benchmarks.md`, session 9).
//! A worker per CPU leaves the host none of its own, and on the one or two vCPUs a Functions
//! instance often has, a request handed between two busy workers waits for a wake-up. The
//! standard `TOKIO_WORKER_THREADS` setting overrides the count (the runtime reads it, and a
//! value that is not a positive number stops the start, naming it).

use std::num::NonZeroUsize;

/// The environment variable that sets the worker threads, read by the runtime itself.
pub const WORKER_THREADS_ENV: &str = "TOKIO_WORKER_THREADS";

/// Worker threads for a process that may use `cpus` CPUs when the setting is absent.
pub fn default_worker_threads(cpus: usize) -> usize {
    cpus.saturating_sub(1).max(1)
}

/// The worker threads to set on the runtime: `None` when [`WORKER_THREADS_ENV`] is present
/// (the runtime reads and checks it), else [`default_worker_threads`] of `cpus`.
pub fn worker_threads(setting_present: bool, cpus: usize) -> Option<usize> {
    (!setting_present).then(|| default_worker_threads(cpus))
}

/// Builds the runtime the handler serves on.
pub fn build() -> std::io::Result<tokio::runtime::Runtime> {
    let mut builder = tokio::runtime::Builder::new_multi_thread();
    builder.enable_all();
    let cpus = std::thread::available_parallelism().map_or(1, NonZeroUsize::get);
    if let Some(threads) = worker_threads(std::env::var_os(WORKER_THREADS_ENV).is_some(), cpus) {
        builder.worker_threads(threads);
    }
    builder.build()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_worker_fewer_than_the_cpus_and_at_least_one_unless_the_setting_says() {
        assert_eq!(default_worker_threads(0), 1);
        assert_eq!(default_worker_threads(1), 1);
        assert_eq!(default_worker_threads(2), 1);
        assert_eq!(default_worker_threads(4), 3);
        assert_eq!(default_worker_threads(64), 63);
        assert_eq!(worker_threads(false, 8), Some(7));
        assert_eq!(
            worker_threads(true, 8),
            None,
            "the runtime reads the setting"
        );
    }

    #[test]
    fn the_runtime_is_built_and_runs_tasks_on_its_workers() {
        let runtime = build().unwrap();
        let answer = runtime.block_on(async { tokio::spawn(async { 41 + 1 }).await.unwrap() });
        assert_eq!(answer, 42);
        let expected = std::env::var(WORKER_THREADS_ENV)
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| {
                default_worker_threads(
                    std::thread::available_parallelism().map_or(1, NonZeroUsize::get),
                )
            });
        assert_eq!(runtime.metrics().num_workers(), expected);
    }
}
