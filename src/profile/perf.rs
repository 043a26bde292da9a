//! The instruction mix: instructions, cycles, cache misses and branch misses per request, from the
//! kernel's hardware counters (`perf_event_open`, through the `perf-event2` crate).
//!
//! Each worker thread opens one counter group for itself when it starts (`pid = 0`: this thread,
//! any CPU, user space only — allowed at the default `perf_event_paranoid` of 2). Reading a group is
//! a `read()` system call (0.3–1 µs), too dear for every poll, so polls are **sampled**: one in
//! [`PerfCounters::every`] (knob `perf_sample_every`, default 64) is read before and after, and the
//! difference × `every` is charged to the polled request — an unbiased estimate per class, a noisy
//! one per request with few polls (a request of 3 polls is sampled 3 times in 64). `every = 1`
//! measures every poll (tests; a few µs per poll).
//!
//! **Where the kernel has no counters** — a virtual machine without a virtual PMU, a container
//! whose seccomp profile forbids `perf_event_open`, `perf_event_paranoid` of 3 — the first worker
//! to try says so once (`tracing` at info level, with the kernel's reason), no thread tries again,
//! and profiles carry no counters: `Usage::counters` stays `None` (absent, never zero), so the model
//! and the CLI tell "not measured" from "measured nothing". [`supported`] answers after startup.

use std::cell::RefCell;
use std::io;
use std::sync::atomic::{AtomicU8, Ordering};

use pagegen_core::{PerfCounters as Counts, RequestCtx};
use perf_event::events::Hardware;
use perf_event::{Builder, Counter, Group};

/// Default sampling: one poll in 64 is measured.
pub const DEFAULT_EVERY: u32 = 64;

/// 0: nobody tried; 1: counters open; 2: unavailable.
static STATE: AtomicU8 = AtomicU8::new(0);

/// Whether this machine gives pagegen hardware counters: `None` until a worker tried.
pub fn supported() -> Option<bool> {
    match STATE.load(Ordering::Relaxed) {
        0 => None,
        1 => Some(true),
        _ => Some(false),
    }
}

/// One thread's open group.
struct Thread {
    group: Group,
    members: [Counter; 4],
    tick: u32,
    /// Readings at the start of a sampled poll.
    start: Option<[u64; 4]>,
}

impl Thread {
    fn open() -> io::Result<Thread> {
        let mut group = Group::new()?;
        let mut member = |event: Hardware| {
            let mut b = Builder::new(event);
            b.exclude_kernel(true).exclude_hv(true);
            group.add(&b)
        };
        let members = [
            member(Hardware::INSTRUCTIONS)?,
            member(Hardware::CPU_CYCLES)?,
            member(Hardware::CACHE_MISSES)?,
            member(Hardware::BRANCH_MISSES)?,
        ];
        group.enable()?;
        Ok(Thread {
            group,
            members,
            tick: 0,
            start: None,
        })
    }

    fn read(&mut self) -> Option<[u64; 4]> {
        let data = self.group.read().ok()?;
        let mut v = [0u64; 4];
        for (slot, c) in v.iter_mut().zip(&self.members) {
            *slot = data.get(c)?.value();
        }
        Some(v)
    }
}

thread_local! {
    static THREAD: RefCell<Option<Thread>> = const { RefCell::new(None) };
}

/// Tries to open this thread's counters, once per process after a failure. Returns the kernel's
/// refusal the first time it is met.
pub fn open_for_thread() -> io::Result<()> {
    if STATE.load(Ordering::Relaxed) == 2 {
        return Err(io::Error::new(
            io::ErrorKind::Unsupported,
            "hardware counters are unavailable on this machine",
        ));
    }
    match Thread::open() {
        Ok(t) => {
            STATE.store(1, Ordering::Relaxed);
            THREAD.with(|s| *s.borrow_mut() = Some(t));
            Ok(())
        }
        Err(e) => {
            if STATE.swap(2, Ordering::Relaxed) != 2 {
                tracing::info!(
                    error = %e,
                    "hardware performance counters unavailable (no PMU, or perf_event_open refused): \
                     request profiles carry no instruction mix"
                );
            }
            Err(e)
        }
    }
}

/// The per-poll sampler (part of [`ProfileHook`](crate::profile::ProfileHook)).
#[derive(Clone, Copy, Debug)]
pub struct PerfCounters {
    every: u32,
}

impl Default for PerfCounters {
    fn default() -> Self {
        PerfCounters::every(DEFAULT_EVERY)
    }
}

impl PerfCounters {
    /// Samples one poll in `every` (at least 1).
    pub fn every(every: u32) -> Self {
        PerfCounters {
            every: every.max(1),
        }
    }

    /// Before a poll: reads the group if this poll is sampled.
    #[inline]
    pub fn before_poll(&self) {
        if STATE.load(Ordering::Relaxed) != 1 {
            return;
        }
        THREAD.with(|s| {
            if let Some(t) = s.borrow_mut().as_mut() {
                t.tick = t.tick.wrapping_add(1);
                if t.tick % self.every == 0 {
                    t.start = t.read();
                }
            }
        });
    }

    /// After a poll: charges a sampled poll's counts × `every` to `ctx`.
    #[inline]
    pub fn after_poll(&self, ctx: &RequestCtx) {
        if STATE.load(Ordering::Relaxed) != 1 {
            return;
        }
        THREAD.with(|s| {
            let mut slot = s.borrow_mut();
            let Some(t) = slot.as_mut() else { return };
            let Some(start) = t.start.take() else { return };
            let Some(end) = t.read() else { return };
            let d = |i: usize| end[i].saturating_sub(start[i]) * u64::from(self.every);
            ctx.add_counters(Counts {
                instructions: d(0),
                cycles: d(1),
                cache_misses: d(2),
                branch_misses: d(3),
            });
        });
    }
}
