//! The inventory app end to end: assembled as a Functions app (host.json, the library's
//! function folders, the inventory's, the `inventory` binary as the handler) and run under the
//! host simulator against a real Azurite.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde_json::{json, Value};
use streamfold::app::App;
use streamfold::config::Settings;
use streamfold::functions::routing::RouteKind;
use streamfold_testbed::hostsim::{HostConfig, HostSim};
use streamfold_testbed::Azurite;

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// Every function folder of the app: the library's (in the repository's `functions/`) and
/// the inventory's own.
fn function_folders() -> Vec<PathBuf> {
    let library = streamfold::functions::routes(Arc::new(App::in_memory(
        Settings::from_pairs(Vec::new()).unwrap(),
    )));
    let mut folders: Vec<PathBuf> = library
        .table()
        .unwrap()
        .routes()
        .iter()
        .filter(|r| r.kind() != RouteKind::Readiness)
        .map(|r| repo_root().join("functions").join(r.function()))
        .collect();
    for entry in std::fs::read_dir(Path::new(env!("CARGO_MANIFEST_DIR")).join("functions")).unwrap()
    {
        folders.push(entry.unwrap().path());
    }
    folders
}

fn app_functions() -> streamfold::functions::Functions {
    let mut app = App::in_memory(Settings::from_pairs(Vec::new()).unwrap());
    streamfold_inventory::register(&mut app).unwrap();
    let app = Arc::new(app);
    let api = streamfold_inventory::api(app.clone()).unwrap();
    streamfold::functions::app_functions(app, vec![api]).unwrap()
}

/// (function, route) of every HTTP function, as the function.json files and the route table
/// say.
#[test]
fn the_route_table_is_the_function_json_files() {
    let mut files = BTreeSet::new();
    for folder in function_folders() {
        let text = std::fs::read_to_string(folder.join("function.json")).unwrap();
        let json: Value = serde_json::from_str(&text).unwrap();
        let name = folder.file_name().unwrap().to_str().unwrap().to_owned();
        let route = json["bindings"][0]["route"]
            .as_str()
            .map_or(name.clone(), str::to_owned);
        files.insert((name, route));
    }
    let table: BTreeSet<(String, String)> = app_functions()
        .table()
        .unwrap()
        .routes()
        .iter()
        .filter(|r| r.kind() != RouteKind::Readiness)
        .map(|r| (r.function().to_owned(), r.template().to_owned()))
        .collect();
    assert_eq!(files, table);
}

struct InventoryApp {
    _azurite: Azurite,
    host: HostSim,
    _dir: tempfile::TempDir,
    http: reqwest::Client,
}

impl InventoryApp {
    async fn start() -> Self {
        let azurite = Azurite::start().await.unwrap();
        let dir = tempfile::tempdir().unwrap();
        let app_dir = dir.path().join("app");
        // Packaged as a user packages their app: the library's folders and the inventory's.
        let assembled = std::process::Command::new("bash")
            .arg(repo_root().join("scripts/assemble.sh"))
            .arg("--binary")
            .arg(env!("CARGO_BIN_EXE_inventory"))
            .arg("--functions")
            .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("functions"))
            .arg(&app_dir)
            .output()
            .unwrap();
        assert!(
            assembled.status.success(),
            "{}",
            String::from_utf8_lossy(&assembled.stderr)
        );
        let mut packaged: Vec<String> = std::fs::read_dir(&app_dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .filter(|name| name != "host.json" && name != "handler")
            .collect();
        packaged.sort();
        let mut expected: Vec<String> = function_folders()
            .iter()
            .map(|f| f.file_name().unwrap().to_str().unwrap().to_owned())
            .collect();
        expected.sort();
        assert_eq!(packaged, expected);
        let mut config = HostConfig::new(&app_dir);
        config.settings = vec![
            ("AzureWebJobsStorage".into(), azurite.connection_string()),
            ("RaiseEntityCreationNotification".into(), "false".into()),
            ("RaiseEventNotification".into(), "false".into()),
            ("RUST_LOG".into(), "warn".into()),
        ];
        config.run_timers = false;
        let host = HostSim::start(config).await.unwrap();
        Self {
            _azurite: azurite,
            host,
            _dir: dir,
            http: reqwest::Client::new(),
        }
    }

    async fn send(&self, method: &str, path: &str, body: Option<Value>) -> (u16, Value) {
        let url = format!("{}{path}", self.host.base_url());
        let request = match method {
            "POST" => self.http.post(url).json(&body.unwrap_or(json!({}))),
            _ => self.http.get(url),
        };
        let response = request.send().await.unwrap();
        let status = response.status().as_u16();
        (status, response.json().await.unwrap_or(Value::Null))
    }
}

