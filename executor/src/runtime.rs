//! The runtime and its handle: spawn, block_on, shutdown.
#![forbid(unsafe_code)]

use std::future::Future;
use std::pin::pin;
use std::sync::Arc;
use std::task::{Context, Poll, Wake, Waker};
use std::thread::JoinHandle as ThreadHandle;
use std::time::{Duration, Instant};

use pagegen_core::{ClassId, ClassRegistry, ClassSpec, PoolId, RegistryError, RequestCtx, Shares};

use crate::class::ClassSchedStats;

use crate::compat::TokioDriver;
use crate::context::{self, EnterGuard};
use crate::instrument::PollSummary;
use crate::loom::Ordering;
use crate::park::Parker;
use crate::pool::{PoolSize, ResizeError};
use crate::shared::Shared;
use crate::task::JoinHandle;

/// A running pagegen runtime: worker threads, a blocking pool and (by default) tokio's drivers.
///
/// Dropping it shuts down at once: workers stop after their current poll, every unfinished task is
/// dropped (its `JoinHandle` yields a cancelled error with [`CancelReason::Shutdown`]), and running
/// blocking closures are waited for. [`shutdown_timeout`](Self::shutdown_timeout) first lets tasks
/// finish until a deadline.
///
/// [`CancelReason::Shutdown`]: pagegen_core::CancelReason::Shutdown
pub struct Runtime {
    shared: Arc<Shared>,
    tokio: Option<TokioDriver>,
    threads: Vec<ThreadHandle<()>>,
    done: bool,
}

impl std::fmt::Debug for Runtime {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Runtime")
            .field("workers", &self.shared.workers.len())
            .field("tokio_compat", &self.tokio.is_some())
            .finish_non_exhaustive()
    }
}

impl Runtime {
    pub(crate) fn new(shared: Arc<Shared>, tokio: Option<TokioDriver>) -> Self {
        Runtime {
            shared,
            tokio,
            threads: Vec::new(),
            done: false,
        }
    }
    pub(crate) fn push_thread(&mut self, t: ThreadHandle<()>) {
        self.threads.push(t);
    }

    /// A cloneable handle for spawning from elsewhere.
    pub fn handle(&self) -> Handle {
        Handle {
            shared: self.shared.clone(),
        }
    }

    /// Spawns a task; see [`crate::spawn`].
    pub fn spawn<F>(&self, fut: F) -> JoinHandle<F::Output>
    where
        F: Future + Send + 'static,
        F::Output: Send + 'static,
    {
        self.shared.spawn(fut, None)
    }

    /// Spawns a task in `class`; see [`Handle::spawn_in`].
    pub fn spawn_in<F>(&self, class: ClassId, fut: F) -> JoinHandle<F::Output>
    where
        F: Future + Send + 'static,
        F::Output: Send + 'static,
    {
        self.shared.spawn_in(class, fut)
    }

    /// Runs a blocking closure on the blocking pool; see [`crate::spawn_blocking`].
    pub fn spawn_blocking<F, R>(&self, f: F) -> JoinHandle<R>
    where
        F: FnOnce() -> R + Send + 'static,
        R: Send + 'static,
    {
        self.shared.spawn_blocking(f, None)
    }

    /// Makes this runtime current on this thread (for `spawn`) until the guard drops.
    pub fn enter(&self) -> EnterGuard {
        context::enter(self.shared.clone())
    }

    /// Runs `fut` to completion on this thread, with the runtime current (so `spawn`, `tokio::net`
    /// and `tokio::time` work inside it).
    ///
    /// # Panics
    /// When called on a pagegen worker thread (it would block a worker): `.await` the future instead.
    #[track_caller]
    pub fn block_on<F: Future>(&self, fut: F) -> F::Output {
        assert!(
            !context::is_worker_thread(),
            "block_on called on a pagegen worker thread, which would block it; .await the future instead"
        );
        let _rt = context::enter(self.shared.clone());
        let _tokio = self.shared.tokio.as_ref().map(|h| h.enter());
        let _ctx = RequestCtx::with_current(|c| c.is_none())
            .then(|| RequestCtx::enter(&self.shared.background));
        let unpark = Arc::new(ThreadUnpark(Parker::new()));
        let waker = Waker::from(unpark.clone());
        let mut cx = Context::from_waker(&waker);
        let mut fut = pin!(fut);
        loop {
            if let Poll::Ready(v) = fut.as_mut().poll(&mut cx) {
                return v;
            }
            unpark.0.park(None);
        }
    }

    /// Lets tasks run until all have finished or `timeout` passed, then drops the rest; waits for
    /// running blocking closures until the same deadline and leaves any still running behind.
    pub fn shutdown_timeout(mut self, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        self.shutdown(Some(deadline), Some(deadline));
    }

    /// Shuts down now without waiting for blocking closures.
    pub fn shutdown_background(mut self) {
        self.shutdown(None, Some(Instant::now()));
    }

