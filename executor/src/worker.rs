//! The worker loop: find a task, run it, park when there is none.
//!
//! Order of search, per tick (tokio's order, which its benchmarks tuned):
//! 1. every [`GLOBAL_INTERVAL`] ticks, the injector first, so remote work cannot starve behind a busy
//!    local queue;
//! 2. the LIFO slot, at most [`MAX_LIFO_POLLS`] times in a row (so two tasks waking each other cannot
//!    starve the queue);
//! 3. the local queue; 4. a batch from the injector; 5. as a searcher (`idle.rs` I2), half of another
//!    worker's queue, then the injector again;
//! 6. nothing: park by `idle.rs` I1, through the I/O driver if there is one.
//!
//! The driver is polled without blocking every [`DRIVER_INTERVAL`] ticks (skipped while the
//! worker's queues hold [`DRIVER_BACKLOG`] tasks, at most [`MAX_DRIVER_SKIPS`] times in a row) and
//! before parking (`core::driver`'s contract). The request context of the task being polled is
//! made current; it is kept current across consecutive tasks of the same request (no `Arc`
//! traffic per poll when one request's tasks run back to back) and cleared before parking.
#![forbid(unsafe_code)]

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::Arc;

use pagegen_core::{CtxGuard, DriverFactory, PollHook, PoolId, RequestCtx, WorkerInfo};

use crate::class::DelayBuckets;
use crate::context;
use crate::instrument::Instr;
use crate::park::{Park, Parker};
use crate::run::{self, Ran};
use crate::shared::Shared;
use crate::task::raw::{Notified, Start};

/// Ticks between injector-first checks: tokio's fixed default before it made the interval adaptive
/// (31); a prime avoids resonating with task periods.
pub(crate) const GLOBAL_INTERVAL: u32 = 31;
/// Ticks between non-blocking driver polls: tokio's `event_interval` default (61).
pub(crate) const DRIVER_INTERVAL: u32 = 61;
/// Queued tasks at which the periodic driver poll is skipped: half a queue, the room one harvest
/// of ready I/O needs (the readiness backend takes at most 128 events per check) without
/// overflowing to the injector.
pub(crate) const DRIVER_BACKLOG: usize = crate::queue::CAPACITY / 2;
/// Periodic driver polls skipped in a row at most: I/O is checked at least every
/// `DRIVER_INTERVAL * (MAX_DRIVER_SKIPS + 1)` ticks however long the queue stays.
pub(crate) const MAX_DRIVER_SKIPS: u32 = 3;
/// A poll longer than this sends the worker to the injector first: 200 µs is the target interval
/// between injector checks that tokio's adaptive `global_queue_interval` aims for.
const LONG_POLL_FOR_INJECTOR_NS: u64 = 200_000;
/// Most tasks queued locally for a yield to still pull remote work in ahead of the yielder.
const YIELD_PULL_BACKLOG: usize = 4;
/// Consecutive LIFO-slot polls before the local queue gets a turn (tokio's `MAX_LIFO_POLLS_PER_TICK`).
const MAX_LIFO_POLLS: u32 = 3;
/// CPU a worker gathers for one class before adding it to the class's shared virtual runtime: one
/// atomic add per 20 µs of CPU bounds the shared-line traffic to a few percent of a short poll's
/// cost while keeping virtual time within 20 µs of exact (well under `vruntime::SLACK_NS`).
const CHARGE_BATCH_NS: u64 = 20_000;
/// CPU a poll is charged when poll timing is off: classes then share polls, not measured CPU.
const NOMINAL_POLL_NS: u64 = 1_000;
/// How far (virtual ns) the LIFO task's class may be behind the best queued class and still run
/// first: one charge batch, so the LIFO slot keeps its cache benefit without bending shares.
const LIFO_SLACK_NS: u64 = CHARGE_BATCH_NS;

