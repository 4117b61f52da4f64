//! Filters shared by every HTTP function: they turn raw requests into validated values or a
//! precise problem, so handlers only see input that is already well-formed.

use bytes::Bytes;
use percent_encoding::percent_decode_str;
use warp::{Filter, Rejection};

use super::problem::{body_too_large, reject, Problem};
use super::{MAX_BODY_BYTES, MAX_DRAINED_BODY_BYTES};

/// Header carrying the correlation id of a request (stored in event metadata, echoed back).
pub const CORRELATION_ID_HEADER: &str = "x-correlation-id";
/// Header the Functions host adds to every call.
pub const INVOCATION_ID_HEADER: &str = "x-azure-functions-invocationid";
/// Header the host's proxying mode also sets to the invocation id (docs/host-modes.md).
pub const PROXY_INVOCATION_ID_HEADER: &str = "x-ms-invocation-id";
/// Longest correlation id accepted from a client.
pub const MAX_CORRELATION_ID_LEN: usize = 128;

/// The raw request body, at most [`MAX_BODY_BYTES`] (413 beyond). A missing body is empty:
/// the Functions host forwards a body only when Content-Length > 0, and may then send no
/// Content-Length at all. The limit is enforced while reading, so an oversized body is never
/// buffered whole; it is read to its end and dropped (up to [`MAX_DRAINED_BODY_BYTES`]) so the
/// sender receives the 413 rather than a reset connection.
pub fn body() -> impl Filter<Extract = (Bytes,), Error = Rejection> + Clone {
    warp::header::optional::<u64>("content-length")
        .and(warp::body::stream())
        .and_then(collect_body)
}

async fn collect_body<S, B>(declared: Option<u64>, stream: S) -> Result<Bytes, Rejection>
where
    S: futures::Stream<Item = Result<B, warp::Error>>,
    B: bytes::Buf,
{
    let mut stream = std::pin::pin!(stream);
    if declared.is_some_and(|n| n > MAX_BODY_BYTES) {
        drain(stream, 0).await;
        return Err(reject(body_too_large()));
    }
    // Sized once from the declared length (bounded above), so the chunks are copied once.
    let capacity = declared.and_then(|n| usize::try_from(n).ok()).unwrap_or(0);
    let mut body = bytes::BytesMut::with_capacity(capacity);
    while let Some(chunk) = futures::StreamExt::next(&mut stream).await {
        let chunk = chunk.map_err(|e| {
            reject(Problem::bad_request(
                "unreadable-body",
                format!("the request body could not be read: {e}"),
            ))
        })?;
        let read = (body.len() + chunk.remaining()) as u64;
        if read > MAX_BODY_BYTES {
            drain(stream, read).await;
            return Err(reject(body_too_large()));
        }
        bytes::BufMut::put(&mut body, chunk);
    }
    Ok(body.freeze())
}

/// Reads and drops the rest of a body of which `read` bytes were already seen, until its end,
/// a read error, or [`MAX_DRAINED_BODY_BYTES`] in all.
async fn drain<S, B>(mut stream: std::pin::Pin<&mut S>, mut read: u64)
where
    S: futures::Stream<Item = Result<B, warp::Error>>,
    B: bytes::Buf,
{
    while read <= MAX_DRAINED_BODY_BYTES {
        match futures::StreamExt::next(&mut stream).await {
            Some(Ok(chunk)) => read += chunk.remaining() as u64,
            Some(Err(_)) | None => return,
        }
    }
}

/// One path segment, percent-decoded (warp leaves `%20` as it is).
pub fn decoded_segment() -> impl Filter<Extract = (String,), Error = Rejection> + Clone {
    warp::path::param::<String>().and_then(|raw: String| async move {
        percent_decode_str(&raw)
            .decode_utf8()
            .map(|s| s.into_owned())
            .map_err(|_| {
                reject(Problem::bad_request(
                    "invalid-path",
                    format!("path segment {raw:?} is not valid UTF-8 once decoded"),
                ))
            })
    })
}

/// A stream's `{domain}/{entity}/{instance}` path segments, each percent-decoded (one reading
/// for every route on a stream: `streams/...` and `projections/...`), not yet checked as a
/// stream id: each handler checks them where it always has ([`StreamSegments::stream_id`]),
/// so its answers keep their order.
pub(crate) fn stream_segments(
) -> impl Filter<Extract = (StreamSegments,), Error = Rejection> + Clone {
    decoded_segment()
        .and(decoded_segment())
        .and(decoded_segment())
        .map(|domain, entity, instance| StreamSegments {
            domain,
            entity,
            instance,
        })
}

