//! # pagegen-alloc — memory accounting, per-class arenas and budgets
//!
//! pagegen's global allocator is jemalloc with three additions, each costing a few nanoseconds at
//! most on the allocation path (figures in `benches/README.md`, "Memory"):
//!
//! 1. **Per-request accounting.** Every allocation and free adds to a const-initialised,
//!    destructor-free thread-local cell (module `cell`, private); [`AllocHook`] zeroes it
//!    before each poll and folds it into the request's `MemAccount` once after it (core's *flush once
//!    per poll*). Bytes allocated and freed, counts, a log2 size histogram, **signed** net bytes
//!    (a request that frees what another allocated goes negative), peak net bytes, and bytes freed
//!    in the poll that allocated them (an approximation of short lifetimes, documented in the cell).
//! 2. **Per-class arenas.** [`ClassArenas`] (a `ClassObserver`) gives each class its own jemalloc
//!    arena over its own slot of a reserved address range; a poll of a class allocates through
//!    `mallocx(MALLOCX_ARENA | MALLOCX_TCACHE)` with this thread's explicit tcache for the class
//!    (bounded per thread, destroyed by the `thread_stopping` hook). Frees find the owning class by
//!    a range check, so a free across classes goes home, and [`ArenaStats`] stays truthful.
//!    Because jemalloc leaves its `malloc`/`free` fast paths when given explicit flags, a class
//!    arena costs a few ns per call; [`ClassArenas::heavy_only`] isolates only memory-heavy classes.
//! 3. **Budgets at poll boundaries** ([`MemCheck`]): soft, 50 % and 90 % checkpoints and a cancel
//!    verdict past the hard limit; the process-wide [`MemoryPool`] bounds the sum of grants.
//!
//! ## Wiring (for the facade)
//! - `#[global_allocator] static A: PagegenAlloc = PagegenAlloc::new();`
//! - add [`AllocHook`] to the executor's hook tuple; it needs nothing else;
//! - subscribe [`ClassArenas`] (or [`ClassArenas::heavy_only`]) to the class registry;
//! - size a [`MemoryPool`] (configured, or [`MemoryPool::from_cgroup`]) and take a [`Reservation`]
//!   per admitted request;
//! - on a timer or a metrics scrape: [`ArenaStats::refresh`], then [`ArenaStats::all`]; after a
//!   class's burst, [`ArenaStats::purge`] or [`ArenaStats::decay`].
//!
//! Accounting is exact for Rust allocations made through the global allocator inside a bracket;
//! allocations by C code calling `malloc` directly (jemalloc serves them too, unprefixed) are not
//! attributed to any request.
//!
//! ## Unsafe
//! `unsafe` is denied crate-wide and allowed only under `raw` (FFI to jemalloc, the extent
//! hooks, the `GlobalAlloc` impl, the glibc baseline); its module docs hold the protocols.
#![deny(unsafe_code)]
#![warn(missing_docs)]

mod arena;
mod budget;
mod cell;
mod error;
mod hook;
mod pool;
mod raw;
mod stats;
mod tcache;

pub use arena::{ClassArenas, MAX_CLASS_ARENAS};
pub use budget::MemCheck;
pub use error::AllocError;
pub use hook::AllocHook;
pub use pool::{cgroup_limit, MemoryPool, Reservation};
pub use raw::global::PagegenAlloc;
pub use stats::{size_class, tcache_max, ArenaStats, ClassMemStats};
pub use tcache::{thread_tcaches, MAX_TCACHES_PER_THREAD};

/// Allocators to compare against in benchmarks: what users run without pagegen.
pub mod baseline {
    pub use crate::raw::glibc::GlibcMalloc;
    pub use crate::raw::global::ExplicitTcache;
    pub use tikv_jemallocator::Jemalloc;
}
