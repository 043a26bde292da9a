//! Properties every predictor keeps for any input: estimates are finite, non-negative, ordered and
//! clamped; `predict` does not allocate.

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use pagegen_core::{
    ClassId, Features, ProfileRecord, Resource, Usage, VirtualClock, FEATURE_WIDTH,
};
use pagegen_model::gate::Serving;
use pagegen_model::net::NetWeights;
use pagegen_model::target::{from_log, Y_MAX};
use pagegen_model::{Deployed, DeployedConfig, Predictor};
use proptest::prelude::*;

struct Counting;
static ALLOCS: AtomicUsize = AtomicUsize::new(0);

thread_local! {
    // Const-initialised and without a destructor: reading it never allocates.
    static COUNTING: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

// SAFETY: forwards every call to `System` unchanged; the counter has no effect on the memory.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if COUNTING.with(|c| c.get()) {
            ALLOCS.fetch_add(1, Ordering::Relaxed);
        }
        // SAFETY: the caller upholds `GlobalAlloc::alloc`'s contract, which `System` shares.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: `ptr` came from `System.alloc` with `layout` (every allocation goes through
        // `alloc` above), as `GlobalAlloc::dealloc` requires.
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

fn deployed(weights: NetWeights) -> Deployed {
    Deployed::new(
        DeployedConfig::default(),
        Arc::new(VirtualClock::new()),
        Arc::new(weights),
        Serving::Recurrent,
    )
}

fn record(i: u64, class: ClassId, v: u64, features: Features) -> ProfileRecord {
    let mut u = Usage::default();
    u.cpu.cpu_ns = v;
    u.cpu.wall_ns = v;
    u.mem.peak_net_bytes = (v / 2) as i64;
    u.io.ops[0] = v % 100;
    let mut r = ProfileRecord::new(i, class, u);
    r.features = features;
    r
}

fn check(d: &pagegen_core::Demand) -> Result<(), TestCaseError> {
    let max = from_log(Y_MAX) as u64 + 1;
    for r in Resource::ALL {
        let e = d.get(r);
        prop_assert!(e.central <= e.upper, "{r:?} {e:?}");
        prop_assert!(e.upper <= max.saturating_mul(2), "{r:?} {e:?}");
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn predictions_are_finite_nonnegative_and_clamped(
        raw in proptest::collection::vec(proptest::num::f32::ANY, FEATURE_WIDTH),
        values in proptest::collection::vec(any::<u64>(), 1..20),
        seed in any::<u64>(),
        class in 0u32..5000,
    ) {
        let mut f = Features::default();
        f.0.copy_from_slice(&raw);
        let mut w = NetWeights::random(seed);
        // Extreme weights too: the head must not escape the clamp.
        w.b2.iter_mut().for_each(|b| *b = (seed % 7) as f32 * 1e6 - 3e6);
        let d = deployed(w);
        let c = ClassId::from_raw(class);
        for s in [Serving::Static, Serving::Ewma, Serving::Histogram, Serving::Recurrent] {
            check(&d.get(s).predict(c, &f))?;
        }
        for (i, v) in values.iter().enumerate() {
            d.observe(&record(i as u64, c, *v, f));
        }
        d.recurrent().flush();
        for s in [Serving::Static, Serving::Ewma, Serving::Histogram, Serving::Recurrent] {
            check(&d.get(s).predict(c, &f))?;
        }
        check(&d.predict(c, &f))?;
    }
}

#[test]
fn predict_does_not_allocate() {
    let d = deployed(NetWeights::random(3));
    let c = ClassId::from_raw(7);
    let f = pagegen_model::features::extract(c, "/report/2024", Some("q=x"), 10, 3);
    for i in 0..100 {
        d.observe(&record(i, c, 1_000_000 + i * 1000, f));
    }
    d.recurrent().flush();
    // Warm each path once (thread-local slots of arc-swap and the exploration counter).
    for s in [
        Serving::Static,
        Serving::Ewma,
        Serving::Histogram,
        Serving::Recurrent,
    ] {
        d.get(s).predict(c, &f);
    }
    d.predict(c, &f);
    COUNTING.with(|c| c.set(true));
    let before = ALLOCS.load(Ordering::Relaxed);
    let mut sink = 0u64;
    for _ in 0..1000 {
        for s in [
            Serving::Static,
            Serving::Ewma,
            Serving::Histogram,
            Serving::Recurrent,
        ] {
            sink = sink.wrapping_add(d.get(s).predict(c, &f).cpu_ns.central);
        }
        sink = sink.wrapping_add(d.predict(c, &f).cpu_ns.upper);
        sink = sink.wrapping_add(d.predict(ClassId::from_raw(9), &f).cpu_ns.upper);
    }
    let after = ALLOCS.load(Ordering::Relaxed);
    COUNTING.with(|c| c.set(false));
    assert!(sink > 0);
    assert_eq!(after - before, 0, "predict allocated");
}
