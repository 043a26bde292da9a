//! The per-worker run queue: a bounded ring that only its worker pushes to and that every worker may
//! pop from (the owner from the head, like thieves; the ring is FIFO).
//!
//! Protocol (indices are `usize` and only grow; a slot is `index % CAPACITY`):
//! - `tail` is written only by the owner (Q1). A push stores the task pointer in slot `tail`, then
//!   publishes it with a `Release` store of `tail + 1`; it refuses when `tail - head == CAPACITY`.
//! - `head` only grows, by CAS (Q2). A consumer reads `head` and `tail`, reads the slot(s) between,
//!   then claims them by CAS `head → head + n`. The CAS succeeds only if no one else claimed them
//!   first, and a slot is overwritten by the owner only after `head` moved past it, so a successful
//!   claimant read the pointers that were pushed for those indices (a stale read implies a failed CAS).
//! - Slots are `AtomicPtr`s, so a racing read is never a data race; ownership of a task's queue
//!   reference moves with a successful claim.
//!
//! Thieves take half of a victim's queue into their own (empty) queue: one CAS per batch. The overflow
//! path (ring full) moves half the ring to the global injector in one lock. The design is the classic
//! bounded work-stealing ring (tokio's `multi_thread/queue.rs` packs two heads to let the owner pop
//! without CAS; this one keeps a single head and pays one CAS per pop for a much simpler proof).

use crate::loom::{AtomicPtr, AtomicUsize, Ordering};
use crate::task::raw::{Header, Notified};

/// Slots per worker. 256 is tokio's size, chosen there so that a burst of local spawns rarely
/// overflows to the global queue; loom models use 4 to keep the state space small.
#[cfg(not(loom))]
pub(crate) const CAPACITY: usize = 256;
#[cfg(loom)]
pub(crate) const CAPACITY: usize = 4;
const MASK: usize = CAPACITY - 1;

/// CAS retries of owner pops and of steals (a claim that lost a race to another consumer and tried
/// again): counted on the failure path only, so an uncontended queue pays nothing. Process-wide,
/// for [`queue_contention`].
static POP_RETRIES: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
static STEAL_RETRIES: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// How often the worker queues' CAS claims were contended, process-wide since start.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct QueueContention {
    /// Pops (a worker taking from its own queue) that lost the head to a thief and retried.
    pub pop_retries: u64,
    /// Steals that lost the head to the owner or another thief and retried.
    pub steal_retries: u64,
}

/// CAS retries in the worker queues of every runtime in this process so far (benchmarks read the
/// difference across a run to see whether the per-class lanes are contended).
pub fn queue_contention() -> QueueContention {
    QueueContention {
        pop_retries: POP_RETRIES.load(std::sync::atomic::Ordering::Relaxed),
        steal_retries: STEAL_RETRIES.load(std::sync::atomic::Ordering::Relaxed),
    }
}

/// One worker's queue.
pub(crate) struct Local {
    head: AtomicUsize,
    tail: AtomicUsize,
    slots: Box<[AtomicPtr<Header>]>,
}

impl Local {
    pub(crate) fn new() -> Self {
        Local {
            head: AtomicUsize::new(0),
            tail: AtomicUsize::new(0),
            slots: (0..CAPACITY)
                .map(|_| AtomicPtr::new(std::ptr::null_mut()))
                .collect(),
        }
    }

    /// Approximate length (exact when called by the owner with no thief active).
    #[inline]
    pub(crate) fn len(&self) -> usize {
        let h = self.head.load(Ordering::Acquire);
        let t = self.tail.load(Ordering::Acquire);
        t.saturating_sub(h)
    }

    #[inline]
    pub(crate) fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Pushes at the tail (Q1). **Owner thread only.** Gives the task back when the ring is full.
    #[inline]
    pub(crate) fn push(&self, task: Notified) -> Result<(), Notified> {
        let t = self.tail.load(Ordering::Relaxed);
        let h = self.head.load(Ordering::Acquire);
        if t.wrapping_sub(h) >= CAPACITY {
            return Err(task);
        }
        self.slots[t & MASK].store(task.into_raw(), Ordering::Relaxed);
        self.tail.store(t + 1, Ordering::Release);
        Ok(())
    }

