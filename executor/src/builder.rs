//! Building a runtime.
#![forbid(unsafe_code)]

use std::io;
use std::sync::Arc;
use std::time::Duration;

use pagegen_core::{ClassRegistry, ClassSpec, DriverFactory, NoHook, PollHook, SharesPolicy};

use crate::class::Classes;

use crate::blocking::{BlockingPool, PoolConfig};
use crate::compat::TokioDriver;
use crate::pool::PoolSpec;
use crate::runtime::Runtime;
use crate::shared::Shared;
use crate::worker::{run_worker, WorkerStart};

/// Blocking threads at most: tokio's default (512), sized for blocking file I/O fan-out.
const DEFAULT_MAX_BLOCKING: usize = 512;
/// Threads of the tokio compatibility runtime (see [`crate::compat`]).
const DEFAULT_TOKIO_WORKERS: usize = 2;
/// Idle blocking threads exit after this: tokio's default.
const DEFAULT_KEEP_ALIVE: Duration = Duration::from_secs(10);

/// Configures and builds a [`Runtime`]; mirrors `tokio::runtime::Builder`.
///
/// ```
/// let rt = pagegen_executor::Builder::new().workers(2).build()?;
/// assert_eq!(rt.block_on(async { rt_spawned().await }), 7);
/// # async fn rt_spawned() -> u32 { pagegen_executor::spawn(async { 7 }).await.unwrap() }
/// # Ok::<(), std::io::Error>(())
/// ```
pub struct Builder<H = NoHook> {
    workers: usize,
    hook: H,
    driver: Option<Arc<dyn DriverFactory>>,
    thread_name: String,
    tokio_compat: bool,
    tokio_workers: usize,
    max_blocking: usize,
    keep_alive: Duration,
    stack_size: Option<usize>,
    poll_timing: bool,
    pools: Option<Vec<PoolSpec>>,
    registry: Option<Arc<ClassRegistry>>,
    class_specs: Vec<ClassSpec>,
    shares_policy: Option<Box<dyn SharesPolicy>>,
}

impl<H> std::fmt::Debug for Builder<H> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Builder")
            .field("workers", &self.workers)
            .field("thread_name", &self.thread_name)
            .field("tokio_compat", &self.tokio_compat)
            .field("driver", &self.driver.is_some())
            .finish_non_exhaustive()
    }
}

impl Builder<NoHook> {
    /// Defaults: one worker per available core, tokio compatibility on, no hook, no I/O driver.
    pub fn new() -> Self {
        Builder {
            workers: std::thread::available_parallelism().map_or(1, |n| n.get()),
            hook: NoHook,
            driver: None,
            thread_name: "pagegen".to_owned(),
            tokio_compat: true,
            tokio_workers: DEFAULT_TOKIO_WORKERS,
            max_blocking: DEFAULT_MAX_BLOCKING,
            keep_alive: DEFAULT_KEEP_ALIVE,
            stack_size: None,
            poll_timing: true,
            pools: None,
            registry: None,
            class_specs: Vec::new(),
            shares_policy: None,
        }
    }
}

impl Default for Builder<NoHook> {
    fn default() -> Self {
        Builder::new()
    }
}

