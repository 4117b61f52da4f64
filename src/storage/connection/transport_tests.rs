//! The transport against small servers on loopback: what it sends, what it hands back, and
//! how each kind of failure is classified (the delivery tracker's "never sent" and the error
//! mapping's "timed out" depend on it).

use std::time::Duration;

use azure_core::headers::HeaderName;
use azure_core::{HttpClient, Method, Request, Url};
use bytes::Bytes;
use futures::StreamExt;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

use super::*;
use crate::storage::connection::transport_failure::{
    describe_error, is_connect_error, is_timeout_error,
};

const CA: &[u8] = include_bytes!("../../../tests/fixtures/tls/ca.pem");
const LOCALHOST_CERT: &[u8] = include_bytes!("../../../tests/fixtures/tls/localhost.pem");
const LOCALHOST_KEY: &[u8] = include_bytes!("../../../tests/fixtures/tls/localhost.key");

/// Short limits, so a test of a timeout takes a fraction of a second.
fn short() -> Timeouts {
    Timeouts {
        connect: Duration::from_millis(500),
        request: Duration::from_millis(400),
        pool_idle: Duration::from_secs(4),
    }
}

fn transport() -> HyperTransport {
    HyperTransport::new(short(), webpki_roots(), Proxies::default()).expect("transport")
}

fn test_roots() -> rustls::RootCertStore {
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(CertificateDer::from_pem_slice(CA).expect("CA certificate"))
        .expect("CA accepted");
    roots
}

fn request(method: Method, url: &str) -> Request {
    Request::new(Url::parse(url).expect("url"), method)
}

/// Reads one request head and its `Content-Length` body; returns them as text.
async fn read_request(stream: &mut (impl AsyncRead + Unpin)) -> String {
    let mut received = Vec::new();
    let mut buffer = [0u8; 4096];
    loop {
        let n = stream.read(&mut buffer).await.expect("read");
        assert!(n > 0, "the client closed before a whole request");
        received.extend_from_slice(&buffer[..n]);
        let text = String::from_utf8_lossy(&received).into_owned();
        if let Some(end) = text.find("\r\n\r\n") {
            let length = text[..end]
                .lines()
                .find_map(|line| {
                    let (name, value) = line.split_once(':')?;
                    name.eq_ignore_ascii_case("content-length")
                        .then(|| value.trim().parse::<usize>().ok())?
                })
                .unwrap_or(0);
            if received.len() >= end + 4 + length {
                return text;
            }
        }
    }
}

/// A server that answers one connection's request with `answer` (raw bytes), then
/// stalls if `stall`; it hands back the request it read.
async fn one_shot(answer: &'static [u8], stall: bool) -> (String, tokio::task::JoinHandle<String>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let address = listener.local_addr().expect("address");
    let server = tokio::spawn(async move {
        let (mut stream, _) = listener.accept().await.expect("accept");
        let received = read_request(&mut stream).await;
        stream.write_all(answer).await.expect("write");
        if stall {
            tokio::time::sleep(Duration::from_secs(5)).await;
        }
        received
    });
    (format!("http://{address}"), server)
}

#[tokio::test]
async fn a_request_goes_out_as_built_and_its_answer_comes_back_whole() {
    let (base, server) = one_shot(
        b"HTTP/1.1 201 Created\r\nETag: W/\"datetime'1'\"\r\nX-Custom-Thing: Yes\r\nContent-Length: 5\r\n\r\nhello",
        false,
    )
    .await;
    let mut outgoing = request(
        Method::Post,
        &format!("{base}/table(PartitionKey='a%20b')?x=1"),
    );
    outgoing.insert_header("x-ms-version", "2019-02-02");
    outgoing.insert_header("content-type", "application/json");
    outgoing.set_body(Bytes::from_static(b"{\"k\":1}"));

    let response = transport()
        .execute_request(&outgoing)
        .await
        .expect("answer");
    let (status, headers, body) = response.deconstruct();
    assert_eq!(u16::from(status), 201);
    assert_eq!(
        headers.get_str(&HeaderName::from_static("etag")).ok(),
        Some("W/\"datetime'1'\"")
    );
    assert_eq!(
        headers
            .get_str(&HeaderName::from_static("x-custom-thing"))
            .ok(),
        Some("Yes")
    );
    assert_eq!(body.collect().await.expect("body").as_ref(), b"hello");

    let received = server.await.expect("server");
    assert!(
        received.starts_with("POST /table(PartitionKey='a%20b')?x=1 HTTP/1.1\r\n"),
        "{received}"
    );
    let lower = received.to_ascii_lowercase();
    assert!(
        lower.contains("\r\nx-ms-version: 2019-02-02\r\n"),
        "{received}"
    );
    assert!(
        lower.contains("\r\ncontent-type: application/json\r\n"),
        "{received}"
    );
    assert!(lower.contains("\r\ncontent-length: 7\r\n"), "{received}");
    // No `Accept` was set: reqwest's `*/*` goes out, as before.
    assert!(lower.contains("\r\naccept: */*\r\n"), "{received}");
    assert!(
        lower.contains(&format!("\r\nhost: {}\r\n", &base["http://".len()..])),
        "{received}"
    );
    assert!(received.ends_with("\r\n\r\n{\"k\":1}"), "{received}");
}

