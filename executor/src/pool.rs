//! Worker pools: fixed sets of workers at fixed OS priorities.
//!
//! A Rust future cannot be preempted inside a poll, so CPU shares alone cannot save a light request
//! from a 20 ms render on the same worker. Pools let the kernel do it: a latency pool at normal
//! priority and a bulk pool at, say, nice +10, with more threads in total than cores, so when a light
//! task becomes runnable the kernel preempts a long bulk poll. Rules (DESIGN.md, "Why worker pools"):
//! - a thread's priority is set once, when it starts, and never changes (lowering is one-way without
//!   `CAP_SYS_NICE`); **tasks move between pools**, threads do not;
//! - a task runs in the pool of its request's grant (`RequestCtx::grant().pool()`), read when the
//!   task is queued, so a checkpoint that demotes a request moves its tasks at their next wake or
//!   yield; an unknown pool id means the first pool;
//! - work-stealing happens inside a pool only; each pool has its own injector and idle set;
//! - where the OS refuses a priority the pool runs at the default one, and says so once;
//! - `SCHED_IDLE` is an opt-in per pool ([`PoolSpec::sched_idle`]), never a default;
//! - a pool is **resized by parking threads** ([`Handle::set_pool_workers`](crate::Handle::set_pool_workers)):
//!   its threads exist from the start; a worker above the active count finishes the poll it is in,
//!   hands its LIFO slot and queues to the pool's injector, wakes an active worker for them, and
//!   parks outside the idle set (so wake-ups never pick it) until the pool grows again. While so
//!   parked it is not this runtime's worker for scheduling: a wake from its thread (its I/O driver
//!   keeps being polled when it parks through one) goes to the injector. Its empty queues cost a
//!   thief one look; nothing is ever queued on it.
#![forbid(unsafe_code)]

use std::ops::Range;
use std::time::Duration;

use crate::idle::Idle;
use crate::injector::Injector;
use crate::loom::{AtomicUsize, Ordering};

/// One pool as configured on the [`Builder`](crate::Builder).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PoolSpec {
    /// Name, used in thread names (`<runtime>-<pool>-<i>`).
    pub name: String,
    /// Worker threads.
    pub workers: usize,
    /// Nice value of its threads (`0` = unchanged, `10` = the usual bulk setting).
    pub nice: i32,
    /// Whether its threads run under `SCHED_IDLE` (only when no other thread wants the CPU).
    pub sched_idle: bool,
    /// Scheduler slice of its threads (`None`: the kernel's default), see [`PoolSpec::slice`].
    pub slice: Option<Duration>,
}

impl PoolSpec {
    /// A pool of `workers` threads at normal priority.
    ///
    /// # Panics
    /// If `workers` is 0: a pool needs at least one worker.
    #[track_caller]
    pub fn new(name: impl Into<String>, workers: usize) -> Self {
        assert!(
            workers > 0,
            "PoolSpec::new(_, 0): a pool needs at least one worker"
        );
        PoolSpec {
            name: name.into(),
            workers,
            nice: 0,
            sched_idle: false,
            slice: None,
        }
    }
    /// Sets the nice value of the pool's threads **relative to the process's**: `nice(10)` runs them 10
    /// levels below the latency workers, clamped at 19 (raising it needs no privilege; a negative
    /// offset needs `CAP_SYS_NICE` and is refused, and said once, without it).
    ///
    /// # Panics
    /// Outside −20..=19.
    #[track_caller]
    pub fn nice(mut self, nice: i32) -> Self {
        assert!(
            (-20..=19).contains(&nice),
            "nice({nice}): Linux nice values are -20..=19"
        );
        self.nice = nice;
        self
    }
}

/// Lowers the **calling** thread's OS priority by `offset` nice levels below the one it inherited
/// (clamped at 19), the same one-way step the bulk pool takes. For threads pagegen does not run as
/// workers but that must not compete with them, such as the model trainer. Returns the nice value set;
/// `Err` where the OS refuses (the thread then keeps its priority).
///
/// # Panics
/// If `offset` is negative: raising a priority needs `CAP_SYS_NICE` and is never what this is for.
#[track_caller]
pub fn lower_current_thread_priority(offset: i32) -> std::io::Result<i32> {
    assert!(
        offset >= 0,
        "lower_current_thread_priority({offset}): the offset is how many nice levels to lower by, 0..=39"
    );
    crate::sys::raise_thread_nice(offset)
}

