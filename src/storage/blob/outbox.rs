//! The notification outbox of the Append Blob backend: a per-stream "notified up to" mark in a
//! small marker blob, compared with the stream's content. Appends write nothing for it (they
//! stay one request), and nothing a crash can leave stale decides what is pending: the blob
//! content is the truth, and "pending" is derived from it.
//!
//! # The marker blob
//! `_outbox/{domain}/{entity}/{escaped instance}` ([`MARKER_PREFIX`], same escaping as the
//! stream's segments), an empty block blob whose metadata is the mark:
//! - `notified`: events `1..=notified` were published;
//! - `segment`, `length`: where event `notified` ends in the stream's blobs: the number of the
//!   segment it was the last event of (the current segment when the mark was made) and that
//!   segment's length in bytes just after its record (0 when the segment had no event yet).
//!
//! The prefix starts with `_`, which no domain name does (domains start with a letter), so a
//! marker never appears among a domain's streams, and a stream's own listing (its segment
//! prefix) never sees it. A stream with no marker has published nothing.
//!
//! # Pending
//! A stream is pending when its last segment lies past its mark: a higher segment number, or
//! the same segment longer than the marked length. Blob lengths only grow and segments are
//! only added, so an append after the mark is always seen, whatever happened to any process.
//! [`Outbox::pending`] lists the whole container once with metadata (segments with their real
//! lengths, and the markers; 5,000 names per listing request, so a sweep costs one request per
//! 5,000 blobs of the container) and compares; then, for at most `limit` candidates, it does
//! what [`Outbox::pending_for`] does: read the marker (one request) and bring the stream's
//! cached tail up to date (one read from the cached length, or a cold load: a listing of the
//! stream and one read), which gives a version and its exact position together.
//!
//! The candidates are taken in stream order rotated to start after the stream a sweep passes
//! (the last one it took the time before), so the streams that sort first cannot take every
//! sweep. What cannot be read is an [`UnreadableEntry`] of the scan, reported and skipped,
//! never a failure of the whole search: a blob under [`MARKER_PREFIX`] whose name is no
//! stream's, a marker whose metadata is no mark (the stream then counts as having none: it is
//! published again, at least once, and its next mark replaces the marker), and a stream whose
//! blobs are not a stream's records ([`StoreError::Corrupt`]).
//!
//! # Marking
//! [`Outbox::mark_notified`] writes the marker with `If-Match` on the ETag it was read with
//! (`If-None-Match: *` when there was none): two dispatchers cannot both move it, and it never
//! moves backwards. A concurrent *append* does not touch the marker, so the mark succeeds, but
//! it records the version and position that were read: the newer events lie past it and stay
//! pending. The token of a [`PendingStream`] carries that position and the marker's ETag.

use std::collections::HashMap;

use async_trait::async_trait;
use azure_core::prelude::{IfMatchCondition, Metadata};
use azure_core::StatusCode;
use bytes::Bytes;
use futures::StreamExt;

use super::client::map_error;
use super::naming;
use super::tail::Tail;
use super::BlobStore;
use crate::storage::connection::{error_code, status_of};
use crate::stream::{Outbox, PendingScan, PendingStream, StoreError, StreamId, UnreadableEntry};

/// Prefix of every marker blob.
pub const MARKER_PREFIX: &str = "_outbox/";
/// Marker metadata: events up to here were published.
pub const META_NOTIFIED: &str = "notified";
/// Marker metadata: the segment the last published event was in.
pub const META_SEGMENT: &str = "segment";
/// Marker metadata: that segment's length just after the last published event.
pub const META_LENGTH: &str = "length";
/// `If-None-Match: *`: write the marker only if there is none.
const ANY_ETAG: &str = "*";
/// Separates the parts of a [`PendingStream::token`]: `{segment};{length};{marker ETag}`.
const TOKEN_SEPARATOR: char = ';';
/// Candidates whose marker and tail are read at the same time by [`Outbox::pending`].
const CANDIDATE_CONCURRENCY: usize = 8;
/// Error code of a request to a container that does not exist.
const CONTAINER_NOT_FOUND: &str = "ContainerNotFound";
/// Names the outbox in errors.
const OUTBOX_WHAT: &str = "the notification outbox";

/// A place in a stream's blobs: (segment number, length of that segment).
type Position = (u32, u64);

/// A mark as stored in a marker's metadata.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
struct Mark {
    notified: u64,
    position: Position,
}

