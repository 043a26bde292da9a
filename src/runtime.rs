//! The composition root: the one place that names every subsystem and wires them into a runtime.
//!
//! `#[pagegen::main]`, `#[pagegen::test]` and hand-built runtimes (`pagegen::runtime::Builder`, the
//! replacement for `tokio::runtime::Builder`) all go through [`Builder::build`], so no runtime is
//! ever missing a hook, a driver or a registry subscription. It builds, in order:
//!
//! 1. the configuration ([`Config`]: defaults, `pagegen.toml`, `PAGEGEN_*`, then the builder's
//!    own settings);
//! 2. the state directory (locked) and the **class registry persisted in it** (`classes`), with its
//!    subscribers: the I/O class limits (`IoClasses`), class arenas for memory-heavy classes
//!    (`ClassArenas::heavy_only`, [`HEAVY_CLASS_BYTES`]), the model's static baseline (`Deployed`),
//!    and the scheduler;
//! 3. the **memory pool** (configured; else 70 % of the cgroup limit; else 50 % of RAM);
//! 4. the **model** (`ModelRuntime`: profile store, checkpoint, deployed predictor) and its trainer
//!    thread at `SCHED_IDLE` (`crate::trainer`), and the recorder thread that feeds it;
//! 5. the policy ([`GrantPolicy`], [`Admission`], [`OutstandingShares`]) and the [`Engine`];
//! 6. the **hook tuple**, in this order: `AllocHook` (memory accounts and budget), [`ProfileHook`]
//!    (CPU accounts), [`EnforceHook`] (CPU demotion, wall-clock cancel), the engine's thread hook,
//!    then the user's hook — *added*, never replacing pagegen's;
//! 7. the executor with the io_uring driver (`pagegen-io`, blocking fallback) and **two pools**:
//!    `latency` (normal priority) and `bulk` (nice 10), both with a 100 µs scheduler slice where
//!    the kernel has one (`benches/isolation.rs`);
//! 8. when `metrics_addr` is set, the **metrics endpoint** ([`crate::metrics`]): the runtime's
//!    Prometheus registry served on `GET /metrics` from a thread of its own
//!    ([`crate::metrics::endpoint`] says why not a pagegen task), bound here so a bad address
//!    fails the build.

use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use pagegen_alloc::{AllocHook, ClassArenas, MemoryPool};
use pagegen_core::{ClassRegistry, ClassSpec, Clock, NoHook, PollHook, RealClock, WorkerInfo};
use pagegen_executor::Builder as ExecBuilder;
use pagegen_model::{ModelConfig, ModelRuntime, StateDir};

pub use pagegen_executor::{
    lower_current_thread_priority, ClassSchedStats, EnterGuard, Handle, PollSummary, PoolSize,
    PoolSpec, ResizeError,
};

pub use crate::config::Config;
use crate::config::SharesMode;
use crate::engine::{Engine, Parts};
use crate::policy::{
    Admission, Checkpoints, Decisions, EnforceHook, GrantPolicy, OutstandingShares,
};
use crate::profile::histograms::RequestHistograms;
use crate::profile::{ProfileHook, Recorder};

/// Classes annotated with at least this much memory get a jemalloc arena of their own (an arena
/// costs every allocation of its class a few ns, `benches/README.md` "Memory"; a class that
/// allocates hundreds of MB is worth isolating, a 0.2 ms page is not).
pub const HEAVY_CLASS_BYTES: u64 = 64 << 20;

/// Share of a cgroup memory limit given to the memory pool (the rest: the runtime, caches,
/// allocator fragmentation).
pub const CGROUP_SHARE: f64 = 0.7;
/// Share of physical memory given to the memory pool where no cgroup limit applies.
pub const RAM_SHARE: f64 = 0.5;

/// The hook that makes the runtime's [`Engine`] current on each of its threads.
#[derive(Debug, Clone)]
struct EngineHook(Arc<Engine>);

impl PollHook for EngineHook {
    fn thread_started(&self, _worker: &WorkerInfo) {
        std::mem::forget(self.0.enter());
    }
    fn thread_stopping(&self, _worker: &WorkerInfo) {
        Engine::leave_thread();
    }
}

/// The hooks every pagegen runtime runs, before the user's.
type Hooks = (AllocHook, ProfileHook, (EnforceHook, EngineHook));

