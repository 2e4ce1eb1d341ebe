//! Panic isolation for handler futures.
//!
//! A tiny equivalent of `futures_util::FutureExt::catch_unwind`, which needs futures-util's
//! `std` feature; the host builds futures-util without default features. Running the handler
//! inline (rather than as a spawned task checked with `JoinError::is_panic`) keeps it on the
//! emitting task, so dropping an emit also drops its running handler.

use std::any::Any;
use std::future::Future;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::pin::Pin;
use std::task::{Context, Poll};

/// The payload of a caught panic.
pub(crate) type PanicPayload = Box<dyn Any + Send + 'static>;

/// Polls `F`, turning a panic during any poll into `Err(payload)`.
pub(crate) struct CatchUnwind<F>(pub(crate) F);

impl<F: Future + Unpin> Future for CatchUnwind<F> {
    type Output = Result<F::Output, PanicPayload>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let inner = &mut self.0;
        // AssertUnwindSafe: after a panic the future is never polled again (the caller gets
        // `Ready(Err)` and drops it), so no broken invariant can be observed.
        match catch_unwind(AssertUnwindSafe(|| Pin::new(inner).poll(cx))) {
            Ok(Poll::Ready(value)) => Poll::Ready(Ok(value)),
            Ok(Poll::Pending) => Poll::Pending,
            Err(payload) => Poll::Ready(Err(payload)),
        }
    }
}

/// The message of a panic payload (`panic!` with a literal or a formatted string).
pub(crate) fn panic_message(payload: &PanicPayload) -> String {
    if let Some(s) = payload.downcast_ref::<&'static str>() {
        (*s).to_owned()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "panic with a non-string payload".to_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn catches_a_panic_after_an_await() {
        let fut = Box::pin(async {
            tokio::task::yield_now().await;
            panic!("boom {}", 42);
        });
        let err = CatchUnwind::<Pin<Box<dyn Future<Output = ()> + Send>>>(fut).await.unwrap_err();
        assert_eq!(panic_message(&err), "boom 42");
    }

    #[tokio::test]
    async fn passes_values_through() {
        assert_eq!(CatchUnwind(Box::pin(async { 7 })).await.unwrap(), 7);
    }
}