impl Mark {
    fn to_metadata(self) -> Metadata {
        let mut metadata = Metadata::new();
        metadata.insert(META_NOTIFIED, self.notified.to_string());
        metadata.insert(META_SEGMENT, self.position.0.to_string());
        metadata.insert(META_LENGTH, self.position.1.to_string());
        metadata
    }

    /// Reads a mark; `None` when a value is missing or not a number.
    fn from_metadata(get: impl Fn(&str) -> Option<String>) -> Option<Self> {
        let number = |key: &str| get(key).and_then(|v| v.trim().parse::<u64>().ok());
        Some(Self {
            notified: number(META_NOTIFIED)?,
            position: (
                u32::try_from(number(META_SEGMENT)?).ok()?,
                number(META_LENGTH)?,
            ),
        })
    }
}

/// The marker blob of `stream`.
pub fn marker_name(stream: &StreamId) -> String {
    format!("{MARKER_PREFIX}{}", naming::stream_prefix(stream))
        .trim_end_matches(naming::SEPARATOR)
        .to_owned()
}

/// The stream of a marker blob name, if it is one.
fn stream_of_marker(name: &str) -> Option<StreamId> {
    stream_of_parts(name.strip_prefix(MARKER_PREFIX)?)
}

/// The stream and segment number of a segment blob name, if it is one.
fn segment_of(name: &str) -> Option<(StreamId, u32)> {
    let (directory, _) = name.rsplit_once(naming::SEPARATOR)?;
    let stream = stream_of_parts(directory)?;
    let number = naming::parse_segment_name(&naming::stream_prefix(&stream), name)?;
    Some((stream, number))
}

/// `{domain}/{entity}/{escaped instance}` → the stream.
fn stream_of_parts(path: &str) -> Option<StreamId> {
    let mut parts = path.split(naming::SEPARATOR);
    let (domain, entity, escaped) = (parts.next()?, parts.next()?, parts.next()?);
    if parts.next().is_some() {
        return None;
    }
    StreamId::new(domain, entity, naming::unescape_instance(escaped)?).ok()
}

/// Where the stream's last event ends, by what `tail` knows (see the module documentation).
fn end_position(tail: &Tail) -> Position {
    let Some(current) = &tail.current else {
        return (0, 0);
    };
    let segment = current.segment;
    if tail.version < segment.first_sequence {
        return (segment.number, 0);
    }
    // The end of the last event's record, when it is known, rather than the length a read
    // reported: the mark must never claim bytes past the last event it covers.
    match tail.known.back() {
        Some(last) if last.sequence == tail.version && last.start >= segment.base => {
            (segment.number, last.end - segment.base)
        }
        _ => (segment.number, segment.length),
    }
}

fn make_token(position: Position, etag: Option<&str>) -> String {
    format!(
        "{}{TOKEN_SEPARATOR}{}{TOKEN_SEPARATOR}{}",
        position.0,
        position.1,
        etag.unwrap_or("")
    )
}

/// (position, marker ETag) of a token; an empty ETag means "no marker yet".
fn parse_token(token: &str) -> Option<(Position, Option<&str>)> {
    let mut parts = token.splitn(3, TOKEN_SEPARATOR);
    let segment = parts.next()?.parse().ok()?;
    let length = parts.next()?.parse().ok()?;
    let etag = parts.next()?;
    Some(((segment, length), (!etag.is_empty()).then_some(etag)))
}

impl BlobStore {
    /// The stream's marker: its mark (default when there is none or it cannot be read as one)
    /// and its ETag (`None` when there is no marker).
    async fn read_marker(&self, stream: &StreamId) -> Result<(Mark, Option<String>), StoreError> {
        let what = stream.to_string();
        let result = self
            .api()?
            .container()
            .blob_client(marker_name(stream))
            .get_metadata()
            .await;
        match result {
            Ok(response) => {
                let mark = Mark::from_metadata(|key| {
                    response
                        .metadata
                        .get(key)
                        .and_then(|v| String::from_utf8(v.to_vec()).ok())
                })
                .unwrap_or_default();
                Ok((mark, Some(response.etag)))
            }
            Err(error) if status_of(&error) == Some(StatusCode::NotFound) => {
                Ok((Mark::default(), None))
            }
            Err(error) => Err(map_error(&error, &what, None)),
        }
    }

