//! Parking an idle worker without losing wakes.
//!
//! [`Parker`] is the fallback when no [`Driver`](pagegen_core::Driver) is configured: a token
//! (`NOTIFIED`) that [`Parker::unpark`] sets and [`Parker::park`] consumes, so an unpark that comes
//! before the park makes it return at once — the contract `core::driver` asks of every driver. The
//! three-state word keeps the mutex off the fast path (the scheme of `std::thread::park`).
#![forbid(unsafe_code)]

use std::sync::Arc;
use std::time::Duration;

use pagegen_core::{Driver, Unpark};

use crate::loom::{lock, AtomicUsize, Condvar, Mutex, Ordering};

const EMPTY: usize = 0;
const PARKED: usize = 1;
const NOTIFIED: usize = 2;

/// A token-based thread parker.
pub(crate) struct Parker {
    state: AtomicUsize,
    lock: Mutex<()>,
    cv: Condvar,
}

impl std::fmt::Debug for Parker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Parker").finish_non_exhaustive()
    }
}

impl Parker {
    pub(crate) fn new() -> Self {
        Parker {
            state: AtomicUsize::new(EMPTY),
            lock: Mutex::new(()),
            cv: Condvar::new(),
        }
    }

    /// Blocks until unparked (consuming the token) or `timeout` passes.
    pub(crate) fn park(&self, timeout: Option<Duration>) {
        if self
            .state
            .compare_exchange(NOTIFIED, EMPTY, Ordering::AcqRel, Ordering::Acquire)
            .is_ok()
        {
            return;
        }
        let mut g = lock(&self.lock);
        match self
            .state
            .compare_exchange(EMPTY, PARKED, Ordering::AcqRel, Ordering::Acquire)
        {
            Ok(_) => {}
            Err(NOTIFIED) => {
                self.state.store(EMPTY, Ordering::Release);
                return;
            }
            Err(s) => unreachable!("parker in state {s} while its owner parks"),
        }
        loop {
            g = match timeout {
                None => self.cv.wait(g).unwrap_or_else(|e| e.into_inner()),
                #[cfg(not(loom))]
                Some(d) => {
                    let (g, res) = self
                        .cv
                        .wait_timeout(g, d)
                        .unwrap_or_else(|e| e.into_inner());
                    if res.timed_out() {
                        // Leave PARKED; whatever the state is now, consume a token if one came.
                        self.state.swap(EMPTY, Ordering::AcqRel);
                        return;
                    }
                    g
                }
                #[cfg(loom)]
                Some(_) => self.cv.wait(g).unwrap(),
            };
            if self
                .state
                .compare_exchange(NOTIFIED, EMPTY, Ordering::AcqRel, Ordering::Acquire)
                .is_ok()
            {
                drop(g);
                return;
            }
            // Spurious wake-up: still PARKED, wait again.
        }
    }

    /// Sets the token and wakes the parked thread, if any.
    pub(crate) fn unpark(&self) {
        match self.state.swap(NOTIFIED, Ordering::AcqRel) {
            EMPTY | NOTIFIED => {}
            PARKED => {
                // Taking the lock orders this notify after the parker's wait began (it holds the
                // lock from its PARKED CAS until it waits).
                drop(lock(&self.lock));
                self.cv.notify_one();
            }
            s => unreachable!("parker in invalid state {s}"),
        }
    }
}

impl Unpark for Parker {
    fn unpark(&self) {
        Parker::unpark(self);
    }
}

/// How one worker sleeps: through its I/O driver, or on its own parker.
pub(crate) enum Park {
    Driver(Box<dyn Driver>),
    Own(Arc<Parker>),
}

impl Park {
    pub(crate) fn unparker(&self) -> Arc<dyn Unpark> {
        match self {
            Park::Driver(d) => d.unparker(),
            Park::Own(p) => p.clone(),
        }
    }
    /// Reaps ready I/O without blocking; returns how many tasks were woken.
    #[inline]
    pub(crate) fn poll_nonblocking(&mut self) -> usize {
        match self {
            Park::Driver(d) => d.poll_nonblocking(),
            Park::Own(_) => 0,
        }
    }
    pub(crate) fn park(&mut self, timeout: Option<Duration>) {
        match self {
            Park::Driver(d) => d.park(timeout),
            Park::Own(p) => p.park(timeout),
        }
    }
}

#[cfg(all(test, loom))]
mod loom_park {
    use super::*;
    use loom::sync::Arc;
    use loom::thread;

    /// An unpark racing with a park is never lost.
    #[test]
    fn loom_unpark_before_or_during_park_is_not_lost() {
        loom::model(|| {
            let p = Arc::new(Parker::new());
            let p2 = p.clone();
            let t = thread::spawn(move || p2.unpark());
            p.park(None);
            t.join().unwrap();
        });
    }
}