/// What [`stream_segments`] read.
#[derive(Debug, Clone)]
pub(crate) struct StreamSegments {
    domain: String,
    entity: String,
    instance: String,
}

impl StreamSegments {
    /// The stream the segments name: 400 (the stream-id problem) when they name none.
    pub(crate) fn stream_id(self) -> Result<crate::stream::StreamId, Problem> {
        crate::stream::StreamId::new(self.domain, self.entity, self.instance)
            .map_err(|e| crate::stream::StoreError::from(e).into())
    }
}

/// The request's correlation id: the client's `x-correlation-id` when given (and sane), else a
/// new one.
pub fn correlation_id() -> impl Filter<Extract = (String,), Error = Rejection> + Clone {
    // The raw value, so a header that is not text at all is our 400 too (warp's own string
    // parse would reject it with a rejection that loses to another route's 405).
    warp::header::value(CORRELATION_ID_HEADER)
        .map(Some)
        .or(warp::any().map(|| None))
        .unify()
        .and_then(|given: Option<warp::http::HeaderValue>| async move {
            match given {
                None => Ok(uuid::Uuid::new_v4().to_string()),
                Some(id) => id
                    .to_str()
                    .ok()
                    .filter(|id| {
                        !id.is_empty()
                            && id.len() <= MAX_CORRELATION_ID_LEN
                            && id.chars().all(|c| c.is_ascii_graphic())
                    })
                    .map(str::to_owned)
                    .ok_or_else(|| {
                        reject(Problem::bad_request(
                            "invalid-correlation-id",
                            format!(
                                "{CORRELATION_ID_HEADER} must be 1 to {MAX_CORRELATION_ID_LEN} visible ASCII characters"
                            ),
                        ))
                    }),
            }
        })
}

/// An optional header as text: `None` when absent; a value that is not visible ASCII (and
/// spaces) is a 400 `invalid-header` naming it, never a rejection that another route's 405
/// could win over.
pub fn optional_text_header(
    name: &'static str,
) -> impl Filter<Extract = (Option<String>,), Error = Rejection> + Clone {
    warp::header::value(name)
        .map(Some)
        .or(warp::any().map(|| None))
        .unify()
        .and_then(move |given: Option<warp::http::HeaderValue>| async move {
            match given {
                None => Ok(None),
                Some(value) => value.to_str().map(|v| Some(v.to_owned())).map_err(|_| {
                    reject(
                        Problem::bad_request(
                            "invalid-header",
                            format!("header {name} must be visible ASCII text"),
                        )
                        .with("header", name),
                    )
                }),
            }
        })
}

/// The Functions host's invocation id of this request, for logs: empty when absent or not
/// text (a client's own value may precede the host's; it only labels log lines).
pub fn invocation_id() -> impl Filter<Extract = (String,), Error = std::convert::Infallible> + Clone
{
    warp::header::value(INVOCATION_ID_HEADER)
        .map(|value: warp::http::HeaderValue| value.to_str().unwrap_or_default().to_owned())
        .or(warp::any().map(String::new))
        .unify()
}

/// The query string as key/value pairs (an absent query is empty). A part that is not UTF-8
/// once percent-decoded is a 400 `invalid-query`, never silently replaced.
pub fn query_pairs() -> impl Filter<Extract = (Vec<(String, String)>,), Error = Rejection> + Clone {
    warp::query::raw()
        .or(warp::any().map(String::new))
        .unify()
        .and_then(|raw: String| async move { url_pairs(&raw).map_err(reject) })
}

fn url_pairs(raw: &str) -> Result<Vec<(String, String)>, Problem> {
    raw.split('&')
        .filter(|p| !p.is_empty())
        .map(|pair| {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            Ok((decode_query_part(k)?, decode_query_part(v)?))
        })
        .collect()
}

fn decode_query_part(part: &str) -> Result<String, Problem> {
    let spaced = part.replace('+', " ");
    percent_decode_str(&spaced)
        .decode_utf8()
        .map(|text| text.into_owned())
        .map_err(|_| {
            Problem::bad_request(
                "invalid-query",
                format!("query part {part:?} is not UTF-8 once percent-decoded"),
            )
        })
}

/// Looks up a query parameter by name (names are matched case-insensitively, as the Functions
/// host treats them).
pub(crate) fn query_param<'a>(pairs: &'a [(String, String)], name: &str) -> Option<&'a str> {
    pairs
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.as_str())
}

