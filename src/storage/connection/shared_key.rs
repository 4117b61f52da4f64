//! Shared Key authorization of a key-based account's Table requests (the transactions and
//! single-entity writes this crate builds, and the Table client's own reads): the account key is
//! decoded and keyed into HMAC-SHA256 once, when the client is made, instead of on every
//! request as `azure_storage`'s authorization policy does (which also builds an error, with a
//! formatted message, for each optional header a request lacks).
//!
//! Guarantees:
//! - the `Authorization` header is the one `azure_storage`'s policy writes for a Table request
//!   (`ServiceType::Table`): `SharedKey {account}:{signature}` over the method, `Content-MD5`,
//!   `Content-Type`, `x-ms-date` and `/{account}{path}`, each on its own line; a unit test
//!   sends the same request through both policies and compares the headers;
//! - as that policy does, a request whose URL already carries a shared access signature
//!   (`sig`) is sent unsigned;
//! - only Shared Key accounts use this policy (`StorageAccount::request_pipeline`, and
//!   `StorageAccount::table_service_client_with_options`, which gives the crate anonymous
//!   credentials so its own policy adds nothing); shared access signatures and managed
//!   identities keep the crate's own policy, unchanged. The Blob service signs more headers and
//!   keeps the crate's policy too.

use std::sync::Arc;

use async_trait::async_trait;
use azure_core::headers::{AUTHORIZATION, CONTENT_MD5, CONTENT_TYPE, MS_DATE};
use azure_core::{ClientOptions, Context, Pipeline, Policy, PolicyResult, Request};
use base64::Engine as _;
use hmac::{Hmac, Mac};
use sha2::Sha256;

use super::send_next;

/// The query parameter of a shared access signature.
const SAS_SIGNATURE_PARAMETER: &str = "sig";
/// What the `Authorization` header starts with.
const SHARED_KEY_SCHEME: &str = "SharedKey ";

/// Signs each request with the account's key (see the module).
#[derive(Clone)]
pub(crate) struct SharedKeyPolicy {
    account: String,
    /// HMAC-SHA256 keyed with the decoded account key, cloned for each signature.
    keyed: Hmac<Sha256>,
}

impl std::fmt::Debug for SharedKeyPolicy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SharedKeyPolicy")
            .field("account", &self.account)
            .finish_non_exhaustive()
    }
}

impl SharedKeyPolicy {
    /// The policy of `account` with the base64 `key`; `None` when the key is not base64 (the
    /// connection string's parser refuses such a key first).
    pub(crate) fn new(account: &str, key: &str) -> Option<Self> {
        let key = base64::engine::general_purpose::STANDARD.decode(key).ok()?;
        let keyed = Hmac::<Sha256>::new_from_slice(&key).ok()?;
        Some(Self {
            account: account.to_owned(),
            keyed,
        })
    }

    /// The `Authorization` header of `request`.
    fn authorization(&self, request: &Request) -> String {
        let (mut md5, mut content_type, mut date) = ("", "", "");
        for (name, value) in request.headers().iter() {
            let slot = match name {
                n if *n == CONTENT_MD5 => &mut md5,
                n if *n == CONTENT_TYPE => &mut content_type,
                n if *n == MS_DATE => &mut date,
                _ => continue,
            };
            *slot = value.as_str();
        }
        let mut mac = self.keyed.clone();
        for part in [
            request.method().as_ref(),
            "\n",
            md5,
            "\n",
            content_type,
            "\n",
            date,
            "\n",
            "/",
            &self.account,
            request.url().path(),
        ] {
            mac.update(part.as_bytes());
        }
        let signature = mac.finalize().into_bytes();
        let mut header = String::with_capacity(
            SHARED_KEY_SCHEME.len() + self.account.len() + 1 + SIGNATURE_BASE64_LEN,
        );
        header.push_str(SHARED_KEY_SCHEME);
        header.push_str(&self.account);
        header.push(':');
        base64::engine::general_purpose::STANDARD.encode_string(signature, &mut header);
        header
    }
}

/// Length of a SHA-256 signature in base64.
const SIGNATURE_BASE64_LEN: usize = 44;

#[async_trait]
impl Policy for SharedKeyPolicy {
    async fn send(
        &self,
        ctx: &Context,
        request: &mut Request,
        next: &[Arc<dyn Policy>],
    ) -> PolicyResult {
        let presigned = request
            .url()
            .query_pairs()
            .any(|(name, _)| name == SAS_SIGNATURE_PARAMETER);
        if !presigned {
            let header = self.authorization(request);
            request.insert_header(AUTHORIZATION, header);
        }
        send_next(ctx, request, next, "shared key").await
    }
}

