//! A storage request as `azure_storage::clients::finalize_request` builds it for the requests
//! this crate writes itself (the Table backend's transactions and single-entity writes): the
//! caller's headers, `Content-Length`, `x-ms-date` and `x-ms-version`, and the body. The date
//! is written digit by digit (RFC 1123, as the crate writes it through `time`'s format
//! descriptions, which cost more than the rest of the request's building).

use azure_core::headers::{HeaderValue, Headers, CONTENT_LENGTH, MS_DATE, VERSION};
use azure_core::{Method, Request, Url};
use bytes::Bytes;
use time::OffsetDateTime;

/// The storage service version `azure_storage` 0.21 asks for on every request.
pub(crate) const STORAGE_VERSION: &str = "2022-11-02";

/// Length of an RFC 1123 date as storage wants it: `Wed, 02 Dec 2026 14:00:04 GMT`.
const RFC1123_BYTES: usize = 29;

const WEEKDAYS: [&str; 7] = ["Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun"];
const MONTHS: [&str; 12] = [
    "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
];

/// The request `finalize_request` builds, dated now.
pub(crate) fn storage_request(
    url: Url,
    method: Method,
    headers: Headers,
    body: Option<Bytes>,
) -> Request {
    storage_request_at(url, method, headers, body, OffsetDateTime::now_utc())
}

fn storage_request_at(
    url: Url,
    method: Method,
    headers: Headers,
    body: Option<Bytes>,
    now: OffsetDateTime,
) -> Request {
    let mut request = Request::new(url, method);
    for (name, value) in headers {
        request.insert_header(name, value);
    }
    let length = body.as_ref().map_or(0, Bytes::len);
    request.insert_header(CONTENT_LENGTH, HeaderValue::from(length.to_string()));
    request.insert_header(MS_DATE, HeaderValue::from(rfc1123(now)));
    request.insert_header(VERSION, HeaderValue::from_static(STORAGE_VERSION));
    request.set_body(body.unwrap_or_default());
    request
}

/// `time` in RFC 1123 form, in UTC (`Wed, 02 Dec 2026 14:00:04 GMT`).
fn rfc1123(time: OffsetDateTime) -> String {
    let time = time.to_offset(time::UtcOffset::UTC);
    let mut text = String::with_capacity(RFC1123_BYTES);
    text.push_str(WEEKDAYS[usize::from(time.weekday().number_days_from_monday())]);
    text.push_str(", ");
    push_two(&mut text, time.day());
    text.push(' ');
    text.push_str(MONTHS[usize::from(u8::from(time.month()) - 1)]);
    text.push(' ');
    // Four digits: `OffsetDateTime` years are at most 9999 without the `large-dates` feature.
    let year = time.year().clamp(0, 9999).unsigned_abs();
    push_two(&mut text, u8::try_from(year / 100).unwrap_or(99));
    push_two(&mut text, u8::try_from(year % 100).unwrap_or(99));
    text.push(' ');
    push_two(&mut text, time.hour());
    text.push(':');
    push_two(&mut text, time.minute());
    text.push(':');
    push_two(&mut text, time.second());
    text.push_str(" GMT");
    text
}

/// `value` (below 100) as two digits.
fn push_two(text: &mut String, value: u8) {
    text.push(char::from(b'0' + (value / 10) % 10));
    text.push(char::from(b'0' + value % 10));
}

#[cfg(test)]
mod tests {
    use azure_core::headers::{HeaderName, CONTENT_TYPE};
    use proptest::prelude::*;

    use super::*;

    proptest! {
        /// The crate's own RFC 1123 text, for any second from 1970 to 9999.
        #[test]
        fn dates_are_written_as_the_crate_writes_them(seconds in 0i64..253_402_300_799) {
            let time = OffsetDateTime::from_unix_timestamp(seconds).unwrap();
            prop_assert_eq!(rfc1123(time), azure_core::date::to_rfc1123(&time));
        }
    }

    /// The headers but the date (the proptest above checks how it is written).
    fn sorted(headers: &Headers) -> Vec<(String, String)> {
        let mut all: Vec<_> = headers
            .iter()
            .filter(|(name, _)| **name != MS_DATE)
            .map(|(name, value)| (name.as_str().to_owned(), value.as_str().to_owned()))
            .collect();
        all.sort();
        all
    }

    #[test]
    fn requests_are_the_crates_finalized_requests() {
        for (method, body) in [
            (Method::Post, Some(Bytes::from_static(b"{\"a\":1}"))),
            (Method::Delete, None),
            (Method::Merge, Some(Bytes::new())),
        ] {
            let url = Url::parse(
                "http://127.0.0.1:10002/devstoreaccount1/t(PartitionKey='a',RowKey='b')",
            )
            .unwrap();
            let mut headers = Headers::new();
            headers.insert(CONTENT_TYPE, "application/json");
            headers.insert(HeaderName::from_static("if-match"), "*");
            let crates = azure_storage::clients::finalize_request(
                url.clone(),
                method,
                headers.clone(),
                body.clone().map(Into::into),
            )
            .unwrap();
            let ours = storage_request(url, method, headers, body);
            assert_eq!(sorted(ours.headers()), sorted(crates.headers()));
            assert!(ours.headers().get_optional_str(&MS_DATE).is_some());
            assert_eq!(ours.url(), crates.url());
            assert_eq!(ours.method(), crates.method());
            let bytes = |request: &Request| match request.body() {
                azure_core::Body::Bytes(bytes) => bytes.clone(),
                azure_core::Body::SeekableStream(_) => panic!("a stream body"),
            };
            assert_eq!(bytes(&ours), bytes(&crates));
        }
    }
}
