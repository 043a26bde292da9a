//! The same site on six runtimes, chosen at start (`--runtime NAME`):
//!
//! | name | runtime and edge | predictor | CPU shares | allocator (binary) |
//! |---|---|---|---|---|
//! | `pagegen` | pagegen, `pagegen::http::serve` | model (the gate picks among the recurrent model and the baselines) | outstanding | pagegen's (`site`) |
//! | `pagegen-ewma` | same | EWMA, pinned | outstanding | pagegen's (`site`) |
//! | `pagegen-static` | same | static (annotations and priors only), pinned | equal | pagegen's (`site`) |
//! | `tokio` | tokio multi-thread, `axum::serve` | — | — | jemalloc (`site_jemalloc`) |
//! | `tokio-limits` | same, plus per-route `ConcurrencyLimitLayer` + `LoadShedLayer` ([`LIMITS`]) | — | — | jemalloc (`site_jemalloc`) |
//! | `tokio-system` | same as `tokio` | — | — | the system allocator (`site_system`) |
//!
//! A global allocator is fixed per binary, hence the three binaries; each refuses a runtime that
//! is not its own and names the one to run instead (a comparison must not measure pagegen's
//! allocator under a name that says jemalloc).
//!
//! pagegen variants build their runtime with `Builder::with_config` over [`Config::from_env`]
//! (`pagegen.toml` and `PAGEGEN_*` still apply), then set what the variant and the command line
//! decide: `predictor`, `shares`, `workers` (and as many bulk workers, at nice 10), the state
//! directory, the metrics address; the pinned-predictor variants run without the trainer, whose
//! model they would never serve.

use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use anyhow::Context as _;
use axum::error_handling::HandleErrorLayer;
use axum::http::{header, StatusCode};
use axum::routing::MethodRouter;
use pagegen::runtime::{Builder, Config};
use tower::ServiceBuilder;

use super::data;
use super::pages::{self, Site};
use super::platform::Platform;

/// A global allocator, as each binary installs one.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Allocator {
    /// `pagegen::alloc::PagegenAlloc`: jemalloc with per-request accounting (`site`).
    Pagegen,
    /// Plain jemalloc, `pagegen::alloc::baseline::Jemalloc` (`site_jemalloc`).
    Jemalloc,
    /// `std::alloc::System`, glibc's malloc (`site_system`).
    System,
}

impl Allocator {
    /// The example binary that installs it.
    pub fn binary(self) -> &'static str {
        match self {
            Allocator::Pagegen => "site",
            Allocator::Jemalloc => "site_jemalloc",
            Allocator::System => "site_system",
        }
    }
    /// How `main` names it.
    pub fn describe(self) -> &'static str {
        match self {
            Allocator::Pagegen => "pagegen (jemalloc with per-request accounting)",
            Allocator::Jemalloc => "jemalloc",
            Allocator::System => "system (glibc malloc)",
        }
    }
}

/// A runtime the site can run on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Variant {
    /// pagegen with its model.
    Pagegen,
    /// pagegen with the EWMA baseline pinned.
    PagegenEwma,
    /// pagegen with the static predictor pinned and equal shares.
    PagegenStatic,
    /// tokio + `axum::serve`.
    Tokio,
    /// tokio + `axum::serve` + per-route static limits.
    TokioLimits,
    /// tokio + `axum::serve` on the system allocator.
    TokioSystem,
}

/// Every variant, in the order `--help` lists them.
pub const VARIANTS: [Variant; 6] = [
    Variant::Pagegen,
    Variant::PagegenEwma,
    Variant::PagegenStatic,
    Variant::Tokio,
    Variant::TokioLimits,
    Variant::TokioSystem,
];

