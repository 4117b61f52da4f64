//! A storage account, read from an Azure Storage connection string, and the Table and Blob
//! service clients built for it.
//!
//! Guarantees:
//! - every connection string form an Azure Functions app meets is understood:
//!   `UseDevelopmentStorage=true` (with an optional `DevelopmentStorageProxyUri`), account name
//!   and key with `DefaultEndpointsProtocol`/`EndpointSuffix`, explicit `BlobEndpoint=` /
//!   `TableEndpoint=` (Azurite on custom ports), and `SharedAccessSignature=`. The legacy azure
//!   crates parse only some of these, so this module parses them itself and hands the crates an
//!   explicit endpoint (`CloudLocation::Custom`);
//! - secrets never leave this module in text: errors name the offending *key* of the connection
//!   string, never a value, and `Debug` redacts the credential.

use std::fmt;
use std::sync::Arc;

use azure_core::auth::Secret;
use azure_core::{ClientOptions, Pipeline, Url};
use azure_data_tables::clients::{TableServiceClient, TableServiceClientBuilder};
use azure_storage::{CloudLocation, StorageCredentials};
use azure_storage_blobs::prelude::{BlobServiceClient, ClientBuilder as BlobClientBuilder};
use base64::Engine as _;

use super::identity_credential::IdentityCredential;
use super::shared_key::{self, SharedKeyPolicy};
use crate::identity::ManagedIdentity;

/// The development account of Azurite and the legacy storage emulator.
pub const DEVELOPMENT_ACCOUNT: &str = "devstoreaccount1";
/// The published key of the development account (public, not a secret).
pub const DEVELOPMENT_ACCOUNT_KEY: &str =
    "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw==";
/// Where `UseDevelopmentStorage=true` points when no proxy is given.
pub const DEVELOPMENT_HOST: &str = "127.0.0.1";
/// The emulator's blob port.
pub const DEVELOPMENT_BLOB_PORT: u16 = 10000;
/// The emulator's table port.
pub const DEVELOPMENT_TABLE_PORT: u16 = 10002;
/// Endpoint suffix of the public Azure cloud.
pub const DEFAULT_ENDPOINT_SUFFIX: &str = "core.windows.net";

// Connection string keys (matched case-insensitively).
const KEY_USE_DEVELOPMENT_STORAGE: &str = "UseDevelopmentStorage";
const KEY_DEVELOPMENT_STORAGE_PROXY_URI: &str = "DevelopmentStorageProxyUri";
const KEY_DEFAULT_ENDPOINTS_PROTOCOL: &str = "DefaultEndpointsProtocol";
const KEY_ACCOUNT_NAME: &str = "AccountName";
const KEY_ACCOUNT_KEY: &str = "AccountKey";
const KEY_SHARED_ACCESS_SIGNATURE: &str = "SharedAccessSignature";
const KEY_ENDPOINT_SUFFIX: &str = "EndpointSuffix";
const KEY_BLOB_ENDPOINT: &str = "BlobEndpoint";
const KEY_TABLE_ENDPOINT: &str = "TableEndpoint";
/// Longest unknown key repeated in an error (longer ones may be pieces of a secret).
const MAX_SHOWN_KEY_LEN: usize = 32;
/// Keys that are valid in a connection string but name services streamfold does not use.
const IGNORED_KEYS: [&str; 6] = [
    "QueueEndpoint",
    "FileEndpoint",
    "BlobSecondaryEndpoint",
    "TableSecondaryEndpoint",
    "QueueSecondaryEndpoint",
    "FileSecondaryEndpoint",
];
const KNOWN_KEYS: [&str; 9] = [
    KEY_USE_DEVELOPMENT_STORAGE,
    KEY_DEVELOPMENT_STORAGE_PROXY_URI,
    KEY_DEFAULT_ENDPOINTS_PROTOCOL,
    KEY_ACCOUNT_NAME,
    KEY_ACCOUNT_KEY,
    KEY_SHARED_ACCESS_SIGNATURE,
    KEY_ENDPOINT_SUFFIX,
    KEY_BLOB_ENDPOINT,
    KEY_TABLE_ENDPOINT,
];