/// Configures and builds a [`Runtime`]; mirrors `tokio::runtime::Builder`.
///
/// ```no_run
/// let rt = pagegen::runtime::Builder::new().workers(2).build()?;
/// rt.block_on(async { /* serve */ });
/// # Ok::<(), std::io::Error>(())
/// ```
pub struct Builder<U = NoHook> {
    config: Config,
    user: U,
    classes: Vec<ClassSpec>,
    thread_name: String,
    tokio_compat: bool,
    poll_timing: bool,
    temporary_state: bool,
    clock: Option<Arc<dyn Clock>>,
    pools: Vec<PoolSpec>,
}

impl<U> std::fmt::Debug for Builder<U> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Builder")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl Default for Builder<NoHook> {
    fn default() -> Self {
        Builder::new()
    }
}

impl Builder<NoHook> {
    /// The defaults of [`Config`] (not reading the environment; see [`from_env`](Self::from_env)).
    pub fn new() -> Self {
        Builder::with_config(Config::default())
    }

    /// The defaults, then `pagegen.toml`, then `PAGEGEN_*` (what `#[pagegen::main]` uses).
    ///
    /// # Errors
    /// A configuration value that does not parse; the message names the knob.
    pub fn from_env() -> io::Result<Self> {
        Ok(Builder::with_config(Config::from_env()?))
    }

    /// A builder over `config`.
    pub fn with_config(config: Config) -> Self {
        Builder {
            config,
            user: NoHook,
            classes: Vec::new(),
            thread_name: "pagegen".to_owned(),
            tokio_compat: true,
            poll_timing: true,
            temporary_state: false,
            clock: None,
            pools: Vec::new(),
        }
    }
}

static TEMP_STATE: AtomicU64 = AtomicU64::new(0);