#[tokio::test]
async fn a_refused_connection_is_never_sent() {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let address = listener.local_addr().expect("address");
    drop(listener);
    let error = transport()
        .execute_request(&request(Method::Get, &format!("http://{address}/x")))
        .await
        .expect_err("nothing listens");
    assert!(is_connect_error(&error), "{error:?}");
    assert!(!is_timeout_error(&error), "{error:?}");
    assert!(
        describe_error(&error).starts_with("could not connect: "),
        "{}",
        describe_error(&error)
    );
}

#[tokio::test]
async fn an_unanswered_request_times_out_and_may_have_been_applied() {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let address = listener.local_addr().expect("address");
    let _server = tokio::spawn(async move {
        let (mut stream, _) = listener.accept().await.expect("accept");
        let _ = read_request(&mut stream).await;
        tokio::time::sleep(Duration::from_secs(5)).await;
    });
    let error = transport()
        .execute_request(&request(Method::Get, &format!("http://{address}/x")))
        .await
        .expect_err("no answer");
    assert!(is_timeout_error(&error), "{error:?}");
    assert!(!is_connect_error(&error), "{error:?}");
    assert_eq!(describe_error(&error), "timed out");
}

#[tokio::test]
async fn a_body_that_stops_coming_ends_in_a_timeout() {
    let (base, _server) = one_shot(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc", true).await;
    let response = transport()
        .execute_request(&request(Method::Get, &format!("{base}/x")))
        .await
        .expect("the head arrives");
    let mut body = response.into_body();
    let mut received = Vec::new();
    let error = loop {
        match body.next().await {
            Some(Ok(bytes)) => received.extend_from_slice(&bytes),
            Some(Err(error)) => break error,
            None => panic!("the body ended without its last 7 bytes"),
        }
    };
    assert_eq!(received, b"abc");
    assert!(is_timeout_error(&error), "{error:?}");
    assert!(!is_connect_error(&error), "{error:?}");
}

#[tokio::test]
async fn a_connection_closed_before_the_answer_is_a_broken_connection() {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let address = listener.local_addr().expect("address");
    let _server = tokio::spawn(async move {
        let (mut stream, _) = listener.accept().await.expect("accept");
        let _ = read_request(&mut stream).await;
        drop(stream);
    });
    let error = transport()
        .execute_request(&request(Method::Get, &format!("http://{address}/x")))
        .await
        .expect_err("closed");
    assert!(!is_connect_error(&error), "{error:?}");
    assert!(!is_timeout_error(&error), "{error:?}");
    assert!(
        describe_error(&error).starts_with("the connection failed"),
        "{}",
        describe_error(&error)
    );
}

/// A TLS server for `localhost` (certificate signed by the test CA) that answers one request.
async fn tls_server() -> (u16, tokio::task::JoinHandle<Option<String>>) {
    let certificate = CertificateDer::from_pem_slice(LOCALHOST_CERT).expect("certificate");
    let key = PrivateKeyDer::from_pem_slice(LOCALHOST_KEY).expect("key");
    let config = rustls::ServerConfig::builder_with_provider(std::sync::Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .expect("versions")
    .with_no_client_auth()
    .with_single_cert(vec![certificate], key)
    .expect("server config");
    let acceptor = tokio_rustls::TlsAcceptor::from(std::sync::Arc::new(config));
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let port = listener.local_addr().expect("address").port();
    let server = tokio::spawn(async move {
        let (stream, _) = listener.accept().await.expect("accept");
        let mut tls = acceptor.accept(stream).await.ok()?;
        let received = read_request(&mut tls).await;
        tls.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 6\r\n\r\nsecret")
            .await
            .expect("write");
        tls.shutdown().await.ok();
        Some(received)
    });
    (port, server)
}

#[tokio::test]
async fn https_is_tls_to_a_certificate_that_chains_to_the_roots() {
    let (port, server) = tls_server().await;
    let transport =
        HyperTransport::new(short(), test_roots(), Proxies::default()).expect("transport");
    let response = transport
        .execute_request(&request(
            Method::Get,
            &format!("https://localhost:{port}/x"),
        ))
        .await
        .expect("answer over TLS");
    assert_eq!(u16::from(response.status()), 200);
    assert_eq!(
        response.into_body().collect().await.expect("body").as_ref(),
        b"secret"
    );
    let received = server.await.expect("server").expect("handshake");
    assert!(received.starts_with("GET /x HTTP/1.1\r\n"), "{received}");
}

#[tokio::test]
async fn https_to_a_certificate_outside_the_roots_is_refused_before_sending() {
    let (port, server) = tls_server().await;
    // The production roots do not include the test CA.
    let error = transport()
        .execute_request(&request(
            Method::Get,
            &format!("https://localhost:{port}/x"),
        ))
        .await
        .expect_err("untrusted certificate");
    assert!(is_connect_error(&error), "{error:?}");
    assert!(
        describe_error(&error).contains("certificate"),
        "{}",
        describe_error(&error)
    );
    assert_eq!(server.await.expect("server"), None, "no request was read");
}

#[test]
fn request_headers_get_their_own_names() {
    for name in [
        "authorization",
        "content-type",
        "content-length",
        "user-agent",
        "accept",
        "if-match",
        "x-ms-date",
        "x-ms-version",
        "x-ms-client-request-id",
        "prefer",
        "dataserviceversion",
        "maxdataserviceversion",
        "x-ms-blob-type",
    ] {
        assert_eq!(request_header_name(name).expect(name).as_str(), name);
    }
    assert!(request_header_name("not a name").is_err());
}

#[test]
fn storage_answer_headers_get_their_own_names() {
    for name in [
        "content-type",
        "date",
        "etag",
        "x-ms-request-id",
        "preference-applied",
        "x-something-else",
    ] {
        let http_name = http::HeaderName::from_static(name);
        assert_eq!(header_name(&http_name).as_str(), name);
    }
}

/// A forward proxy for one connection: it answers CONNECT with a tunnel to the host named,
/// or `refuse` (raw bytes) if given; a request in absolute form it passes on to its origin.
/// It hands back the head it read.
async fn one_connection_proxy(
    refuse: Option<&'static [u8]>,
) -> (u16, tokio::sync::oneshot::Receiver<String>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let port = listener.local_addr().expect("address").port();
    let (head_tx, head_rx) = tokio::sync::oneshot::channel();
    tokio::spawn(async move {
        let (mut client, _) = listener.accept().await.expect("accept");
        let head = read_request(&mut client).await;
        let mut words = head.split(' ');
        let (method, target) = (words.next().unwrap_or(""), words.next().unwrap_or(""));
        let upstream_address = if method == "CONNECT" {
            target.to_owned()
        } else {
            let rest = target.strip_prefix("http://").expect("absolute form");
            rest.split('/').next().unwrap_or(rest).to_owned()
        };
        let _ = head_tx.send(head.clone());
        if let Some(answer) = refuse {
            client.write_all(answer).await.expect("write");
            return;
        }
        let mut upstream = tokio::net::TcpStream::connect(upstream_address)
            .await
            .expect("upstream");
        if method == "CONNECT" {
            client
                .write_all(b"HTTP/1.1 200 Connection established\r\n\r\n")
                .await
                .expect("write");
        } else {
            upstream.write_all(head.as_bytes()).await.expect("forward");
        }
        let _ = tokio::io::copy_bidirectional(&mut client, &mut upstream).await;
    });
    (port, head_rx)
}

fn through(proxy: &str, no_proxy: &str) -> Proxies {
    Proxies::from_matcher(
        hyper_util::client::proxy::matcher::Matcher::builder()
            .all(proxy)
            .no(no_proxy)
            .build(),
    )
}

/// `Basic` of `user:secret`.
const PROXY_BASIC: &str = "Basic dXNlcjpzZWNyZXQ=";

/// The value of header `name` in a request head, if it has one.
fn header_in<'a>(head: &'a str, name: &str) -> Option<&'a str> {
    head.lines().find_map(|line| {
        let (key, value) = line.split_once(':')?;
        key.eq_ignore_ascii_case(name).then(|| value.trim())
    })
}