/// Everything a worker thread needs, moved onto it.
pub(crate) struct WorkerStart<H> {
    pub(crate) shared: Arc<Shared>,
    pub(crate) hook: Arc<H>,
    pub(crate) index: usize,
    pub(crate) driver: Option<Arc<dyn DriverFactory>>,
    pub(crate) timing: bool,
    /// Signalled once the worker's unparker is registered.
    pub(crate) ready: std::sync::mpsc::Sender<()>,
}

struct Worker<'a, H> {
    shared: &'a Shared,
    hook: &'a H,
    index: usize,
    /// This worker's pool, and its workers' index range.
    pool: usize,
    park: Park,
    tick: u32,
    lifo_polls: u32,
    /// Periodic driver polls skipped in a row ([`DRIVER_BACKLOG`]).
    driver_skips: u32,
    searching: bool,
    /// The last poll was long: look at the injector first next tick.
    injector_first: bool,
    instr: Option<Instr>,
    /// The context made current for the last task, kept while the next task shares it.
    cur_ctx: Option<(*const RequestCtx, CtxGuard)>,
    steal_seed: u32,
    batch: Vec<Notified>,
    /// CPU not yet charged to a class: `(class index, ns, polls)` (`class.rs`, charged in batches
    /// of [`CHARGE_BATCH_NS`]).
    pending: (usize, u64, u64),
    /// Scheduled delays of the pending class not yet handed to the class table (with the charge).
    pending_delays: DelayBuckets,
}

/// A worker thread's body.
pub(crate) fn run_worker<H: PollHook>(start: WorkerStart<H>) {
    let WorkerStart {
        shared,
        hook,
        index,
        driver,
        timing,
        ready,
    } = start;
    let pool = shared.workers[index].pool;
    let spec = &shared.pools[pool].spec;
    let info = WorkerInfo {
        index: index - shared.pools[pool].range.start,
        pool: Some(PoolId(pool as u8)),
        name: std::thread::current().name().unwrap_or_default().to_owned(),
    };
    if spec.nice != 0 {
        if let Err(e) = crate::sys::raise_thread_nice(spec.nice) {
            if info.index == 0 {
                tracing::warn!(
                    "pool `{}`: the OS refused nice {} ({e}); its workers run at the default priority",
                    spec.name,
                    spec.nice
                );
            }
        }
    }
    if let Some(slice) = spec.slice.filter(|_| !spec.sched_idle) {
        let ns = u64::try_from(slice.as_nanos()).unwrap_or(u64::MAX);
        if let Err(e) = crate::sys::set_thread_slice(ns) {
            if info.index == 0 {
                tracing::warn!(
                    "pool `{}`: the OS refused a {slice:?} scheduler slice ({e}); its workers run \
                     with the default slice",
                    spec.name
                );
            }
        }
    }
    if spec.sched_idle {
        if let Err(e) = crate::sys::set_thread_sched_idle() {
            if info.index == 0 {
                tracing::warn!(
                    "pool `{}`: the OS refused SCHED_IDLE ({e}); its workers run at nice {}",
                    spec.name,
                    spec.nice
                );
            }
        }
    }
    let _tokio = shared.tokio.as_ref().map(|h| h.enter());
    let _rt = context::enter(shared.clone());
    context::set_worker(Some(&shared), index);
    let park = match driver.map(|f| f.worker_driver(&info)) {
        Some(Ok(d)) => Park::Driver(d),
        Some(Err(e)) => {
            if index == 0 {
                tracing::warn!("I/O driver unavailable on workers ({e}); parking on a condvar");
            }
            Park::Own(Arc::new(Parker::new()))
        }
        None => Park::Own(Arc::new(Parker::new())),
    };
    let _ = shared.workers[index].unpark.set(park.unparker());
    let _ = ready.send(());
    drop(ready);
    let _ = catch_unwind(AssertUnwindSafe(|| hook.thread_started(&info)));

    let mut w = Worker {
        shared: &shared,
        hook: &*hook,
        index,
        pool,
        park,
        tick: 0,
        driver_skips: 0,
        lifo_polls: 0,
        searching: false,
        injector_first: false,
        instr: timing.then(Instr::new),
        cur_ctx: None,
        steal_seed: (index as u32).wrapping_mul(0x9E37_79B9) | 1,
        batch: Vec::new(),
        pending: (0, 0, 0),
        pending_delays: DelayBuckets::new(),
    };
    w.run();
    if let Some(i) = &mut w.instr {
        i.publish(&shared.stats[index]);
    }

    // Wakes from here on go to the injector, which shutdown drains.
    context::set_worker(None, 0);
    drop(context::lifo_take());
    while let Some(t) = shared.workers[index].lanes.pop_any() {
        drop(t);
    }
    w.cur_ctx = None;
    let _ = catch_unwind(AssertUnwindSafe(|| hook.thread_stopping(&info)));
    drop(w);
}

