//! The contracts on Append Blobs (Azurite): the outbox of a `BlobStore` (marker blobs compared
//! with the streams' content). Another view is a new store on the same container, with its own
//! cache of tails, as another process would open. Segments of two blocks, so that marks fall
//! in earlier segments and pending events in later ones.

use streamfold::storage::BlobStore;

use crate::azurite;

const BLOCKS_PER_SEGMENT: u32 = 2;

mod outbox {
    use super::*;
    use crate::outbox::{Fixture, View};

    async fn blob() -> Fixture {
        let (azurite, account) = azurite().await;
        let open = move || {
            View::of(
                BlobStore::new(account.clone()).with_max_blocks_per_segment(BLOCKS_PER_SEGMENT),
            )
        };
        Fixture {
            view: open(),
            reopen: Box::new(open),
            guard: Box::new(azurite),
        }
    }

    crate::outbox::suite!(blob);
}
