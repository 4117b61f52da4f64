//! The one place that talks to the `azure_storage_blobs` crate: container creation, segment
//! listing, tail reads, conditional creates and appends, metadata hints, and the mapping of the
//! crate's errors to [`StoreError`].
//!
//! Guarantees:
//! - the container is created at most once per [`BlobApi`], lazily, before the first write (a
//!   failed attempt is not remembered; an existing container counts as created);
//! - a segment is read in ranged GETs of at most [`MAX_READ_RANGE_BYTES`], each its own request
//!   with the transport's timeout and retries, so a segment of any length can be read (none is
//!   ever asked for whole) and a reader holds at most about one range of it at a time
//!   ([`BlobApi::scan`] hands whole records over range by range; a record cut by the end of a
//!   range is carried into the next). The crate adds `x-ms-range-get-content-crc64` to ranges
//!   under 4 MiB, which strict Azurite refuses with 500: each GET is built with a range of
//!   exactly [`MAX_READ_RANGE_BYTES`] (no checksum asked for) and the range actually wanted
//!   replaces it through the context's custom headers, before the request is signed;
//! - a read from `offset > 0` asks for one byte more (`offset - 1..`) and checks that it is the
//!   terminator of a record: it proves that `offset` is a record boundary and that the blob is
//!   at least `offset` long, and it makes "nothing new" an ordinary one-byte answer rather than
//!   a 416;
//! - the outcome of an append is read from its raw headers (ETag, append offset, committed
//!   blocks, see [`super::policy`]), and a refused append is classified by its error code:
//!   position conflict (412), segment full (`BlockCountExceedsLimit`), blob gone (404);
//! - of a read's answer only the body and `Content-Range` are used for the stream's state:
//!   Azurite answers a read with the ETag, block count and metadata of a *later* state when an
//!   append lands while it sends the body (measured here), so a read's ETag and metadata are
//!   treated as hints and its block count is not used at all;
//! - errors are classified like the Table backend's: unreachable storage, timeouts, 408/429/5xx
//!   become `Unavailable` (with `maybe_applied` from the [`DeliveryTracker`] for writes), 401/403
//!   `Misconfigured`, answers of an unexpected shape `Corrupt`.

use std::sync::Arc;

use azure_core::headers::{Headers, MS_RANGE};
use azure_core::prelude::{Delimiter, IfMatchCondition, MaxResults, Metadata, NextMarker, Prefix};
use azure_core::{Context, CustomHeaders, StatusCode};
use azure_storage_blobs::prelude::{BlobContentType, ConditionAppendPosition, ContainerClient};
use bytes::{Bytes, BytesMut};
use futures::StreamExt;
use tokio::sync::OnceCell;

use super::policy::Captured;
use super::record::{MAX_RECORD_SEQUENCE, RECORD_TERMINATOR};
use crate::storage::connection::{self, error_code, status_of, DeliveryTracker};
use crate::stream::StoreError;

/// Error code of a create-container request for a container that exists.
const CONTAINER_ALREADY_EXISTS: &str = "ContainerAlreadyExists";
/// Error code of any request to a container that does not exist.
const CONTAINER_NOT_FOUND: &str = "ContainerNotFound";
/// Error code of an append refused because the blob changed length.
const APPEND_POSITION_NOT_MET: &str = "AppendPositionConditionNotMet";
/// Error code of an append to an append blob that has 50,000 blocks.
const BLOCK_COUNT_EXCEEDS_LIMIT: &str = "BlockCountExceedsLimit";
/// Error code of a range that starts past the end of the blob.
const INVALID_RANGE: &str = "InvalidRange";
/// `If-None-Match: *`: create only if no blob has this name.
const ANY_ETAG: &str = "*";
/// Content type of a segment blob (newline-delimited JSON).
pub const SEGMENT_CONTENT_TYPE: &str = "application/x-ndjson";
/// Most bytes one ranged GET of a segment asks for (also the range the crate is given, which at
/// 4 MiB is just long enough for it not to ask for a CRC64).
pub const MAX_READ_RANGE_BYTES: u64 = 4 * 1024 * 1024;
/// Fewest bytes a ranged GET asks for (a read that wants a few events asks for about what they
/// take, but not less than this).
pub const MIN_READ_RANGE_BYTES: u64 = 64 * 1024;
/// Longest run of bytes without a record terminator a scan carries from one range to the next:
/// one record is at most one block, so more than this is not a record.
const MAX_CARRIED_BYTES: usize = super::record::MAX_BLOCK_BYTES + 1;
/// Most entries the service returns per listing page.
pub const MAX_LIST_PAGE: usize = 5_000;
/// Longest listing marker accepted from a caller (the service's markers are far shorter).
pub const MAX_MARKER_LEN: usize = 1_024;

