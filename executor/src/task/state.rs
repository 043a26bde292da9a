//! The task state word and its transitions; the protocol is written in [`super`]'s module docs and
//! every transition here cites the rule it implements.
#![forbid(unsafe_code)]

use crate::loom::{AtomicUsize, Ordering};

/// The future is being polled (or dropped) by the holder of the run permit.
pub(crate) const RUNNING: usize = 1 << 0;
/// The future is gone and the output slot is final.
pub(crate) const COMPLETE: usize = 1 << 1;
/// The task is in a run queue, or will be put back by the thread that holds `RUNNING`.
pub(crate) const NOTIFIED: usize = 1 << 2;
/// The task must be dropped instead of polled (abort, shutdown).
pub(crate) const CANCELLED: usize = 1 << 3;
/// A `JoinHandle` is alive.
pub(crate) const JOIN_INTEREST: usize = 1 << 4;
/// The join waker slot holds a waker the `JoinHandle` may not touch.
pub(crate) const JOIN_WAKER: usize = 1 << 5;
/// One reference; the count lives above the flag bits.
pub(crate) const REF_ONE: usize = 1 << 6;
const FLAGS: usize = REF_ONE - 1;

/// A loaded value of the state word.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) struct Snapshot(pub(crate) usize);

impl Snapshot {
    #[inline]
    pub(crate) fn has(self, bits: usize) -> bool {
        self.0 & bits != 0
    }
    #[inline]
    pub(crate) fn refs(self) -> usize {
        self.0 / REF_ONE
    }
}

impl std::fmt::Debug for Snapshot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "Snapshot(refs={} flags={:#08b})",
            self.refs(),
            self.0 & FLAGS
        )
    }
}

/// Outcome of taking the run permit.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum ToRunning {
    /// `RUNNING` is ours; poll.
    Run,
    /// `RUNNING` is ours but `CANCELLED` is set; drop the future instead of polling.
    Cancel,
    /// The task completed (shutdown cancelled it while queued); just drop the queue's reference.
    Skip,
}

/// Outcome of giving the run permit back after a `Pending` poll.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum ToIdle {
    /// Idle; the queue's reference was dropped. `true`: it was the last one.
    Idle(bool),
    /// Woken while running: the caller keeps the queue's reference and requeues.
    Requeue,
    /// Cancelled while running: the caller still holds `RUNNING` and must cancel now.
    Cancel,
}

/// Outcome of a wake that consumes the waker's reference.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum WakeByVal {
    /// Nothing to schedule; the reference was dropped. `true`: it was the last one.
    Done(bool),
    /// The waker's reference now belongs to the queue: submit it.
    Submit,
}

/// The atomic state word of one task.
pub(crate) struct State(AtomicUsize);

impl State {
    /// A new task: queued (rule S1), with a `JoinHandle`, and `refs` references.
    pub(crate) fn new(refs: usize) -> Self {
        State(AtomicUsize::new(
            NOTIFIED | JOIN_INTEREST | (refs * REF_ONE),
        ))
    }

    #[inline]
    pub(crate) fn load(&self) -> Snapshot {
        Snapshot(self.0.load(Ordering::Acquire))
    }

    /// CAS loop: `f` returns the new value (or `None` to leave it) and a result.
    #[inline]
    fn update<R>(&self, mut f: impl FnMut(Snapshot) -> (Option<usize>, R)) -> (Snapshot, R) {
        let mut cur = self.0.load(Ordering::Acquire);
        loop {
            let (next, r) = f(Snapshot(cur));
            let Some(next) = next else {
                return (Snapshot(cur), r);
            };
            match self
                .0
                .compare_exchange_weak(cur, next, Ordering::AcqRel, Ordering::Acquire)
            {
                Ok(_) => return (Snapshot(cur), r),
                Err(actual) => cur = actual,
            }
        }
    }

