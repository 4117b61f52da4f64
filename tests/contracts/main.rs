//! The storage contracts besides the event store's (whose suite is `tests/conformance`), each
//! written once as a suite of cases and run against every backend that implements it, in one
//! test binary:
//! - `outbox`: the notification outbox (`src/stream/outbox.rs`);
//! - `snapshots`: the projection snapshot store (`src/projection/snapshot.rs`);
//! - `readmodels`: the read-model store (`src/readmodel/store.rs`).
//!
//! One fixture file per backend (`memory`, `table`, `blob`) makes a fresh, empty store for
//! each contract that backend implements and expands each suite's cases into tests against it,
//! so `cargo nextest run --test contracts -E 'test(table::)'` runs one backend, and a new
//! backend is conformant once its fixture file passes.

#[allow(dead_code)]
#[path = "../conformance/helpers.rs"]
mod helpers;

/// Expands to one `#[tokio::test]` per case of the suite module `$suite`, each on a fresh
/// fixture made by `$make` (an async fn). Each suite's own `suite!` macro lists its cases.
macro_rules! cases {
    ($suite:ident, $make:path; $($case:ident),* $(,)?) => {
        $(
            #[tokio::test]
            async fn $case() {
                let fixture = $make().await;
                $crate::$suite::$case(&fixture).await;
            }
        )*
    };
}
pub(crate) use cases;

mod outbox;
mod readmodels;
mod snapshots;

mod blob;
mod memory;
mod table;
