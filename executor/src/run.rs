//! Running one task: the hook calls around a poll and around the drop of a future, with panics of
//! the future and of hooks contained (`core::hook`'s contract).
//!
//! Generic over the hook so the worker loop dispatches statically; the blocking pool and the
//! shutdown path call the same functions with `dyn PollHook`.
#![forbid(unsafe_code)]

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::task::Context;

use pagegen_core::{CancelReason, DropCause, PollHook, PollStats, Verdict};

use crate::error::JoinError;
use crate::instrument::Instr;
use crate::task::budget;
use crate::task::raw::{IdleOutcome, PollOutcome, Running};

/// What became of a polled task.
pub(crate) enum Ran {
    /// Finished (completed, failed or cancelled) or waiting for a wake.
    Done,
    /// Woken during its poll (a yield): requeue at the back.
    Requeue(crate::task::raw::Notified),
}

/// Polls `r` once with hooks around it. The request context must already be current.
#[inline]
pub(crate) fn poll<H: PollHook + ?Sized>(hook: &H, r: Running, instr: Option<&mut Instr>) -> Ran {
    let ctx = &*r.header().ctx;
    let id = r.header().id;
    if let Some(reason) = ctx.cancel_requested() {
        cancel(hook, r, reason);
        return Ran::Done;
    }
    if let Err(p) = catch_unwind(AssertUnwindSafe(|| hook.before_poll(ctx))) {
        fail(hook, r, DropCause::Panicked, JoinError::panic(id, p));
        return Ran::Done;
    }
    let poll_index = r.header().polls.load(std::sync::atomic::Ordering::Relaxed);
    r.header()
        .polls
        .store(poll_index + 1, std::sync::atomic::Ordering::Relaxed);
    let start = instr.as_ref().map(|i| i.start());
    let outcome = {
        let waker = r.waker();
        let mut cx = Context::from_waker(&waker);
        budget::with_budget(Some(budget::INITIAL), || r.poll(&mut cx))
    };
    let ready = matches!(outcome, PollOutcome::Ready);
    let stats = match (instr, start) {
        (Some(i), Some(start)) => {
            let woken_at = r
                .header()
                .woken_at
                .load(std::sync::atomic::Ordering::Relaxed);
            i.finish(start, woken_at, poll_index, ready)
        }
        _ => PollStats {
            ready,
            poll_index,
            ..PollStats::default()
        },
    };
    let verdict = catch_unwind(AssertUnwindSafe(|| hook.after_poll(ctx, &stats)));
    match (outcome, verdict) {
        (PollOutcome::Ready, _) => {
            // A hook that panics after the task finished does not spoil a good output.
            match drop_future(hook, &r, DropCause::Completed) {
                None => r.complete(),
                Some(p) => {
                    r.store_error(JoinError::panic(id, p));
                    r.complete();
                }
            }
            Ran::Done
        }
        (PollOutcome::Panicked(p), _) => {
            fail(hook, r, DropCause::Panicked, JoinError::panic(id, p));
            Ran::Done
        }
        (PollOutcome::Pending, Err(p)) => {
            fail(hook, r, DropCause::Panicked, JoinError::panic(id, p));
            Ran::Done
        }
        (PollOutcome::Pending, Ok(Verdict::Cancel(reason))) => {
            cancel(hook, r, reason);
            Ran::Done
        }
        (PollOutcome::Pending, Ok(Verdict::Continue)) => match r.idle() {
            IdleOutcome::Parked => Ran::Done,
            IdleOutcome::Requeue(n) => Ran::Requeue(n),
            IdleOutcome::Cancel(r) => {
                cancel(hook, r, CancelReason::Aborted);
                Ran::Done
            }
        },
    }
}

/// Drops the future of a cancelled task and completes it with a cancelled error.
pub(crate) fn cancel<H: PollHook + ?Sized>(hook: &H, r: Running, reason: CancelReason) {
    let id = r.header().id;
    fail(
        hook,
        r,
        DropCause::Cancelled(reason),
        JoinError::cancelled(id, reason),
    );
}

/// Drops the future (with `cause`) and completes the task with `err`.
pub(crate) fn fail<H: PollHook + ?Sized>(hook: &H, r: Running, cause: DropCause, err: JoinError) {
    let _ = drop_future(hook, &r, cause);
    r.store_error(err);
    r.complete();
}

/// `before_drop` → drop → `after_drop`; returns the payload if the future's destructor panicked.
fn drop_future<H: PollHook + ?Sized>(
    hook: &H,
    r: &Running,
    cause: DropCause,
) -> Option<Box<dyn std::any::Any + Send>> {
    let ctx = &*r.header().ctx;
    let _ = catch_unwind(AssertUnwindSafe(|| hook.before_drop(ctx, cause)));
    let p = r.drop_future();
    let _ = catch_unwind(AssertUnwindSafe(|| hook.after_drop(ctx, cause)));
    p
}
