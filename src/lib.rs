//! # pagegen
//!
//! An async runtime for page-generation services that **profiles** how each route behaves,
//! **predicts** what each request is about to need, and **allocates** CPU share, memory budget and I/O
//! depth to its class before it runs. See the repository README and `DESIGN.md` for the request loop.
//!
//! This crate is the facade users import. Today it re-exports the shared vocabulary
//! ([`core`]); the executor, allocator, I/O and model crates join it as their issues land.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub use pagegen_core as core;
pub use pagegen_core::{ClassId, ClassSpec, Demand, Grant, RequestCtx, RouteSpec, Shares, Usage};