// Metadata keys of a segment blob (names must be C# identifiers; the service lower-cases).
/// Metadata of a tombstone (module `erase`): the version the erased stream had...
pub const META_ERASED_VERSION: &str = "erasedversion";
/// ... and when it was erased.
pub const META_ERASED_AT: &str = "erased";
/// Error code of an append to a blob that is not an append blob (a tombstone).
const INVALID_BLOB_TYPE: &str = "InvalidBlobType";

/// Sequence number of the segment's first event (fixed when the segment is created).
pub const META_FIRST_SEQUENCE: &str = "firstsequence";
/// A version of the stream that the segment has reached...
pub const META_VERSION: &str = "version";
/// ... the segment's length in bytes at that version...
pub const META_LENGTH: &str = "length";
/// ... and the number of blocks (appends) it had then...
pub const META_BLOCKS: &str = "blocks";
/// ... and the recorded time of event `version` (RFC 3339), so that a writer starting from the
/// hint knows the time its append must not go below (absent in hints written before it was).
pub const META_RECORDED: &str = "recorded";

/// What a segment's metadata says: a hint, verified against the content before use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SegmentHint {
    pub first_sequence: u64,
    pub version: u64,
    pub length: u64,
    pub blocks: u64,
    /// The recorded time of event `version`, when the hint says.
    pub recorded: Option<time::OffsetDateTime>,
}

impl SegmentHint {
    fn to_metadata(self) -> Metadata {
        let mut metadata = Metadata::new();
        metadata.insert(META_FIRST_SEQUENCE, self.first_sequence.to_string());
        metadata.insert(META_VERSION, self.version.to_string());
        metadata.insert(META_LENGTH, self.length.to_string());
        metadata.insert(META_BLOCKS, self.blocks.to_string());
        if let Some(recorded) = self.recorded {
            metadata.insert(META_RECORDED, super::record::format_timestamp(recorded));
        }
        metadata
    }

    fn from_metadata(get: impl Fn(&str) -> Option<String>) -> Option<Self> {
        let number = |key: &str| get(key).and_then(|v| v.trim().parse::<u64>().ok());
        let hint = Self {
            first_sequence: number(META_FIRST_SEQUENCE)?,
            version: number(META_VERSION)?,
            length: number(META_LENGTH)?,
            blocks: number(META_BLOCKS)?,
            recorded: get(META_RECORDED).and_then(|v| {
                time::OffsetDateTime::parse(
                    v.trim(),
                    &time::format_description::well_known::Rfc3339,
                )
                .ok()
            }),
        };
        // The values are whatever the blob's metadata says: a version no record may carry is
        // refused, so numbering the events after it cannot overflow.
        if hint.version > MAX_RECORD_SEQUENCE {
            return None;
        }
        let after_last = hint.version + 1;
        let consistent = hint.first_sequence >= 1
            && after_last >= hint.first_sequence
            && hint.blocks <= after_last - hint.first_sequence
            && (hint.blocks == 0) == (hint.length == 0);
        consistent.then_some(hint)
    }
}

/// A segment blob as listed.
#[derive(Debug, Clone)]
pub struct ListedSegment {
    pub name: String,
    pub length: u64,
    pub hint: Option<SegmentHint>,
    /// The version recorded in a tombstone (module `erase`), when this blob is one.
    pub erased: Option<u64>,
}

