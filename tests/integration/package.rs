//! The deploy package: `scripts/assemble.sh --zip` writes the zip a zip deploy ships, and that
//! zip alone runs. The script is run from a copy of the checkout that has a
//! `local.settings.json` holding a secret and stray files beside the function.json files, as a
//! developer's checkout does after `scripts/run-local.sh`; the zip must list exactly
//! `host.json`, `handler` (mode 0755, made on Unix) and one `function.json` per function, and,
//! unpacked by `unzip` into an empty folder, start under the host simulator against Azurite,
//! answer readiness, a command and a query.
//!
//! CI packages the debug handler the test binary was built with (`--binary`), through the same
//! script path as the production command (`--release --musl --zip`), which only adds the cargo
//! build and the static-binary check: a release musl build costs minutes on CI's two cores.
//! The ignored test runs the production command itself.

use crate::support;

use std::collections::BTreeSet;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::json;
use streamfold_testbed::hostsim::{HostConfig, HostSim};
use streamfold_testbed::Azurite;
use support::{repo_root, Client};

/// A value that must never reach a package (planted in local.settings.json).
const SECRET: &str = "planted-secret-7c1e";

fn run(command: &mut Command) -> String {
    let output = command.output().expect("run a command");
    assert!(
        output.status.success(),
        "{command:?} failed: {}\n{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), &target).unwrap();
        }
    }
}

/// A checkout with what assemble.sh reads, plus what a developer's checkout also holds.
fn checkout() -> tempfile::TempDir {
    let root = repo_root();
    let copy = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(copy.path().join("scripts")).unwrap();
    std::fs::copy(
        root.join("scripts/assemble.sh"),
        copy.path().join("scripts/assemble.sh"),
    )
    .unwrap();
    std::fs::copy(root.join("host.json"), copy.path().join("host.json")).unwrap();
    copy_dir(&root.join("functions"), &copy.path().join("functions"));
    let settings = json!({
        "IsEncrypted": false,
        "Values": {
            "FUNCTIONS_WORKER_RUNTIME": "custom",
            "AzureWebJobsStorage": format!("DefaultEndpointsProtocol=https;AccountName=prod;AccountKey={SECRET}"),
        }
    });
    std::fs::write(
        copy.path().join("local.settings.json"),
        settings.to_string(),
    )
    .unwrap();
    std::fs::write(copy.path().join("functions/Deposit/notes.md"), SECRET).unwrap();
    std::fs::create_dir_all(copy.path().join("functions/Scratch")).unwrap();
    std::fs::write(copy.path().join("functions/Scratch/draft.json"), "{}").unwrap();
    copy
}

/// The names a package must hold, from the repository's functions/ folder.
fn expected_entries() -> BTreeSet<String> {
    let mut names: BTreeSet<String> = ["host.json", "handler"].map(String::from).into();
    for entry in std::fs::read_dir(repo_root().join("functions")).unwrap() {
        let entry = entry.unwrap();
        if entry.path().join("function.json").is_file() {
            names.insert(format!(
                "{}/function.json",
                entry.file_name().to_string_lossy()
            ));
        }
    }
    names
}

/// Checks the zip's listing (`zipinfo`), unpacks it with `unzip` and runs it.
async fn check_package(zip: &Path) {
    let names: BTreeSet<String> = run(Command::new("zipinfo").arg("-1").arg(zip))
        .lines()
        .map(str::to_owned)
        .collect();
    assert_eq!(names, expected_entries(), "the zip's file list");
    assert!(names.len() > 10, "{names:?}");

    // `zipinfo` long lines: permissions, version, the system that made it, ..., the name.
    let listing = run(Command::new("zipinfo").arg(zip));
    let handler_line = listing
        .lines()
        .find(|line| line.split_whitespace().last() == Some("handler"))
        .unwrap_or_else(|| panic!("no handler line in\n{listing}"));
    let fields: Vec<&str> = handler_line.split_whitespace().collect();
    assert_eq!(fields[0], "-rwxr-xr-x", "{handler_line}");
    assert_eq!(fields[2], "unx", "{handler_line}");

    let unpacked = tempfile::tempdir().unwrap();
    run(Command::new("unzip")
        .arg("-q")
        .arg(zip)
        .arg("-d")
        .arg(unpacked.path()));
    let mode = std::fs::metadata(unpacked.path().join("handler"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o755, "the unpacked handler's mode");
    for name in &names {
        let text = std::fs::read(unpacked.path().join(name)).unwrap();
        assert!(
            !String::from_utf8_lossy(&text).contains(SECRET),
            "{name} carries the planted secret"
        );
    }

    let azurite = Azurite::start().await.expect("start Azurite");
    let config = HostConfig::new(unpacked.path())
        .setting("FUNCTIONS_WORKER_RUNTIME", "custom")
        .setting("AzureWebJobsStorage", azurite.connection_string());
    let host = HostSim::start(config)
        .await
        .expect("the unpacked app starts under the host simulator");
    let client = Client::new(host.base_url());
    let root = client.http().get(client.url("/")).send().await.unwrap();
    assert_eq!(root.status().as_u16(), 200);
    let status: serde_json::Value = client
        .http()
        .get(client.url("/admin/host/status"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(status["state"], "Running", "{status}");
    client
        .post(
            "/api/OpenAccount/PKG-1",
            &json!({"overdraftLimit": "10.00"}),
        )
        .await
        .ok(201);
    let balance = client.get("/api/GetBalance/PKG-1").await;
    let balance = balance.ok(200);
    assert_eq!(balance["balance"], "0.00");
    assert_eq!(balance["available"], "10.00");
    host.shutdown().await.unwrap();
}

#[tokio::test]
async fn the_zip_holds_only_the_app_keeps_the_execute_bit_and_runs_unpacked() {
    let checkout = checkout();
    let out: PathBuf = checkout.path().join("dist/app");
    run(Command::new("bash")
        .arg(checkout.path().join("scripts/assemble.sh"))
        .arg("--zip")
        .arg("--binary")
        .arg(env!("CARGO_BIN_EXE_handler"))
        .arg(&out));
    // The assembled folder is what `func host start` runs: no local settings in it either.
    assert!(!out.join("local.settings.json").exists());
    check_package(&out.with_extension("zip")).await;
}

/// The production command itself: `cargo nextest run --test package --run-ignored all`
/// (or `cargo test --test package -- --include-ignored`).
#[tokio::test]
#[ignore = "a release musl build: minutes on two cores"]
async fn the_production_command_builds_a_static_package() {
    let dist = tempfile::tempdir().unwrap();
    let out = dist.path().join("app");
    run(Command::new("bash")
        .arg(repo_root().join("scripts/assemble.sh"))
        .args(["--release", "--musl", "--zip"])
        .arg(&out));
    let program_headers = run(Command::new("readelf").arg("-l").arg(out.join("handler")));
    assert!(
        !program_headers.contains("program interpreter"),
        "not static"
    );
    check_package(&out.with_extension("zip")).await;
}