/// Why a connection string was refused, or a client could not be built. Never carries a
/// secret: keys of the connection string are named, their values are not repeated.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ConnectionStringError {
    #[error("the storage connection string is empty")]
    Empty,
    #[error("part {position} of the storage connection string is not of the form Key=Value")]
    MalformedPart { position: usize },
    #[error("the storage connection string gives {key} more than once")]
    DuplicateKey { key: String },
    #[error("the storage connection string has an unknown key {key}")]
    UnknownKey { key: String },
    #[error("the storage connection string has an invalid {key}: {reason}")]
    InvalidValue { key: &'static str, reason: String },
    #[error("UseDevelopmentStorage=true cannot be combined with {key}")]
    DevelopmentStorageCombined { key: String },
    #[error("the storage connection string needs AccountName ({reason})")]
    MissingAccountName { reason: &'static str },
    #[error(
        "the storage connection string has no credential (AccountKey or SharedAccessSignature)"
    )]
    MissingCredentials,
    #[error("the storage connection string has both AccountKey and SharedAccessSignature")]
    ConflictingCredentials,
    #[error("the storage account has no {service} endpoint (give {key}, or AccountName)")]
    MissingEndpoint {
        service: &'static str,
        key: &'static str,
    },
    #[error("could not build the HTTP client for storage: {0}")]
    HttpClient(String),
}

/// How requests are authorized.
#[derive(Clone)]
enum Credential {
    /// Shared Key: the account key (base64), kept as a `Secret`.
    Key(Secret),
    /// A shared access signature: the query string without the leading `?`.
    Sas(Secret),
    /// Bearer tokens of the app's managed identity (an identity-based connection).
    Identity(ManagedIdentity),
}

/// A storage account: its name, credential and service endpoints. Cheap to clone.
#[derive(Clone)]
pub struct StorageAccount {
    account_name: String,
    credential: Credential,
    blob_endpoint: Option<Url>,
    table_endpoint: Option<Url>,
}

impl fmt::Debug for StorageAccount {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let credential = match self.credential {
            Credential::Key(_) => "AccountKey(redacted)",
            Credential::Sas(_) => "SharedAccessSignature(redacted)",
            Credential::Identity(_) => "ManagedIdentity",
        };
        f.debug_struct("StorageAccount")
            .field("account_name", &self.account_name)
            .field("credential", &credential)
            .field(
                "blob_endpoint",
                &self.blob_endpoint.as_ref().map(Url::as_str),
            )
            .field(
                "table_endpoint",
                &self.table_endpoint.as_ref().map(Url::as_str),
            )
            .finish()
    }
}