/// The bytes of a segment from an offset to its end.
#[derive(Debug, Clone)]
pub struct TailBytes {
    /// Bytes from `offset` to the end.
    pub bytes: Bytes,
    /// Where `bytes` start in the blob.
    pub offset: u64,
}

/// What [`BlobApi::scan`] hands records to: whole records and the offset where they start.
pub type RecordSink<'a> = dyn FnMut(&[u8], u64) -> Result<Flow, StoreError> + Send + 'a;

/// What a scan does after handing over a run of records.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flow {
    /// Read on; the next range should be about this many bytes.
    More(u64),
    /// Enough: stop reading.
    Stop,
    /// Hand over the rest of this range's records, then stop: no further range.
    EndWithRange,
}

/// Where a scan ended, and the blob's state at its last request.
#[derive(Debug, Clone)]
pub struct ScanEnd {
    /// Where the first record handed over starts in the blob.
    pub offset: u64,
    /// The blob's length at the last request.
    pub length: u64,
    /// The blob's ETag at the last request (on Azurite possibly of a later state).
    pub etag: Option<String>,
    /// The blob's metadata hint at the last request (on Azurite possibly of a later state).
    pub hint: Option<SegmentHint>,
}

/// What a scan found.
#[derive(Debug, Clone)]
pub enum ScanOutcome {
    Read(ScanEnd),
    /// No blob of that name.
    Missing,
    /// The blob is shorter than the offset, or the byte before it is not a terminator (or,
    /// aligning to the next record, no record starts at or after it).
    NotABoundary,
}

/// Where a read may start.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Alignment {
    /// The offset must be a record boundary.
    Exact,
    /// Start at the first record boundary at or after the offset.
    NextRecord,
}

/// What a segment read found.
#[derive(Debug, Clone)]
pub enum ReadOutcome {
    Read(TailBytes),
    /// No blob of that name.
    Missing,
    /// The blob is shorter than the offset, or the byte before it is not a terminator.
    NotABoundary,
}

/// The outcome of an append block.
#[derive(Debug, Clone)]
pub enum AppendResult {
    Appended {
        etag: Option<String>,
        /// Where the block was written (should be the position asked for).
        offset: Option<u64>,
        committed_blocks: Option<u64>,
    },
    /// The blob is not `position` bytes long any more.
    PositionConflict,
    /// The blob has the most blocks it can hold.
    SegmentFull,
    /// The blob does not exist.
    Missing,
}

/// The outcome of a conditional create.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CreateResult {
    /// Created empty, with this ETag.
    Created {
        etag: String,
    },
    AlreadyExists,
}

/// One page of virtual directories under a prefix.
#[derive(Debug, Clone, Default)]
pub struct DirectoryPage {
    pub prefixes: Vec<String>,
    /// The blobs directly under the prefix (not in a virtual directory).
    pub blobs: Vec<String>,
    pub next_marker: Option<String>,
}

/// The container of one store.
pub struct BlobApi {
    container: ContainerClient,
    created: OnceCell<()>,
}

impl BlobApi {
    pub fn new(container: ContainerClient) -> Self {
        Self {
            container,
            created: OnceCell::new(),
        }
    }

    pub fn container_name(&self) -> &str {
        self.container.container_name()
    }

    /// The container client itself, for the notification outbox's marker blobs
    /// ([`super::outbox`]), which are not segments.
    pub fn container(&self) -> &ContainerClient {
        &self.container
    }

    /// Creates the container unless this API already did (or found it).
    pub async fn ensure_container(&self) -> Result<(), StoreError> {
        self.created
            .get_or_try_init(|| async {
                match self.container.create().await {
                    Ok(_) => Ok(()),
                    Err(error) if error_code(&error) == Some(CONTAINER_ALREADY_EXISTS) => Ok(()),
                    Err(error) => Err(map_error(
                        &error,
                        &format!("container {}", self.container_name()),
                        None,
                    )),
                }
            })
            .await
            .map(|_| ())
    }

