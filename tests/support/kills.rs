//! The kill/retry harness of the crash tests (`kill_retry`, `transfer_kills`): several handler
//! processes on one Azurite ([`Fleet`]), clients that send each request to a random live process
//! until one answers ([`retry_until_answered`]), and a killer that SIGKILLs handlers at random
//! moments ([`Fleet::kill`]). The simulator gives up on a handler after 3 failures, as the host
//! does; a host whose handler was killed [`KILLS_PER_HOST`] times is replaced by a fresh host
//! (a recycled instance), so the kills keep coming. Every random choice is seeded.

use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use serde_json::Value;
use streamfold_testbed::hostsim::HostSim;
use streamfold_testbed::rng::SplitMix64;
use streamfold_testbed::Azurite;

use super::try_start_host_on;

/// Kills of one host before it is replaced by a fresh one.
pub const KILLS_PER_HOST: usize = 2;
/// How long a request keeps being retried before the test gives up on it.
pub const PATIENCE: Duration = Duration::from_secs(120);
/// How long one attempt may take.
const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(20);
/// How long a host may take to be ready again.
const READY_TIMEOUT: Duration = Duration::from_secs(30);
/// Further ports a fleet tries when a host does not start on the one it found free.
const START_TRIES: u32 = 3;

/// Locks a mutex, whatever a panicking client left in it.
pub fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// `cents` as a decimal amount with two places (`-1.05`).
pub fn money(cents: i64) -> String {
    format!(
        "{}{}.{:02}",
        if cents < 0 { "-" } else { "" },
        cents.abs() / 100,
        cents.abs() % 100
    )
}

/// The live hosts' base URLs, which clients pick from (replaced hosts drop out).
#[derive(Clone, Default)]
pub struct Bases(Arc<Mutex<Vec<String>>>);

impl Bases {
    fn pick(&self, rng: &mut SplitMix64) -> String {
        let bases = lock(&self.0);
        bases[(rng.next_u64() % bases.len() as u64) as usize].clone()
    }

    fn replace(&self, old: &str, new: String) {
        let mut bases = lock(&self.0);
        bases.retain(|b| b != old);
        bases.push(new);
    }
}

/// Handler processes on one Azurite, each started with the settings `settings` gives for the
/// port it listens on.
pub struct Fleet<'a, S> {
    azurite: &'a Azurite,
    settings: S,
    hosts: Vec<(HostSim, tempfile::TempDir)>,
    bases: Bases,
}

impl<'a, S: Fn(&Azurite, u16) -> Vec<(String, String)>> Fleet<'a, S> {
    /// Starts `count` hosts.
    pub async fn start(azurite: &'a Azurite, count: usize, settings: S) -> Self {
        let mut fleet = Self {
            azurite,
            settings,
            hosts: Vec::new(),
            bases: Bases::default(),
        };
        for _ in 0..count {
            let host = fleet.start_one().await;
            lock(&fleet.bases.0).push(host.0.base_url());
            fleet.hosts.push(host);
        }
        fleet
    }

    /// Starts one host on a port found free; when another process took that port before the
    /// host bound it, on another one (a few times).
    async fn start_one(&self) -> (HostSim, tempfile::TempDir) {
        let mut tries = 0;
        loop {
            let port = streamfold_testbed::free_port().unwrap();
            match try_start_host_on(port, (self.settings)(self.azurite, port)).await {
                Ok(host) => return host,
                Err(error) if tries < START_TRIES => {
                    eprintln!("host on port {port} did not start ({error:#}); another port");
                    tries += 1;
                }
                Err(error) => panic!("start the host simulator: {error:#}"),
            }
        }
    }

    /// The live hosts' base URLs (kept up to date as hosts are replaced).
    pub fn bases(&self) -> Bases {
        self.bases.clone()
    }

    /// Host `i` (0 is never replaced while no kill runs).
    pub fn host(&self, i: usize) -> &HostSim {
        &self.hosts[i].0
    }

    /// SIGKILLs `kills` handlers, each of a random host at a random moment (choices seeded by
    /// `seed`); a host killed [`KILLS_PER_HOST`] times is replaced by a fresh one first.
    pub async fn kill(&mut self, kills: usize, seed: u64) {
        let mut rng = SplitMix64::new(seed);
        let mut kills_on = vec![0usize; self.hosts.len()];
        let mut done = 0;
        while done < kills {
            tokio::time::sleep(Duration::from_millis(50 + rng.next_u64() % 250)).await;
            let i = (rng.next_u64() % self.hosts.len() as u64) as usize;
            if kills_on[i] == KILLS_PER_HOST {
                let fresh = self.start_one().await;
                let old = std::mem::replace(&mut self.hosts[i], fresh);
                self.bases
                    .replace(&old.0.base_url(), self.hosts[i].0.base_url());
                let _ = old.0.shutdown().await;
                kills_on[i] = 0;
                continue;
            }
            let host = &self.hosts[i].0;
            if host.wait_until_ready(READY_TIMEOUT).await.is_err() {
                continue;
            }
            host.kill_handler().await.unwrap();
            kills_on[i] += 1;
            done += 1;
        }
    }

    /// Waits until every host's handler is ready again.
    pub async fn wait_ready(&self) {
        for (host, _) in &self.hosts {
            host.wait_until_ready(READY_TIMEOUT).await.unwrap();
        }
    }
}

/// Sends the request `send` makes for a base URL to random live hosts (choices seeded by
/// `seed`) until `answered` takes the answer (status and JSON body): `Some` ends, `None` (and
/// no answer at all) tries again after a short random pause. Panics after [`PATIENCE`].
pub async fn retry_until_answered<T>(
    bases: &Bases,
    seed: u64,
    what: &str,
    send: impl Fn(&str) -> reqwest::RequestBuilder,
    answered: impl Fn(u16, &Value) -> Option<T>,
) -> T {
    let mut rng = SplitMix64::new(seed);
    let deadline = tokio::time::Instant::now() + PATIENCE;
    loop {
        assert!(
            tokio::time::Instant::now() < deadline,
            "{what} got no answer in {PATIENCE:?}"
        );
        let base = bases.pick(&mut rng);
        let sent = send(&base).timeout(ATTEMPT_TIMEOUT).send().await;
        if let Ok(response) = sent {
            let status = response.status().as_u16();
            let answer: Value = response.json().await.unwrap_or(Value::Null);
            if let Some(result) = answered(status, &answer) {
                return result;
            }
        }
        tokio::time::sleep(Duration::from_millis(20 + rng.next_u64() % 80)).await;
    }
}
