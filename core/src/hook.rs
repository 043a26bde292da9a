//! The executor's instrumentation points.
//!
//! The executor calls a [`PollHook`] around every poll of a task, around the drop of a task's future,
//! around `spawn_blocking` closures, and when a worker thread starts and stops. Subsystems implement it
//! to flush their per-thread counters into the request's accounts (pagegen-alloc), to charge CPU
//! (the profiler), and to stop a request that went over budget.
//!
//! Contracts:
//! - **Static dispatch on the hot path.** The executor is generic over `H: PollHook`; hooks compose as
//!   tuples (`(A, B)` calls `A` then `B`), so the set of hooks is known at compile time and each call
//!   inlines. [`NoHook`] costs nothing. `Arc<dyn PollHook>` also implements the trait, for the cold
//!   wiring of optional hooks.
//! - **Order.** For one task on one thread: `before_poll` → poll → `after_poll`; for the drop of the
//!   future (on completion, abort, cancellation or shutdown): `before_drop` → drop → `after_drop`, so
//!   frees made by destructors are attributed to the request. `before_blocking` / `after_blocking`
//!   bracket a blocking closure on a blocking thread. The request's context is current
//!   ([`RequestCtx::current`](crate::RequestCtx::current)) throughout.
//! - **Verdict.** `after_poll` returns a [`Verdict`]: the executor drops a task whose verdict is
//!   `Cancel` before its next poll, and its `JoinHandle` yields a cancelled error carrying the reason.
//!   With tuples the first non-`Continue` verdict wins, but every hook still runs (each must flush).
//! - **Panics.** A panicking hook is contained by the executor like a panicking task: the task fails
//!   with a panic error, the worker survives.
//! - Hooks run on worker threads inside the scheduling loop: they must not block.

use std::sync::Arc;

pub use crate::cancel::CancelReason;
use crate::ctx::RequestCtx;
use crate::driver::WorkerInfo;

/// Timing of one poll, measured by the executor.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Default)]
pub struct PollStats {
    /// Wall-clock time inside the poll, ns.
    pub busy_ns: u64,
    /// CPU charged for the poll, ns (equals `busy_ns` unless the thread CPU clock was read).
    pub cpu_ns: u64,
    /// Delay from the task's wake to this poll, ns.
    pub sched_delay_ns: u64,
    /// Whether the future completed in this poll.
    pub ready: bool,
    /// How many polls the task had before this one.
    pub poll_index: u64,
}

/// Timing of one `spawn_blocking` closure.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Default)]
pub struct BlockingStats {
    /// Wall-clock time inside the closure, ns.
    pub busy_ns: u64,
    /// Delay from the call to `spawn_blocking` to the closure starting, ns.
    pub queue_delay_ns: u64,
}

/// Why a task's future is being dropped.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum DropCause {
    /// It completed.
    Completed,
    /// Its `JoinHandle::abort` was called.
    Aborted,
    /// A hook's verdict or a [`RequestCtx::request_cancel`](crate::RequestCtx::request_cancel) stopped it.
    Cancelled(CancelReason),
    /// It panicked.
    Panicked,
    /// The runtime shut down before it finished.
    Shutdown,
}

/// What a hook decides after a poll.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Default)]
pub enum Verdict {
    /// Keep running the task.
    #[default]
    Continue,
    /// Drop the task before its next poll.
    Cancel(CancelReason),
}

impl Verdict {
    /// Combines two verdicts: the first `Cancel` wins.
    #[inline]
    pub fn and(self, other: Verdict) -> Verdict {
        match self {
            Verdict::Continue => other,
            cancel => cancel,
        }
    }
}

/// Instrumentation points the executor calls; see the module docs for the order and rules.
///
/// Every method has an empty default, so a hook implements only what it needs.
pub trait PollHook: Send + Sync + 'static {
    /// Before a poll of a task of `ctx`.
    #[inline]
    fn before_poll(&self, ctx: &RequestCtx) {
        let _ = ctx;
    }
    /// After the poll; the verdict may cancel the task.
    #[inline]
    fn after_poll(&self, ctx: &RequestCtx, stats: &PollStats) -> Verdict {
        let _ = (ctx, stats);
        Verdict::Continue
    }
    /// Before a task's future is dropped.
    #[inline]
    fn before_drop(&self, ctx: &RequestCtx, cause: DropCause) {
        let _ = (ctx, cause);
    }
    /// After a task's future was dropped.
    #[inline]
    fn after_drop(&self, ctx: &RequestCtx, cause: DropCause) {
        let _ = (ctx, cause);
    }
    /// Before a `spawn_blocking` closure runs, on the blocking thread.
    #[inline]
    fn before_blocking(&self, ctx: &RequestCtx) {
        let _ = ctx;
    }
    /// After a `spawn_blocking` closure returned (or panicked), on the blocking thread.
    #[inline]
    fn after_blocking(&self, ctx: &RequestCtx, stats: &BlockingStats) {
        let _ = (ctx, stats);
    }
    /// On a worker or blocking thread, before it runs anything.
    #[inline]
    fn thread_started(&self, worker: &WorkerInfo) {
        let _ = worker;
    }
    /// On a worker or blocking thread, after its last task, before it exits (e.g. to destroy
    /// per-thread allocator caches without a TLS destructor).
    #[inline]
    fn thread_stopping(&self, worker: &WorkerInfo) {
        let _ = worker;
    }
}