    /// Rule R1: the queue's reference is spent to take `RUNNING`.
    pub(crate) fn to_running(&self) -> ToRunning {
        self.update(|s| {
            debug_assert!(s.has(NOTIFIED) || s.has(COMPLETE), "{s:?}");
            if s.has(COMPLETE | RUNNING) {
                return (None, ToRunning::Skip);
            }
            let next = (s.0 & !NOTIFIED) | RUNNING;
            let r = if s.has(CANCELLED) {
                ToRunning::Cancel
            } else {
                ToRunning::Run
            };
            (Some(next), r)
        })
        .1
    }

    /// Rule R2: after `Pending`, give `RUNNING` back.
    pub(crate) fn to_idle(&self) -> ToIdle {
        self.update(|s| {
            debug_assert!(s.has(RUNNING), "{s:?}");
            if s.has(CANCELLED) {
                (None, ToIdle::Cancel)
            } else if s.has(NOTIFIED) {
                (Some(s.0 & !RUNNING), ToIdle::Requeue)
            } else {
                debug_assert!(s.refs() >= 1);
                (
                    Some((s.0 & !RUNNING) - REF_ONE),
                    ToIdle::Idle(s.refs() == 1),
                )
            }
        })
        .1
    }

    /// Rule R3: the output is stored; publish completion. Returns the previous state, whose
    /// `JOIN_INTEREST` / `JOIN_WAKER` tell the caller who drops the output and whom to wake.
    pub(crate) fn to_complete(&self) -> Snapshot {
        let prev = Snapshot(self.0.fetch_xor(RUNNING | COMPLETE, Ordering::AcqRel));
        debug_assert!(prev.has(RUNNING) && !prev.has(COMPLETE), "{prev:?}");
        prev
    }

    /// Rule W1: a wake that keeps the waker's reference.
    pub(crate) fn wake_by_ref(&self) -> bool {
        self.update(|s| {
            if s.has(COMPLETE | NOTIFIED) {
                (None, false)
            } else if s.has(RUNNING) {
                (Some(s.0 | NOTIFIED), false)
            } else {
                (Some((s.0 | NOTIFIED) + REF_ONE), true)
            }
        })
        .1
    }

    /// Rule W2: a wake that consumes the waker's reference.
    pub(crate) fn wake_by_val(&self) -> WakeByVal {
        self.update(|s| {
            if s.has(COMPLETE | NOTIFIED) {
                debug_assert!(s.refs() >= 1);
                (Some(s.0 - REF_ONE), WakeByVal::Done(s.refs() == 1))
            } else if s.has(RUNNING) {
                debug_assert!(s.refs() >= 2, "the runner holds a reference too");
                (Some((s.0 | NOTIFIED) - REF_ONE), WakeByVal::Done(false))
            } else {
                (Some(s.0 | NOTIFIED), WakeByVal::Submit)
            }
        })
        .1
    }

    /// Rule A1: abort. Returns whether the caller must submit a new queue reference (it was added).
    pub(crate) fn cancel(&self) -> bool {
        self.update(|s| {
            if s.has(COMPLETE | CANCELLED) {
                (None, false)
            } else if s.has(RUNNING) {
                (Some(s.0 | CANCELLED | NOTIFIED), false)
            } else if s.has(NOTIFIED) {
                (Some(s.0 | CANCELLED), false)
            } else {
                (Some((s.0 | CANCELLED | NOTIFIED) + REF_ONE), true)
            }
        })
        .1
    }

    /// Rule A2: shutdown takes `RUNNING` of an idle or queued task so it can drop the future.
    pub(crate) fn to_shutdown(&self) -> bool {
        self.update(|s| {
            if s.has(COMPLETE | RUNNING) {
                (Some(s.0 | CANCELLED), false)
            } else {
                (Some(s.0 | CANCELLED | RUNNING), true)
            }
        })
        .1
    }

    /// Rule J1: the `JoinHandle` goes away. Returns the previous state: if `COMPLETE` was set the
    /// handle drops the output, otherwise the runner will.
    pub(crate) fn drop_join_interest(&self) -> Snapshot {
        Snapshot(self.0.fetch_and(!JOIN_INTEREST, Ordering::AcqRel))
    }