/// The pipeline of a Shared Key account's requests that this crate builds itself: as
/// `azure_storage` builds its own (the retry policy, then per attempt the timeout and the
/// authorization), with `policy` as the authorization.
pub(crate) fn pipeline(policy: SharedKeyPolicy, options: ClientOptions) -> Pipeline {
    let per_retry: Vec<Arc<dyn Policy>> = vec![Arc::new(options.timeout.clone()), Arc::new(policy)];
    Pipeline::new(
        Some(env!("CARGO_PKG_NAME")),
        Some(env!("CARGO_PKG_VERSION")),
        options,
        Vec::new(),
        per_retry,
    )
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use azure_core::headers::Headers;
    use azure_core::{HttpClient, Method, Response, StatusCode, TransportOptions, Url};
    use azure_storage::clients::ServiceType;

    use super::*;
    use crate::storage::connection::StorageAccount;

    /// A transport that answers 200 and keeps each request's `Authorization` header.
    #[derive(Debug, Default)]
    struct Capture(Mutex<Vec<Option<String>>>);

    #[async_trait]
    impl HttpClient for Capture {
        async fn execute_request(&self, request: &Request) -> azure_core::Result<Response> {
            let header = request.headers().get_optional_string(&AUTHORIZATION);
            self.0.lock().unwrap().push(header);
            Ok(Response::new(
                StatusCode::Ok,
                Headers::new(),
                Box::pin(futures::stream::empty()),
            ))
        }
    }

    fn account() -> StorageAccount {
        StorageAccount::from_connection_string(&format!(
            "DefaultEndpointsProtocol=https;AccountName=someaccount;AccountKey={};\
             EndpointSuffix=core.windows.net",
            crate::storage::connection::DEVELOPMENT_ACCOUNT_KEY
        ))
        .unwrap()
    }

    /// The `Authorization` header `pipeline` sends `request` with.
    async fn sent_with(pipeline: Pipeline, capture: &Capture, request: &Request) -> Option<String> {
        let mut context = Context::new();
        context.insert(ServiceType::Table);
        pipeline.send(&context, &mut request.clone()).await.unwrap();
        capture.0.lock().unwrap().pop().unwrap()
    }

    #[tokio::test]
    async fn signatures_are_the_crate_policys() {
        let capture = Arc::new(Capture::default());
        let options = || ClientOptions::new(TransportOptions::new(capture.clone()));
        let account = account();
        let base = "https://someaccount.table.core.windows.net";
        let requests = [
            (
                format!("{base}/$batch"),
                Method::Post,
                Some("multipart/mixed; boundary=batch_1"),
            ),
            (format!("{base}/Tables"), Method::Get, None),
            (
                format!("{base}/streamfold(PartitionKey='a%7Cb',RowKey='c%20d')"),
                Method::Put,
                Some("application/json"),
            ),
            (
                format!("{base}/streamfold()?$filter=x%20eq%201"),
                Method::Delete,
                None,
            ),
        ];
        for (url, method, content_type) in requests {
            let mut headers = Headers::new();
            if let Some(content_type) = content_type {
                headers.insert(CONTENT_TYPE, content_type);
            }
            let request = azure_storage::clients::finalize_request(
                Url::parse(&url).unwrap(),
                method,
                headers,
                Some(bytes::Bytes::from_static(b"{}").into()),
            )
            .unwrap();
            let ours = sent_with(
                account.request_pipeline(options()).unwrap(),
                &capture,
                &request,
            )
            .await;
            let crates = sent_with(
                azure_storage::clients::new_pipeline_from_options(
                    options(),
                    account.storage_credentials().unwrap(),
                ),
                &capture,
                &request,
            )
            .await;
            assert!(ours
                .as_deref()
                .is_some_and(|h| h.starts_with("SharedKey someaccount:")));
            assert_eq!(ours, crates, "{method:?} {url}");
        }
    }

    #[tokio::test]
    async fn a_presigned_request_is_not_signed_again() {
        let capture = Arc::new(Capture::default());
        let pipeline = account()
            .request_pipeline(ClientOptions::new(TransportOptions::new(capture.clone())))
            .unwrap();
        let request = azure_storage::clients::finalize_request(
            Url::parse("https://someaccount.table.core.windows.net/$batch?sv=1&sig=abc").unwrap(),
            Method::Post,
            Headers::new(),
            None,
        )
        .unwrap();
        assert_eq!(sent_with(pipeline, &capture, &request).await, None);
    }

    /// A transport that answers 200 and keeps each request whole.
    #[derive(Debug, Default)]
    struct Requests(Mutex<Vec<Request>>);

    #[async_trait]
    impl HttpClient for Requests {
        async fn execute_request(&self, request: &Request) -> azure_core::Result<Response> {
            self.0.lock().unwrap().push(request.clone());
            Ok(Response::new(
                StatusCode::Ok,
                Headers::new(),
                Box::pin(futures::stream::empty()),
            ))
        }
    }

    #[tokio::test]
    async fn the_table_clients_own_requests_are_signed_as_the_crate_signs_them() {
        let sent = Arc::new(Requests::default());
        let client = account()
            .table_service_client_with_options(ClientOptions::new(TransportOptions::new(
                sent.clone(),
            )))
            .unwrap();
        // The empty answer is not an entity; only the request matters here.
        let _ = client
            .table_client("streamfold")
            .partition_key_client("a|b")
            .entity_client("c d")
            .get::<serde_json::Value>()
            .await;
        let request = {
            let mut sent = sent.0.lock().unwrap();
            assert_eq!(sent.len(), 1, "one attempt");
            sent.pop().unwrap()
        };
        let ours = request.headers().get_optional_string(&AUTHORIZATION);
        assert!(
            ours.as_deref()
                .is_some_and(|h| h.starts_with("SharedKey someaccount:")),
            "{ours:?}"
        );
        // The crate's policy, given the same request (same date), writes the same header.
        let capture = Arc::new(Capture::default());
        let crates = sent_with(
            azure_storage::clients::new_pipeline_from_options(
                ClientOptions::new(TransportOptions::new(capture.clone())),
                account().storage_credentials().unwrap(),
            ),
            &capture,
            &request,
        )
        .await;
        assert_eq!(ours, crates);
    }

    #[test]
    fn a_key_that_is_not_base64_makes_no_policy() {
        assert!(SharedKeyPolicy::new("someaccount", "not base64!").is_none());
        assert!(SharedKeyPolicy::new("someaccount", "a2V5").is_some());
    }
}
