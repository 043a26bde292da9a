//! Route annotations: `#[pagegen::route(...)]` on a handler, or [`Route`] built by hand for a route
//! that cannot be annotated.
//!
//! An annotation is a new class's **prior** (what the static baseline predicts before anything was
//! learned) and its **caps** (what the policy never grants beyond, whatever the model predicts):
//!
//! | key | unit | prior of | cap: past it the request is |
//! |---|---|---|---|
//! | `cpu` | `ns`, `us`/`µs`, `ms`, `s` | CPU time | demoted to the bulk pool, never cancelled |
//! | `mem` | `B`, `KiB`, `MiB`, `GiB` (`KB`, `MB`, `GB`: powers of 1000) | peak memory | cancelled, 503 |
//! | `io_ops` | count | file operations | — |
//! | `io_depth` | count | — | held to that many file operations in flight |
//! | `io_bw` | a memory unit per second (`50MiB/s`) | — | paced to that file bandwidth |
//! | `timeout` | like `cpu` | wall time | cancelled, 503 + `Retry-After` |
//! | `pool` | `"latency"` or `"bulk"` | starting pool | — |
//!
//! `class` names the class (default: the route's method and matched path, `GET /search`); `path`
//! (the route's path as written in the router, `/search` or `/product/{id}`) registers the
//! annotation before the first request. Without `path` it binds on the handler's first call: that
//! first request ran under the defaults, later ones under the annotation.
//!
//! What runs before the handler body — axum extractors (`Json`, `Form`, `Query`), body reads —
//! runs inside the request's task and is charged to it, but the annotation binds only when the body
//! starts; with `path` it is known from the first request on.

use std::time::Duration;

use pagegen_core::{PoolId, RouteSpec};

/// One route's annotation, as `#[pagegen::route]` writes it into a `static` (every field a constant,
/// so the macro can also submit it to the registry of annotated paths).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct RouteAnnotation {
    /// The annotated function's name (for messages).
    pub handler: &'static str,
    /// Class name; `None`: the route's method and matched path.
    pub class: Option<&'static str>,
    /// The route's path as written in the router; `None`: bind on the first call.
    pub path: Option<&'static str>,
    /// CPU, ns.
    pub cpu_ns: Option<u64>,
    /// Peak memory, bytes.
    pub mem_bytes: Option<u64>,
    /// File operations per request.
    pub io_ops: Option<u32>,
    /// File operations in flight.
    pub io_depth: Option<u32>,
    /// File bandwidth, bytes per second.
    pub io_bytes_per_sec: Option<u64>,
    /// Wall-clock limit, ns.
    pub timeout_ns: Option<u64>,
    /// Starting pool: 0 latency, 1 bulk.
    pub pool: Option<u8>,
}

impl RouteAnnotation {
    /// The annotation as core's [`RouteSpec`].
    pub fn spec(&self) -> RouteSpec {
        RouteSpec {
            cpu: self.cpu_ns.map(Duration::from_nanos),
            mem: self.mem_bytes,
            io_ops: self.io_ops,
            io_depth: self.io_depth,
            io_bytes_per_sec: self.io_bytes_per_sec,
            timeout: self.timeout_ns.map(Duration::from_nanos),
            pool: self.pool.map(PoolId),
        }
    }
}

/// An annotated path, submitted by `#[pagegen::route(path = ...)]` at link time (the `inventory`
/// crate's distributed registry) so `serve` knows it before the first request.
#[derive(Debug)]
pub struct RouteEntry(pub &'static RouteAnnotation);

inventory::collect!(RouteEntry);

/// Every annotation submitted with a `path`, in no particular order.
pub fn annotated_paths() -> impl Iterator<Item = &'static RouteAnnotation> {
    inventory::iter::<RouteEntry>.into_iter().map(|e| e.0)
}

/// The builder form of `#[pagegen::route]`, for routes that cannot be annotated (a closure, a
/// handler from another crate): give it to [`crate::http::Serve::route`].
///
/// ```
/// use std::time::Duration;
/// let r = pagegen::route::Route::new("/search")
///     .class("search")
///     .cpu(Duration::from_millis(20))
///     .mem(64 << 20)
///     .timeout(Duration::from_secs(2));
/// assert_eq!(r.spec().mem, Some(64 << 20));
/// ```
#[derive(Clone, Debug, PartialEq)]
pub struct Route {
    pub(crate) path: String,
    pub(crate) class: Option<String>,
    pub(crate) spec: RouteSpec,
}

impl Route {
    /// A route at `path` (as written in the router), with no budget yet.
    pub fn new(path: impl Into<String>) -> Self {
        Route {
            path: path.into(),
            class: None,
            spec: RouteSpec::default(),
        }
    }
    /// From an annotation with a path (`None` without one).
    pub fn from_annotation(a: &RouteAnnotation) -> Option<Self> {
        Some(Route {
            path: a.path?.to_owned(),
            class: a.class.map(str::to_owned),
            spec: a.spec(),
        })
    }
    /// Names the class (default: method and matched path).
    pub fn class(mut self, name: impl Into<String>) -> Self {
        self.class = Some(name.into());
        self
    }
    /// CPU prior and cap (past it: demoted).
    pub fn cpu(mut self, d: Duration) -> Self {
        self.spec.cpu = Some(d);
        self
    }
    /// Memory prior and cap, bytes (past it: cancelled).
    pub fn mem(mut self, bytes: u64) -> Self {
        self.spec.mem = Some(bytes);
        self
    }
    /// File operations per request (prior).
    pub fn io_ops(mut self, n: u32) -> Self {
        self.spec.io_ops = Some(n);
        self
    }
    /// File operations in flight (cap).
    pub fn io_depth(mut self, n: u32) -> Self {
        self.spec.io_depth = Some(n);
        self
    }
    /// File bandwidth, bytes per second (cap).
    pub fn io_bw(mut self, bytes_per_sec: u64) -> Self {
        self.spec.io_bytes_per_sec = Some(bytes_per_sec);
        self
    }
    /// Wall-clock limit (past it: cancelled, 503 + `Retry-After`).
    pub fn timeout(mut self, d: Duration) -> Self {
        self.spec.timeout = Some(d);
        self
    }
    /// Starting pool.
    pub fn pool(mut self, pool: PoolId) -> Self {
        self.spec.pool = Some(pool);
        self
    }
    /// The path.
    pub fn path(&self) -> &str {
        &self.path
    }
    /// The budgets.
    pub fn spec(&self) -> &RouteSpec {
        &self.spec
    }
}
