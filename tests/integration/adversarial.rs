//! What a hostile or careless caller can send, through the Functions host simulator to the
//! handler on Azurite: keys, JSON, headers, query strings, invocation payloads and Event Grid
//! deliveries that are wrong in every way we could think of. After each case the answer is the
//! documented one (a 4xx `application/problem+json` naming the problem, or the right 2xx),
//! nothing was written that should not be, and the other accounts still answer.
//!
//! The cases of issue 9's list are marked `(#n)`.

use crate::support;

use serde_json::{json, Value};
use support::{Client, Reply, TestApp};

/// One request and the answer it must get.
struct Case {
    method: &'static str,
    path: String,
    headers: Vec<(&'static str, String)>,
    body: Option<Vec<u8>>,
    status: u16,
    /// The problem slug, when the answer is a problem.
    slug: Option<&'static str>,
    /// Answered by the Functions host, not the handler: only the status is ours to check.
    from_host: bool,
}

fn case(method: &'static str, path: impl Into<String>, status: u16) -> Case {
    Case {
        method,
        path: path.into(),
        headers: Vec::new(),
        body: None,
        status,
        slug: None,
        from_host: false,
    }
}

impl Case {
    fn json(mut self, body: Value) -> Self {
        self.body = Some(body.to_string().into_bytes());
        self
    }

    fn raw(mut self, body: impl Into<Vec<u8>>) -> Self {
        self.body = Some(body.into());
        self
    }

    fn header(mut self, name: &'static str, value: impl Into<String>) -> Self {
        self.headers.push((name, value.into()));
        self
    }

    fn slug(mut self, slug: &'static str) -> Self {
        self.slug = Some(slug);
        self
    }

