//! The bank's web front end in a real browser: Debian's chromium driven by playwright-core
//! (`tests/browser/bank.js`) against the app under the host simulator and Azurite, with its
//! notifications delivered through the Event Grid topic simulator to the Projector (so the
//! accounts list, a read model, and the live view see them). Screenshots go to
//! `target/browser-screenshots/`.
//!
//! Needs `/usr/bin/chromium` (`apt-get install -y chromium`; `.ci/run` and `scripts/test.sh`
//! install it when missing) and `node_modules/playwright-core` (`npm ci`).

use crate::support;

use std::process::Stdio;
use std::time::Duration;

use streamfold_testbed::topic::{Subscription, TopicConfig, TopicSim};
use support::{event_grid_webhook_path, publishing_to, repo_root, TestApp};

const CHROMIUM: &str = "/usr/bin/chromium";
/// The whole browser run, at most (it takes a few seconds).
const RUN_TIMEOUT: Duration = Duration::from_secs(240);

#[tokio::test]
async fn the_web_front_end_works_in_chromium() {
    assert!(
        std::path::Path::new(CHROMIUM).exists(),
        "{CHROMIUM} is missing: apt-get install -y chromium (scripts/test.sh and .ci/run do)"
    );
    assert!(
        repo_root().join("node_modules/playwright-core").exists(),
        "node_modules/playwright-core is missing: npm ci"
    );
    let port = streamfold_testbed::free_port().unwrap();
    let webhook = format!(
        "http://127.0.0.1:{port}{}",
        event_grid_webhook_path("Projector")
    );
    let topic = TopicSim::start(TopicConfig::default().subscribe(Subscription::new(webhook)))
        .await
        .unwrap();
    let app = TestApp::start_on(port, publishing_to(&topic)).await;
    let shots = repo_root().join("target/browser-screenshots");
    let mut child = tokio::process::Command::new("node")
        .arg(repo_root().join("tests/browser/bank.js"))
        .arg(app.host.base_url())
        .arg(&shots)
        .current_dir(repo_root())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("run node");
    let stdout = child.stdout.take().unwrap();
    let stderr = child.stderr.take().unwrap();
    let output = tokio::time::timeout(RUN_TIMEOUT, async {
        use tokio::io::AsyncReadExt;
        let (mut out, mut err) = (String::new(), String::new());
        let (mut so, mut se) = (stdout, stderr);
        let (a, b) = tokio::join!(so.read_to_string(&mut out), se.read_to_string(&mut err));
        a.unwrap();
        b.unwrap();
        let status = child.wait().await.unwrap();
        (status, out, err)
    })
    .await
    .expect("the browser test finishes in time");
    let (status, out, err) = output;
    println!("{out}");
    eprintln!("{err}");
    assert!(status.success(), "the browser test failed:\n{out}\n{err}");
    assert!(out.contains("PASSED"), "{out}");
    for shot in ["account.png", "accounts.png", "transfer.png", "phone.png"] {
        assert!(shots.join(shot).exists(), "no screenshot {shot}");
    }
}