/// Puts the **calling** thread under Linux's `SCHED_IDLE` policy: it runs only when no normal thread
/// wants the CPU (a one-way step: an unprivileged thread cannot leave it). For a helper thread that
/// holds nothing a worker ever waits for, such as the model trainer (`pagegen::trainer`); a thread
/// that shares locks with workers must not use it (a starved holder stalls them). `Err` where the OS
/// refuses (the thread then keeps its policy). The call itself is `sys::set_thread_sched_idle`.
pub fn set_current_thread_sched_idle() -> std::io::Result<()> {
    crate::sys::set_thread_sched_idle()
}

impl PoolSpec {
    /// Opt-in: run the pool's threads under Linux's `SCHED_IDLE` policy, so they get CPU only when
    /// no normal thread wants it — stronger than any nice value. Beware priority inversion: a task
    /// in this pool holding a lock that a latency task waits for may not run for a long time while
    /// the machine is busy. Where the OS refuses, the pool runs at its nice value and says so once.
    pub fn sched_idle(mut self, on: bool) -> Self {
        self.sched_idle = on;
        self
    }
}

impl PoolSpec {
    /// Opt-in: give the pool's threads a custom scheduler slice (Linux EEVDF, kernel 6.12 and later:
    /// `sched_setattr` with `SCHED_OTHER` and `sched_runtime`; the kernel clamps it to 0.1–100 ms).
    /// A **short** slice on the latency pool (e.g. 100 µs) gives its threads an early virtual
    /// deadline each time they wake, so the kernel preempts a running bulk (or foreign) thread for
    /// them at once rather than when that thread's own slice runs out; a **long** slice on the bulk
    /// pool lets its polls run with fewer preemptions when nothing short waits. The slice does not
    /// change a thread's share of the CPU, only how soon it runs. Needs no privilege; where the OS
    /// refuses (older kernels, other systems) the pool runs with the default slice and says so once.
    /// Ignored for a [`sched_idle`](Self::sched_idle) pool (that policy has no slice).
    ///
    /// Measured (`benches/isolation.rs`, quiet 2-core VM, kernel 6.18, medians of 5 runs): a 100 µs
    /// slice on **both** a latency pool and a nice +10 bulk pool gave the light class the lowest
    /// tail — p99 140 µs, p999 0.30 ms, against 173 µs / 0.78 ms with neither — at no cost to the
    /// bulk pool's throughput. A short bulk slice bounds how long a running bulk thread is protected
    /// from a waking latency thread (EEVDF's run-to-parity lasts at most the running thread's slice).
    ///
    /// # Panics
    /// If `slice` is zero (`None`, the default, is "the kernel's slice").
    #[track_caller]
    pub fn slice(mut self, slice: Duration) -> Self {
        assert!(
            !slice.is_zero(),
            "PoolSpec::slice(0): a slice must be positive (leave it unset for the kernel's default)"
        );
        self.slice = Some(slice);
        self
    }
}

/// A pool's size at run time ([`Handle::pool_size`](crate::Handle::pool_size)).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PoolSize {
    /// Workers it was built with (its threads; the most it can have active).
    pub configured: usize,
    /// Workers asked to run tasks (`1..=configured`, [`Handle::set_pool_workers`](crate::Handle::set_pool_workers)).
    pub active: usize,
    /// Workers parked by a resize right now: they have handed their queues to the pool and run
    /// nothing until the pool grows. Lags `configured - active` while a shrunk worker finishes the
    /// poll it is in.
    pub parked: usize,
}

/// Why [`Handle::set_pool_workers`](crate::Handle::set_pool_workers) refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ResizeError {
    /// The runtime has no pool with this id.
    #[error("no pool {0} in this runtime (it has {1} pools)")]
    NoSuchPool(u8, usize),
    /// The requested count is outside `1..=configured`.
    #[error("pool `{pool}` can run 1..={configured} workers, not {active}")]
    OutOfRange {
        /// The pool's name.
        pool: String,
        /// Requested.
        active: usize,
        /// Its threads.
        configured: usize,
    },
}

/// A value on cache lines of its own (128 bytes: the adjacent-line prefetcher pairs lines), so
/// writes to it do not slow readers of its neighbours, nor theirs it. Used for: a pool's `active`
/// count (read by every worker each tick, written only by resizes, beside the injector's busy
/// state), the owner list's shards, and the spawn counter.
#[repr(align(128))]
pub(crate) struct Padded<T>(pub(crate) T);

/// A pool's shared scheduling state.
pub(crate) struct PoolShared {
    pub(crate) injector: Injector,
    pub(crate) idle: Idle,
    /// Its workers' indices in the runtime's worker array.
    pub(crate) range: Range<usize>,
    pub(crate) spec: PoolSpec,
    /// Workers `range.start..range.start + active` run tasks; the rest park (resize protocol in
    /// `worker.rs`, `Worker::resize_park`).
    pub(crate) active: Padded<AtomicUsize>,
    /// Workers currently parked by a resize.
    pub(crate) parked: AtomicUsize,
}

