//! For authors of a storage adapter: what a new [`EventStore`](crate::stream::EventStore),
//! [`Outbox`](crate::stream::Outbox), [`SnapshotStore`](crate::stream::SnapshotStore) or
//! [`ReadModelStore`](crate::stream::ReadModelStore) needs beyond the contracts themselves (which are in [`crate::stream`]),
//! kept out of the API a domain author sees. The Table, Append Blob and memory adapters
//! (`crate::storage`) are built from the same pieces.
//!
//! What a backend must guarantee (each trait's documentation says it in full):
//! - an append is all-or-nothing, and its [`ExpectedVersion`](crate::stream::ExpectedVersion) is checked in the same atomic
//!   storage operation as the write, so two concurrent writers never both win and no failure
//!   leaves a gap in the sequence numbers;
//! - an append is refused before storage is touched when [`check_new_events`] refuses it, and
//!   a retry of an earlier append (the same event ids in the same order) answers that append's
//!   result instead of writing again, while ids stored before in any other arrangement are
//!   refused ([`earlier_append`] decides, given where each id was stored);
//! - recorded times never go backwards within a stream ([`append_time`] when writing,
//!   [`TimeLine`] when reading), at the precision [`TIME_PRECISION_NANOS`] ([`recorded_time`]),
//!   and a read as of a time is a prefix of the stream;
//! - listing pages: a continuation the backend could not have returned is refused
//!   ([`check_key_continuation`], [`checked_page_size`] for read-model rows), and a page read
//!   with one item more than asked for ends at the page size ([`end_page`]);
//! - the outbox entry of an append is written atomically with its events, so every
//!   acknowledged append is notified at least once.
//!
//! Prove an adapter with the conformance suites in `tests/contracts/` (one per contract,
//! every backend: `conformance_*.rs` for the event store, `outbox.rs`, `snapshots.rs`,
//! `readmodels.rs`): add a fixture for the new backend beside the others, and run them.

pub use crate::stream::read_model::checked_page_size;
pub use crate::stream::store::{
    append_time, check_key_continuation, check_new_events, earlier_append, end_page, recorded_time,
    StoredEventId, TimeLine,
};
pub use crate::stream::TIME_PRECISION_NANOS;