    fn shutdown(&mut self, drain_until: Option<Instant>, blocking_until: Option<Instant>) {
        if std::mem::replace(&mut self.done, true) {
            return;
        }
        let shared = &self.shared;
        if let Some(deadline) = drain_until {
            if !context::is_worker_thread() {
                shared.owned.wait_empty(deadline);
            }
        }
        shared.shutdown.store(true, Ordering::Release);
        for i in 0..shared.workers.len() {
            shared.unpark(i);
        }
        let me = std::thread::current().id();
        for t in self.threads.drain(..) {
            // A runtime dropped inside one of its own tasks cannot wait for its own worker.
            if t.thread().id() != me {
                let _ = t.join();
            }
        }
        {
            // Futures dropped here may touch tokio resources or spawn: keep both contexts entered.
            let _rt = context::enter(shared.clone());
            let _tokio = shared.tokio.as_ref().map(|h| h.enter());
            for pool in shared.pools.iter() {
                drop(pool.injector.close());
            }
            for owned in shared.owned.close() {
                shared.shutdown_task(owned);
            }
            shared.blocking.shutdown(blocking_until);
        }
        if let Some(mut t) = self.tokio.take() {
            t.stop();
        }
    }
}

impl Drop for Runtime {
    fn drop(&mut self) {
        self.shutdown(None, None);
    }
}

struct ThreadUnpark(Parker);

impl Wake for ThreadUnpark {
    fn wake(self: Arc<Self>) {
        self.0.unpark();
    }
    fn wake_by_ref(self: &Arc<Self>) {
        self.0.unpark();
    }
}

/// A cloneable reference to a runtime, for spawning from any thread.
#[derive(Clone)]
pub struct Handle {
    shared: Arc<Shared>,
}

impl std::fmt::Debug for Handle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Handle").finish_non_exhaustive()
    }
}

impl Handle {
    /// The runtime current on this thread.
    ///
    /// # Panics
    /// Outside a runtime: use [`try_current`](Self::try_current), or call this inside `block_on`,
    /// a task, or after [`Runtime::enter`].
    #[track_caller]
    pub fn current() -> Handle {
        Handle::try_current().expect(
            "no pagegen runtime is current: call this inside #[pagegen::main], Runtime::block_on, a \
             spawned task, or after Runtime::enter",
        )
    }
    /// The runtime current on this thread, if any.
    pub fn try_current() -> Option<Handle> {
        context::current().map(|shared| Handle { shared })
    }
    /// Spawns a task; see [`crate::spawn`].
    pub fn spawn<F>(&self, fut: F) -> JoinHandle<F::Output>
    where
        F: Future + Send + 'static,
        F::Output: Send + 'static,
    {
        self.shared.spawn(fut, None)
    }
    /// Spawns a task in `class`: it works for the current request when that request is of `class`,
    /// else for the class's background context; its children inherit that context, hence the class.
    /// An id nobody registered runs at default shares.
    pub fn spawn_in<F>(&self, class: ClassId, fut: F) -> JoinHandle<F::Output>
    where
        F: Future + Send + 'static,
        F::Output: Send + 'static,
    {
        self.shared.spawn_in(class, fut)
    }
    /// Registers (or updates, by name) a class at run time; see [`ClassRegistry::register`].
    ///
    /// # Errors
    /// The registry is full or its state file cannot be written.
    pub fn register_class(&self, spec: ClassSpec) -> Result<ClassId, RegistryError> {
        self.shared.registry.register(spec)
    }
    /// Changes a class's shares (through the registry, so every subsystem hears it). `false` for a
    /// class that was never registered.
    pub fn set_shares(&self, class: ClassId, shares: Shares) -> bool {
        self.shared.registry.set_shares(class, shares)
    }
    /// The class registry this runtime schedules from.
    pub fn class_registry(&self) -> &Arc<ClassRegistry> {
        &self.shared.registry
    }
    /// What the scheduler knows of `class` (shares, CPU used, virtual runtime); `None` when it was
    /// never registered.
    pub fn class_stats(&self, class: ClassId) -> Option<ClassSchedStats> {
        self.shared.classes.stats(class)
    }
    /// Spawns a task working for `ctx` (a request admitted by the caller); its children inherit it.
    pub fn spawn_with_ctx<F>(&self, ctx: Arc<RequestCtx>, fut: F) -> JoinHandle<F::Output>
    where
        F: Future + Send + 'static,
        F::Output: Send + 'static,
    {
        self.shared.spawn(fut, Some(ctx))
    }
    /// Runs a blocking closure on the blocking pool.
    pub fn spawn_blocking<F, R>(&self, f: F) -> JoinHandle<R>
    where
        F: FnOnce() -> R + Send + 'static,
        R: Send + 'static,
    {
        self.shared.spawn_blocking(f, None)
    }
    /// Makes this runtime current on this thread until the guard drops.
    pub fn enter(&self) -> EnterGuard {
        context::enter(self.shared.clone())
    }
    /// The context of unclassified work (class `default`).
    pub fn background_ctx(&self) -> &Arc<RequestCtx> {
        &self.shared.background
    }
    /// Resizes pool `pool` to `active` running workers (`1..=` its configured workers) by parking
    /// threads, never by creating or re-prioritising them (`pool.rs`). Shrinking: each worker above
    /// the count finishes the poll it is in, hands its queued tasks to the pool's other workers and
    /// parks; growing: parked workers wake and take work again. Returns the previous active count.
    ///
    /// # Errors
    /// [`ResizeError`] for an unknown pool or a count outside `1..=configured`; nothing changes.
    pub fn set_pool_workers(&self, pool: PoolId, active: usize) -> Result<usize, ResizeError> {
        let shared = &self.shared;
        let p = shared
            .pools
            .get(pool.0 as usize)
            .ok_or(ResizeError::NoSuchPool(pool.0, shared.pools.len()))?;
        let configured = p.range.len();
        if !(1..=configured).contains(&active) {
            return Err(ResizeError::OutOfRange {
                pool: p.spec.name.clone(),
                active,
                configured,
            });
        }
        let before = p.active.0.swap(active, Ordering::AcqRel);
        // Shrinking: wake the workers leaving (idle ones would otherwise sleep on in the idle set
        // and could absorb a wake-up); growing: wake the ones coming back.
        let (lo, hi) = (before.min(active), before.max(active));
        for i in p.range.start + lo..p.range.start + hi {
            shared.unpark(i);
        }
        Ok(before)
    }
    /// Pool `pool`'s configured, active and resize-parked workers; `None` for an unknown pool.
    pub fn pool_size(&self, pool: PoolId) -> Option<PoolSize> {
        let p = self.shared.pools.get(pool.0 as usize)?;
        Some(PoolSize {
            configured: p.range.len(),
            active: p.active.0.load(Ordering::Acquire),
            parked: p.parked.load(Ordering::Acquire),
        })
    }
    /// Number of worker threads.
    pub fn workers(&self) -> usize {
        self.shared.workers.len()
    }
    /// The tokio compatibility runtime's metrics (what libraries `tokio::spawn`ed: alive tasks,
    /// busy time); `None` without tokio compatibility.
    #[cfg(not(loom))]
    pub fn tokio_metrics(&self) -> Option<tokio::runtime::RuntimeMetrics> {
        self.shared.tokio.as_ref().map(|h| h.metrics())
    }
    /// Poll statistics published by the workers so far (each worker publishes every 16 384 polls and
    /// whenever it goes idle); empty when instrumentation is off.
    pub fn poll_summary(&self) -> PollSummary {
        self.shared.poll_summary()
    }
}