    /// Every stream whose last segment lies past its mark, by one listing of the container,
    /// in stream order; and the markers that could not be read.
    async fn candidates(&self) -> Result<(Vec<StreamId>, Vec<UnreadableEntry>), StoreError> {
        let container = self.api()?.container();
        let mut last_segments: HashMap<StreamId, Position> = HashMap::new();
        let mut marks: HashMap<StreamId, Position> = HashMap::new();
        let mut unreadable = Vec::new();
        let mut pages = container.list_blobs().include_metadata(true).into_stream();
        while let Some(page) = pages.next().await {
            let page = match page {
                Ok(page) => page,
                Err(error) if error_code(&error) == Some(CONTAINER_NOT_FOUND) => break,
                Err(error) => return Err(map_error(&error, OUTBOX_WHAT, None)),
            };
            for blob in page.blobs.blobs() {
                if blob.name.starts_with(MARKER_PREFIX) {
                    let Some(stream) = stream_of_marker(&blob.name) else {
                        unreadable.push(UnreadableEntry {
                            key: blob.name.clone(),
                            detail: "a blob under the marker prefix whose name is no stream's"
                                .to_owned(),
                        });
                        continue;
                    };
                    let metadata = blob.metadata.as_ref();
                    let mark = Mark::from_metadata(|key| {
                        metadata.and_then(|m| {
                            m.iter()
                                .find(|(k, _)| k.eq_ignore_ascii_case(key))
                                .map(|(_, v)| v.clone())
                        })
                    });
                    // An unreadable mark counts as none: the stream's events are published
                    // again (at least once), and its next mark replaces the marker.
                    if mark.is_none() {
                        unreadable.push(UnreadableEntry {
                            key: blob.name.clone(),
                            detail: format!(
                                "marker metadata {META_NOTIFIED}, {META_SEGMENT}, {META_LENGTH} \
                                 missing or not numbers: {metadata:?}"
                            ),
                        });
                    }
                    marks.insert(stream, mark.unwrap_or_default().position);
                } else if let Some((stream, number)) = segment_of(&blob.name) {
                    let position = (number, blob.properties.content_length);
                    let last = last_segments.entry(stream).or_insert(position);
                    *last = (*last).max(position);
                }
            }
        }
        let mut candidates: Vec<StreamId> = last_segments
            .into_iter()
            .filter(|(stream, last)| *last > marks.get(stream).copied().unwrap_or_default())
            .map(|(stream, _)| stream)
            .collect();
        candidates.sort();
        Ok((candidates, unreadable))
    }
}

/// `sorted` rotated to start after `after`: the streams past it, then those up to it.
fn rotate(mut sorted: Vec<StreamId>, after: Option<&StreamId>) -> Vec<StreamId> {
    if let Some(after) = after {
        let split = sorted.partition_point(|stream| stream <= after);
        sorted.rotate_left(split);
    }
    sorted
}

#[async_trait]
impl Outbox for BlobStore {
    /// One listing of the container, then the candidates in stream order rotated after
    /// `after`, [`CANDIDATE_CONCURRENCY`] at a time, until `limit` were found pending or
    /// unreadable. A stream whose blobs cannot be read as a stream ([`StoreError::Corrupt`])
    /// is an unreadable entry; any other error (storage unavailable) fails the search.
    async fn pending(
        &self,
        after: Option<&StreamId>,
        limit: usize,
    ) -> Result<PendingScan, StoreError> {
        let mut scan = PendingScan::default();
        if limit == 0 {
            return Ok(scan);
        }
        let (candidates, unreadable_markers) = self.candidates().await?;
        scan.unreadable = unreadable_markers;
        let mut examined = 0usize;
        let mut results = futures::stream::iter(rotate(candidates, after))
            .map(|stream| async move {
                let result = self.pending_for(&stream).await;
                (stream, result)
            })
            .buffered(CANDIDATE_CONCURRENCY);
        while let Some((stream, result)) = results.next().await {
            match result {
                Ok(Some(pending)) => scan.streams.push(pending),
                Ok(None) => continue,
                Err(StoreError::Corrupt { detail, .. }) => scan.unreadable.push(UnreadableEntry {
                    key: format!("stream {stream}"),
                    detail,
                }),
                Err(error) => return Err(error),
            }
            examined += 1;
            if examined >= limit {
                break;
            }
        }
        Ok(scan)
    }

