//! Enforcement at poll boundaries: the grant's CPU and wall-clock budgets.
//!
//! [`EnforceHook`] runs after the profiler in the hook tuple (so the poll's CPU is already in the
//! request's account) and, for requests the loop admitted (background contexts are skipped):
//! - **CPU** past `Grant::cpu_ns` in the latency pool → the request moves to the bulk pool (a
//!   demotion, counted once; its next scheduling runs at the bulk pool's lower OS priority). CPU
//!   never cancels: a long render is not an error, only a reason to stop competing with short ones.
//! - **Wall time** past `Grant::wall_ns` → cancelled with [`CancelReason::Deadline`]. A task that
//!   is parked is not polled, so the HTTP edge also arms a timer that calls
//!   [`RequestCtx::request_cancel`], which wakes the request's root task (see `core::ctx`).
//!
//! Memory is enforced by pagegen-alloc's hook (`AllocHook`), earlier in the same tuple. With
//! [`Checkpoints`] attached ([`EnforceHook::with_checkpoints`]) the checkpoints run first, so a
//! grant extended at 90 % is the one enforced.

use std::sync::Arc;

use pagegen_core::{CancelReason, Clock, PollHook, PollStats, PoolId, RequestCtx, Verdict};

use crate::policy::checkpoint::Checkpoints;
use crate::policy::counters::{Decision, Decisions};

/// The CPU and wall-clock enforcer; see the module docs.
#[derive(Debug, Clone)]
pub struct EnforceHook {
    clock: Arc<dyn Clock>,
    decisions: Arc<Decisions>,
    has_bulk: bool,
    checkpoints: Option<Arc<Checkpoints>>,
}

impl EnforceHook {
    /// An enforcer reading wall time from `clock` (the clock admission stamps contexts with).
    pub fn new(clock: Arc<dyn Clock>, decisions: Arc<Decisions>, has_bulk: bool) -> Self {
        EnforceHook {
            clock,
            decisions,
            has_bulk,
            checkpoints: None,
        }
    }

    /// Runs `checkpoints` at every poll boundary, before enforcing.
    pub fn with_checkpoints(mut self, checkpoints: Arc<Checkpoints>) -> Self {
        self.checkpoints = Some(checkpoints);
        self
    }

    /// The decision for `ctx` now: demotes in place, returns a cancel past the deadline.
    pub fn judge(&self, ctx: &RequestCtx) -> Verdict {
        if ctx.id().is_background() {
            return Verdict::Continue;
        }
        let now = self.clock.now();
        if let Some(c) = &self.checkpoints {
            c.check(ctx, now);
        }
        let grant = ctx.grant();
        if self.has_bulk
            && grant.pool() == PoolId::LATENCY
            && ctx.cpu.cpu_ns() > grant.cpu_ns()
            && ctx.mark_demoted()
        {
            grant.set_pool(PoolId::BULK);
            self.decisions.count(ctx.class(), Decision::Demoted);
        }
        let wall = grant.wall_ns();
        if wall != u64::MAX && now.saturating_sub(ctx.admitted_ns()) > wall {
            return Verdict::Cancel(CancelReason::Deadline);
        }
        Verdict::Continue
    }
}

impl PollHook for EnforceHook {
    #[inline]
    fn after_poll(&self, ctx: &RequestCtx, _stats: &PollStats) -> Verdict {
        self.judge(ctx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use pagegen_core::{ClassId, Grant, RequestId, VirtualClock};

    fn ctx(cpu_ns: u64, wall_ns: u64, admitted: u64) -> Arc<RequestCtx> {
        let g = Grant {
            cpu_ns,
            wall_ns,
            ..Grant::unlimited(ClassId::from_raw(5))
        };
        RequestCtx::new(RequestId(1), g, admitted)
    }

    #[test]
    fn over_cpu_demotes_once_and_never_cancels() {
        let clock = Arc::new(VirtualClock::new());
        let d = Arc::new(Decisions::default());
        let h = EnforceHook::new(clock, d.clone(), true);
        let c = ctx(1_000, u64::MAX, 0);
        c.cpu.record_poll(999, 999, 0);
        assert_eq!(h.judge(&c), Verdict::Continue);
        assert_eq!(c.grant().pool(), PoolId::LATENCY);
        c.cpu.record_poll(2, 2, 0);
        assert_eq!(h.judge(&c), Verdict::Continue);
        assert_eq!(c.grant().pool(), PoolId::BULK);
        assert!(c.demoted());
        assert_eq!(h.judge(&c), Verdict::Continue);
        assert_eq!(d.class(c.class()).get(Decision::Demoted), 1);
        // Without a bulk pool there is nowhere to go.
        let single = EnforceHook::new(Arc::new(VirtualClock::new()), d, false);
        let c2 = ctx(1, u64::MAX, 0);
        c2.cpu.record_poll(10, 10, 0);
        single.judge(&c2);
        assert_eq!(c2.grant().pool(), PoolId::LATENCY);
    }

    #[test]
    fn past_the_wall_budget_cancels_with_deadline() {
        let clock = Arc::new(VirtualClock::new());
        let h = EnforceHook::new(clock.clone(), Arc::default(), true);
        let c = ctx(u64::MAX, 1_000_000, clock.now());
        clock.advance(std::time::Duration::from_micros(1000));
        assert_eq!(h.judge(&c), Verdict::Continue);
        clock.advance(std::time::Duration::from_nanos(1));
        assert_eq!(h.judge(&c), Verdict::Cancel(CancelReason::Deadline));
        let bg = RequestCtx::background(RequestId::BACKGROUND, ClassId::DEFAULT);
        assert_eq!(h.judge(&bg), Verdict::Continue);
    }
}
