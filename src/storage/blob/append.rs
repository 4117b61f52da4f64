//! Appends: one append block per attempt, guarded by the append position, decided against a
//! cached (or freshly learned) view of the stream's end.
//!
//! Guarantees:
//! - an append is one block, so it is stored entirely or not at all, and its records are
//!   contiguous;
//! - the expectation is enforced by storage, not only checked here: the block is written with
//!   `x-ms-blob-condition-appendpos` = the length this process believes the segment has, so a
//!   writer with a stale view gets 412 and never writes a second copy; a new segment is created
//!   with `If-None-Match: *`, so of two writers creating the same segment one learns that it
//!   exists;
//! - with a cached view that meets an `Exact`/`NoStream` expectation, an append costs exactly
//!   one request (plus one metadata write every [`HINT_INTERVAL_BYTES`]); with a cold cache it
//!   costs a listing and a read of the tail after the segment's hint, never of the whole blob;
//! - after a 412 the view is refreshed from the cached offset and the decision is made again:
//!   an `Exact`/`NoStream` append then fails with `WrongExpectedVersion` (or is recognised as a
//!   retry), `Any`/`Exists` are retried, all at most [`MAX_ATTEMPTS`] times;
//! - a segment that holds the most blocks allowed (the store's limit, or the service's
//!   `BlockCountExceedsLimit`) is never written again: the next append creates the next
//!   segment, whose first record is the next sequence number;
//! - retries are recognised within the idempotency window (see [`super::tail`]); when an
//!   earlier attempt of this very call may have been applied (a lost response) and its events
//!   are found where it wrote them, the outcome is reported as written now
//!   (`duplicate = false`).

use time::OffsetDateTime;

use super::client::{AppendResult, CreateResult, SegmentHint};
use super::record::encode_append;
use super::tail::{Current, Segment, Tail};
use super::view::StreamBlobs;
use crate::storage::connection::DeliveryTracker;
use crate::stream::{AppendOutcome, ExpectedVersion, NewEvent, StoreError};

/// Attempts per append before giving up under contention.
pub const MAX_ATTEMPTS: usize = 16;
/// A writer rewrites a segment's metadata hint once the segment has grown this much past the
/// hinted length, so a cold reader reads at most about this much of a tail (plus what writers
/// appended since).
pub const HINT_INTERVAL_BYTES: u64 = 64 * 1024;

