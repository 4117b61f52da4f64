//! The host simulator against the echo-handler (testbed/src/bin/echo-handler.rs): forwarding,
//! routes and methods, the JSON payload, the Event Grid webhook, the admin endpoint, timers,
//! readiness polling, restarts, graceful shutdown and refusals.

mod common;

use std::collections::BTreeSet;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::time::Duration;

use serde_json::{json, Value};
use streamfold_testbed::hostsim::{HandlerState, HostConfig, HostSim, TriggerValueEncoding};

use common::{client, received, received_at, stage_echo, write, WAIT};

/// An app dir with the echo-handler as `handler` and a set of functions, staged from a
/// template the way streamfold's tests stage the real app.
fn app_dir(forwarding: bool) -> tempfile::TempDir {
    let template = tempfile::tempdir().unwrap();
    let root = template.path();
    write(
        &root.join("host.json"),
        &json!({
            "version": "2.0",
            "customHandler": {
                "description": {"defaultExecutablePath": "handler", "workingDirectory": "", "arguments": []},
                "enableForwardingHttpRequest": forwarding
            },
            "extensions": {"http": {"routePrefix": "api"}}
        })
        .to_string(),
    );
    write(
        &root.join("local.settings.json"),
        r#"{"IsEncrypted":false,"Values":{"FUNCTIONS_WORKER_RUNTIME":"custom","ECHO_SETTING":"from-local"}}"#,
    );
    let http_out = r#"{"type":"http","direction":"out","name":"res"}"#;
    write(
        &root.join("Echo/function.json"),
        &format!(
            r#"{{"bindings":[{{"type":"httpTrigger","direction":"in","name":"req","authLevel":"function"}},{http_out}]}}"#
        ),
    );
    write(
        &root.join("Items/function.json"),
        &format!(
            r#"{{"bindings":[{{"type":"httpTrigger","direction":"in","name":"req","methods":["get"],"route":"items/{{id:int}}/{{name?}}"}},{http_out}]}}"#
        ),
    );
    write(
        &root.join("Payload/function.json"),
        &format!(
            r#"{{"bindings":[{{"type":"httpTrigger","direction":"in","name":"req","methods":["post"],"route":"payload/{{id}}"}},{http_out},{{"type":"queue","direction":"out","name":"msg","queueName":"q"}}]}}"#
        ),
    );
    write(
        &root.join("Projector/function.json"),
        r#"{"bindings":[{"type":"eventGridTrigger","direction":"in","name":"event"}]}"#,
    );
    write(
        &root.join("Tick/function.json"),
        r#"{"bindings":[{"type":"timerTrigger","direction":"in","name":"timer","schedule":"0 0 0 1 1 *"}]}"#,
    );
    write(
        &root.join("Fast/function.json"),
        r#"{"bindings":[{"type":"timerTrigger","direction":"in","name":"timer","schedule":"*/1 * * * * *"}]}"#,
    );
    write(
        &root.join("nested/Deep/function.json"),
        r#"{"bindings":[{"type":"eventGridTrigger","direction":"in","name":"event"}]}"#,
    );
    stage_echo(root)
}

fn config(dir: &Path) -> HostConfig {
    let mut config = HostConfig::new(dir).setting("ECHO_SETTING", "from-config");
    config.run_timers = false;
    config.log_prefix = Some("[echo] ".into());
    config
}

/// The host simulator on a fresh [`app_dir`] with the test [`config`] (and the app's folder,
/// which must outlive it).
async fn start(forwarding: bool) -> (tempfile::TempDir, HostSim) {
    let dir = app_dir(forwarding);
    let host = HostSim::start(config(dir.path())).await.unwrap();
    (dir, host)
}

/// The JSON payload a received invocation carried.
fn payload(received: &Value) -> Value {
    serde_json::from_str(received["body"].as_str().unwrap()).unwrap()
}

