//! A poll-at-a-time harness that follows the executor's contract from `pagegen_core::hook`:
//! context entered, `before_poll` → poll → `after_poll`, and `before_drop` → drop → `after_drop`.
#![allow(dead_code)]

use std::future::Future;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, Waker};

use pagegen_alloc::AllocHook;
use pagegen_core::{
    ClassId, DropCause, Grant, PollHook, PollStats, RequestCtx, RequestId, Verdict,
};

/// What one poll gave.
#[derive(Debug, PartialEq, Eq)]
pub enum Step {
    Pending(Verdict),
    Ready(Verdict),
    Panicked(Verdict),
}

/// One request's task, polled by hand. Like the executor's task cell, the future's storage is
/// allocated when the task is created and freed with the task, outside every bracket; the drop
/// bracket only drops the future in place.
pub struct Task<F> {
    pub ctx: Arc<RequestCtx>,
    fut: Pin<Box<Option<F>>>,
}

impl<F: Future<Output = ()>> Task<F> {
    pub fn new(ctx: Arc<RequestCtx>, fut: F) -> Self {
        Task {
            ctx,
            fut: Box::pin(Some(fut)),
        }
    }

    pub fn poll(&mut self, hook: &AllocHook) -> Step {
        let mut cx = Context::from_waker(Waker::noop());
        let _enter = RequestCtx::enter(&self.ctx);
        hook.before_poll(&self.ctx);
        let fut = self.fut.as_mut();
        let out = catch_unwind(AssertUnwindSafe(|| {
            fut.as_pin_mut()
                .expect("task already finished")
                .poll(&mut cx)
        }));
        let verdict = hook.after_poll(&self.ctx, &PollStats::default());
        match out {
            Ok(Poll::Pending) => Step::Pending(verdict),
            Ok(Poll::Ready(())) => Step::Ready(verdict),
            Err(_) => Step::Panicked(verdict),
        }
    }

    /// Drops the future inside the drop bracket, as the executor does on completion or cancel.
    pub fn drop_future(&mut self, hook: &AllocHook, cause: DropCause) {
        let _enter = RequestCtx::enter(&self.ctx);
        hook.before_drop(&self.ctx, cause);
        self.fut.as_mut().set(None);
        hook.after_drop(&self.ctx, cause);
    }

    /// Polls until ready or a cancel verdict; drops the future in the drop bracket. Returns the
    /// number of polls and the last step.
    pub fn run(&mut self, hook: &AllocHook) -> (usize, Step) {
        let mut n = 0;
        loop {
            n += 1;
            let step = self.poll(hook);
            let cause = match &step {
                Step::Pending(Verdict::Continue) => continue,
                Step::Pending(Verdict::Cancel(r)) | Step::Ready(Verdict::Cancel(r)) => {
                    DropCause::Cancelled(*r)
                }
                Step::Ready(Verdict::Continue) => DropCause::Completed,
                Step::Panicked(_) => DropCause::Panicked,
            };
            self.drop_future(hook, cause);
            return (n, step);
        }
    }
}

/// Returns `Pending` once, then `Ready`.
pub struct YieldNow(bool);

pub fn yield_now() -> YieldNow {
    YieldNow(false)
}

impl Future for YieldNow {
    type Output = ();
    fn poll(mut self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<()> {
        if self.0 {
            Poll::Ready(())
        } else {
            self.0 = true;
            Poll::Pending
        }
    }
}

/// A context in `class` with the given memory limits.
pub fn ctx(id: u64, class: u32, soft: u64, hard: u64) -> Arc<RequestCtx> {
    let mut g = Grant::unlimited(ClassId::from_raw(class));
    g.mem_soft = soft;
    g.mem_hard = hard;
    RequestCtx::new(RequestId(id), g, 0)
}
