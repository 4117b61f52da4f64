//! The fake identity endpoint and the bearer-only storage proxy, against real Azurite: a token
//! of the identity for storage gets table and blob requests through (re-signed for Azurite);
//! no token, another resource's token, a wrong identity header or client id do not.

use serde_json::Value;
use streamfold_testbed::bearer::BearerStorageProxy;
use streamfold_testbed::identity::FakeIdentity;
use streamfold_testbed::Azurite;

const STORAGE: &str = "https://storage.azure.com/";
const VERSION: &str = "2021-12-02";

fn now() -> String {
    time::OffsetDateTime::now_utc()
        .format(&time::format_description::well_known::Rfc2822)
        .unwrap()
        .replace("+0000", "GMT")
}

async fn token(identity: &FakeIdentity, resource: &str) -> String {
    let url = format!(
        "{}?api-version=2019-08-01&resource={}&client_id=cid",
        identity.endpoint(),
        resource
    );
    let reply: Value = reqwest::Client::new()
        .get(url)
        .header("X-IDENTITY-HEADER", identity.header())
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    reply["access_token"].as_str().unwrap().to_owned()
}

#[tokio::test]
async fn tokens_of_the_identity_reach_azurite_and_nothing_else_does() {
    let azurite = Azurite::start().await.unwrap();
    let identity = FakeIdentity::start(Some("cid")).await.unwrap();
    let (tables, blobs) = BearerStorageProxy::start_both(&azurite, identity.check(STORAGE))
        .await
        .unwrap();
    let http = reqwest::Client::new();
    let good = token(&identity, STORAGE).await;
    let other = token(&identity, "https://eventgrid.azure.net/").await;

    // Table: create a table, insert an entity, read it back.
    let create = |bearer: Option<&str>| {
        let mut request = http
            .post(format!("{}/Tables", tables.endpoint()))
            .header("x-ms-version", VERSION)
            .header("x-ms-date", now())
            .header("content-type", "application/json")
            .header("accept", "application/json;odata=nometadata")
            .body(r#"{"TableName":"bearertest"}"#);
        if let Some(bearer) = bearer {
            request = request.header("authorization", format!("Bearer {bearer}"));
        }
        request.send()
    };
    assert_eq!(create(None).await.unwrap().status(), 403);
    assert_eq!(create(Some(&other)).await.unwrap().status(), 403);
    assert_eq!(create(Some("made-up")).await.unwrap().status(), 403);
    assert_eq!(create(Some(&good)).await.unwrap().status(), 201);
    let insert = http
        .post(format!("{}/bearertest", tables.endpoint()))
        .header("authorization", format!("Bearer {good}"))
        .header("x-ms-version", VERSION)
        .header("x-ms-date", now())
        .header("content-type", "application/json")
        .header("accept", "application/json;odata=nometadata")
        .body(r#"{"PartitionKey":"p","RowKey":"r","n":1}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(insert.status(), 201, "{}", insert.text().await.unwrap());
    let read = http
        .get(format!(
            "{}/bearertest(PartitionKey='p',RowKey='r')",
            tables.endpoint()
        ))
        .header("authorization", format!("Bearer {good}"))
        .header("x-ms-version", VERSION)
        .header("x-ms-date", now())
        .header("accept", "application/json;odata=nometadata")
        .send()
        .await
        .unwrap();
    assert_eq!(read.status(), 200);
    assert_eq!(read.json::<Value>().await.unwrap()["n"], 1);

    // Blob: a container, an append blob, a block appended, read back.
    let blob_request = |method: reqwest::Method, path: &str| {
        http.request(method, format!("{}/{path}", blobs.endpoint()))
            .header("authorization", format!("Bearer {good}"))
            .header("x-ms-version", VERSION)
            .header("x-ms-date", now())
    };
    let container = blob_request(reqwest::Method::PUT, "bearer?restype=container")
        .send()
        .await
        .unwrap();
    assert_eq!(
        container.status(),
        201,
        "{}",
        container.text().await.unwrap()
    );
    let create_blob = blob_request(reqwest::Method::PUT, "bearer/a%20b.log")
        .header("x-ms-blob-type", "AppendBlob")
        .header("content-length", "0")
        .send()
        .await
        .unwrap();
    assert_eq!(
        create_blob.status(),
        201,
        "{}",
        create_blob.text().await.unwrap()
    );
    let append = blob_request(reqwest::Method::PUT, "bearer/a%20b.log?comp=appendblock")
        .header("x-ms-blob-condition-appendpos", "0")
        .body("hello")
        .send()
        .await
        .unwrap();
    assert_eq!(append.status(), 201, "{}", append.text().await.unwrap());
    let get = blob_request(reqwest::Method::GET, "bearer/a%20b.log")
        .header("x-ms-range", "bytes=1-")
        .send()
        .await
        .unwrap();
    assert_eq!(get.status(), 206);
    assert_eq!(get.text().await.unwrap(), "ello");
    let list = blob_request(
        reqwest::Method::GET,
        "bearer?restype=container&comp=list&prefix=a",
    )
    .send()
    .await
    .unwrap();
    assert_eq!(list.status(), 200);

    // A request signed with the account key (or a SAS) is refused: only tokens pass.
    let keyed = http
        .get(format!("{}/Tables", tables.endpoint()))
        .header("authorization", "SharedKey devstoreaccount1:abc")
        .send()
        .await
        .unwrap();
    assert_eq!(keyed.status(), 403);
    assert_eq!(tables.refused(), 4);
    assert!(tables.accepted() >= 3 && blobs.accepted() >= 5);
}

#[tokio::test]
async fn the_identity_endpoint_checks_its_header_and_client_id_and_can_fail() {
    let identity = FakeIdentity::start(Some("cid")).await.unwrap();
    let http = reqwest::Client::new();
    let ask = |header: &str, query: &str| {
        http.get(format!("{}?{query}", identity.endpoint()))
            .header("X-IDENTITY-HEADER", header.to_owned())
            .send()
    };
    let good = "api-version=2019-08-01&resource=https://storage.azure.com/&client_id=cid";
    assert_eq!(ask("wrong", good).await.unwrap().status(), 400);
    let wrong_client = "api-version=2019-08-01&resource=https://storage.azure.com/&client_id=x";
    assert_eq!(
        ask(identity.header(), wrong_client).await.unwrap().status(),
        400
    );
    let no_version = "resource=https://storage.azure.com/&client_id=cid";
    assert_eq!(
        ask(identity.header(), no_version).await.unwrap().status(),
        400
    );
    assert_eq!(identity.refused(), 3);
    let reply = ask(identity.header(), good).await.unwrap();
    assert_eq!(reply.status(), 200);
    let body: Value = reply.json().await.unwrap();
    assert!(body["expires_on"].as_str().unwrap().parse::<u64>().is_ok());
    assert_eq!(identity.issued_for(STORAGE), 1);
    identity.fail_next(1, 500);
    assert_eq!(ask(identity.header(), good).await.unwrap().status(), 500);
    identity.set_down(true);
    assert_eq!(ask(identity.header(), good).await.unwrap().status(), 503);
}
