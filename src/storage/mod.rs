//! Storage backends. Each one implements [`crate::stream::EventStore`] and owns its physical
//! limits (batch sizes, property sizes, key encoding); nothing outside a backend's module sees
//! a PartitionKey, a RowKey or a blob name.

pub mod memory;

pub use memory::MemoryStore;
