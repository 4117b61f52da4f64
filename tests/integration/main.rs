//! The integration tests, in one test binary (one link of the whole crate instead of one per
//! file): each module is what used to be its own `tests/<name>.rs`, run against real Azurite
//! through the Functions host simulator or straight against the backends. Run one with
//! `cargo nextest run --test integration -E 'test(/^<name>::/)'`.

#[path = "../support/mod.rs"]
mod support;

#[path = "../conformance/mod.rs"]
mod conformance;

mod adversarial;
mod any_appends;
mod as_of_time;
mod bad_input;
mod bank;
mod blob_backend;
mod blob_ranges;
mod browser;
mod chaos;
mod cli;
mod concurrency;
mod crash;
mod domain_guard;
mod erasure;
mod forward_proxy;
mod host_modes;
mod idempotency;
mod interest;
mod kill_retry;
mod managed_identity;
mod notify_publisher;
mod openapi;
mod outbox;
mod package;
mod projections;
mod projector;
mod read_model_rows;
mod read_paging;
mod routing;
mod seed;
mod snapshots;
mod storage_requests;
mod table_backend;
mod transfer_kills;
mod transfers;
mod webhook_isolation;
