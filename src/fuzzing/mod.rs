//! The bodies of the fuzz targets (`fuzz/fuzz_targets/*.rs`, run by `scripts/fuzz.sh`) and of
//! their corpus replay on stable (`tests/fuzz_corpus.rs`). Compiled only with the `fuzzing`
//! feature; not part of the API.
//!
//! Each function takes the bytes of one input, hands them to a decoder of data that comes from
//! outside the process (storage rows and records, invocation payloads, Event Grid deliveries,
//! connection strings, settings, keys, continuations, HTTP requests) the way production code
//! does, and panics when a promise of that decoder does not hold:
//! - no decoder panics, whatever the bytes;
//! - what decodes is written again by our own encoder and decodes to the same value, so
//!   reading never accepts something the writer would store differently;
//! - an HTTP answer other than 2xx is `application/problem+json` with a
//!   `urn:streamfold:problem:` type and its own status, and the event-stream API never answers
//!   a server error for anything a caller sends (the memory backend cannot be unavailable).
//!
//! A panic is a finding: libFuzzer reports it as a crash with the input, the replay test as a
//! failing corpus file.

pub mod seeds;

use std::cell::RefCell;
use std::sync::Arc;

use bytes::Bytes;
use serde_json::value::RawValue;
use serde_json::Value;
use warp::http::{HeaderName, HeaderValue, Method, StatusCode, Uri};
use warp::Filter;

use crate::app::App;
use crate::config::Settings;
use crate::functions::problem::{recover, PROBLEM_TYPE_PREFIX};
use crate::functions::routing::Resolution;
use crate::functions::PROBLEM_CONTENT_TYPE;
use crate::notify::settings::RAISE_ENTITY_DELETION_SETTING;
use crate::notify::{Notification, NotificationSchema};
use crate::projection::{ApplyError, Projection};
use crate::storage::blob::fuzz_access as blob;
use crate::storage::table::fuzz_access as table;
use crate::storage::{MemoryStore, StorageAccount};
use crate::stream::{
    check_key_continuation, EntityType, EventStore, ExpectedVersion, NewEvent, RecordedEvent,
    StreamId,
};
use crate::testing::EventCount;

/// The body of a fuzz target: one input's bytes.
pub type Body = fn(&[u8]);

/// The names of the targets, as the fuzz crate and the corpus directories name them.
pub const TARGETS: &[(&str, Body)] = &[
    ("blob_record", blob_record),
    ("table_entity", table_entity),
    ("invocation", invocation),
    ("notification", notification),
    ("eventgrid_webhook", eventgrid_webhook),
    ("connection_string", connection_string),
    ("settings", settings),
    ("stream_key", stream_key),
    ("continuation", continuation),
    ("http_request", http_request),
];

/// Where a decoded segment is taken to start (records are read from any record boundary).
const SEGMENT_OFFSET: u64 = 4096;
/// Segment number used to check blob names.
const SEGMENT: u32 = 12;
/// Most requests one `http_request` input makes (one after the other, against one app).
const MAX_REQUESTS: usize = 4;
/// Separates the requests of one `http_request` input.
const REQUEST_SEPARATOR: &[u8] = b"\n===\n";

thread_local! {
    static RUNTIME: RefCell<Option<tokio::runtime::Runtime>> = const { RefCell::new(None) };
}

/// Runs `future` to completion on this thread's runtime (one per fuzzing thread, built once).
fn block_on<F: std::future::Future>(future: F) -> F::Output {
    RUNTIME.with(|cell| {
        let mut runtime = cell.borrow_mut();
        let runtime = runtime.get_or_insert_with(|| {
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("a current-thread runtime")
        });
        runtime.block_on(future)
    })
}

fn same_event(what: &str, a: &RecordedEvent, b: &RecordedEvent) {
    assert_eq!(a.sequence, b.sequence, "{what}: sequence");
    assert_eq!(a.event_id, b.event_id, "{what}: event id");
    assert_eq!(a.event_type, b.event_type, "{what}: event type");
    assert_eq!(a.data.get(), b.data.get(), "{what}: data");
    assert_eq!(a.metadata, b.metadata, "{what}: metadata");
    assert_eq!(a.timestamp, b.timestamp, "{what}: timestamp");
}