#[tokio::test]
async fn forwards_http_requests_as_the_host_does() {
    let (_dir, host) = start(true).await;
    let response = client()
        .post(format!("{}/api/Echo?a=1&b=x%20y&A=2", host.base_url()))
        .header("x-custom", "v")
        .header("user-agent", "test-client/1")
        .header("content-type", "text/plain")
        .header("x-echo-status", "201")
        .body("hello")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 201);
    assert_eq!(response.headers()["x-echo"], "forwarded");
    let echo: Value = response.json().await.unwrap();
    assert_eq!(echo["method"], "POST");
    assert_eq!(echo["path"], "/api/Echo");
    assert_eq!(echo["query"], "a=1%2C2&b=x%20y");
    assert_eq!(echo["body"], "hello");
    let headers = &echo["headers"];
    assert_eq!(headers["x-custom"], json!(["v"]));
    assert_eq!(headers["content-type"], json!(["text/plain"]));
    assert_eq!(headers["content-length"], json!(["5"]));
    assert_eq!(
        headers["user-agent"],
        json!(["test-client/1 Azure-Functions-Host/4.0.0.0"])
    );
    assert_eq!(headers["x-azure-functions-hostversion"], json!(["4.0.0.0"]));
    // The original Host header is kept, as the host's HttpClient sends the copied one.
    assert_eq!(
        headers["host"],
        json!([format!("127.0.0.1:{}", host.port())])
    );
    let first_id = headers["x-azure-functions-invocationid"][0]
        .as_str()
        .unwrap();
    uuid::Uuid::parse_str(first_id).unwrap();

    // A GET without a body: no body, no content headers; a new invocation id; path case kept.
    let echo: Value = client()
        .get(format!("{}/API/echo/", host.base_url()))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(echo["method"], "GET");
    assert_eq!(echo["path"], "/API/echo/");
    assert_eq!(echo["query"], Value::Null);
    assert_eq!(echo["body"], "");
    assert!(echo["headers"].get("content-length").is_none());
    assert!(echo["headers"].get("content-type").is_none());
    assert_eq!(
        echo["headers"]["user-agent"],
        json!(["Azure-Functions-Host/4.0.0.0"])
    );
    assert_ne!(
        echo["headers"]["x-azure-functions-invocationid"][0],
        first_id
    );
    let records = host.wait_for_invocations("Echo", 2, WAIT).await.unwrap();
    assert!(records.iter().all(|r| r.succeeded && r.reason == "http"));
    assert_eq!(records[0].status, Some(201));
}

#[tokio::test]
async fn routes_templates_methods_and_constraints() {
    let (_dir, host) = start(true).await;
    let base = host.base_url();
    let get = |path: &str| client().get(format!("{base}{path}")).send();
    assert_eq!(get("/api/items/5").await.unwrap().status(), 200);
    assert_eq!(get("/api/items/5/bob").await.unwrap().status(), 200);
    // The int constraint, a missing required parameter, an unknown route: 404.
    assert_eq!(get("/api/items/abc").await.unwrap().status(), 404);
    assert_eq!(get("/api/items").await.unwrap().status(), 404);
    assert_eq!(get("/api/nothing").await.unwrap().status(), 404);
    assert_eq!(get("/Echo").await.unwrap().status(), 404, "no route prefix");
    // A known route with a method it doesn't accept: 404, as in the host (no 405).
    let post = client()
        .post(format!("{base}/api/items/5"))
        .send()
        .await
        .unwrap();
    assert_eq!(post.status(), 404);
    // The host's root answers.
    assert_eq!(get("/").await.unwrap().status(), 200);
    let forwarded: Vec<String> = received(&host)
        .await
        .iter()
        .map(|r| {
            format!(
                "{} {}",
                r["method"].as_str().unwrap(),
                r["path"].as_str().unwrap()
            )
        })
        .collect();
    assert_eq!(forwarded, ["GET /api/items/5", "GET /api/items/5/bob"]);
    let names: Vec<&str> = host
        .app()
        .functions
        .iter()
        .map(|f| f.name.as_str())
        .collect();
    assert_eq!(
        names,
        ["Echo", "Fast", "Items", "Payload", "Projector", "Tick"]
    );
}