impl StorageAccount {
    /// Parses an Azure Storage connection string (see the module documentation for the forms).
    pub fn from_connection_string(connection_string: &str) -> Result<Self, ConnectionStringError> {
        let pairs = parse_pairs(connection_string)?;
        let get = |key: &str| -> Option<&str> {
            pairs
                .iter()
                .find(|(k, _)| k.eq_ignore_ascii_case(key))
                .map(|(_, v)| *v)
        };

        if let Some(value) = get(KEY_USE_DEVELOPMENT_STORAGE) {
            if !value.eq_ignore_ascii_case("true") {
                return Err(ConnectionStringError::InvalidValue {
                    key: KEY_USE_DEVELOPMENT_STORAGE,
                    reason: "the only valid value is true".into(),
                });
            }
            if let Some((key, _)) = pairs.iter().find(|(k, _)| {
                !k.eq_ignore_ascii_case(KEY_USE_DEVELOPMENT_STORAGE)
                    && !k.eq_ignore_ascii_case(KEY_DEVELOPMENT_STORAGE_PROXY_URI)
            }) {
                return Err(ConnectionStringError::DevelopmentStorageCombined {
                    key: (*key).to_owned(),
                });
            }
            return match get(KEY_DEVELOPMENT_STORAGE_PROXY_URI) {
                None => Ok(Self::development_storage()),
                Some(proxy) => {
                    let proxy = parse_endpoint(KEY_DEVELOPMENT_STORAGE_PROXY_URI, proxy)?;
                    let host = proxy.host_str().unwrap_or(DEVELOPMENT_HOST).to_owned();
                    Self::development_storage_at(proxy.scheme(), &host)
                }
            };
        }
        if let Some(key) =
            get(KEY_DEVELOPMENT_STORAGE_PROXY_URI).map(|_| KEY_DEVELOPMENT_STORAGE_PROXY_URI)
        {
            return Err(ConnectionStringError::InvalidValue {
                key,
                reason: "only valid with UseDevelopmentStorage=true".into(),
            });
        }

        let account_name = get(KEY_ACCOUNT_NAME);
        let credential = match (get(KEY_ACCOUNT_KEY), get(KEY_SHARED_ACCESS_SIGNATURE)) {
            (Some(_), Some(_)) => return Err(ConnectionStringError::ConflictingCredentials),
            (None, None) => return Err(ConnectionStringError::MissingCredentials),
            (Some(key), None) => {
                if account_name.is_none() {
                    return Err(ConnectionStringError::MissingAccountName {
                        reason: "an AccountKey signs requests with the account name",
                    });
                }
                if base64::engine::general_purpose::STANDARD
                    .decode(key)
                    .is_err()
                {
                    return Err(ConnectionStringError::InvalidValue {
                        key: KEY_ACCOUNT_KEY,
                        reason: "it is not base64".into(),
                    });
                }
                Credential::Key(Secret::new(key.to_owned()))
            }
            (None, Some(sas)) => {
                let sas = sas.trim_start_matches('?');
                if !sas.split('&').any(|p| p.starts_with("sig=")) {
                    return Err(ConnectionStringError::InvalidValue {
                        key: KEY_SHARED_ACCESS_SIGNATURE,
                        reason: "it has no sig= parameter".into(),
                    });
                }
                Credential::Sas(Secret::new(sas.to_owned()))
            }
        };

        let protocol = match get(KEY_DEFAULT_ENDPOINTS_PROTOCOL) {
            None => "https",
            Some(p) if p.eq_ignore_ascii_case("https") => "https",
            Some(p) if p.eq_ignore_ascii_case("http") => "http",
            Some(_) => {
                return Err(ConnectionStringError::InvalidValue {
                    key: KEY_DEFAULT_ENDPOINTS_PROTOCOL,
                    reason: "must be http or https".into(),
                })
            }
        };
        let suffix = get(KEY_ENDPOINT_SUFFIX).unwrap_or(DEFAULT_ENDPOINT_SUFFIX);
        let endpoint =
            |key: &'static str, subdomain: &str| -> Result<Option<Url>, ConnectionStringError> {
                match (get(key), account_name) {
                    (Some(explicit), _) => parse_endpoint(key, explicit).map(Some),
                    (None, Some(account)) => parse_endpoint(
                        KEY_ENDPOINT_SUFFIX,
                        &format!("{protocol}://{account}.{subdomain}.{suffix}"),
                    )
                    .map(Some),
                    (None, None) => Ok(None),
                }
            };
        let blob_endpoint = endpoint(KEY_BLOB_ENDPOINT, "blob")?;
        let table_endpoint = endpoint(KEY_TABLE_ENDPOINT, "table")?;
        let account_name = match account_name {
            Some(name) => name.to_owned(),
            None => {
                let any = table_endpoint.as_ref().or(blob_endpoint.as_ref()).ok_or(
                    ConnectionStringError::MissingAccountName {
                        reason: "no BlobEndpoint or TableEndpoint is given",
                    },
                )?;
                account_from_endpoint(any).ok_or(ConnectionStringError::MissingAccountName {
                    reason: "it cannot be read from the endpoint",
                })?
            }
        };
        Ok(Self {
            account_name,
            credential,
            blob_endpoint,
            table_endpoint,
        })
    }

    /// An account reached as the app's managed identity at these service endpoints (an
    /// identity-based connection; `crate::config` checked that they may carry a bearer token).
    /// The account name is read from the endpoint (`https://{name}.table...`, or the path's
    /// first segment for an emulator's `http://127.0.0.1:port/{name}`).
    pub fn with_identity(
        table_endpoint: Option<Url>,
        blob_endpoint: Option<Url>,
        identity: ManagedIdentity,
    ) -> Result<Self, ConnectionStringError> {
        let any = table_endpoint.as_ref().or(blob_endpoint.as_ref()).ok_or(
            ConnectionStringError::MissingAccountName {
                reason: "no blob or table service URI is given",
            },
        )?;
        let account_name =
            account_from_endpoint(any).ok_or(ConnectionStringError::MissingAccountName {
                reason: "it cannot be read from the service URI",
            })?;
        let trimmed = |url: Option<Url>| {
            url.map(|mut url| {
                let path = url.path().trim_end_matches('/').to_owned();
                url.set_path(&path);
                url
            })
        };
        Ok(Self {
            account_name,
            credential: Credential::Identity(identity),
            blob_endpoint: trimmed(blob_endpoint),
            table_endpoint: trimmed(table_endpoint),
        })
    }

    /// The local emulator's well-known account (what `UseDevelopmentStorage=true` means).
    pub fn development_storage() -> Self {
        // Only constants go into these URLs, and they parse.
        Self::development_storage_at("http", DEVELOPMENT_HOST)
            .expect("the development storage endpoints are valid URLs")
    }

    fn development_storage_at(scheme: &str, host: &str) -> Result<Self, ConnectionStringError> {
        let at = |port: u16| {
            parse_endpoint(
                KEY_DEVELOPMENT_STORAGE_PROXY_URI,
                &format!("{scheme}://{host}:{port}/{DEVELOPMENT_ACCOUNT}"),
            )
        };
        Ok(Self {
            account_name: DEVELOPMENT_ACCOUNT.to_owned(),
            credential: Credential::Key(Secret::new(DEVELOPMENT_ACCOUNT_KEY)),
            blob_endpoint: Some(at(DEVELOPMENT_BLOB_PORT)?),
            table_endpoint: Some(at(DEVELOPMENT_TABLE_PORT)?),
        })
    }

    pub fn account_name(&self) -> &str {
        &self.account_name
    }

    /// The blob service endpoint, without a trailing `/` (e.g. `http://127.0.0.1:10000/devstoreaccount1`).
    pub fn blob_endpoint(&self) -> Option<&str> {
        self.blob_endpoint.as_ref().map(Url::as_str)
    }

    /// The table service endpoint, without a trailing `/`.
    pub fn table_endpoint(&self) -> Option<&str> {
        self.table_endpoint.as_ref().map(Url::as_str)
    }

    /// Whether requests are signed with a shared access signature (rather than the account key).
    pub fn uses_sas(&self) -> bool {
        matches!(self.credential, Credential::Sas(_))
    }

    /// The client options every storage client of streamfold uses: the bounded transport,
    /// the bounded retry policy and the [`super::DeliveryTracker`] policy. A backend that needs a
    /// policy of its own adds it to `per_retry_policies_mut()` and builds its client with
    /// [`Self::blob_service_client_with_options`] or [`Self::table_service_client_with_options`].
    pub(crate) fn client_options(&self) -> Result<ClientOptions, ConnectionStringError> {
        super::transport::client_options()
            .map_err(|e| ConnectionStringError::HttpClient(e.to_string()))
    }

    /// A Table service client for this account with [`Self::client_options`] (the backends
    /// build theirs through `storage::table::client::TableApi`; tests reach it through
    /// `crate::testing::RawClients`).
    #[cfg(any(test, feature = "testing", feature = "fuzzing"))]
    pub(crate) fn table_service_client(&self) -> Result<TableServiceClient, ConnectionStringError> {
        self.table_service_client_with_options(self.client_options()?)
    }

    /// A Table service client with the given options. A Shared Key account's client signs
    /// with [`SharedKeyPolicy`] (the key decoded once), put last among the per-attempt policies
    /// with the crate's own authorization left out (anonymous credentials, which it leaves
    /// alone), as the transactions' pipeline does; other credentials keep the crate's policy.
    pub(crate) fn table_service_client_with_options(
        &self,
        mut options: ClientOptions,
    ) -> Result<TableServiceClient, ConnectionStringError> {
        let endpoint =
            self.table_endpoint
                .as_ref()
                .ok_or(ConnectionStringError::MissingEndpoint {
                    service: "table",
                    key: KEY_TABLE_ENDPOINT,
                })?;
        let credentials = match self.shared_key_policy() {
            Some(policy) => {
                options.per_retry_policies_mut().push(Arc::new(policy));
                StorageCredentials::anonymous()
            }
            None => self.storage_credentials()?,
        };
        Ok(
            TableServiceClientBuilder::with_location(self.location(endpoint), credentials)
                .client_options(options)
                .build(),
        )
    }

    /// The Table service's Shared Key signer of a key-based account (`None` for other
    /// credentials, and for a key that is not base64, which the parser refuses first).
    fn shared_key_policy(&self) -> Option<SharedKeyPolicy> {
        match &self.credential {
            Credential::Key(key) => SharedKeyPolicy::new(&self.account_name, key.secret()),
            _ => None,
        }
    }

    /// A Blob service client for this account with [`Self::client_options`] (the backend
    /// builds its own with its policies; tests reach it through `crate::testing::RawClients`, the fuzz targets call it).
    #[cfg(any(test, feature = "testing", feature = "fuzzing"))]
    pub(crate) fn blob_service_client(&self) -> Result<BlobServiceClient, ConnectionStringError> {
        self.blob_service_client_with_options(self.client_options()?)
    }

    /// A Blob service client with the given options.
    pub(crate) fn blob_service_client_with_options(
        &self,
        options: ClientOptions,
    ) -> Result<BlobServiceClient, ConnectionStringError> {
        let endpoint =
            self.blob_endpoint
                .as_ref()
                .ok_or(ConnectionStringError::MissingEndpoint {
                    service: "blob",
                    key: KEY_BLOB_ENDPOINT,
                })?;
        Ok(
            BlobClientBuilder::with_location(self.location(endpoint), self.storage_credentials()?)
                .client_options(options)
                .blob_service_client(),
        )
    }

    fn location(&self, endpoint: &Url) -> CloudLocation {
        CloudLocation::Custom {
            account: self.account_name.clone(),
            uri: endpoint.as_str().trim_end_matches('/').to_owned(),
        }
    }

    /// The credentials the crates' authorization policy signs or authorizes requests with.
    /// The pipeline of the requests this crate builds itself (the Table backend's entity group
    /// transactions): a Shared Key account's signs with the key decoded once
    /// ([`SharedKeyPolicy`]); any other credential's is the crate's own.
    pub(crate) fn request_pipeline(
        &self,
        options: ClientOptions,
    ) -> Result<Pipeline, ConnectionStringError> {
        if let Some(policy) = self.shared_key_policy() {
            return Ok(shared_key::pipeline(policy, options));
        }
        Ok(azure_storage::clients::new_pipeline_from_options(
            options,
            self.storage_credentials()?,
        ))
    }

    pub(crate) fn storage_credentials(&self) -> Result<StorageCredentials, ConnectionStringError> {
        match &self.credential {
            Credential::Key(key) => Ok(StorageCredentials::access_key(
                self.account_name.clone(),
                key.clone(),
            )),
            // The crate's error for a bad token repeats the token: do not pass it on.
            Credential::Sas(sas) => StorageCredentials::sas_token(sas.secret()).map_err(|_| {
                ConnectionStringError::InvalidValue {
                    key: KEY_SHARED_ACCESS_SIGNATURE,
                    reason: "it is not a valid query string".into(),
                }
            }),
            Credential::Identity(identity) => Ok(StorageCredentials::token_credential(Arc::new(
                IdentityCredential(identity.clone()),
            ))),
        }
    }
}

