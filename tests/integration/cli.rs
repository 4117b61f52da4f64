//! The operator CLI (`streamfold`, the built binary) against real Azurite, on both backends:
//! `verify` names a gap and a missing event-id record planted straight into storage and says
//! nothing about a healthy stream; `list` and `dump`; dead letters listed, re-driven and
//! purged; a replay of history to a webhook and, from a time, to a topic; an interrupted run
//! resumed from its checkpoint; a read model rebuilt, naming a stream it cannot fold.

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Mutex};

use futures::StreamExt;
use serde_json::{json, Value};
use streamfold::app::App;
use streamfold::config::Settings;
use streamfold::storage::StorageAccount;
use streamfold::stream::{ExpectedVersion, NewEvent, StreamId};
use streamfold::testing::RawClients;
use streamfold_testbed::topic::{TopicConfig, TopicSim};
use streamfold_testbed::Azurite;
use warp::{Filter, Reply};

/// What one run of the CLI did.
struct Run {
    code: i32,
    stdout: String,
    stderr: String,
}

/// Runs `streamfold args` with exactly these settings in its environment, in `dir`.
async fn cli(dir: &Path, settings: &[(String, String)], args: &[&str]) -> Run {
    let output = tokio::process::Command::new(env!("CARGO_BIN_EXE_streamfold"))
        .args(args)
        .env_clear()
        .envs(settings.iter().cloned())
        .current_dir(dir)
        .output()
        .await
        .unwrap();
    let run = Run {
        code: output.status.code().unwrap_or(-1),
        stdout: String::from_utf8(output.stdout).unwrap(),
        stderr: String::from_utf8(output.stderr).unwrap(),
    };
    eprintln!(
        "streamfold {args:?} -> {}\n--- stdout\n{}--- stderr\n{}",
        run.code, run.stdout, run.stderr
    );
    run
}

/// Asserts that `output` contains `part`, showing the whole output when it does not.
#[track_caller]
fn assert_says(output: &str, part: &str) {
    assert!(output.contains(part), "{output}");
}

/// Settings of the backend on Azurite, notifications off unless `extra` turns them on.
fn settings(azurite: &Azurite, backend: &str, extra: &[(String, String)]) -> Vec<(String, String)> {
    let mut all = vec![
        (
            "AzureWebJobsStorage".to_owned(),
            azurite.connection_string(),
        ),
        (
            "ALL.ALL".to_owned(),
            format!("{backend};AzureWebJobsStorage"),
        ),
        (
            "RaiseEntityCreationNotification".to_owned(),
            "false".to_owned(),
        ),
        ("RaiseEventNotification".to_owned(), "false".to_owned()),
    ];
    for (name, value) in extra {
        all.retain(|(n, _)| n != name);
        all.push((name.clone(), value.clone()));
    }
    all
}

fn app(settings: &[(String, String)]) -> App {
    App::from_settings(Settings::from_pairs(settings.to_vec()).unwrap()).unwrap()
}

fn thing(instance: &str) -> StreamId {
    StreamId::new("Ops", "Thing", instance).unwrap()
}

/// Appends `count` events to `stream`, `per_append` at a time.
async fn write(app: &App, stream: &StreamId, count: u64, per_append: u64) {
    let mut written = 0;
    while written < count {
        let n = per_append.min(count - written);
        let events = (0..n)
            .map(|i| {
                NewEvent::new(
                    "Happened",
                    &json!({"n": written + i + 1, "amount": "12.50"}),
                )
                .unwrap()
            })
            .collect();
        app.append(stream, ExpectedVersion::Any, events)
            .await
            .unwrap();
        written += n;
    }
}

async fn table_rows(account: &StorageAccount, table: &str, partition: &str) -> Vec<Value> {
    let mut pages = account
        .table_service_client()
        .unwrap()
        .table_client(table)
        .query()
        .filter(format!("PartitionKey eq '{partition}'"))
        .into_stream::<Value>();
    let mut rows = Vec::new();
    while let Some(page) = pages.next().await {
        rows.extend(page.unwrap().entities);
    }
    rows
}

async fn delete_row(account: &StorageAccount, table: &str, partition: &str, row: &str) {
    account
        .table_service_client()
        .unwrap()
        .table_client(table)
        .partition_key_client(partition)
        .entity_client(row)
        .delete()
        .await
        .unwrap();
}

