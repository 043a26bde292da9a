//! Class arenas with pagegen's allocator installed: placement, truthful statistics under
//! cross-class frees, the registry fan-out, and the tcache bound.

mod support;

use std::sync::Arc;

use pagegen_alloc::{
    size_class, tcache_max, thread_tcaches, AllocHook, ArenaStats, ClassArenas, ClassMemStats,
    PagegenAlloc, MAX_TCACHES_PER_THREAD,
};
use pagegen_core::{ClassId, ClassRegistry, ClassSpec, PollHook, RouteSpec, Verdict, WorkerInfo};
use proptest::prelude::*;
use support::{ctx, Step, Task};

#[global_allocator]
static A: PagegenAlloc = PagegenAlloc::new();

fn arena(class: u32) -> ClassId {
    let id = ClassId::from_raw(class);
    ClassArenas::new().ensure(id).expect("class arena");
    id
}

fn stats(s: &ArenaStats, class: ClassId) -> ClassMemStats {
    s.refresh().expect("epoch");
    s.class(class).expect("read").expect("class has an arena")
}

/// A size above `opt.tcache_max` that is its own size class, so arena statistics move by exactly
/// it (no tcache in between).
fn large_size() -> usize {
    let s = 4 * tcache_max().expect("opt.tcache_max");
    assert_eq!(size_class(s), s);
    s
}

/// Runs `f` inside one poll of a request of `class`.
fn in_poll(class: u32, f: impl FnOnce() + Send) {
    let hook = AllocHook::new();
    let mut t = Task::new(ctx(1, class, u64::MAX, u64::MAX), async move { f() });
    assert_eq!(t.run(&hook).1, Step::Ready(Verdict::Continue));
}

#[test]
fn registry_fan_out_creates_arenas() {
    let reg = ClassRegistry::in_memory();
    reg.subscribe(Arc::new(ClassArenas::new()));
    let id = reg.register(ClassSpec::new("GET /a")).expect("register");
    assert!(ClassArenas::new().arena(id).is_some());
    assert_eq!(ClassArenas::new().arena(ClassId::DEFAULT), None);
    let heavy = ClassRegistry::in_memory();
    heavy.subscribe(Arc::new(ClassArenas::heavy_only(64 << 20)));
    // Arenas are process-wide by class id: move this registry's ids past the other tests' classes.
    for i in 1..56 {
        heavy
            .register(ClassSpec::new(format!("GET /unannotated/{i}")))
            .expect("register");
    }
    let light = heavy
        .register(ClassSpec::new("GET /light").with_route(RouteSpec {
            mem: Some(1 << 20),
            ..RouteSpec::default()
        }))
        .expect("register");
    let big = heavy.register(ClassSpec::new("GET /report").with_route(RouteSpec {
        mem: Some(300 << 20),
        ..RouteSpec::default()
    }));
    let big = big.expect("register");
    assert_eq!(light.raw(), 56);
    assert_eq!(ClassArenas::new().arena(light), None);
    assert!(ClassArenas::new().arena(big).is_some());
    let far = ClassId::from_raw(pagegen_alloc::MAX_CLASS_ARENAS as u32);
    assert_eq!(ClassArenas::new().ensure(far).expect("no error"), None);
}

#[test]
fn class_allocations_land_in_the_class_arena_and_cross_class_frees_go_home() {
    let s = ArenaStats::new().expect("stats");
    let (a, b) = (arena(10), arena(11));
    let big = large_size();
    let (a0, b0) = (stats(&s, a), stats(&s, b));
    let mut held: Vec<Vec<u8>> = Vec::with_capacity(8);
    let slot = &mut held;
    in_poll(10, move || {
        for _ in 0..8 {
            slot.push(Vec::with_capacity(big));
        }
    });
    let (a1, b1) = (stats(&s, a), stats(&s, b));
    assert_eq!(a1.allocated - a0.allocated, 8 * big as u64);
    assert_eq!(b1.allocated, b0.allocated);
    assert!(a1.active >= a0.active + 8 * big as u64);
    // Class B frees what class A allocated: the bytes leave A's arena, B's is untouched.
    in_poll(11, move || {
        for v in held.drain(..) {
            drop(v);
        }
        std::mem::forget(held);
    });
    let (a2, b2) = (stats(&s, a), stats(&s, b));
    assert_eq!(a2.allocated, a0.allocated);
    assert_eq!(b2.allocated, b0.allocated);
}

#[test]
fn small_cross_class_frees_bypass_the_tcache() {
    let s = ArenaStats::new().expect("stats");
    let (a, b) = (arena(12), arena(13));
    let mut boxes: Vec<Box<[u8; 64]>> = Vec::with_capacity(2000);
    let slot = &mut boxes;
    in_poll(12, move || {
        for i in 0..2000 {
            slot.push(Box::new([i as u8; 64]));
        }
    });
    let (a1, b1) = (stats(&s, a), stats(&s, b));
    assert!(a1.allocated >= 2000 * 64);
    let slot = &mut boxes;
    in_poll(13, move || {
        for bx in slot.drain(..) {
            drop(bx);
        }
    });
    let (a2, b2) = (stats(&s, a), stats(&s, b));
    // Had the frees gone into B's tcache, A would still count them and B would reuse them.
    assert_eq!(a1.allocated - a2.allocated, 2000 * 64);
    assert_eq!(b2.allocated, b1.allocated);
}