#[tokio::test]
async fn https_through_a_proxy_is_a_tunnel_with_tls_to_the_endpoint() {
    let (port, server) = tls_server().await;
    let (proxy_port, mut head) = one_connection_proxy(None).await;
    let proxies = through(&format!("http://user:secret@127.0.0.1:{proxy_port}"), "");
    let transport = HyperTransport::new(short(), test_roots(), proxies).expect("transport");
    let response = transport
        .execute_request(&request(
            Method::Get,
            &format!("https://localhost:{port}/x"),
        ))
        .await
        .expect("answer through the tunnel");
    assert_eq!(u16::from(response.status()), 200);
    assert_eq!(
        response.into_body().collect().await.expect("body").as_ref(),
        b"secret"
    );
    let head = head.try_recv().expect("the proxy was asked");
    assert!(
        head.starts_with(&format!("CONNECT localhost:{port} HTTP/1.1\r\n")),
        "{head}"
    );
    assert_eq!(
        header_in(&head, "proxy-authorization"),
        Some(PROXY_BASIC),
        "{head}"
    );
    // Inside the tunnel the request is the endpoint's own: origin form, no proxy credentials.
    let received = server.await.expect("server").expect("handshake");
    assert!(received.starts_with("GET /x HTTP/1.1\r\n"), "{received}");
    assert!(
        !received
            .to_ascii_lowercase()
            .contains("proxy-authorization"),
        "{received}"
    );
}

