//! The storage contracts, each written once as a suite of cases and run against every backend
//! that implements it, in one test binary:
//! - the event store (`src/stream/store.rs`): the suite `tests/conformance/mod.rs`, run by the
//!   fixtures `conformance_memory`, `conformance_table` and `conformance_blob`;
//! - `outbox`: the notification outbox (`src/stream/outbox.rs`);
//! - `snapshots`: the projection snapshot store (`src/stream/snapshot.rs`);
//! - `readmodels`: the read-model store (`src/stream/read_model.rs`).
//!
//! One fixture file per backend (`memory`, `table`, `blob`) makes a fresh, empty store for
//! each contract that backend implements and expands each suite's cases into tests against it,
//! so `cargo nextest run --test contracts -E 'test(table::)'` runs one backend, and a new
//! backend is conformant once its fixture file passes.

#[path = "../conformance/mod.rs"]
mod conformance;
use conformance::helpers;

mod conformance_blob;
mod conformance_memory;
mod conformance_table;

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

/// A fresh Azurite (every fixture on it starts empty) and its account.
pub(crate) async fn azurite() -> (
    streamfold_testbed::Azurite,
    streamfold::storage::StorageAccount,
) {
    let azurite = streamfold_testbed::Azurite::start().await.unwrap();
    let account =
        streamfold::storage::StorageAccount::from_connection_string(&azurite.connection_string())
            .unwrap();
    (azurite, account)
}

mod outbox;
mod readmodels;
mod snapshots;

mod blob;
mod memory;
mod table;
