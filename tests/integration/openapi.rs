//! The OpenAPI document (the library's merged with the bank's part) lists exactly the routes
//! and methods of the function.json files, is valid OpenAPI (checked by a real validator), and
//! is what the app serves.

use crate::support;

use std::collections::BTreeSet;
use std::process::Command;

use serde_json::Value;
use support::{repo_root, TestApp};

/// Route templates that are not API operations (the catch-all answering unknown routes).
const NOT_DOCUMENTED: &[&str] = &["{*path}"];

fn functions_routes() -> BTreeSet<(String, String)> {
    let mut routes = BTreeSet::new();
    for entry in std::fs::read_dir(repo_root().join("functions")).unwrap() {
        let path = entry.unwrap().path().join("function.json");
        let function: Value =
            serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
        for binding in function["bindings"].as_array().unwrap() {
            if binding["type"] != "httpTrigger" {
                continue;
            }
            let route = binding["route"].as_str().unwrap();
            if NOT_DOCUMENTED.contains(&route) {
                continue;
            }
            // An optional last parameter (`{name?}`) is two paths in OpenAPI: with and without.
            let paths = match route.rsplit_once('/') {
                Some((head, last)) if last.starts_with('{') && last.ends_with("?}") => vec![
                    format!("/api/{head}"),
                    format!("/api/{head}/{{{}}}", &last[1..last.len() - 2]),
                ],
                _ => vec![format!("/api/{route}")],
            };
            for method in binding["methods"].as_array().unwrap() {
                for path in &paths {
                    routes.insert((path.clone(), method.as_str().unwrap().to_lowercase()));
                }
            }
        }
    }
    routes
}

/// The app's document: the library's (`src/functions/openapi.json`) merged with the bank's
/// part (`src/bank/openapi.json`).
fn document() -> Value {
    let bank: Value = serde_json::from_str(
        &std::fs::read_to_string(repo_root().join("src/bank/openapi.json")).unwrap(),
    )
    .unwrap();
    streamfold::functions::domain::merge_openapi([&bank]).unwrap()
}

#[test]
fn the_document_lists_exactly_the_http_functions() {
    let mut documented = BTreeSet::new();
    for (path, item) in document()["paths"].as_object().unwrap() {
        for method in item.as_object().unwrap().keys() {
            documented.insert((path.clone(), method.clone()));
        }
    }
    assert_eq!(documented, functions_routes());
}

#[test]
fn the_document_is_valid_openapi() {
    let dir = tempfile::tempdir().unwrap();
    let merged = dir.path().join("openapi.json");
    std::fs::write(&merged, serde_json::to_vec(&document()).unwrap()).unwrap();
    let python = std::env::var("STREAMFOLD_PYTHON").expect(
        "STREAMFOLD_PYTHON must name a Python with openapi-spec-validator (scripts/test.sh sets it)",
    );
    let output = Command::new(python)
        .args([
            "-c",
            "import sys\nfrom openapi_spec_validator import validate\nfrom openapi_spec_validator.readers import read_from_filename\nd, _ = read_from_filename(sys.argv[1])\nvalidate(d)\nprint('valid')",
        ])
        .arg(&merged)
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "validator: {}",
        String::from_utf8_lossy(&output.stderr)
    );
}

#[tokio::test]
async fn the_app_serves_the_document() {
    let app = TestApp::start().await;
    let served = app.client.get("/api/openapi.json").await;
    assert_eq!(served.ok(200), &document());
}