fn as_new(event: &RecordedEvent) -> NewEvent {
    NewEvent {
        event_id: event.event_id,
        event_type: event.event_type.clone(),
        data: event.data.clone(),
        metadata: event.metadata.clone(),
    }
}

/// Append Blob segment bytes (a run of records), as a read of a segment decodes them.
pub fn blob_record(data: &[u8]) {
    let Ok(events) = blob::decode_records(data, SEGMENT_OFFSET) else {
        return;
    };
    // The records tile the bytes.
    let mut at = SEGMENT_OFFSET;
    for stored in &events {
        assert_eq!(stored.start, at, "records must follow each other");
        assert!(stored.end > stored.start, "a record has bytes");
        at = stored.end;
    }
    assert_eq!(
        at,
        SEGMENT_OFFSET + data.len() as u64,
        "records cover the bytes"
    );
    // Each event, written again as an append of its own, reads back the same.
    for stored in &events {
        let event = &stored.event;
        let Ok(encoded) = blob::encode_append(
            std::slice::from_ref(&as_new(event)),
            event.sequence,
            event.timestamp,
        ) else {
            continue;
        };
        let back = blob::decode_records(&encoded.bytes, 0)
            .unwrap_or_else(|e| panic!("a record we wrote does not read back: {e}"));
        assert_eq!(back.len(), 1);
        same_event("blob record round trip", event, &back[0].event);
    }
}

/// A Table storage entity as a query answers it (JSON), read as an event row the way a replay
/// reads it, and as the other rows of a stream partition.
pub fn table_entity(data: &[u8]) {
    if let Ok(row) = serde_json::from_slice::<table::EventRow>(data) {
        if let Ok(event) = row.into_event() {
            let partition = "Bank|Account|1";
            if let Ok(encoded) = table::encode_event(partition, &as_new(&event), event.timestamp) {
                let entity = encoded
                    .entity(partition, &table::event_row_key(event.sequence))
                    .expect("an event row we wrote is JSON");
                let back = serde_json::from_value::<table::EventRow>(Value::Object(entity))
                    .expect("an entity we wrote parses")
                    .into_event()
                    .unwrap_or_else(|e| panic!("an event row we wrote does not read back: {e}"));
                same_event("table row round trip", &event, &back);
            }
        }
    }
    if let Ok(Value::Object(properties)) = serde_json::from_slice::<Value>(data) {
        let _ = table::decode_header_version(&properties);
        let _ = table::decode_event_id_row(&properties);
        let _ = table::get_json_text(&properties);
    }
}

/// A read model kept by the fuzzing app: counts events.
const COUNT: EventCount = EventCount::new();

/// A projection that reads its events' data: sums `{"n": <integer>}` of `Added` events.
struct Sum;

#[derive(serde::Deserialize)]
struct Added {
    n: i64,
}

impl Projection for Sum {
    type State = i64;
    fn name(&self) -> &str {
        "sum"
    }
    fn version(&self) -> u32 {
        1
    }
    fn initial(&self) -> i64 {
        0
    }
    fn apply(&self, state: &mut i64, event: &RecordedEvent) -> Result<(), ApplyError> {
        if event.event_type == "Added" {
            let added: Added = crate::projection::decode_data(event)?;
            *state = state
                .checked_add(added.n)
                .ok_or_else(|| ApplyError::new(event, "the sum overflows"))?;
        }
        Ok(())
    }
}

