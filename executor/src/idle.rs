//! Which workers sleep and which search for work; the rule that no wake is lost.
//!
//! Protocol (the shape of tokio's `multi_thread/idle.rs`, written afresh):
//! - **I1 publish then look.** A producer makes work visible (queue push), then `fence(SeqCst)`, then
//!   reads `searching` and `sleeping`. A worker going to sleep registers in the sleeper list (which
//!   updates `sleeping`), then `fence(SeqCst)`, then looks at every queue once more. By the fence
//!   pair, either the producer sees the sleeper or the sleeper sees the work.
//! - **I2 one searcher is enough.** If some worker is searching, producers wake nobody: the searcher
//!   either finds the work or, on giving up (I1's re-check), sees it. A searcher that finds work and
//!   was the last searcher wakes one more worker if more work is queued in its pool (decrement,
//!   fence, look: a producer pushing meanwhile sees no searcher and wakes one itself), so a burst
//!   spreads one worker at a time and a lone task wakes nobody else.
//! - **I2' a searcher's search outlives its give-up until it finds nothing.** A searcher that gives
//!   up registers as a sleeper (no longer searching), fences and re-checks the queues (I1). If the
//!   re-check finds work, it goes back to work *as a searcher again*, so that on finding a task the
//!   pass-on rule of I2 applies. Producers that skipped their wake because it was searching relied
//!   on exactly that: without it, two tasks pushed while one worker searched were both left to
//!   it — it took one and nobody took the other while it ran (the lost wake of the resize test,
//!   traced: spawn, spawn, "searcher fresh" twice, give up, re-check finds work, no pass-on).
//! - **I3 a woken worker searches.** Waking removes the worker from the list and counts it as
//!   searching on its behalf; a worker that wakes up and is still listed woke spuriously (timeout,
//!   I/O) and removes itself, not searching.
//! - **I4 a stalled searcher does not silence producers.** I2 trusts the searcher to be running. A
//!   woken worker that the kernel leaves queued behind another thread (a bulk worker protected by its
//!   slice, a kernel thread) is counted as searching while it cannot search, and under I2 alone every
//!   later wake is skipped until it gets a CPU — milliseconds of delay for work queued meanwhile
//!   (seen with `perf sched timehist` in the isolation bench: a latency worker 8.5 ms behind a
//!   kernel thread, light tasks waiting in the injector, the other latency worker asleep). So a
//!   producer that finds a searcher but no new searcher for [`STALL_NS`] wakes a sleeper anyway.
//!   Searches take microseconds; a searcher older than that is almost surely not on a CPU.
//! - At most half the workers search at once (tokio's bound against thundering herds), I4 aside.
#![forbid(unsafe_code)]

use crate::loom::{fence, lock, AtomicU64, AtomicUsize, Mutex, Ordering};

/// I4: how long the latest searcher may go without finding work before a producer wakes another
/// worker — the light class's service time, the latency pagegen aims for.
pub(crate) const STALL_NS: u64 = 50_000;

/// The clock I4 reads, in ns: the poll clock; a constant under loom, whose models must not branch
/// on real time (so I4 never fires there and the models check I1–I3 as before).
#[inline]
pub(crate) fn clock_ns() -> u64 {
    #[cfg(not(loom))]
    {
        crate::clock::to_ns(crate::clock::now())
    }
    #[cfg(loom)]
    {
        0
    }
}

pub(crate) struct Idle {
    searching: AtomicUsize,
    /// Poll-clock time (ns) of the latest start of a search (I4).
    searching_since: AtomicU64,
    sleeping: AtomicUsize,
    sleepers: Mutex<Vec<usize>>,
    workers: usize,
}

impl Idle {
    pub(crate) fn new(workers: usize) -> Self {
        Idle {
            searching: AtomicUsize::new(0),
            searching_since: AtomicU64::new(0),
            sleeping: AtomicUsize::new(0),
            sleepers: Mutex::new(Vec::with_capacity(workers)),
            workers,
        }
    }

    /// I1/I2/I4, producer side: which sleeping worker to wake for new work, if any. The caller
    /// unparks it. `now` reads the clock in ns (only when a searcher exists and a worker sleeps).
    #[inline]
    pub(crate) fn worker_to_notify(&self, now: impl Fn() -> u64) -> Option<usize> {
        fence(Ordering::SeqCst);
        if self.sleeping.load(Ordering::SeqCst) == 0 || self.searcher_is_fresh(&now) {
            return None;
        }
        let mut list = lock(&self.sleepers);
        if self.searcher_is_fresh(&now) {
            return None;
        }
        let w = list.pop()?;
        self.sleeping.fetch_sub(1, Ordering::SeqCst);
        self.start_search(now());
        Some(w)
    }

    /// I2 with I4: a searcher exists and the latest one started less than [`STALL_NS`] ago.
    #[inline]
    fn searcher_is_fresh(&self, now: &impl Fn() -> u64) -> bool {
        self.searching.load(Ordering::SeqCst) != 0
            && now().saturating_sub(self.searching_since.load(Ordering::Relaxed)) < STALL_NS
    }

