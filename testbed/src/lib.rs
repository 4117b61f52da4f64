//! The test bed of streamfold: real infrastructure for integration tests and benchmarks.
//!
//! - [`azurite`]: the real Azure Storage emulator on free loopback ports in a temporary folder.
//! - [`identity`]: a fake App Service managed-identity endpoint, and the check of its tokens.
//! - [`bearer`]: a storage endpoint that takes only those tokens (a proxy in front of Azurite).
//! - [`hostsim`]: a stand-in for the Azure Functions host running a custom handler app.
//! - [`proxy`]: a counting HTTP proxy, to count the storage requests an operation costs, and
//!   to inject faults (errors, lost answers).
//! - [`raw`]: the one catch-all warp filter its servers use (every request as received), the
//!   one way they run on a listener, and the one way both proxies pass a request upstream.
//! - [`topic`]: an Event Grid topic simulator: strict publish checks, schema validation,
//!   chaotic delivery (one file each).
//! - [`rng`]: the reproducible generator behind the chaos (and the tests' random operations).
//!
//! Nothing here is a mock of storage: tests talk to Azurite over HTTP.

pub mod azurite;
pub mod bearer;
pub mod hostsim;
pub mod identity;
pub mod proxy;
pub mod raw;
pub mod rng;
pub mod topic;

pub use azurite::Azurite;
pub use hostsim::{HostConfig, HostSim};
pub use proxy::CountingProxy;

/// A free TCP port on 127.0.0.1 (bound, read, released).
pub fn free_port() -> anyhow::Result<u16> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
    Ok(listener.local_addr()?.port())
}

/// The repository root (the folder holding `package.json` and `node_modules`).
pub fn repo_root() -> std::path::PathBuf {
    let here = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    here.parent().unwrap_or(here).to_path_buf()
}