impl<U: PollHook> Builder<U> {
    /// Latency-pool workers (default: one per core).
    ///
    /// # Panics
    /// If `n` is 0: write `workers(1)`.
    #[track_caller]
    pub fn workers(mut self, n: usize) -> Self {
        assert!(
            n > 0,
            "workers(0): a runtime needs at least one worker; write workers(1)"
        );
        self.config.workers = n;
        self
    }
    /// Same as [`workers`](Self::workers), under tokio's name.
    #[track_caller]
    pub fn worker_threads(self, n: usize) -> Self {
        self.workers(n)
    }
    /// Bulk-pool workers (default: one per core; 0: a single pool).
    pub fn bulk_workers(mut self, n: usize) -> Self {
        self.config.bulk_workers = n;
        self
    }
    /// The state directory (default `PAGEGEN_STATE_DIR` or `./.pagegen`).
    pub fn state_dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.config.state_dir = dir.into();
        self.temporary_state = false;
        self
    }
    /// A fresh state directory under the system's temporary directory, removed when the runtime
    /// drops (what `#[pagegen::test]` uses: tests share no learned state).
    pub fn temporary_state(mut self) -> Self {
        let n = TEMP_STATE.fetch_add(1, Ordering::Relaxed);
        self.config.state_dir =
            std::env::temp_dir().join(format!("pagegen-{}-{n}", std::process::id()));
        self.temporary_state = true;
        self
    }
    /// Memory pool size, bytes (default: from the cgroup limit or RAM).
    pub fn memory_pool(mut self, bytes: u64) -> Self {
        self.config.memory_pool = Some(bytes);
        self
    }
    /// Serves Prometheus metrics on `GET /metrics` at `addr` (default: off; the `metrics_addr`
    /// knob). Port 0 picks a free port: read it back with [`Runtime::metrics_addr`]. Any address
    /// given here is taken as explicit, loopback or not; the endpoint has no authentication.
    pub fn metrics_addr(mut self, addr: std::net::SocketAddr) -> Self {
        self.config.metrics_addr = Some(addr);
        self
    }
    /// Background training (default on).
    pub fn trainer(mut self, on: bool) -> Self {
        self.config.trainer = on;
        self
    }
    /// Replaces the whole configuration.
    pub fn config(mut self, config: Config) -> Self {
        self.config = config;
        self
    }
    /// The configuration so far.
    pub fn config_ref(&self) -> &Config {
        &self.config
    }
    /// Replaces the default pools with explicit ones: the first added is the latency pool
    /// (`PoolId(0)`), the second the bulk pool (`PoolId(1)`); `workers`, `bulk_workers`,
    /// `bulk_nice` and `slice_us` then no longer apply.
    pub fn pool(mut self, spec: PoolSpec) -> Self {
        self.pools.push(spec);
        self
    }
    /// Registers a class when the runtime is built.
    pub fn class(mut self, spec: ClassSpec) -> Self {
        self.classes.push(spec);
        self
    }
    /// Thread name prefix.
    pub fn thread_name(mut self, name: impl Into<String>) -> Self {
        self.thread_name = name.into();
        self
    }
    /// tokio's drivers for `tokio::net`/`tokio::time` inside tasks (default on).
    pub fn tokio_compat(mut self, on: bool) -> Self {
        self.tokio_compat = on;
        self
    }
    /// Poll instrumentation (default on; off, CPU accounts stay 0).
    pub fn poll_timing(mut self, on: bool) -> Self {
        self.poll_timing = on;
        self
    }
    /// The clock admission and enforcement read (default: the real clock).
    pub fn clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = Some(clock);
        self
    }
    /// Adds a hook, called after pagegen's own and after hooks added before it.
    pub fn hook<H: PollHook>(self, hook: H) -> Builder<(U, H)> {
        Builder {
            config: self.config,
            user: (self.user, hook),
            classes: self.classes,
            thread_name: self.thread_name,
            tokio_compat: self.tokio_compat,
            poll_timing: self.poll_timing,
            temporary_state: self.temporary_state,
            clock: self.clock,
            pools: self.pools,
        }
    }

    /// Wires everything (see the module docs) and starts the threads.
    ///
    /// # Errors
    /// The state directory is locked by another process or cannot be created, a thread cannot
    /// start, a class cannot be registered, or `metrics_addr` cannot be bound.
    pub fn build(self) -> io::Result<Runtime> {
        let cfg = self.config;
        let clock: Arc<dyn Clock> = self.clock.unwrap_or_else(|| Arc::new(RealClock::new()));
        let dir = StateDir::open(&cfg.state_dir).map_err(io::Error::other)?;
        let registry =
            Arc::new(ClassRegistry::open(dir.path().join("classes")).map_err(io::Error::other)?);
        let io = pagegen_io::Io::global();
        registry.subscribe(io.classes().clone());
        registry.subscribe(Arc::new(ClassArenas::heavy_only(HEAVY_CLASS_BYTES)));

        let mut model_cfg = ModelConfig::default();
        model_cfg.deployed.pin = cfg.predictor;
        let recent = recent_profiles(&dir, &model_cfg);
        let mut model =
            ModelRuntime::open(dir, clock.clone(), model_cfg).map_err(io::Error::other)?;
        report_recovery(&model);
        if cfg.trainer {
            if let Err(e) = crate::trainer::start(&mut model, cfg.trainer_interval) {
                tracing::warn!(error = %e, "the model trainer did not start; serving without retraining");
            }
        }
        let model = Arc::new(model);
        let predictor = model.predictor();
        registry.subscribe(predictor.clone());
        // The baselines keep no checkpoint of their own: they re-learn from the newest stored
        // profiles, so a restart (also after SIGKILL) predicts as the last run had learned.
        for r in &recent {
            pagegen_model::Predictor::observe(&*predictor, r);
        }

        let memory = {
            let bytes = cfg.memory_pool.unwrap_or_else(default_pool_bytes);
            // Kept for small budgets: a storm of large requests fills the pool only down to it,
            // so a light page's floor budget is admitted at once (pagegen_alloc::pool).
            let reserve = (bytes as f64 * cfg.mem_reserve) as u64;
            MemoryPool::with_small_reserve(bytes, reserve, cfg.mem_floor.max(reserve / 8))
        };
        let decisions = Arc::new(Decisions::default());
        let specs = if self.pools.is_empty() {
            let mut latency = PoolSpec::new("latency", cfg.workers);
            let mut bulk = PoolSpec::new("bulk", cfg.bulk_workers.max(1))
                .nice(cfg.bulk_nice)
                .sched_idle(cfg.bulk_sched_idle);
            if let Some(s) = cfg.slice {
                latency = latency.slice(s);
                bulk = bulk.slice(s);
            }
            let mut v = vec![latency];
            if cfg.bulk_workers > 0 {
                v.push(bulk);
            }
            v
        } else {
            self.pools
        };
        let has_bulk = specs.len() > 1;
        let workers: Vec<usize> = specs.iter().map(|p| p.workers).collect();
        let pool_names: Vec<String> = specs.iter().map(|p| p.name.clone()).collect();
        let admission = Admission::new(memory, &workers, decisions.clone());
        let histograms = Arc::new(RequestHistograms::default());
        let recorder = Recorder::start(
            model.clone(),
            decisions.clone(),
            cfg.profile.then(|| histograms.clone()),
        )?;
        let grants = GrantPolicy {
            bulk_threshold_ns: cfg.bulk_threshold.as_nanos() as u64,
            tail_threshold_ns: cfg.tail_threshold.map_or(u64::MAX, |d| d.as_nanos() as u64),
            has_bulk,
            margin: cfg.mem_margin,
            mem_floor: cfg.mem_floor,
            default_wall_ns: cfg.timeout.map_or(u64::MAX, |d| d.as_nanos() as u64),
        };
        let checkpoints = Arc::new(Checkpoints::new(
            grants,
            decisions.clone(),
            admission.memory().clone(),
            Some(registry.clone()),
        ));
        let engine = Engine::new(Parts {
            clock: clock.clone(),
            registry: registry.clone(),
            predictor,
            grants,
            admission: admission.clone(),
            decisions: decisions.clone(),
            recorder,
            checkpoints: checkpoints.clone(),
            histograms,
            wait: cfg.admission_wait,
            config: cfg.clone(),
        })?;

        let hooks: Hooks = (
            AllocHook::new(),
            if cfg.profile {
                ProfileHook::new(cfg.perf_sample_every)
            } else {
                ProfileHook::without_counters()
            },
            (
                if cfg.profile {
                    EnforceHook::new(clock, decisions, has_bulk).with_checkpoints(checkpoints)
                } else {
                    EnforceHook::new(clock, decisions, has_bulk)
                },
                EngineHook(engine.clone()),
            ),
        );
        let mut b = ExecBuilder::new()
            .hook((hooks, self.user))
            .driver(Arc::new(io.clone()))
            .class_registry(registry)
            .thread_name(self.thread_name)
            .tokio_compat(self.tokio_compat)
            .tokio_workers(cfg.tokio_workers)
            .poll_timing(self.poll_timing);
        if cfg.shares == SharesMode::Outstanding {
            b = b.shares_policy(OutstandingShares::new(admission));
        }
        for p in specs {
            b = b.pool(p);
        }
        for spec in self.classes {
            b = b.class(spec);
        }
        let inner = b.build()?;
        let metrics_addr = cfg.metrics_addr;
        let mut rt = Runtime {
            metrics: None,
            inner: Some(inner),
            engine: Some(engine),
            model: Some(model),
            temp_dir: self.temporary_state.then_some(cfg.state_dir.clone()),
            config: cfg,
            pools: pool_names,
        };
        if let Some(addr) = metrics_addr {
            let registry = crate::metrics::registry(&rt);
            rt.metrics = Some(crate::metrics::endpoint::Endpoint::start(addr, registry)?);
        }
        Ok(rt)
    }
}

