//! # pagegen
//!
//! An async runtime for page-generation services that **profiles** how each route behaves,
//! **predicts** what each request is about to need, and **allocates** CPU share, memory budget and I/O
//! depth to its class before it runs. See the repository README and `DESIGN.md` for the request loop.
//!
//! This crate is the facade users import. Moving from tokio is a rename:
//!
//! | tokio | pagegen |
//! |---|---|
//! | `#[tokio::main]`, `#[tokio::test]` | [`#[pagegen::main]`](main), [`#[pagegen::test]`](test) |
//! | `tokio::spawn`, `tokio::task::spawn_blocking` | [`spawn`], [`spawn_blocking`] |
//! | — | [`spawn_in`]`(class, fut)`: work in a request class, CPU shared by [`Shares`] |
//! | `tokio::task::{yield_now, JoinHandle, JoinError}` | [`task`] |
//! | `tokio::runtime::{Builder, Runtime, Handle}` | [`runtime`] |
//! | `hyper_util::rt::TokioExecutor` | [`rt::HyperExecutor`] |
//! | `tokio::fs` | [`fs`] |
//! | `axum::serve(listener, router)` | [`http::serve`]`(listener, router)`: every request classified, predicted, granted, admitted, run in its class and pool, enforced and recorded |
//! | — | [`#[pagegen::route(cpu = "20ms", mem = "64MiB", timeout = "2s")]`](macro@route) on a handler: a class's prior and caps |
//!
//! The root crate is the glue none of the subsystems may own: [`runtime`] (the composition root),
//! [`engine`] (the request loop's HTTP-free steps), [`policy`] (Demand → Grant, admission,
//! enforcement, shares), [`profile`] (poll statistics → accounts → records for the model),
//! [`metrics`] (Prometheus exposition of all of it, read at scrape time; off unless `metrics_addr`
//! is set) and the HTTP edge ([`http`]). `policy` and `profile` never name an HTTP type.
//!
//! `tokio::net`, `tokio::time` and `tokio::sync` keep working inside pagegen tasks; the limits
//! (`tokio::spawn` bypasses pagegen, tokio's coop budget and paused clock) are in
//! [`pagegen_executor::compat`].
#![forbid(unsafe_code)]
#![warn(missing_docs)]

#[doc(hidden)]
pub mod __private;
#[cfg(feature = "cli")]
pub mod cli;
pub mod config;
pub mod engine;
pub mod metrics;
pub mod policy;
pub mod profile;
pub mod route;
pub mod rt;
pub mod runtime;
mod serve;
pub mod task;
pub mod tracing;
pub mod trainer;

/// The HTTP edge: serve an axum router (or any tower service) on pagegen with the request loop.
pub mod http {
    pub use crate::serve::client;
    pub use crate::serve::client::Client;
    pub use crate::serve::{
        serve, serve_with, Classifier, LoopLayer, LoopService, MatchedPathClassifier, Serve,
    };
}

/// Memory: pagegen's global allocator, per-request accounting, class arenas and budgets.
pub use pagegen_alloc as alloc;
pub use pagegen_core as core;
pub use pagegen_core::{ClassId, ClassSpec, Demand, Grant, RequestCtx, RouteSpec, Shares, Usage};
pub use pagegen_executor::{spawn, spawn_blocking, spawn_in, JoinError, JoinHandle};
/// File I/O with `tokio::fs`/`std::fs` names, on io_uring per worker (blocking pool fallback),
/// bounded per class and written into each request's I/O account.
pub use pagegen_io::fs;
/// TCP sockets on the workers' own io_uring rings (readiness sets where io_uring is unavailable),
/// with tokio's `AsyncRead`/`AsyncWrite`, charged to the request being served.
pub use pagegen_io::net;
pub use pagegen_macros::{main, route, test};
/// Prediction: features, profile store, predictors and the trainer.
pub use pagegen_model as model;
