//! Storage backends. Each one implements [`crate::stream::EventStore`] and owns its physical
//! limits (batch sizes, property sizes, key encoding); nothing outside a backend's module sees
//! a PartitionKey, a RowKey or a blob name.

pub mod blob;
pub mod connection;
pub mod contention;
pub mod memory;
pub mod table;

pub use blob::BlobStore;
pub use connection::{ConnectionStringError, StorageAccount};
pub use memory::{MemoryDeadLetters, MemoryReadModelStore, MemorySnapshotStore, MemoryStore};
pub use table::{
    TableDeadLetters, TableReadModelStore, TableSnapshotStore, TableStore, DEAD_LETTER_TABLE,
    DEFAULT_READ_MODEL_TABLE,
};