    /// Rule J2: publish the waker just written. Fails (with the state) if the task completed.
    pub(crate) fn set_join_waker(&self) -> Result<(), Snapshot> {
        let (prev, ok) = self.update(|s| {
            debug_assert!(s.has(JOIN_INTEREST) && !s.has(JOIN_WAKER));
            if s.has(COMPLETE) {
                (None, false)
            } else {
                (Some(s.0 | JOIN_WAKER), true)
            }
        });
        if ok {
            Ok(())
        } else {
            Err(prev)
        }
    }

    /// Rule J3: take the waker slot back to replace it. Fails if the task completed.
    pub(crate) fn unset_join_waker(&self) -> Result<(), Snapshot> {
        let (prev, ok) = self.update(|s| {
            debug_assert!(s.has(JOIN_INTEREST) && s.has(JOIN_WAKER));
            if s.has(COMPLETE) {
                (None, false)
            } else {
                (Some(s.0 & !JOIN_WAKER), true)
            }
        });
        if ok {
            Ok(())
        } else {
            Err(prev)
        }
    }

    #[inline]
    pub(crate) fn ref_inc(&self) {
        let prev = self.0.fetch_add(REF_ONE, Ordering::Relaxed);
        // A reference count this large means references leak in a loop; aborting beats wrapping
        // (the same guard as `Arc`).
        if prev > isize::MAX as usize {
            std::process::abort();
        }
    }

    /// Drops one reference; `true` if it was the last.
    #[inline]
    pub(crate) fn ref_dec(&self) -> bool {
        let prev = Snapshot(self.0.fetch_sub(REF_ONE, Ordering::AcqRel));
        debug_assert!(prev.refs() >= 1, "{prev:?}");
        prev.refs() == 1
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;

    #[test]
    fn a_spawned_task_runs_goes_idle_and_is_woken_once() {
        let s = State::new(3);
        assert_eq!(s.to_running(), ToRunning::Run);
        assert_eq!(s.to_idle(), ToIdle::Idle(false));
        assert_eq!(s.load().refs(), 2);
        assert!(s.wake_by_ref(), "idle task is submitted");
        assert!(!s.wake_by_ref(), "second wake is absorbed");
        assert_eq!(s.load().refs(), 3);
        assert_eq!(s.to_running(), ToRunning::Run);
        assert!(!s.wake_by_ref(), "wake while running only marks");
        assert_eq!(s.to_idle(), ToIdle::Requeue);
        assert_eq!(s.to_running(), ToRunning::Run);
        let prev = s.to_complete();
        assert!(prev.has(JOIN_INTEREST) && !prev.has(JOIN_WAKER));
        assert_eq!(s.wake_by_val(), WakeByVal::Done(false));
        assert!(s.load().has(COMPLETE));
    }

    #[test]
    fn abort_of_an_idle_task_queues_it_cancelled() {
        let s = State::new(3);
        assert_eq!(s.to_running(), ToRunning::Run);
        assert_eq!(s.to_idle(), ToIdle::Idle(false));
        assert!(s.cancel());
        assert!(!s.cancel(), "abort is idempotent");
        assert_eq!(s.to_running(), ToRunning::Cancel);
    }

    #[test]
    fn abort_while_running_cancels_at_the_idle_transition() {
        let s = State::new(3);
        assert_eq!(s.to_running(), ToRunning::Run);
        assert!(!s.cancel());
        assert_eq!(s.to_idle(), ToIdle::Cancel);
        assert!(s.load().has(RUNNING));
    }

    #[test]
    fn join_waker_cannot_be_set_after_completion() {
        let s = State::new(3);
        assert_eq!(s.to_running(), ToRunning::Run);
        s.set_join_waker().unwrap();
        s.unset_join_waker().unwrap();
        s.to_complete();
        assert!(s.set_join_waker().is_err());
        assert!(s.drop_join_interest().has(COMPLETE));
    }

    #[test]
    fn shutdown_skips_a_completed_task_and_takes_an_idle_one() {
        let s = State::new(3);
        assert!(s.to_shutdown(), "queued task is taken");
        assert_eq!(s.to_complete().refs(), 3);
        assert_eq!(s.to_running(), ToRunning::Skip);
        assert!(!s.to_shutdown());
        assert!(!s.ref_dec() && !s.ref_dec() && s.ref_dec());
    }
}
