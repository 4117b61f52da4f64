//! Reads the answer to an entity group transaction: the status of each operation, in order,
//! from the `multipart/mixed` body storage sends back (a batch part holding a changeset, one
//! `application/http` response per operation).
//!
//! Guarantees:
//! - bounded: the body is read up to [`MAX_ANSWER_BYTES`] and at most [`MAX_STATUSES`]
//!   statuses are kept; nothing else is allocated per part (the text is walked in place);
//! - a body of an unexpected shape (not UTF-8, no boundary, a part without an `HTTP/1.1 NNN`
//!   status line, a status outside 100..=599, a missing closing delimiter, more responses than
//!   any transaction has) is an [`AnswerError`], never a panic; the caller reports it as
//!   `Corrupt`;
//! - line ends may be `\r\n` (Azure, Azurite) or `\n`; header names are matched without regard
//!   to case; boundaries come from the `Content-Type` header, or the body's first line when the
//!   header has none;
//! - as `azure_data_tables` did, a batch whose only response is not inside a changeset (storage
//!   refusing the whole batch) still yields that response's status.

use std::sync::LazyLock;

use memchr::memmem;

use super::operation::MAX_TRANSACTION_OPERATIONS;

/// Largest answer read: with `Prefer: return-no-content` an operation's response is a few
/// hundred bytes, and a failed one carries a short error document.
pub const MAX_ANSWER_BYTES: usize = 1024 * 1024;
/// Most operation responses kept (one more than a transaction can hold, so that an answer
/// with too many is told apart from a full one).
pub const MAX_STATUSES: usize = MAX_TRANSACTION_OPERATIONS + 1;
/// Longest multipart boundary (RFC 2046).
const MAX_BOUNDARY_LEN: usize = 70;
/// The status line of each operation's response.
const STATUS_LINE_START: &str = "HTTP/1.1 ";
const CONTENT_TYPE: &str = "content-type";
const MULTIPART_MIXED: &str = "multipart/mixed";
const BOUNDARY_PARAMETER: &str = "boundary=";
/// What a delimiter line starts with, before the boundary (and what ends a closing one).
const DASHES: &str = "--";

/// Why an answer could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct AnswerError(pub &'static str);

/// The statuses of the operation responses in `body`, in order. `content_type` is the
/// answer's `Content-Type` header.
pub fn statuses(content_type: Option<&str>, body: &[u8]) -> Result<Vec<u16>, AnswerError> {
    if body.len() > MAX_ANSWER_BYTES {
        return Err(AnswerError("the answer is larger than any transaction's"));
    }
    let text = std::str::from_utf8(body).map_err(|_| AnswerError("the answer is not UTF-8"))?;
    let boundary = match content_type.and_then(boundary_of) {
        Some(boundary) => boundary,
        None => first_line_boundary(text)?,
    };
    let mut statuses = Vec::new();
    for_each_part(text, boundary, &mut |part| {
        let (headers, content) = split_head(part)?;
        match header(headers, CONTENT_TYPE)
            .and_then(|value| is_multipart(value).then(|| boundary_of(value)).flatten())
        {
            Some(changeset) => for_each_part(content, changeset, &mut |response| {
                push_status(&mut statuses, response)
            }),
            None => push_status(&mut statuses, part),
        }
    })?;
    Ok(statuses)
}

/// Adds the status of the `application/http` part `part` (its headers, a blank line, the
/// response).
fn push_status(statuses: &mut Vec<u16>, part: &str) -> Result<(), AnswerError> {
    if statuses.len() >= MAX_STATUSES {
        return Err(AnswerError(
            "the answer has more responses than any transaction",
        ));
    }
    let (_, response) = split_head(part)?;
    let line = lines(response)
        .find(|line| !line.is_empty())
        .ok_or(AnswerError("an operation's response is empty"))?;
    statuses.push(status_of_line(line)?);
    Ok(())
}