    /// Every segment blob whose name starts with `prefix`, with its metadata, in name order.
    /// A missing container lists nothing.
    pub async fn list_segments(
        &self,
        prefix: &str,
        what: &str,
    ) -> Result<Vec<ListedSegment>, StoreError> {
        let mut pages = self
            .container
            .list_blobs()
            .prefix(Prefix::from(prefix.to_owned()))
            .include_metadata(true)
            .into_stream();
        let mut segments = Vec::new();
        while let Some(page) = pages.next().await {
            let page = match page {
                Ok(page) => page,
                Err(error) if error_code(&error) == Some(CONTAINER_NOT_FOUND) => break,
                Err(error) => return Err(map_error(&error, what, None)),
            };
            for blob in page.blobs.blobs() {
                let metadata = blob.metadata.as_ref();
                let get = |key: &str| {
                    metadata.and_then(|m| {
                        m.iter()
                            .find(|(k, _)| k.eq_ignore_ascii_case(key))
                            .map(|(_, v)| v.clone())
                    })
                };
                segments.push(ListedSegment {
                    name: blob.name.clone(),
                    length: blob.properties.content_length,
                    hint: SegmentHint::from_metadata(get),
                    erased: erased_version(get),
                });
            }
        }
        Ok(segments)
    }

    /// One page of the virtual directories directly under `prefix`.
    pub async fn list_directories(
        &self,
        prefix: &str,
        delimiter: &str,
        marker: Option<&str>,
        page_size: usize,
        what: &str,
    ) -> Result<DirectoryPage, StoreError> {
        let size = u32::try_from(page_size.clamp(1, MAX_LIST_PAGE)).unwrap_or(1);
        let mut builder = self
            .container
            .list_blobs()
            .prefix(Prefix::from(prefix.to_owned()))
            .delimiter(Delimiter::from(delimiter.to_owned()));
        if let Some(size) = std::num::NonZeroU32::new(size) {
            builder = builder.max_results(MaxResults::new(size));
        }
        let marker = marker.filter(|m| !m.is_empty());
        if let Some(marker) = marker {
            check_marker(marker)?;
            builder = builder.marker(NextMarker::new(marker.to_owned()));
        }
        let page = match builder.into_stream().next().await {
            None => return Ok(DirectoryPage::default()),
            Some(Ok(page)) => page,
            Some(Err(error)) if error_code(&error) == Some(CONTAINER_NOT_FOUND) => {
                return Ok(DirectoryPage::default())
            }
            // The service refuses a marker it did not make with 400.
            Some(Err(error))
                if marker.is_some() && status_of(&error) == Some(StatusCode::BadRequest) =>
            {
                return Err(StoreError::InvalidContinuation {
                    continuation: marker.unwrap_or_default().to_owned(),
                    reason: "storage does not know this listing marker".into(),
                })
            }
            Some(Err(error)) => return Err(map_error(&error, what, None)),
        };
        Ok(DirectoryPage {
            prefixes: page.blobs.prefixes().map(|p| p.name.clone()).collect(),
            blobs: page.blobs.blobs().map(|b| b.name.clone()).collect(),
            next_marker: page.next_marker.map(|m| m.as_str().to_owned()),
        })
    }

    /// The bytes of blob `name` from `offset` to its end (see the module documentation), read
    /// in ranged GETs of [`MAX_READ_RANGE_BYTES`] and collected. With
    /// [`Alignment::NextRecord`], `offset` may fall inside a record: the bytes then start at
    /// the next record boundary ([`TailBytes::offset`] says where). For reads that need not
    /// hold everything at once, see [`Self::scan`].
    pub async fn read_from(
        &self,
        name: &str,
        offset: u64,
        alignment: Alignment,
        what: &str,
    ) -> Result<ReadOutcome, StoreError> {
        let mut collected = BytesMut::new();
        let mut sink = |records: &[u8], _: u64| {
            collected.extend_from_slice(records);
            Ok(Flow::More(MAX_READ_RANGE_BYTES))
        };
        let outcome = self
            .scan(
                name,
                offset,
                alignment,
                MAX_READ_RANGE_BYTES,
                what,
                &mut sink,
            )
            .await?;
        Ok(match outcome {
            ScanOutcome::Read(end) => ReadOutcome::Read(TailBytes {
                bytes: collected.freeze(),
                offset: end.offset,
            }),
            ScanOutcome::Missing => ReadOutcome::Missing,
            ScanOutcome::NotABoundary => ReadOutcome::NotABoundary,
        })
    }