/// Appends `events` (already checked) to the stream of `blobs`, starting from the view `tail`,
/// which is updated with everything learned. `fresh` says whether `tail` was just read from
/// storage (rather than taken from the cache, where it may be behind).
pub async fn append(
    blobs: &StreamBlobs<'_>,
    tail: &mut Tail,
    mut fresh: bool,
    expected: ExpectedVersion,
    events: &[NewEvent],
) -> Result<AppendOutcome, StoreError> {
    let stream = blobs.stream;
    let tracker = DeliveryTracker::new();
    let mut attempted_first = None;
    for _ in 0..MAX_ATTEMPTS {
        let met = expected.is_met_by(tail.version);
        let could_be_retry = !met
            || matches!(expected, ExpectedVersion::Any | ExpectedVersion::Exists)
            || tail.knows_any(events);
        if could_be_retry && !tail.window_complete() {
            // Reads on to the end of the stream too.
            blobs.load_window(tail).await?;
            fresh = true;
        } else if !met && !fresh {
            // A cached view that misses the expectation may just be behind: look again
            // before refusing (or before recognising a retry).
            blobs.refresh(tail).await?;
            fresh = true;
            continue;
        }
        if let Some(span) = tail.earlier_append(stream, events)? {
            let written_by_this_call =
                attempted_first == Some(span.first) && tracker.may_have_reached_storage();
            return Ok(AppendOutcome {
                first_sequence: span.first,
                version: span.last,
                created: span.first == 1,
                duplicate: !written_by_this_call,
                recorded: None,
            });
        }
        if !expected.is_met_by(tail.version) {
            return Err(StoreError::WrongExpectedVersion {
                stream: stream.to_string(),
                expected,
                actual: tail.version,
            });
        }
        let Some(current) = tail.current.as_ref() else {
            create_first_segment(blobs, tail).await?;
            continue;
        };
        if tail.is_full(blobs.max_blocks()) {
            let number = current.segment.number + 1;
            let hint = SegmentHint {
                first_sequence: tail.version + 1,
                version: tail.version,
                length: 0,
                blocks: 0,
            };
            match blobs
                .api
                .create_segment(&blobs.segment_name(number), hint, &blobs.what)
                .await?
            {
                CreateResult::Created { etag } => {
                    tail.roll_over(hint.first_sequence);
                    if let Some(current) = tail.current.as_mut() {
                        current.etag = Some(etag);
                    }
                }
                // Another writer rolled over first: read what it wrote.
                CreateResult::AlreadyExists => {
                    blobs.refresh(tail).await?;
                    fresh = true;
                }
            }
            continue;
        }

        let segment = current.segment;
        let first = tail.version + 1;
        let recorded = OffsetDateTime::now_utc();
        let encoded = encode_append(events, first, recorded)?;
        let name = blobs.segment_name(segment.number);
        attempted_first = Some(first);
        let result = blobs
            .api
            .append_block(
                &name,
                segment.length,
                encoded.bytes.into(),
                &tracker,
                &blobs.what,
            )
            .await?;
        match result {
            AppendResult::Appended {
                etag,
                offset,
                committed_blocks,
            } => {
                if offset.is_some_and(|offset| offset != segment.length) {
                    return Err(blobs.corrupt(format!(
                        "segment {} took a block at {} instead of {}",
                        segment.number,
                        offset.unwrap_or_default(),
                        segment.length
                    )));
                }
                tail.record_append(events, encoded.span, segment.length, &encoded.ends);
                if let Some(current) = tail.current.as_mut() {
                    current.etag = etag;
                    // The service's count for this very append; our own count otherwise.
                    current.committed_blocks =
                        committed_blocks.unwrap_or(current.committed_blocks + 1);
                    refresh_hint(blobs, current, tail.version).await;
                }
                return Ok(AppendOutcome {
                    first_sequence: encoded.span.first,
                    version: encoded.span.last,
                    created: encoded.span.first == 1,
                    duplicate: false,
                    recorded: Some(recorded),
                });
            }
            AppendResult::PositionConflict => {
                blobs.refresh(tail).await?;
                fresh = true;
            }
            AppendResult::SegmentFull => {
                if let Some(current) = tail.current.as_mut() {
                    current.refused_block = true;
                }
            }
            AppendResult::Missing => *tail = blobs.cold_load().await?,
        }
    }
    Err(StoreError::Unavailable {
        message: format!(
            "stream {}: gave up after {MAX_ATTEMPTS} attempts that conflicted with concurrent \
             appends",
            blobs.what
        ),
        maybe_applied: false,
    })
}

/// Creates segment 0 of a stream that has no segment (or learns that someone else did).
async fn create_first_segment(blobs: &StreamBlobs<'_>, tail: &mut Tail) -> Result<(), StoreError> {
    let hint = SegmentHint {
        first_sequence: 1,
        version: 0,
        length: 0,
        blocks: 0,
    };
    match blobs
        .api
        .create_segment(&blobs.segment_name(0), hint, &blobs.what)
        .await?
    {
        CreateResult::Created { etag } => {
            *tail = Tail {
                current: Some(Current {
                    segment: Segment {
                        number: 0,
                        base: 0,
                        length: 0,
                        first_sequence: 1,
                    },
                    committed_blocks: 0,
                    refused_block: false,
                    etag: Some(etag),
                    hint_length: 0,
                }),
                ..Tail::default()
            };
            Ok(())
        }
        CreateResult::AlreadyExists => {
            *tail = blobs.cold_load().await?;
            Ok(())
        }
    }
}

/// Rewrites the segment's hint if it lags by [`HINT_INTERVAL_BYTES`] or more. Best-effort:
/// with a stale ETag (another writer appended meanwhile) nothing is written.
async fn refresh_hint(blobs: &StreamBlobs<'_>, current: &mut Current, version: u64) {
    let length = current.segment.length;
    if length < current.hint_length + HINT_INTERVAL_BYTES {
        return;
    }
    let Some(etag) = current.etag.clone() else {
        return;
    };
    let hint = SegmentHint {
        first_sequence: current.segment.first_sequence,
        version,
        length,
        blocks: current.committed_blocks,
    };
    let name = blobs.segment_name(current.segment.number);
    if let Some(etag) = blobs.api.set_hint(&name, &etag, hint).await {
        current.etag = Some(etag);
        current.hint_length = length;
    }
}