/// Rejects query parameters a route does not know, and a parameter given twice (the host
/// joins repeated keys with commas; a direct caller could send both), naming them.
pub(crate) fn only_known_params(pairs: &[(String, String)], known: &[&str]) -> Result<(), Problem> {
    // `code` carries the function key; the host strips nothing, so it is always allowed.
    if let Some((k, _)) = pairs
        .iter()
        .find(|(k, _)| k != "code" && !known.iter().any(|n| k.eq_ignore_ascii_case(n)))
    {
        return Err(Problem::bad_request(
            "unknown-query-parameter",
            format!("unknown query parameter {k:?}; this route accepts {known:?}"),
        )
        .with("parameter", k.as_str()));
    }
    let repeated = pairs.iter().enumerate().find(|(i, (k, _))| {
        pairs
            .iter()
            .take(*i)
            .any(|(earlier, _)| earlier.eq_ignore_ascii_case(k))
    });
    match repeated {
        None => Ok(()),
        Some((_, (k, _))) => Err(Problem::bad_request(
            "duplicate-query-parameter",
            format!("query parameter {k:?} is given more than once"),
        )
        .with("parameter", k.as_str())),
    }
}

/// Parses an optional `true` / `false` query parameter (any case, spaces around ignored),
/// naming it when it is neither.
pub(crate) fn bool_param(pairs: &[(String, String)], name: &str) -> Result<Option<bool>, Problem> {
    match query_param(pairs, name).map(str::trim) {
        None => Ok(None),
        Some(v) if v.eq_ignore_ascii_case("true") => Ok(Some(true)),
        Some(v) if v.eq_ignore_ascii_case("false") => Ok(Some(false)),
        Some(v) => Err(Problem::bad_request(
            "invalid-query-parameter",
            format!("{name} must be true or false, not {v:?}"),
        )
        .with("parameter", name)),
    }
}

/// Parses an optional unsigned integer query parameter, naming it when it is not one. Only
/// ASCII digits are accepted (no sign, spaces, `_` or exponent), up to `u64::MAX`.
pub(crate) fn u64_param(pairs: &[(String, String)], name: &str) -> Result<Option<u64>, Problem> {
    query_param(pairs, name)
        .map(|v| {
            parse_whole_number(v).ok_or_else(|| {
                Problem::bad_request(
                    "invalid-query-parameter",
                    format!(
                        "{name} must be a whole number from 0 to {}, not {v:?}",
                        u64::MAX
                    ),
                )
                .with("parameter", name)
            })
        })
        .transpose()
}

/// A whole number written with ASCII digits only; `None` for anything else or past `u64::MAX`.
pub fn parse_whole_number(text: &str) -> Option<u64> {
    if text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    text.parse().ok()
}

/// Earliest time a query may name: the start of Table storage's `Edm.DateTime` range.
pub const EARLIEST_TIME: time::OffsetDateTime = time::macros::datetime!(1601-01-01 00:00:00 UTC);
/// Latest time a query may name: the end of Table storage's `Edm.DateTime` range (year 9999).
pub const LATEST_TIME: time::OffsetDateTime =
    time::macros::datetime!(9999-12-31 23:59:59.999_999_999 UTC);

/// Parses an optional RFC 3339 time query parameter into UTC. A `+` of a UTC offset that
/// arrived as a space (an unencoded `+` in a query) is restored. Times outside what storage
/// can hold ([`EARLIEST_TIME`] to [`LATEST_TIME`], once converted to UTC) are refused.
pub(crate) fn time_param(
    pairs: &[(String, String)],
    name: &str,
) -> Result<Option<time::OffsetDateTime>, Problem> {
    query_param(pairs, name)
        .map(|v| {
            let invalid = |why: &str| {
                Problem::bad_request(
                    "invalid-query-parameter",
                    format!("{name} {why}, not {v:?}"),
                )
                .with("parameter", name)
            };
            let repaired = v.replace(' ', "+");
            let parsed = time::OffsetDateTime::parse(
                &repaired,
                &time::format_description::well_known::Rfc3339,
            )
            .map_err(|_| invalid("must be an RFC 3339 time such as 2024-05-01T10:00:00Z"))?;
            parsed
                .checked_to_offset(time::UtcOffset::UTC)
                .filter(|utc| (EARLIEST_TIME..=LATEST_TIME).contains(utc))
                .ok_or_else(|| {
                    invalid("must be between 1601-01-01T00:00:00Z and 9999-12-31T23:59:59Z in UTC")
                })
        })
        .transpose()
}