impl<H: PollHook> Worker<'_, H> {
    /// The periodic driver poll, skipped while this worker already has a harvest's worth of tasks
    /// queued (at most [`MAX_DRIVER_SKIPS`] times in a row). Ready I/O then waits in the kernel,
    /// whose ready list is first-in first-out, instead of being pulled in ahead of room for it:
    /// wakes beyond the queue's capacity overflow half the queue to the injector, behind newer
    /// work, and those connections wait many rounds. Measured on the HTTP benchmark at 1,024
    /// connections (benches/RESULTS.md, 2026-12-07, readiness backend, medians of 5 interleaved
    /// runs): p99 21 ms with the gate against 25 ms without; with one shared socket set per pool
    /// (tokio's layout, tried and not kept) 25 ms against 68 ms, tokio's own being 58 ms.
    fn poll_driver_unless_backlogged(&mut self) {
        let backlog = self.shared.workers[self.index].lanes.total_len();
        if backlog >= DRIVER_BACKLOG && self.driver_skips < MAX_DRIVER_SKIPS {
            self.driver_skips += 1;
            return;
        }
        self.driver_skips = 0;
        self.park.poll_nonblocking();
    }

    fn run(&mut self) {
        while !self.shared.is_shutdown() {
            if self.shared.pools[self.pool].resized_out(self.index) {
                self.resize_park();
                continue;
            }
            self.tick = self.tick.wrapping_add(1);
            if self.tick.is_multiple_of(DRIVER_INTERVAL) {
                self.poll_driver_unless_backlogged();
                if self.shared.classes.policy_due() {
                    self.flush_charge();
                    let shared = self.shared;
                    shared
                        .classes
                        .run_policy(&shared.registry, |i| shared.runnable(i));
                }
            }
            match self.next_task() {
                Some(task) => {
                    if self.searching {
                        self.searching = false;
                        let idle = &self.shared.pools[self.pool].idle;
                        // I2: the last searcher to find work passes the search on — only if more
                        // work is queued (the fence orders the decrement before the look, against
                        // a producer's push-fence-read, as in I1). Waking a worker for nothing
                        // costs a futex wake before this task's first poll and a context switch
                        // on a CPU a light request may need.
                        if idle.stop_searching() {
                            idle.fence_after_register();
                            if self.shared.has_work(self.pool) {
                                self.shared.notify_one(self.pool);
                            }
                        }
                    }
                    self.run_task(task);
                    if let Some(i) = &mut self.instr {
                        if i.due() {
                            i.publish(&self.shared.stats[self.index]);
                        }
                    }
                }
                None => self.park(),
            }
        }
        if self.searching {
            self.searching = false;
            self.shared.pools[self.pool].idle.stop_searching();
        }
    }

    #[inline]
    fn next_task(&mut self) -> Option<Notified> {
        if self.shared.workers[self.index].lanes.hi() == 0 {
            self.next_task_one_class()
        } else {
            self.next_task_fair()
        }
    }

    /// The fast path: this worker has only ever queued `default` work.
    #[inline]
    fn next_task_one_class(&mut self) -> Option<Notified> {
        let q = self.shared.workers[self.index].lanes.first();
        // Remote work goes first every GLOBAL_INTERVAL ticks, and right after a long poll: when polls
        // are long, 31 of them could keep remote work waiting for many milliseconds (tokio makes its
        // interval adaptive to the mean poll time for the same reason).
        if self.tick.is_multiple_of(GLOBAL_INTERVAL) || std::mem::take(&mut self.injector_first) {
            if let Some(t) = self.take_injected() {
                return Some(t);
            }
        }
        if self.lifo_polls < MAX_LIFO_POLLS {
            if let Some(t) = context::lifo_take() {
                self.lifo_polls += 1;
                return Some(t);
            }
        } else if let Some(t) = context::lifo_take() {
            // The LIFO task had its turns: it goes behind the queue.
            self.shared.push_local(self.index, t);
        }
        self.lifo_polls = 0;
        if let Some(t) = q.pop() {
            return Some(t);
        }
        if let Some(t) = self.take_injected() {
            return Some(t);
        }
        self.search()
    }

    /// Several classes queued here: the class of least virtual time first (`vruntime.rs`), FIFO
    /// within it, the LIFO slot only while its class is within [`LIFO_SLACK_NS`] of that one.
    fn next_task_fair(&mut self) -> Option<Notified> {
        let shared = self.shared;
        let lanes = &shared.workers[self.index].lanes;
        let classes = &*shared.classes;
        if self.tick.is_multiple_of(GLOBAL_INTERVAL) || std::mem::take(&mut self.injector_first) {
            if let Some(t) = self.take_injected() {
                shared.push_local(self.index, t);
            }
        }
        let mut best = lanes.min_by(|i| classes.vruntime(i));
        if let Some(t) = context::lifo_take() {
            let vr = classes.vruntime(Shared::lane_of(t.header()));
            let fair = best.is_none_or(|(_, b)| vr <= b.saturating_add(LIFO_SLACK_NS));
            if self.lifo_polls < MAX_LIFO_POLLS && fair {
                self.lifo_polls += 1;
                classes.picked(vr);
                return Some(t);
            }
            shared.push_local(self.index, t);
            best = lanes.min_by(|i| classes.vruntime(i));
        }
        self.lifo_polls = 0;
        if best.is_none() {
            if let Some(t) = self.take_injected() {
                shared.push_local(self.index, t);
                best = lanes.min_by(|i| classes.vruntime(i));
            }
        }
        // A thief may empty the chosen lane between the look and the pop: look again.
        while let Some((i, vr)) = best {
            if let Some(t) = lanes.get(i).and_then(|l| l.pop()) {
                classes.picked(vr);
                return Some(t);
            }
            best = lanes.min_by(|i| classes.vruntime(i));
        }
        self.search()
    }

    /// Nothing local: become a searcher (idle.rs I2) and steal, then look at the injector again.
    fn search(&mut self) -> Option<Notified> {
        if !self.searching {
            self.searching = self.shared.pools[self.pool]
                .idle
                .try_start_searching(crate::idle::clock_ns);
            if !self.searching {
                return None;
            }
        }
        self.steal().or_else(|| self.take_injected())
    }

    fn take_injected(&mut self) -> Option<Notified> {
        let n = self.shared.pools[self.pool].range.len();
        let lanes = &self.shared.workers[self.index].lanes;
        // A fair share of the backlog at once, at most half a queue less what is queued here in
        // all lanes (tokio's bound). Counting every lane, not only the first, keeps each lane at
        // most half full after the batch whatever the batch's classes, so no task of it bounces
        // back to the injector: sized by the first lane alone, a worker with full class lanes took
        // up to 128 tasks per yield and pushed most straight back, one lock and wake-up each.
        let free = (crate::queue::CAPACITY / 2).saturating_sub(lanes.total_len());
        let first = self.shared.pools[self.pool]
            .injector
            .pop_batch(n, free, &mut self.batch)?;
        if let Some(i) = &mut self.instr {
            // Taking the lock may have waited: not the next poll's time.
            i.restart();
        }
        for t in self.batch.drain(..) {
            let lane = Shared::lane_of(t.header());
            if let Err(t) = lanes.get_or_create(lane).push(t) {
                // The batch is sized to the first lane's free space; another lane may be fuller.
                // Keep the task regardless.
                self.shared.push_remote(self.pool, t);
            }
        }
        Some(first)
    }

    fn steal(&mut self) -> Option<Notified> {
        let range = self.shared.pools[self.pool].range.clone();
        let n = range.len();
        // xorshift32: a cheap per-worker sequence so thieves do not all start at worker 0.
        self.steal_seed ^= self.steal_seed << 13;
        self.steal_seed ^= self.steal_seed >> 17;
        self.steal_seed ^= self.steal_seed << 5;
        let start = self.steal_seed as usize % n;
        let mine = &self.shared.workers[self.index].lanes;
        let classes = &*self.shared.classes;
        for k in 0..n {
            let i = range.start + (start + k) % n;
            if i == self.index {
                continue;
            }
            // The victim's class of least virtual time, into the same class's lane here.
            let victim = &self.shared.workers[i].lanes;
            let Some((lane, _)) = victim.min_by(|c| classes.vruntime(c)) else {
                continue;
            };
            let Some(from) = victim.get(lane) else {
                continue;
            };
            if let Some(t) = from.steal_into(mine.get_or_create(lane)) {
                if let Some(i) = &mut self.instr {
                    i.restart();
                }
                return Some(t);
            }
        }
        None
    }

    #[inline]
    fn run_task(&mut self, task: Notified) {
        match task.start() {
            Start::Skip => {}
            Start::Cancel(r) => {
                self.enter_ctx(&r.header().ctx);
                run::cancel(self.hook, r, pagegen_core::CancelReason::Aborted);
            }
            Start::Run(r) => {
                self.enter_ctx(&r.header().ctx);
                // One class only, in the runtime and here: nothing to share, nothing to charge.
                let multi =
                    self.shared.classes.hi() > 0 || self.shared.workers[self.index].lanes.hi() > 0;
                let lane = if multi {
                    Shared::lane_of(r.header())
                } else {
                    0
                };
                let ran = run::poll(self.hook, r, self.instr.as_mut());
                let (cpu_ns, sched_ns) = match &self.instr {
                    Some(i) => {
                        self.injector_first = i.last_busy_ns() > LONG_POLL_FOR_INJECTOR_NS;
                        (i.last_cpu_ns(), Some(i.last_sched_ns()))
                    }
                    None => (NOMINAL_POLL_NS, None),
                };
                if multi {
                    self.charge(lane, cpu_ns, sched_ns);
                }
                if let Ran::Requeue(t) = ran {
                    // A yield (or budget exhaustion): behind everything already queued; the end
                    // of the poll just measured is the start of its scheduled delay.
                    if let Some(i) = &self.instr {
                        t.header()
                            .woken_at
                            .store(i.start(), std::sync::atomic::Ordering::Relaxed);
                    }
                    let pool = self.shared.task_pool(t.header());
                    if pool == self.pool {
                        // A yield says "others may run now": remote work waiting in the injector
                        // goes ahead of the yielder too, not only the local queue (tokio gets the
                        // same effect by deferring yielded tasks until its queue is drained).
                        // Only while little is queued here: behind a longer backlog the yielder
                        // waits anyway, and the GLOBAL_INTERVAL check brings remote work in within
                        // 31 polls; pulling on every yield made both workers take the injector lock
                        // on every short poll while a backlog of remote work remained.
                        if self.shared.workers[self.index].lanes.total_len() <= YIELD_PULL_BACKLOG
                            && !self.shared.pools[self.pool].injector.is_empty()
                        {
                            if let Some(first) = self.take_injected() {
                                self.shared.push_local(self.index, first);
                            }
                        }
                        self.shared.push_local(self.index, t);
                    } else {
                        // Its request moved to another pool during the poll.
                        self.shared.push_remote(pool, t);
                    }
                }
            }
        }
    }

    /// Adds a poll's CPU (and its scheduled delay, when timed) to the pending charge, handing it to
    /// the class table per batch.
    #[inline]
    fn charge(&mut self, lane: usize, cpu_ns: u64, sched_ns: Option<u64>) {
        if self.pending.0 != lane {
            self.flush_charge();
            self.pending.0 = lane;
        }
        if let Some(d) = sched_ns {
            self.pending_delays.record(d);
        }
        self.pending.1 += cpu_ns;
        self.pending.2 += 1;
        if self.pending.1 >= CHARGE_BATCH_NS {
            self.flush_charge();
        }
    }

    fn flush_charge(&mut self) {
        let (lane, ns, polls) = self.pending;
        if polls > 0 {
            self.shared.classes.charge(lane, ns, polls);
            self.shared
                .classes
                .add_delays(lane, &mut self.pending_delays);
            self.pending = (lane, 0, 0);
        }
    }

    #[inline]
    fn enter_ctx(&mut self, ctx: &Arc<RequestCtx>) {
        let p = Arc::as_ptr(ctx);
        if let Some((cur, _)) = &self.cur_ctx {
            if std::ptr::eq(*cur, p) {
                return;
            }
        }
        // Drop the previous guard first so the new one restores "no context", not the old one.
        self.cur_ctx = None;
        self.cur_ctx = Some((p, RequestCtx::enter(ctx)));
    }

    /// The pool shrank below this worker (`pool.rs`): hand everything queued here to the pool's
    /// injector, wake an active worker for it, and park outside the idle set until the pool grows
    /// again or the runtime shuts down.
    #[cold]
    fn resize_park(&mut self) {
        let shared = self.shared;
        let pool = &shared.pools[self.pool];
        self.cur_ctx = None;
        self.flush_charge();
        if let Some(i) = &mut self.instr {
            i.publish(&shared.stats[self.index]);
        }
        if self.searching {
            self.searching = false;
            pool.idle.stop_searching();
        }
        let mut moved = Vec::new();
        moved.extend(context::lifo_take());
        while let Some(t) = shared.workers[self.index].lanes.pop_any() {
            moved.push(t);
        }
        // From here wakes on this thread are not local: they go to the injector.
        context::set_worker(None, 0);
        // A closed injector means shutdown: the owner list completes these tasks.
        if !moved.is_empty() {
            drop(pool.injector.push_batch(moved));
        }
        // I1 as for any push; also passes on a wake-up this worker may have taken as a sleeper.
        shared.notify_one(self.pool);
        pool.parked
            .fetch_add(1, std::sync::atomic::Ordering::AcqRel);
        // The grow path stores `active` and then unparks: the parker's token covers a grow between
        // this check and the park.
        while pool.resized_out(self.index) && !shared.is_shutdown() {
            self.park.park(None);
        }
        pool.parked
            .fetch_sub(1, std::sync::atomic::Ordering::AcqRel);
        context::set_worker(Some(shared), self.index);
        self.lifo_polls = 0;
        if let Some(i) = &mut self.instr {
            i.restart();
        }
    }

    /// I1/I2': register as sleeping, re-check, park; on wake-up, I3.
    fn park(&mut self) {
        // The poll first costs an idle worker one more system call per idle spell than tokio's
        // direct park (two `epoll_wait` per request at one connection), but it keeps a worker
        // whose I/O is already waiting out of the sleeper list. Parking without it was measured
        // and not kept: requests/s moved both ways between sittings, CPU per request did not
        // fall (benches/RESULTS.md, 2026-12-08).
        if self.park.poll_nonblocking() > 0 {
            return;
        }
        self.cur_ctx = None;
        self.flush_charge();
        if let Some(i) = &mut self.instr {
            i.publish(&self.shared.stats[self.index]);
        }
        let idle = &self.shared.pools[self.pool].idle;
        let shared = self.shared;
        let pool = self.pool;
        let back = idle.prepare_park(self.index, self.searching, || {
            shared.has_work(pool) || shared.is_shutdown()
        });
        if let Some(searching) = back {
            // I2': a searcher whose re-check found work goes back searching, so it passes the
            // search on when it takes a task.
            self.searching = searching;
            return;
        }
        self.searching = false;
        self.park.park(None);
        self.searching = idle.unregister_sleeper(self.index);
        if let Some(i) = &mut self.instr {
            i.restart();
        }
    }
}