impl Variant {
    /// Its `--runtime` name.
    pub fn name(self) -> &'static str {
        match self {
            Variant::Pagegen => "pagegen",
            Variant::PagegenEwma => "pagegen-ewma",
            Variant::PagegenStatic => "pagegen-static",
            Variant::Tokio => "tokio",
            Variant::TokioLimits => "tokio-limits",
            Variant::TokioSystem => "tokio-system",
        }
    }
    /// The variant named `name`.
    pub fn from_name(name: &str) -> Option<Variant> {
        VARIANTS.into_iter().find(|v| v.name() == name)
    }
    /// The allocator it is measured with.
    pub fn allocator(self) -> Allocator {
        match self {
            Variant::Pagegen | Variant::PagegenEwma | Variant::PagegenStatic => Allocator::Pagegen,
            Variant::Tokio | Variant::TokioLimits => Allocator::Jemalloc,
            Variant::TokioSystem => Allocator::System,
        }
    }
    /// Which runtime API the handlers use.
    pub fn platform(self) -> Platform {
        match self.allocator() {
            Allocator::Pagegen => Platform::Pagegen,
            _ => Platform::Tokio,
        }
    }
    /// pagegen's `predictor` and `shares` knobs for it.
    pub fn pagegen_knobs(self) -> Option<(&'static str, &'static str)> {
        match self {
            Variant::Pagegen => Some(("model", "outstanding")),
            Variant::PagegenEwma => Some(("ewma", "outstanding")),
            Variant::PagegenStatic => Some(("static", "equal")),
            _ => None,
        }
    }
}

/// Per-route concurrency limits of `tokio-limits`: requests in flight per route, past which a
/// request is shed at once with a 503 (`LoadShedLayer` over `ConcurrencyLimitLayer`). What an
/// operator would write without measuring each route: a CPU-bound route a couple of requests per
/// worker (more only queue), the memory-bound report a count whose worst case fits in memory
/// (4 × ~230 MiB), I/O and database routes generously, the light home page and the trace replay
/// (whose shape is unknown beforehand) not at all. `workers` scales the CPU-bound ones.
pub fn limit(path: &str, workers: usize) -> Option<usize> {
    match path {
        "/search" => Some(2 * workers),
        "/report/{year}" => Some(4),
        "/feed" => Some(32),
        "/product/{id}" | "/fortunes" => Some(64),
        _ => None,
    }
}

/// [`limit`] for every route of `tokio-limits`, for `--help` and the start-up banner.
pub const LIMITS: &str = "/search 2×workers, /report/{year} 4, /feed 32, /product/{id} 64, /fortunes 64; / and /synthetic unlimited";

/// Adds `tokio-limits`' layers to one route.
fn limited(path: &str, route: MethodRouter<Arc<Site>>, workers: usize) -> MethodRouter<Arc<Site>> {
    match limit(path, workers) {
        Some(n) => route.layer(
            ServiceBuilder::new()
                .layer(HandleErrorLayer::new(|_: tower::BoxError| async {
                    (
                        StatusCode::SERVICE_UNAVAILABLE,
                        [(header::RETRY_AFTER, "1")],
                        "overloaded\n",
                    )
                }))
                .load_shed()
                .concurrency_limit(n),
        ),
        None => route,
    }
}

/// How to run the site.
#[derive(Clone, Debug)]
pub struct Options {
    /// The runtime.
    pub variant: Variant,
    /// Port on 127.0.0.1 (0: a free one).
    pub port: u16,
    /// Worker threads (pagegen: latency workers, and as many bulk workers).
    pub workers: usize,
    /// Generated data; on pagegen also the runtime's learned state.
    pub state_dir: PathBuf,
    /// Products in the catalog.
    pub products: u32,
    /// pagegen's metrics endpoint (`None`: off).
    pub metrics: Option<SocketAddr>,
}

/// What `run` tells its caller once it serves.
#[derive(Clone, Debug)]
pub struct Ready {
    /// Where the site listens.
    pub addr: SocketAddr,
    /// pagegen's metrics endpoint, if on.
    pub metrics: Option<SocketAddr>,
    /// Products in the catalog.
    pub products: usize,
    /// Whether the data was generated now (else reused from the state directory), and how long
    /// that took.
    pub generated: Option<std::time::Duration>,
    /// The pagegen knobs in force (`predictor`, `shares`), on pagegen.
    pub knobs: Option<(&'static str, &'static str)>,
    /// On pagegen, which predictor serves the first requests and why.
    pub serving: Option<String>,
}

