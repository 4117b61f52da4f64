//! The storage contract on Append Blobs (Azurite).

use crate::{conformance, conformance_suite};

use std::sync::Arc;
use std::time::Duration;

use conformance::{EventLimit, Fixture};
use streamfold::storage::blob::{record_size_bound, MAX_BLOCK_BYTES};
use streamfold::storage::BlobStore;
use streamfold::stream::{Clock, EventStore};

/// Segments of a few blocks, so that the cases also cross segment boundaries (the service's
/// 50,000 changes only when a stream moves on to its next segment).
const BLOCKS_PER_SEGMENT: u32 = 4;

async fn blob() -> Fixture {
    let (azurite, account) = crate::azurite().await;
    // Another process: a new store on the same container, with its own cache of tails.
    let skewed_account = account.clone();
    let open = move || -> Arc<dyn EventStore> {
        Arc::new(BlobStore::new(account.clone()).with_max_blocks_per_segment(BLOCKS_PER_SEGMENT))
    };
    Fixture {
        store: open(),
        reopen: Box::new(open),
        skewed: Box::new(move |offset| {
            Arc::new(
                BlobStore::new(skewed_account.clone())
                    .with_max_blocks_per_segment(BLOCKS_PER_SEGMENT)
                    .with_clock(Clock::skewed(offset)),
            )
        }),
        event_limit: Some(EventLimit {
            bytes: MAX_BLOCK_BYTES,
            size: Box::new(|_stream, event| record_size_bound(event).unwrap_or(usize::MAX)),
        }),
        // Times are recorded to 100 ns.
        as_of_resolution: Duration::from_nanos(100),
        guard: Box::new(azurite),
    }
}

conformance_suite!(blob);
