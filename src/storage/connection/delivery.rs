//! Whether any attempt of a write may have reached storage: a lost response is reported as
//! "maybe applied", a refused connection as "not applied".

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use async_trait::async_trait;
use azure_core::{Context, Policy, PolicyResult, Request, StatusCode};

use super::pipeline::send_next;
use super::transport_failure::is_connect_error;

/// Tells whether any attempt of one request may have reached storage. Put
/// [`DeliveryTracker::context`] on a write; after a failure, [`Self::may_have_reached_storage`]
/// says whether the write may have been applied (a lost response) or certainly was not (every
/// attempt was refused before it was sent, or was answered with 503 Server Busy or a 4xx).
#[derive(Debug, Clone, Default)]
pub struct DeliveryTracker(Arc<AtomicBool>);

impl DeliveryTracker {
    pub fn new() -> Self {
        Self::default()
    }

    /// A request context that reports to this tracker.
    pub fn context(&self) -> Context {
        let mut context = Context::new();
        context.insert(self.clone());
        context
    }

    /// Whether some attempt may have been applied by storage without a success reaching us.
    pub fn may_have_reached_storage(&self) -> bool {
        self.0.load(Ordering::SeqCst)
    }

    fn record(&self, maybe_applied: bool) {
        if maybe_applied {
            self.0.store(true, Ordering::SeqCst);
        }
    }
}

/// The per-retry policy behind [`DeliveryTracker`]: it sits right before the transport and
/// classifies each attempt's result.
#[derive(Debug)]
pub(super) struct DeliveryTrackerPolicy;

#[async_trait]
impl Policy for DeliveryTrackerPolicy {
    async fn send(
        &self,
        ctx: &Context,
        request: &mut Request,
        next: &[Arc<dyn Policy>],
    ) -> PolicyResult {
        let result = send_next(ctx, request, next, "delivery tracker").await;
        if let Some(tracker) = ctx.get::<DeliveryTracker>() {
            tracker.record(match &result {
                Ok(response) => {
                    let status = response.status();
                    u16::from(status) >= 500 && status != StatusCode::ServiceUnavailable
                }
                Err(error) => !is_connect_error(error),
            });
        }
        result
    }
}
