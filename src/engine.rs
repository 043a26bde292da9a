//! [`Engine`]: the request loop's shared state and its HTTP-free steps, one per runtime.
//!
//! ```text
//! classify (route key → class) → features → predict → grant → admit (wait or shed)
//!   → [the edge spawns the handler with the admitted context] → finish (record for the model)
//! ```
//!
//! The HTTP edge (`crate::serve`) calls these steps with plain values (a method, a matched path, a
//! query), so every step is tested without a server. The composition root (`crate::runtime`) builds
//! the engine and makes it current on every thread of its runtime ([`Engine::current`]).
//!
//! **Classes.** A route's class is named `"{METHOD} {matched path}"` (`GET /product/{id}`), or by its
//! annotation's `class`. Requests that matched no route share one class, [`UNMATCHED`], so a storm
//! of random URLs creates no classes. Registrations go through the runtime's persisted
//! [`ClassRegistry`], whose observers (class arenas, I/O class limits, the model's static baseline,
//! the scheduler) hear each new class or annotation.

use std::cell::RefCell;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering, Ordering::Relaxed};
use std::sync::{Arc, Condvar, Mutex, RwLock};
use std::time::Duration;

use pagegen_core::{
    ClassId, ClassRegistry, ClassSpec, Clock, ConnAccount, Demand, Features, Grant, Outcome,
    ProfileRecord, RequestCtx, RequestId, RouteSpec, Serving,
};
use pagegen_model::{Deployed, Predictor};

use crate::config::Config;
use crate::policy::{Admission, Checkpoints, Decision, Decisions, GrantPolicy, Refusal, Ticket};
use crate::profile::histograms::RequestHistograms;
use crate::profile::record::shed_record;
use crate::profile::{finish_record, Recorder};

/// The class of requests that matched no route.
pub const UNMATCHED: &str = "unmatched";

thread_local! {
    static CURRENT: RefCell<Option<Arc<Engine>>> = const { RefCell::new(None) };
}

/// Restores the previous current engine when dropped.
#[derive(Debug)]
pub(crate) struct EngineGuard(Option<Arc<Engine>>);

impl Drop for EngineGuard {
    fn drop(&mut self) {
        let prev = self.0.take();
        let _ = CURRENT.try_with(|c| *c.borrow_mut() = prev);
    }
}

/// One route as the loop knows it: shared by all its requests, so classifying allocates nothing.
#[derive(Clone, Debug, PartialEq)]
pub struct RouteInfo {
    /// Its class.
    pub class: ClassId,
    /// Its annotation's prior and caps (empty when not annotated).
    pub spec: RouteSpec,
    /// The request method it was classified for.
    pub method: Box<str>,
    /// The matched path; `None` for unmatched requests.
    pub path: Option<Box<str>>,
}

#[derive(Clone, Debug)]
struct RouteEntry {
    class: ClassId,
    spec: RouteSpec,
}

/// Route tables: `(method, matched path)` → route, and annotations keyed by path (any method).
#[derive(Debug, Default)]
struct Routes {
    by_path: HashMap<Box<str>, Vec<Arc<RouteInfo>>>,
    annotated: HashMap<Box<str>, RouteEntry>,
}

/// A request admitted by [`Engine::admit`]: run its handler with [`ctx`](Self::ctx), then give it
/// back to [`Engine::finish`].
#[derive(Debug)]
pub struct Admitted {
    /// The request's context (grant, prediction, accounts).
    pub ctx: Arc<RequestCtx>,
    features: Features,
    /// Who predicted it, and whether the prediction explored (for its record).
    served: (Serving, bool),
    _ticket: Ticket,
}

/// A request refused at admission.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Shed {
    /// Why.
    pub refusal: Refusal,
    /// A retry hint, seconds (the admission wait rounded up), when retrying can help.
    pub retry_after_s: Option<u64>,
}

/// The request loop's state; see the module docs.
pub struct Engine {
    clock: Arc<dyn Clock>,
    registry: Arc<ClassRegistry>,
    predictor: Arc<Deployed>,
    grants: GrantPolicy,
    admission: Arc<Admission>,
    decisions: Arc<Decisions>,
    recorder: Recorder,
    checkpoints: Arc<Checkpoints>,
    histograms: Arc<RequestHistograms>,
    routes: RwLock<Routes>,
    unmatched: ClassId,
    unmatched_route: Arc<RouteInfo>,
    wait: Duration,
    next_id: AtomicU64,
    refused_connections: AtomicU64,
    /// Records waiting for their response to leave ([`Engine::finish_on`]).
    finishing: Finishing,
    config: Config,
}

