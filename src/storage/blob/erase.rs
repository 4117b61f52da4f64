//! Erasing a stream of the Append Blob backend, tombstone first.
//!
//! A tombstone is an empty **block** blob whose metadata holds the erased version
//! (`erasedversion`) and when (`erased`): an append to it fails (it is no append blob), and
//! creating a segment of its name fails (it exists). Every reader's cold load lists the
//! stream's segments with their metadata, so one tombstone among them makes the stream read
//! as version 0 and refuse appends (`StreamErased`). The steps, each safe to repeat:
//! 1. the stream's **last** segment becomes a tombstone, so no writer can append to it; this
//!    is repeated while a listing shows a later segment (a writer that rolled over meanwhile).
//!    A writer that rolls over to a new segment afterwards checks the segment it left and
//!    finds the tombstone (module `append`), so nothing lands after this step;
//! 2. segment 0 becomes a tombstone, so the stream can never be created again;
//! 3. a listing marker, blob `{domain}/{entity}/{escaped instance}` (beside the stream's
//!    directory), is written, so listings leave the stream out;
//! 4. every other segment, the notification marker and the stream's event-id index rows are
//!    deleted.
//!
//! What is left: segment 0's tombstone and the listing marker, two empty blobs. An erasure
//! that stops anywhere is finished by the next call, which finds a tombstone and goes on.

use super::client::BlobApi;
use super::ids::IdIndex;
use super::naming;
use super::outbox::marker_name;
use super::view::StreamBlobs;
use crate::stream::{Erasure, StoreError, StreamId};

/// Most rounds of step 1 (each finds a later segment that a writer rolled over to).
const MAX_TOMBSTONE_ROUNDS: u32 = 16;

/// The listing marker of an erased stream: the stream's directory name without its `/`.
pub fn listing_marker(stream: &StreamId) -> String {
    naming::stream_prefix(stream)
        .trim_end_matches(naming::SEPARATOR)
        .to_owned()
}

/// Erases `stream` (see the module documentation).
pub async fn erase(
    api: &BlobApi,
    index: &IdIndex,
    blobs: &StreamBlobs<'_>,
) -> Result<Erasure, StoreError> {
    let stream = blobs.stream;
    let what = &blobs.what;
    let prefix = naming::stream_prefix(stream);
    api.ensure_container().await?;
    let first = blobs.segment_name(0);
    let mut resumed = None;
    let mut version = 0;
    for round in 0.. {
        let listed = api.list_segments(&prefix, what).await?;
        if let Some(erased) = listed.iter().find_map(|s| s.erased) {
            // Step 1 is done (here or by an earlier call): the erasure goes on from there.
            resumed = Some(resumed.unwrap_or(true));
            version = version.max(erased);
            let last = listed
                .iter()
                .filter_map(|s| naming::parse_segment_name(&prefix, &s.name).map(|n| (n, s)))
                .max_by_key(|(n, _)| *n);
            match last {
                Some((_, segment)) if segment.erased.is_some() => break,
                Some((number, _)) => {
                    // A later segment than the tombstone: a writer rolled over meanwhile.
                    api.put_tombstone(&blobs.segment_name(number), version, what)
                        .await?;
                    continue;
                }
                None => break,
            }
        }
        if round >= MAX_TOMBSTONE_ROUNDS {
            return Err(StoreError::unavailable(format!(
                "{what}: writers kept adding segments while it was being erased"
            )));
        }
        let tail = blobs.cold_load().await?;
        if let Some(erased) = tail.erased {
            version = erased;
            resumed = Some(true);
            continue;
        }
        let Some(current) = tail.current.as_ref() else {
            return Ok(Erasure::NotFound);
        };
        if tail.version == 0 {
            // An empty segment (a first append that failed) holds no event: nothing to erase.
            return Ok(Erasure::NotFound);
        }
        version = tail.version;
        resumed = Some(false);
        api.put_tombstone(&blobs.segment_name(current.segment.number), version, what)
            .await?;
    }
    // Step 2: segment 0 (already the tombstone when the stream had one segment).
    if api.tombstone_version(&first, what).await?.is_none() {
        api.put_tombstone(&first, version, what).await?;
    }
    // Step 3.
    api.put_tombstone(&listing_marker(stream), version, what)
        .await?;
    // Step 4.
    loop {
        let listed = api.list_segments(&prefix, what).await?;
        let others: Vec<_> = listed.iter().filter(|s| s.name != first).collect();
        if others.is_empty() {
            break;
        }
        for blob in others {
            api.delete_blob(&blob.name, what).await?;
        }
    }
    api.delete_blob(&marker_name(stream), what).await?;
    index.erase(stream).await?;
    Ok(Erasure::Erased {
        version,
        resumed: resumed.unwrap_or(false),
    })
}