/// Profiles replayed into the baselines at start.
pub const WARM_START_RECORDS: usize = 4096;

fn recent_profiles(dir: &StateDir, cfg: &ModelConfig) -> Vec<pagegen_core::ProfileRecord> {
    match pagegen_model::ProfileStore::open(dir.profiles(), cfg.store)
        .and_then(|(mut s, _)| s.read_recent(WARM_START_RECORDS))
    {
        Ok((records, _)) => records,
        Err(e) => {
            tracing::warn!(error = %e, "cannot replay stored profiles; predictors start cold");
            Vec::new()
        }
    }
}

fn report_recovery(model: &ModelRuntime) {
    tracing::debug!(start = ?model.start, recovery = ?model.recovery, "model state opened");
}

/// The memory pool's default size: [`CGROUP_SHARE`] of the cgroup limit, else [`RAM_SHARE`] of
/// physical memory, else 1 GiB.
pub fn default_pool_bytes() -> u64 {
    let cgroup = std::fs::read_to_string("/proc/self/cgroup")
        .ok()
        .and_then(|m| pagegen_alloc::cgroup_limit(Path::new("/sys/fs/cgroup"), &m).ok());
    if let Some(limit) = cgroup.filter(|&l| l < (1 << 60)) {
        return (limit as f64 * CGROUP_SHARE) as u64;
    }
    let ram = std::fs::read_to_string("/proc/meminfo").ok().and_then(|t| {
        t.lines()
            .find_map(|l| l.strip_prefix("MemTotal:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
    });
    ram.map_or(1 << 30, |kb| ((kb * 1024) as f64 * RAM_SHARE) as u64)
}

/// A running pagegen runtime: the executor with every hook and driver, the request loop's
/// [`Engine`], and the model.
///
/// Dropping it stops the metrics endpoint, then shuts down the executor, then the recorder (which
/// flushes the profile store), then the model (trainer stopped, state directory unlocked).
pub struct Runtime {
    /// Holds the engine and a handle: stopped first.
    metrics: Option<crate::metrics::endpoint::Endpoint>,
    inner: Option<pagegen_executor::Runtime>,
    engine: Option<Arc<Engine>>,
    model: Option<Arc<ModelRuntime>>,
    temp_dir: Option<PathBuf>,
    config: Config,
    /// Pool names by `PoolId`.
    pools: Vec<String>,
}

impl std::fmt::Debug for Runtime {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Runtime")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl Runtime {
    fn exec(&self) -> &pagegen_executor::Runtime {
        self.inner.as_ref().expect("runtime is live until dropped")
    }
    /// A cloneable handle for spawning from elsewhere.
    pub fn handle(&self) -> Handle {
        self.exec().handle()
    }
    /// The request loop's engine.
    pub fn engine(&self) -> &Arc<Engine> {
        self.engine.as_ref().expect("runtime is live until dropped")
    }
    /// The model state.
    pub fn model(&self) -> &Arc<ModelRuntime> {
        self.model.as_ref().expect("runtime is live until dropped")
    }
    /// The configuration it was built with.
    pub fn config(&self) -> &Config {
        &self.config
    }
    /// The pools' names, by `PoolId` (`latency`, `bulk` unless set with [`Builder::pool`]).
    pub fn pool_names(&self) -> &[String] {
        &self.pools
    }
    /// Where the metrics endpoint listens (the port bound when `metrics_addr` asked for 0);
    /// `None` when it is off.
    pub fn metrics_addr(&self) -> Option<std::net::SocketAddr> {
        self.metrics.as_ref().map(|m| m.addr())
    }
    /// Spawns a task; see [`crate::spawn`].
    pub fn spawn<F>(&self, fut: F) -> crate::JoinHandle<F::Output>
    where
        F: std::future::Future + Send + 'static,
        F::Output: Send + 'static,
    {
        self.exec().spawn(fut)
    }
    /// Spawns a task in `class`; see [`Handle::spawn_in`].
    pub fn spawn_in<F>(&self, class: pagegen_core::ClassId, fut: F) -> crate::JoinHandle<F::Output>
    where
        F: std::future::Future + Send + 'static,
        F::Output: Send + 'static,
    {
        self.exec().spawn_in(class, fut)
    }
    /// Runs a blocking closure on the blocking pool.
    pub fn spawn_blocking<F, R>(&self, f: F) -> crate::JoinHandle<R>
    where
        F: FnOnce() -> R + Send + 'static,
        R: Send + 'static,
    {
        self.exec().spawn_blocking(f)
    }
    /// Makes the runtime current on this thread until the guard drops.
    pub fn enter(&self) -> EnterGuard {
        self.exec().enter()
    }
    /// Runs `fut` to completion on this thread with the runtime (and its engine) current.
    ///
    /// # Panics
    /// On a pagegen worker thread.
    #[track_caller]
    pub fn block_on<F: std::future::Future>(&self, fut: F) -> F::Output {
        let _engine = self.engine().enter();
        self.exec().block_on(fut)
    }
    /// Lets tasks finish until `timeout`, then drops the rest and shuts down.
    pub fn shutdown_timeout(mut self, timeout: Duration) {
        if let Some(rt) = self.inner.take() {
            rt.shutdown_timeout(timeout);
        }
    }
}

impl Drop for Runtime {
    fn drop(&mut self) {
        drop(self.metrics.take());
        drop(self.inner.take());
        drop(self.engine.take());
        drop(self.model.take());
        if let Some(dir) = self.temp_dir.take() {
            let _ = std::fs::remove_dir_all(dir);
        }
    }
}
