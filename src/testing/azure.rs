//! The raw Azure Storage clients of an account, for tests and benchmarks that reach past the
//! backends: to plant a row a backend would never write, to read what it wrote, or to measure
//! the SDK's own cost beside streamfold's. The library's API names no type of the azure crates;
//! these are here, behind the `testing` feature, because only such code needs them.
//!
//! Every client carries the options the backends use (bounded transport, bounded retries).

use azure_core::ClientOptions;
use azure_data_tables::clients::TableServiceClient;
use azure_storage_blobs::prelude::BlobServiceClient;

use crate::storage::connection::{ConnectionStringError, StorageAccount};

/// The service clients of a [`StorageAccount`] (`use streamfold::testing::RawClients;`).
pub trait RawClients {
    /// The client options every storage client of streamfold uses.
    fn client_options(&self) -> Result<ClientOptions, ConnectionStringError>;
    /// A Table service client with [`RawClients::client_options`].
    fn table_service_client(&self) -> Result<TableServiceClient, ConnectionStringError>;
    /// A Table service client with the given options.
    fn table_service_client_with_options(
        &self,
        options: ClientOptions,
    ) -> Result<TableServiceClient, ConnectionStringError>;
    /// A Blob service client with [`RawClients::client_options`].
    fn blob_service_client(&self) -> Result<BlobServiceClient, ConnectionStringError>;
}

impl RawClients for StorageAccount {
    fn client_options(&self) -> Result<ClientOptions, ConnectionStringError> {
        StorageAccount::client_options(self)
    }

    fn table_service_client(&self) -> Result<TableServiceClient, ConnectionStringError> {
        StorageAccount::table_service_client(self)
    }

    fn table_service_client_with_options(
        &self,
        options: ClientOptions,
    ) -> Result<TableServiceClient, ConnectionStringError> {
        StorageAccount::table_service_client_with_options(self, options)
    }

    fn blob_service_client(&self) -> Result<BlobServiceClient, ConnectionStringError> {
        StorageAccount::blob_service_client(self)
    }
}

/// The storage error code of an error of the azure crates (`x-ms-error-code`, or the code in
/// the body), as the backends read it.
pub fn error_code(error: &azure_core::Error) -> Option<&str> {
    crate::storage::connection::error_code(error)
}

/// Runs one transaction through the Table backend's own `$batch` encoder and answer parser:
/// `inserts`, then each `(row key, properties)` of `merges` merged with `If-Match: *`. The
/// statuses of storage's answer, in order (a rolled-back batch answers with the failing one
/// only). For tests that compare the rows it stores, and what storage answers, with the
/// crate's `TransactionBuilder`.
pub async fn own_transaction(
    account: &StorageAccount,
    table_name: &str,
    partition_key: &str,
    inserts: Vec<serde_json::Map<String, serde_json::Value>>,
    merges: Vec<(String, serde_json::Map<String, serde_json::Value>)>,
) -> Result<Vec<u16>, crate::stream::StoreError> {
    crate::storage::table::own_transaction(account, table_name, partition_key, inserts, merges)
        .await
}
