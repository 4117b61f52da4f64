//! Azurite, the Azure Storage emulator, started on free loopback ports with its data in a
//! temporary folder, and killed when dropped.
//!
//! The executable is `node_modules/.bin/azurite` under the repository root (installed by
//! `npm ci`, pinned by `package-lock.json`), or the path in `STREAMFOLD_AZURITE`.

use std::path::PathBuf;
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use tokio::process::{Child, Command};

/// The emulator's well-known development account.
pub const ACCOUNT: &str = "devstoreaccount1";
/// The emulator's published development key.
pub const KEY: &str =
    "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw==";

const START_TIMEOUT: Duration = Duration::from_secs(30);
/// Fresh port sets tried before giving up.
const START_ATTEMPTS: usize = 3;
/// Azurite's `Server` response header (`Azurite-Blob/3.x`, `Azurite-Table/3.x`).
const SERVER_HEADER_PREFIX: &str = "Azurite";

/// A running Azurite.
pub struct Azurite {
    child: Option<Child>,
    dir: tempfile::TempDir,
    pub blob_port: u16,
    pub table_port: u16,
    pub queue_port: u16,
}

impl Azurite {
    /// Starts Azurite on free ports and waits until its blob and table endpoints accept
    /// connections.
    ///
    /// A free port can be taken by another process between the moment it is picked and the
    /// moment Azurite binds it; Azurite then exits. Start-up is therefore confirmed by the
    /// `Server` header of Azurite's own answer (not by a connection, which a stranger could
    /// accept), and retried on new ports a few times.
    pub async fn start() -> anyhow::Result<Self> {
        let mut last_error = None;
        for _ in 0..START_ATTEMPTS {
            let mut azurite = Self {
                child: None,
                dir: tempfile::tempdir()?,
                blob_port: crate::free_port()?,
                table_port: crate::free_port()?,
                queue_port: crate::free_port()?,
            };
            match azurite.spawn().await {
                Ok(()) => return Ok(azurite),
                Err(error) => {
                    azurite.stop().await;
                    last_error = Some(error);
                }
            }
        }
        Err(last_error.unwrap_or_else(|| anyhow::anyhow!("Azurite did not start")))
    }

    fn executable() -> PathBuf {
        std::env::var_os("STREAMFOLD_AZURITE")
            .map(PathBuf::from)
            .unwrap_or_else(|| crate::repo_root().join("node_modules/.bin/azurite"))
    }

    async fn spawn(&mut self) -> anyhow::Result<()> {
        let exe = Self::executable();
        if !exe.exists() {
            bail!(
                "Azurite not found at {} (run `npm ci` in the repository root)",
                exe.display()
            );
        }
        let child = Command::new(&exe)
            .args(["--silent", "--skipApiVersionCheck", "--disableTelemetry"])
            .arg("--location")
            .arg(self.dir.path())
            .args(["--blobHost", "127.0.0.1", "--blobPort"])
            .arg(self.blob_port.to_string())
            .args(["--tableHost", "127.0.0.1", "--tablePort"])
            .arg(self.table_port.to_string())
            .args(["--queueHost", "127.0.0.1", "--queuePort"])
            .arg(self.queue_port.to_string())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("starting {}", exe.display()))?;
        self.child = Some(child);
        let deadline = Instant::now() + START_TIMEOUT;
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(2))
            .build()?;
        for port in [self.blob_port, self.table_port] {
            loop {
                if let Some(child) = self.child.as_mut() {
                    if let Some(status) = child.try_wait()? {
                        bail!("Azurite exited during start-up ({status}); port {port} taken?");
                    }
                }
                let answer = http.get(format!("http://127.0.0.1:{port}/")).send().await;
                let is_azurite = answer.is_ok_and(|r| {
                    r.headers()
                        .get("server")
                        .and_then(|v| v.to_str().ok())
                        .is_some_and(|v| v.starts_with(SERVER_HEADER_PREFIX))
                });
                if is_azurite {
                    break;
                }
                if Instant::now() > deadline {
                    bail!("Azurite did not answer on port {port} within {START_TIMEOUT:?}");
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
        Ok(())
    }

    /// Kills the emulator (a storage outage); its data stays in the folder.
    pub async fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill().await;
        }
    }

    /// Starts it again on the same ports with the same data (loki autosave permitting).
    pub async fn restart(&mut self) -> anyhow::Result<()> {
        self.stop().await;
        self.spawn().await
    }

    pub fn blob_endpoint(&self) -> String {
        format!("http://127.0.0.1:{}/{ACCOUNT}", self.blob_port)
    }

    pub fn table_endpoint(&self) -> String {
        format!("http://127.0.0.1:{}/{ACCOUNT}", self.table_port)
    }

    /// An ordinary (non-`UseDevelopmentStorage`) connection string for this instance.
    pub fn connection_string(&self) -> String {
        Self::connection_string_for(&self.blob_endpoint(), &self.table_endpoint())
    }

    /// A connection string for the development account at the given endpoints (a proxy's, say).
    pub fn connection_string_for(blob_endpoint: &str, table_endpoint: &str) -> String {
        format!(
            "DefaultEndpointsProtocol=http;AccountName={ACCOUNT};AccountKey={KEY};BlobEndpoint={blob_endpoint};TableEndpoint={table_endpoint};"
        )
    }
}
