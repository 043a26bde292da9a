//! Helpers for the loom models: a scheduler that just queues, and tasks that count what happened
//! to them.

use std::collections::VecDeque;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, Waker};

use pagegen_core::{ClassId, NoHook, RequestCtx, RequestId};

use super::raw::{new_task, Header, JoinRaw, Notified, OwnedRef, Schedule, Start};
use crate::loom::{lock, AtomicUsize, Mutex, Ordering};
use crate::run::{self, Ran};

/// A scheduler whose queue is a locked deque.
#[derive(Default)]
pub(crate) struct TestSched {
    queue: Mutex<VecDeque<Notified>>,
}

impl Schedule for Arc<TestSched> {
    fn schedule(&self, task: Notified) {
        lock(&self.queue).push_back(task);
    }
    fn release(&self, _task: &Header) -> Option<OwnedRef> {
        None
    }
}

impl TestSched {
    pub(crate) fn pop(&self) -> Option<Notified> {
        lock(&self.queue).pop_front()
    }
}

/// Shared counters of the tasks of one model.
#[derive(Clone)]
pub(crate) struct Counter(Arc<Counts>);

pub(crate) struct Counts {
    runs: AtomicUsize,
    drops: AtomicUsize,
    sched: Arc<TestSched>,
}

impl Counter {
    pub(crate) fn new() -> Self {
        Counter(Arc::new(Counts {
            runs: AtomicUsize::new(0),
            drops: AtomicUsize::new(0),
            sched: Arc::new(TestSched::default()),
        }))
    }
    pub(crate) fn runs(&self) -> usize {
        self.0.runs.load(Ordering::SeqCst)
    }
    pub(crate) fn drops(&self) -> usize {
        self.0.drops.load(Ordering::SeqCst)
    }
    pub(crate) fn sched(&self) -> &Arc<TestSched> {
        &self.0.sched
    }
    /// Runs a task once (poll with no hook).
    pub(crate) fn run(&self, t: Notified) {
        match t.start() {
            Start::Run(r) => {
                if let Ran::Requeue(t) = run::poll(&NoHook, r, None) {
                    self.0.sched.schedule(t);
                }
            }
            Start::Cancel(r) => run::cancel(&NoHook, r, pagegen_core::CancelReason::Aborted),
            Start::Skip => {}
        }
    }
    /// Runs queued tasks until the queue is empty.
    pub(crate) fn drain(&self) {
        while let Some(t) = self.0.sched.pop() {
            self.run(t);
        }
    }
}

/// A future that counts its completions and its drops; pending `pendings` times first, parking its
/// waker in `slot`.
pub(crate) struct Probe {
    counter: Counter,
    pendings: usize,
    slot: Option<Arc<Mutex<Option<Waker>>>>,
}

impl Future for Probe {
    type Output = ();
    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        if self.pendings > 0 {
            self.pendings -= 1;
            if let Some(slot) = &self.slot {
                *lock(slot) = Some(cx.waker().clone());
            }
            return Poll::Pending;
        }
        self.counter.0.runs.fetch_add(1, Ordering::SeqCst);
        Poll::Ready(())
    }
}

impl Drop for Probe {
    fn drop(&mut self) {
        self.counter.0.drops.fetch_add(1, Ordering::SeqCst);
    }
}

fn ctx() -> Arc<RequestCtx> {
    RequestCtx::background(RequestId(0), ClassId::DEFAULT)
}

/// A task that completes on its first poll; its `JoinHandle` is dropped.
pub(crate) fn counting_task(counter: &Counter) -> Notified {
    let (n, _join, _) = probe_task(counter, 0, None);
    n
}

/// A task around a [`Probe`].
pub(crate) fn probe_task(
    counter: &Counter,
    pendings: usize,
    slot: Option<Arc<Mutex<Option<Waker>>>>,
) -> (Notified, JoinRaw, ()) {
    let probe = Probe {
        counter: counter.clone(),
        pendings,
        slot,
    };
    let (n, j, _) = new_task(probe, counter.sched().clone(), ctx(), 1, false);
    (n, j, ())
}
