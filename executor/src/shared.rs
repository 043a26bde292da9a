//! State shared by a runtime's threads and its handles: queues, idle set, owner list, blocking pool,
//! and the spawn/schedule paths.
//!
//! Scheduling rules (a task's *pool* is its request's, see `pool.rs`):
//! - a **spawn** from a worker of the task's pool goes to the back of that worker's queue; from any
//!   other thread, to the pool's injector;
//! - a **wake** on a worker of the task's pool goes to its LIFO slot (the displaced task to the back of
//!   its queue): the woken task most likely shares the waker's cache lines (ping-pong); from any other
//!   thread, to the pool's injector;
//! - every push that others could steal notifies an idle worker of the pool (`idle.rs`, I1/I2).
#![forbid(unsafe_code)]

use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering as StdOrdering};
use std::sync::{Arc, OnceLock};

use pagegen_core::{CancelReason, ClassId, ClassRegistry, PollHook, RequestCtx, RequestId, Unpark};

use crate::blocking::{BlockingPool, BlockingTask};
use crate::class::Classes;
use crate::clock;
use crate::context;
use crate::instrument::PollSummary;
use crate::lanes::Lanes;
use crate::loom::{lock, AtomicBool, Mutex, Ordering};
use crate::owned::OwnedTasks;
use crate::pool::{Padded, PoolShared, PoolSpec};
use crate::queue::CAPACITY;
use crate::task::raw::{new_task, Header, Notified, OwnedRef, Schedule};
use crate::task::JoinHandle;

/// Per-worker state other threads see.
pub(crate) struct WorkerSlot {
    /// Its run queues, one per class (`lanes.rs`).
    pub(crate) lanes: Lanes,
    pub(crate) unpark: OnceLock<Arc<dyn Unpark>>,
    /// Index of the worker's pool.
    pub(crate) pool: usize,
}

/// The runtime's shared state.
///
/// Aligned to 128 bytes so that, inside its `Arc`, the reference counts (touched by every spawn and
/// every task's end: each task holds an `Arc<Shared>` to schedule itself) sit on their own cache
/// lines, away from the read-mostly fields every spawn and wake reads (`timing`, `pools`, ...).
/// `perf annotate` of `spawn_many_local` put half of `schedule_spawn`'s samples on those reads.
#[repr(align(128))]
pub(crate) struct Shared {
    pub(crate) pools: Box<[PoolShared]>,
    pub(crate) workers: Box<[WorkerSlot]>,
    pub(crate) owned: OwnedTasks,
    pub(crate) shutdown: AtomicBool,
    /// Task ids; written by every spawn, so on lines of its own.
    next_id: Padded<AtomicU64>,
    /// Context of unclassified work spawned outside any request.
    pub(crate) background: Arc<RequestCtx>,
    pub(crate) blocking: Arc<BlockingPool>,
    pub(crate) tokio: Option<crate::compat::TokioHandle>,
    /// The hook for cold paths (spawn after shutdown, shutdown drops, blocking threads).
    pub(crate) cold_hook: Arc<dyn PollHook>,
    /// Whether polls are instrumented (`instrument.rs`): wakes and spawns are then time-stamped.
    pub(crate) timing: bool,
    /// Each worker's published poll statistics.
    pub(crate) stats: Box<[Mutex<PollSummary>]>,
    /// The classes this runtime schedules (it observes `registry`).
    pub(crate) registry: Arc<ClassRegistry>,
    pub(crate) classes: Arc<Classes>,
}

