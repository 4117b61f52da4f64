//! What the test bed's own tests share: apps staged with the echo-handler
//! (testbed/src/bin/echo-handler.rs) as their handler, a client that never goes through a system
//! proxy, and what the echo-handler says it received.
#![allow(dead_code)]

use std::path::Path;
use std::time::Duration;

use serde_json::Value;
use streamfold_testbed::hostsim::{stage_app, HostSim};

/// How long a test waits for the invocations it expects.
pub const WAIT: Duration = Duration::from_secs(20);

/// Writes `text` to `path`, creating its folders.
pub fn write(path: &Path, text: &str) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, text).unwrap();
}

/// The app in `template` staged with the echo-handler as its `handler`, the way streamfold's
/// tests stage the real app.
pub fn stage_echo(template: &Path) -> tempfile::TempDir {
    stage_app(
        template,
        Path::new(env!("CARGO_BIN_EXE_echo-handler")),
        "handler",
    )
    .unwrap()
}

/// An HTTP client for loopback servers (no system proxy).
pub fn client() -> reqwest::Client {
    reqwest::Client::builder().no_proxy().build().unwrap()
}

/// Everything the echo-handler behind `host` received (asked on its own port).
pub async fn received(host: &HostSim) -> Vec<Value> {
    client()
        .get(format!(
            "http://127.0.0.1:{}/__received",
            host.handler_port()
        ))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

/// What the echo-handler received on `path`.
pub async fn received_at(host: &HostSim, path: &str) -> Vec<Value> {
    received(host)
        .await
        .into_iter()
        .filter(|r| r["path"] == path)
        .collect()
}