    #[inline]
    fn start_search(&self, now: u64) {
        self.searching_since.fetch_max(now, Ordering::Relaxed);
        self.searching.fetch_add(1, Ordering::SeqCst);
    }

    /// I2: may this worker start searching (steal)?
    #[inline]
    pub(crate) fn try_start_searching(&self, now: impl Fn() -> u64) -> bool {
        let n = self.searching.load(Ordering::SeqCst);
        if 2 * n >= self.workers.max(2) {
            return false;
        }
        self.start_search(now());
        true
    }

    /// I2: a searcher found work. `true` if it was the last searcher (it should wake another).
    #[inline]
    pub(crate) fn stop_searching(&self) -> bool {
        self.searching.fetch_sub(1, Ordering::SeqCst) == 1
    }

    /// I1, sleeper side: register as sleeping (ending a search). The caller then fences and re-checks
    /// the queues via [`fence`](Self::fence_after_register).
    pub(crate) fn register_sleeper(&self, worker: usize, was_searching: bool) {
        let mut list = lock(&self.sleepers);
        if was_searching {
            self.searching.fetch_sub(1, Ordering::SeqCst);
        }
        list.push(worker);
        self.sleeping.fetch_add(1, Ordering::SeqCst);
    }

    /// I1's fence on the worker side: after registering as a sleeper, or after the last searcher
    /// stops, before looking at the queues.
    #[inline]
    pub(crate) fn fence_after_register(&self) {
        fence(Ordering::SeqCst);
    }

    /// I1 and I2', sleeper side, as one step: register `worker` as sleeping (ending its search if
    /// `was_searching`), fence, and re-check with `has_work`. `None`: nothing is queued, park (then
    /// [`unregister_sleeper`](Self::unregister_sleeper) on waking). `Some(searching)`: work is
    /// queued, go back to it, searching if it was searching or was notified meanwhile (I2', I3).
    pub(crate) fn prepare_park(
        &self,
        worker: usize,
        was_searching: bool,
        has_work: impl FnOnce() -> bool,
    ) -> Option<bool> {
        self.register_sleeper(worker, was_searching);
        self.fence_after_register();
        if !has_work() {
            return None;
        }
        // Notified meanwhile: already counted as searching on this worker's behalf (I3).
        let notified = self.unregister_sleeper(worker);
        if was_searching && !notified {
            // I2': resume the search given up above (past the half bound if need be: it is this
            // worker's own search, taken back, not a new one).
            self.start_search(clock_ns());
        }
        Some(was_searching || notified)
    }

    /// I3: after a wake-up (or when the re-check found work). Returns `true` if the worker was
    /// notified (and is therefore searching), `false` if it removed itself from the list.
    pub(crate) fn unregister_sleeper(&self, worker: usize) -> bool {
        let mut list = lock(&self.sleepers);
        match list.iter().position(|&w| w == worker) {
            Some(i) => {
                list.swap_remove(i);
                self.sleeping.fetch_sub(1, Ordering::SeqCst);
                false
            }
            None => true,
        }
    }
}

#[cfg(all(test, loom))]
mod loom_idle {
    use super::*;
    use crate::loom::AtomicBool;
    use crate::park::Parker;
    use loom::sync::Arc;
    use loom::thread;

    /// I1: a producer publishing work while the only worker goes to sleep never leaves it asleep
    /// with work queued (loom reports a deadlock if the worker parks forever).
    #[test]
    fn loom_push_racing_with_sleep_is_never_lost() {
        loom::model(|| {
            let idle = Arc::new(Idle::new(1));
            let parker = Arc::new(Parker::new());
            let work = Arc::new(AtomicBool::new(false));
            let producer = {
                let (idle, parker, work) = (idle.clone(), parker.clone(), work.clone());
                thread::spawn(move || {
                    work.store(true, Ordering::SeqCst);
                    if idle.worker_to_notify(|| 0) == Some(0) {
                        parker.unpark();
                    }
                })
            };
            // The worker: look, register, fence, look again, park.
            if !work.load(Ordering::SeqCst) {
                idle.register_sleeper(0, false);
                idle.fence_after_register();
                if !work.load(Ordering::SeqCst) {
                    parker.park(None);
                }
                idle.unregister_sleeper(0);
            }
            assert!(work.load(Ordering::SeqCst));
            producer.join().unwrap();
        });
    }
}

#[cfg(all(test, loom))]
mod loom_pass_on {
    use super::*;
    use crate::park::Parker;
    use loom::sync::atomic::AtomicUsize as Count;
    use loom::sync::Arc;
    use loom::thread;

    /// Takes one unit of queued work, if any.
    fn take(work: &Count) -> bool {
        work.fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
            .is_ok()
    }

