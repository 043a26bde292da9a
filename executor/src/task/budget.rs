//! The cooperative budget: a task that keeps getting `Ready` from pagegen primitives yields after
//! [`INITIAL`] of them, so one request cannot monopolise a worker through ready futures.
//!
//! The budget is a thread-local counter that the worker resets before each poll; outside a worker's
//! poll (in `block_on`, on foreign threads) it is unlimited. Primitives call [`poll_proceed`]: with
//! budget left it takes a unit and returns a guard that gives the unit back unless the primitive made
//! progress (a `Pending` primitive costs nothing); with none left it wakes the task and returns
//! `Pending`, so the worker requeues it at the back of its queue (rule R2). The idea and the number
//! are tokio's `coop` module.
#![forbid(unsafe_code)]

use std::cell::Cell;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

/// Units per poll. Tokio's value (128), which its authors picked by measuring latency against
/// throughput on their benchmarks; nothing here argues for another.
pub(crate) const INITIAL: u8 = 128;

thread_local! {
    static BUDGET: Cell<Option<u8>> = const { Cell::new(None) };
}

/// Runs `f` with a fresh budget, restoring the previous one afterwards (also on unwind).
#[inline]
pub(crate) fn with_budget<R>(budget: Option<u8>, f: impl FnOnce() -> R) -> R {
    struct Reset(Option<u8>);
    impl Drop for Reset {
        #[inline]
        fn drop(&mut self) {
            let prev = self.0;
            let _ = BUDGET.try_with(|b| b.set(prev));
        }
    }
    let prev = BUDGET.with(|b| b.replace(budget));
    let _reset = Reset(prev);
    f()
}

/// A unit taken from the budget; given back on drop unless [`made_progress`](Self::made_progress).
#[derive(Debug)]
#[must_use]
pub(crate) struct RestoreOnPending(Option<u8>);

impl RestoreOnPending {
    /// The primitive returned `Ready`: the unit stays spent.
    #[inline]
    pub(crate) fn made_progress(mut self) {
        self.0 = None;
    }
}

impl Drop for RestoreOnPending {
    #[inline]
    fn drop(&mut self) {
        if let Some(before) = self.0 {
            let _ = BUDGET.try_with(|b| {
                if b.get().is_some() {
                    b.set(Some(before));
                }
            });
        }
    }
}

/// Takes one unit, or wakes the task and returns `Pending` when the budget is spent.
#[inline]
pub(crate) fn poll_proceed(cx: &mut Context<'_>) -> Poll<RestoreOnPending> {
    BUDGET.with(|b| match b.get() {
        None => Poll::Ready(RestoreOnPending(None)),
        Some(0) => {
            cx.waker().wake_by_ref();
            Poll::Pending
        }
        Some(n) => {
            b.set(Some(n - 1));
            Poll::Ready(RestoreOnPending(Some(n)))
        }
    })
}

/// Spends one unit of the task's cooperative budget, yielding first if it is spent.
///
/// Other crates call this in loops that may stay `Ready` for long (a stream of ready I/O
/// completions, a channel that is never empty) so they give the worker back like pagegen's own
/// primitives do.
pub async fn consume_budget() {
    ConsumeBudget.await
}

struct ConsumeBudget;

impl Future for ConsumeBudget {
    type Output = ();
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        match poll_proceed(cx) {
            Poll::Ready(r) => {
                r.made_progress();
                Poll::Ready(())
            }
            Poll::Pending => Poll::Pending,
        }
    }
}

/// Whether the current poll has budget left (always `true` outside a worker's poll).
pub fn has_budget_remaining() -> bool {
    BUDGET.with(|b| b.get() != Some(0))
}

/// Runs `fut` without a cooperative budget (its pagegen primitives never force a yield).
///
/// The future is boxed so this crate's safe modules need no pin projection; `unconstrained` is for
/// rare, deliberate uses, where one allocation does not matter.
pub fn unconstrained<F: Future>(fut: F) -> Unconstrained<F> {
    Unconstrained(Box::pin(fut))
}

/// Future returned by [`unconstrained`].
#[derive(Debug)]
#[must_use = "futures do nothing unless polled"]
pub struct Unconstrained<F>(Pin<Box<F>>);

impl<F: Future> Future for Unconstrained<F> {
    type Output = F::Output;
    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        let inner = self.0.as_mut();
        with_budget(None, || inner.poll(cx))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::task::Waker;

    #[test]
    fn budget_runs_out_and_pending_primitives_cost_nothing() {
        let mut cx = Context::from_waker(Waker::noop());
        with_budget(Some(2), || {
            assert!(poll_proceed(&mut cx).is_ready(), "restored on drop");
            let a = poll_proceed(&mut cx);
            let Poll::Ready(a) = a else { panic!() };
            a.made_progress();
            let Poll::Ready(b) = poll_proceed(&mut cx) else {
                panic!()
            };
            b.made_progress();
            assert!(!has_budget_remaining());
            assert!(poll_proceed(&mut cx).is_pending());
        });
        assert!(has_budget_remaining(), "unlimited outside a poll");
    }
}
