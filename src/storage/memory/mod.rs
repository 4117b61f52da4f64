//! The in-memory adapters of the core contracts, for tests and single-process use: the event
//! store with its outbox ([`MemoryStore`]) the snapshot store ([`MemorySnapshotStore`]) and the dead-letter store
//! ([`MemoryDeadLetters`]) and the read-model store ([`MemoryReadModelStore`]).
//! Each keeps the same contract as the storage backends (the suites in `tests/contracts/`).

mod dead_letters;
mod events;
mod read_models;
mod snapshots;

pub use dead_letters::MemoryDeadLetters;
pub use events::MemoryStore;
pub use read_models::MemoryReadModelStore;
pub use snapshots::MemorySnapshotStore;