/// Count of finished requests whose record waits for their response to leave, so that
/// [`Engine::sync_records`] can wait for them. The request path touches only the count (and the
/// lock when a waiter is there and the count reaches zero).
#[derive(Debug, Default)]
struct Finishing {
    n: AtomicUsize,
    /// Waiters in `wait` (tests and tools).
    waiters: AtomicUsize,
    lock: Mutex<()>,
    zero: Condvar,
}

impl Finishing {
    fn add(&self) {
        self.n.fetch_add(1, Ordering::SeqCst);
    }
    fn done(&self) {
        // SeqCst against `wait`'s register-then-check: either the waiter sees the count at zero
        // or this sees the waiter.
        if self.n.fetch_sub(1, Ordering::SeqCst) == 1 && self.waiters.load(Ordering::SeqCst) > 0 {
            // Under the lock, so a waiter between its check and its wait cannot miss it.
            let _g = self.lock.lock().unwrap_or_else(|e| e.into_inner());
            self.zero.notify_all();
        }
    }
    /// Waits until none is left, or `max` has passed (a response still streaming to a slow
    /// client keeps its record back).
    fn wait(&self, max: Duration) {
        let deadline = std::time::Instant::now() + max;
        let mut g = self.lock.lock().unwrap_or_else(|e| e.into_inner());
        self.waiters.fetch_add(1, Ordering::SeqCst);
        let _leave = Leave(&self.waiters);
        while self.n.load(Ordering::SeqCst) > 0 {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            if left.is_zero() {
                return;
            }
            g = self
                .zero
                .wait_timeout(g, left)
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
    }
}

/// Unregisters a waiter of [`Finishing::wait`] however it returns.
struct Leave<'a>(&'a AtomicUsize);

impl Drop for Leave<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

impl std::fmt::Debug for Engine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Engine")
            .field("grants", &self.grants)
            .field("decisions", &self.decisions.snapshot())
            .finish_non_exhaustive()
    }
}

/// What [`Engine::new`] is built from (the composition root fills it).
#[derive(Debug)]
pub(crate) struct Parts {
    pub clock: Arc<dyn Clock>,
    pub registry: Arc<ClassRegistry>,
    pub predictor: Arc<Deployed>,
    pub grants: GrantPolicy,
    pub admission: Arc<Admission>,
    pub decisions: Arc<Decisions>,
    pub recorder: Recorder,
    pub checkpoints: Arc<Checkpoints>,
    pub histograms: Arc<RequestHistograms>,
    pub wait: Duration,
    pub config: Config,
}

impl Engine {
    pub(crate) fn new(p: Parts) -> std::io::Result<Arc<Self>> {
        let unmatched = p
            .registry
            .register(ClassSpec::new(UNMATCHED))
            .map_err(std::io::Error::other)?;
        Ok(Arc::new(Engine {
            clock: p.clock,
            registry: p.registry,
            predictor: p.predictor,
            grants: p.grants,
            admission: p.admission,
            decisions: p.decisions,
            recorder: p.recorder,
            checkpoints: p.checkpoints,
            histograms: p.histograms,
            routes: RwLock::new(Routes::default()),
            unmatched,
            unmatched_route: Arc::new(RouteInfo {
                class: unmatched,
                spec: RouteSpec::default(),
                method: "".into(),
                path: None,
            }),
            wait: p.wait,
            next_id: AtomicU64::new(1),
            refused_connections: AtomicU64::new(0),
            finishing: Finishing::default(),
            config: p.config,
        }))
    }

    /// The engine of the runtime this thread belongs to (a worker, a blocking thread, or a thread
    /// inside the runtime's `block_on`).
    pub fn current() -> Option<Arc<Engine>> {
        CURRENT.try_with(|c| c.borrow().clone()).ok().flatten()
    }

    /// Makes `self` current on this thread until the guard drops.
    pub(crate) fn enter(self: &Arc<Self>) -> EngineGuard {
        EngineGuard(CURRENT.with(|c| c.replace(Some(self.clone()))))
    }

    /// Forgets this thread's current engine (a runtime thread stopping: its thread-local would
    /// otherwise keep the engine — and the state directory's lock — alive until the OS thread
    /// finished exiting, after the runtime's drop had returned).
    pub(crate) fn leave_thread() {
        let engine = CURRENT.try_with(|c| c.borrow_mut().take()).ok().flatten();
        drop(engine);
    }