/// The hook that does nothing; the executor's default.
#[derive(Clone, Copy, Debug, Default)]
pub struct NoHook;

impl PollHook for NoHook {}

impl<H: PollHook + ?Sized> PollHook for Arc<H> {
    #[inline]
    fn before_poll(&self, ctx: &RequestCtx) {
        (**self).before_poll(ctx)
    }
    #[inline]
    fn after_poll(&self, ctx: &RequestCtx, stats: &PollStats) -> Verdict {
        (**self).after_poll(ctx, stats)
    }
    #[inline]
    fn before_drop(&self, ctx: &RequestCtx, cause: DropCause) {
        (**self).before_drop(ctx, cause)
    }
    #[inline]
    fn after_drop(&self, ctx: &RequestCtx, cause: DropCause) {
        (**self).after_drop(ctx, cause)
    }
    #[inline]
    fn before_blocking(&self, ctx: &RequestCtx) {
        (**self).before_blocking(ctx)
    }
    #[inline]
    fn after_blocking(&self, ctx: &RequestCtx, stats: &BlockingStats) {
        (**self).after_blocking(ctx, stats)
    }
    #[inline]
    fn thread_started(&self, worker: &WorkerInfo) {
        (**self).thread_started(worker)
    }
    #[inline]
    fn thread_stopping(&self, worker: &WorkerInfo) {
        (**self).thread_stopping(worker)
    }
}

macro_rules! tuple_hook {
    ($($name:ident . $idx:tt),+) => {
        impl<$($name: PollHook),+> PollHook for ($($name,)+) {
            #[inline]
            fn before_poll(&self, ctx: &RequestCtx) {
                $(self.$idx.before_poll(ctx);)+
            }
            #[inline]
            fn after_poll(&self, ctx: &RequestCtx, stats: &PollStats) -> Verdict {
                let v = Verdict::Continue;
                $(let v = v.and(self.$idx.after_poll(ctx, stats));)+
                v
            }
            #[inline]
            fn before_drop(&self, ctx: &RequestCtx, cause: DropCause) {
                $(self.$idx.before_drop(ctx, cause);)+
            }
            #[inline]
            fn after_drop(&self, ctx: &RequestCtx, cause: DropCause) {
                $(self.$idx.after_drop(ctx, cause);)+
            }
            #[inline]
            fn before_blocking(&self, ctx: &RequestCtx) {
                $(self.$idx.before_blocking(ctx);)+
            }
            #[inline]
            fn after_blocking(&self, ctx: &RequestCtx, stats: &BlockingStats) {
                $(self.$idx.after_blocking(ctx, stats);)+
            }
            #[inline]
            fn thread_started(&self, worker: &WorkerInfo) {
                $(self.$idx.thread_started(worker);)+
            }
            #[inline]
            fn thread_stopping(&self, worker: &WorkerInfo) {
                $(self.$idx.thread_stopping(worker);)+
            }
        }
    };
}

tuple_hook!(A.0, B.1);
tuple_hook!(A.0, B.1, C.2);
tuple_hook!(A.0, B.1, C.2, D.3);

#[cfg(test)]
mod tests {
    use super::*;
    use crate::class::ClassId;
    use crate::ctx::RequestId;
    use std::sync::atomic::{AtomicU32, Ordering};

    #[derive(Default)]
    struct Counting {
        polls: AtomicU32,
        verdict: Option<CancelReason>,
    }
    impl PollHook for Counting {
        fn after_poll(&self, _: &RequestCtx, _: &PollStats) -> Verdict {
            self.polls.fetch_add(1, Ordering::Relaxed);
            self.verdict.map_or(Verdict::Continue, Verdict::Cancel)
        }
    }

    #[test]
    fn tuples_run_every_hook_and_first_cancel_wins() {
        let hooks = (
            Counting::default(),
            Counting {
                verdict: Some(CancelReason::Shed),
                ..Counting::default()
            },
            Counting {
                verdict: Some(CancelReason::Deadline),
                ..Counting::default()
            },
        );
        let ctx = RequestCtx::background(RequestId(1), ClassId::DEFAULT);
        let v = hooks.after_poll(&ctx, &PollStats::default());
        assert_eq!(v, Verdict::Cancel(CancelReason::Shed));
        for n in [&hooks.0.polls, &hooks.1.polls, &hooks.2.polls] {
            assert_eq!(
                n.load(Ordering::Relaxed),
                1,
                "every hook flushes even after a cancel"
            );
        }
        let dynamic: Arc<dyn PollHook> = Arc::new(NoHook);
        assert_eq!(
            dynamic.after_poll(&ctx, &PollStats::default()),
            Verdict::Continue
        );
    }
}