impl Shared {
    pub(crate) fn new(
        pools: Vec<PoolSpec>,
        blocking: Arc<BlockingPool>,
        tokio: Option<crate::compat::TokioHandle>,
        cold_hook: Arc<dyn PollHook>,
        timing: bool,
        registry: Arc<ClassRegistry>,
        classes: Arc<Classes>,
    ) -> Self {
        let mut slots = Vec::new();
        let mut pool_states = Vec::with_capacity(pools.len());
        for (p, spec) in pools.into_iter().enumerate() {
            let start = slots.len();
            slots.extend((0..spec.workers).map(|_| WorkerSlot {
                lanes: Lanes::new(),
                unpark: OnceLock::new(),
                pool: p,
            }));
            pool_states.push(PoolShared::new(spec, start..slots.len()));
        }
        let workers = slots.len();
        Shared {
            pools: pool_states.into_boxed_slice(),
            workers: slots.into_boxed_slice(),
            owned: OwnedTasks::new(),
            shutdown: AtomicBool::new(false),
            next_id: Padded(AtomicU64::new(1)),
            background: RequestCtx::background(RequestId::BACKGROUND, ClassId::DEFAULT),
            blocking,
            tokio,
            cold_hook,
            timing,
            stats: (0..workers)
                .map(|_| Mutex::new(PollSummary::new()))
                .collect(),
            registry,
            classes,
        }
    }

    /// Time-stamps a task being queued (the start of its scheduled delay).
    #[inline]
    pub(crate) fn stamp(&self, h: &Header) {
        if self.timing {
            h.woken_at.store(clock::now(), StdOrdering::Relaxed);
        }
    }

    /// Every worker's published poll statistics, merged.
    pub(crate) fn poll_summary(&self) -> PollSummary {
        let mut all = PollSummary::new();
        for s in self.stats.iter() {
            all.merge(&lock(s));
        }
        all
    }

    fn next_id(&self) -> u64 {
        self.next_id.0.fetch_add(1, StdOrdering::Relaxed)
    }

    /// Spawns `fut` in `ctx` (default: the current request's, else the background context).
    pub(crate) fn spawn<F>(
        self: &Arc<Self>,
        fut: F,
        ctx: Option<Arc<RequestCtx>>,
    ) -> JoinHandle<F::Output>
    where
        F: Future + Send + 'static,
        F::Output: Send + 'static,
    {
        let ctx = ctx
            .or_else(RequestCtx::current)
            .unwrap_or_else(|| self.background.clone());
        let (notified, join, owned) = new_task(fut, self.clone(), ctx, self.next_id(), true);
        let owned = owned.expect("worker tasks are owned");
        match self.owned.insert(owned) {
            Ok(()) => self.schedule_spawn(notified),
            Err(owned) => {
                // Shut down: the task completes at once as cancelled, its future dropped here.
                drop(notified);
                self.shutdown_task(owned);
            }
        }
        JoinHandle::new(join)
    }

    /// Runs `f` on the blocking pool in `ctx` (default: the current request's, else background).
    pub(crate) fn spawn_blocking<F, R>(
        self: &Arc<Self>,
        f: F,
        ctx: Option<Arc<RequestCtx>>,
    ) -> JoinHandle<R>
    where
        F: FnOnce() -> R + Send + 'static,
        R: Send + 'static,
    {
        let ctx = ctx
            .or_else(RequestCtx::current)
            .unwrap_or_else(|| self.background.clone());
        let (notified, join, _) = new_task(
            BlockingTask::new(f),
            self.blocking.clone(),
            ctx,
            self.next_id(),
            false,
        );
        notified.schedule();
        JoinHandle::new(join)
    }

    /// A2 for one task: take its permit and drop its future as cancelled by shutdown.
    pub(crate) fn shutdown_task(&self, owned: OwnedRef) {
        if let Some(r) = owned.shutdown() {
            let _ctx = RequestCtx::enter(&r.header().ctx);
            crate::run::cancel(&*self.cold_hook, r, CancelReason::Shutdown);
        }
    }

    /// The pool `h` runs in: its request's grant's, or the first pool if that one does not exist.
    #[inline]
    pub(crate) fn task_pool(&self, h: &Header) -> usize {
        if self.pools.len() == 1 {
            return 0;
        }
        let p = h.ctx.grant().pool().0 as usize;
        if p < self.pools.len() {
            p
        } else {
            0
        }
    }

    /// This thread's worker index if it is a worker of pool `pool`.
    #[inline]
    fn local_worker(&self, pool: usize) -> Option<usize> {
        context::worker_index(self).filter(|&i| self.workers[i].pool == pool)
    }

