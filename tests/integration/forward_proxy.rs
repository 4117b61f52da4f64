//! The handler reaches storage through the forward proxy its environment names (`HTTP_PROXY`,
//! as curl and reqwest read it), as an app behind an egress proxy runs: a command's storage
//! requests all go through the proxy, and a host that `NO_PROXY` names is reached directly.
//! Azurite is plain HTTP, so the proxy here forwards requests; the CONNECT tunnel an `https`
//! endpoint gets is covered by the transport's own tests.

use crate::support::{start_host, Client};

use serde_json::json;
use streamfold_testbed::hostsim::HostSim;
use streamfold_testbed::proxy::CountingProxy;
use streamfold_testbed::Azurite;

/// Appends one event to a new stream through the app and reads the stream back.
async fn append_and_read(c: &Client, path: &str) {
    c.post(
        path,
        &json!({"expectedVersion": "noStream", "events": [{"eventType": "Created", "data": {}}]}),
    )
    .await
    .ok(201);
    assert_eq!(c.get(path).await.ok(200)["version"], 1);
}

/// Azurite, a proxy in front of its Table endpoint, and the app with `HTTP_PROXY` naming that
/// proxy and `NO_PROXY` set to `no_proxy` (fields drop the host first, Azurite last).
struct ProxiedApp {
    _host: HostSim,
    _dir: tempfile::TempDir,
    client: Client,
    proxy: CountingProxy,
    _azurite: Azurite,
}

impl ProxiedApp {
    async fn start(no_proxy: &str) -> Self {
        let azurite = Azurite::start().await.unwrap();
        // Only Table storage is used here, so a proxy that passes everything to it will do.
        let proxy = CountingProxy::start(&azurite.table_endpoint())
            .await
            .unwrap();
        let (host, dir) = start_host(vec![
            ("AzureWebJobsStorage".into(), azurite.connection_string()),
            ("HTTP_PROXY".into(), proxy.url()),
            ("NO_PROXY".into(), no_proxy.into()),
        ])
        .await;
        Self {
            client: Client::new(host.base_url()),
            _host: host,
            _dir: dir,
            proxy,
            _azurite: azurite,
        }
    }
}

#[tokio::test]
async fn storage_requests_go_through_the_proxy_the_environment_names() {
    let app = ProxiedApp::start("example.invalid").await;
    append_and_read(&app.client, "/api/streams/Shop/Cart/proxied").await;
    let log = app.proxy.log();
    assert!(
        log.iter()
            .any(|line| line.starts_with("POST /devstoreaccount1/$batch")),
        "the append's transaction went through the proxy: {log:?}"
    );
    assert!(
        log.iter()
            .any(|line| line.contains("PartitionKey eq 'Shop|Cart|proxied'")
                || line.contains("Shop%7CCart%7Cproxied")),
        "the read went through the proxy: {log:?}"
    );
}

#[tokio::test]
async fn a_host_no_proxy_names_is_reached_directly() {
    let app = ProxiedApp::start("127.0.0.1,localhost").await;
    append_and_read(&app.client, "/api/streams/Shop/Cart/direct").await;
    assert_eq!(app.proxy.requests(), 0, "{:?}", app.proxy.log());
}
