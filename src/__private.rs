//! What `#[pagegen::main]` and `#[pagegen::test]` expand to. Not public API: names and signatures
//! follow the macros, not semver.

use pagegen_executor::{Builder, Runtime};

/// Process set-up that must happen before any thread starts.
///
/// candle's CPU kernels use rayon, whose global pool would start one thread per core on top of
/// pagegen's workers and fight them for the CPU; a service that wants rayon parallelism says so by
/// setting `RAYON_NUM_THREADS` itself. Environment writes race with threads reading it, hence "first
/// thing in `main`".
pub fn init_main_env() {
    if std::env::var_os("RAYON_NUM_THREADS").is_none() {
        std::env::set_var("RAYON_NUM_THREADS", "1");
    }
}

/// Every worker reaps `pagegen::fs` completions on its own io_uring ring (or the blocking pool
/// where io_uring is unavailable), through the process-wide I/O runtime.
fn io_driver() -> std::sync::Arc<dyn pagegen_core::DriverFactory> {
    std::sync::Arc::new(pagegen_io::Io::global().clone())
}

/// The runtime of `#[pagegen::main]`.
///
/// # Panics
/// When the runtime cannot start (no threads, no epoll): `main` cannot run without it, and the
/// message says why.
#[track_caller]
pub fn main_runtime(workers: Option<usize>) -> Runtime {
    // The allocator hook flushes per-request memory accounts once per poll; with
    // `allocator = false` pagegen's allocator is not installed and the hook sees zero counts.
    let mut b = Builder::new()
        .hook(pagegen_alloc::AllocHook::new())
        .driver(io_driver());
    if let Some(n) = workers {
        b = b.workers(n);
    }
    b.build()
        .unwrap_or_else(|e| panic!("pagegen: cannot start the runtime: {e}"))
}

/// A fresh runtime per `#[pagegen::test]` (one worker unless told otherwise): tests share nothing.
///
/// # Panics
/// When the runtime cannot start.
#[track_caller]
pub fn test_runtime(workers: Option<usize>) -> Runtime {
    Builder::new()
        .driver(io_driver())
        .workers(workers.unwrap_or(1))
        .thread_name("pagegen-test")
        .build()
        .unwrap_or_else(|e| panic!("pagegen: cannot start the test runtime: {e}"))
}

/// Installs pagegen's global allocator ([`crate::alloc::PagegenAlloc`]: jemalloc with per-request
/// accounting) in the crate of `#[pagegen::main]`; `#[pagegen::main(allocator = false)]` leaves it out.
#[doc(hidden)]
#[macro_export]
macro_rules! __pagegen_global_allocator {
    () => {
        #[global_allocator]
        static __PAGEGEN_ALLOC: $crate::alloc::PagegenAlloc = $crate::alloc::PagegenAlloc::new();
    };
}

#[doc(inline)]
pub use crate::__pagegen_global_allocator as global_allocator;