/// A fresh in-memory app (so an input's answers never depend on earlier inputs) with the
/// projections above registered for `Bank` / `Account` as projections and as read models.
fn app() -> Arc<App> {
    // Erasing a stream publishes `DeletedEntity` straight to the topic, which a fuzz run has
    // none of (appends record theirs in the outbox, which needs no network).
    let settings =
        Settings::from_pairs([(RAISE_ENTITY_DELETION_SETTING.to_owned(), "false".to_owned())])
            .expect("valid settings");
    let mut app = App::in_memory(settings);
    app.projections_mut()
        .register(&EntityType::from_static("Bank", "Account"), COUNT)
        .and_then(|r| r.register(&EntityType::from_static("Bank", "Account"), Sum))
        .expect("valid projections");
    app.read_models_mut()
        .register(&EntityType::from_static("Bank", "Account"), COUNT)
        .expect("valid read model");
    Arc::new(app)
}

/// Seeds a stream the requests can read: `Bank/Account/A-1` with three events.
fn seed(app: &App) {
    let Ok(store) = app.store(&EntityType::from_static("Bank", "Account")) else {
        return;
    };
    let Ok(stream) = StreamId::new("Bank", "Account", "A-1") else {
        return;
    };
    let events = (1..=3)
        .filter_map(|n| RawValue::from_string(format!(r#"{{"n":{n}}}"#)).ok())
        .map(|data| NewEvent::from_raw("Added", data))
        .collect();
    let _ = block_on(store.append(&stream, ExpectedVersion::NoStream, events));
}

/// One request, as the server receives it.
struct Request {
    method: Method,
    /// Path and query, percent-encoded as sent.
    target: String,
    headers: Vec<(HeaderName, HeaderValue)>,
    body: Vec<u8>,
}

impl Request {
    fn new(method: Method, target: &str, body: &[u8]) -> Self {
        Self {
            method,
            target: target.to_owned(),
            headers: Vec::new(),
            body: body.to_vec(),
        }
    }

    fn header(mut self, name: &'static str, value: &'static str) -> Self {
        self.headers.push((
            HeaderName::from_static(name),
            HeaderValue::from_static(value),
        ));
        self
    }

    fn describe(&self) -> String {
        format!("{} {}", self.method, self.target)
    }
}

/// What a request got.
struct Answer {
    status: StatusCode,
    content_type: String,
    body: Bytes,
}

/// Sends one request to the library's functions as `functions::serve` does: the route table
/// first (404 for a path no function has, 405 for a method none accepts, literal segments
/// spelled as the template spells them), then the functions' filter with the one `recover`.
/// `None` when the route table answers (the server's own 404/405, not a function's).
fn call(app: &Arc<App>, request: &Request) -> Option<Answer> {
    let (table, filter) = crate::functions::routes(app.clone()).into_parts();
    let (path, query) = match request.target.split_once('?') {
        Some((path, query)) => (path, Some(query)),
        None => (request.target.as_str(), None),
    };
    let target = match table.map(|t| t.resolve(&request.method, path)) {
        Some(Resolution::Found { path, .. }) => match query {
            Some(query) => format!("{path}?{query}"),
            None => path,
        },
        Some(_) => return None,
        None => request.target.clone(),
    };
    let routes = filter.recover(recover).unify();
    let mut builder = warp::test::request()
        .method(request.method.as_str())
        .path(&target)
        .body(request.body.clone());
    for (name, value) in &request.headers {
        builder = builder.header(name, value);
    }
    let response = block_on(builder.reply(&routes));
    let answer = Answer {
        status: response.status(),
        content_type: response
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_owned(),
        body: response.into_body(),
    };
    // The table chose a function for this method: its own filter must answer, not warp's
    // "no route" or "wrong method".
    let body = String::from_utf8_lossy(&answer.body);
    for slug in ["no-such-route", "method-not-allowed"] {
        assert!(
            !body.contains(&format!("\"{PROBLEM_TYPE_PREFIX}{slug}\"")),
            "{}: routed to a function, answered {} {slug}: {body}",
            request.describe(),
            answer.status
        );
    }
    Some(answer)
}

/// The promises every answer keeps: a problem for anything but 2xx, and no server error
/// unless `server_errors` (Event Grid entry points answer 5xx to be delivered again).
fn check_answer(what: &str, answer: &Answer, server_errors: bool) {
    let status = answer.status;
    let body = String::from_utf8_lossy(&answer.body);
    if !server_errors {
        // By design, the one server error a caller can cause: a stream of a domain nobody owns
        // holds an event a registered projection cannot fold (`stream-unreadable`, logged).
        let unreadable = format!("\"type\":\"{PROBLEM_TYPE_PREFIX}stream-unreadable\"");
        assert!(
            !status.is_server_error()
                || (status == StatusCode::INTERNAL_SERVER_ERROR && body.contains(&unreadable)),
            "{what}: answered {status}: {body}"
        );
    }
    if status.is_client_error() || status.is_server_error() {
        assert!(
            answer.content_type.starts_with(PROBLEM_CONTENT_TYPE),
            "{what}: {status} with content type {:?}: {body}",
            answer.content_type
        );
        let problem: Value = serde_json::from_slice(&answer.body)
            .unwrap_or_else(|e| panic!("{what}: {status} body is not JSON ({e}): {body}"));
        let kind = problem["type"].as_str().unwrap_or("");
        assert!(
            kind.starts_with(PROBLEM_TYPE_PREFIX),
            "{what}: {status} problem type {kind:?}"
        );
        assert_eq!(
            problem["status"].as_u64(),
            Some(u64::from(status.as_u16())),
            "{what}: the problem's status"
        );
    } else if status.is_success() && !answer.body.is_empty() {
        assert!(
            serde_json::from_slice::<serde::de::IgnoredAny>(&answer.body).is_ok(),
            "{what}: {status} body is not JSON: {body}"
        );
    }
}

/// The custom-handler invocation payload the host posts to `/Projector` (Event Grid trigger).
pub fn invocation(data: &[u8]) {
    let app = app();
    seed(&app);
    let request =
        Request::new(Method::POST, "/Projector", data).header("content-type", "application/json");
    if let Some(answer) = call(&app, &request) {
        check_answer("POST /Projector", &answer, true);
    }
}

/// One delivered Event Grid event, in either schema, as the projector decodes it; what decodes
/// is encoded again in both schemas and decodes to the same notification.
pub fn notification(data: &[u8]) {
    let Ok(decoded) = Notification::from_event_slice(data) else {
        return;
    };
    for schema in [
        NotificationSchema::EventGridEvent,
        NotificationSchema::CloudEvent,
    ] {
        let Ok(bytes) = schema.encode(&decoded) else {
            continue;
        };
        let back = Notification::from_event_slice(&bytes)
            .unwrap_or_else(|e| panic!("a {schema:?} we wrote does not decode: {e}"));
        assert_eq!(back.id, decoded.id);
        assert_eq!(back.event_type, decoded.event_type);
        assert_eq!(back.subject, decoded.subject);
        assert_eq!(back.time, decoded.time);
        if schema == NotificationSchema::CloudEvent {
            assert_eq!(back.source, decoded.source);
        }
        let (a, b) = (&back.data, &decoded.data);
        assert_eq!(
            (&a.domain, &a.entity, &a.instance, a.sequence_number),
            (&b.domain, &b.entity, &b.instance, b.sequence_number)
        );
        assert_eq!(
            a.payload.as_ref().map(|p| p.get()),
            b.payload.as_ref().map(|p| p.get()),
            "{schema:?}: payload"
        );
    }
}

/// A delivery to the plain Event Grid webhook (`POST /api/eventgrid`). The first byte picks
/// the headers: a notification, a subscription validation, an unsubscribe, a CloudEvents
/// content type without `aeg-event-type`, or an unknown kind.
pub fn eventgrid_webhook(data: &[u8]) {
    let Some((&mode, body)) = data.split_first() else {
        return;
    };
    let request = Request::new(Method::POST, "/api/eventgrid", body);
    let request = match mode % 5 {
        0 => request
            .header("aeg-event-type", "Notification")
            .header("content-type", "application/json"),
        1 => request
            .header("aeg-event-type", "SubscriptionValidation")
            .header("content-type", "application/json"),
        2 => request.header("aeg-event-type", "Unsubscribe"),
        3 => request.header("content-type", "application/cloudevents-batch+json"),
        _ => request.header("aeg-event-type", "Surprise"),
    };
    let app = app();
    seed(&app);
    if let Some(answer) = call(&app, &request) {
        check_answer("POST /api/eventgrid", &answer, true);
    }
}

/// A storage connection string, as a setting names it, and every client built from it.
pub fn connection_string(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(account) = StorageAccount::from_connection_string(text) else {
        return;
    };
    let _ = account.account_name();
    let _ = account.blob_endpoint();
    let _ = account.table_endpoint();
    let _ = account.uses_sas();
    let _ = format!("{account:?}");
    let _ = account.table_service_client();
    let _ = account.blob_service_client();
}

/// App settings, one `NAME=VALUE` a line, read as at start-up and turned into the app's
/// backends (no I/O happens there).
pub fn settings(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    let pairs = text
        .lines()
        .filter_map(|line| line.split_once('='))
        .map(|(name, value)| (name.to_owned(), value.to_owned()));
    let Ok(settings) = Settings::from_pairs(pairs) else {
        return;
    };
    let _ = format!("{settings:?}");
    // Backends are built inside a runtime, as at start-up.
    block_on(async move {
        let _ = App::from_settings(settings);
    });
}

/// A stream's identity as a request path gives it (`domain/entity/instance`, the instance
/// percent-encoded), and any text as a stored key or blob name read back from a listing.
pub fn stream_key(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let mut parts = text.splitn(3, '/');
    if let (Some(domain), Some(entity), Some(instance)) = (parts.next(), parts.next(), parts.next())
    {
        if let Ok(instance) = percent_encoding::percent_decode_str(instance).decode_utf8() {
            if let Ok(id) = StreamId::new(domain, entity, instance.as_ref()) {
                check_stream_keys(&id);
            }
        }
    }
    // Text read back from storage: only what the writers write decodes.
    if let Some(key) = blob::unescape_instance(text) {
        assert_eq!(blob::escape_instance(&key), text, "unescape is one to one");
    }
    let prefix = "Bank/Account/";
    if let Some(key) = blob::instance_of_prefix(prefix, text) {
        assert_eq!(
            format!("{prefix}{}/", blob::escape_instance(&key)),
            text,
            "a listed directory names one stream"
        );
    }
    if let Some(segment) = blob::parse_segment_name("Bank/Account/A-1/", text) {
        assert!(text.ends_with(&blob::segment_file_name(segment)));
    }
    if let Some(sequence) = table::parse_event_row_key(text) {
        assert_eq!(table::event_row_key(sequence), text);
    }
    let _ = table::parse_event_id_row_key(text);
}

fn check_stream_keys(id: &StreamId) {
    // Table: one partition per stream, inside the listing range of its entity type.
    let partition = table::partition_key(id);
    let prefix = table::stream_prefix(id.entity_type());
    assert!(partition.starts_with(&prefix));
    assert!(partition < table::stream_prefix_end(id.entity_type()));
    assert_eq!(
        partition.strip_prefix(&prefix),
        Some(id.instance()),
        "the instance is the rest of the partition key"
    );
    let literal = table::odata_string(&partition);
    let inner = &literal[1..literal.len() - 1];
    assert_eq!(inner.replace("''", "'"), partition, "OData quoting");
    assert!(
        !inner.replace("''", "").contains('\''),
        "a lone quote would end the literal"
    );
    // Append Blob: a name within the service's limit that names this stream only.
    let name = blob::segment_blob_name(id, SEGMENT);
    assert!(
        name.len() <= blob::MAX_BLOB_NAME_LEN,
        "{} bytes",
        name.len()
    );
    let stream_prefix = blob::stream_prefix(id);
    assert_eq!(
        blob::parse_segment_name(&stream_prefix, &name),
        Some(SEGMENT)
    );
    assert_eq!(
        blob::unescape_instance(&blob::escape_instance(id.instance())).as_deref(),
        Some(id.instance())
    );
    assert_eq!(
        blob::instance_of_prefix(&blob::entity_prefix(id.entity_type()), &stream_prefix).as_deref(),
        Some(id.instance())
    );
}

/// A listing continuation as a caller sends it back: checked the way each backend checks it,
/// and used for a listing of the memory backend.
pub fn continuation(data: &[u8]) {
    let Ok(token) = std::str::from_utf8(data) else {
        return;
    };
    let valid_key = check_key_continuation(Some(token)).is_ok();
    let _ = blob::check_marker(token);
    let store = MemoryStore::new();
    let keys = ["A-1", "B-2", "O'Brien", "ünï", "z"];
    for key in keys {
        if let Ok(stream) = StreamId::new("Bank", "Account", key) {
            let data = RawValue::from_string("{}".to_owned()).expect("JSON");
            let _ = block_on(store.append(
                &stream,
                ExpectedVersion::NoStream,
                vec![NewEvent::from_raw("Opened", data)],
            ));
        }
    }
    match block_on(store.list_streams(&EntityType::from_static("Bank", "Account"), Some(token), 2))
    {
        Ok(page) => {
            assert!(valid_key, "a continuation that is no key was accepted");
            assert!(page.instances.iter().all(|key| key.as_str() > token));
            if let Some(next) = &page.continuation {
                assert!(check_key_continuation(Some(next)).is_ok());
            }
        }
        Err(_) => assert!(!valid_key, "a valid continuation was refused"),
    }
}

/// Up to [`MAX_REQUESTS`] HTTP requests, separated by `\n===\n`, each
/// `METHOD target\nheader: value\n...\n\nbody`, sent in order to one fresh app holding the
/// stream `Bank/Account/A-1`.
pub fn http_request(data: &[u8]) {
    let app = app();
    seed(&app);
    for raw in split(data, REQUEST_SEPARATOR).take(MAX_REQUESTS) {
        let Some(request) = parse_request(raw) else {
            continue;
        };
        let what = request.describe();
        if let Some(answer) = call(&app, &request) {
            // The Event Grid entry points answer 5xx on purpose (for a redelivery).
            let event_grid = what.contains("/Projector") || what.contains("/api/eventgrid");
            check_answer(&what, &answer, event_grid);
        }
    }
}

fn split<'a>(data: &'a [u8], separator: &'a [u8]) -> impl Iterator<Item = &'a [u8]> + 'a {
    let mut rest = Some(data);
    std::iter::from_fn(move || {
        let current = rest?;
        match current
            .windows(separator.len())
            .position(|w| w == separator)
        {
            Some(at) => {
                rest = current.get(at + separator.len()..);
                current.get(..at)
            }
            None => {
                rest = None;
                Some(current)
            }
        }
    })
}

/// One request of an `http_request` input, or `None` when its first line is not a method and
/// a target an HTTP client can send. Header values may hold any byte a client can send
/// (obs-text included), not only visible ASCII.
fn parse_request(raw: &[u8]) -> Option<Request> {
    let (head, body) = match raw.windows(2).position(|w| w == b"\n\n") {
        Some(at) => (raw.get(..at)?, raw.get(at + 2..)?),
        None => (raw, &[][..]),
    };
    let mut lines = head.split(|&b| b == b'\n');
    let first = std::str::from_utf8(lines.next()?).ok()?;
    let (method, target) = first.split_once(' ')?;
    let method = Method::from_bytes(method.as_bytes()).ok()?;
    let uri: Uri = target.parse().ok()?;
    let target = uri.path_and_query()?.as_str().to_owned();
    if !target.starts_with('/') {
        return None;
    }
    let mut request = Request::new(method, &target, body);
    for line in lines {
        let Some(colon) = line.iter().position(|&b| b == b':') else {
            continue;
        };
        let (name, value) = (line.get(..colon)?, line.get(colon + 1..)?);
        let name = HeaderName::from_bytes(name.trim_ascii()).ok()?;
        let value = HeaderValue::from_bytes(value.trim_ascii()).ok()?;
        if name == warp::http::header::CONTENT_LENGTH {
            continue;
        }
        request.headers.push((name, value));
    }
    Some(request)
}