impl<H: PollHook> Builder<H> {
    /// Number of worker threads (of the single default pool; see [`pool`](Self::pool)).
    ///
    /// # Panics
    /// If `n` is 0: write `workers(1)` for a single worker.
    #[track_caller]
    pub fn workers(mut self, n: usize) -> Self {
        assert!(
            n > 0,
            "workers(0): a runtime needs at least one worker; write workers(1)"
        );
        self.workers = n;
        self
    }
    /// Same as [`workers`](Self::workers), under tokio's name.
    #[track_caller]
    pub fn worker_threads(self, n: usize) -> Self {
        self.workers(n)
    }
    /// The hook called around every poll (statically dispatched; tuples compose).
    pub fn hook<H2: PollHook>(self, hook: H2) -> Builder<H2> {
        Builder {
            workers: self.workers,
            hook,
            driver: self.driver,
            thread_name: self.thread_name,
            tokio_compat: self.tokio_compat,
            tokio_workers: self.tokio_workers,
            max_blocking: self.max_blocking,
            keep_alive: self.keep_alive,
            stack_size: self.stack_size,
            poll_timing: self.poll_timing,
            pools: self.pools,
            registry: self.registry,
            class_specs: self.class_specs,
            shares_policy: self.shares_policy,
        }
    }
    /// The class registry the runtime schedules from (default: a fresh in-memory one). The runtime
    /// subscribes to it: classes registered there, before or after the build, and their share
    /// changes reach the scheduler.
    pub fn class_registry(mut self, registry: Arc<ClassRegistry>) -> Self {
        self.registry = Some(registry);
        self
    }
    /// Registers a class when the runtime is built (see [`Handle::register_class`] for run time).
    ///
    /// [`Handle::register_class`]: crate::Handle::register_class
    pub fn class(mut self, spec: ClassSpec) -> Self {
        self.class_specs.push(spec);
        self
    }
    /// The policy that re-weighs classes every [`SharesPolicy::period`], called on one worker
    /// between polls (default: none, shares stay as registered or set).
    pub fn shares_policy(mut self, policy: impl SharesPolicy) -> Self {
        self.shares_policy = Some(Box::new(policy));
        self
    }
    /// Adds a worker pool; the first added is `PoolId(0)` (the latency pool by convention), the
    /// second `PoolId(1)` (bulk), and so on. With any pool added, [`workers`](Self::workers) is
    /// ignored and the pools' worker counts apply. See `pool.rs` for the rules.
    ///
    /// # Panics
    /// Past 255 pools (a `PoolId` is a byte).
    #[track_caller]
    pub fn pool(mut self, spec: PoolSpec) -> Self {
        let pools = self.pools.get_or_insert_with(Vec::new);
        assert!(pools.len() < 255, "at most 255 pools");
        pools.push(spec);
        self
    }
    /// A per-worker I/O driver (`core::driver`'s contract); workers park through it.
    pub fn driver(mut self, factory: Arc<dyn DriverFactory>) -> Self {
        self.driver = Some(factory);
        self
    }
    /// Thread name prefix (workers are `<name>-worker-<i>`).
    pub fn thread_name(mut self, name: impl Into<String>) -> Self {
        self.thread_name = name.into();
        self
    }
    /// Whether to run tokio's I/O and time drivers so tokio resources work inside tasks (default
    /// on; see [`crate::compat`] for the limits).
    pub fn tokio_compat(mut self, on: bool) -> Self {
        self.tokio_compat = on;
        self
    }
    /// Threads of the tokio compatibility runtime (default 2; at least 1): with 2 or more, work a
    /// library `tokio::spawn`s runs beside the thread that fires timers and reports socket
    /// readiness instead of on it (see [`crate::compat`]); 1 is a single current-thread runtime.
    pub fn tokio_workers(mut self, n: usize) -> Self {
        self.tokio_workers = n.max(1);
        self
    }
    /// Cap on blocking-pool threads.
    ///
    /// # Panics
    /// If `n` is 0: `spawn_blocking` needs at least one thread.
    #[track_caller]
    pub fn max_blocking_threads(mut self, n: usize) -> Self {
        assert!(n > 0, "max_blocking_threads(0): write at least 1");
        self.max_blocking = n;
        self
    }
    /// How long an idle blocking thread waits for work before exiting.
    pub fn thread_keep_alive(mut self, d: Duration) -> Self {
        self.keep_alive = d;
        self
    }
    /// Stack size of worker and blocking threads.
    pub fn thread_stack_size(mut self, bytes: usize) -> Self {
        self.stack_size = Some(bytes);
        self
    }
    /// Always-on poll instrumentation (default on; see `instrument.rs`): wall/CPU time, scheduled and
    /// first-poll delay per poll, into hooks' [`PollStats`](pagegen_core::PollStats) and
    /// [`Handle::poll_summary`](crate::Handle::poll_summary). Off: hooks see zeros and nothing is
    /// recorded (the parity bench's "uninstrumented" runtime).
    pub fn poll_timing(mut self, on: bool) -> Self {
        self.poll_timing = on;
        self
    }

    /// Starts the threads.
    ///
    /// # Errors
    /// When the OS refuses a thread or tokio's drivers cannot start (e.g. no epoll), or a class
    /// cannot be registered (registry full, its state file unwritable).
    pub fn build(self) -> io::Result<Runtime> {
        let registry = self
            .registry
            .unwrap_or_else(|| Arc::new(ClassRegistry::in_memory()));
        let classes = Arc::new(Classes::new(self.shares_policy));
        registry.subscribe(classes.clone());
        for spec in self.class_specs {
            registry.register(spec).map_err(io::Error::other)?;
        }
        let hook = Arc::new(self.hook);
        if self.poll_timing {
            crate::clock::init();
        }
        let cold_hook: Arc<dyn PollHook> = hook.clone();
        let tokio = if self.tokio_compat {
            Some(TokioDriver::start(&self.thread_name, self.tokio_workers)?)
        } else {
            None
        };
        let blocking = Arc::new(BlockingPool::new(
            PoolConfig {
                max_threads: self.max_blocking,
                keep_alive: self.keep_alive,
                thread_name: self.thread_name.clone(),
                stack_size: self.stack_size,
            },
            cold_hook.clone(),
        ));
        let pools = self
            .pools
            .unwrap_or_else(|| vec![PoolSpec::new("worker", self.workers)]);
        let prefix = &self.thread_name;
        let names: Vec<String> = pools
            .iter()
            .flat_map(|p| (0..p.workers).map(move |i| format!("{prefix}-{}-{i}", p.name)))
            .collect();
        let shared = Arc::new(Shared::new(
            pools,
            blocking.clone(),
            tokio.as_ref().map(|t| t.handle.clone()),
            cold_hook,
            self.poll_timing,
            registry,
            classes,
        ));
        blocking.set_runtime(&shared);
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let mut rt = Runtime::new(shared.clone(), tokio);
        for (index, name) in names.into_iter().enumerate() {
            let start = WorkerStart {
                shared: shared.clone(),
                hook: hook.clone(),
                index,
                driver: self.driver.clone(),
                timing: self.poll_timing,
                ready: ready_tx.clone(),
            };
            let mut b = std::thread::Builder::new().name(name);
            if let Some(s) = self.stack_size {
                b = b.stack_size(s);
            }
            // On error `rt` drops, shutting down the workers already started.
            rt.push_thread(b.spawn(move || run_worker(start))?);
        }
        drop(ready_tx);
        // Every worker registers its unparker before any task can be scheduled on it.
        for _ in 0..shared.workers.len() {
            let _ = ready_rx.recv();
        }
        Ok(rt)
    }
}
