//! The blocking pool: threads for `spawn_blocking` closures, grown on demand up to a cap, shrunk
//! after an idle keep-alive.
//!
//! A blocking closure is a task whose future runs the closure in its first poll, scheduled on this
//! pool instead of a worker, so it shares `JoinHandle`, abort (before it starts) and the state
//! protocol with worker tasks. Each closure runs with its request's context current, inside
//! `before_blocking` / `after_blocking`.
#![forbid(unsafe_code)]

use std::cell::Cell;
use std::collections::VecDeque;
use std::future::Future;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::pin::Pin;
use std::sync::{Arc, Condvar, Mutex, Weak};
use std::task::{Context, Poll};
use std::thread;
use std::time::{Duration, Instant};

use pagegen_core::{BlockingStats, CancelReason, PollHook, RequestCtx, WorkerInfo};

use crate::context;
use crate::run;
use crate::shared::Shared;
use crate::task::raw::{Header, Notified, OwnedRef, PollOutcome, Schedule, Start};

thread_local! {
    /// Queue delay of the closure that just ran on this blocking thread, ns.
    static QUEUE_DELAY: Cell<u64> = const { Cell::new(0) };
}

/// The future of a blocking task: runs the closure once.
pub(crate) struct BlockingTask<F> {
    f: Option<F>,
    queued: Instant,
}

impl<F> BlockingTask<F> {
    pub(crate) fn new(f: F) -> Self {
        BlockingTask {
            f: Some(f),
            queued: Instant::now(),
        }
    }
}

impl<F> Unpin for BlockingTask<F> {}

impl<F: FnOnce() -> R, R> Future for BlockingTask<F> {
    type Output = R;
    fn poll(mut self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<R> {
        let f = self.f.take().expect("blocking task polled twice");
        QUEUE_DELAY.with(|d| d.set(self.queued.elapsed().as_nanos() as u64));
        Poll::Ready(f())
    }
}

/// Pool settings.
#[derive(Clone, Debug)]
pub(crate) struct PoolConfig {
    pub(crate) max_threads: usize,
    pub(crate) keep_alive: Duration,
    pub(crate) thread_name: String,
    pub(crate) stack_size: Option<usize>,
}

pub(crate) struct BlockingPool {
    state: Mutex<PoolState>,
    work: Condvar,
    exited: Condvar,
    config: PoolConfig,
    hook: Arc<dyn PollHook>,
    /// The runtime, for spawns from blocking closures; set once the runtime exists.
    runtime: std::sync::OnceLock<Weak<Shared>>,
}

#[derive(Default)]
struct PoolState {
    queue: VecDeque<Notified>,
    threads: usize,
    idle: usize,
    next_index: usize,
    shutdown: bool,
}

impl BlockingPool {
    pub(crate) fn new(config: PoolConfig, hook: Arc<dyn PollHook>) -> Self {
        BlockingPool {
            state: Mutex::new(PoolState::default()),
            work: Condvar::new(),
            exited: Condvar::new(),
            config,
            hook,
            runtime: std::sync::OnceLock::new(),
        }
    }

