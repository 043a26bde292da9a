//! A worker's run queues, one per class ("lanes").
//!
//! Each lane is a bounded work-stealing ring (`queue.rs`), FIFO within its class; lanes are created on
//! first use, so a worker that only ever sees `default` work has one lane and the single-class fast
//! path of `worker.rs`. Other threads steal from a lane into the same class's lane of their own
//! worker, so a class never changes lane by being stolen.
#![forbid(unsafe_code)]

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::OnceLock;

use pagegen_core::ClassId;

use crate::queue::Local;
use crate::task::raw::Notified;

/// One worker's lanes, indexed by class index.
pub(crate) struct Lanes {
    lanes: Box<[OnceLock<Box<Local>>]>,
    /// Highest lane index created.
    hi: AtomicUsize,
}

impl Lanes {
    pub(crate) fn new() -> Self {
        let lanes: Box<[OnceLock<Box<Local>>]> =
            (0..ClassId::MAX_CLASSES).map(|_| OnceLock::new()).collect();
        let _ = lanes[0].set(Box::new(Local::new()));
        Lanes {
            lanes,
            hi: AtomicUsize::new(0),
        }
    }

    /// The `default` class's lane.
    #[inline]
    pub(crate) fn first(&self) -> &Local {
        self.lanes[0]
            .get()
            .expect("lane 0 is created with the worker")
    }

    /// Lane `i`, if created.
    #[inline]
    pub(crate) fn get(&self, i: usize) -> Option<&Local> {
        self.lanes.get(i)?.get().map(|b| &**b)
    }

    /// Lane `i`, created if needed. **Owner thread only** (like `Local::push`).
    #[inline]
    pub(crate) fn get_or_create(&self, i: usize) -> &Local {
        self.lanes[i].get_or_init(|| {
            self.hi.fetch_max(i, Ordering::Release);
            Box::new(Local::new())
        })
    }

    /// Highest lane index created (lanes above it do not exist).
    #[inline]
    pub(crate) fn hi(&self) -> usize {
        self.hi.load(Ordering::Acquire)
    }

    /// Whether every lane is empty.
    pub(crate) fn is_empty(&self) -> bool {
        (0..=self.hi()).all(|i| self.get(i).is_none_or(Local::is_empty))
    }

    /// Tasks queued in all lanes.
    #[inline]
    pub(crate) fn total_len(&self) -> usize {
        (0..=self.hi()).map(|i| self.len(i)).sum()
    }

    /// Tasks queued in lane `i`.
    pub(crate) fn len(&self, i: usize) -> usize {
        self.get(i).map_or(0, Local::len)
    }

    /// Pops from any lane (shutdown drain).
    pub(crate) fn pop_any(&self) -> Option<Notified> {
        (0..=self.hi()).find_map(|i| self.get(i).and_then(Local::pop))
    }

    /// The non-empty lane whose key is smallest (ties to the lower index), with its key.
    #[inline]
    pub(crate) fn min_by(&self, key: impl Fn(usize) -> u64) -> Option<(usize, u64)> {
        let mut best: Option<(usize, u64)> = None;
        for i in 0..=self.hi() {
            if self.get(i).is_some_and(|l| !l.is_empty()) {
                let k = key(i);
                if best.is_none_or(|(_, b)| k < b) {
                    best = Some((i, k));
                }
            }
        }
        best
    }
}