/// Makes (or reuses) the data and loads the site.
fn prepare(opts: &Options) -> anyhow::Result<(Site, Option<std::time::Duration>)> {
    let t = Instant::now();
    let (paths, generated) = data::ensure(&opts.state_dir, opts.products)
        .with_context(|| format!("state directory {}", opts.state_dir.display()))?;
    let took = generated.then(|| t.elapsed());
    Ok((pages::load(opts.variant.platform(), paths)?, took))
}

/// Serves the site until `shutdown` completes, then drains. `ready` is called once the listener
/// is bound and the data is loaded, before the first request is accepted.
///
/// # Errors
/// The runtime cannot start, the data cannot be made, or the port cannot be bound.
pub fn run<F>(opts: &Options, ready: impl FnOnce(&Ready), shutdown: F) -> anyhow::Result<()>
where
    F: Future<Output = ()> + Send + 'static,
{
    match opts.variant.pagegen_knobs() {
        Some(knobs) => run_pagegen(opts, knobs, ready, shutdown),
        None => run_tokio(opts, ready, shutdown),
    }
}

fn run_pagegen<F>(
    opts: &Options,
    (predictor, shares): (&'static str, &'static str),
    ready: impl FnOnce(&Ready),
    shutdown: F,
) -> anyhow::Result<()>
where
    F: Future<Output = ()> + Send + 'static,
{
    let mut cfg = Config::from_env()?;
    cfg.set("predictor", predictor)?;
    cfg.set("shares", shares)?;
    cfg.workers = opts.workers;
    cfg.bulk_workers = opts.workers;
    cfg.state_dir = opts.state_dir.clone();
    cfg.metrics_addr = opts.metrics;
    // A pinned predictor never serves the trained model: training would only take CPU.
    cfg.trainer &= predictor == "model";
    // Built first: it locks the state directory, so two instances never generate into it at once.
    let rt = Builder::with_config(cfg)
        .thread_name("site")
        .build()
        .context("starting pagegen")?;
    let (site, generated) = prepare(opts)?;
    let products = site.catalog.len();
    let app = pages::router(Arc::new(site));
    rt.block_on(async {
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", opts.port)).await?;
        ready(&Ready {
            addr: listener.local_addr()?,
            metrics: rt.metrics_addr(),
            products,
            generated,
            knobs: Some((predictor, shares)),
            serving: Some(serving(&rt, predictor)),
        });
        pagegen::http::serve(listener, app)
            .with_graceful_shutdown(shutdown)
            .await?;
        anyhow::Ok(())
    })
}

/// Which predictor serves from the first request, and why (a trained checkpoint in the state
/// directory serves at once; without one the EWMA serves until a training round promotes a model).
fn serving(rt: &pagegen::runtime::Runtime, predictor: &str) -> String {
    use pagegen::model::checkpoint::Start;
    let model = rt.model();
    let now = model.predictor().serving().name();
    let why = match (&model.start, predictor) {
        (_, p) if p != "model" => "pinned".to_owned(),
        (Start::Loaded, _) => "trained checkpoint loaded".to_owned(),
        (Start::Fresh, _) => format!(
            "no trained model yet; the trainer's first round comes after {} s",
            rt.config().trainer_interval.as_secs()
        ),
        (Start::Replaced { moved_to, .. }, _) => {
            format!(
                "the checkpoint was unusable, moved to {}",
                moved_to.display()
            )
        }
    };
    format!("{now} ({why})")
}

fn run_tokio<F>(opts: &Options, ready: impl FnOnce(&Ready), shutdown: F) -> anyhow::Result<()>
where
    F: Future<Output = ()> + Send + 'static,
{
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(opts.workers)
        .thread_name("site")
        .enable_all()
        .build()
        .context("starting tokio")?;
    let (site, generated) = prepare(opts)?;
    let site = Arc::new(site);
    let products = site.catalog.len();
    let app = match opts.variant {
        Variant::TokioLimits => {
            let workers = opts.workers;
            pages::routes(site, |path, route| limited(path, route, workers))
        }
        _ => pages::router(site),
    };
    rt.block_on(async {
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", opts.port)).await?;
        ready(&Ready {
            addr: listener.local_addr()?,
            metrics: None,
            products,
            generated,
            knobs: None,
            serving: None,
        });
        axum::serve(listener, app)
            .with_graceful_shutdown(shutdown)
            .await?;
        anyhow::Ok(())
    })
}
