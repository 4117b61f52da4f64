//! The custom handler's JSON invocation payload, used by every function whose trigger is not
//! a forwarded HTTP request (Event Grid, timer).
//!
//! The host posts `{"Data": {<binding>: <value>}, "Metadata": {...}}` to `/{FunctionName}` and
//! reads back `{"Outputs": {...}, "Logs": [...], "ReturnValue": ...}`. A non-2xx answer fails the
//! invocation (Event Grid then redelivers) and the host drops its `Logs`, so everything logged
//! here also goes to stdout through `tracing`.

use std::collections::HashMap;

use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use serde_json::{Map, Value};

/// How many times a binding value that arrives as a JSON string is decoded.
const MAX_STRING_DECODES: usize = 2;

/// What the host sends. Binding values and metadata are kept as JSON text, never built into
/// `serde_json::Value`: an event may hold data nested deeper than a `Value` is parsed (128
/// levels) or numbers beyond `f64` (`1e400`), which the event store accepts, and a payload
/// that cannot be parsed would make the host deliver the same event again forever.
#[derive(Debug, Default, Deserialize)]
pub struct InvocationRequest {
    #[serde(rename = "Data", default)]
    pub data: HashMap<String, Box<RawValue>>,
    #[serde(rename = "Metadata", default)]
    pub metadata: HashMap<String, Box<RawValue>>,
}

impl InvocationRequest {
    /// The JSON text of an input binding. The host sends objects as JSON and strings
    /// JSON-encoded (sometimes twice), so a string that holds JSON is decoded, at most twice;
    /// a string that does not stays a JSON string.
    pub fn binding(&self, name: &str) -> Option<Box<RawValue>> {
        let mut value = self.data.get(name)?.clone();
        for _ in 0..MAX_STRING_DECODES {
            if !value.get().starts_with('"') {
                break;
            }
            let Ok(text) = serde_json::from_str::<String>(value.get()) else {
                break;
            };
            // `RawValue::from_string` checks that the text is one JSON value, at any depth.
            match RawValue::from_string(text) {
                Ok(decoded) => value = decoded,
                Err(_) => break,
            }
        }
        Some(value)
    }
}

/// What the handler answers.
#[derive(Debug, Clone, Default, Serialize)]
pub struct InvocationResponse {
    #[serde(rename = "Outputs")]
    pub outputs: Map<String, Value>,
    #[serde(rename = "Logs")]
    pub logs: Vec<String>,
    #[serde(rename = "ReturnValue")]
    pub return_value: Value,
}

impl InvocationResponse {
    /// Records a log line for the host and writes it to stdout too.
    pub fn log(&mut self, line: impl Into<String>) {
        let line = line.into();
        tracing::info!(target: "invocation", "{line}");
        self.logs.push(line);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bindings_arrive_as_objects_or_json_strings() {
        let request: InvocationRequest = serde_json::from_str(
            r#"{"Data":{"a":{"id":"1"},"b":"{\"id\":\"2\"}","c":"plain","e":"\"{\\\"id\\\":\\\"3\\\"}\""},"Metadata":{}}"#,
        )
        .unwrap();
        let id = |name: &str| {
            let text = request.binding(name).unwrap();
            serde_json::from_str::<Value>(text.get()).unwrap()["id"].clone()
        };
        assert_eq!(id("a"), "1");
        assert_eq!(id("b"), "2");
        assert_eq!(request.binding("c").unwrap().get(), "\"plain\"");
        assert!(request.binding("d").is_none());
        assert_eq!(id("e"), "3");
    }

    #[test]
    fn bindings_beyond_what_a_value_parses_are_kept_as_text() {
        let deep = format!("{}{}", "[".repeat(300), "]".repeat(300));
        let event = format!(r#"{{"id":"1","data":{{"payload":{deep},"n":1e400}}}}"#);
        let as_string = serde_json::to_string(&event).unwrap();
        for data in [event.clone(), as_string] {
            let payload = format!(r#"{{"Data":{{"event":{data}}},"Metadata":{{"x":{deep}}}}}"#);
            let request: InvocationRequest = serde_json::from_str(&payload).unwrap();
            assert_eq!(request.binding("event").unwrap().get(), event);
        }
    }
}
