//! Always-on poll instrumentation: per poll, wall time (chained clock reads), CPU time for long polls,
//! scheduled delay (wake → poll), first-poll delay and poll count, into per-worker HDR histograms that
//! are merged off the hot path.
//!
//! Cost model (measured by the `poll_cost` group of `benches/executor.rs`):
//! - **one clock read per poll**: the read that ends a poll also starts the next one, so a worker
//!   running tasks back to back reads the clock once per poll. The few tens of ns of queue work between
//!   two polls are charged to the second; after parking, stealing or an injector batch the chain
//!   restarts with a fresh read so idle and search time is never charged;
//! - **one clock read per wake**, stored in the task header, for the scheduled delay;
//! - **the thread CPU clock only for polls over [`LONG_POLL_NS`]**: wall time overcharges a poll the
//!   kernel preempted, so for those the CPU time since the last CPU read, minus the wall time of the
//!   (short, CPU-bound) polls in between, is charged instead;
//! - **three histogram records**, into the worker's own histograms; every [`PUBLISH_EVERY`] polls and
//!   before parking they are added into the worker's shared slot (one uncontended lock).

use hdrhistogram::Histogram;
use pagegen_core::PollStats;

use crate::clock::{self, ClockSource};
use crate::loom::{lock, Mutex};

/// Polls longer than this are charged thread CPU time instead of wall time. Reading the thread CPU
/// clock costs 0.4–0.8 µs on the machines we measured, under 2 % of a 50 µs poll.
pub(crate) const LONG_POLL_NS: u64 = 50_000;
/// Polls between publications of a worker's histograms. A publication adds and clears three
/// histograms of ~4 700 counters each (~20 µs measured on yield_many with 2 workers, where publishing
/// every 1 024 polls cost ~50 ns a poll); every 16 384 polls it is ~1–2 ns a poll. Workers also
/// publish whenever they go idle, so a quiet runtime's figures are current.
pub(crate) const PUBLISH_EVERY: u32 = 16_384;
/// Largest value tracked: one hour in ns; two significant digits (1 % resolution), which is what the
/// latency percentiles are reported at.
const MAX_NS: u64 = 3_600_000_000_000;

/// Poll statistics of a runtime (all workers, published so far).
#[derive(Clone, Debug)]
pub struct PollSummary {
    /// Polls recorded.
    pub polls: u64,
    /// Polls charged thread CPU time (longer than 50 µs).
    pub long_polls: u64,
    /// Wall time per poll, ns.
    pub busy_ns: Histogram<u64>,
    /// Delay from wake (or spawn) to poll, ns.
    pub sched_delay_ns: Histogram<u64>,
    /// Delay from spawn to first poll, ns.
    pub first_poll_delay_ns: Histogram<u64>,
    /// The clock the figures come from.
    pub clock: ClockSource,
}

impl PollSummary {
    pub(crate) fn new() -> Self {
        let h = || Histogram::new_with_bounds(1, MAX_NS, 2).expect("static histogram bounds");
        PollSummary {
            polls: 0,
            long_polls: 0,
            busy_ns: h(),
            sched_delay_ns: h(),
            first_poll_delay_ns: h(),
            clock: clock::source(),
        }
    }
    /// Adds `other` into `self`.
    pub fn merge(&mut self, other: &PollSummary) {
        self.polls += other.polls;
        self.long_polls += other.long_polls;
        // Same bounds on both sides: `add` cannot fail.
        let _ = self.busy_ns.add(&other.busy_ns);
        let _ = self.sched_delay_ns.add(&other.sched_delay_ns);
        let _ = self.first_poll_delay_ns.add(&other.first_poll_delay_ns);
    }
    fn clear(&mut self) {
        self.polls = 0;
        self.long_polls = 0;
        self.busy_ns.reset();
        self.sched_delay_ns.reset();
        self.first_poll_delay_ns.reset();
    }
}

/// One worker's instrumentation state.
pub(crate) struct Instr {
    /// Ticks at the end of the last poll: the start of the next one.
    last: u64,
    /// Thread CPU ns at the last CPU read, and the tick it was taken at.
    cpu_mark: Option<(u64, u64)>,
    local: PollSummary,
    since_publish: u32,
    last_busy_ns: u64,
}

