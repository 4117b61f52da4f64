//! Test doubles, for tests of code built on the library (feature `testing`; the crate's own unit
//! tests always have them). Nothing in a release build depends on them, and without the feature
//! they are not compiled at all, so no production app can end up running one.
//! - [`CountingStore`]: wraps any [`crate::stream::EventStore`] and counts what is read
//!   through it, so a test can check what a projection run or a request costs in reads;
//! - [`EventCount`]: a projection that counts events, for tests of what folds;
//! - [`MemorySink`]: a [`crate::notify::NotificationSink`] that keeps what is published and
//!   can be told to fail or refuse, for tests of what publishes; [`RacingSink`], one that
//!   appends to a stream while it publishes;
//!
//! The in-memory backends (`crate::storage::memory`) are not doubles: they are a real backend
//! for single-process runs, and stay in the API without this feature.

//! - test hooks kept on the real types, compiled only with this feature too: the stores'
//!   `with_clock` (a skewed [`crate::stream::Clock`]), `MemoryReadModelStore::overwrite`;
//! - [`RawClients`] and [`azure`]: the raw Azure Storage clients of an account, for tests that
//!   reach past the backends (the library's own API names no type of the azure crates).

pub mod azure;
mod counting;
mod event_count;
mod sink;

pub use azure::RawClients;
pub use counting::CountingStore;
pub use event_count::EventCount;
pub use sink::{
    MemorySink, RacingSink, MEMORY_SINK_ENDPOINT, MEMORY_SINK_REFUSAL, RACING_EVENT_TYPE,
};
