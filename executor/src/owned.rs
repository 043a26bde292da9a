//! The runtime's list of live tasks, so shutdown can drop the ones nobody will wake again.
//!
//! Sharded by task id (one mutex per shard, touched once at spawn and once at completion, never per
//! poll); each entry owns the task's list reference (rule S1). A task's slot index lives in its
//! header and is read and written only under its shard's lock.
#![forbid(unsafe_code)]

use crate::loom::{lock, Mutex};
use crate::pool::Padded;
use crate::task::raw::{Header, OwnedRef};
use std::sync::atomic::{AtomicBool, Ordering as StdOrdering};
use std::sync::{Condvar as StdCondvar, Mutex as StdMutex};

/// Shards. 64 makes two workers meet on the same lock in ~1/64 of spawns; plucked from thin air
/// within the range tokio uses (its count scales with cores, 4× rounded up to a power of two).
const SHARDS: usize = 64;

/// Each shard on cache lines of its own ([`Padded`]), so the spawning thread inserting into shard
/// `k` does not bounce the line of the worker removing from shard `k - 1` (consecutive ids are in
/// consecutive shards).
type PaddedShard = Padded<Mutex<Shard>>;

pub(crate) struct OwnedTasks {
    shards: Box<[PaddedShard]>,
    /// Set while `shutdown_timeout` waits for the list to empty: completions then signal `drained`.
    draining: AtomicBool,
    // Cold-path signalling only (shutdown): plain std types, outside the loom models.
    drain_lock: StdMutex<()>,
    drained: StdCondvar,
}

#[derive(Default)]
struct Shard {
    slots: Vec<Option<OwnedRef>>,
    free: Vec<usize>,
    len: usize,
    closed: bool,
}

impl OwnedTasks {
    pub(crate) fn new() -> Self {
        OwnedTasks {
            shards: (0..SHARDS)
                .map(|_| Padded(Mutex::new(Shard::default())))
                .collect(),
            draining: AtomicBool::new(false),
            drain_lock: StdMutex::new(()),
            drained: StdCondvar::new(),
        }
    }

    fn shard(&self, h: &Header) -> &Mutex<Shard> {
        &self.shards[(h.id as usize) % SHARDS].0
    }

    /// Adds a task; after [`close`](Self::close) gives it back.
    pub(crate) fn insert(&self, task: OwnedRef) -> Result<(), OwnedRef> {
        let mut s = lock(self.shard(task.header()));
        if s.closed {
            return Err(task);
        }
        let slot = match s.free.pop() {
            Some(i) => i,
            None => {
                s.slots.push(None);
                s.slots.len() - 1
            }
        };
        task.header()
            .owned_slot
            .store(slot, std::sync::atomic::Ordering::Relaxed);
        s.slots[slot] = Some(task);
        s.len += 1;
        Ok(())
    }

    /// Removes a task, returning the list's reference (`None` if shutdown already took it).
    pub(crate) fn remove(&self, h: &Header) -> Option<OwnedRef> {
        let r = {
            let mut s = lock(self.shard(h));
            let slot = h.owned_slot.load(std::sync::atomic::Ordering::Relaxed);
            match s.slots.get_mut(slot) {
                Some(e) if e.as_ref().is_some_and(|t| t.is(h)) => {
                    let r = e.take();
                    s.free.push(slot);
                    s.len -= 1;
                    r
                }
                _ => None,
            }
        };
        if self.draining.load(StdOrdering::Relaxed) {
            drop(self.drain_lock.lock().unwrap_or_else(|e| e.into_inner()));
            self.drained.notify_all();
        }
        r
    }

    fn is_empty(&self) -> bool {
        self.shards.iter().all(|s| lock(&s.0).len == 0)
    }

    /// Waits until no task is live or `deadline` passes; `true` if it emptied.
    pub(crate) fn wait_empty(&self, deadline: std::time::Instant) -> bool {
        self.draining.store(true, StdOrdering::SeqCst);
        let mut g = self.drain_lock.lock().unwrap_or_else(|e| e.into_inner());
        loop {
            if self.is_empty() {
                return true;
            }
            let now = std::time::Instant::now();
            if now >= deadline {
                return false;
            }
            g = self
                .drained
                .wait_timeout(g, deadline - now)
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
    }

    /// Refuses new tasks and returns the live ones with their list references.
    pub(crate) fn close(&self) -> Vec<OwnedRef> {
        let mut out = Vec::new();
        for s in self.shards.iter() {
            let mut g = lock(&s.0);
            g.closed = true;
            g.len = 0;
            g.free.clear();
            out.extend(g.slots.drain(..).flatten());
        }
        out
    }
}
