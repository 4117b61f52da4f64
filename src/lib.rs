//! streamfold: event sourcing for Azure Functions custom handlers.
//!
//! # Layout
//! - [`stream`]: the core model: stream ids, events, expectations, the `EventStore` contract.
//! - [`storage`]: backends that implement it (Azure Table storage, Append Blobs, memory).

pub mod storage;
pub mod stream;