/// The status of an `HTTP/1.1 NNN Reason` line.
fn status_of_line(line: &str) -> Result<u16, AnswerError> {
    let rest = line.strip_prefix(STATUS_LINE_START).ok_or(AnswerError(
        "an operation's response has no HTTP/1.1 status line",
    ))?;
    let code = rest.split(' ').next().unwrap_or_default();
    if code.len() != 3 || !code.bytes().all(|b| b.is_ascii_digit()) {
        return Err(AnswerError("an operation's status is not three digits"));
    }
    code.parse::<u16>()
        .ok()
        .filter(|status| (100..=599).contains(status))
        .ok_or(AnswerError("an operation's status is not an HTTP status"))
}

/// Calls `each` with the content of every part of the multipart `text` delimited by
/// `boundary` (the preamble and epilogue are skipped). The closing delimiter must be there.
///
/// A delimiter is a line that is `--` and the boundary, then `--` for the closing one, then
/// nothing but spaces, tabs and `\r`. Only the lines that start with `--` are looked at, found
/// with one SIMD substring search for `\n--` (its searcher built once per process).
fn for_each_part<'a>(
    text: &'a str,
    boundary: &str,
    each: &mut dyn FnMut(&'a str) -> Result<(), AnswerError>,
) -> Result<(), AnswerError> {
    static LINE_OF_DASHES: LazyLock<memmem::Finder<'static>> =
        LazyLock::new(|| memmem::Finder::new(b"\n--"));
    let bytes = text.as_bytes();
    let first_line = bytes.starts_with(DASHES.as_bytes()).then_some(0);
    let line_starts = first_line.into_iter().chain(
        LINE_OF_DASHES
            .find_iter(bytes)
            .map(|newline| newline.saturating_add(1)),
    );
    let mut start: Option<usize> = None;
    for line_start in line_starts {
        let Some(after_start) = line_start
            .checked_add(DASHES.len())
            .filter(|&at| {
                bytes
                    .get(at..)
                    .is_some_and(|rest| rest.starts_with(boundary.as_bytes()))
            })
            .map(|at| at.saturating_add(boundary.len()))
        else {
            continue;
        };
        let line_end = memchr::memchr(b'\n', bytes.get(after_start..).unwrap_or_default())
            .map_or(bytes.len(), |at| {
                after_start.saturating_add(at).saturating_add(1)
            });
        let after = text.get(after_start..line_end).unwrap_or_default();
        let closing = match after.trim_end_matches(['\r', '\n', ' ', '\t']) {
            "" => false,
            DASHES => true,
            _ => continue,
        };
        if let Some(from) = start {
            // The line break before a delimiter belongs to the delimiter.
            let part = text.get(from..line_start).unwrap_or_default();
            let part = part
                .strip_suffix("\r\n")
                .or_else(|| part.strip_suffix('\n'))
                .unwrap_or(part);
            each(part)?;
        }
        if closing {
            return Ok(());
        }
        start = Some(line_end);
    }
    Err(AnswerError("a multipart body of the answer is not closed"))
}

/// The lines of `bytes` as (start, end) offsets, each end just past its `\n` (the last line's
/// at the end of `bytes`), as `str::split_inclusive('\n')` would cut them.
fn line_spans(bytes: &[u8]) -> impl Iterator<Item = (usize, usize)> + '_ {
    let mut starts =
        std::iter::once(0).chain(memchr::memchr_iter(b'\n', bytes).map(|at| at.saturating_add(1)));
    let mut current = starts.next();
    std::iter::from_fn(move || {
        let start = current.filter(|&start| start < bytes.len())?;
        current = starts.next();
        Some((start, current.unwrap_or(bytes.len())))
    })
}

/// A part's headers and what follows the blank line after them (a line that is empty but
/// for its `\r\n` or `\n`).
fn split_head(part: &str) -> Result<(&str, &str), AnswerError> {
    let bytes = part.as_bytes();
    for (start, end) in line_spans(bytes) {
        let line = bytes.get(start..end).unwrap_or_default();
        if line.iter().all(|&b| b == b'\r' || b == b'\n') {
            let head = part.get(..end).unwrap_or_default();
            let rest = part.get(end..).unwrap_or_default();
            return Ok((head, rest));
        }
    }
    Err(AnswerError(
        "a part of the answer has no blank line after its headers",
    ))
}

/// The value of header `name` (lower case) in `headers`.
fn header<'a>(headers: &'a str, name: &str) -> Option<&'a str> {
    lines(headers).find_map(|line| {
        let (key, value) = line.split_once(':')?;
        key.trim().eq_ignore_ascii_case(name).then(|| value.trim())
    })
}