#[tokio::test]
async fn items_are_received_reserved_shipped_and_classified() {
    let app = InventoryApp::start().await;
    let qty = |n: u64| Some(json!({ "quantity": n }));

    let (status, body) = app.send("POST", "/api/ReserveStock/SKU-1", qty(1)).await;
    assert_eq!(
        (status, body["type"].as_str()),
        (404, Some("urn:streamfold:problem:item-not-found"))
    );

    let (status, body) = app.send("POST", "/api/ReceiveStock/SKU-1", qty(12)).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["available"], 12);
    assert_eq!(body["lowStock"], false);

    let (status, body) = app.send("POST", "/api/reservestock/SKU-1", qty(5)).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        (body["available"].as_u64(), body["lowStock"].as_bool()),
        (Some(7), Some(true))
    );

    let (status, body) = app.send("POST", "/api/ReserveStock/SKU-1", qty(8)).await;
    assert_eq!(status, 422, "{body}");
    assert_eq!(body["type"], "urn:streamfold:problem:insufficient-stock");
    assert_eq!(body["available"], 7);

    let (status, body) = app.send("POST", "/api/ShipStock/SKU-1", qty(0)).await;
    assert_eq!(
        (status, body["type"].as_str()),
        (400, Some("urn:streamfold:problem:invalid-quantity"))
    );
    let (status, _) = app
        .send("POST", "/api/ShipStock/SKU-1", Some(json!({"qty": 1})))
        .await;
    assert_eq!(status, 400);

    let (status, body) = app.send("POST", "/api/ShipStock/SKU-1", qty(5)).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        (body["onHand"].as_u64(), body["reserved"].as_u64()),
        (Some(7), Some(0))
    );

    let (status, body) = app.send("GET", "/api/GetItem/SKU-1", None).await;
    assert_eq!((status, body["sequence"].as_u64()), (200, Some(3)));

    // The classification and the projection through the library's generic API.
    let (status, body) = app
        .send(
            "GET",
            "/api/projections/Inventory/Item/SKU-1/low-stock",
            None,
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let (status, body) = app
        .send(
            "GET",
            "/api/projections/Inventory/Item/SKU-1/item?asOfSequence=1",
            None,
        )
        .await;
    assert_eq!(
        (status, body["state"]["onHand"].as_u64()),
        (200, Some(12)),
        "{body}"
    );

    // The read model, rebuilt from the streams, filtered by the classification.
    let (status, _) = app.send("POST", "/api/ReceiveStock/SKU-2", qty(50)).await;
    assert_eq!(status, 200);
    let (status, body) = app.send("POST", "/api/RebuildItems", None).await;
    assert_eq!(status, 200, "{body}");
    let (status, body) = app.send("GET", "/api/Items?lowStock=true", None).await;
    assert_eq!(status, 200, "{body}");
    let skus: Vec<&str> = body["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["sku"].as_str().unwrap())
        .collect();
    assert_eq!(skus, ["SKU-1"]);

    // The app's document is the library's with the inventory's part, and nothing of the bank.
    let (status, document) = app.send("GET", "/api/openapi.json", None).await;
    assert_eq!(status, 200);
    let paths = document["paths"].as_object().unwrap();
    assert!(paths.contains_key("/api/ReceiveStock/{sku}"));
    assert!(paths.contains_key("/api/streams/{domain}/{entity}/{instance}"));
    assert!(!paths.keys().any(|p| p.contains("Account")));
}

/// The inventory's functions served in memory (no host, no Azurite): what its handlers read
/// from a request through the library's `Request`.
async fn serve_in_memory() -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(streamfold::functions::serve(
        listener,
        app_functions(),
        std::future::pending(),
    ));
    base
}

/// A keyed command lands once: its retry answers the same with `Idempotent-Replayed`, the key
/// with another quantity is refused; a malformed key and a malformed query parameter are 400
/// problems naming what is wrong.
#[tokio::test]
async fn keyed_commands_replay_and_bad_query_parameters_are_named() {
    let base = serve_in_memory().await;
    let http = reqwest::Client::new();
    let receive = |key: &str, quantity: u64| {
        http.post(format!("{base}/api/ReceiveStock/SKU-9"))
            .header("idempotency-key", key)
            .json(&json!({ "quantity": quantity }))
            .send()
    };
    let first = receive("\"r-1\"", 4).await.unwrap();
    assert_eq!(first.status(), 200);
    assert!(first.headers().get("idempotent-replayed").is_none());
    let first: Value = first.json().await.unwrap();
    let again = receive("\"r-1\"", 4).await.unwrap();
    assert_eq!(again.status(), 200);
    assert_eq!(again.headers()["idempotent-replayed"], "true");
    assert_eq!(again.json::<Value>().await.unwrap(), first);
    assert_eq!(first["onHand"], 4);

    let reused: Value = receive("\"r-1\"", 5).await.unwrap().json().await.unwrap();
    assert_eq!(
        reused["type"],
        "urn:streamfold:problem:idempotency-key-reused"
    );
    let malformed = receive("r-2", 1).await.unwrap();
    assert_eq!(malformed.status(), 400);
    let malformed: Value = malformed.json().await.unwrap();
    assert_eq!(
        malformed["type"],
        "urn:streamfold:problem:invalid-idempotency-key"
    );

    for (query, slug, parameter) in [
        ("lowStock=maybe", "invalid-query-parameter", "lowStock"),
        ("lowStok=true", "unknown-query-parameter", "lowStok"),
        (
            "lowStock=true&LOWSTOCK=false",
            "duplicate-query-parameter",
            "LOWSTOCK",
        ),
    ] {
        let answer = http
            .get(format!("{base}/api/Items?{query}"))
            .send()
            .await
            .unwrap();
        assert_eq!(answer.status(), 400, "{query}");
        let problem: Value = answer.json().await.unwrap();
        assert_eq!(
            problem["type"],
            format!("urn:streamfold:problem:{slug}"),
            "{query}"
        );
        assert_eq!(problem["parameter"], parameter, "{query}");
    }
    let (status, body) = {
        let answer = http
            .get(format!("{base}/api/GetItem/SKU-9"))
            .send()
            .await
            .unwrap();
        (answer.status(), answer.json::<Value>().await.unwrap())
    };
    assert_eq!((status.as_u16(), body["sequence"].as_u64()), (200, Some(1)));
}