    /// Reads blob `name` from `offset` on (aligned as [`Self::read_from`] does) in ranged
    /// GETs, the first of `first_range` bytes and each next of what `sink` asks for (between
    /// [`MIN_READ_RANGE_BYTES`] and [`MAX_READ_RANGE_BYTES`]), and hands `sink` the whole
    /// records of each range with the offset in the blob where they start. A record cut by
    /// the end of a range is handed over with the next range; bytes after the last terminator
    /// of the blob, if any, are handed over at the end (the decoder then reports them).
    /// Records are handed over as each range's body arrives, a few at a time. Stops at the end
    /// of the blob, when `sink` says [`Flow::Stop`], or at the end of the range in which it
    /// says [`Flow::EndWithRange`].
    pub async fn scan(
        &self,
        name: &str,
        offset: u64,
        alignment: Alignment,
        first_range: u64,
        what: &str,
        sink: &mut RecordSink<'_>,
    ) -> Result<ScanOutcome, StoreError> {
        let blob = self.container.blob_client(name);
        // From `offset > 0`, one byte more: it must end a record.
        let start = offset.saturating_sub(1);
        let mut position = start;
        let mut range = first_range.clamp(MIN_READ_RANGE_BYTES, MAX_READ_RANGE_BYTES);
        // Bytes read but not handed over yet (an unfinished record), and where they start.
        let mut carry = BytesMut::new();
        let mut carry_at = offset;
        // Where the first record handed over starts; `None` while looking for it.
        let mut records_from = (offset == 0 || alignment == Alignment::Exact).then_some(offset);
        let mut first = true;
        loop {
            let captured = Captured::new();
            let mut headers = Headers::new();
            headers.insert(
                MS_RANGE,
                format!("bytes={position}-{}", position + range - 1),
            );
            let mut context = captured.in_context(Context::new());
            context.insert(CustomHeaders::from(headers));
            let mut pages = blob
                .get()
                .range(position..position + MAX_READ_RANGE_BYTES)
                .chunk_size(MAX_READ_RANGE_BYTES)
                .context(context)
                .into_stream();
            let response = match pages.next().await {
                None => {
                    return Err(StoreError::Corrupt {
                        stream: what.to_owned(),
                        detail: format!("reading segment {name} gave no answer"),
                    })
                }
                Some(Ok(response)) => response,
                Some(Err(error)) => {
                    let unsatisfiable = status_of(&error)
                        == Some(StatusCode::RequestedRangeNotSatisfiable)
                        || error_code(&error) == Some(INVALID_RANGE);
                    return match status_of(&error) {
                        // A missing container holds no segment either.
                        Some(StatusCode::NotFound) if first => Ok(ScanOutcome::Missing),
                        // Any range of an empty blob is "not satisfiable".
                        _ if unsatisfiable && first && offset == 0 => {
                            Ok(ScanOutcome::Read(ScanEnd {
                                offset: 0,
                                length: 0,
                                etag: None,
                                hint: None,
                            }))
                        }
                        _ if unsatisfiable && first => Ok(ScanOutcome::NotABoundary),
                        _ if unsatisfiable || status_of(&error) == Some(StatusCode::NotFound) => {
                            Err(StoreError::Corrupt {
                                stream: what.to_owned(),
                                detail: format!(
                                    "segment {name} got shorter than {position} bytes while being read"
                                ),
                            })
                        }
                        _ => Err(map_error(&error, what, None)),
                    };
                }
            };
            let hint = SegmentHint::from_metadata(|key| {
                response.blob.metadata.as_ref().and_then(|m| {
                    m.iter()
                        .find(|(k, _)| k.eq_ignore_ascii_case(key))
                        .map(|(_, v)| v.clone())
                })
            });
            let range_start = captured.range_start().unwrap_or(0);
            if range_start != position {
                return Err(StoreError::Corrupt {
                    stream: what.to_owned(),
                    detail: format!(
                        "asked segment {name} for bytes from {position}, got bytes from {range_start}"
                    ),
                });
            }
            // Records are handed over as the body arrives, so decoding overlaps the transfer.
            // After `Stop` the rest of the body is still read (and dropped), which keeps the
            // connection for the next request.
            let mut body = response.data;
            let mut got = 0u64;
            let mut flow = Flow::More(range);
            while let Some(chunk) = body.next().await {
                let chunk = chunk.map_err(|error| map_error(&error, what, None))?;
                got += chunk.len() as u64;
                if flow == Flow::Stop {
                    continue;
                }
                let mut fresh = &chunk[..];
                if first && offset > 0 {
                    // The byte before `offset` must end a record.
                    match fresh.split_first() {
                        Some((&RECORD_TERMINATOR, rest)) => {
                            fresh = rest;
                            records_from = Some(offset);
                        }
                        Some(_) if alignment == Alignment::NextRecord => {}
                        None => continue,
                        Some(_) => return Ok(ScanOutcome::NotABoundary),
                    }
                }
                first = false;
                if records_from.is_none() {
                    // Skipping the rest of a record to the next boundary.
                    let skipped_to = position + got - fresh.len() as u64;
                    match fresh.iter().position(|&b| b == RECORD_TERMINATOR) {
                        Some(index) => {
                            fresh = &fresh[index + 1..];
                            records_from = Some(skipped_to + index as u64 + 1);
                            carry_at = skipped_to + index as u64 + 1;
                        }
                        None => fresh = &[],
                    }
                }
                carry.extend_from_slice(fresh);
                let whole = carry
                    .iter()
                    .rposition(|&b| b == RECORD_TERMINATOR)
                    .map_or(0, |last| last + 1);
                if whole > 0 {
                    let records = carry.split_to(whole);
                    flow = sink(&records, carry_at)?;
                    carry_at += whole as u64;
                }
                if carry.len() > MAX_CARRIED_BYTES {
                    return Err(StoreError::Corrupt {
                        stream: what.to_owned(),
                        detail: format!(
                            "segment {name} has {} bytes without a record terminator from \
                             offset {carry_at}; no record is that long",
                            carry.len()
                        ),
                    });
                }
            }
            if first && offset > 0 {
                // No byte came back where one must end a record.
                return Ok(ScanOutcome::NotABoundary);
            }
            first = false;
            let length = captured.total_length().unwrap_or(position + got);
            position += got;
            let at_end = got == 0 || position >= length;
            let ends = matches!(flow, Flow::Stop | Flow::EndWithRange);
            if at_end || ends {
                let Some(records_from) = records_from else {
                    return Ok(ScanOutcome::NotABoundary);
                };
                if at_end && !ends && !carry.is_empty() {
                    sink(&carry, carry_at)?;
                }
                return Ok(ScanOutcome::Read(ScanEnd {
                    offset: records_from,
                    length,
                    etag: captured.etag(),
                    hint,
                }));
            }
            if let Flow::More(wanted) = flow {
                range = wanted.clamp(MIN_READ_RANGE_BYTES, MAX_READ_RANGE_BYTES);
            }
        }
    }