/// Spawns `fut` on the current runtime. The task works for the current request (its
/// [`RequestCtx`]); outside any request, for the background context in class `default`.
///
/// # Panics
/// Outside a runtime (see [`Handle::current`]).
#[track_caller]
pub fn spawn<F>(fut: F) -> JoinHandle<F::Output>
where
    F: Future + Send + 'static,
    F::Output: Send + 'static,
{
    context::with_current(|s| match s {
        Some(s) => s.spawn(fut, None),
        None => panic!(
            "pagegen::spawn called outside a pagegen runtime: call it inside #[pagegen::main], \
             Runtime::block_on or a task, or use Runtime::spawn"
        ),
    })
}

/// Spawns `fut` in `class` on the current runtime (see [`Handle::spawn_in`]).
///
/// # Panics
/// Outside a runtime (see [`Handle::current`]).
#[track_caller]
pub fn spawn_in<F>(class: ClassId, fut: F) -> JoinHandle<F::Output>
where
    F: Future + Send + 'static,
    F::Output: Send + 'static,
{
    context::with_current(|s| match s {
        Some(s) => s.spawn_in(class, fut),
        None => panic!(
            "pagegen::spawn_in called outside a pagegen runtime: call it inside #[pagegen::main], \
             Runtime::block_on or a task, or use Handle::spawn_in"
        ),
    })
}

/// Runs `f` on the current runtime's blocking pool, with the current request's context current.
///
/// # Panics
/// Outside a runtime (see [`Handle::current`]).
#[track_caller]
pub fn spawn_blocking<F, R>(f: F) -> JoinHandle<R>
where
    F: FnOnce() -> R + Send + 'static,
    R: Send + 'static,
{
    context::with_current(|s| match s {
        Some(s) => s.spawn_blocking(f, None),
        None => panic!(
            "pagegen::spawn_blocking called outside a pagegen runtime: call it inside \
             #[pagegen::main], Runtime::block_on or a task"
        ),
    })
}
