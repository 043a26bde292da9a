//! The global run queue: tasks spawned or woken from outside the workers, and overflow from full
//! worker queues. A mutex around a `VecDeque`, touched only on remote spawns/wakes and when a worker
//! runs dry; the `len` mirror lets workers test for emptiness without the lock.
#![forbid(unsafe_code)]

use std::collections::VecDeque;

use crate::loom::{lock, AtomicUsize, Mutex, Ordering};
use crate::task::raw::Notified;

pub(crate) struct Injector {
    inner: Mutex<Inner>,
    len: AtomicUsize,
}

struct Inner {
    tasks: VecDeque<Notified>,
    closed: bool,
}

impl Injector {
    pub(crate) fn new() -> Self {
        Injector {
            inner: Mutex::new(Inner {
                tasks: VecDeque::new(),
                closed: false,
            }),
            len: AtomicUsize::new(0),
        }
    }

    #[inline]
    pub(crate) fn is_empty(&self) -> bool {
        self.len.load(Ordering::Acquire) == 0
    }

    /// Queues `task`; after [`close`](Self::close) the task is handed back instead (the caller drops
    /// it: shutdown completes every live task from the owner list).
    pub(crate) fn push(&self, task: Notified) -> Result<(), Notified> {
        let mut g = lock(&self.inner);
        if g.closed {
            return Err(task);
        }
        g.tasks.push_back(task);
        self.len.store(g.tasks.len(), Ordering::Release);
        Ok(())
    }

    /// Queues a batch (overflow from a worker queue).
    pub(crate) fn push_batch(&self, batch: Vec<Notified>) -> Vec<Notified> {
        let mut g = lock(&self.inner);
        if g.closed {
            return batch;
        }
        g.tasks.extend(batch);
        self.len.store(g.tasks.len(), Ordering::Release);
        Vec::new()
    }

    /// Takes one task, and into `out` a fair share of the rest: `len / workers` (tokio's split, so
    /// one worker does not take everything), at most `max_extra`.
    pub(crate) fn pop_batch(
        &self,
        workers: usize,
        max_extra: usize,
        out: &mut Vec<Notified>,
    ) -> Option<Notified> {
        if self.is_empty() {
            return None;
        }
        let mut g = lock(&self.inner);
        let first = g.tasks.pop_front()?;
        let n = (g.tasks.len() / workers.max(1)).min(max_extra);
        out.extend(g.tasks.drain(..n));
        self.len.store(g.tasks.len(), Ordering::Release);
        Some(first)
    }

    /// Refuses further pushes and returns what was queued.
    pub(crate) fn close(&self) -> Vec<Notified> {
        let mut g = lock(&self.inner);
        g.closed = true;
        self.len.store(0, Ordering::Release);
        g.tasks.drain(..).collect()
    }
}