fn lines(text: &str) -> impl Iterator<Item = &str> {
    text.split('\n').map(|line| line.trim_end_matches('\r'))
}

fn is_multipart(content_type: &str) -> bool {
    content_type
        .get(..MULTIPART_MIXED.len())
        .is_some_and(|start| start.eq_ignore_ascii_case(MULTIPART_MIXED))
}

/// The `boundary` parameter of a `multipart/mixed` content type.
fn boundary_of(content_type: &str) -> Option<&str> {
    if !is_multipart(content_type) {
        return None;
    }
    content_type.split(';').skip(1).find_map(|parameter| {
        let parameter = parameter.trim();
        let value = parameter
            .get(..BOUNDARY_PARAMETER.len())
            .filter(|name| name.eq_ignore_ascii_case(BOUNDARY_PARAMETER))
            .and_then(|_| parameter.get(BOUNDARY_PARAMETER.len()..))?;
        let value = value.trim_matches('"');
        valid_boundary(value).then_some(value)
    })
}

/// The boundary of a body whose first line is its first delimiter.
fn first_line_boundary(text: &str) -> Result<&str, AnswerError> {
    lines(text)
        .find(|line| !line.is_empty())
        .and_then(|line| line.strip_prefix("--"))
        .map(|b| b.trim_end_matches([' ', '\t']))
        .filter(|b| valid_boundary(b))
        .ok_or(AnswerError("the answer names no multipart boundary"))
}

