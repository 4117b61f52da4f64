//! The custom handler's JSON invocation payload, used by every function whose trigger is not
//! a forwarded HTTP request (Event Grid, timer).
//!
//! The host posts `{"Data": {<binding>: <value>}, "Metadata": {...}}` to `/{FunctionName}` and
//! reads back `{"Outputs": {...}, "Logs": [...], "ReturnValue": ...}`. A non-2xx answer fails the
//! invocation (Event Grid then redelivers) and the host drops its `Logs`, so everything logged
//! here also goes to stdout through `tracing`.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// How many times a binding value that arrives as a JSON string is decoded.
const MAX_STRING_DECODES: usize = 2;

/// What the host sends.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct InvocationRequest {
    #[serde(rename = "Data", default)]
    pub data: Map<String, Value>,
    #[serde(rename = "Metadata", default)]
    pub metadata: Map<String, Value>,
}

impl InvocationRequest {
    /// The value of an input binding. The host sends objects as JSON and strings JSON-encoded
    /// (sometimes twice), so a string that holds JSON is decoded, at most twice.
    pub fn binding(&self, name: &str) -> Option<Value> {
        let mut value = self.data.get(name)?.clone();
        for _ in 0..MAX_STRING_DECODES {
            let Value::String(text) = &value else { break };
            match serde_json::from_str::<Value>(text) {
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
        assert_eq!(request.binding("a").unwrap()["id"], "1");
        assert_eq!(request.binding("b").unwrap()["id"], "2");
        assert_eq!(request.binding("c").unwrap(), "plain");
        assert!(request.binding("d").is_none());
        assert_eq!(request.binding("e").unwrap()["id"], "3");
    }
}