    fn answered_by_host(mut self) -> Self {
        self.from_host = true;
        self
    }
}

async fn send(c: &Client, case: &Case) -> Reply {
    let mut request = c
        .http()
        .request(case.method.parse().unwrap(), c.url(&case.path));
    if let Some(body) = &case.body {
        request = request
            .header("content-type", "application/json")
            .body(body.clone());
    }
    for (name, value) in &case.headers {
        request = request.header(*name, value.as_str());
    }
    c.send(request).await
}

/// Runs every case, then checks that the canary account still answers as it did.
async fn run(c: &Client, cases: Vec<Case>, canary: &Value) {
    let mut failures = Vec::new();
    for case in &cases {
        let reply = send(c, case).await;
        let what = format!(
            "{} {} {}",
            case.method,
            case.path,
            case.body
                .as_deref()
                .map(|b| String::from_utf8_lossy(&b[..b.len().min(120)]).into_owned())
                .unwrap_or_default()
        );
        if reply.status.as_u16() != case.status {
            failures.push(format!(
                "{what}: status {} (want {}) {}",
                reply.status, case.status, reply.body
            ));
            continue;
        }
        if !case.from_host && (reply.status.is_client_error() || reply.status.is_server_error()) {
            if reply.content_type != "application/problem+json" {
                failures.push(format!("{what}: content type {:?}", reply.content_type));
                continue;
            }
            if reply.body["status"] != case.status
                || reply.body["detail"].as_str().is_none_or(str::is_empty)
            {
                failures.push(format!("{what}: not a full problem: {}", reply.body));
                continue;
            }
        }
        if let Some(slug) = case.slug {
            if reply.slug() != slug {
                failures.push(format!("{what}: slug {:?} (want {slug})", reply.slug()));
            }
        }
    }
    let now = c.get("/api/GetBalance/CANARY").await;
    if now.status != 200 || &now.body != canary {
        failures.push(format!("the canary changed: {:?} {}", now.status, now.body));
    }
    assert!(
        failures.is_empty(),
        "{} of {} cases failed:\n{}",
        failures.len(),
        cases.len(),
        failures.join("\n")
    );
}

async fn canary(c: &Client) -> Value {
    c.post("/api/OpenAccount/CANARY", &json!({"overdraftLimit": "50"}))
        .await
        .ok(201);
    c.post("/api/Deposit/CANARY", &json!({"amount": "12.34"}))
        .await
        .ok(200);
    c.get("/api/GetBalance/CANARY").await.ok(200).clone()
}

fn deposit(account: &str, body: &str) -> Case {
    case("POST", format!("/api/Deposit/{account}"), 400).raw(body)
}

/// Routes (#5, #6), query strings (#2) and headers.
#[tokio::test]
async fn routes_queries_and_headers() {
    let app = TestApp::start().await;
    let c = &app.client;
    let canary = canary(c).await;
    let cases = vec![
        // Unknown paths are 404, a known path with another method 405 (#5).
        case("GET", "/api/NoSuchFunction/1", 404).slug("no-such-route"),
        case("GET", "/api/", 404).slug("no-such-route"),
        case("GET", "/api/GetBalance/CANARY/2024-05-01/extra", 404).slug("no-such-route"),
        // The host answers a path of no function itself, with its own empty 404.
        case("POST", "/NoSuchFunction", 404).answered_by_host(),
        case("GET", "/api/Deposit/CANARY", 405).slug("method-not-allowed"),
        case("PUT", "/api/GetBalance/CANARY", 405).slug("method-not-allowed"),
        // Routes match case-insensitively, as the host matches them (#6).
        case("GET", "/api/getbalance/CANARY", 200),
        case("GET", "/API/GETBALANCE/CANARY", 200),
        case("GET", "/api/STREAMS/Bank/Account/CANARY", 200),
        // ...but keys stay case-sensitive.
        case("GET", "/api/GetBalance/canary", 404).slug("account-not-found"),
        // Times storage cannot hold (#2).
        case(
            "GET",
            "/api/GetBalance/CANARY?asOf=9999-12-31T23:30:00-05:00",
            400,
        )
        .slug("invalid-query-parameter"),
        case(
            "GET",
            "/api/GetBalance/CANARY?asOf=1600-12-31T23:59:59Z",
            400,
        )
        .slug("invalid-query-parameter"),
        case(
            "GET",
            "/api/GetBalance/CANARY?asOf=0000-01-01T00:00:00Z",
            400,
        )
        .slug("invalid-query-parameter"),
        case(
            "GET",
            "/api/streams/Bank/Account/CANARY?asOf=10000-01-01T00:00:00Z",
            400,
        )
        .slug("invalid-query-parameter"),
        case(
            "GET",
            "/api/GetBalance/CANARY?asOf=2024-02-30T00:00:00Z",
            400,
        )
        .slug("invalid-query-parameter"),
        case(
            "GET",
            "/api/GetBalance/CANARY?asOf=9999-12-31T23:59:59Z",
            200,
        ),
        // Whole numbers are digits only, up to u64::MAX.
        case("GET", "/api/GetBalance/CANARY?asOfSequence=%2B1", 400)
            .slug("invalid-query-parameter"),
        case("GET", "/api/GetBalance/CANARY?asOfSequence=1e1", 400).slug("invalid-query-parameter"),
        case("GET", "/api/GetBalance/CANARY?asOfSequence=%201", 400)
            .slug("invalid-query-parameter"),
        case("GET", "/api/GetBalance/CANARY?asOfSequence=0x1", 400).slug("invalid-query-parameter"),
        case(
            "GET",
            "/api/GetBalance/CANARY?asOfSequence=18446744073709551616",
            400,
        )
        .slug("invalid-query-parameter"),
        case(
            "GET",
            "/api/GetBalance/CANARY?asOfSequence=18446744073709551615",
            200,
        ),
        case(
            "GET",
            "/api/GetAccountHistory/CANARY?pageSize=1&pageSize=2",
            400,
        ),
        case("GET", "/api/GetAccountHistory/CANARY?fromSequence=", 400)
            .slug("invalid-query-parameter"),
        case("GET", "/api/Accounts?inOverdraft=maybe", 400),
        // (A query that is not UTF-8 reaches the handler with U+FFFD in its place: the host
        // decodes queries as .NET does. Continuations are keys, so such a one is a key.)
        case("GET", "/api/Accounts?continuation=%01", 400).slug("invalid-continuation"),
        case("GET", "/api/streams/Bank/Account?continuation=%01", 400).slug("invalid-continuation"),
        case("GET", "/api/streams/Bank/Account/CANARY?toSequence=-5", 400),
        // Headers.
        case("POST", "/api/Deposit/CANARY", 400)
            .json(json!({"amount": 1}))
            .header("x-correlation-id", "x".repeat(129))
            .slug("invalid-correlation-id"),
        case("POST", "/api/Deposit/CANARY", 400)
            .json(json!({"amount": 1}))
            .header("x-correlation-id", "has space")
            .slug("invalid-correlation-id"),
    ];
    run(c, cases, &canary).await;
}

/// Amounts (#3) and JSON bodies.
#[tokio::test]
async fn amounts_and_json() {
    let app = TestApp::start().await;
    let c = &app.client;
    let canary = canary(c).await;
    let nested = format!("{}1{}", "[".repeat(200), "]".repeat(200));
    let cases = vec![
        deposit("CANARY", r#"{"amount": "1_000"}"#).slug("invalid-amount"),
        deposit("CANARY", r#"{"amount": "+1"}"#).slug("invalid-amount"),
        deposit("CANARY", r#"{"amount": " 1"}"#).slug("invalid-amount"),
        deposit("CANARY", r#"{"amount": "1 000"}"#).slug("invalid-amount"),
        deposit("CANARY", r#"{"amount": "0x10"}"#).slug("invalid-amount"),
        deposit("CANARY", r#"{"amount": "1e2"}"#).slug("invalid-amount"),
        deposit("CANARY", r#"{"amount": 1e2}"#).slug("invalid-amount"),
        deposit("CANARY", r#"{"amount": 1e400}"#),
        deposit("CANARY", r#"{"amount": "NaN"}"#).slug("invalid-amount"),
        deposit("CANARY", r#"{"amount": "Infinity"}"#).slug("invalid-amount"),
        deposit("CANARY", r#"{"amount": -0}"#).slug("invalid-amount"),
        deposit("CANARY", r#"{"amount": "79228162514264337593543950335"}"#).slug("invalid-amount"),
        deposit("CANARY", r#"{"amount": 123456789012345678901234567890123}"#),
        deposit("CANARY", r#"{"amount": ""}"#).slug("invalid-amount"),
        // JSON that is not what it seems.
        deposit("CANARY", r#"{"amount": 1, "amount": 2}"#),
        deposit("CANARY", "\u{feff}{\"amount\": 1}"),
        deposit("CANARY", nested.as_str()),
        deposit(
            "CANARY",
            format!(r#"{{"amount": 1, "commentary": {nested}}}"#).as_str(),
        ),
        deposit("CANARY", r#"{"amount": 1, "commentary": "x"}  trailing"#),
        deposit("CANARY", "\"amount\""),
        deposit("CANARY", "null"),
        deposit("CANARY", r#"{"amount": 1, "commentary": "\ud800"}"#),
        deposit("CANARY", r#"{"amount": {"$numberDecimal": "1"}}"#).slug("invalid-amount"),
        case("POST", "/api/Deposit/CANARY", 400).raw(vec![b'{', 0xff, 0xfe, b'}']),
        case("POST", "/api/OpenAccount/NEW-2", 400)
            .json(json!({"overdraftLimit": "79228162514264337593543950335"}))
            .slug("invalid-amount"),
        case("POST", "/api/SetOverdraftLimit/CANARY", 400)
            .json(json!({"limit": "1e15"}))
            .slug("invalid-amount"),
        case("POST", "/api/Withdraw/CANARY", 400)
            .json(json!({"amount": "0.001"}))
            .slug("invalid-amount"),
        case("POST", "/api/Withdraw/CANARY", 422)
            .json(json!({"amount": "1000000"}))
            .slug("insufficient-funds"),
    ];
    run(c, cases, &canary).await;
    c.get("/api/GetBalance/NEW-2").await.problem(404);
}

/// Keys that storage treats specially, on both backends.
#[tokio::test]
async fn awkward_keys() {
    let app = TestApp::start_with(&[("Shop.Blob", "AppendBlob;AzureWebJobsStorage")]).await;
    let c = &app.client;
    let canary = canary(c).await;
    let nfc = "caf%C3%A9"; // é as one code point
    let nfd = "cafe%CC%81"; // e + combining acute accent
    let long_multibyte = "%E2%82%AC".repeat(86); // 86 × "€" = 258 bytes
    let mut cases = Vec::new();
    for entity in ["Cart", "Blob"] {
        let path = |key: &str| format!("/api/streams/Shop/{entity}/{key}");
        let append = |key: &str, status: u16| {
            case("POST", path(key), status)
                .json(json!({"events": [{"eventType": "Added", "data": {"k": key}}]}))
        };
        // Forwarded, `%2F` and escapes of bytes that are not UTF-8 decode and are refused;
        // through the host's proxy they arrive escaped once more, as literal text, which is a
        // valid key (docs/host-modes.md).
        let ambiguous = |key: &str, slug: &'static str| {
            if support::proxying() {
                append(key, 201)
            } else {
                append(key, 400).slug(slug)
            }
        };
        cases.extend([
            append("o'brien", 201),
            append("100%25", 201),
            append("a+b", 201),
            append("a%20b", 201),
            append(nfc, 201),
            append(nfd, 201),
            append(&long_multibyte, 400).slug("invalid-key"),
            ambiguous("a%2Fb", "invalid-key"),
            append("a%00b", 400).slug("invalid-key"),
            append("%C2%85", 400).slug("invalid-key"),
            ambiguous("%ED%A0%80", "invalid-path"),
            case("GET", path("o'brien"), 200),
            case("GET", path("a+b"), 200),
            case("GET", path(nfd), 200),
        ]);
    }
    run(c, cases, &canary).await;
    for entity in ["Cart", "Blob"] {
        let listed = c.get(&format!("/api/streams/Shop/{entity}")).await;
        let instances = listed.ok(200)["instances"].as_array().unwrap().len();
        // Plus the two literal keys the proxy lets through.
        let expected = if support::proxying() { 8 } else { 6 };
        assert_eq!(
            instances, expected,
            "{entity}: NFC and NFD, space and + are distinct"
        );
    }
}

/// The generic API: expectations (#4), poisoned domain streams (#1), server-owned metadata
/// (#10).
#[tokio::test]
async fn generic_appends_cannot_poison_a_domain() {
    let app = TestApp::start().await;
    let c = &app.client;
    let canary = canary(c).await;
    let event = json!({"eventType": "Added", "data": {}});
    let cases = vec![
        case("POST", "/api/streams/Shop/Cart/E1", 201)
            .json(json!({"expectedVersion": "noStream", "events": [event]})),
        case("POST", "/api/streams/Shop/Cart/E1", 409)
            .json(json!({"expectedVersion": 9_999_999_999u64, "events": [event]}))
            .slug("wrong-expected-version"),
        case("POST", "/api/streams/Shop/Cart/E1", 409)
            .json(json!({"expectedVersion": u64::MAX, "events": [event]}))
            .slug("wrong-expected-version"),
        case("POST", "/api/streams/Shop/Cart/E1", 400)
            .raw(r#"{"expectedVersion": 18446744073709551616, "events": [{"eventType": "A", "data": {}}]}"#)
            .slug("invalid-expected-version"),
        case("POST", "/api/streams/Shop/Cart/E1", 400)
            .json(json!({"expectedVersion": 1.5, "events": [event]}))
            .slug("invalid-expected-version"),
        case("POST", "/api/streams/Shop/Cart/E1", 400)
            .json(json!({"expectedVersion": "ANY", "events": [event]}))
            .slug("invalid-expected-version"),
        case("POST", "/api/streams/Shop/Cart/E1", 400)
            .json(json!({"events": [{"eventType": "A".repeat(300), "data": {}}]}))
            .slug("invalid-event"),
        // Data storage accepts, however odd, reads back byte for byte.
        case("POST", "/api/streams/Shop/Cart/E2", 201)
            .raw(r#"{"events": [{"eventType": "Odd", "data": {"n": 1e400}}]}"#),
        // Poisoned bank streams (#1): refused, nothing written.
        case("POST", "/api/streams/Bank/Account/P1", 422).json(json!({
            "expectedVersion": "noStream",
            "events": [{"eventType": "AccountOpened",
                        "data": {"overdraftLimit": "79228162514264337593543950335"}}]})),
        case("POST", "/api/streams/Bank/Account/P2", 422).json(json!({
            "expectedVersion": "noStream",
            "events": [{"eventType": "AccountOpened", "data": {}}]})),
        case("POST", "/api/streams/Bank/Account/CANARY", 422).json(json!({
            "events": [{"eventType": "MoneyDeposited", "data": {"amount": "-500"}}]})),
        case("POST", "/api/streams/Bank/Account/CANARY", 422).json(json!({
            "events": [{"eventType": "MoneyWithdrawn", "data": {"amount": "1000000"}}]})),
        case("POST", "/api/streams/Bank/Account/CANARY", 422).json(json!({
            "events": [{"eventType": "AccountOpened", "data": {"overdraftLimit": "1"}}]})),
        case("POST", "/api/streams/Bank/Account/CANARY", 422).json(json!({
            "events": [{"eventType": "NoSuchEvent", "data": {}}]})),
        // The server sets `source` and `who` (#10).
        case("POST", "/api/streams/Shop/Cart/E3", 400).json(json!({
            "events": [{"eventType": "A", "data": {}, "metadata": {"source": "streamfold-bank"}}]})),
    ];
    run(c, cases, &canary).await;
    for poisoned in ["P1", "P2"] {
        c.get(&format!("/api/streams/Bank/Account/{poisoned}"))
            .await
            .problem(404);
    }
    let accounts = c.get("/api/Accounts").await;
    accounts.ok(200);
    c.post("/api/Deposit/CANARY", &json!({"amount": 1}))
        .await
        .ok(200);
}

/// Event Grid deliveries to the plain webhook (#7): each notification stands alone.
#[tokio::test]
async fn event_grid_deliveries_are_isolated() {
    let app = TestApp::start().await;
    let c = &app.client;
    let canary = canary(c).await;
    let notification = |id: &str, subject: &str, data: Value| {
        json!({"id": id, "subject": subject, "eventType": "Bank.Account.MoneyDeposited",
               "eventTime": "2024-05-01T10:00:00Z", "dataVersion": "1.0", "data": data})
    };
    let deep = format!("{}1{}", "[".repeat(300), "]".repeat(300));
    let delivery = |events: String| {
        case("POST", "/api/eventgrid", 200)
            .header("aeg-event-type", "Notification")
            .raw(events)
    };
    let forged = notification(
        "f1",
        "eventsourcing/Bank/Account/NOPE",
        json!({"nope": true}),
    );
    let odd = format!(
        r#"[{{"id":"d1","subject":"eventsourcing/Bank/Account/CANARY","eventType":"x","eventTime":"2024-05-01T10:00:00Z","dataVersion":"1","data":{deep}}},
            {{"id":"d2","subject":"eventsourcing/Bank/Account/CANARY","eventType":"x","eventTime":"2024-05-01T10:00:00Z","dataVersion":"1","data":{{"n":1e400}}}},
            {}]"#,
        notification(
            "g1",
            "eventsourcing/Bank/Account/CANARY",
            json!({"instanceKey": "CANARY", "sequence": 2})
        )
    );
    let many: Vec<Value> = (0..2000)
        .map(|i| notification(&format!("m{i}"), "junk", json!(i)))
        .collect();
    let cases = vec![
        delivery("[]".into()),
        delivery(json!([forged]).to_string()),
        delivery(odd),
        delivery(Value::Array(many).to_string()),
        delivery("[1, \"two\", null, {}]".into()),
        case("POST", "/api/eventgrid", 400)
            .header("aeg-event-type", "Notification")
            .raw("not json"),
    ];
    run(c, cases, &canary).await;
}
