//! [`ProfileHook`]: the executor's poll statistics into the request's CPU account.
//!
//! After each poll of an admitted request's task: CPU, busy (wall inside the poll) and scheduled
//! delay (wake → poll) into `RequestCtx::cpu` (one `record_poll`: a few relaxed atomics on the
//! request's own account, core's *flush once per poll*);
//! the first poll of a task also offers its delay as the request's first-poll delay (the first one
//! recorded wins: the root task's). After a `spawn_blocking` closure run on the request's behalf, its
//! time is charged to the request. Background contexts — shared by unrelated work — are skipped.
//! Where the kernel has hardware counters, sampled polls also charge the instruction mix
//! ([`crate::profile::perf`]); each worker opens its counters when it starts.

use pagegen_core::{BlockingStats, PollHook, PollStats, RequestCtx, Verdict, WorkerInfo};

use crate::profile::perf::{self, PerfCounters};

/// The profiler's poll hook; its state is per thread, so it is `Copy`.
#[derive(Clone, Copy, Debug)]
pub struct ProfileHook {
    perf: PerfCounters,
    counters: bool,
}

impl Default for ProfileHook {
    fn default() -> Self {
        ProfileHook::new(crate::profile::perf::DEFAULT_EVERY)
    }
}

impl ProfileHook {
    /// A hook that charges time only: no hardware counters are opened or read.
    pub fn without_counters() -> Self {
        ProfileHook {
            perf: PerfCounters::default(),
            counters: false,
        }
    }
    /// A hook sampling hardware counters on one poll in `perf_every`.
    pub fn new(perf_every: u32) -> Self {
        ProfileHook {
            perf: PerfCounters::every(perf_every),
            counters: true,
        }
    }
}

impl PollHook for ProfileHook {
    fn thread_started(&self, worker: &WorkerInfo) {
        // Workers poll; blocking threads run closures charged by time alone.
        if self.counters && worker.pool.is_some() {
            let _ = perf::open_for_thread();
        }
    }
    #[inline]
    fn before_poll(&self, ctx: &RequestCtx) {
        if !ctx.id().is_background() {
            self.perf.before_poll();
        }
    }
    #[inline]
    fn after_poll(&self, ctx: &RequestCtx, stats: &PollStats) -> Verdict {
        if !ctx.id().is_background() {
            self.perf.after_poll(ctx);
            ctx.cpu
                .record_poll(stats.cpu_ns, stats.busy_ns, stats.sched_delay_ns);
            if stats.poll_index == 0 {
                ctx.cpu.record_first_poll_delay(stats.sched_delay_ns);
            }
        }
        Verdict::Continue
    }
    #[inline]
    fn after_blocking(&self, ctx: &RequestCtx, stats: &BlockingStats) {
        if !ctx.id().is_background() {
            ctx.cpu.record_blocking(stats.busy_ns);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use pagegen_core::{ClassId, Grant, RequestId};

    #[test]
    fn polls_and_blocking_time_are_charged_to_admitted_requests_only() {
        let h = ProfileHook::new(64);
        let ctx = RequestCtx::new(RequestId(3), Grant::unlimited(ClassId::from_raw(2)), 1);
        let poll = |i, cpu| PollStats {
            busy_ns: cpu + 5,
            cpu_ns: cpu,
            sched_delay_ns: 70 + i,
            ready: false,
            poll_index: i,
        };
        h.after_poll(&ctx, &poll(0, 100));
        h.after_poll(&ctx, &poll(1, 50));
        h.after_blocking(
            &ctx,
            &BlockingStats {
                busy_ns: 1_000,
                queue_delay_ns: 3,
            },
        );
        let u = ctx.usage(10).cpu;
        assert_eq!((u.cpu_ns, u.busy_ns, u.polls), (150, 160, 2));
        assert_eq!((u.first_poll_delay_ns, u.sched_delay_ns), (70, 141));
        assert_eq!((u.blocking_ns, u.blocking_calls), (1_000, 1));
        let bg = RequestCtx::background(RequestId::BACKGROUND, ClassId::DEFAULT);
        h.after_poll(&bg, &poll(0, 100));
        assert_eq!(bg.usage(0).cpu.polls, 0);
    }
}
