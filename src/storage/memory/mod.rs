//! The in-memory adapters of the core contracts, for tests and single-process use: the event
//! store with its outbox ([`MemoryStore`]) and the snapshot store ([`MemorySnapshotStore`]).
//! Each keeps the same contract as the storage backends (the suites in `tests/contracts/`).

mod events;
mod snapshots;

pub use events::MemoryStore;
pub use snapshots::MemorySnapshotStore;