    /// I2': two tasks pushed while worker 0 searches (so the producer wakes nobody), worker 1
    /// asleep. Worker 0 gives up, its re-check finds the work, it takes one task and then runs it
    /// forever (it never looks at the queues again). The other task must reach worker 1: loom
    /// reports a deadlock if worker 1 parks for good with a task queued. Before I2', a worker
    /// whose re-check found work went back to it as a non-searcher and never passed the search
    /// on (the resize test's lost wake).
    #[test]
    fn loom_a_searcher_whose_recheck_finds_work_passes_the_search_on() {
        loom::model(|| {
            let idle = Arc::new(Idle::new(2));
            let parkers = Arc::new([Parker::new(), Parker::new()]);
            let work = Arc::new(Count::new(0));
            // Worker 1 sleeps; worker 0 searches.
            idle.register_sleeper(1, false);
            assert!(idle.try_start_searching(|| 0));
            let producer = {
                let (idle, parkers, work) = (idle.clone(), parkers.clone(), work.clone());
                thread::spawn(move || {
                    for _ in 0..2 {
                        work.fetch_add(1, Ordering::SeqCst);
                        if let Some(w) = idle.worker_to_notify(|| 0) {
                            parkers[w].unpark();
                        }
                    }
                })
            };
            let worker0 = {
                let (idle, parkers, work) = (idle.clone(), parkers.clone(), work.clone());
                thread::spawn(move || {
                    let mut searching = true;
                    loop {
                        if take(&work) {
                            if searching && idle.stop_searching() {
                                idle.fence_after_register();
                                if work.load(Ordering::SeqCst) > 0 {
                                    if let Some(w) = idle.worker_to_notify(|| 0) {
                                        parkers[w].unpark();
                                    }
                                }
                            }
                            return; // runs its task forever
                        }
                        match idle.prepare_park(0, searching, || work.load(Ordering::SeqCst) > 0) {
                            Some(s) => searching = s,
                            None => {
                                parkers[0].park(None);
                                searching = idle.unregister_sleeper(0);
                            }
                        }
                    }
                })
            };
            // Worker 1: asleep from the start; woken, it takes the other task.
            parkers[1].park(None);
            let mut searching = idle.unregister_sleeper(1);
            loop {
                if take(&work) {
                    if searching {
                        idle.stop_searching();
                    }
                    break;
                }
                match idle.prepare_park(1, searching, || work.load(Ordering::SeqCst) > 0) {
                    Some(s) => searching = s,
                    None => {
                        parkers[1].park(None);
                        searching = idle.unregister_sleeper(1);
                    }
                }
            }
            producer.join().unwrap();
            worker0.join().unwrap();
            assert_eq!(work.load(Ordering::SeqCst), 0);
        });
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;

    const T0: u64 = 1_000_000_000;

    /// I2 then I4 on a fake clock: a fresh searcher silences producers, a stalled one does not,
    /// and a new search (a worker that is demonstrably running) makes the searchers fresh again.
    #[test]
    fn a_stalled_searcher_does_not_silence_producers() {
        let idle = Idle::new(3);
        for w in 0..3 {
            idle.register_sleeper(w, false);
        }
        // The first wake: worker 2 (the last to sleep) is woken and counted as searching.
        assert_eq!(idle.worker_to_notify(|| T0), Some(2));
        // I2: while it is fresh, nobody else is woken.
        assert_eq!(idle.worker_to_notify(|| T0 + STALL_NS - 1), None);
        // I4: it has not found work within STALL_NS: the next producer wakes another sleeper.
        assert_eq!(idle.worker_to_notify(|| T0 + STALL_NS), Some(1));
        // That wake restarted the stall clock.
        assert_eq!(idle.worker_to_notify(|| T0 + STALL_NS + 1), None);
        // One of the two finds work; later a running worker starts a search of its own (allowed:
        // one searcher of three), which makes the searchers fresh again.
        assert!(!idle.stop_searching());
        let t1 = T0 + 3 * STALL_NS;
        assert_eq!(idle.worker_to_notify(|| t1), Some(0), "stale before");
        assert!(!idle.stop_searching());
        assert!(idle.try_start_searching(|| t1 + 1));
        idle.register_sleeper(0, false);
        assert_eq!(idle.worker_to_notify(|| t1 + 2), None);
        // Once every searcher has stopped, I2 no longer applies at all (whatever the clock says).
        while idle.searching.load(Ordering::SeqCst) > 0 {
            idle.stop_searching();
        }
        assert_eq!(idle.worker_to_notify(|| t1 + 2), Some(0));
        // No sleeper left: nobody to wake, stall or not.
        assert_eq!(idle.worker_to_notify(|| t1 + 10 * STALL_NS), None);
    }

    /// A worker that wakes up and finds itself unlisted was notified (I3), even one woken by I4.
    #[test]
    fn a_worker_woken_by_the_stall_rule_is_searching() {
        let idle = Idle::new(2);
        idle.register_sleeper(0, false);
        idle.register_sleeper(1, false);
        assert_eq!(idle.worker_to_notify(|| T0), Some(1));
        assert_eq!(idle.worker_to_notify(|| T0 + STALL_NS), Some(0));
        assert!(idle.unregister_sleeper(0));
        assert!(idle.unregister_sleeper(1));
        assert_eq!(idle.searching.load(Ordering::SeqCst), 2);
        assert_eq!(idle.sleeping.load(Ordering::SeqCst), 0);
    }
}
