//! Everything that reaches Azure Storage, shared by every backend that talks to it (Table
//! storage, Append Blobs), one concept per file:
//! - [`account`]: the connection string and the account it names, and the service clients;
//! - `identity_credential`: the app's managed identity as the crates' token credential;
//! - `shared_key`: Shared Key signatures with the key decoded once, for the requests this crate
//!   builds itself;
//! - [`transport`]: the bounded HTTP transport and retry policy (no hang, no logged URL);
//! - `proxy`: the forward proxy, if the environment names one, each endpoint is reached through;
//! - `header_value`: one header of a request or answer, without the crate's eager error text;
//! - `storage_request`: a request as the crate finalizes one (length, date, version headers);
//! - `delivery`: whether an attempt of a write may have reached storage ("maybe applied");
//! - `pipeline`: passing a request on, for policies that only observe it;
//! - `transport_failure`: how the transport failed (never sent, timed out, broken), and the one
//!   walk down an error's `source()` chain that reads it;
//! - `azure_error`: what an error of the azure crates means, as a [`crate::stream::StoreError`].
//!
//! The items are re-exported here, so `storage::connection::X` names each of them. What names a
//! type of the azure crates is the crate's own (the raw clients are in `crate::testing`).

pub mod account;
pub(crate) mod azure_error;
pub(crate) mod delivery;
pub(crate) mod header_value;
pub(crate) mod identity_credential;
pub(crate) mod pipeline;
pub(crate) mod proxy;
pub(crate) mod shared_key;
pub(crate) mod storage_request;
pub mod transport;
pub(crate) mod transport_failure;

pub use account::{
    ConnectionStringError, StorageAccount, DEFAULT_ENDPOINT_SUFFIX, DEVELOPMENT_ACCOUNT,
    DEVELOPMENT_ACCOUNT_KEY, DEVELOPMENT_BLOB_PORT, DEVELOPMENT_HOST, DEVELOPMENT_TABLE_PORT,
};
pub use azure_error::INPUT_ERROR_CODES;
pub(crate) use azure_error::{error_code, map_error, status_of};
pub(crate) use delivery::DeliveryTracker;
pub(crate) use header_value::header_value;
pub(crate) use pipeline::send_next;
pub(crate) use storage_request::storage_request;
pub use transport::{
    CONNECT_TIMEOUT, MAX_RETRIES, POOL_IDLE_TIMEOUT, REQUEST_TIMEOUT, RETRY_INITIAL_DELAY,
    RETRY_MAX_ELAPSED, TCP_KEEPALIVE,
};
pub(crate) use transport_failure::describe_error;
