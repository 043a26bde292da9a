//! What `#[pagegen::main]`, `#[pagegen::test]` and `#[pagegen::route]` expand to. Not public API:
//! names and signatures follow the macros, not semver. Every runtime here comes from the one
//! composition root, [`crate::runtime::Builder`].

pub use crate::route::{RouteAnnotation, RouteEntry};
pub use inventory;

use crate::runtime::{Builder, Runtime};

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

/// The runtime of `#[pagegen::main]`: the configuration from `pagegen.toml` and `PAGEGEN_*`, the
/// attribute's `workers` last.
///
/// # Panics
/// When the runtime cannot start (a bad configuration value, a locked state directory, no
/// threads): `main` cannot run without it, and the message says why.
#[track_caller]
pub fn main_runtime(workers: Option<usize>) -> Runtime {
    let mut b = Builder::from_env().unwrap_or_else(|e| panic!("pagegen: {e}"));
    if let Some(n) = workers {
        b = b.workers(n);
    }
    b.build()
        .unwrap_or_else(|e| panic!("pagegen: cannot start the runtime: {e}"))
}

/// A fresh runtime per `#[pagegen::test]`: one latency worker unless told otherwise, one bulk
/// worker, a temporary state directory, no trainer thread — tests share nothing, and every hook of
/// a real runtime is there.
///
/// # Panics
/// When the runtime cannot start.
#[track_caller]
pub fn test_runtime(workers: Option<usize>) -> Runtime {
    Builder::new()
        .workers(workers.unwrap_or(1))
        .bulk_workers(1)
        .temporary_state()
        .trainer(false)
        .thread_name("pagegen-test")
        .build()
        .unwrap_or_else(|e| panic!("pagegen: cannot start the test runtime: {e}"))
}

/// Binds a handler's annotation on its call (see [`crate::route`](macro@crate::route)): with a
/// `path` it was registered before the first request, and this only applies its caps to the
/// current request if they were not; without one, it binds the current request's route to it.
pub fn bind_route(a: &'static RouteAnnotation) {
    crate::serve::bind_current(a);
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