    /// The decision counters.
    pub fn decisions(&self) -> &Arc<Decisions> {
        &self.decisions
    }
    /// The checkpoint policy (extensions of running requests).
    pub fn checkpoints(&self) -> &Arc<Checkpoints> {
        &self.checkpoints
    }
    /// Per-class distributions of predictions, usage and grants (fed by the recorder).
    pub fn histograms(&self) -> &Arc<RequestHistograms> {
        &self.histograms
    }
    /// The admission controller (memory pool, pool load).
    pub fn admission(&self) -> &Arc<Admission> {
        &self.admission
    }
    /// The deployed predictor.
    pub fn predictor(&self) -> &Arc<Deployed> {
        &self.predictor
    }
    /// The class registry.
    pub fn registry(&self) -> &Arc<ClassRegistry> {
        &self.registry
    }
    /// The class of unmatched requests.
    pub fn unmatched_class(&self) -> ClassId {
        self.unmatched
    }
    /// The clock admission stamps contexts with.
    pub fn clock(&self) -> &Arc<dyn Clock> {
        &self.clock
    }
    /// The admission wait.
    pub fn admission_wait(&self) -> Duration {
        self.wait
    }
    /// The runtime's configuration.
    pub fn config(&self) -> &Config {
        &self.config
    }
    /// Counts a connection refused past the connection limit.
    pub(crate) fn count_refused_connection(&self) {
        self.refused_connections.fetch_add(1, Relaxed);
    }
    /// Connections refused past the connection limit so far.
    pub fn refused_connections(&self) -> u64 {
        self.refused_connections.load(Relaxed)
    }

    fn register(&self, name: &str, spec: &RouteSpec) -> ClassId {
        let mut s = ClassSpec::new(name).with_route(spec.clone());
        if let Some(p) = spec.pool {
            s = s.with_pool(p);
        }
        self.registry.register(s).unwrap_or_else(|e| {
            tracing::warn!(class = name, error = %e, "cannot register a class; its requests run as unmatched");
            self.unmatched
        })
    }

    /// Registers an annotated route before its first request: requests of any method whose matched
    /// path is `path` run in class `class` (default: `path`) under `spec`.
    pub fn annotate_path(&self, path: &str, class: Option<&str>, spec: &RouteSpec) -> ClassId {
        self.install(path, class.unwrap_or(path), spec)
    }

    /// Registers class `name` under `spec` and makes it the class of every request whose matched
    /// path is `path`; routes already classified at this path follow it from their next request.
    fn install(&self, path: &str, name: &str, spec: &RouteSpec) -> ClassId {
        let id = self.register(name, spec);
        let mut routes = self.routes.write().unwrap_or_else(|e| e.into_inner());
        routes.annotated.insert(
            path.into(),
            RouteEntry {
                class: id,
                spec: spec.clone(),
            },
        );
        routes.by_path.remove(path);
        id
    }

    /// The class (and caps) of a request: `matched` is the router's matched path, `None` when no
    /// route matched.
    pub fn classify(&self, method: &str, matched: Option<&str>) -> (ClassId, RouteSpec) {
        let r = self.route(method, matched);
        (r.class, r.spec.clone())
    }

    /// The route of a request (see [`classify`](Self::classify)), shared: on a known route this
    /// takes a read lock and allocates nothing.
    pub fn route(&self, method: &str, matched: Option<&str>) -> Arc<RouteInfo> {
        let Some(path) = matched else {
            return self.unmatched_route.clone();
        };
        {
            let routes = self.routes.read().unwrap_or_else(|e| e.into_inner());
            if let Some(list) = routes.by_path.get(path) {
                if let Some(r) = list.iter().find(|r| &*r.method == method) {
                    return r.clone();
                }
            }
        }
        let mut routes = self.routes.write().unwrap_or_else(|e| e.into_inner());
        if let Some(r) = routes
            .by_path
            .get(path)
            .and_then(|list| list.iter().find(|r| &*r.method == method))
        {
            return r.clone();
        }
        let entry = match routes.annotated.get(path) {
            Some(e) => e.clone(),
            None => RouteEntry {
                class: self.register(&format!("{method} {path}"), &RouteSpec::default()),
                spec: RouteSpec::default(),
            },
        };
        let info = Arc::new(RouteInfo {
            class: entry.class,
            spec: entry.spec,
            method: method.into(),
            path: Some(path.into()),
        });
        routes
            .by_path
            .entry(path.into())
            .or_default()
            .push(info.clone());
        info
    }

    /// Binds an annotation met on a handler's first call (no `path` in it): the current request's
    /// route moves to the annotation's class and caps for later requests, and the current request's
    /// grant takes the caps at once (memory, wall time, I/O).
    pub fn bind(
        &self,
        ctx: &RequestCtx,
        method: &str,
        path: &str,
        class: Option<&str>,
        spec: &RouteSpec,
    ) {
        let already = {
            let routes = self.routes.read().unwrap_or_else(|e| e.into_inner());
            routes.annotated.contains_key(path)
        };
        if !already {
            let name = class.map_or_else(|| format!("{method} {path}"), str::to_owned);
            self.install(path, &name, spec);
        }
        crate::policy::grant::cap_live(ctx.grant(), spec);
    }