    pub(crate) fn set_runtime(&self, shared: &Arc<Shared>) {
        let _ = self.runtime.set(Arc::downgrade(shared));
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, PoolState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Stops taking work, cancels what is queued, and waits for running closures until `deadline`
    /// (`None`: as long as they take). Returns whether every thread exited.
    pub(crate) fn shutdown(&self, deadline: Option<Instant>) -> bool {
        let queued: Vec<Notified> = {
            let mut s = self.lock();
            s.shutdown = true;
            s.queue.drain(..).collect()
        };
        self.work.notify_all();
        for t in queued {
            self.cancel_unstarted(t);
        }
        let mut s = self.lock();
        while s.threads > 0 {
            s = match deadline {
                None => self.exited.wait(s).unwrap_or_else(|e| e.into_inner()),
                Some(d) => {
                    let now = Instant::now();
                    if now >= d {
                        return false;
                    }
                    self.exited
                        .wait_timeout(s, d - now)
                        .unwrap_or_else(|e| e.into_inner())
                        .0
                }
            };
        }
        true
    }

    fn cancel_unstarted(&self, t: Notified) {
        match t.start() {
            Start::Run(r) | Start::Cancel(r) => {
                let _ctx = RequestCtx::enter(&r.header().ctx);
                run::cancel(&*self.hook, r, CancelReason::Shutdown);
            }
            Start::Skip => {}
        }
    }

    fn spawn_thread(self: &Arc<Self>, index: usize) -> std::io::Result<()> {
        let pool = self.clone();
        let mut b =
            thread::Builder::new().name(format!("{}-blocking-{index}", self.config.thread_name));
        if let Some(s) = self.config.stack_size {
            b = b.stack_size(s);
        }
        b.spawn(move || pool.thread_main(index)).map(drop)
    }

    fn thread_main(self: Arc<Self>, index: usize) {
        let info = WorkerInfo {
            index,
            pool: None,
            name: thread::current().name().unwrap_or_default().to_owned(),
        };
        let shared = self.runtime.get().and_then(Weak::upgrade);
        let tokio = shared.as_ref().and_then(|s| s.tokio.clone());
        let _tokio = tokio.as_ref().map(|h| h.enter());
        let _rt = shared.map(context::enter);
        let _ = catch_unwind(AssertUnwindSafe(|| self.hook.thread_started(&info)));
        let mut s = self.lock();
        loop {
            if let Some(t) = s.queue.pop_front() {
                drop(s);
                self.run(t);
                s = self.lock();
                continue;
            }
            if s.shutdown {
                break;
            }
            s.idle += 1;
            let (g, res) = self
                .work
                .wait_timeout(s, self.config.keep_alive)
                .unwrap_or_else(|e| e.into_inner());
            s = g;
            s.idle -= 1;
            if res.timed_out() && s.queue.is_empty() && !s.shutdown {
                break;
            }
        }
        s.threads -= 1;
        drop(s);
        let _ = catch_unwind(AssertUnwindSafe(|| self.hook.thread_stopping(&info)));
        self.exited.notify_all();
    }

    fn run(&self, t: Notified) {
        let hook = &*self.hook;
        match t.start() {
            Start::Skip => {}
            Start::Cancel(r) => {
                let _ctx = RequestCtx::enter(&r.header().ctx);
                run::cancel(hook, r, CancelReason::Aborted);
            }
            Start::Run(r) => {
                let _ctx = RequestCtx::enter(&r.header().ctx);
                let ctx = &*r.header().ctx;
                let _ = catch_unwind(AssertUnwindSafe(|| hook.before_blocking(ctx)));
                let start = Instant::now();
                let outcome = {
                    let waker = r.waker();
                    let mut cx = Context::from_waker(&waker);
                    r.poll(&mut cx)
                };
                let stats = BlockingStats {
                    busy_ns: start.elapsed().as_nanos() as u64,
                    queue_delay_ns: QUEUE_DELAY.with(Cell::get),
                };
                let _ = catch_unwind(AssertUnwindSafe(|| hook.after_blocking(ctx, &stats)));
                match outcome {
                    PollOutcome::Ready => {
                        let _ = r.drop_future();
                        r.complete();
                    }
                    PollOutcome::Panicked(p) => {
                        let id = r.header().id;
                        let _ = r.drop_future();
                        r.store_error(crate::error::JoinError::panic(id, p));
                        r.complete();
                    }
                    PollOutcome::Pending => {
                        unreachable!("a blocking task is ready in its first poll")
                    }
                }
            }
        }
    }
}

impl Schedule for Arc<BlockingPool> {
    fn schedule(&self, task: Notified) {
        let mut s = self.lock();
        if s.shutdown {
            drop(s);
            self.cancel_unstarted(task);
            return;
        }
        s.queue.push_back(task);
        if s.idle > s.queue.len() - 1 {
            drop(s);
            self.work.notify_one();
            return;
        }
        if s.threads < self.config.max_threads {
            s.threads += 1;
            let index = s.next_index;
            s.next_index += 1;
            drop(s);
            if self.spawn_thread(index).is_err() {
                // The OS refused a thread: the queued task waits for a running thread, or, if there
                // is none, runs on no thread at all; say so rather than hang silently.
                let mut s = self.lock();
                s.threads -= 1;
                if s.threads == 0 {
                    let orphaned: Vec<Notified> = s.queue.drain(..).collect();
                    drop(s);
                    tracing::warn!(
                        "could not start a blocking thread; cancelling queued blocking work"
                    );
                    for t in orphaned {
                        self.cancel_unstarted(t);
                    }
                }
            }
        }
    }

    fn release(&self, _task: &Header) -> Option<OwnedRef> {
        None
    }
}