    /// Creates the empty append blob `name` unless a blob of that name exists.
    pub async fn create_segment(
        &self,
        name: &str,
        hint: SegmentHint,
        what: &str,
    ) -> Result<CreateResult, StoreError> {
        let tracker = DeliveryTracker::new();
        let result = self
            .container
            .blob_client(name)
            .put_append_blob()
            .content_type(BlobContentType::from(SEGMENT_CONTENT_TYPE))
            .metadata(hint.to_metadata())
            .if_match(IfMatchCondition::NotMatch(ANY_ETAG.to_owned()))
            .context(tracker.context())
            .await;
        match result {
            Ok(response) => Ok(CreateResult::Created {
                etag: response.etag,
            }),
            Err(error)
                if matches!(
                    status_of(&error),
                    Some(StatusCode::Conflict | StatusCode::PreconditionFailed)
                ) =>
            {
                Ok(CreateResult::AlreadyExists)
            }
            Err(error) => Err(map_error(&error, what, Some(&tracker))),
        }
    }

    /// Appends `block` to blob `name` if it is exactly `position` bytes long. `tracker` learns
    /// whether a failed attempt may have been applied.
    pub async fn append_block(
        &self,
        name: &str,
        position: u64,
        block: Bytes,
        tracker: &DeliveryTracker,
        what: &str,
    ) -> Result<AppendResult, StoreError> {
        let captured = Captured::new();
        let result = self
            .container
            .blob_client(name)
            .append_block(block)
            .condition_append_position(ConditionAppendPosition::from(position))
            .context(captured.in_context(tracker.context()))
            .await;
        match result {
            Ok(_) => Ok(AppendResult::Appended {
                etag: captured.etag(),
                offset: captured.append_offset(),
                committed_blocks: captured.committed_block_count(),
            }),
            Err(error) => match (status_of(&error), error_code(&error)) {
                (_, Some(APPEND_POSITION_NOT_MET)) | (Some(StatusCode::PreconditionFailed), _) => {
                    Ok(AppendResult::PositionConflict)
                }
                (_, Some(BLOCK_COUNT_EXCEEDS_LIMIT)) => Ok(AppendResult::SegmentFull),
                // The segment was replaced by a tombstone (a block blob): the stream is to be
                // loaded again, which finds it erased.
                (_, Some(INVALID_BLOB_TYPE)) => Ok(AppendResult::Missing),
                (Some(StatusCode::NotFound), code) if code != Some(CONTAINER_NOT_FOUND) => {
                    Ok(AppendResult::Missing)
                }
                _ => Err(map_error(&error, what, Some(tracker))),
            },
        }
    }

