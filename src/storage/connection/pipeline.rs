//! A helper for pipeline policies that only observe a request: pass it on to the rest of the
//! pipeline, with an error (never a panic) when a policy was misplaced at its end.

use std::sync::Arc;

use azure_core::error::ErrorKind;
use azure_core::{Context, Policy, PolicyResult, Request};

/// Passes a request on to the rest of the pipeline, for policies that only observe it.
/// `policy` names the caller in the error a misbuilt pipeline (no policy after it) gives.
pub(crate) async fn send_next(
    ctx: &Context,
    request: &mut Request,
    next: &[Arc<dyn Policy>],
    policy: &str,
) -> PolicyResult {
    match next.first() {
        Some(first) => first.send(ctx, request, &next[1..]).await,
        None => Err(azure_core::Error::message(
            ErrorKind::Other,
            format!("the {policy} policy must not be the last policy"),
        )),
    }
}
