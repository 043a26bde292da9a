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
//! - `SCHED_IDLE` is an opt-in per pool ([`PoolSpec::sched_idle`]), never a default.
#![forbid(unsafe_code)]

use std::ops::Range;

use crate::idle::Idle;
use crate::injector::Injector;

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

/// A pool's shared scheduling state.
pub(crate) struct PoolShared {
    pub(crate) injector: Injector,
    pub(crate) idle: Idle,
    /// Its workers' indices in the runtime's worker array.
    pub(crate) range: Range<usize>,
    pub(crate) spec: PoolSpec,
}

impl PoolShared {
    pub(crate) fn new(spec: PoolSpec, range: Range<usize>) -> Self {
        PoolShared {
            injector: Injector::new(),
            idle: Idle::new(range.len()),
            range,
            spec,
        }
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