/// Plants damage on the Table backend: event 2 of `gap` and the id row of event 1 of `no_id`
/// deleted, straight in the table.
async fn plant_table(account: &StorageAccount, gap: &str, no_id: &str) {
    delete_row(
        account,
        "streamfold",
        &format!("Ops|Thing|{gap}"),
        "E-0000000002",
    )
    .await;
    let rows = table_rows(account, "streamfold", &format!("Ops|Thing|{no_id}")).await;
    let first = rows
        .iter()
        .find(|r| r["Sequence"] == json!(1) || r["Sequence"] == json!("1"))
        .and_then(|r| r["RowKey"].as_str().filter(|k| k.starts_with("ID-")))
        .map(str::to_owned);
    let id_row = match first {
        Some(row) => row,
        None => rows
            .iter()
            .filter_map(|r| r["RowKey"].as_str())
            .find(|k| k.starts_with("ID-"))
            .unwrap()
            .to_owned(),
    };
    delete_row(
        account,
        "streamfold",
        &format!("Ops|Thing|{no_id}"),
        &id_row,
    )
    .await;
}

/// Plants damage on the Append Blob backend: the record of event 2 of `gap` cut out of its
/// segment (the blob written again without it), and one id row of `no_id`'s index deleted.
async fn plant_blob(account: &StorageAccount, gap: &str, no_id: &str) {
    let container = account
        .blob_service_client()
        .unwrap()
        .container_client("streamfold");
    let mut names = Vec::new();
    let mut pages = container
        .list_blobs()
        .prefix(format!("Ops/Thing/{gap}/"))
        .into_stream();
    while let Some(page) = pages.next().await {
        names.extend(page.unwrap().blobs.blobs().map(|b| b.name.clone()));
    }
    let segment = names.iter().find(|n| n.ends_with(".jsonl")).unwrap();
    let blob = container.blob_client(segment);
    let content = String::from_utf8(blob.get_content().await.unwrap()).unwrap();
    let kept: String = content
        .split_inclusive('\n')
        .filter(|line| !line.starts_with("{\"sequence\":2,"))
        .collect();
    assert!(
        kept.len() < content.len(),
        "event 2 was in the first segment"
    );
    let metadata = blob.get_metadata().await.unwrap().metadata;
    blob.delete().await.unwrap();
    blob.put_append_blob().metadata(metadata).await.unwrap();
    blob.append_block(kept.into_bytes()).await.unwrap();

    let partition = format!("streamfold|Ops|Thing|{no_id}");
    let rows = table_rows(account, "streamfoldblobids", &partition).await;
    let id_row = rows
        .iter()
        .filter_map(|r| r["RowKey"].as_str())
        .find(|k| k.starts_with("ID-"))
        .expect("the index has rows (more than its interval of events were appended)")
        .to_owned();
    delete_row(account, "streamfoldblobids", &partition, &id_row).await;
}

