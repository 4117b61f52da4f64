//! The `Idempotency-Key` request header (IETF httpapi draft "The Idempotency-Key HTTP Header
//! Field"), read for the commands that take one.
//!
//! Guarantees:
//! - the header is optional: without it a command runs as it always did;
//! - its value is read as the draft defines it, an RFC 8941 structured-field String: a quoted
//!   string of visible ASCII characters and spaces, with `\"` and `\\` the only escapes, and
//!   nothing after it (spaces around it are ignored). The key is the string's content, which
//!   must be 1 to [`MAX_IDEMPOTENCY_KEY_LEN`] characters;
//! - anything else (no quotes, a bad escape, a character outside the set, an empty or too long
//!   key, parameters or a list after the string, the header given twice) is 400
//!   `invalid-idempotency-key` naming the header and the reason, before anything is read or
//!   written.
//!
//! A replayed answer carries [`REPLAYED_HEADER`]` = true`.

use warp::http::HeaderMap;
use warp::{Filter, Rejection};

use super::problem::{reject, Problem};
use crate::projection::{IdempotencyKey, MAX_IDEMPOTENCY_KEY_LEN};

/// The request header carrying a command's idempotency key.
pub const IDEMPOTENCY_KEY_HEADER: &str = "idempotency-key";
/// The response header set on the answer of an earlier attempt (a replay).
pub const REPLAYED_HEADER: &str = "idempotent-replayed";

/// The request's idempotency key, if it has one (see the module guarantees).
pub fn idempotency_key(
) -> impl Filter<Extract = (Option<IdempotencyKey>,), Error = Rejection> + Clone {
    warp::header::headers_cloned()
        .and_then(|headers: HeaderMap| async move { key_from_headers(&headers).map_err(reject) })
}

/// The idempotency key among a request's `headers`, if it has one (see the module guarantees).
pub fn key_from_headers(headers: &HeaderMap) -> Result<Option<IdempotencyKey>, Problem> {
    let mut values = headers.get_all(IDEMPOTENCY_KEY_HEADER).iter();
    match (values.next(), values.next()) {
        (None, _) => Ok(None),
        (Some(value), None) => parse_header(value.as_bytes()).map(Some),
        (Some(_), Some(_)) => Err(invalid("the header is given more than once; send one key")),
    }
}

/// Reads one `Idempotency-Key` header value.
pub fn parse_header(value: &[u8]) -> Result<IdempotencyKey, Problem> {
    let content = parse_sf_string(value).map_err(invalid)?;
    IdempotencyKey::new(&content).map_err(|e| invalid(&e.0))
}

/// The content of an RFC 8941 String (section 4.2.5) that is the whole of `value` but for
/// surrounding spaces.
fn parse_sf_string(value: &[u8]) -> Result<String, &'static str> {
    let value = value.trim_ascii();
    let Some(rest) = value.strip_prefix(b"\"") else {
        return Err("it must be a quoted string, e.g. \"8e03978e-40d5-43e8-bc93-6894a57f9324\"");
    };
    let mut content = String::with_capacity(rest.len());
    let mut bytes = rest.iter();
    while let Some(&byte) = bytes.next() {
        match byte {
            b'\\' => match bytes.next() {
                Some(&escaped @ (b'"' | b'\\')) => content.push(char::from(escaped)),
                _ => return Err("only \\\" and \\\\ may follow a backslash"),
            },
            b'"' => {
                return if bytes.as_slice().is_empty() {
                    Ok(content)
                } else {
                    Err("nothing may follow the quoted string (no parameters, no second key)")
                };
            }
            b' '..=b'~' => content.push(char::from(byte)),
            _ => return Err("only visible ASCII characters and spaces may appear"),
        }
    }
    Err("the quoted string is not closed")
}

fn invalid(reason: &str) -> Problem {
    Problem::bad_request(
        "invalid-idempotency-key",
        format!(
            "Idempotency-Key: {reason} (a structured-field string of 1 to \
             {MAX_IDEMPOTENCY_KEY_LEN} visible ASCII characters or spaces)"
        ),
    )
    .with("header", "Idempotency-Key")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(value: &str) -> Result<String, Problem> {
        parse_header(value.as_bytes()).map(|k| k.as_str().to_owned())
    }

    #[test]
    fn a_structured_field_string_is_the_key() {
        for (value, expected) in [
            (
                r#""8e03978e-40d5-43e8-bc93-6894a57f9324""#,
                "8e03978e-40d5-43e8-bc93-6894a57f9324",
            ),
            (r#"  "a b"  "#, "a b"),
            (r#""say \"hi\" \\ ~""#, r#"say "hi" \ ~"#),
            (r#"" ""#, " "),
        ] {
            assert_eq!(key(value).unwrap(), expected, "{value}");
        }
        let longest = format!("\"{}\"", "k".repeat(MAX_IDEMPOTENCY_KEY_LEN));
        assert!(key(&longest).is_ok());
    }

    #[test]
    fn anything_else_is_invalid_idempotency_key() {
        let too_long = format!("\"{}\"", "k".repeat(MAX_IDEMPOTENCY_KEY_LEN + 1));
        for value in [
            "abc",
            "",
            r#""""#,
            r#""open"#,
            r#""a\b""#,
            r#""a"; p=1"#,
            r#""a", "b""#,
            "\"tab\there\"",
            "\"\u{e9}\"",
            "'single'",
            too_long.as_str(),
        ] {
            let problem = key(value).unwrap_err();
            assert_eq!(problem.status().as_u16(), 400, "{value:?}");
            let body = serde_json::to_value(&problem).unwrap();
            assert_eq!(
                body["type"], "urn:streamfold:problem:invalid-idempotency-key",
                "{value:?}"
            );
            assert_eq!(body["header"], "Idempotency-Key");
        }
        assert!(parse_header(b"\"\xff\"").is_err());
    }
}