impl PoolShared {
    pub(crate) fn new(spec: PoolSpec, range: Range<usize>) -> Self {
        PoolShared {
            injector: Injector::new(),
            idle: Idle::new(range.len()),
            active: Padded(AtomicUsize::new(range.len())),
            parked: AtomicUsize::new(0),
            range,
            spec,
        }
    }

    /// Whether worker `index` (runtime-wide) is above the pool's active count.
    #[inline]
    pub(crate) fn resized_out(&self, index: usize) -> bool {
        index - self.range.start >= self.active.0.load(Ordering::Acquire)
    }
}

#[cfg(all(test, loom))]
mod loom_resize {
    use super::*;
    use crate::park::Parker;
    use loom::sync::Arc;
    use loom::thread;

    /// A grow racing with a resized-out worker going to park never leaves it parked: the grow path
    /// of `Handle::set_pool_workers` (swap `active`, then unpark) against the loop of
    /// `Worker::resize_park` (check `resized_out`, then park). Loom reports a deadlock if the worker
    /// parks forever.
    #[test]
    fn loom_grow_racing_with_resize_park_is_never_lost() {
        loom::model(|| {
            let pool = Arc::new(PoolShared::new(PoolSpec::new("p", 2), 0..2));
            pool.active.0.store(1, Ordering::SeqCst);
            let parker = Arc::new(Parker::new());
            let grower = {
                let (pool, parker) = (pool.clone(), parker.clone());
                thread::spawn(move || {
                    pool.active.0.swap(2, Ordering::AcqRel);
                    parker.unpark();
                })
            };
            while pool.resized_out(1) {
                parker.park(None);
            }
            assert!(!pool.resized_out(1));
            grower.join().unwrap();
        });
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    /// This thread's nice value as the kernel reports it (field 19 of `/proc/thread-self/stat`,
    /// counted after the parenthesised command name, which may itself hold spaces).
    fn thread_nice() -> i32 {
        let stat = std::fs::read_to_string("/proc/thread-self/stat").unwrap();
        let after = &stat[stat.rfind(')').unwrap() + 2..];
        after.split(' ').nth(16).unwrap().parse().unwrap()
    }

    /// A pool with a slice gets it on every worker thread, with its nice value kept (on kernels
    /// before 6.12, which ignore the slice, the read-back slice is 0 and the test says so and stops).
    #[test]
    fn a_pool_slice_reaches_its_threads_and_keeps_their_nice() {
        use crate::{Builder, PoolSpec};
        use std::time::Duration;
        let rt = Builder::new()
            .pool(PoolSpec::new("latency", 1).slice(Duration::from_micros(300)))
            .pool(
                PoolSpec::new("bulk", 1)
                    .nice(5)
                    .slice(Duration::from_millis(20)),
            )
            .build()
            .unwrap();
        let base = thread_nice();
        let mut seen = Vec::new();
        for pool in [pagegen_core::PoolId::LATENCY, pagegen_core::PoolId::BULK] {
            let mut g = pagegen_core::Grant::unlimited(pagegen_core::ClassId::DEFAULT);
            g.pool = pool;
            let ctx =
                pagegen_core::RequestCtx::new(pagegen_core::RequestId(pool.0 as u64 + 1), g, 0);
            let (tx, rx) = std::sync::mpsc::channel();
            drop(rt.handle().spawn_with_ctx(ctx, async move {
                tx.send((crate::sys::thread_slice_ns().unwrap(), thread_nice()))
                    .unwrap();
            }));
            seen.push(rx.recv().unwrap());
        }
        if seen[0].0 == 0 {
            eprintln!("kernel keeps no custom slice (before 6.12): nothing to check");
            return;
        }
        assert_eq!(seen[0], (300_000, base));
        assert_eq!(seen[1], (20_000_000, (base + 5).min(19)));
    }

    #[test]
    #[should_panic(expected = "slice must be positive")]
    fn a_zero_slice_is_refused() {
        let _ = crate::PoolSpec::new("p", 1).slice(std::time::Duration::ZERO);
    }

    #[test]
    fn lowering_the_current_thread_moves_only_that_thread() {
        let before = thread_nice();
        let (set, inside) = std::thread::spawn(|| {
            let set = super::lower_current_thread_priority(3).unwrap();
            (set, thread_nice())
        })
        .join()
        .unwrap();
        assert_eq!(set, (before + 3).min(19));
        assert_eq!(inside, set);
        assert_eq!(
            thread_nice(),
            before,
            "the caller's own thread is untouched"
        );
    }
}