#[test]
fn accounting_only_hook_keeps_the_default_arena() {
    let s = ArenaStats::new().expect("stats");
    let c = arena(14);
    let big = large_size();
    let before = stats(&s, c);
    let hook = AllocHook::accounting_only();
    let cx = ctx(1, 14, u64::MAX, u64::MAX);
    let mut t = Task::new(cx.clone(), async move {
        let v: Vec<u8> = Vec::with_capacity(big);
        drop(v);
    });
    assert_eq!(t.run(&hook).1, Step::Ready(Verdict::Continue));
    assert_eq!(cx.mem.snapshot().alloc_bytes, big as u64);
    let after = stats(&s, c);
    assert_eq!(after.allocated, before.allocated);
}

#[test]
fn tcaches_are_bounded_per_thread_and_destroyed_by_the_stop_hook() {
    std::thread::spawn(|| {
        let classes: Vec<u32> = (40..52).collect();
        for &c in &classes {
            arena(c);
        }
        for &c in &classes {
            in_poll(c, || drop(vec![0u8; 100]));
            assert!(thread_tcaches() <= MAX_TCACHES_PER_THREAD);
        }
        assert_eq!(thread_tcaches(), MAX_TCACHES_PER_THREAD);
        let w = WorkerInfo {
            index: 0,
            pool: None,
            name: "t".into(),
        };
        AllocHook::new().thread_stopping(&w);
        assert_eq!(thread_tcaches(), 0);
        // The thread can go on allocating (default arena) and poll again (fresh tcache).
        drop(vec![0u8; 100]);
        in_poll(40, || drop(vec![0u8; 100]));
        assert_eq!(thread_tcaches(), 1);
        AllocHook::new().thread_stopping(&w);
    })
    .join()
    .expect("thread");
}

#[derive(Clone, Debug)]
enum Op {
    /// Allocate a large object of `mult × large_size` in class index `c` (0 = default class).
    Alloc { c: usize, mult: usize },
    /// Free live object `i` (modulo) from a poll of class index `c`.
    Free { c: usize, i: usize },
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        (0usize..3, 1usize..4).prop_map(|(c, mult)| Op::Alloc { c, mult }),
        (0usize..3, any::<usize>()).prop_map(|(c, i)| Op::Free { c, i }),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(24))]
    /// Each class arena's allocated bytes equal the bytes of its live objects, whichever class
    /// frees them; statistics never go below their starting point.
    #[test]
    fn class_stats_stay_truthful(ops in proptest::collection::vec(op(), 1..30)) {
        let s = ArenaStats::new().expect("stats");
        let classes = [0u32, 20, 21];
        arena(20);
        arena(21);
        let unit = large_size();
        let base: Vec<u64> = classes[1..].iter().map(|&c| stats(&s, ClassId::from_raw(c)).allocated).collect();
        let mut live: Vec<(usize, Vec<u8>)> = Vec::new();
        for op in ops {
            match op {
                Op::Alloc { c, mult } => {
                    let mut got = None;
                    let slot = &mut got;
                    in_poll(classes[c], move || *slot = Some(Vec::<u8>::with_capacity(unit * mult)));
                    live.push((c, got.expect("allocated")));
                }
                Op::Free { c, i } if !live.is_empty() => {
                    let (_, v) = live.swap_remove(i % live.len());
                    in_poll(classes[c], move || drop(v));
                }
                Op::Free { .. } => {}
            }
            for (k, &c) in classes[1..].iter().enumerate() {
                let owned: u64 = live.iter().filter(|(o, _)| *o == k + 1).map(|(_, v)| v.capacity() as u64).sum();
                let now = stats(&s, ClassId::from_raw(c)).allocated;
                prop_assert!(now >= base[k]);
                prop_assert_eq!(now - base[k], owned);
            }
        }
    }
}

#[test]
fn realloc_across_classes_moves_the_object_home_to_the_new_class() {
    let s = ArenaStats::new().expect("stats");
    let (a, b) = (arena(15), arena(16));
    let big = large_size();
    let (a0, b0) = (stats(&s, a), stats(&s, b));
    let mut held: Option<Vec<u8>> = None;
    let slot = &mut held;
    in_poll(15, move || *slot = Some(vec![0u8; big]));
    let mut v = held.expect("allocated");
    assert!(
        v.iter().all(|&x| x == 0),
        "zeroed allocation in a class arena"
    );
    v[big - 1] = 9;
    assert_eq!(stats(&s, a).allocated - a0.allocated, big as u64);
    let slot = &mut v;
    in_poll(16, move || slot.reserve_exact(big));
    assert_eq!(v[big - 1], 9, "contents survive the move");
    let grown = v.capacity() as u64;
    assert!(grown >= 2 * big as u64);
    let (a1, b1) = (stats(&s, a), stats(&s, b));
    assert_eq!(a1.allocated, a0.allocated, "the old block went home to A");
    assert_eq!(
        b1.allocated - b0.allocated,
        size_class(grown as usize) as u64
    );
    drop(v);
    assert_eq!(stats(&s, b).allocated, b0.allocated);
}