/// Waits (by checking, not by time) until the blob id index of `stream` has rows.
async fn wait_for_index(account: &StorageAccount, instance: &str) {
    let partition = format!("streamfold|Ops|Thing|{instance}");
    for _ in 0..200 {
        let rows = table_rows(account, "streamfoldblobids", &partition).await;
        if rows
            .iter()
            .any(|r| r["RowKey"].as_str().is_some_and(|k| k.starts_with("ID-")))
        {
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    panic!("the id index of {instance} was never written");
}

async fn verify_finds_planted_damage(backend: &str) {
    let azurite = Azurite::start().await.unwrap();
    let settings = settings(&azurite, backend, &[]);
    let app = app(&settings);
    let account = StorageAccount::from_connection_string(&azurite.connection_string()).unwrap();
    // Past the blob id index's interval (128), so the index has rows to lose.
    for instance in ["healthy", "gap", "noid"] {
        write(&app, &thing(instance), 140, 20).await;
    }
    if backend == "AppendBlob" {
        wait_for_index(&account, "noid").await;
        wait_for_index(&account, "healthy").await;
    }
    let dir = tempfile::tempdir().unwrap();
    let dir = dir.path();
    let healthy = cli(dir, &settings, &["verify", "Ops/Thing/healthy"]).await;
    assert_eq!(healthy.code, 0);
    assert_eq!(healthy.stdout, "", "nothing about a healthy stream");
    let all = cli(dir, &settings, &["verify", "Ops/Thing"]).await;
    assert_eq!(all.code, 0, "nothing planted yet");
    assert_eq!(all.stdout, "");

    match backend {
        "Table" => plant_table(&account, "gap", "noid").await,
        _ => plant_blob(&account, "gap", "noid").await,
    }
    let gap = cli(dir, &settings, &["verify", "Ops/Thing/gap"]).await;
    assert_eq!(gap.code, 1);
    assert_says(&gap.stdout, "Ops/Thing/gap: gap: event 2 is missing");
    let no_id = cli(dir, &settings, &["verify", "Ops/Thing/noid"]).await;
    assert_eq!(no_id.code, 1);
    assert_says(&no_id.stdout, "Ops/Thing/noid: event ");
    assert_says(&no_id.stdout, "has no event-id record");
    let all = cli(dir, &settings, &["verify", "Ops/Thing"]).await;
    assert_eq!(all.code, 1);
    assert_says(&all.stdout, "Ops/Thing/gap: gap: event 2 is missing");
    assert_says(&all.stdout, "Ops/Thing/noid: event ");
    assert!(!all.stdout.contains("healthy"), "{}", all.stdout);
    assert_says(&all.stderr, "3/3 streams");
    let healthy = cli(dir, &settings, &["verify", "Ops/Thing/healthy"]).await;
    assert_eq!((healthy.code, healthy.stdout.as_str()), (0, ""));

    for bad in ["Ops", "Ops/Th-ing", "Ops/Thing/a/b", "Ops/Thing/"] {
        let refused = cli(dir, &settings, &["verify", bad]).await;
        assert_eq!(refused.code, 2, "{bad}");
        assert_says(&refused.stderr, bad);
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn verify_finds_a_planted_gap_and_missing_id_record_on_table() {
    verify_finds_planted_damage("Table").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn verify_finds_a_planted_gap_and_missing_id_record_on_append_blobs() {
    verify_finds_planted_damage("AppendBlob").await;
}

/// `list` names every stream; `dump` writes one JSON object per event with its data as stored;
/// settings come from a local.settings.json too (the environment winning).
#[tokio::test(flavor = "multi_thread")]
async fn list_and_dump_as_ndjson() {
    let azurite = Azurite::start().await.unwrap();
    let settings = settings(&azurite, "Table", &[]);
    let app = app(&settings);
    write(&app, &thing("a"), 3, 2).await;
    write(&app, &thing("b"), 1, 1).await;
    let dir = tempfile::tempdir().unwrap();
    let dir = dir.path();
    let values: HashMap<_, _> = settings.iter().cloned().collect();
    std::fs::write(
        dir.join("local.settings.json"),
        serde_json::to_string(&json!({"IsEncrypted": false, "Values": values})).unwrap(),
    )
    .unwrap();
    // Only the file: the environment is empty.
    let list = cli(dir, &[], &["list", "Ops/Thing"]).await;
    assert_eq!(list.code, 0);
    assert_eq!(list.stdout, "Ops/Thing/a\nOps/Thing/b\n");
    // The environment wins: a storage setting that points nowhere breaks the run.
    let broken = [(
        "AzureWebJobsStorage".to_owned(),
        "not a connection string".to_owned(),
    )];
    assert_eq!(cli(dir, &broken, &["list", "Ops/Thing"]).await.code, 3);

    let dump = cli(dir, &[], &["dump", "Ops/Thing/a"]).await;
    assert_eq!(dump.code, 0);
    let lines: Vec<Value> = dump
        .stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 3);
    for (i, line) in lines.iter().enumerate() {
        assert_eq!(line["stream"], "Ops/Thing/a");
        assert_eq!(line["sequence"], json!(i + 1));
        assert_eq!(line["eventType"], "Happened");
        assert!(line["eventId"].as_str().unwrap().len() == 36);
        assert!(line["time"].as_str().unwrap().ends_with('Z'));
        assert_eq!(line["payload"], json!({"n": i + 1, "amount": "12.50"}));
    }
    let part = cli(
        dir,
        &[],
        &[
            "dump",
            "Ops/Thing/a",
            "--from-sequence",
            "2",
            "--to-sequence",
            "2",
        ],
    )
    .await;
    assert_eq!(part.stdout.lines().count(), 1);
    assert!(part.stdout.contains("\"sequence\":2"));
    assert_eq!(cli(dir, &[], &["dump", "Ops/Thing/none"]).await.code, 1);
    assert_eq!(cli(dir, &[], &["dump", "Ops/Thing"]).await.code, 2);
}

/// Dead letters: the topic refuses a notification for good; `notifications list` shows it,
/// `redrive` publishes it once the topic takes it, `purge` forgets another.
#[tokio::test(flavor = "multi_thread")]
async fn dead_letters_are_listed_redriven_and_purged() {
    let azurite = Azurite::start().await.unwrap();
    let topic = TopicSim::start(TopicConfig::default()).await.unwrap();
    let extra = vec![
        (
            "RaiseEntityCreationNotification".to_owned(),
            "false".to_owned(),
        ),
        ("RaiseEventNotification".to_owned(), "true".to_owned()),
        ("EventGridTopicEndpoint".to_owned(), topic.endpoint()),
        ("EventGridKeyValue".to_owned(), topic.key().to_owned()),
    ];
    let settings = settings(&azurite, "Table", &extra);
    let app = app(&settings);
    topic.refuse_matching("REFUSE-ME", 400);
    for instance in ["one", "two"] {
        let stream = thing(instance);
        let event = NewEvent::new("Happened", &json!({"marker": "REFUSE-ME"})).unwrap();
        app.append(&stream, ExpectedVersion::Any, vec![event])
            .await
            .unwrap();
        app.dispatchers()[0].dispatch(&stream).await.unwrap();
    }
    let dir = tempfile::tempdir().unwrap();
    let dir = dir.path();
    let list = cli(dir, &settings, &["notifications", "list", "--dead"]).await;
    assert_eq!(list.code, 0);
    let letters: Vec<Value> = list
        .stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(letters.len(), 2, "{}", list.stdout);
    let id_of = |instance: &str| {
        letters.iter().find(|l| l["instance"] == instance).unwrap()["id"]
            .as_str()
            .unwrap()
            .to_owned()
    };
    assert!(letters
        .iter()
        .all(|l| l["state"] == "deadLettered" && l["status"] == 400));

    // Purging needs names or --all.
    assert_eq!(
        cli(dir, &settings, &["notifications", "purge", "--dead"])
            .await
            .code,
        2
    );
    let two = id_of("two");
    let purged = cli(
        dir,
        &settings,
        &["notifications", "purge", "--dead", "--id", &two],
    )
    .await;
    assert_eq!(purged.code, 0);
    assert!(purged.stdout.contains(&two));

    // Still refused: kept, exit 1.
    let refused = cli(dir, &settings, &["notifications", "redrive"]).await;
    assert_eq!(refused.code, 1, "a refused redrive is a problem");
    topic.accept_all();
    let before = topic.received().len();
    let redriven = cli(dir, &settings, &["notifications", "redrive"]).await;
    assert_eq!(redriven.code, 0);
    let received = topic.received();
    assert_eq!(received.len(), before + 1);
    assert_eq!(received.last().unwrap()["id"], json!(id_of("one")));
    let after = cli(dir, &settings, &["notifications", "list", "--dead"]).await;
    assert_eq!(after.stdout, "", "nothing is dead-lettered any more");
}

type Received = Arc<Mutex<Vec<Value>>>;

/// A webhook that takes Event Grid deliveries (`aeg-event-type: Notification`) and records
/// every event.
async fn webhook() -> (String, Received) {
    let received: Received = Arc::default();
    let sink = received.clone();
    let route = warp::post()
        .and(warp::header::exact("aeg-event-type", "Notification"))
        .and(warp::body::json())
        .map(move |body: Value| {
            let mut events = sink.lock().unwrap();
            match body {
                Value::Array(items) => events.extend(items),
                other => events.push(other),
            }
            warp::reply().into_response()
        });
    let address = streamfold_testbed::raw::serve_on_free_port(route)
        .await
        .unwrap();
    (format!("http://{address}/api/events"), received)
}

/// A replay of a category from a sequence to a webhook sends each event's notification once,
/// with the ids the app gives them; a replay stopped after two streams (as Ctrl-C stops it)
/// exits 130 with its checkpoint, and `--resume` sends the rest, not the first two again.
#[tokio::test(flavor = "multi_thread")]
async fn replay_to_a_webhook_is_interrupted_and_resumed() {
    let azurite = Azurite::start().await.unwrap();
    let settings = settings(&azurite, "Table", &[]);
    let app = app(&settings);
    for instance in ["s1", "s2", "s3", "s4", "s5"] {
        write(&app, &thing(instance), 4, 2).await;
    }
    let (url, received) = webhook().await;
    let dir = tempfile::tempdir().unwrap();
    let dir = dir.path();
    let args = [
        "replay",
        "Ops/Thing",
        "--from-sequence",
        "3",
        "--to-webhook",
        &url,
    ];
    let first = cli(
        dir,
        &settings,
        &[&args[..], &["--stop-after", "2"]].concat(),
    )
    .await;
    assert_eq!(first.code, 130);
    assert_says(&first.stderr, "--resume");
    let checkpoint = dir.join("streamfold-replay-Ops-Thing.checkpoint.json");
    let saved: Value =
        serde_json::from_str(&std::fs::read_to_string(&checkpoint).unwrap()).unwrap();
    assert_eq!(saved["done"], 2);
    assert_eq!(
        received.lock().unwrap().len(),
        4,
        "events 3 and 4 of two streams"
    );

    // Another run's checkpoint is not resumed.
    let other = cli(
        dir,
        &settings,
        &["replay", "Ops/Thing", "--to-webhook", &url, "--resume"],
    )
    .await;
    assert_eq!(other.code, 3);
    assert_says(&other.stderr, "another run");

    let resumed = cli(dir, &settings, &[&args[..], &["--resume"]].concat()).await;
    assert_eq!(resumed.code, 0);
    assert!(
        !checkpoint.exists(),
        "a finished run removes its checkpoint"
    );
    let events = received.lock().unwrap().clone();
    assert_eq!(
        events.len(),
        10,
        "events 3 and 4 of five streams, each once"
    );
    let mut seen: Vec<(String, u64)> = events
        .iter()
        .map(|e| {
            assert!(e["eventType"].as_str().unwrap().starts_with("Ops.Thing."));
            (
                e["data"]["instance"].as_str().unwrap().to_owned(),
                e["data"]["sequenceNumber"].as_u64().unwrap(),
            )
        })
        .collect();
    seen.sort();
    let expected: Vec<(String, u64)> = (1..=5)
        .flat_map(|s| [(format!("s{s}"), 3), (format!("s{s}"), 4)])
        .collect();
    assert_eq!(seen, expected);
    // The ids are the app's own (deterministic) notification ids.
    let id = streamfold::notify::notification_id(
        &thing("s1"),
        3,
        streamfold::notify::NotificationKind::NewEvent,
    );
    assert!(events.iter().any(|e| e["id"] == json!(id.to_string())));
}

/// A verify of a category stopped part-way resumes from its checkpoint and still reports the
/// problems found before the stop.
#[tokio::test(flavor = "multi_thread")]
async fn verify_of_a_category_resumes_with_earlier_problems() {
    let azurite = Azurite::start().await.unwrap();
    let settings = settings(&azurite, "Table", &[]);
    let app = app(&settings);
    for instance in ["a", "b", "c"] {
        write(&app, &thing(instance), 3, 3).await;
    }
    let account = StorageAccount::from_connection_string(&azurite.connection_string()).unwrap();
    delete_row(&account, "streamfold", "Ops|Thing|a", "E-0000000002").await;
    let dir = tempfile::tempdir().unwrap();
    let dir = dir.path();
    let checkpoint = dir.join("mine.json");
    let checkpoint = checkpoint.to_str().unwrap();
    let first = cli(
        dir,
        &settings,
        &[
            "verify",
            "Ops/Thing",
            "--checkpoint",
            checkpoint,
            "--stop-after",
            "1",
        ],
    )
    .await;
    assert_eq!(first.code, 130);
    let resumed = cli(
        dir,
        &settings,
        &[
            "verify",
            "Ops/Thing",
            "--checkpoint",
            checkpoint,
            "--resume",
        ],
    )
    .await;
    assert_eq!(resumed.code, 1);
    assert_says(&resumed.stdout, "Ops/Thing/a: gap: event 2 is missing");
    assert_says(&resumed.stderr, "3/3 streams");
}

/// `rebuild` recomputes the bank's `account` rows from the streams (the CLI registers the
/// bank), names a stream the projection cannot fold, and exits 1 for it while still writing
/// the other rows.
#[tokio::test(flavor = "multi_thread")]
async fn rebuild_writes_rows_and_names_an_unfoldable_stream() {
    let azurite = Azurite::start().await.unwrap();
    let settings = settings(&azurite, "Table", &[]);
    let app = app(&settings);
    let good = StreamId::new("Bank", "Account", "ACC-R1").unwrap();
    let bad = StreamId::new("Bank", "Account", "ACC-R2").unwrap();
    let opened = || NewEvent::new("AccountOpened", &json!({"overdraftLimit": "100.00"})).unwrap();
    app.append(
        &good,
        ExpectedVersion::Any,
        vec![
            opened(),
            NewEvent::new("MoneyDeposited", &json!({"amount": "25.00"})).unwrap(),
            NewEvent::new("MoneyWithdrawn", &json!({"amount": "5.50"})).unwrap(),
        ],
    )
    .await
    .unwrap();
    app.append(
        &bad,
        ExpectedVersion::Any,
        vec![
            opened(),
            NewEvent::new("MoneyDeposited", &json!({"amount": "not money"})).unwrap(),
        ],
    )
    .await
    .unwrap();
    let dir = tempfile::tempdir().unwrap();

    let unknown = cli(dir.path(), &settings, &["rebuild", "no-such-model"]).await;
    assert_eq!(unknown.code, 2, "an unknown read model is a usage error");
    assert_says(&unknown.stderr, "account");

    let run = cli(
        dir.path(),
        &settings,
        &["rebuild", "account", "--category", "Bank/Account"],
    )
    .await;
    assert_eq!(run.code, 1, "one stream cannot be folded");
    assert!(
        run.stdout.contains("Bank/Account/ACC-R2") && run.stdout.contains("event 2"),
        "the unfoldable stream and its event are named: {}",
        run.stdout
    );
    assert!(!run.stdout.contains("ACC-R1"), "{}", run.stdout);

    let rows = app.read_model_store().unwrap();
    let row = rows
        .load("account", &good)
        .await
        .unwrap()
        .expect("the good stream's row was written");
    assert_eq!(row.checkpoint.sequence, 3);
    assert!(row.checkpoint.failure.is_none());
    let state: Value = serde_json::from_str(row.checkpoint.state.get()).unwrap();
    assert_eq!(state["balance"], json!("19.50"), "{state}");
    let marked = rows
        .load("account", &bad)
        .await
        .unwrap()
        .expect("the unfoldable stream's row is written, marked failed");
    assert_eq!(marked.checkpoint.failure.map(|f| f.sequence), Some(2));
}

/// A replay from a time to an Event Grid topic (its key from the setting `--topic-key-setting`
/// names) sends the notifications of exactly the events recorded at or after that time, each
/// once.
#[tokio::test(flavor = "multi_thread")]
async fn replay_from_a_time_to_a_topic() {
    let azurite = Azurite::start().await.unwrap();
    let topic = TopicSim::start(TopicConfig::default()).await.unwrap();
    let extra = vec![("ReplayTopicKey".to_owned(), topic.key().to_owned())];
    let settings = settings(&azurite, "Table", &extra);
    let app = app(&settings);
    for instance in ["t1", "t2"] {
        write(&app, &thing(instance), 2, 2).await;
    }
    // Clear of the earlier events' recorded times on this machine's clock.
    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    let from = time::OffsetDateTime::now_utc()
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap();
    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    for instance in ["t1", "t2"] {
        write(&app, &thing(instance), 3, 1).await;
    }
    let dir = tempfile::tempdir().unwrap();
    let endpoint = topic.endpoint();
    let run = cli(
        dir.path(),
        &settings,
        &[
            "replay",
            "Ops/Thing",
            "--from-time",
            &from,
            "--to-topic",
            &endpoint,
            "--topic-key-setting",
            "ReplayTopicKey",
        ],
    )
    .await;
    assert_eq!(run.code, 0);
    let mut seen: Vec<(String, u64)> = topic
        .received()
        .iter()
        .map(|e| {
            (
                e["data"]["instance"].as_str().unwrap().to_owned(),
                e["data"]["sequenceNumber"].as_u64().unwrap(),
            )
        })
        .collect();
    seen.sort();
    let expected: Vec<(String, u64)> = ["t1", "t2"]
        .iter()
        .flat_map(|s| (3..=5).map(move |n| (s.to_string(), n)))
        .collect();
    assert_eq!(seen, expected, "events 3 to 5 of each stream, once");

    let bad = cli(
        dir.path(),
        &settings,
        &[
            "replay",
            "Ops/Thing",
            "--from-time",
            "yesterday",
            "--to-topic",
            &endpoint,
        ],
    )
    .await;
    assert_eq!(bad.code, 2, "a time that is not RFC 3339 is a usage error");
}
