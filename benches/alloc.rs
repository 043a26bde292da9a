//! Allocation micro-benchmarks: glibc malloc, plain jemalloc and pagegen's allocator, called
//! directly as `GlobalAlloc` values side by side in one run.
//!
//! pagegen is measured in two modes on the bench thread: `pagegen_acct` (outside any request:
//! accounting only, default arena — the goal is ≤ +1 ns per pair over `jemalloc`) and
//! `pagegen_class` (inside a poll bracket of a class with its own arena and explicit tcache — the
//! goal is ≤ +5 ns per pair same-class). The `mix_cross20` group frees 20 % objects that another
//! class allocated. `PAGEGEN_BENCH_SMOKE=1` runs a tiny configuration.
//!
//! Run: `cargo bench --bench alloc` (figures in `benches/README.md`, "Memory").

use std::alloc::{GlobalAlloc, Layout};
use std::hint::black_box;
use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use pagegen_alloc::baseline::{ExplicitTcache, GlibcMalloc, Jemalloc};
use pagegen_alloc::{AllocHook, ClassArenas, PagegenAlloc};
use pagegen_core::{ClassId, Grant, PollHook, PollStats, RequestCtx, RequestId};

const CLASS_A: u32 = 1;
const CLASS_B: u32 = 2;

fn smoke() -> bool {
    std::env::var_os("PAGEGEN_BENCH_SMOKE").is_some_and(|v| v == "1")
}

fn request(class: u32) -> Arc<RequestCtx> {
    ClassArenas::new()
        .ensure(ClassId::from_raw(class))
        .expect("class arena");
    RequestCtx::new(
        RequestId(u64::from(class)),
        Grant::unlimited(ClassId::from_raw(class)),
        0,
    )
}

/// Which allocator and mode a benchmark runs.
#[derive(Clone, Copy)]
enum Who {
    System,
    Jemalloc,
    /// jemalloc's `mallocx`/`sdallocx` with an explicit arena and tcache, nothing else.
    JemallocExplicit,
    PagegenAcct,
    PagegenClass,
}

impl Who {
    const ALL: [Who; 5] = [
        Who::System,
        Who::Jemalloc,
        Who::JemallocExplicit,
        Who::PagegenAcct,
        Who::PagegenClass,
    ];
    fn name(self) -> &'static str {
        match self {
            Who::System => "system",
            Who::Jemalloc => "jemalloc",
            Who::JemallocExplicit => "jemalloc_explicit",
            Who::PagegenAcct => "pagegen_acct",
            Who::PagegenClass => "pagegen_class",
        }
    }
}

static PAGEGEN: PagegenAlloc = PagegenAlloc::new();

/// One explicit tcache for class A, made once (criterion runs every benchmark on this thread).
fn explicit() -> ExplicitTcache {
    static E: std::sync::OnceLock<ExplicitTcache> = std::sync::OnceLock::new();
    *E.get_or_init(|| {
        let _ = request(CLASS_A);
        ExplicitTcache::for_class(ClassId::from_raw(CLASS_A)).expect("tcache")
    })
}

/// Runs `f` with `who`'s allocator; for `PagegenClass` inside a poll bracket of class A.
fn with_alloc<R>(who: Who, f: impl FnOnce(&dyn GlobalAlloc) -> R) -> R {
    match who {
        Who::System => f(&GlibcMalloc),
        Who::Jemalloc => f(&Jemalloc),
        Who::JemallocExplicit => f(&explicit()),
        Who::PagegenAcct => f(&PAGEGEN),
        Who::PagegenClass => {
            let hook = AllocHook::new();
            let ctx = request(CLASS_A);
            hook.before_poll(&ctx);
            let r = f(&PAGEGEN);
            let _ = hook.after_poll(&ctx, &PollStats::default());
            r
        }
    }
}

/// `iters` alloc/free pairs of `layout`, timed.
fn pairs<A: GlobalAlloc + ?Sized>(a: &A, layout: Layout, iters: u64) -> Duration {
    let t = Instant::now();
    for _ in 0..iters {
        // SAFETY: non-zero layout; the block is freed with the same layout right away.
        unsafe {
            let p = a.alloc(layout);
            black_box(p);
            a.dealloc(p, layout);
        }
    }
    t.elapsed()
}

/// `iters` rounds of 256 allocations then 256 frees.
fn batches<A: GlobalAlloc + ?Sized>(a: &A, layout: Layout, iters: u64) -> Duration {
    let mut ptrs = [std::ptr::null_mut::<u8>(); 256];
    let t = Instant::now();
    for _ in 0..iters {
        for p in ptrs.iter_mut() {
            // SAFETY: non-zero layout.
            *p = unsafe { a.alloc(layout) };
        }
        black_box(&ptrs);
        for &p in ptrs.iter() {
            // SAFETY: each block came from `a` with `layout` just above.
            unsafe { a.dealloc(p, layout) };
        }
    }
    t.elapsed()
}