/// Splits `Key=Value;Key=Value` into pairs, refusing duplicates and unknown keys.
fn parse_pairs(connection_string: &str) -> Result<Vec<(&str, &str)>, ConnectionStringError> {
    let mut pairs: Vec<(&str, &str)> = Vec::new();
    for (index, part) in connection_string.split(';').enumerate() {
        let part = part.trim();
        if part.is_empty() {
            continue;
        }
        let (key, value) = part
            .split_once('=')
            .map(|(k, v)| (k.trim(), v.trim()))
            .filter(|(k, v)| !k.is_empty() && !v.is_empty())
            .ok_or(ConnectionStringError::MalformedPart {
                position: index + 1,
            })?;
        if !KNOWN_KEYS
            .iter()
            .chain(IGNORED_KEYS.iter())
            .any(|known| known.eq_ignore_ascii_case(key))
        {
            // A stray `;` inside a secret makes a "key" out of part of it: name only keys that
            // look like setting names.
            let looks_like_a_name =
                key.len() <= MAX_SHOWN_KEY_LEN && key.chars().all(|c| c.is_ascii_alphabetic());
            return Err(ConnectionStringError::UnknownKey {
                key: if looks_like_a_name {
                    key.to_owned()
                } else {
                    format!("in part {}", index + 1)
                },
            });
        }
        if pairs.iter().any(|(k, _)| k.eq_ignore_ascii_case(key)) {
            return Err(ConnectionStringError::DuplicateKey {
                key: key.to_owned(),
            });
        }
        pairs.push((key, value));
    }
    if pairs.is_empty() {
        return Err(ConnectionStringError::Empty);
    }
    Ok(pairs)
}

