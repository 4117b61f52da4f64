//! How a request to storage failed in the transport (it could not connect, it timed out, or
//! the connection broke), carried as a [`TransportError`] in an azure_core error's `source()`
//! chain, and the one walk down that chain that reads it back, with the innermost cause
//! described without any URL (which may carry a SAS).

use azure_core::error::ErrorKind;

/// How the transport failed (a connect timeout is both).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct TransportFailure {
    timeout: bool,
    connect: bool,
}

impl TransportFailure {
    /// No connection could be made: the request was never sent. `timeout` when the connect
    /// timeout ran out.
    pub(crate) fn connect(timeout: bool) -> Self {
        Self {
            timeout,
            connect: true,
        }
    }

    /// The whole request (answer included) took longer than the transport allows.
    pub(crate) fn timeout() -> Self {
        Self {
            timeout: true,
            connect: false,
        }
    }

    /// The connection broke after the request may have been sent.
    pub(crate) fn broken() -> Self {
        Self {
            timeout: false,
            connect: false,
        }
    }

    fn describe(self) -> &'static str {
        if self.timeout {
            "timed out"
        } else if self.connect {
            "could not connect"
        } else {
            "the connection failed"
        }
    }
}

/// A failure of the storage transport, with the HTTP client's error (if any) as its source.
#[derive(Debug, thiserror::Error)]
#[error("{}", failure.describe())]
pub(crate) struct TransportError {
    failure: TransportFailure,
    #[source]
    source: Option<Box<dyn std::error::Error + Send + Sync>>,
}

impl TransportError {
    pub(crate) fn new(
        failure: TransportFailure,
        source: Option<Box<dyn std::error::Error + Send + Sync>>,
    ) -> Self {
        Self { failure, source }
    }
}

/// The one walk down an azure_core error's `source()` chain: the transport failure it carries
/// (if any), and the innermost cause below that failure (if any).
fn transport_failure(
    error: &azure_core::Error,
) -> Option<(TransportFailure, Option<&(dyn std::error::Error + 'static)>)> {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(error);
    let mut failure = None;
    let mut innermost = None;
    while let Some(current) = source {
        match current.downcast_ref::<TransportError>() {
            Some(transport) if failure.is_none() => failure = Some(transport.failure),
            Some(_) => {}
            None if failure.is_some() => innermost = Some(current),
            None => {}
        }
        source = current.source();
    }
    failure.map(|failure| (failure, innermost))
}

/// Whether an azure_core error is a failure to connect (the request was never sent).
pub(crate) fn is_connect_error(error: &azure_core::Error) -> bool {
    transport_failure(error).is_some_and(|(failure, _)| failure.connect)
}

/// Whether an azure_core error is a timeout of the transport (connect or whole request).
pub(crate) fn is_timeout_error(error: &azure_core::Error) -> bool {
    transport_failure(error).is_some_and(|(failure, _)| failure.timeout)
}

/// A description of an azure_core error that is safe to log: the kind of transport failure
/// and its innermost cause, never a URL (which may carry a SAS).
pub(crate) fn describe_error(error: &azure_core::Error) -> String {
    match transport_failure(error) {
        Some((failure, Some(cause))) => format!("{}: {cause}", failure.describe()),
        Some((failure, None)) => failure.describe().to_owned(),
        None => match error.kind() {
            ErrorKind::HttpResponse { status, error_code } => format!(
                "HTTP {} ({})",
                u16::from(*status),
                error_code.as_deref().unwrap_or("no error code")
            ),
            kind => format!("{kind} error: {error}"),
        },
    }
}
