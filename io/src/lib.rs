//! # pagegen-io — file I/O that pagegen can see and shape per request class
//!
//! Page generation reads templates, assets and data files. This crate runs those operations on
//! **io_uring** (one ring per executor worker) or, where io_uring cannot be set up, on a **blocking
//! pool** with the same API, limits and profile; it bounds each class's operations in flight and
//! bytes per second, queues classes fairly by shares when the device is contended, and writes every
//! operation into its request's I/O account. Per request, the grant bounds operations in flight
//! (`Grant::io_depth`, through `IoAccount::try_begin_op`, which never overshoots) and paces bytes
//! (`Grant::io_bytes_per_sec`, through `IoAccount::reserve_bandwidth`: an operation waits for its
//! start time before it joins its class's queue, holding no slot).
//!
//! | module | what |
//! |---|---|
//! | [`fs`] | `read`, `read_to_string`, `write`, `metadata`, [`File`](fs::File) — tokio/std names |
//! | [`net`] | [`TcpListener`](net::TcpListener), [`TcpStream`](net::TcpStream) on the worker's readiness set (or its ring), tokio's `AsyncRead`/`AsyncWrite` |
//! | [`Io`] | one runtime: backend, class limits, reaper thread; [`Io::block_on`]; the [`DriverFactory`](pagegen_core::DriverFactory) |
//! | [`IoDriver`] | the per-worker [`Driver`](pagegen_core::Driver): reap, park, unpark |
//! | [`IoClasses`] | per-class depth and bandwidth, fair queue by shares; the [`ClassObserver`](pagegen_core::ClassObserver) |
//! | [`Backend`], [`SocketPath`] | which backend, and how it is chosen (`PAGEGEN_IO=blocking`, probing); how sockets wait (`PAGEGEN_IO_SOCKETS`) |
//!
//! Internals, one concept per file: `op` (an operation's lifecycle — the memory-safety protocol,
//! read it first), `ring` (a thread's ring, its inbox and thread-local), `entry` (an op's
//! submission entry), `chain` (`fs::read` as one linked submission into a direct descriptor),
//! `pool` (blocking pool), `fair` (the admission state machine), `profile` (per-request
//! accounting), `ready` (the per-worker readiness set for sockets on the readiness path), `sys`
//! (system calls).
//!
//! **Unsafe code** lives only in `sys` (FFI), `ring` (pushing entries that carry raw pointers) and
//! `baseline` (the benchmarks' bare io_uring loop, not part of the API); every other module forbids
//! it.
//!
//! ## Using it with an executor
//! The executor calls `Io::worker_driver` on each worker thread, then `poll_nonblocking` between
//! tasks and `park` when idle (see `pagegen_core::driver`). Futures may be polled and dropped on
//! any thread: an operation belongs to the ring it was submitted to, cancellation travels to that
//! ring through its inbox, and the operation's buffer lives until the kernel's completion.
//! Without a pagegen worker on the thread (tests, tokio tasks), operations go to the runtime's
//! reaper thread, or use [`Io::block_on`], which installs a driver on the calling thread.
#![warn(missing_docs)]
#![deny(unsafe_code)]

mod backend;
#[allow(unsafe_code)]
#[doc(hidden)]
pub mod baseline;
mod chain;
mod classes;
mod driver;
mod entry;
mod error;
mod fair;
mod file;
pub mod fs;
mod handle;
mod metadata;
pub mod net;
mod op;
mod pool;
mod profile;
mod ready;
#[allow(unsafe_code)]
mod ring;
#[allow(unsafe_code)]
mod sys;

pub use backend::{uring_available, Backend, BackendChoice, SocketPath, ENV_VAR, SOCKETS_ENV_VAR};
pub use classes::{IoClasses, DEFAULT_DEVICE_DEPTH};
pub use driver::IoDriver;
pub use error::IoError;
pub use fair::ClassLimits;
pub use handle::{Io, IoGuard};
pub use sys::{drop_cache, drop_cache_range, no_readahead};
