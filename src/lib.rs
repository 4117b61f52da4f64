//! streamfold: event sourcing for Azure Functions custom handlers.
//!
//! # Layout
//! Dependencies point one way, down this list (`scripts/check-modules.py` checks it in CI).
//! - [`stream`]: the core model (stream ids, events, expectations) and every contract an
//!   adapter implements: `EventStore`, `Outbox`, `SnapshotStore`, `ReadModelStore`,
//!   `DeadLetterStore`, `NotificationSink` (with a notification's shape); `StoreDecorator`
//!   for a store that wraps another and changes only some of its calls.
//! - [`storage`]: the adapters of those contracts: Azure Table storage (`storage::table`),
//!   Append Blobs (`storage::blob`), memory (`storage::memory`), and what reaches Azure Storage
//!   (`storage::connection`: account, transport, error mapping).
//! - [`projection`]: folds over a stream, as of a sequence or a time, with snapshots, a state
//!   cache and classifications; its fold engine is the one the read models run on too.
//! - [`identity`]: access tokens of the app's managed identity (for storage and Event Grid
//!   without keys), and where a bearer token may be sent.
//! - [`notify`]: Event Grid notifications (new entity, new event): raising, schemas, the
//!   publisher (the `NotificationSink` of Event Grid), the outbox dispatcher, dead letters.
//! - [`readmodel`]: projections kept as rows per stream, exact under at-least-once, unordered
//!   notifications; rebuilt from the streams on demand.
//! - [`config`]: app settings, read once at start-up without I/O.
//! - [`app`]: composes the backends and projections every function shares; nothing below
//!   imports it.
//! - [`erasure`]: erasing a stream and everything derived from it.
//! - [`ops`]: the operator CLI's commands (binary `streamfold`): list, dump, verify, rebuild,
//!   notifications, replay, delete, over the app composed from the handler's settings.
//! - [`functions`]: the handler layer (the only code that knows the HTTP framework): the
//!   custom-handler protocol, problem responses, the generic event-stream API.
//! - [`telemetry`]: JSON logs on stdout and the shutdown signal.
//! - [`runtime`]: the async runtime a handler process serves on (one worker thread fewer than
//!   the CPUs: the Functions host shares the instance).
//! - [`prelude`]: what a domain author needs, in one `use streamfold::prelude::*;`.
//! - [`backend`]: what only an author of a new adapter (an `EventStore`, `Outbox`,
//!   `SnapshotStore` or `ReadModelStore`) needs: the checks and rules every backend shares.
//! - `testing` (feature `testing`): test doubles (`CountingStore`, `MemorySink`) and the raw
//!   Azure clients of an account for tests that reach past the backends; absent from a build
//!   without the feature.
//!
//! The bank example lives in the binary (`src/bank`), a user of this public API; a second
//! domain, `examples/inventory`, uses the same API (`docs/your-own-domain.md`): an app is
//! composed with [`app::App::builder`] (or from settings), a domain registers its projections
//! and read models with the app and its HTTP functions and OpenAPI part with
//! [`functions::DomainApi`].

pub mod app;
pub mod backend;
pub mod config;
pub mod erasure;
pub mod functions;
#[cfg(feature = "fuzzing")]
#[doc(hidden)]
pub mod fuzzing;
pub mod identity;
pub mod notify;
pub mod ops;
pub mod prelude;
pub mod projection;
pub mod readmodel;
pub mod runtime;
pub mod storage;
pub mod stream;
pub mod telemetry;
#[cfg(any(test, feature = "testing"))]
pub mod testing;