/// An http(s) endpoint URL without query, fragment or trailing `/`.
fn parse_endpoint(key: &'static str, value: &str) -> Result<Url, ConnectionStringError> {
    let invalid = |reason: &str| ConnectionStringError::InvalidValue {
        key,
        reason: reason.to_owned(),
    };
    let url = Url::parse(value.trim_end_matches('/')).map_err(|e| invalid(&e.to_string()))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(invalid("the scheme must be http or https"));
    }
    if url.host_str().is_none() {
        return Err(invalid("it has no host"));
    }
    if url.query().is_some() || url.fragment().is_some() {
        return Err(invalid(
            "an endpoint must not carry a query (give a SAS as SharedAccessSignature)",
        ));
    }
    Ok(url)
}

/// The account an endpoint belongs to: the first path segment of a path-style URL
/// (`http://127.0.0.1:10002/devstoreaccount1`), else the first label of the host name.
fn account_from_endpoint(url: &Url) -> Option<String> {
    let first_segment = url
        .path_segments()
        .and_then(|mut s| s.next())
        .filter(|s| !s.is_empty());
    if let Some(segment) = first_segment {
        return Some(segment.to_owned());
    }
    let host = url.host_str()?;
    let is_ip = host.parse::<std::net::IpAddr>().is_ok() || host.starts_with('[');
    (!is_ip)
        .then(|| host.split('.').next().map(str::to_owned))
        .flatten()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn development_storage() {
        let account = StorageAccount::from_connection_string("UseDevelopmentStorage=true").unwrap();
        assert_eq!(account.account_name(), DEVELOPMENT_ACCOUNT);
        assert_eq!(
            account.blob_endpoint().unwrap(),
            "http://127.0.0.1:10000/devstoreaccount1"
        );
        assert_eq!(
            account.table_endpoint().unwrap(),
            "http://127.0.0.1:10002/devstoreaccount1"
        );
        assert!(!account.uses_sas());
        assert!(account.table_service_client().is_ok());
        assert!(account.blob_service_client().is_ok());

        let account = StorageAccount::from_connection_string(
            " usedevelopmentstorage = TRUE ; DevelopmentStorageProxyUri=http://docker-host:1234 ;",
        )
        .unwrap();
        assert_eq!(
            account.table_endpoint().unwrap(),
            "http://docker-host:10002/devstoreaccount1"
        );
        assert_eq!(
            account.blob_endpoint().unwrap(),
            "http://docker-host:10000/devstoreaccount1"
        );

        for bad in [
            "UseDevelopmentStorage=false",
            "UseDevelopmentStorage=true;AccountName=x",
            "DevelopmentStorageProxyUri=http://x",
        ] {
            assert!(
                StorageAccount::from_connection_string(bad).is_err(),
                "{bad}"
            );
        }
    }

    #[test]
    fn account_key_strings() {
        let account = StorageAccount::from_connection_string(&format!(
            "DefaultEndpointsProtocol=https;AccountName=myacct;AccountKey={DEVELOPMENT_ACCOUNT_KEY};EndpointSuffix=core.chinacloudapi.cn"
        ))
        .unwrap();
        assert_eq!(account.account_name(), "myacct");
        assert_eq!(
            account.table_endpoint().unwrap(),
            "https://myacct.table.core.chinacloudapi.cn/"
        );
        assert_eq!(
            account.blob_endpoint().unwrap(),
            "https://myacct.blob.core.chinacloudapi.cn/"
        );

        let account = StorageAccount::from_connection_string(&format!(
            "AccountName=myacct;AccountKey={DEVELOPMENT_ACCOUNT_KEY}"
        ))
        .unwrap();
        assert_eq!(
            account.table_endpoint().unwrap(),
            "https://myacct.table.core.windows.net/"
        );
    }

    #[test]
    fn explicit_endpoints() {
        let account = StorageAccount::from_connection_string(&format!(
            "DefaultEndpointsProtocol=http;AccountName=devstoreaccount1;AccountKey={DEVELOPMENT_ACCOUNT_KEY};BlobEndpoint=http://127.0.0.1:41001/devstoreaccount1;TableEndpoint=http://127.0.0.1:41002/devstoreaccount1/;"
        ))
        .unwrap();
        assert_eq!(
            account.table_endpoint().unwrap(),
            "http://127.0.0.1:41002/devstoreaccount1"
        );
        assert_eq!(
            account.blob_endpoint().unwrap(),
            "http://127.0.0.1:41001/devstoreaccount1"
        );
    }

    #[test]
    fn sas_strings() {
        let sas = "sv=2022-11-02&ss=bt&srt=sco&sp=rwdlacu&se=2030-01-01T00:00:00Z&sig=abc%2Bdef%3D";
        let account = StorageAccount::from_connection_string(&format!(
            "TableEndpoint=https://myacct.table.core.windows.net/;SharedAccessSignature={sas}"
        ))
        .unwrap();
        assert!(account.uses_sas());
        assert_eq!(account.account_name(), "myacct");
        assert!(account.table_service_client().is_ok());
        assert!(matches!(
            account.blob_service_client(),
            Err(ConnectionStringError::MissingEndpoint {
                service: "blob",
                ..
            })
        ));
        let debug = format!("{account:?}");
        assert!(!debug.contains("sig="), "{debug}");

        let account = StorageAccount::from_connection_string(&format!(
            "BlobEndpoint=http://127.0.0.1:1/devstoreaccount1;SharedAccessSignature=?{sas}"
        ))
        .unwrap();
        assert_eq!(account.account_name(), "devstoreaccount1");

        let err =
            StorageAccount::from_connection_string("AccountName=a;SharedAccessSignature=sv=1&sp=r")
                .unwrap_err();
        assert!(matches!(err, ConnectionStringError::InvalidValue { .. }));
    }

    #[test]
    fn errors_never_repeat_secrets() {
        let secret = "c2VjcmV0LWtleS12YWx1ZQ==";
        let cases = [
            format!("AccountKey={secret}"),
            format!("AccountName=a;AccountKey={secret};SharedAccessSignature=sig={secret}"),
            format!("AccountName=a;AccountKey={secret};Bogus=1"),
            format!("AccountName=a;AccountKey={secret};AccountKey={secret}"),
            format!("AccountName=a;AccountKey={secret}!!"),
            format!("AccountName=a;AccountKey={secret};{secret}"),
        ];
        for case in cases {
            let err = StorageAccount::from_connection_string(&case).unwrap_err();
            assert!(!err.to_string().contains("c2VjcmV0"), "{err}");
        }
        assert!(matches!(
            StorageAccount::from_connection_string(" ; "),
            Err(ConnectionStringError::Empty)
        ));
        assert!(matches!(
            StorageAccount::from_connection_string("AccountName=a"),
            Err(ConnectionStringError::MissingCredentials)
        ));
    }
}