fn valid_boundary(boundary: &str) -> bool {
    !boundary.is_empty()
        && boundary.len() <= MAX_BOUNDARY_LEN
        // Printable ASCII is neither white space nor a control character; anything else is
        // looked at character by character.
        && (boundary.bytes().all(|b| b.is_ascii_graphic())
            || !boundary.contains(|c: char| c.is_whitespace() || c.is_control()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const BATCH: &str = "batchresponse_6f0d5ab6-3c49-4ea4-9bb1-1ab6a4b6b2a1";
    const CHANGESET: &str = "changesetresponse_0d4f5d9e-7ab2-4d2b-9a55-8c0f0b7c4e11";

    fn content_type() -> String {
        format!("multipart/mixed; boundary={BATCH}")
    }

    /// An answer shaped as Azurite writes it (`\r\n`, a blank line after each response).
    fn answer(responses: &[&str], eol: &str) -> String {
        let mut s =
            format!("--{BATCH}{eol}Content-Type: multipart/mixed; boundary={CHANGESET}{eol}{eol}");
        for response in responses {
            s.push_str(&format!(
                "--{CHANGESET}{eol}Content-Type: application/http{eol}\
                 Content-Transfer-Encoding: binary{eol}{eol}{response}{eol}{eol}"
            ));
        }
        s.push_str(&format!("--{CHANGESET}--{eol}--{BATCH}--{eol}"));
        s
    }

    const NO_CONTENT: &str = "HTTP/1.1 204 No Content\r\nX-Content-Type-Options: nosniff\r\n\
                              Cache-Control: no-cache\r\nPreference-Applied: return-no-content\r\n\
                              DataServiceVersion: 3.0;";
    const CONFLICT: &str = "HTTP/1.1 409 Conflict\r\nContent-ID: 3\r\n\
                            Content-Type: application/json;odata=minimalmetadata;charset=utf-8\r\n\r\n\
                            {\"odata.error\":{\"code\":\"EntityAlreadyExists\",\"message\":{\"lang\":\"en-US\",\
                            \"value\":\"2:The specified entity already exists.\\n--changesetresponse_x\"}}}";

    #[test]
    fn a_committed_batch_has_every_status() {
        let body = answer(
            &[
                NO_CONTENT,
                NO_CONTENT,
                "HTTP/1.1 201 Created\r\nETag: W/\"x\"",
            ],
            "\r\n",
        );
        assert_eq!(
            statuses(Some(&content_type()), body.as_bytes()),
            Ok(vec![204, 204, 201])
        );
        let lf = answer(&[NO_CONTENT, NO_CONTENT], "\n").replace("\r\n", "\n");
        assert_eq!(statuses(None, lf.as_bytes()), Ok(vec![204, 204]));
    }

    #[test]
    fn a_rolled_back_batch_has_the_failing_status() {
        let body = answer(&[CONFLICT], "\r\n");
        assert_eq!(
            statuses(Some(&content_type()), body.as_bytes()),
            Ok(vec![409])
        );
    }

    #[test]
    fn a_response_outside_a_changeset_counts() {
        let body = format!(
            "--{BATCH}\r\nContent-Type: application/http\r\n\r\nHTTP/1.1 400 Bad Request\r\n\
             Content-Type: application/json\r\n\r\n{{}}\r\n--{BATCH}--\r\n"
        );
        assert_eq!(
            statuses(Some(&content_type()), body.as_bytes()),
            Ok(vec![400])
        );
    }

    #[test]
    fn malformed_answers_are_errors() {
        let good = answer(&[NO_CONTENT], "\r\n");
        let ct = content_type();
        let cases: Vec<(Option<&str>, Vec<u8>)> = vec![
            (Some(&ct), b"".to_vec()),
            (None, b"no boundary here".to_vec()),
            (Some(&ct), vec![0xff, 0xfe]),
            (
                Some(&ct),
                good.replace(&format!("--{CHANGESET}--"), "").into_bytes(),
            ),
            (
                Some(&ct),
                good.replace(&format!("--{BATCH}--"), "").into_bytes(),
            ),
            (
                Some(&ct),
                good.replace("HTTP/1.1 204", "HTTP/1.1 2x4").into_bytes(),
            ),
            (
                Some(&ct),
                good.replace("HTTP/1.1 204", "HTTP/1.1 999").into_bytes(),
            ),
            (
                Some(&ct),
                good.replace("HTTP/1.1 204", "HTTP/2 204").into_bytes(),
            ),
            (
                Some(&ct),
                good.replace("binary\r\n\r\n", "binary\r\n").into_bytes(),
            ),
            (Some(&ct), vec![b'-'; MAX_ANSWER_BYTES + 1]),
        ];
        for (content_type, body) in cases {
            assert!(
                statuses(content_type, &body).is_err(),
                "{:?}",
                String::from_utf8_lossy(&body[..body.len().min(400)])
            );
        }
        let many = answer(&[NO_CONTENT; MAX_STATUSES + 1], "\r\n");
        assert!(statuses(Some(&ct), many.as_bytes()).is_err());
    }

    /// The line-by-line walks `for_each_part` and `split_head` replaced (`str::split_inclusive`
    /// over every line), kept as the reference the faster ones must agree with.
    mod reference {
        use super::super::AnswerError;

        pub fn for_each_part<'a>(
            text: &'a str,
            boundary: &str,
            each: &mut dyn FnMut(&'a str) -> Result<(), AnswerError>,
        ) -> Result<(), AnswerError> {
            let mut start: Option<usize> = None;
            let mut offset = 0;
            for raw in text.split_inclusive('\n') {
                let line_start = offset;
                offset += raw.len();
                let line = raw.trim_end_matches(['\r', '\n', ' ', '\t']);
                let Some(after) = line
                    .strip_prefix("--")
                    .and_then(|l| l.strip_prefix(boundary))
                else {
                    continue;
                };
                let closing = match after {
                    "" => false,
                    "--" => true,
                    _ => continue,
                };
                if let Some(from) = start {
                    let part = &text[from..line_start];
                    let part = part
                        .strip_suffix("\r\n")
                        .or_else(|| part.strip_suffix('\n'))
                        .unwrap_or(part);
                    each(part)?;
                }
                if closing {
                    return Ok(());
                }
                start = Some(offset);
            }
            Err(AnswerError("a multipart body of the answer is not closed"))
        }

        pub fn split_head(part: &str) -> Result<(&str, &str), AnswerError> {
            let mut offset = 0;
            for raw in part.split_inclusive('\n') {
                offset += raw.len();
                if raw.trim_end_matches(['\r', '\n']).is_empty() {
                    return Ok((&part[..offset], &part[offset..]));
                }
            }
            Err(AnswerError(
                "a part of the answer has no blank line after its headers",
            ))
        }
    }

    /// A walk over the parts of a multipart text (`for_each_part` or its reference).
    type PartWalk<'a> = fn(
        &'a str,
        &str,
        &mut dyn FnMut(&'a str) -> Result<(), AnswerError>,
    ) -> Result<(), AnswerError>;

    /// Every part `walk` finds in `text`, and how the walk ended.
    fn parts_of<'a>(
        walk: PartWalk<'a>,
        text: &'a str,
        boundary: &str,
    ) -> (Vec<&'a str>, Result<(), AnswerError>) {
        let mut parts = Vec::new();
        let ended = walk(text, boundary, &mut |part| {
            parts.push(part);
            Ok(())
        });
        (parts, ended)
    }

    /// Multipart-ish text: delimiter lines of `boundary` (opening, closing, with trailing
    /// blanks or other text), header and blank lines, with `\r\n` or `\n` ends.
    fn multipart_text(boundary: &'static str) -> impl Strategy<Value = String> {
        let line = prop_oneof![
            Just(format!("--{boundary}")),
            Just(format!("--{boundary}--")),
            Just(format!("--{boundary} \t")),
            Just(format!("--{boundary}-- ")),
            Just(format!("--{boundary}x")),
            Just(format!(" --{boundary}")),
            Just(format!("---{boundary}")),
            Just(String::new()),
            Just("\r".to_owned()),
            "[-a-z :\r]{0,12}",
        ];
        (
            proptest::collection::vec((line, prop_oneof![Just("\r\n"), Just("\n")]), 0..14),
            any::<bool>(),
        )
            .prop_map(|(lines, last_without_end)| {
                let mut text = String::new();
                let count = lines.len();
                for (index, (line, end)) in lines.into_iter().enumerate() {
                    text.push_str(&line);
                    if !(last_without_end && index + 1 == count) {
                        text.push_str(end);
                    }
                }
                text
            })
    }

    #[test]
    fn boundaries_are_checked_character_by_character() {
        for c in (0..=0x2100u32).filter_map(char::from_u32) {
            let boundary = format!("a{c}b");
            assert_eq!(
                valid_boundary(&boundary),
                !(c.is_whitespace() || c.is_control()),
                "{c:?}"
            );
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(512))]

        #[test]
        fn the_part_walk_agrees_with_the_line_by_line_reference(
            (boundary, text) in prop_oneof![Just("b"), Just("-"), Just("--"), Just("---"), Just("a-a"), Just("-a-"), Just(BATCH)]
                .prop_flat_map(|boundary| (Just(boundary), multipart_text(boundary))),
        ) {
            prop_assert_eq!(
                parts_of(for_each_part, &text, boundary),
                parts_of(reference::for_each_part, &text, boundary)
            );
            prop_assert_eq!(split_head(&text), reference::split_head(&text));
        }

        #[test]
        fn any_bytes_are_an_answer_or_an_error(body in proptest::collection::vec(any::<u8>(), 0..600)) {
            let _ = statuses(Some(&content_type()), &body);
            let _ = statuses(None, &body);
        }

        #[test]
        fn any_mutation_of_an_answer_is_an_answer_or_an_error(
            cut in 0usize..2_000,
            at in 0usize..2_000,
            insert in "[-\r\n a-z0-9:/;=_.]{0,40}",
        ) {
            let good = answer(&[NO_CONTENT, CONFLICT], "\r\n");
            let mut body = good.into_bytes();
            let at = at.min(body.len());
            let end = (at + cut % 50).min(body.len());
            body.splice(at..end, insert.bytes());
            if let Ok(found) = statuses(Some(&content_type()), &body) {
                prop_assert!(found.len() <= MAX_STATUSES);
                prop_assert!(found.iter().all(|s| (100..=599).contains(s)));
            }
        }

        #[test]
        fn every_status_is_read_back(codes in proptest::collection::vec(100u16..=599, 1..=100)) {
            let lines: Vec<String> = codes.iter().map(|c| format!("HTTP/1.1 {c} Whatever\r\nA: b\r\n\r\n{{\"x\":1}}")).collect();
            let refs: Vec<&str> = lines.iter().map(String::as_str).collect();
            prop_assert_eq!(statuses(Some(&content_type()), answer(&refs, "\r\n").as_bytes()), Ok(codes));
        }
    }
}
