//! The one place that talks to the `azure_storage_blobs` crate: container creation, segment
//! listing, tail reads, conditional creates and appends, metadata hints, and the mapping of the
//! crate's errors to [`StoreError`].
//!
//! Guarantees:
//! - the container is created at most once per [`BlobApi`], lazily, before the first write (a
//!   failed attempt is not remembered; an existing container counts as created);
//! - every read is open-ended (`offset..`, sent as a range far larger than any segment): the
//!   crate adds `x-ms-range-get-content-crc64` to bounded ranges under 4 MiB, which strict
//!   Azurite refuses, and a tail read must reach the end of the blob anyway;
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

use azure_core::prelude::{Delimiter, IfMatchCondition, MaxResults, Metadata, NextMarker, Prefix};
use azure_core::{Context, StatusCode};
use azure_storage_blobs::prelude::{BlobContentType, ConditionAppendPosition, ContainerClient};
use bytes::Bytes;
use futures::StreamExt;
use tokio::sync::OnceCell;

use super::policy::Captured;
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
/// The length asked for by an "open-ended" read: more than any segment holds
/// (50,000 blocks of 4 MiB are about 195 GiB) and over 4 MiB, so no CRC64 is requested.
const OPEN_ENDED_READ_BYTES: u64 = 1 << 40;
/// Most entries the service returns per listing page.
pub const MAX_LIST_PAGE: usize = 5_000;
/// Longest listing marker accepted from a caller (the service's markers are far shorter).
pub const MAX_MARKER_LEN: usize = 1_024;

// Metadata keys of a segment blob (names must be C# identifiers; the service lower-cases).
/// Sequence number of the segment's first event (fixed when the segment is created).
pub const META_FIRST_SEQUENCE: &str = "firstsequence";
/// A version of the stream that the segment has reached...
pub const META_VERSION: &str = "version";
/// ... the segment's length in bytes at that version...
pub const META_LENGTH: &str = "length";
/// ... and the number of blocks (appends) it had then.
pub const META_BLOCKS: &str = "blocks";

/// What a segment's metadata says: a hint, verified against the content before use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SegmentHint {
    pub first_sequence: u64,
    pub version: u64,
    pub length: u64,
    pub blocks: u64,
}

impl SegmentHint {
    fn to_metadata(self) -> Metadata {
        let mut metadata = Metadata::new();
        metadata.insert(META_FIRST_SEQUENCE, self.first_sequence.to_string());
        metadata.insert(META_VERSION, self.version.to_string());
        metadata.insert(META_LENGTH, self.length.to_string());
        metadata.insert(META_BLOCKS, self.blocks.to_string());
        metadata
    }

    fn from_metadata(get: impl Fn(&str) -> Option<String>) -> Option<Self> {
        let number = |key: &str| get(key).and_then(|v| v.trim().parse::<u64>().ok());
        let hint = Self {
            first_sequence: number(META_FIRST_SEQUENCE)?,
            version: number(META_VERSION)?,
            length: number(META_LENGTH)?,
            blocks: number(META_BLOCKS)?,
        };
        let consistent = hint.first_sequence >= 1
            && hint.version + 1 >= hint.first_sequence
            && hint.blocks <= hint.version + 1 - hint.first_sequence
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
}

/// The bytes of a segment from an offset to its end, and the blob's state at that read.
#[derive(Debug, Clone)]
pub struct TailBytes {
    /// Bytes from `offset` to the end.
    pub bytes: Bytes,
    /// Where `bytes` start in the blob.
    pub offset: u64,
    /// The blob's length at the time of the read.
    pub length: u64,
    /// The blob's ETag (on Azurite possibly of a later state than `bytes`).
    pub etag: Option<String>,
    /// The blob's metadata hint (on Azurite possibly of a later state than `bytes`).
    pub hint: Option<SegmentHint>,
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
                segments.push(ListedSegment {
                    name: blob.name.clone(),
                    length: blob.properties.content_length,
                    hint: SegmentHint::from_metadata(|key| {
                        metadata.and_then(|m| {
                            m.iter()
                                .find(|(k, _)| k.eq_ignore_ascii_case(key))
                                .map(|(_, v)| v.clone())
                        })
                    }),
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
            next_marker: page.next_marker.map(|m| m.as_str().to_owned()),
        })
    }

    /// The bytes of blob `name` from `offset` to its end (see the module documentation).
    /// With [`Alignment::NextRecord`], `offset` may fall inside a record: the bytes then start
    /// at the next record boundary ([`TailBytes::offset`] says where).
    pub async fn read_from(
        &self,
        name: &str,
        offset: u64,
        alignment: Alignment,
        what: &str,
    ) -> Result<ReadOutcome, StoreError> {
        let start = offset.saturating_sub(1);
        let captured = Captured::new();
        let blob = self.container.blob_client(name);
        let mut pages = blob
            .get()
            .range(start..start + OPEN_ENDED_READ_BYTES)
            .chunk_size(OPEN_ENDED_READ_BYTES)
            .context(captured.in_context(Context::new()))
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
                return match (status_of(&error), error_code(&error)) {
                    // A missing container holds no segment either.
                    (Some(StatusCode::NotFound), _) => Ok(ReadOutcome::Missing),
                    (Some(StatusCode::RequestedRangeNotSatisfiable), _)
                    | (_, Some(INVALID_RANGE)) => {
                        if offset == 0 {
                            // Any range of an empty blob is "not satisfiable".
                            Ok(ReadOutcome::Read(TailBytes {
                                bytes: Bytes::new(),
                                offset: 0,
                                length: 0,
                                etag: None,
                                hint: None,
                            }))
                        } else {
                            Ok(ReadOutcome::NotABoundary)
                        }
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
        let body = response
            .data
            .collect()
            .await
            .map_err(|error| map_error(&error, what, None))?;
        let range_start = captured.range_start().unwrap_or(0);
        if range_start != start {
            return Err(StoreError::Corrupt {
                stream: what.to_owned(),
                detail: format!(
                    "asked segment {name} for bytes from {start}, got bytes from {range_start}"
                ),
            });
        }
        let length = captured.total_length().unwrap_or(start + body.len() as u64);
        let terminator = super::record::RECORD_TERMINATOR;
        let (bytes, offset) = if offset == 0 {
            (body, 0)
        } else if body.first() == Some(&terminator) {
            (body.slice(1..), offset)
        } else if alignment == Alignment::NextRecord {
            match body.iter().position(|&b| b == terminator) {
                Some(index) => (body.slice(index + 1..), start + index as u64 + 1),
                None => return Ok(ReadOutcome::NotABoundary),
            }
        } else {
            return Ok(ReadOutcome::NotABoundary);
        };
        Ok(ReadOutcome::Read(TailBytes {
            bytes,
            offset,
            length,
            etag: captured.etag(),
            hint,
        }))
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