    /// Predicts a request's demand.
    pub fn predict(&self, class: ClassId, features: &Features) -> Demand {
        self.predictor.predict(class, features)
    }

    /// Predicts, grants and admits a request of `class` (waiting at most the admission wait);
    /// a refusal is counted and recorded for the model.
    ///
    /// # Errors
    /// [`Shed`] when it was not admitted in time.
    pub async fn admit(
        &self,
        class: ClassId,
        route: &RouteSpec,
        features: Features,
    ) -> Result<Admitted, Shed> {
        let served = self.predictor.predict_served(class, &features);
        let demand = served.demand;
        let grant = self
            .grants
            .grant(class, &demand, route, self.learned(class));
        let id = self.next_id.fetch_add(1, Relaxed);
        match self.admission.admit(&grant, &demand, self.wait).await {
            Ok(ticket) => {
                let ctx = RequestCtx::new(RequestId(id), grant, self.clock.now());
                ctx.set_demand(demand);
                Ok(Admitted {
                    ctx,
                    features,
                    served: (served.by, served.explored),
                    _ticket: ticket,
                })
            }
            Err(refusal) => {
                self.recorder
                    .record(shed_record(id, class, features, served, grant));
                let retry_after_s = refusal.retryable().then(|| self.wait.as_secs().max(1));
                Err(Shed {
                    refusal,
                    retry_after_s,
                })
            }
        }
    }

    /// Blocks until every finished request so far reached the model and the profile store was
    /// flushed (tests and tools; never call it on the request path).
    pub fn sync_records(&self) {
        // Records waiting for their responses first (they leave within microseconds of the
        // response; a bound keeps a response streaming to a slow client from holding this up).
        self.finishing.wait(Duration::from_secs(2));
        self.recorder.sync();
    }

    /// The grant a request would get now (for tools and tests; admits nothing).
    pub fn grant_for(&self, class: ClassId, route: &RouteSpec, features: &Features) -> Grant {
        self.grants.grant(
            class,
            &self.predict(class, features),
            route,
            self.learned(class),
        )
    }

    /// Whether a record of `class` reached the predictor in this process, so that its demand is
    /// learned rather than the prior (after a restart the first requests count as not learned
    /// even where a stored model knows the class: the tail rule waits for one record).
    fn learned(&self, class: ClassId) -> bool {
        self.decisions.get(class, Decision::Recorded) > 0
    }

    /// Ends an admitted request: counts the outcome, releases its ticket and hands its profile to
    /// the recorder (never blocking).
    pub fn finish(&self, admitted: Admitted, outcome: Outcome) {
        let record = self.close(admitted, outcome);
        self.recorder.record(record);
    }

    /// [`finish`](Self::finish) for a request served on a connection whose traffic is split per
    /// request: the outcome is counted and the ticket released now; the record goes to the
    /// recorder once the response has left the connection, with the request's whole socket
    /// traffic — its head and body in, its response out ([`ConnAccount`]'s protocol).
    pub fn finish_on(self: &Arc<Self>, admitted: Admitted, outcome: Outcome, conn: &ConnAccount) {
        let ctx = admitted.ctx.clone();
        let mut record = self.close(admitted, outcome);
        self.finishing.add();
        let engine = Arc::clone(self);
        conn.end(
            &ctx,
            Box::new(move |socket| {
                record.usage.socket = socket;
                engine.recorder.record(record);
                engine.finishing.done();
            }),
        );
    }

    /// Counts the outcome, builds the record and releases the request's extensions and ticket.
    fn close(&self, admitted: Admitted, outcome: Outcome) -> ProfileRecord {
        let class = admitted.ctx.class();
        let d = match outcome {
            Outcome::Completed => Decision::Completed,
            Outcome::Failed => Decision::Failed,
            Outcome::Panicked => Decision::Panicked,
            Outcome::Shed => Decision::ShedOverload,
            Outcome::Cancelled(pagegen_core::CancelReason::BudgetExceeded(
                pagegen_core::Resource::Memory,
            )) => Decision::CancelledMemory,
            Outcome::Cancelled(pagegen_core::CancelReason::Deadline) => Decision::CancelledDeadline,
            Outcome::Cancelled(_) => Decision::CancelledOther,
        };
        self.decisions.count(class, d);
        let record = finish_record(
            &admitted.ctx,
            admitted.features,
            admitted.served,
            outcome,
            self.clock.now(),
        );
        // Extensions first, then the ticket (whose release wakes the admission waiters).
        self.checkpoints.release(&admitted.ctx);
        admitted.ctx.clear_cancel_waker();
        drop(admitted);
        record
    }
}