    /// A spawn on one of the pool's workers goes to the LIFO slot, as a wake does ([`Schedule`]):
    /// the spawner's worker runs it next, and only the task it displaces is queued and announced
    /// to idle workers. Queueing every spawn woke a sleeping worker per spawn, which then found a
    /// chain of spawns already taken (tokio makes the same choice for its spawns).
    #[inline]
    fn schedule_spawn(&self, task: Notified) {
        self.stamp(task.header());
        let pool = self.task_pool(task.header());
        match self.local_worker(pool) {
            Some(i) => {
                if let Some(prev) = context::lifo_replace(task) {
                    self.push_local(i, prev);
                }
            }
            None => self.push_remote(pool, task),
        }
    }

    /// The lane (class index) `h` is queued in.
    #[inline]
    pub(crate) fn lane_of(h: &Header) -> usize {
        h.lane as usize
    }

    /// Pushes on worker `index`'s own lane for the task's class (caller is that worker), overflowing
    /// half the lane to the injector, and notifies an idle worker.
    #[inline]
    pub(crate) fn push_local(&self, index: usize, task: Notified) {
        let q = self.workers[index]
            .lanes
            .get_or_create(Self::lane_of(task.header()));
        if let Err(task) = q.push(task) {
            let mut batch = Vec::with_capacity(CAPACITY / 2 + 1);
            q.pop_n(CAPACITY / 2, &mut batch);
            batch.push(task);
            // A closed injector means shutdown: the owner list completes these tasks.
            drop(
                self.pools[self.workers[index].pool]
                    .injector
                    .push_batch(batch),
            );
        }
        self.notify_one(self.workers[index].pool);
    }

    /// Pushes on pool `pool`'s injector and notifies one of its idle workers.
    pub(crate) fn push_remote(&self, pool: usize, task: Notified) {
        if let Err(task) = self.pools[pool].injector.push(task) {
            drop(task);
            return;
        }
        self.notify_one(pool);
    }

    /// I1/I2/I4: wakes one sleeping worker of `pool` unless one of its workers searches (freshly).
    #[inline]
    pub(crate) fn notify_one(&self, pool: usize) {
        if let Some(w) = self.pools[pool]
            .idle
            .worker_to_notify(crate::idle::clock_ns)
        {
            self.unpark(w);
        }
    }

    pub(crate) fn unpark(&self, worker: usize) {
        if let Some(u) = self.workers[worker].unpark.get() {
            u.unpark();
        }
    }

    /// Whether any queue of `pool` holds work (I1's re-check).
    pub(crate) fn has_work(&self, pool: usize) -> bool {
        let p = &self.pools[pool];
        !p.injector.is_empty()
            || self.workers[p.range.clone()]
                .iter()
                .any(|w| !w.lanes.is_empty())
    }

    /// Tasks of class index `i` queued on worker lanes (the policy's `runnable`; injectors are
    /// not counted).
    pub(crate) fn runnable(&self, i: usize) -> u64 {
        self.workers.iter().map(|w| w.lanes.len(i) as u64).sum()
    }

    /// Spawns `fut` in class `class`: in the current request's context when that request is of
    /// `class`, else in the class's background context.
    pub(crate) fn spawn_in<F>(self: &Arc<Self>, class: ClassId, fut: F) -> JoinHandle<F::Output>
    where
        F: Future + Send + 'static,
        F::Output: Send + 'static,
    {
        let ctx = RequestCtx::current()
            .filter(|c| c.class() == class)
            .unwrap_or_else(|| self.classes.ctx(class));
        self.spawn(fut, Some(ctx))
    }

    pub(crate) fn is_shutdown(&self) -> bool {
        self.shutdown.load(Ordering::Acquire)
    }
}

impl Schedule for Arc<Shared> {
    #[inline]
    fn schedule(&self, task: Notified) {
        self.stamp(task.header());
        let pool = self.task_pool(task.header());
        match self.local_worker(pool) {
            Some(i) => {
                if let Some(prev) = context::lifo_replace(task) {
                    self.push_local(i, prev);
                }
            }
            None => self.push_remote(pool, task),
        }
    }

    fn release(&self, task: &Header) -> Option<OwnedRef> {
        self.owned.remove(task)
    }
}