    /// Writes the hint of segment `name` if its ETag is still `etag`; returns the new ETag.
    /// Best-effort: any failure is `None`.
    pub async fn set_hint(&self, name: &str, etag: &str, hint: SegmentHint) -> Option<String> {
        self.container
            .blob_client(name)
            .set_metadata()
            .metadata(hint.to_metadata())
            .if_match(IfMatchCondition::Match(etag.to_owned()))
            .await
            .ok()
            .map(|response| response.etag)
    }
}

impl BlobApi {
    /// Replaces blob `name` (whatever it was) by a tombstone: an empty block blob whose
    /// metadata says the stream was erased at `version`. Appends to it fail (it is no append
    /// blob), and creating a segment of that name fails (it exists).
    pub async fn put_tombstone(
        &self,
        name: &str,
        version: u64,
        what: &str,
    ) -> Result<(), StoreError> {
        let mut metadata = Metadata::new();
        metadata.insert(META_ERASED_VERSION, version.to_string());
        metadata.insert(
            META_ERASED_AT,
            super::record::format_timestamp(time::OffsetDateTime::now_utc()),
        );
        self.container
            .blob_client(name)
            .put_block_blob(Bytes::new())
            .metadata(metadata)
            .await
            .map(|_| ())
            .map_err(|error| map_error(&error, what, None))
    }

    /// The version in blob `name`'s tombstone metadata; `None` when it is no tombstone or
    /// does not exist.
    pub async fn tombstone_version(
        &self,
        name: &str,
        what: &str,
    ) -> Result<Option<u64>, StoreError> {
        match self.container.blob_client(name).get_metadata().await {
            Ok(response) => Ok(erased_version(|key| {
                response
                    .metadata
                    .get(key)
                    .and_then(|v| String::from_utf8(v.to_vec()).ok())
            })),
            Err(error) if status_of(&error) == Some(StatusCode::NotFound) => Ok(None),
            Err(error) => Err(map_error(&error, what, None)),
        }
    }

    /// The `notified` metadata of the notification marker `name`, if it exists and says.
    pub async fn marker_notified(&self, name: &str, what: &str) -> Result<Option<u64>, StoreError> {
        match self.container.blob_client(name).get_metadata().await {
            Ok(response) => Ok(response
                .metadata
                .get("notified")
                .and_then(|v| String::from_utf8(v.to_vec()).ok())
                .and_then(|v| v.trim().parse().ok())),
            Err(error) if status_of(&error) == Some(StatusCode::NotFound) => Ok(None),
            Err(error) => Err(map_error(&error, what, None)),
        }
    }