/// Reads `asOfSequence` / `asOf` (at most one of them) into the point of history to project.
pub(crate) fn as_of_params(pairs: &[(String, String)]) -> Result<crate::projection::AsOf, Problem> {
    use crate::projection::AsOf;
    match (
        u64_param(pairs, "asOfSequence")?,
        time_param(pairs, "asOf")?,
    ) {
        (Some(_), Some(_)) => Err(Problem::bad_request(
            "conflicting-query-parameters",
            "give asOfSequence or asOf, not both",
        )),
        (Some(sequence), None) => Ok(AsOf::Sequence(sequence)),
        (None, Some(time)) => Ok(AsOf::Time(time)),
        (None, None) => Ok(AsOf::Latest),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chunks(sizes: &[usize]) -> Vec<Result<Bytes, warp::Error>> {
        sizes
            .iter()
            .map(|&n| Ok(Bytes::from(vec![b'x'; n])))
            .collect()
    }

    /// Collects `sizes` as a body, returning the outcome and how many chunks stayed unread.
    async fn collect(declared: Option<u64>, sizes: &[usize]) -> (Result<Bytes, Rejection>, usize) {
        let mut source = futures::stream::iter(chunks(sizes));
        let outcome = collect_body(declared, &mut source).await;
        (outcome, futures::StreamExt::count(source).await)
    }

    #[tokio::test]
    async fn oversized_bodies_are_refused_after_being_read_to_the_end() {
        let mib = 1024 * 1024;
        let (ok, left) = collect(None, &[mib, mib]).await;
        assert_eq!(ok.map(|b| b.len()).ok(), Some(2 * mib));
        assert_eq!(left, 0);

        // Streamed past the limit: refused, and every chunk was still consumed.
        let (refused, left) = collect(None, &[3 * mib, 3 * mib, mib, mib]).await;
        assert!(refused.is_err());
        assert_eq!(left, 0);

        // Declared past the limit: refused without buffering, still consumed.
        let (refused, left) = collect(Some(8 * mib as u64), &[4 * mib, 4 * mib]).await;
        assert!(refused.is_err());
        assert_eq!(left, 0);

        // Past the drain bound the rest is left unread (the connection is closed instead).
        let huge = MAX_DRAINED_BODY_BYTES as usize;
        let (refused, left) = collect(None, &[huge, huge, mib]).await;
        assert!(refused.is_err());
        assert_eq!(left, 1);
    }

    #[test]
    fn whole_numbers_are_digits_only() {
        assert_eq!(parse_whole_number("0"), Some(0));
        assert_eq!(parse_whole_number("18446744073709551615"), Some(u64::MAX));
        for bad in [
            "",
            "+1",
            "-1",
            " 1",
            "1 ",
            "1_000",
            "1e3",
            "0x10",
            "18446744073709551616",
        ] {
            assert_eq!(parse_whole_number(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn times_outside_storage_range_are_refused() {
        let param = |v: &str| time_param(&[("asOf".to_owned(), v.to_owned())], "asOf");
        // 9999-12-31T23:30-05:00 is in the year 10000 in UTC: it used to panic.
        for bad in [
            "9999-12-31T23:30:00-05:00",
            "1600-12-31T23:59:59Z",
            "1601-01-01T00:30:00+01:00",
            "2024-13-01T00:00:00Z",
            "yesterday",
        ] {
            let problem = param(bad).unwrap_err();
            assert_eq!(problem.status().as_u16(), 400, "{bad}");
        }
        let utc = param("2024-05-01T12:00:00 02:00").unwrap().unwrap();
        assert_eq!(utc, time::macros::datetime!(2024-05-01 10:00:00 UTC));
        assert_eq!(utc.offset(), time::UtcOffset::UTC);
        assert!(param("9999-12-31T23:59:59Z").unwrap().is_some());
        assert!(param("1601-01-01T00:00:00Z").unwrap().is_some());
    }

    #[test]
    fn repeated_parameters_are_refused() {
        let pairs = url_pairs("pageSize=1&PAGESIZE=2").unwrap();
        let problem = only_known_params(&pairs, &["pageSize"]).unwrap_err();
        assert!(problem.detail().contains("more than once"));
    }

    #[test]
    fn query_pairs_are_decoded() {
        let pairs = url_pairs("asOf=2024-01-01T00%3A00%3A00%2B01%3A00&x=a+b&flag").unwrap();
        assert!(url_pairs("continuation=%FF%FE").is_err());
        assert_eq!(
            query_param(&pairs, "ASOF"),
            Some("2024-01-01T00:00:00+01:00")
        );
        assert_eq!(query_param(&pairs, "x"), Some("a b"));
        assert_eq!(query_param(&pairs, "flag"), Some(""));
        assert!(only_known_params(&pairs, &["asOf", "x", "flag"]).is_ok());
        assert!(only_known_params(&pairs, &["asOf"]).is_err());
    }
}
