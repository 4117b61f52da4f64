//! The seed corpus of every fuzz target, made by the writers themselves where there is one (the
//! blob record and Table row encoders, the notification schemas), plus hand-written inputs at
//! the edges of each format. Deterministic (fixed ids and times), so writing it again gives the
//! same files: `cargo test --features fuzzing --test fuzz_corpus -- --ignored write_seed_corpus`
//! writes `fuzz/corpus/<target>/seed-<name>`.

use serde_json::value::RawValue;
use serde_json::{json, Value};
use time::macros::datetime;
use time::OffsetDateTime;
use uuid::Uuid;

use super::{blob, table, REQUEST_SEPARATOR};
use crate::notify::{Notification, NotificationKind, NotificationSchema};
use crate::stream::{EventMetadata, NewEvent, RecordedEvent, StreamId};

/// One seed: target, name (unique within the target), bytes.
pub type Seed = (&'static str, String, Vec<u8>);

/// Every seed of every target.
pub fn seeds() -> Vec<Seed> {
    let mut out = Vec::new();
    blob_record(&mut out);
    table_entity(&mut out);
    notification(&mut out);
    invocation(&mut out);
    eventgrid_webhook(&mut out);
    connection_string(&mut out);
    settings(&mut out);
    stream_key(&mut out);
    continuation(&mut out);
    http_request(&mut out);
    amount(&mut out);
    out
}

fn push(
    out: &mut Vec<Seed>,
    target: &'static str,
    name: impl Into<String>,
    bytes: impl AsRef<[u8]>,
) {
    out.push((target, name.into(), bytes.as_ref().to_vec()));
}

fn id(n: u128) -> Uuid {
    Uuid::from_u128(0x6c1e_7d1a_3f77_4a53_9c55_0c7a_9d4c_0000 + n)
}

/// Event data at the edges of what callers send.
fn datas() -> Vec<(&'static str, String)> {
    vec![
        ("object", r#"{"amount":"12.50","commentary":"rent"}"#.into()),
        (
            "exact-number",
            r#"{"amount":0.10000000000000000001}"#.into(),
        ),
        ("huge-number", r#"{"n":1e400}"#.into()),
        ("null", "null".into()),
        ("string-with-newline", r#""a\nb""#.into()),
        ("raw-newlines", "  [1,\n 2]\r\n".into()),
        ("leading-space", " 7".into()),
        (
            "unicode",
            r#"{"who":"O'Brien ünï 😀","nfd":"u\u0308"}"#.into(),
        ),
        ("deep", format!("{}{}", "[".repeat(200), "]".repeat(200))),
        ("empty-object", "{}".into()),
        ("duplicate-keys", r#"{"a":1,"a":2}"#.into()),
    ]
}

fn metadatas() -> Vec<EventMetadata> {
    vec![
        EventMetadata::default(),
        EventMetadata {
            correlation_id: Some("c-1".into()),
            causation_id: Some("cause\n1".into()),
            who: Some("O'Brien".into()),
            source: Some("streamfold-api".into()),
            commentary: Some("ünï 😀".into()),
            schema_version: Some(u32::MAX),
            idempotency_key: Some("key \\ \"quoted\" ~".into()),
            request_hash: Some("0".repeat(64)),
        },
    ]
}

fn new_event(n: u128, event_type: &str, data: &str, metadata: EventMetadata) -> Option<NewEvent> {
    let data = RawValue::from_string(data.to_owned()).ok()?;
    Some(
        NewEvent::from_raw(event_type, data)
            .with_id(id(n))
            .with_metadata(metadata),
    )
}

const TIMES: [OffsetDateTime; 3] = [
    datetime!(2024-02-29 23:59:58.123456789 UTC),
    datetime!(1970-01-01 00:00:00 UTC),
    datetime!(9999-12-31 23:59:59.999999999 UTC),
];

fn blob_record(out: &mut Vec<Seed>) {
    const T: &str = "blob_record";
    for (i, (name, data)) in datas().into_iter().enumerate() {
        for (j, metadata) in metadatas().into_iter().enumerate() {
            let Some(event) = new_event(i as u128, "Deposited", &data, metadata) else {
                continue;
            };
            let time = TIMES[(i + j) % TIMES.len()];
            if let Ok(encoded) = blob::encode_append(&[event], 1 + i as u64, time) {
                push(out, T, format!("{name}-{j}"), encoded.bytes);
            }
        }
    }
    // One append of several events, and appends at the ends of the sequence range.
    let events: Vec<NewEvent> = (0..4)
        .filter_map(|n| {
            new_event(
                100 + n,
                "Added",
                &format!(r#"{{"n":{n}}}"#),
                EventMetadata::default(),
            )
        })
        .collect();
    for first in [1, 9_999_999_999, u64::MAX - 4] {
        if let Ok(encoded) = blob::encode_append(&events, first, TIMES[0]) {
            push(out, T, format!("append-of-4-from-{first}"), encoded.bytes);
        }
    }
    let line = r#"{"sequence":1,"eventId":"6c1e7d1a-3f77-4a53-9c55-0c7a9d4c0001","eventType":"X","timestamp":"2024-01-01T00:00:00.000000000Z","metadata":{},"append":{"first":1,"last":1},"data":{}}"#;
    for (name, text) in [
        ("no-terminator", line.to_owned()),
        ("crlf", format!("{line}\r\n")),
        (
            "data-and-text",
            line.replace(r#""data":{}"#, r#""data":{},"dataText":"{}""#) + "\n",
        ),
        ("neither-data", line.replace(r#","data":{}"#, "") + "\n"),
        (
            "data-text-not-json",
            line.replace(r#""data":{}"#, r#""dataText":"{x""#) + "\n",
        ),
        (
            "span-inverted",
            line.replace(r#""first":1,"last":1"#, r#""first":2,"last":1"#) + "\n",
        ),
        (
            "span-zero",
            line.replace(r#""first":1,"last":1"#, r#""first":0,"last":1"#) + "\n",
        ),
        (
            "offset-time",
            line.replace("00.000000000Z", "00+01:00") + "\n",
        ),
        (
            "year-edge-time",
            line.replace(
                "2024-01-01T00:00:00.000000000Z",
                "9999-12-31T23:59:59-01:00",
            ) + "\n",
        ),
        ("bom", format!("\u{feff}{line}\n")),
        ("empty-line", "\n".to_owned()),
        ("two-lines-one-bad", format!("{line}\n{{}}\n")),
    ] {
        push(out, T, name, text);
    }
}

fn table_entity(out: &mut Vec<Seed>) {
    const T: &str = "table_entity";
    let partition = "Bank|Account|O'Brien";
    let mut datas = datas();
    datas.push(("chunked", format!(r#"{{"s":"{}"}}"#, "x".repeat(70_000))));
    for (i, (name, data)) in datas.into_iter().enumerate() {
        for (j, metadata) in metadatas().into_iter().enumerate() {
            let Some(event) = new_event(i as u128, "Deposited", &data, metadata) else {
                continue;
            };
            let time = TIMES[(i + j) % TIMES.len()];
            let encoded = table::encode_event(partition, &event, time).ok();
            let entity = encoded.and_then(|encoded| {
                encoded
                    .entity(partition, &table::event_row_key(1 + i as u64))
                    .ok()
            });
            if let Some(mut entity) = entity {
                // What the service adds to every entity it returns.
                entity.insert(
                    "odata.etag".into(),
                    json!("W/\"datetime'2024-01-01T00%3A00%3A00Z'\""),
                );
                entity.insert("Timestamp".into(), json!("2024-01-01T00:00:00.1234567Z"));
                push(
                    out,
                    T,
                    format!("{name}-{j}"),
                    Value::Object(entity).to_string(),
                );
            }
        }
    }
    let good = json!({
        "PartitionKey": partition, "RowKey": "E-0000000007",
        "EventId": id(7).to_string(), "EventType": "Deposited",
        "Recorded@odata.type": "Edm.DateTime", "Recorded": "2024-01-01T00:00:00.1234567Z",
        "SchemaVersion@odata.type": "Edm.Int64", "SchemaVersion": "2",
        "Data": "{\"amount\":", "Data01": "\"12.50\"}",
    });
    let edits: Vec<(&str, &str, Value)> = vec![
        ("data-missing", "Data", Value::Null),
        ("data-number", "Data", json!(5)),
        ("chunk-gap", "Data01", Value::Null),
        ("row-key-11-digits", "RowKey", json!("E-99999999999")),
        ("row-key-header", "RowKey", json!("HEAD")),
        (
            "event-id-braces",
            "EventId",
            json!(format!("{{{}}}", id(7))),
        ),
        (
            "recorded-offset",
            "Recorded",
            json!("2024-01-01T00:00:00+05:30"),
        ),
        (
            "recorded-year-edge",
            "Recorded",
            json!("9999-12-31T23:59:59-01:00"),
        ),
        (
            "recorded-leap-second",
            "Recorded",
            json!("2016-12-31T23:59:60Z"),
        ),
        ("schema-version-big", "SchemaVersion", json!("99999999999")),
        ("schema-version-number", "SchemaVersion", json!(3)),
        ("schema-version-negative", "SchemaVersion", json!("-1")),
        ("event-type-number", "EventType", json!(1)),
    ];
    for (name, field, value) in edits {
        let mut row = good.clone();
        if let Some(object) = row.as_object_mut() {
            if value.is_null() {
                object.remove(field);
            } else {
                object.insert(field.to_owned(), value);
            }
        }
        push(out, T, name, row.to_string());
    }
    // The other rows of a partition.
    let mut header = table::with_keys(partition, "HEAD", &serde_json::Map::new());
    header.insert("Version@odata.type".into(), json!("Edm.Int64"));
    header.insert("Version".into(), json!("9999999999"));
    push(out, T, "header", Value::Object(header).to_string());
    let id_row = json!({
        "PartitionKey": partition, "RowKey": format!("ID-{}", id(3)),
        "Sequence": "3", "FirstSequence": "2", "LastSequence": 4,
    });
    push(out, T, "event-id-row", id_row.to_string());
    let json_text = json!({
        "PartitionKey": partition, "RowKey": "SNAP", "DataChunks@odata.type": "Edm.Int64",
        "DataChunks": "2", "Data": "{\"balance\":", "Data01": "\"1.00\"}",
    });
    push(out, T, "json-text", json_text.to_string());
}

fn stream(instance: &str) -> Option<StreamId> {
    StreamId::new("Bank", "Account", instance).ok()
}

fn recorded(sequence: u64, data: &str) -> Option<RecordedEvent> {
    Some(RecordedEvent {
        sequence,
        event_id: id(u128::from(sequence)),
        event_type: "Added".into(),
        data: RawValue::from_string(data.to_owned()).ok()?,
        timestamp: TIMES[0],
        metadata: EventMetadata {
            correlation_id: Some("c-1".into()),
            ..EventMetadata::default()
        },
    })
}

/// Real notifications: for the stream the fuzzing app holds (`A-1`, 3 events) and others.
fn notifications() -> Vec<(String, Notification)> {
    let mut out = Vec::new();
    for (instance, sequence, data) in [
        ("A-1", 1, r#"{"n":1}"#),
        ("A-1", 3, r#"{"n":3}"#),
        ("A-1", 9, r#"{"n":9}"#),
        ("O'Brien ünï", 1, r#"{"amount":0.10000000000000000001}"#),
        ("B-2", 2, "null"),
    ] {
        let (Some(stream), Some(event)) = (stream(instance), recorded(sequence, data)) else {
            continue;
        };
        // File names stay ASCII whatever the key.
        let label: String = instance
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || c == '-' {
                    c
                } else {
                    '_'
                }
            })
            .collect();
        for kind in [NotificationKind::NewEvent, NotificationKind::NewEntity] {
            let n = Notification::build(kind, &stream, &event);
            out.push((format!("{label}-{sequence}-{}", kind.as_str()), n.clone()));
            if sequence == 3 {
                out.push((
                    format!("{label}-{sequence}-{}-ref", kind.as_str()),
                    n.without_payload(),
                ));
            }
        }
    }
    out
}

fn encoded(schema: NotificationSchema, n: &Notification) -> Value {
    schema
        .encode(n)
        .ok()
        .and_then(|bytes| serde_json::from_slice(&bytes).ok())
        .unwrap_or(Value::Null)
}

const SCHEMAS: [(&str, NotificationSchema); 2] = [
    ("eg", NotificationSchema::EventGridEvent),
    ("ce", NotificationSchema::CloudEvent),
];

fn notification(out: &mut Vec<Seed>) {
    const T: &str = "notification";
    for (name, n) in notifications() {
        for (s, schema) in SCHEMAS {
            let event = encoded(schema, &n);
            push(out, T, format!("{s}-{name}"), event.to_string());
            if name.ends_with("A-1-1-NewEvent") {
                push(
                    out,
                    T,
                    format!("{s}-{name}-as-string"),
                    Value::String(event.to_string()).to_string(),
                );
                let mut data_as_string = event.clone();
                data_as_string["data"] = Value::String(event["data"].to_string());
                push(
                    out,
                    T,
                    format!("{s}-{name}-data-as-string"),
                    data_as_string.to_string(),
                );
                let mut bad_id = event.clone();
                bad_id["id"] = json!("not-a-uuid");
                push(out, T, format!("{s}-{name}-bad-id"), bad_id.to_string());
                let mut no_data = event.clone();
                if let Some(o) = no_data.as_object_mut() {
                    o.remove("data");
                }
                push(out, T, format!("{s}-{name}-no-data"), no_data.to_string());
            }
        }
    }
    push(
        out,
        T,
        "validation-event",
        r#"{"id":"1","eventType":"Microsoft.EventGrid.SubscriptionValidationEvent","subject":"","eventTime":"2024-01-01T00:00:00Z","dataVersion":"1","data":{"validationCode":"abc"}}"#,
    );
    push(out, T, "not-object", "[1,2]");
    push(out, T, "string-of-string", r#""\"{}\"""#);
}

fn invocation(out: &mut Vec<Seed>) {
    const T: &str = "invocation";
    for (name, n) in notifications() {
        for (s, schema) in SCHEMAS {
            let event = encoded(schema, &n);
            let body =
                json!({"Data": {"event": event}, "Metadata": {"sys": {"MethodName": "Projector"}}});
            push(out, T, format!("{s}-{name}"), body.to_string());
            if name.starts_with("A-1-1") {
                let once = json!({"Data": {"event": event.to_string()}, "Metadata": {}});
                push(out, T, format!("{s}-{name}-string"), once.to_string());
                let twice =
                    json!({"Data": {"event": Value::String(event.to_string()).to_string()}});
                push(
                    out,
                    T,
                    format!("{s}-{name}-string-twice"),
                    twice.to_string(),
                );
            }
        }
    }
    let deep = format!("{}{}", "[".repeat(300), "]".repeat(300));
    push(out, T, "no-binding", r#"{"Data":{},"Metadata":{}}"#);
    push(out, T, "empty", "");
    push(out, T, "not-json", "Data=1");
    push(
        out,
        T,
        "foreign-event",
        r#"{"Data":{"event":{"id":"x","data":{}}}}"#,
    );
    push(
        out,
        T,
        "deep-metadata",
        format!(r#"{{"Data":{{"event":{{}}}},"Metadata":{{"x":{deep}}}}}"#),
    );
    push(
        out,
        T,
        "huge-number",
        r#"{"Data":{"event":{"id":"1","data":{"n":1e400}}}}"#,
    );
    push(out, T, "data-array", r#"{"Data":[1],"Metadata":null}"#);
}

fn eventgrid_webhook(out: &mut Vec<Seed>) {
    const T: &str = "eventgrid_webhook";
    // Mode bytes: 0 notification, 1 validation, 2 unsubscribe, 3 CloudEvents content type.
    let with_mode = |mode: u8, body: &str| {
        let mut bytes = vec![mode];
        bytes.extend_from_slice(body.as_bytes());
        bytes
    };
    let all = notifications();
    for (s, schema) in SCHEMAS {
        let events: Vec<Value> = all.iter().map(|(_, n)| encoded(schema, n)).collect();
        let mode = if s == "ce" { 3 } else { 0 };
        push(
            out,
            T,
            format!("{s}-batch"),
            with_mode(mode, &Value::Array(events.clone()).to_string()),
        );
        push(
            out,
            T,
            format!("{s}-single"),
            with_mode(mode, &events[0].to_string()),
        );
        let mut mixed = events[..2].to_vec();
        mixed.push(json!({"id": "x"}));
        push(
            out,
            T,
            format!("{s}-with-foreign"),
            with_mode(mode, &Value::Array(mixed).to_string()),
        );
        let many: Vec<Value> = std::iter::repeat_n(events[0].clone(), 200).collect();
        push(
            out,
            T,
            format!("{s}-200-copies"),
            with_mode(mode, &Value::Array(many).to_string()),
        );
    }
    let validation = r#"[{"id":"1","eventType":"Microsoft.EventGrid.SubscriptionValidationEvent","subject":"","eventTime":"2024-01-01T00:00:00Z","dataVersion":"1","data":{"validationCode":"abc-123","validationUrl":"https://x"}}]"#;
    push(out, T, "validation", with_mode(1, validation));
    push(
        out,
        T,
        "validation-data-string",
        with_mode(
            1,
            &validation.replace(
                r#""data":{"validationCode":"abc-123","validationUrl":"https://x"}"#,
                r#""data":"{\"validationCode\":\"abc\"}""#,
            ),
        ),
    );
    push(out, T, "validation-empty", with_mode(1, "[]"));
    push(out, T, "unsubscribe", with_mode(2, "[]"));
    push(out, T, "unknown-kind", with_mode(4, "[]"));
    push(out, T, "empty-array", with_mode(0, "[]"));
    push(out, T, "not-json", with_mode(0, "[{"));
    push(out, T, "number", with_mode(0, "1"));
    push(
        out,
        T,
        "deep",
        with_mode(0, &format!("[{}{}]", "[".repeat(300), "]".repeat(300))),
    );
    push(
        out,
        T,
        "huge-number-payload",
        with_mode(
            0,
            r#"[{"id":"6c1e7d1a-3f77-4a53-9c55-0c7a9d4c0001","subject":"s","eventType":"t","eventTime":"2024-01-01T00:00:00Z","data":{"payload":{"n":1e400}}}]"#,
        ),
    );
}

fn connection_string(out: &mut Vec<Seed>) {
    const T: &str = "connection_string";
    let key = crate::storage::connection::DEVELOPMENT_ACCOUNT_KEY;
    for (name, text) in [
        ("development", "UseDevelopmentStorage=true".to_owned()),
        ("development-proxy", "UseDevelopmentStorage=true;DevelopmentStorageProxyUri=http://127.0.0.1".to_owned()),
        ("development-false", "UseDevelopmentStorage=false".to_owned()),
        ("account-key", format!("DefaultEndpointsProtocol=https;AccountName=acct;AccountKey={key};EndpointSuffix=core.windows.net")),
        ("account-key-http", format!("DefaultEndpointsProtocol=http;AccountName=devstoreaccount1;AccountKey={key};BlobEndpoint=http://127.0.0.1:10000/devstoreaccount1;TableEndpoint=http://127.0.0.1:10002/devstoreaccount1;")),
        ("explicit-endpoints", format!("AccountName=acct;AccountKey={key};BlobEndpoint=https://acct.blob.example.com/;TableEndpoint=https://acct.table.example.com")),
        ("sas", "BlobEndpoint=https://acct.blob.core.windows.net/;TableEndpoint=https://acct.table.core.windows.net/;SharedAccessSignature=sv=2022-11-02&ss=bt&srt=sco&sp=rwdlacu&se=2030-01-01T00:00:00Z&sig=abc%2Bdef%3D".to_owned()),
        ("sas-leading-question-mark", "TableEndpoint=https://acct.table.core.windows.net;SharedAccessSignature=?sv=1&sig=x".to_owned()),
        ("sovereign-suffix", format!("AccountName=acct;AccountKey={key};EndpointSuffix=core.chinacloudapi.cn")),
        ("duplicate-keys", format!("AccountName=a;AccountName=b;AccountKey={key}")),
        ("lowercase-names", format!("accountname=acct;accountkey={key}")),
        ("spaces", format!(" AccountName = acct ; AccountKey = {key} ")),
        ("bad-base64-key", "AccountName=acct;AccountKey=not base64!".to_owned()),
        ("empty-values", "AccountName=;AccountKey=;".to_owned()),
        ("no-equals", "AccountName".to_owned()),
        ("only-semicolons", ";;;".to_owned()),
        ("empty", String::new()),
        ("endpoint-not-url", format!("AccountName=acct;AccountKey={key};BlobEndpoint=::nope")),
        ("endpoint-with-query", format!("AccountName=acct;AccountKey={key};TableEndpoint=https://h/p?q=1#f")),
        ("unicode-account", format!("AccountName=ünï;AccountKey={key}")),
        ("quoted", format!("\"AccountName=acct;AccountKey={key}\"")),
        ("port-overflow", format!("AccountName=acct;AccountKey={key};BlobEndpoint=http://127.0.0.1:99999/x")),
    ] {
        push(out, T, name, text);
    }
}

fn settings(out: &mut Vec<Seed>) {
    const T: &str = "settings";
    let azurite = "UseDevelopmentStorage=true";
    for (name, text) in [
        ("empty", String::new()),
        ("default-table", format!("AzureWebJobsStorage={azurite}")),
        ("blob-entity", format!("AzureWebJobsStorage={azurite}\nBank.Account=AppendBlob;AzureWebJobsStorage")),
        ("dot-free", format!("AzureWebJobsStorage={azurite}\nStreamfold__Bank__Account=Table;AzureWebJobsStorage")),
        ("wildcards", format!("Other={azurite}\nALL.ALL=Table;Other\nBank.ALL=AppendBlob;Other\nALL.Account=Table;Other")),
        ("missing-connection", "Bank.Account=Table;Nowhere".to_owned()),
        ("bad-kind", format!("AzureWebJobsStorage={azurite}\nBank.Account=Cosmos;AzureWebJobsStorage")),
        ("no-semicolon", format!("AzureWebJobsStorage={azurite}\nBank.Account=Table")),
        ("numbers", "StreamfoldSnapshotEvery=0\nStreamfoldStateCacheMiB=18446744073709551615\nStreamfoldConflictRetries=-1\nFUNCTIONS_CUSTOMHANDLER_PORT=65536".to_owned()),
        ("numbers-ok", "StreamfoldSnapshotEvery=1\nStreamfoldStateCacheMiB=0\nStreamfoldConflictRetries=0\nFUNCTIONS_CUSTOMHANDLER_PORT=7072\nStreamfoldNotificationSweepLimit=1".to_owned()),
        ("sweep-zero", "StreamfoldNotificationSweepLimit=0".to_owned()),
        ("topic", format!("AzureWebJobsStorage={azurite}\nEventGridTopicEndpoint=https://t.westeurope-1.eventgrid.azure.net/api/events\nEventGridKeyValue=a2V5\nNotificationSchema=CloudEvent")),
        ("topic-no-key", "EventGridTopicEndpoint=https://t.westeurope-1.eventgrid.azure.net/api/events".to_owned()),
        ("key-both", "EventGridTopicEndpoint=https://t/api/events\nEventGridKeyValue=k\nEventGridKeySettingName=Other\nOther=k2".to_owned()),
        ("key-setting", "EventGridTopicEndpoint=http://127.0.0.1:1/api/events\nEventGridKeySettingName=Secret\nSecret=s3cr3t".to_owned()),
        ("raise-switches", format!("AzureWebJobsStorage={azurite}\nRaiseEntityCreationNotification=false\nRaiseEventNotification=TRUE")),
        ("raise-bad", "RaiseEventNotification=yes".to_owned()),
        ("schema-bad", "NotificationSchema=Avro".to_owned()),
        ("local-url", format!("AzureWebJobsStorage={azurite}\nStreamfoldLocalEventGridUrl=http://localhost:7071/runtime/webhooks/EventGrid?functionName=Projector")),
        ("in-azure", format!("AzureWebJobsStorage={azurite}\nWEBSITE_INSTANCE_ID=abc")),
        ("read-model-storage", format!("Models={azurite}\nStreamfoldReadModelStorage=Models")),
        ("read-model-missing", "StreamfoldReadModelStorage=Nothing".to_owned()),
        ("bad-connection", "AzureWebJobsStorage=AccountName=x".to_owned()),
        ("odd-names", format!("AzureWebJobsStorage={azurite}\n1Bank.Account=Table;AzureWebJobsStorage\nBank..Account=Table;AzureWebJobsStorage\nStreamfold____=x")),
    ] {
        push(out, T, name, text);
    }
}

fn stream_key(out: &mut Vec<Seed>) {
    const T: &str = "stream_key";
    let long = "ü".repeat(128);
    for (name, text) in [
        ("plain", "Bank/Account/ACC-1".to_owned()),
        ("quote", "Bank/Account/O'Brien".to_owned()),
        (
            "percent-encoded",
            "Bank/Account/O%27Brien%2050%25%20a%2Bb".to_owned(),
        ),
        ("plus", "Bank/Account/a+b".to_owned()),
        ("nfc", "Bank/Account/\u{00fc}".to_owned()),
        ("nfd", "Bank/Account/u\u{0308}".to_owned()),
        ("emoji", "Bank/Account/😀".to_owned()),
        ("256-bytes", format!("Bank/Account/{long}")),
        ("257-bytes", format!("Bank/Account/{long}x")),
        ("dots", "Bank/Account/..".to_owned()),
        ("edge-dots", "Bank/Account/.a.".to_owned()),
        ("slash-encoded", "Bank/Account/a%2Fb".to_owned()),
        ("bad-percent", "Bank/Account/%C3".to_owned()),
        ("control", "Bank/Account/a\u{85}b".to_owned()),
        ("pipe", "Bank/Account/a|b".to_owned()),
        ("brace", "Bank/Account/a}b".to_owned()),
        (
            "long-names",
            format!("{}/{}/x", "B".repeat(32), "A".repeat(32)),
        ),
        ("blob-name", "Bank/Account/O%27Brien/".to_owned()),
        ("blob-name-lowercase-hex", "Bank/Account/%c3%bc/".to_owned()),
        ("blob-segment", "Bank/Account/A-1/000012.jsonl".to_owned()),
        (
            "blob-segment-long",
            "Bank/Account/A-1/1234567.jsonl".to_owned(),
        ),
        (
            "blob-segment-padded",
            "Bank/Account/A-1/0000012.jsonl".to_owned(),
        ),
        ("escaped", "%2Ea%2E".to_owned()),
        ("escaped-noncanonical", "%41".to_owned()),
        ("row-key", "E-0000000001".to_owned()),
        ("row-key-max", "E-9999999999".to_owned()),
        ("row-key-sign", "E-+000000001".to_owned()),
        ("id-row-key", format!("ID-{}", id(1))),
    ] {
        push(out, T, name, text);
    }
}

fn continuation(out: &mut Vec<Seed>) {
    const T: &str = "continuation";
    for (name, text) in [
        ("key", "A-1".to_owned()),
        ("between", "B".to_owned()),
        ("quote", "O'Brien".to_owned()),
        ("unicode", "ünï".to_owned()),
        ("last", "z".to_owned()),
        ("past-last", "zz".to_owned()),
        ("empty", String::new()),
        ("space-edge", " A".to_owned()),
        ("slash", "a/b".to_owned()),
        ("control", "a\u{1}".to_owned()),
        ("blob-marker", "2!88!MDAwMDI0IUJhbmsvQWNjb3VudC9BLTEvITAwMDAyOCE5OTk5LTEyLTMxVDIzOjU5OjU5Ljk5OTk5OTlaIQ--".to_owned()),
        ("marker-1025", "m".repeat(1025)),
        ("key-256", "k".repeat(256)),
        ("key-257", "k".repeat(257)),
        ("odata-injection", "x' or PartitionKey ne '".to_owned()),
        ("pipe", "A|B".to_owned()),
    ] {
        push(out, T, name, text);
    }
}

fn request(method: &str, target: &str, headers: &[&str], body: &str) -> String {
    let mut text = format!("{method} {target}\n");
    for header in headers {
        text.push_str(header);
        text.push('\n');
    }
    text.push('\n');
    text.push_str(body);
    text
}

fn requests(parts: &[String]) -> Vec<u8> {
    parts
        .join(std::str::from_utf8(REQUEST_SEPARATOR).unwrap_or("\n===\n"))
        .into_bytes()
}

fn http_request(out: &mut Vec<Seed>) {
    const T: &str = "http_request";
    let json = ["content-type: application/json"];
    let append = |path: &str, body: &str| request("POST", path, &json, body);
    let event = r#"{"eventType":"Added","data":{"n":5},"eventId":"6c1e7d1a-3f77-4a53-9c55-0c7a9d4c0099","metadata":{"correlationId":"c","commentary":"x","schemaVersion":2}}"#;
    let body = |expected: &str| format!(r#"{{"expectedVersion":{expected},"events":[{event}]}}"#);
    for (name, parts) in [
        ("append-then-read", vec![append("/api/streams/Bank/Account/B-1", &body("\"noStream\"")), request("GET", "/api/streams/Bank/Account/B-1", &[], "")]),
        ("append-retry", vec![append("/api/streams/Bank/Account/A-1", &body("3")), append("/api/streams/Bank/Account/A-1", &body("3"))]),
        ("append-any", vec![append("/api/streams/Bank/Account/A-1", &body("\"any\""))]),
        ("append-exists", vec![append("/api/streams/Bank/Account/A-1", &body("\"exists\""))]),
        ("append-conflict", vec![append("/api/streams/Bank/Account/A-1", &body("1"))]),
        ("append-version-huge", vec![append("/api/streams/Bank/Account/A-1", &body("18446744073709551615"))]),
        ("append-version-beyond-u64", vec![append("/api/streams/Bank/Account/A-1", &body("18446744073709551616"))]),
        ("append-version-negative", vec![append("/api/streams/Bank/Account/A-1", &body("-1"))]),
        ("append-version-float", vec![append("/api/streams/Bank/Account/A-1", &body("3.0"))]),
        ("append-no-events", vec![append("/api/streams/Bank/Account/C-1", r#"{"events":[]}"#)]),
        ("append-bad-json", vec![append("/api/streams/Bank/Account/C-1", r#"{"events":[{"#)]),
        ("append-unknown-field", vec![append("/api/streams/Bank/Account/C-1", r#"{"events":[],"x":1}"#)]),
        ("append-forged-source", vec![append("/api/streams/Bank/Account/C-1", r#"{"events":[{"eventType":"Added","data":{},"metadata":{"source":"streamfold-bank","who":"admin"}}]}"#)]),
        ("append-deep-data", vec![append("/api/streams/Bank/Account/C-1", &format!(r#"{{"events":[{{"eventType":"Added","data":{}{}}}]}}"#, "[".repeat(300), "]".repeat(300)))]),
        ("append-bom", vec![append("/api/streams/Bank/Account/C-1", &format!("\u{feff}{}", body("\"any\"")))]),
        ("append-event-type-long", vec![append("/api/streams/Bank/Account/C-1", &format!(r#"{{"events":[{{"eventType":"{}","data":1}}]}}"#, "E".repeat(129)))]),
        ("append-quoted-key", vec![append("/api/streams/Bank/Account/O%27Brien%20%C3%BC", &body("\"noStream\"")), request("GET", "/api/streams/Bank/Account?pageSize=1", &[], "")]),
        ("read-ranges", vec![request("GET", "/api/streams/Bank/Account/A-1?fromSequence=2&toSequence=3", &[], ""), request("GET", "/api/streams/Bank/Account/A-1?fromSequence=3&toSequence=2", &[], ""), request("GET", "/api/streams/Bank/Account/A-1?fromSequence=0", &[], ""), request("GET", "/api/streams/Bank/Account/A-1?fromSequence=18446744073709551616", &[], "")]),
        ("read-as-of", vec![request("GET", "/api/streams/Bank/Account/A-1?asOf=2024-01-01T00:00:00Z", &[], ""), request("GET", "/api/streams/Bank/Account/A-1?asOf=9999-12-31T23:30:00-05:00", &[], ""), request("GET", "/api/streams/Bank/Account/A-1?asOf=0000-01-01T00:00:00%2B01:00", &[], ""), request("GET", "/api/streams/Bank/Account/A-1?asOf=yesterday", &[], "")]),
        ("read-unknown", vec![request("GET", "/api/streams/Bank/Account/none", &[], "")]),
        ("list-pages", vec![append("/api/streams/Bank/Account/B-1", &body("\"noStream\"")), request("GET", "/api/streams/Bank/Account?pageSize=1", &[], ""), request("GET", "/api/streams/Bank/Account?pageSize=1&continuation=A-1", &[], ""), request("GET", "/api/streams/Bank/Account?pageSize=0", &[], "")]),
        ("list-bad", vec![request("GET", "/api/streams/Bank/Account?continuation=a%2Fb", &[], ""), request("GET", "/api/streams/Bank/Account?pageSize=100000", &[], ""), request("GET", "/api/streams/Bank/Account?pageSize=-1&pageSize=2", &[], ""), request("GET", "/api/streams/1Bank/Account", &[], "")]),
        ("projection", vec![request("GET", "/api/projections/Bank/Account/A-1/sum", &[], ""), request("GET", "/api/projections/Bank/Account/A-1/count?asOfSequence=2", &[], ""), request("GET", "/api/projections/Bank/Account/A-1/sum?asOf=2024-01-01T00:00:00Z", &[], ""), request("GET", "/api/projections/Bank/Account/A-1/nope", &[], "")]),
        ("projection-overflow", vec![append("/api/streams/Bank/Account/A-1", r#"{"expectedVersion":3,"events":[{"eventType":"Added","data":{"n":9223372036854775807}}]}"#), request("GET", "/api/projections/Bank/Account/A-1/sum", &[], "")]),
        ("projection-bad-data", vec![append("/api/streams/Bank/Account/A-1", r#"{"events":[{"eventType":"Added","data":{"n":"x"}}]}"#), request("GET", "/api/projections/Bank/Account/A-1/sum", &[], "")]),
        ("projection-as-of-both", vec![request("GET", "/api/projections/Bank/Account/A-1/sum?asOf=2024-01-01T00:00:00Z&asOfSequence=1", &[], ""), request("GET", "/api/projections/Bank/Account/A-1/sum?asOfSequence=0", &[], "")]),
        ("correlation-header", vec![request("POST", "/api/streams/Bank/Account/A-1", &["content-type: application/json", "x-correlation-id: abc-123"], &body("3")), request("POST", "/api/streams/Bank/Account/A-1", &["x-correlation-id: \u{7f}bad"], &body("4"))]),
        ("openapi", vec![request("GET", "/api/openapi.json", &[], "")]),
        ("unknown-routes", vec![request("GET", "/api/NoSuchFunction/1", &[], ""), request("POST", "/NoSuchFunction", &[], ""), request("DELETE", "/api/streams/Bank/Account/A-1", &[], ""), request("GET", "/api/", &[], "")]),
        ("webhook-options", vec![request("OPTIONS", "/api/eventgrid", &["webhook-request-origin: eventgrid.azure.net"], ""), request("OPTIONS", "/api/eventgrid", &[], "")]),
        ("sweep", vec![request("POST", "/NotificationSweep", &json, r#"{"Data":{},"Metadata":{}}"#)]),
    ] {
        push(out, T, name, requests(&parts));
    }
}

fn amount(out: &mut Vec<Seed>) {
    const T: &str = "amount";
    for (name, text) in [
        ("integer", "12"),
        ("decimal", "12.5"),
        ("two-places", "\"12.50\""),
        ("cent", "\"0.01\""),
        ("zero", "0"),
        ("negative", "-1"),
        ("max", "\"1000000000000000.00\""),
        ("over-max", "1000000000000000.01"),
        ("three-places", "1.001"),
        ("trailing-zero-places", "12.500"),
        ("exponent", "1e2"),
        ("exponent-string", "\"1e2\""),
        ("huge-exponent", "1e400"),
        ("underscore", "\"1_000\""),
        ("hex", "\"0x10\""),
        ("plus", "\"+5\""),
        ("spaces", "\" 5 \""),
        ("leading-zeros", "\"007\""),
        ("no-integer", "\".5\""),
        ("decimal-max", "\"79228162514264337593543950335\""),
        ("long-fraction", "0.10000000000000000001"),
        ("true", "true"),
        ("null", "null"),
        ("object", "{}"),
        ("empty-string", "\"\""),
        ("nan", "\"NaN\""),
        ("fullwidth-digit", "\"１\""),
        ("escaped-digit", "\"\\u0031\""),
    ] {
        push(out, T, name, text);
    }
}