    /// Deletes blob `name`; one that is not there is no error.
    pub async fn delete_blob(&self, name: &str, what: &str) -> Result<(), StoreError> {
        match self.container.blob_client(name).delete().await {
            Ok(_) => Ok(()),
            Err(error) if status_of(&error) == Some(StatusCode::NotFound) => Ok(()),
            Err(error) => Err(map_error(&error, what, None)),
        }
    }
}

/// The erased version a tombstone's metadata holds (see [`BlobApi::put_tombstone`]).
fn erased_version(get: impl Fn(&str) -> Option<String>) -> Option<u64> {
    get(META_ERASED_VERSION).and_then(|v| v.trim().parse().ok())
}

/// Classifies an error of the azure crates (see [`connection::map_error`]).
pub fn map_error(
    error: &azure_core::Error,
    what: &str,
    write: Option<&DeliveryTracker>,
) -> StoreError {
    connection::map_error(error, what, write, CONTAINER_NOT_FOUND, "container")
}

/// Client options for a blob store: the account's bounded transport and retries plus the
/// [`super::policy::CapturePolicy`].
pub fn client_options(
    account: &crate::storage::connection::StorageAccount,
) -> Result<azure_core::ClientOptions, crate::storage::connection::ConnectionStringError> {
    let mut options = account.client_options()?;
    let capture: Arc<dyn azure_core::Policy> = Arc::new(super::policy::CapturePolicy);
    options.per_retry_policies_mut().push(capture);
    Ok(options)
}

/// Refuses, before any I/O, a marker the service could not have made: too long, or with
/// characters other than printable ASCII.
pub(crate) fn check_marker(marker: &str) -> Result<(), StoreError> {
    let reason = if marker.len() > MAX_MARKER_LEN {
        format!("longer than {MAX_MARKER_LEN} bytes")
    } else if !marker.bytes().all(|b| b.is_ascii_graphic()) {
        "only printable ASCII characters make a listing marker".to_owned()
    } else {
        return Ok(());
    };
    Err(StoreError::InvalidContinuation {
        continuation: marker.to_owned(),
        reason,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hint_of(pairs: &[(&str, &str)]) -> Option<SegmentHint> {
        SegmentHint::from_metadata(|key| {
            pairs
                .iter()
                .find(|(k, _)| *k == key)
                .map(|(_, v)| (*v).to_owned())
        })
    }

    #[test]
    fn a_hint_is_read_only_when_its_numbers_agree() {
        let good = hint_of(&[
            (META_FIRST_SEQUENCE, "1"),
            (META_VERSION, "3"),
            (META_LENGTH, "300"),
            (META_BLOCKS, "2"),
        ])
        .unwrap();
        assert_eq!((good.first_sequence, good.version, good.blocks), (1, 3, 2));
        let empty = hint_of(&[
            (META_FIRST_SEQUENCE, "1"),
            (META_VERSION, "0"),
            (META_LENGTH, "0"),
            (META_BLOCKS, "0"),
        ]);
        assert!(empty.is_some(), "a segment created and not yet written");
        let max = u64::MAX.to_string();
        let beyond = (MAX_RECORD_SEQUENCE + 1).to_string();
        for bad in [
            [("0", "3"), ("300", "2")],
            [("5", "3"), ("300", "2")],
            [("1", "3"), ("300", "4")],
            [("1", "3"), ("0", "2")],
            // Numbers no writer of ours records: refused, not overflowed.
            [("1", max.as_str()), ("300", "2")],
            [("1", beyond.as_str()), ("300", "2")],
            [("2", max.as_str()), ("300", max.as_str())],
        ] {
            let [(first, version), (length, blocks)] = bad;
            let hint = hint_of(&[
                (META_FIRST_SEQUENCE, first),
                (META_VERSION, version),
                (META_LENGTH, length),
                (META_BLOCKS, blocks),
            ]);
            assert!(hint.is_none(), "{bad:?}");
        }
        assert!(hint_of(&[(META_FIRST_SEQUENCE, "1"), (META_VERSION, "x")]).is_none());
    }
}
