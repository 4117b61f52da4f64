//! Forward proxies for the storage transport, found as reqwest (the azure crates' own
//! transport) finds them: `HTTPS_PROXY`, `HTTP_PROXY`, `ALL_PROXY` and `NO_PROXY`, in either
//! case, read once when the transport is built. An `https` endpoint is reached through an
//! HTTP CONNECT tunnel, so TLS runs end to end with the storage service and the proxy sees
//! only the host name; an `http` endpoint (the emulator) gets its requests in absolute form.
//! Credentials in the proxy's URL go as Basic `Proxy-Authorization`. Only `http://` proxies are
//! spoken to; any other scheme fails the connection before anything is sent. With none of the
//! variables set every connection is direct, and a request pays one `Option` check.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use http::Uri;
use hyper::rt::{Read, ReadBufCursor, Write};
use hyper_util::client::legacy::connect::proxy::Tunnel;
use hyper_util::client::legacy::connect::{Connected, Connection, HttpConnector};
use hyper_util::client::proxy::matcher::{Intercept, Matcher};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;
use tower_service::Service;

/// The variables that name a proxy or exempt hosts from one, as curl and reqwest read them.
pub const PROXY_VARIABLES: [&str; 8] = [
    "HTTPS_PROXY",
    "https_proxy",
    "HTTP_PROXY",
    "http_proxy",
    "ALL_PROXY",
    "all_proxy",
    "NO_PROXY",
    "no_proxy",
];

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Which proxy, if any, each storage endpoint is reached through.
#[derive(Clone, Default)]
pub(super) struct Proxies {
    matcher: Option<Arc<Matcher>>,
}

impl std::fmt::Debug for Proxies {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The matcher's own Debug would print credentials in a proxy URL.
        f.debug_struct("Proxies")
            .field("configured", &self.matcher.is_some())
            .finish()
    }
}

impl Proxies {
    /// The proxies the process environment names; none when no variable is set.
    pub(super) fn from_env() -> Self {
        if any_proxy_variable(|name| std::env::var_os(name).is_some()) {
            Self::from_matcher(Matcher::from_env())
        } else {
            Self::default()
        }
    }

    pub(super) fn from_matcher(matcher: Matcher) -> Self {
        Self {
            matcher: Some(Arc::new(matcher)),
        }
    }

    fn intercept(&self, destination: &Uri) -> Option<Intercept> {
        self.matcher.as_ref()?.intercept(destination)
    }

    /// The `Proxy-Authorization` a request to `destination` carries: only a plain-HTTP
    /// request forwarded by a proxy with credentials (a tunnel sends them once, on CONNECT).
    pub(super) fn forward_authorization(&self, destination: &Uri) -> Option<http::HeaderValue> {
        let matcher = self.matcher.as_ref()?;
        if destination.scheme() != Some(&http::uri::Scheme::HTTP) {
            return None;
        }
        matcher.intercept(destination)?.basic_auth().cloned()
    }
}

/// Whether any of [`PROXY_VARIABLES`] is set, by `is_set`.
fn any_proxy_variable(is_set: impl Fn(&str) -> bool) -> bool {
    PROXY_VARIABLES.into_iter().any(is_set)
}

/// Why a connection through a proxy could not be made.
#[derive(Debug, thiserror::Error)]
enum ProxyError {
    #[error("the proxy for storage must be an http:// URL (a {0} proxy is not supported)")]
    UnsupportedScheme(String),
}

/// The TCP connector of the storage transport, through the proxy [`Proxies`] names for each
/// destination.
#[derive(Clone)]
pub(super) struct ProxyConnector {
    direct: HttpConnector,
    proxies: Proxies,
}

impl ProxyConnector {
    pub(super) fn new(direct: HttpConnector, proxies: Proxies) -> Self {
        Self { direct, proxies }
    }
}

type Connecting = Pin<Box<dyn Future<Output = Result<ProxiedIo, BoxError>> + Send>>;

impl Service<Uri> for ProxyConnector {
    type Response = ProxiedIo;
    type Error = BoxError;
    type Future = Connecting;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.direct.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, destination: Uri) -> Self::Future {
        let Some(intercept) = self.proxies.intercept(&destination) else {
            let connecting = self.direct.call(destination);
            return Box::pin(async move { Ok(ProxiedIo::new(connecting.await?, false)) });
        };
        let proxy = intercept.uri().clone();
        if proxy.scheme() != Some(&http::uri::Scheme::HTTP) {
            let scheme = proxy.scheme_str().unwrap_or("scheme-less").to_owned();
            return Box::pin(async move { Err(ProxyError::UnsupportedScheme(scheme).into()) });
        }
        if destination.scheme() == Some(&http::uri::Scheme::HTTPS) {
            let mut tunnel = Tunnel::new(proxy, self.direct.clone());
            if let Some(authorization) = intercept.basic_auth() {
                tunnel = tunnel.with_auth(authorization.clone());
            }
            let connecting = tunnel.call(destination);
            Box::pin(async move { Ok(ProxiedIo::new(connecting.await?, false)) })
        } else {
            let connecting = self.direct.call(proxy);
            Box::pin(async move { Ok(ProxiedIo::new(connecting.await?, true)) })
        }
    }
}

/// A connection to storage, direct or through a proxy: `forwarded` when the proxy forwards
/// each request (so hyper writes them in absolute form), not for a tunnel.
pub(super) struct ProxiedIo {
    io: TokioIo<TcpStream>,
    forwarded: bool,
}

impl ProxiedIo {
    fn new(io: TokioIo<TcpStream>, forwarded: bool) -> Self {
        Self { io, forwarded }
    }
}

impl Connection for ProxiedIo {
    fn connected(&self) -> Connected {
        self.io.connected().proxy(self.forwarded)
    }
}

impl Read for ProxiedIo {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: ReadBufCursor<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_read(cx, buf)
    }
}

impl Write for ProxiedIo {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.get_mut().io).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_shutdown(cx)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.get_mut().io).poll_write_vectored(cx, bufs)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_variable_set_means_no_proxy() {
        assert!(!any_proxy_variable(|_| false));
        for name in PROXY_VARIABLES {
            assert!(any_proxy_variable(|n| n == name), "{name}");
        }
    }

    #[test]
    fn only_forwarded_plain_http_carries_the_credentials() {
        let proxies = Proxies::from_matcher(
            Matcher::builder()
                .all("http://user:secret@127.0.0.1:3128")
                .no("exempt.example")
                .build(),
        );
        let forwarded = Uri::from_static("http://127.0.0.1:10002/devstoreaccount1/Tables");
        let authorization = proxies.forward_authorization(&forwarded).expect("Basic");
        assert_eq!(authorization, "Basic dXNlcjpzZWNyZXQ=");
        // A tunnel sends them once, on CONNECT; an exempt host sees no proxy at all.
        for uri in [
            "https://account.table.core.windows.net/Tables",
            "http://exempt.example/Tables",
        ] {
            assert_eq!(
                proxies.forward_authorization(&Uri::from_static(uri)),
                None,
                "{uri}"
            );
        }
        assert_eq!(Proxies::default().forward_authorization(&forwarded), None);
    }

    #[test]
    fn debug_output_never_shows_the_proxy_credentials() {
        let proxies = Proxies::from_matcher(
            Matcher::builder()
                .all("http://user:secret@proxy:3128")
                .build(),
        );
        let shown = format!("{proxies:?}");
        assert!(!shown.contains("secret"), "{shown}");
    }
}
