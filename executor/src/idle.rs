//! Which workers sleep and which search for work; the rule that no wake is lost.
//!
//! Protocol (the shape of tokio's `multi_thread/idle.rs`, written afresh):
//! - **I1 publish then look.** A producer makes work visible (queue push), then `fence(SeqCst)`, then
//!   reads `searching` and `sleeping`. A worker going to sleep registers in the sleeper list (which
//!   updates `sleeping`), then `fence(SeqCst)`, then looks at every queue once more. By the fence
//!   pair, either the producer sees the sleeper or the sleeper sees the work.
//! - **I2 one searcher is enough.** If some worker is searching, producers wake nobody: the searcher
//!   either finds the work or, on giving up (I1's re-check), sees it. A searcher that finds work and
//!   was the last searcher wakes one more worker, so a burst spreads one worker at a time.
//! - **I3 a woken worker searches.** Waking removes the worker from the list and counts it as
//!   searching on its behalf; a worker that wakes up and is still listed woke spuriously (timeout,
//!   I/O) and removes itself, not searching.
//! - At most half the workers search at once (tokio's bound against thundering herds).
#![forbid(unsafe_code)]

use crate::loom::{fence, lock, AtomicUsize, Mutex, Ordering};

pub(crate) struct Idle {
    searching: AtomicUsize,
    sleeping: AtomicUsize,
    sleepers: Mutex<Vec<usize>>,
    workers: usize,
}

impl Idle {
    pub(crate) fn new(workers: usize) -> Self {
        Idle {
            searching: AtomicUsize::new(0),
            sleeping: AtomicUsize::new(0),
            sleepers: Mutex::new(Vec::with_capacity(workers)),
            workers,
        }
    }

    /// I1/I2, producer side: which sleeping worker to wake for new work, if any. The caller unparks it.
    #[inline]
    pub(crate) fn worker_to_notify(&self) -> Option<usize> {
        fence(Ordering::SeqCst);
        if self.searching.load(Ordering::SeqCst) != 0 || self.sleeping.load(Ordering::SeqCst) == 0 {
            return None;
        }
        let mut list = lock(&self.sleepers);
        if self.searching.load(Ordering::SeqCst) != 0 {
            return None;
        }
        let w = list.pop()?;
        self.sleeping.fetch_sub(1, Ordering::SeqCst);
        self.searching.fetch_add(1, Ordering::SeqCst);
        Some(w)
    }

    /// I2: may this worker start searching (steal)?
    #[inline]
    pub(crate) fn try_start_searching(&self) -> bool {
        let n = self.searching.load(Ordering::SeqCst);
        if 2 * n >= self.workers.max(2) {
            return false;
        }
        self.searching.fetch_add(1, Ordering::SeqCst);
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

    /// I1's fence on the sleeper side.
    #[inline]
    pub(crate) fn fence_after_register(&self) {
        fence(Ordering::SeqCst);
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
                    if idle.worker_to_notify() == Some(0) {
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
