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
//!
//! `tokio::net`, `tokio::time` and `tokio::sync` keep working inside pagegen tasks; the limits
//! (`tokio::spawn` bypasses pagegen, tokio's coop budget and paused clock) are in
//! [`pagegen_executor::compat`].
#![forbid(unsafe_code)]
#![warn(missing_docs)]

#[doc(hidden)]
pub mod __private;
pub mod rt;
pub mod runtime;
pub mod task;
pub mod trainer;

/// Memory: pagegen's global allocator, per-request accounting, class arenas and budgets.
pub use pagegen_alloc as alloc;
pub use pagegen_core as core;
pub use pagegen_core::{ClassId, ClassSpec, Demand, Grant, RequestCtx, RouteSpec, Shares, Usage};
pub use pagegen_executor::{spawn, spawn_blocking, spawn_in, JoinError, JoinHandle};
/// File I/O with `tokio::fs`/`std::fs` names, on io_uring per worker (blocking pool fallback),
/// bounded per class and written into each request's I/O account.
pub use pagegen_io::fs;
pub use pagegen_macros::{main, test};
/// Prediction: features, profile store, predictors and the trainer.
pub use pagegen_model as model;
