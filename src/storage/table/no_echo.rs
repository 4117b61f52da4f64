//! A pipeline policy that asks Table storage not to echo inserted entities back in the answers
//! of transactions built by `azure_data_tables` (`Prefer: return-no-content` added to each
//! insert inside the `$batch` body). The backend no longer needs it: its own encoder
//! (`batch_request`) writes the header. It is kept, for tests only (`testing` feature), so that a
//! test can show against Azurite that the header turns `201 Created` with the entity into
//! `204 No Content`.
//!
//! Guarantees:
//! - only `POST .../$batch` requests with an in-memory UTF-8 body are changed, and in them only
//!   the request lines of inserts (`POST <url> HTTP/1.1` at the start of a line: entity bodies
//!   are one line of JSON and never start that way); anything else passes untouched;
//! - the `Content-Length` header is set to the new length. Table storage's shared-key signature
//!   does not cover the body or its length, so the signature stays valid in any policy order;
//! - a body that already has the header (a retry of the same request) is not changed again;
//! - a body the crate frames differently than expected is sent unchanged: storage then echoes
//!   the entities, which costs time but changes no outcome (an insert is `201` or `204`, both
//!   success).

use std::sync::Arc;

use async_trait::async_trait;
use azure_core::headers::CONTENT_LENGTH;
use azure_core::{Body, Context, Method, Policy, PolicyResult, Request};

use crate::storage::connection::send_next;

/// Header line added after the request line of each insert inside a transaction body.
pub const PREFER_NO_CONTENT: &str = "Prefer: return-no-content";
/// Last path segment of an entity group transaction request.
const BATCH_PATH_SUFFIX: &str = "/$batch";
/// How an insert's request line starts and ends in a transaction body.
const INSERT_LINE_START: &str = "POST ";
const REQUEST_LINE_END: &str = " HTTP/1.1";

/// The pipeline policy that adds [`PREFER_NO_CONTENT`] to the inserts of a transaction.
#[derive(Debug)]
pub struct NoEchoPolicy;

impl NoEchoPolicy {
    /// The policy, ready to push onto `ClientOptions::per_call_policies_mut()`.
    pub fn shared() -> Arc<dyn Policy> {
        Arc::new(Self)
    }
}

#[async_trait]
impl Policy for NoEchoPolicy {
    async fn send(
        &self,
        ctx: &Context,
        request: &mut Request,
        next: &[Arc<dyn Policy>],
    ) -> PolicyResult {
        if *request.method() == Method::Post && request.url().path().ends_with(BATCH_PATH_SUFFIX) {
            if let Body::Bytes(bytes) = request.body() {
                if let Some(body) = std::str::from_utf8(bytes).ok().and_then(without_echo) {
                    request.insert_header(CONTENT_LENGTH, body.len().to_string());
                    request.set_body(body);
                }
            }
        }
        send_next(ctx, request, next, "no-echo").await
    }
}

/// `body` with [`PREFER_NO_CONTENT`] after every insert's request line that does not have it
/// yet, or `None` if nothing needs it.
fn without_echo(body: &str) -> Option<String> {
    let mut changed = false;
    let mut out = String::with_capacity(body.len() + 1024);
    let mut lines = body.split_inclusive('\n').peekable();
    while let Some(line) = lines.next() {
        out.push_str(line);
        let bare = line.trim_end_matches(['\r', '\n']);
        let is_insert = bare.starts_with(INSERT_LINE_START) && bare.ends_with(REQUEST_LINE_END);
        let has_header = lines
            .peek()
            .is_some_and(|next| next.trim_end_matches(['\r', '\n']) == PREFER_NO_CONTENT);
        if is_insert && !has_header {
            out.push_str(PREFER_NO_CONTENT);
            out.push_str(if line.ends_with("\r\n") { "\r\n" } else { "\n" });
            changed = true;
        }
    }
    changed.then_some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn inserts_get_the_header_and_nothing_else_changes() {
        let body = "--batch_1\nContent-Type: multipart/mixed; boundary=changeset_2\n\n\
                    --changeset_2\nContent-Type: application/http\n\n\
                    MERGE http://h/t(PartitionKey='p',RowKey='HEAD') HTTP/1.1\nIf-Match: *\n\n{}\n\
                    --changeset_2\nContent-Type: application/http\n\n\
                    POST http://h/t HTTP/1.1\naccept: application/json\n\n\
                    {\"Data\":\"POST x HTTP/1.1\"}\n--changeset_2--\n--batch_1\n";
        let changed = without_echo(body).unwrap();
        assert_eq!(changed.matches(PREFER_NO_CONTENT).count(), 1);
        assert!(changed.contains("POST http://h/t HTTP/1.1\nPrefer: return-no-content\naccept"));
        assert_eq!(changed.replace("Prefer: return-no-content\n", ""), body);
        assert_eq!(
            without_echo(&changed),
            None,
            "a retried request is not changed twice"
        );

        let crlf = "--changeset_2\r\nPOST http://h/t HTTP/1.1\r\n\r\n{}\r\n";
        assert!(without_echo(crlf)
            .unwrap()
            .contains("HTTP/1.1\r\nPrefer: return-no-content\r\n\r\n"));

        assert_eq!(without_echo("MERGE http://h/t HTTP/1.1\n\n{}\n"), None);
    }
}