impl Instr {
    pub(crate) fn new() -> Self {
        let now = clock::now();
        Instr {
            last: now,
            cpu_mark: crate::sys::thread_cpu_ns().map(|c| (c, now)),
            local: PollSummary::new(),
            since_publish: 0,
            last_busy_ns: 0,
        }
    }

    /// Restarts the chain (after parking, searching or an injector batch).
    #[inline]
    pub(crate) fn restart(&mut self) {
        self.last = clock::now();
    }

    /// The start tick of the poll about to run.
    #[inline]
    pub(crate) fn start(&self) -> u64 {
        self.last
    }

    /// Ends a poll that started at `start`, for a task woken at `woken_at` (ticks).
    #[inline]
    pub(crate) fn finish(
        &mut self,
        start: u64,
        woken_at: u64,
        poll_index: u64,
        ready: bool,
    ) -> PollStats {
        let end = clock::now();
        self.last = end;
        let busy_ns = clock::to_ns(end.saturating_sub(start));
        let sched_delay_ns = clock::to_ns(start.saturating_sub(woken_at));
        let cpu_ns = if busy_ns > LONG_POLL_NS {
            self.long_poll_cpu(start, end, busy_ns)
        } else {
            busy_ns
        };
        self.last_busy_ns = busy_ns;
        let l = &mut self.local;
        l.polls += 1;
        l.busy_ns.saturating_record(busy_ns.max(1));
        l.sched_delay_ns.saturating_record(sched_delay_ns.max(1));
        if poll_index == 0 {
            l.first_poll_delay_ns
                .saturating_record(sched_delay_ns.max(1));
        }
        self.since_publish += 1;
        PollStats {
            busy_ns,
            cpu_ns,
            sched_delay_ns,
            ready,
            poll_index,
        }
    }

    #[cold]
    fn long_poll_cpu(&mut self, start: u64, end: u64, busy_ns: u64) -> u64 {
        self.local.long_polls += 1;
        let Some(now_cpu) = crate::sys::thread_cpu_ns() else {
            return busy_ns;
        };
        let charged = match self.cpu_mark {
            Some((cpu0, tick0)) => {
                let between_ns = clock::to_ns(start.saturating_sub(tick0));
                now_cpu
                    .saturating_sub(cpu0)
                    .saturating_sub(between_ns)
                    .min(busy_ns)
            }
            None => busy_ns,
        };
        self.cpu_mark = Some((now_cpu, end));
        charged
    }

    /// Wall time of the last poll, ns.
    #[inline]
    pub(crate) fn last_busy_ns(&self) -> u64 {
        self.last_busy_ns
    }

    /// Whether the local histograms should be published now.
    #[inline]
    pub(crate) fn due(&self) -> bool {
        self.since_publish >= PUBLISH_EVERY
    }

    /// Adds the local histograms into the worker's shared slot.
    pub(crate) fn publish(&mut self, slot: &Mutex<PollSummary>) {
        if self.since_publish == 0 {
            return;
        }
        lock(slot).merge(&self.local);
        self.local.clear();
        self.since_publish = 0;
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;

    #[test]
    fn a_poll_is_timed_delayed_and_published() {
        let mut i = Instr::new();
        let woken = clock::now();
        std::thread::sleep(std::time::Duration::from_millis(1));
        i.restart();
        let start = i.start();
        let s = i.finish(start, woken, 0, true);
        assert!(s.sched_delay_ns >= 900_000, "{s:?}");
        assert!(s.ready && s.poll_index == 0);
        assert!(s.cpu_ns <= s.busy_ns.max(LONG_POLL_NS));
        let slot = Mutex::new(PollSummary::new());
        i.publish(&slot);
        let g = lock(&slot);
        assert_eq!(g.polls, 1);
        assert_eq!(g.first_poll_delay_ns.len(), 1);
        assert!(g.sched_delay_ns.value_at_quantile(0.5) >= 900_000);
    }

    #[test]
    fn a_long_busy_poll_is_charged_cpu_time_not_more_than_wall() {
        let mut i = Instr::new();
        i.restart();
        let start = i.start();
        let t = std::time::Instant::now();
        while t.elapsed() < std::time::Duration::from_micros(200) {
            std::hint::spin_loop();
        }
        let s = i.finish(start, start, 3, false);
        assert!(s.busy_ns >= 200_000);
        assert!(s.cpu_ns <= s.busy_ns);
        assert_eq!(i.local.long_polls, 1);
    }
}