#[tokio::test]
async fn http_through_a_proxy_goes_in_absolute_form_with_the_credentials() {
    let (base, server) = one_shot(b"HTTP/1.1 204 No Content\r\n\r\n", false).await;
    let (proxy_port, mut head) = one_connection_proxy(None).await;
    let proxies = through(&format!("http://user:secret@127.0.0.1:{proxy_port}"), "");
    let transport = HyperTransport::new(short(), webpki_roots(), proxies).expect("transport");
    let url = format!("{base}/devstoreaccount1/Tables?x=1");
    let response = transport
        .execute_request(&request(Method::Get, &url))
        .await
        .expect("answer through the proxy");
    assert_eq!(u16::from(response.status()), 204);
    let head = head.try_recv().expect("the proxy was asked");
    assert!(
        head.starts_with(&format!("GET {url} HTTP/1.1\r\n")),
        "{head}"
    );
    assert_eq!(
        header_in(&head, "proxy-authorization"),
        Some(PROXY_BASIC),
        "{head}"
    );
    assert_eq!(server.await.expect("server"), head);
}

#[tokio::test]
async fn a_host_exempt_from_the_proxy_is_reached_directly() {
    // The proxy's port has nothing listening: going through it would fail to connect.
    let closed = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let closed_port = closed.local_addr().expect("address").port();
    drop(closed);
    let (base, server) = one_shot(b"HTTP/1.1 204 No Content\r\n\r\n", false).await;
    let proxies = through(&format!("http://127.0.0.1:{closed_port}"), "127.0.0.1");
    let transport = HyperTransport::new(short(), webpki_roots(), proxies).expect("transport");
    let response = transport
        .execute_request(&request(Method::Get, &format!("{base}/t")))
        .await
        .expect("a direct answer");
    assert_eq!(u16::from(response.status()), 204);
    assert!(server
        .await
        .expect("server")
        .starts_with("GET /t HTTP/1.1\r\n"));
}

#[tokio::test]
async fn a_tunnel_the_proxy_refuses_was_never_sent() {
    let (port, server) = tls_server().await;
    let (proxy_port, mut head) = one_connection_proxy(Some(
        b"HTTP/1.1 407 Proxy Authentication Required\r\nContent-Length: 0\r\n\r\n",
    ))
    .await;
    let proxies = through(&format!("http://127.0.0.1:{proxy_port}"), "");
    let transport = HyperTransport::new(short(), test_roots(), proxies).expect("transport");
    let error = transport
        .execute_request(&request(
            Method::Put,
            &format!("https://localhost:{port}/x"),
        ))
        .await
        .expect_err("refused by the proxy");
    assert!(is_connect_error(&error), "{error:?}");
    assert!(head.try_recv().expect("asked").starts_with("CONNECT "));
    server.abort();
}

#[tokio::test]
async fn a_proxy_other_than_http_fails_before_anything_is_sent() {
    let (base, server) = one_shot(b"HTTP/1.1 204 No Content\r\n\r\n", false).await;
    let proxies = through("socks5://127.0.0.1:1080", "");
    let transport = HyperTransport::new(short(), webpki_roots(), proxies).expect("transport");
    let error = transport
        .execute_request(&request(Method::Get, &format!("{base}/t")))
        .await
        .expect_err("unsupported proxy");
    assert!(is_connect_error(&error), "{error:?}");
    assert!(
        describe_error(&error).contains("http:// URL"),
        "{}",
        describe_error(&error)
    );
    server.abort();
}