    /// Pops from the head (Q2); any thread.
    #[inline]
    pub(crate) fn pop(&self) -> Option<Notified> {
        let mut h = self.head.load(Ordering::Acquire);
        loop {
            let t = self.tail.load(Ordering::Acquire);
            if h >= t {
                return None;
            }
            let p = self.slots[h & MASK].load(Ordering::Acquire);
            match self
                .head
                .compare_exchange(h, h + 1, Ordering::AcqRel, Ordering::Acquire)
            {
                // SAFETY: the claim succeeded, so `p` is the pointer pushed for index `h` (Q2) and
                // its queue reference is now ours, converted back exactly once.
                Ok(_) => return Some(unsafe { Notified::from_raw(p) }),
                Err(actual) => {
                    POP_RETRIES.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    h = actual;
                }
            }
        }
    }

    /// Moves up to half of this queue into `dst` (the caller's own, empty queue) and returns one task
    /// to run now. `dst` must belong to the calling thread.
    pub(crate) fn steal_into(&self, dst: &Local) -> Option<Notified> {
        let mut buf = [std::ptr::null_mut::<Header>(); CAPACITY / 2];
        let mut h = self.head.load(Ordering::Acquire);
        let n = loop {
            let t = self.tail.load(Ordering::Acquire);
            if h >= t {
                return None;
            }
            let avail = t - h;
            let n = (avail - avail / 2).min(CAPACITY / 2);
            for (i, slot) in buf.iter_mut().enumerate().take(n) {
                *slot = self.slots[(h + i) & MASK].load(Ordering::Acquire);
            }
            match self
                .head
                .compare_exchange(h, h + n, Ordering::AcqRel, Ordering::Acquire)
            {
                Ok(_) => break n,
                Err(actual) => {
                    STEAL_RETRIES.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    h = actual;
                }
            }
        };
        // SAFETY: the claim of `n` slots succeeded (Q2): each pointer's queue reference is ours.
        let mut tasks = buf[..n].iter().map(|&p| unsafe { Notified::from_raw(p) });
        let first = tasks.next();
        for task in tasks {
            if let Err(task) = dst.push(task) {
                // `dst` holds at most CAPACITY / 2 here unless its owner broke the contract; keep
                // the task rather than lose it.
                task.schedule();
            }
        }
        first
    }

    /// Takes up to `n` tasks from the head (for overflow to the injector). **Owner thread only.**
    pub(crate) fn pop_n(&self, n: usize, out: &mut Vec<Notified>) {
        for _ in 0..n {
            match self.pop() {
                Some(t) => out.push(t),
                None => break,
            }
        }
    }
}

impl Drop for Local {
    fn drop(&mut self) {
        while let Some(t) = self.pop() {
            drop(t);
        }
    }
}

#[cfg(all(test, loom))]
mod loom_queue {
    use super::*;
    use crate::task::tests_support::{counting_task, Counter};
    use loom::sync::Arc;
    use loom::thread;

    /// Owner pushes and pops while a thief steals: every task is run exactly once.
    #[test]
    fn loom_push_pop_steal_runs_each_task_once() {
        loom::model(|| {
            let victim = Arc::new(Local::new());
            let counter = Counter::new();
            for _ in 0..3 {
                victim.push(counting_task(&counter)).ok().unwrap();
            }
            let thief = {
                let victim = victim.clone();
                let counter = counter.clone();
                thread::spawn(move || {
                    let mine = Local::new();
                    let mut n = 0;
                    if let Some(t) = victim.steal_into(&mine) {
                        counter.run(t);
                        n += 1;
                    }
                    while let Some(t) = mine.pop() {
                        counter.run(t);
                        n += 1;
                    }
                    n
                })
            };
            let mut n = 0;
            if victim.push(counting_task(&counter)).is_ok() {
                // pushed a fourth
            } else {
                unreachable!("capacity 4 holds 4");
            }
            while let Some(t) = victim.pop() {
                counter.run(t);
                n += 1;
            }
            n += thief.join().unwrap();
            assert_eq!(n, 4);
            assert_eq!(counter.runs(), 4);
        });
    }
}