    /// Also answers a stream whose mark is at its version but behind its position (its last
    /// segment was created after the mark, still empty): marking it again moves the position on,
    /// so sweeps stop finding it.
    async fn pending_for(&self, stream: &StreamId) -> Result<Option<PendingStream>, StoreError> {
        let (mark, etag) = self.read_marker(stream).await?;
        let (version, position) = self
            .with_fresh_tail(stream, |tail| (tail.version, end_position(tail)))
            .await?;
        let behind =
            version > mark.notified || (version == mark.notified && position > mark.position);
        Ok(behind.then(|| PendingStream {
            stream: stream.clone(),
            notified: mark.notified,
            version,
            token: make_token(position, etag.as_deref()),
        }))
    }

    async fn mark_notified(&self, pending: &PendingStream) -> Result<bool, StoreError> {
        let what = pending.stream.to_string();
        let (position, etag) = parse_token(&pending.token).ok_or_else(|| StoreError::Corrupt {
            stream: what.clone(),
            detail: format!("{:?} is not a token of the Blob outbox", pending.token),
        })?;
        let api = self.api()?;
        api.ensure_container().await?;
        let mark = Mark {
            notified: pending.version,
            position,
        };
        let condition = match etag {
            Some(etag) => IfMatchCondition::Match(etag.to_owned()),
            None => IfMatchCondition::NotMatch(ANY_ETAG.to_owned()),
        };
        let result = api
            .container()
            .blob_client(marker_name(&pending.stream))
            .put_block_blob(Bytes::new())
            .metadata(mark.to_metadata())
            .if_match(condition)
            .await;
        match result {
            Ok(_) => Ok(true),
            Err(error)
                if matches!(
                    status_of(&error),
                    Some(StatusCode::PreconditionFailed | StatusCode::Conflict)
                ) =>
            {
                Ok(false)
            }
            Err(error) => Err(map_error(&error, &what, None)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn marker_and_segment_names_give_streams_back() {
        let stream = StreamId::new("Bank", "Account", "a%b ü.|").unwrap();
        let marker = marker_name(&stream);
        assert!(marker.starts_with(MARKER_PREFIX));
        assert!(!marker.ends_with('/'));
        assert_eq!(stream_of_marker(&marker), Some(stream.clone()));
        assert_eq!(
            segment_of(&naming::segment_blob_name(&stream, 3)),
            Some((stream.clone(), 3))
        );
        assert_eq!(segment_of(&marker), None);
        assert_eq!(
            stream_of_marker(&naming::segment_blob_name(&stream, 0)),
            None
        );
        assert_eq!(segment_of("Bank/Account/x/notes.txt"), None);
    }

    #[test]
    fn marks_and_tokens_round_trip() {
        let mark = Mark {
            notified: 12,
            position: (1, 4096),
        };
        let metadata = mark.to_metadata();
        let back = Mark::from_metadata(|k| {
            metadata
                .get(k)
                .map(|v| String::from_utf8(v.to_vec()).unwrap())
        });
        assert_eq!(back, Some(mark));
        assert_eq!(Mark::from_metadata(|_| None), None);
        assert_eq!(
            parse_token(&make_token((2, 7), Some("\"0x8D;x\""))),
            Some(((2, 7), Some("\"0x8D;x\"")))
        );
        assert_eq!(parse_token(&make_token((0, 0), None)), Some(((0, 0), None)));
        assert_eq!(parse_token("x"), None);
    }

    #[test]
    fn candidates_rotate_after_the_last_stream_taken() {
        let streams: Vec<StreamId> = ["a", "b", "c"]
            .iter()
            .map(|i| StreamId::new("Bank", "Account", *i).unwrap())
            .collect();
        let names = |list: Vec<StreamId>| -> Vec<String> {
            list.iter().map(|s| s.instance().to_owned()).collect()
        };
        assert_eq!(names(rotate(streams.clone(), None)), ["a", "b", "c"]);
        assert_eq!(
            names(rotate(streams.clone(), Some(&streams[0]))),
            ["b", "c", "a"]
        );
        assert_eq!(
            names(rotate(streams.clone(), Some(&streams[2]))),
            ["a", "b", "c"]
        );
        // A stream no longer pending still marks the place.
        let gone = StreamId::new("Bank", "Account", "bb").unwrap();
        assert_eq!(names(rotate(streams, Some(&gone))), ["c", "a", "b"]);
    }

    #[test]
    fn positions_order_segments_first() {
        assert!((1u32, 0u64) > (0, 5_000));
        assert!((0u32, 10u64) > (0, 9));
    }
}