#[tokio::test]
async fn literals_match_ignoring_case_and_the_original_path_is_forwarded() {
    let (_dir, host) = start(true).await;
    let base = host.base_url();
    let get = |path: &str| client().get(format!("{base}{path}")).send();
    for path in ["/API/ITEMS/5/Bob", "/api/Items/5/", "/Api/%69tems/7"] {
        let echo: Value = get(path).await.unwrap().json().await.unwrap();
        assert_eq!(echo["path"], path, "forwarded as it came");
    }
    // As ASP.NET splits paths: an empty segment matches no template, and case is compared as
    // .NET's OrdinalIgnoreCase compares it (the dotless i is not an i).
    for path in [
        "/api//items/5",
        "/api/items/5//",
        "//api/items/5",
        "/api/%C4%B1tems/5",
    ] {
        assert_eq!(get(path).await.unwrap().status(), 404, "{path}");
    }
    let forwarded: Vec<String> = received(&host)
        .await
        .iter()
        .map(|r| r["path"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(
        forwarded,
        ["/API/ITEMS/5/Bob", "/api/Items/5/", "/Api/%69tems/7"]
    );
}

#[tokio::test]
async fn a_catch_all_route_yields_to_more_specific_ones_whatever_the_names() {
    let dir = app_dir(true);
    // "AllElse" comes before "Items" by name; the host still tries `items/...` first.
    write(
        &dir.path().join("AllElse/function.json"),
        r#"{"bindings":[{"type":"httpTrigger","direction":"in","name":"req","route":"{*path}"},{"type":"http","direction":"out","name":"res"}]}"#,
    );
    let host = HostSim::start(config(dir.path())).await.unwrap();
    let base = host.base_url();
    for path in ["/api/items/5", "/api/nothing/at/all", "/api/items/abc"] {
        let status = client()
            .get(format!("{base}{path}"))
            .send()
            .await
            .unwrap()
            .status();
        assert_eq!(status, 200, "{path}");
    }
    let invoked: Vec<String> = host
        .invocations()
        .iter()
        .map(|i| i.function.clone())
        .collect();
    assert_eq!(invoked, ["Items", "AllElse", "AllElse"]);
}

#[tokio::test]
async fn other_http_functions_get_the_json_invocation_payload() {
    let (_dir, host) = start(true).await;
    let response = client()
        .post(format!("{}/api/payload/42?x=1&x=2", host.base_url()))
        .header("content-type", "application/json")
        .body(r#"{"k":1}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["x-echo"], "payload");
    let echo: Value = serde_json::from_str(&response.text().await.unwrap()).unwrap();
    assert_eq!(echo["method"], "POST");
    assert_eq!(echo["path"], "/Payload");
    assert_eq!(
        echo["headers"]["user-agent"],
        json!(["Azure-Functions-Host/4.0.0.0"])
    );
    let sent = payload(&echo);
    let req = &sent["Data"]["req"];
    assert_eq!(req["Method"], "POST");
    assert_eq!(req["Params"]["id"], "42");
    assert_eq!(req["Query"]["x"], "1,2");
    assert_eq!(req["Body"], r#"{"k":1}"#);
    assert_eq!(req["Headers"]["content-type"], json!(["application/json"]));
    assert!(req["Url"]
        .as_str()
        .unwrap()
        .ends_with("/api/payload/42?x=1&x=2"));
    assert_eq!(sent["Metadata"]["id"], "42");
    assert_eq!(sent["Metadata"]["sys"]["MethodName"], "Payload");
    uuid::Uuid::parse_str(sent["Metadata"]["sys"]["RandGuid"].as_str().unwrap()).unwrap();
    let records = host.wait_for_invocations("Payload", 1, WAIT).await.unwrap();
    assert_eq!(records[0].logs, ["echo Payload"]);
    drop(host);

    // With forwarding off, even a plain HTTP-in/HTTP-out function gets the payload.
    let (_dir, host) = start(false).await;
    let response = client()
        .get(format!("{}/api/Echo", host.base_url()))
        .send()
        .await
        .unwrap();
    assert_eq!(response.headers()["x-echo"], "payload");
    let echo: Value = serde_json::from_str(&response.text().await.unwrap()).unwrap();
    assert_eq!(echo["path"], "/Echo");
    assert_eq!(payload(&echo)["Data"]["req"]["Method"], "GET");
    assert!(payload(&echo)["Data"]["req"].get("Body").is_none());
}

fn webhook(host: &HostSim, function: &str) -> String {
    format!(
        "{}/runtime/webhooks/EventGrid?functionName={function}",
        host.base_url()
    )
}

/// Posts `body` to the host's Event Grid webhook for `Projector`, as a message of `kind`
/// (the `aeg-event-type` header).
async fn deliver(host: &HostSim, kind: &str, body: &Value) -> reqwest::Response {
    client()
        .post(webhook(host, "Projector"))
        .header("aeg-event-type", kind)
        .json(body)
        .send()
        .await
        .unwrap()
}

#[tokio::test]
async fn event_grid_delivers_one_invocation_per_event() {
    let (_dir, host) = start(true).await;
    let events = json!([
        {"id":"e1","topic":"/t","subject":"s/1","eventType":"Bank.Account.NewEvent","eventTime":"2024-05-01T10:00:00Z","data":{"instanceKey":"1"},"dataVersion":"1.0","metadataVersion":"1"},
        {"id":"e2","topic":"/t","subject":"s/2","eventType":"Bank.Account.NewEvent","eventTime":"2024-05-01T10:00:01Z","data":{"instanceKey":"2"},"dataVersion":"1.0","metadataVersion":"1"},
        {"specversion":"1.0","id":"c1","source":"/t","type":"Bank.Account.NewEvent","time":"2024-05-01T10:00:02Z","subject":"s/3","datacontenttype":"application/json","data":{"instanceKey":"3"}}
    ]);
    let response = deliver(&host, "Notification", &events).await;
    assert_eq!(response.status(), 202);
    let invocations = received_at(&host, "/Projector").await;
    assert_eq!(invocations.len(), 3);
    let ids: BTreeSet<String> = invocations
        .iter()
        .map(|r| {
            payload(r)["Data"]["event"]["id"]
                .as_str()
                .unwrap()
                .to_string()
        })
        .collect();
    assert_eq!(ids, BTreeSet::from(["e1".into(), "e2".into(), "c1".into()]));
    for r in &invocations {
        let sent = payload(r);
        assert_eq!(sent["Metadata"]["data"], sent["Data"]["event"]["data"]);
        assert_eq!(sent["Metadata"]["sys"]["MethodName"], "Projector");
    }

    // A single event (not an array), on the lower-case path.
    let response = client()
        .post(format!(
            "{}/runtime/webhooks/eventgrid?functionName=Projector",
            host.base_url()
        ))
        .header("aeg-event-type", "notification")
        .json(&events[0])
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 202);
    assert_eq!(received_at(&host, "/Projector").await.len(), 4);

    // One failing event fails the batch (500), though the others ran.
    let batch = json!([{"id":"ok","data":{}}, {"id":"bad","data":{"fail":true}}]);
    let response = deliver(&host, "Notification", &batch).await;
    assert_eq!(response.status(), 500);
    assert_eq!(received_at(&host, "/Projector").await.len(), 6);
    let records = host
        .wait_for_invocations("Projector", 6, WAIT)
        .await
        .unwrap();
    let failed: Vec<_> = records.iter().filter(|r| !r.succeeded).collect();
    assert_eq!(failed.len(), 1);
    assert_eq!(failed[0].status, Some(500));
    assert!(
        failed[0].logs.is_empty(),
        "the host drops the Logs of a failure"
    );
}

#[tokio::test]
async fn event_grid_refusals_and_handshakes() {
    let (_dir, host) = start(true).await;
    let event = json!([{"id":"e1","data":{}}]);
    let send = |url: String, event_type: Option<&'static str>| {
        let mut request = client().post(url).json(&event);
        if let Some(t) = event_type {
            request = request.header("aeg-event-type", t);
        }
        request.send()
    };
    // Missing aeg-event-type: 400.
    assert_eq!(
        send(webhook(&host, "Projector"), None)
            .await
            .unwrap()
            .status(),
        400
    );
    // Unknown function, a nested (not loaded) one, wrong case, a non-Event-Grid one: 404.
    for name in ["Nope", "Deep", "projector", "Tick"] {
        let response = send(webhook(&host, name), Some("Notification"))
            .await
            .unwrap();
        assert_eq!(response.status(), 404, "{name}");
    }
    // Unsubscribe: 202 without invoking.
    assert_eq!(
        send(webhook(&host, "Projector"), Some("Unsubscribe"))
            .await
            .unwrap()
            .status(),
        202
    );
    // Event Grid schema handshake: answered by the host.
    let validation = json!([{
        "id":"v1","topic":"/t","subject":"","eventType":"Microsoft.EventGrid.SubscriptionValidationEvent",
        "eventTime":"2024-05-01T10:00:00Z","data":{"validationCode":"512d38b6-c7b8-40c8-89fe-f46f9e9622b6","validationUrl":"https://x"},
        "dataVersion":"2","metadataVersion":"1"
    }]);
    let response = deliver(&host, "SubscriptionValidation", &validation).await;
    assert_eq!(response.status(), 200);
    let body: Value = response.json().await.unwrap();
    assert_eq!(
        body,
        json!({"validationResponse": "512d38b6-c7b8-40c8-89fe-f46f9e9622b6"})
    );
    // CloudEvents abuse-protection handshake.
    let response = client()
        .request(reqwest::Method::OPTIONS, webhook(&host, "Projector"))
        .header("WebHook-Request-Origin", "eventgrid.azure.net")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(
        response.headers()["webhook-allowed-origin"],
        "eventgrid.azure.net"
    );
    // None of these reached the handler.
    assert!(received_at(&host, "/Projector").await.is_empty());
    assert!(host.invocations().is_empty());
}

#[tokio::test]
async fn event_grid_events_can_arrive_as_json_strings() {
    let dir = app_dir(true);
    let mut config = config(dir.path());
    config.trigger_value_encoding = TriggerValueEncoding::JsonString;
    let host = HostSim::start(config).await.unwrap();
    let response = deliver(
        &host,
        "Notification",
        &json!([{"id":"s1","data":{"fail":true}}]),
    )
    .await;
    // The echo-handler looks inside the string and fails the invocation as asked.
    assert_eq!(response.status(), 500);
    let sent = payload(&received_at(&host, "/Projector").await[0]);
    let text = sent["Data"]["event"].as_str().expect("a string");
    let event: Value = serde_json::from_str(text).unwrap();
    assert_eq!(event["id"], "s1");
}

#[tokio::test]
async fn admin_endpoint_invokes_non_http_functions() {
    let (_dir, host) = start(true).await;
    let admin = |name: &str| format!("{}/admin/functions/{name}", host.base_url());
    let response = client()
        .post(admin("Tick"))
        .json(&json!({"input": ""}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 202);
    let records = host.wait_for_invocations("Tick", 1, WAIT).await.unwrap();
    assert!(records[0].succeeded);
    assert_eq!(records[0].reason, "admin");
    let sent = payload(&received_at(&host, "/Tick").await[0]);
    let timer = &sent["Data"]["timer"];
    assert_eq!(timer["Schedule"]["AdjustForDST"], true);
    assert_eq!(timer["IsPastDue"], false);
    assert!(timer["ScheduleStatus"]["Next"]
        .as_str()
        .unwrap()
        .contains("-01-01T00:00:00"));

    // An Event Grid function, with the event as input.
    let response = client()
        .post(admin("projector"))
        .json(&json!({"input": r#"{"id":"a1","data":{"n":1}}"#}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 202);
    host.wait_for_invocations("Projector", 1, WAIT)
        .await
        .unwrap();
    let sent = payload(&received_at(&host, "/Projector").await[0]);
    assert_eq!(sent["Data"]["event"]["id"], "a1");

    // Refusals.
    let status = |name: &'static str, body: Option<Value>| {
        let mut request = client().post(admin(name));
        if let Some(body) = body {
            request = request.json(&body);
        }
        async move { request.send().await.unwrap().status() }
    };
    assert_eq!(status("Nope", Some(json!({"input": ""}))).await, 404);
    assert_eq!(status("Tick", None).await, 400);
    assert_eq!(status("Echo", Some(json!({"input": ""}))).await, 400);
}

#[tokio::test]
async fn timers_fire_on_their_schedule() {
    let dir = app_dir(true);
    let mut config = config(dir.path());
    config.run_timers = true;
    let host = HostSim::start(config).await.unwrap();
    let records = host.wait_for_invocations("Fast", 2, WAIT).await.unwrap();
    assert!(records.iter().all(|r| r.succeeded && r.reason == "timer"));
    let fast = received_at(&host, "/Fast").await;
    let second = payload(&fast[1]);
    assert!(second["Data"]["timer"]["ScheduleStatus"]["Last"].is_string());
    // The yearly timer did not fire.
    assert!(received_at(&host, "/Tick").await.is_empty());
}

#[tokio::test]
async fn start_waits_for_any_http_answer_and_passes_the_environment() {
    let dir = app_dir(true);
    let config = config(dir.path())
        .setting("ECHO_STARTUP_DELAY_MS", "500")
        .setting("ECHO_ROOT_STATUS", "404");
    let host = HostSim::start(config).await.unwrap();
    // Ready means listening: the handler's port takes connections as soon as start returns.
    tokio::net::TcpStream::connect(("127.0.0.1", host.handler_port()))
        .await
        .unwrap();
    assert!(matches!(host.handler_state(), HandlerState::Ready { .. }));
    let echo: Value = client()
        .get(format!("{}/api/Echo", host.base_url()))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let env = &echo["env"];
    let port = host.handler_port().to_string();
    assert_eq!(env["FUNCTIONS_CUSTOMHANDLER_PORT"], port.as_str());
    assert_eq!(env["FUNCTIONS_HTTPWORKER_PORT"], port.as_str());
    assert_eq!(
        env["FUNCTIONS_APP_ROOT_PATH"],
        dir.path().canonicalize().unwrap().display().to_string()
    );
    uuid::Uuid::parse_str(env["FUNCTIONS_CUSTOMHANDLER_WORKER_ID"].as_str().unwrap()).unwrap();
    // An explicit setting overrides local.settings.json.
    assert_eq!(env["ECHO_SETTING"], "from-config");
    assert!(host
        .handler_output()
        .iter()
        .any(|line| line.starts_with("echo-handler: listening")));
}

#[tokio::test]
async fn local_settings_apply_when_not_overridden() {
    let dir = app_dir(true);
    let mut config = HostConfig::new(dir.path());
    config.run_timers = false;
    let host = HostSim::start(config).await.unwrap();
    let echo: Value = client()
        .get(format!("{}/api/Echo", host.base_url()))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(echo["env"]["ECHO_SETTING"], "from-local");
}

#[tokio::test]
async fn a_handler_that_dies_is_restarted() {
    let (_dir, host) = start(true).await;
    let echo_of = |host: &HostSim| {
        let url = format!("{}/api/Echo", host.base_url());
        async move {
            client()
                .get(url)
                .send()
                .await
                .unwrap()
                .json::<Value>()
                .await
                .unwrap()
        }
    };
    let before = echo_of(&host).await;
    let first = host.handler_pid().unwrap();
    assert_eq!(before["pid"], first);
    assert_eq!(host.kill_handler().await.unwrap(), first);
    let second = host.wait_until_ready(WAIT).await.unwrap();
    assert_ne!(second, first);
    assert_eq!(host.handler_starts(), 2);
    let after = echo_of(&host).await;
    assert_eq!(after["pid"], second);
    // Same port, new worker id.
    assert_eq!(
        after["env"]["FUNCTIONS_CUSTOMHANDLER_PORT"],
        before["env"]["FUNCTIONS_CUSTOMHANDLER_PORT"]
    );
    assert_ne!(
        after["env"]["FUNCTIONS_CUSTOMHANDLER_WORKER_ID"],
        before["env"]["FUNCTIONS_CUSTOMHANDLER_WORKER_ID"]
    );
}

#[tokio::test]
async fn gives_up_after_three_failures() {
    let dir = app_dir(true);
    let config = config(dir.path()).setting("ECHO_EXIT_AT_START", "1");
    let error = HostSim::start(config).await.err().expect("start must fail");
    let message = format!("{error:#}");
    assert!(message.contains("failed 3 times"), "{message}");
    assert!(message.contains("exit status: 3"), "{message}");
}

#[tokio::test]
async fn a_handler_that_never_listens_times_out() {
    let dir = app_dir(true);
    let mut config = config(dir.path()).setting("ECHO_STARTUP_DELAY_MS", "600000");
    config.startup_timeout = Duration::from_millis(300);
    let error = HostSim::start(config).await.err().expect("start must fail");
    let message = format!("{error:#}");
    assert!(message.contains("did not answer"), "{message}");
}

#[tokio::test]
async fn shutdown_is_graceful() {
    let (_dir, host) = start(true).await;
    let status = host.shutdown().await.unwrap().expect("an exit status");
    // Exit code 0 (not "killed by signal"): the handler handled SIGTERM.
    assert_eq!(status.code(), Some(0), "{status}");
}

#[tokio::test]
async fn a_handler_without_its_execute_bit_is_refused() {
    let dir = app_dir(true);
    let handler = dir.path().join("handler");
    std::fs::set_permissions(&handler, std::fs::Permissions::from_mode(0o644)).unwrap();
    let error = HostSim::start(config(dir.path()))
        .await
        .err()
        .expect("start must fail");
    assert!(format!("{error:#}").contains("execute bit"), "{error:#}");
}

#[tokio::test]
async fn the_binary_serves_and_stops_gracefully_on_sigterm() {
    let dir = app_dir(true);
    let port = streamfold_testbed::free_port().unwrap();
    let child = tokio::process::Command::new(env!("CARGO_BIN_EXE_hostsim"))
        .args(["--port", &port.to_string(), "--setting", "ECHO_SETTING=cli"])
        .arg(dir.path())
        .stdout(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let base = format!("http://127.0.0.1:{port}");
    let mut answered = None;
    for _ in 0..400 {
        if let Ok(response) = client().get(format!("{base}/api/Echo")).send().await {
            answered = Some(response.json::<Value>().await.unwrap());
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let echo = answered.expect("hostsim answered");
    assert_eq!(echo["env"]["ECHO_SETTING"], "cli");
    let pid = libc::pid_t::try_from(child.id().unwrap()).unwrap();
    // SAFETY: signalling our own child process.
    assert_eq!(unsafe { libc::kill(pid, libc::SIGTERM) }, 0);
    let output = tokio::time::timeout(WAIT, child.wait_with_output())
        .await
        .expect("hostsim exits")
        .unwrap();
    assert!(output.status.success(), "{}", output.status);
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        stdout.contains("echo-handler: graceful shutdown"),
        "{stdout}"
    );
    assert!(
        stdout.contains("handler exited (exit status: 0)"),
        "{stdout}"
    );
}