fn micro(c: &mut Criterion) {
    let sizes: [(&str, usize); 3] = [("64B", 64), ("4KiB", 4096), ("64KiB", 65536)];
    let mut g = c.benchmark_group("alloc_pair");
    for (label, size) in sizes {
        let layout = Layout::from_size_align(size, 8).expect("layout");
        g.throughput(Throughput::Elements(1));
        for who in Who::ALL {
            g.bench_function(BenchmarkId::new(who.name(), label), |b| {
                b.iter_custom(|iters| with_alloc(who, |a| pairs(a, layout, iters)))
            });
        }
    }
    g.finish();

    let mut g = c.benchmark_group("alloc_batch256_64B");
    g.throughput(Throughput::Elements(256));
    let layout = Layout::from_size_align(64, 8).expect("layout");
    for who in Who::ALL {
        g.bench_function(who.name(), |b| {
            b.iter_custom(|iters| with_alloc(who, |a| batches(a, layout, iters)))
        });
    }
    g.finish();

    // One alloc + one free per element; every fifth free is of an object class B allocated
    // (for the baselines: an object allocated earlier, the same operation sequence).
    let mut g = c.benchmark_group("alloc_mix_cross20_64B");
    g.throughput(Throughput::Elements(1));
    for who in Who::ALL {
        g.bench_function(who.name(), |b| {
            b.iter_custom(|iters| {
                let foreign_n = (iters / 5 + 1) as usize;
                let e = explicit();
                let a_layout = layout;
                let a: &dyn GlobalAlloc = match who {
                    Who::System => &GlibcMalloc,
                    Who::Jemalloc => &Jemalloc,
                    // The anchor frees class B's objects through A's tcache: the hazard pagegen
                    // avoids, shown for its cost only.
                    Who::JemallocExplicit => &e,
                    Who::PagegenAcct | Who::PagegenClass => &PAGEGEN,
                };
                let hook = AllocHook::new();
                let (ctx_a, ctx_b) = (request(CLASS_A), request(CLASS_B));
                // Class B's objects, allocated in a bracket of B (untimed).
                if matches!(who, Who::PagegenClass) {
                    hook.before_poll(&ctx_b);
                }
                // SAFETY: non-zero layout; freed below.
                let foreign: Vec<*mut u8> = (0..foreign_n)
                    .map(|_| unsafe { a.alloc(a_layout) })
                    .collect();
                if matches!(who, Who::PagegenClass) {
                    let _ = hook.after_poll(&ctx_b, &PollStats::default());
                    hook.before_poll(&ctx_a);
                }
                let mut kept = Vec::with_capacity(foreign_n);
                let mut next = 0;
                let t = Instant::now();
                for i in 0..iters {
                    // SAFETY: non-zero layout; every block is freed exactly once, with its layout.
                    unsafe {
                        let p = a.alloc(a_layout);
                        black_box(p);
                        if i % 5 == 0 {
                            a.dealloc(foreign[next], a_layout);
                            next += 1;
                            kept.push(p);
                        } else {
                            a.dealloc(p, a_layout);
                        }
                    }
                }
                let elapsed = t.elapsed();
                for p in kept.into_iter().chain(foreign[next..].iter().copied()) {
                    // SAFETY: allocated above with `a_layout`, not yet freed.
                    unsafe { a.dealloc(p, a_layout) };
                }
                if matches!(who, Who::PagegenClass) {
                    let _ = hook.after_poll(&ctx_a, &PollStats::default());
                }
                elapsed
            })
        });
    }
    g.finish();
}

/// The hook's own cost per poll: `before_poll` + `after_poll` around an empty poll (select the
/// class's tcache, zero the cell; take it, flush into the request's atomics, judge the budget).
fn hook_bracket(c: &mut Criterion) {
    let mut g = c.benchmark_group("alloc_hook_bracket");
    let ctx = request(CLASS_A);
    for (name, hook) in [
        ("class", AllocHook::new()),
        ("accounting_only", AllocHook::accounting_only()),
    ] {
        g.bench_function(name, |b| {
            b.iter(|| {
                hook.before_poll(&ctx);
                black_box(hook.after_poll(&ctx, &PollStats::default()))
            })
        });
    }
    g.finish();
}

fn config() -> Criterion {
    let c = Criterion::default().configure_from_args();
    if smoke() {
        c.sample_size(10)
            .warm_up_time(Duration::from_millis(20))
            .measurement_time(Duration::from_millis(50))
    } else {
        c.sample_size(20)
            .warm_up_time(Duration::from_millis(300))
            .measurement_time(Duration::from_secs(1))
    }
}

criterion_group! {
    name = benches;
    config = config();
    targets = micro, hook_bracket
}
criterion_main!(benches);
