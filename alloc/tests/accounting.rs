//! Exact per-request accounting with pagegen's allocator installed, polled by hand.

mod support;

use std::sync::{Arc, Mutex};

use pagegen_alloc::{AllocHook, ClassArenas, PagegenAlloc};
use pagegen_core::{
    BlockingStats, CancelReason, CheckpointLevel, ClassId, PollHook, Resource, Verdict,
};
use support::{ctx, yield_now, Step, Task};

#[global_allocator]
static A: PagegenAlloc = PagegenAlloc::new();

const MIB: usize = 1 << 20;

fn three_polls(class: u32) {
    let hook = AllocHook::new();
    ClassArenas::new()
        .ensure(ClassId::from_raw(class))
        .expect("class arena");
    let c = ctx(1, class, u64::MAX, u64::MAX);
    let mut t = Task::new(c.clone(), async {
        let v: Vec<u8> = Vec::with_capacity(1000);
        yield_now().await;
        let w: Vec<u8> = Vec::with_capacity(500);
        drop(v);
        yield_now().await;
        drop(w);
    });
    assert_eq!(t.poll(&hook), Step::Pending(Verdict::Continue));
    let u = c.mem.snapshot();
    assert_eq!(
        (u.alloc_bytes, u.allocs, u.net_bytes, u.peak_net_bytes),
        (1000, 1, 1000, 1000)
    );
    assert_eq!(t.poll(&hook), Step::Pending(Verdict::Continue));
    let u = c.mem.snapshot();
    assert_eq!(u.net_bytes, 500);
    assert_eq!(u.peak_net_bytes, 1500, "the peak is reached inside poll 2");
    assert_eq!(
        u.same_poll_freed_bytes, 500,
        "the approximation matches the 1000-byte free against the 500 bytes allocated earlier in the poll"
    );
    assert_eq!(t.poll(&hook), Step::Ready(Verdict::Continue));
    t.drop_future(&hook, pagegen_core::DropCause::Completed);
    let u = c.mem.snapshot();
    assert_eq!(u.alloc_bytes, 1500);
    assert_eq!(u.freed_bytes, 1500);
    assert_eq!((u.allocs, u.frees), (2, 2));
    assert_eq!(u.net_bytes, 0);
    assert_eq!(u.peak_net_bytes, 1500);
    assert_eq!(u.size_classes[pagegen_core::log2_bucket(1000)], 1);
    assert_eq!(u.size_classes[pagegen_core::log2_bucket(500)], 1);
    assert_eq!(u.size_classes.iter().sum::<u64>(), 2);
}

#[test]
fn exact_in_the_default_arena() {
    three_polls(0);
}

#[test]
fn exact_in_a_class_arena() {
    three_polls(2);
}

#[test]
fn cross_request_free_makes_net_negative() {
    let hook = AllocHook::new();
    for class in [5, 6] {
        ClassArenas::new()
            .ensure(ClassId::from_raw(class))
            .expect("class arena");
    }
    let shared: Arc<Mutex<Option<Box<[u8; 4096]>>>> = Arc::new(Mutex::new(None));
    let a = ctx(1, 5, u64::MAX, u64::MAX);
    let b = ctx(2, 6, u64::MAX, u64::MAX);
    let s = shared.clone();
    let mut ta = Task::new(a.clone(), async move {
        *s.lock().expect("lock") = Some(Box::new([7u8; 4096]));
    });
    let s = shared.clone();
    let mut tb = Task::new(b.clone(), async move {
        let taken = s.lock().expect("lock").take();
        assert_eq!(taken.as_ref().map(|b| b[4095]), Some(7));
        drop(taken);
    });
    assert!(matches!(ta.run(&hook).1, Step::Ready(Verdict::Continue)));
    assert!(matches!(tb.run(&hook).1, Step::Ready(Verdict::Continue)));
    let (ua, ub) = (a.mem.snapshot(), b.mem.snapshot());
    assert_eq!((ua.net_bytes, ua.peak_net_bytes), (4096, 4096));
    assert_eq!(
        ub.net_bytes, -4096,
        "B freed what A allocated: B's net is negative"
    );
    assert_eq!(ub.peak_net_bytes, 0);
    assert_eq!(ub.same_poll_freed_bytes, 0);
    assert_eq!((ub.allocs, ub.frees), (0, 1));
}

#[test]
fn realloc_growth_and_shrink_are_deltas() {
    let hook = AllocHook::new();
    ClassArenas::new()
        .ensure(ClassId::from_raw(7))
        .expect("class arena");
    for class in [0, 7] {
        let c = ctx(1, class, u64::MAX, u64::MAX);
        let mut t = Task::new(c.clone(), async {
            let mut v: Vec<u8> = Vec::with_capacity(100);
            v.reserve_exact(1000);
            assert_eq!(v.capacity(), 1000);
            yield_now().await;
            v.shrink_to(10);
            assert_eq!(v.capacity(), 10);
        });
        assert_eq!(t.poll(&hook), Step::Pending(Verdict::Continue));
        let u = c.mem.snapshot();
        assert_eq!(
            (u.alloc_bytes, u.allocs, u.net_bytes),
            (1000, 2, 1000),
            "class {class}"
        );
        assert_eq!(t.poll(&hook), Step::Ready(Verdict::Continue));
        let u = c.mem.snapshot();
        // The shrink frees 990 bytes (no free call), the end of the block frees the last 10.
        assert_eq!(
            (u.freed_bytes, u.frees, u.net_bytes),
            (1000, 1, 0),
            "class {class}"
        );
        assert_eq!(u.same_poll_freed_bytes, 0, "poll 2 allocated nothing");
        t.drop_future(&hook, pagegen_core::DropCause::Completed);
        assert_eq!(c.mem.snapshot().net_bytes, 0);
    }
}

#[test]
fn realloc_across_pools_moves_and_counts_alloc_plus_free() {
    let hook = AllocHook::new();
    ClassArenas::new()
        .ensure(ClassId::from_raw(8))
        .expect("class arena");
    // Allocated outside any bracket: the default arena, nobody's bytes.
    let mut v: Vec<u8> = Vec::with_capacity(100);
    v.extend_from_slice(&[3; 100]);
    let c = ctx(1, 8, u64::MAX, u64::MAX);
    let mut t = Task::new(c.clone(), async move {
        v.reserve_exact(900);
        assert_eq!(&v[..], &[3; 100][..], "contents survive the move");
        std::mem::forget(v);
    });
    assert!(matches!(t.run(&hook).1, Step::Ready(Verdict::Continue)));
    let u = c.mem.snapshot();
    assert_eq!((u.alloc_bytes, u.freed_bytes), (1000, 100));
    assert_eq!((u.allocs, u.frees, u.net_bytes), (1, 1, 900));
}

#[test]
fn panic_mid_poll_keeps_the_books_and_the_thread() {
    let hook = AllocHook::new();
    let c = ctx(1, 0, u64::MAX, u64::MAX);
    let mut t = Task::new(c.clone(), async {
        let _held: Vec<u8> = Vec::with_capacity(4096);
        yield_now().await;
        let _local: Vec<u8> = Vec::with_capacity(1000);
        // resume_unwind skips the panic hook (which would allocate to print); the unwinder's own
        // exception box is allocated and freed inside the poll.
        std::panic::resume_unwind(Box::new(()))
    });
    assert_eq!(t.poll(&hook), Step::Pending(Verdict::Continue));
    assert_eq!(c.mem.snapshot().net_bytes, 4096);
    assert_eq!(t.poll(&hook), Step::Panicked(Verdict::Continue));
    // Unwinding out of the async block drops every live local, the one held across the await
    // included, inside the poll: all of it is attributed to the request.
    let u = c.mem.snapshot();
    assert_eq!(u.net_bytes, 0);
    assert!(u.alloc_bytes >= 4096 + 1000);
    assert_eq!(u.alloc_bytes, u.freed_bytes);
    assert_eq!(u.allocs, u.frees);
    assert_eq!(
        u.peak_net_bytes as u64, u.alloc_bytes,
        "nothing was freed before the panic"
    );
    t.drop_future(&hook, pagegen_core::DropCause::Panicked);
    assert_eq!(c.mem.snapshot().net_bytes, 0);
}

#[test]
fn over_the_hard_limit_is_cancelled_at_the_next_boundary_and_others_carry_on() {
    let hook = AllocHook::new();
    ClassArenas::new()
        .ensure(ClassId::from_raw(9))
        .expect("class arena");
    let hard = 5 * MIB as u64 / 2; // 2.5 MiB
    let soft = 3 * MIB as u64 / 2; // 1.5 MiB
    let a = ctx(1, 9, soft, hard);
    let b = ctx(2, 9, soft, hard);
    let mut ta = Task::new(a.clone(), async {
        let mut keep: Vec<Vec<u8>> = Vec::with_capacity(16);
        loop {
            keep.push(vec![1u8; MIB]);
            yield_now().await;
        }
    });
    let mut tb = Task::new(b.clone(), async {
        for _ in 0..6 {
            let small = vec![2u8; 1024];
            yield_now().await;
            drop(small);
        }
    });
    let mut verdicts = Vec::new();
    for _ in 0..3 {
        verdicts.push(ta.poll(&hook));
        assert_eq!(tb.poll(&hook), Step::Pending(Verdict::Continue));
    }
    assert_eq!(verdicts[0], Step::Pending(Verdict::Continue));
    assert!(!a.checkpoint_reached(Resource::Memory, CheckpointLevel::Half) || verdicts.len() > 1);
    assert_eq!(verdicts[1], Step::Pending(Verdict::Continue));
    let cancel = Verdict::Cancel(CancelReason::BudgetExceeded(Resource::Memory));
    assert_eq!(
        verdicts[2],
        Step::Pending(cancel),
        "the third MiB crosses 2.5 MiB"
    );
    for level in [
        CheckpointLevel::Half,
        CheckpointLevel::Ninety,
        CheckpointLevel::Soft,
    ] {
        assert!(a.checkpoint_reached(Resource::Memory, level), "{level:?}");
    }
    assert!(a.mem.peak_net_bytes() > hard as i64);
    // The executor drops the cancelled future: its memory comes back and is attributed to it.
    ta.drop_future(
        &hook,
        pagegen_core::DropCause::Cancelled(CancelReason::BudgetExceeded(Resource::Memory)),
    );
    assert_eq!(a.mem.net_bytes(), 0);
    // B never crossed anything and runs to completion.
    let (_, last) = tb.run(&hook);
    assert_eq!(last, Step::Ready(Verdict::Continue));
    assert!(!b.checkpoint_reached(Resource::Memory, CheckpointLevel::Half));
    assert_eq!(b.mem.net_bytes(), 0);
}

#[test]
fn checkpoints_fire_on_the_poll_that_crosses_them() {
    let hook = AllocHook::new();
    let c = ctx(1, 0, 3000, 4000);
    let mut t = Task::new(c.clone(), async {
        let a = vec![0u8; 1900];
        yield_now().await;
        let b = vec![0u8; 200];
        yield_now().await;
        let d = vec![0u8; 1600];
        yield_now().await;
        drop((a, b, d));
    });
    t.poll(&hook);
    assert!(!c.checkpoint_reached(Resource::Memory, CheckpointLevel::Half));
    t.poll(&hook);
    assert!(c.checkpoint_reached(Resource::Memory, CheckpointLevel::Half));
    assert!(!c.checkpoint_reached(Resource::Memory, CheckpointLevel::Ninety));
    assert_eq!(
        t.poll(&hook),
        Step::Pending(Verdict::Continue),
        "3700 ≤ 4000"
    );
    assert!(c.checkpoint_reached(Resource::Memory, CheckpointLevel::Ninety));
    assert!(c.checkpoint_reached(Resource::Memory, CheckpointLevel::Soft));
}

#[test]
fn blocking_closures_are_bracketed_and_flag_a_cancel() {
    let hook = AllocHook::new();
    let c = ctx(1, 0, 1000, 2000);
    let _enter = pagegen_core::RequestCtx::enter(&c);
    hook.before_blocking(&c);
    let v = vec![0u8; 3000];
    hook.after_blocking(&c, &BlockingStats::default());
    assert_eq!(c.mem.snapshot().alloc_bytes, 3000);
    assert_eq!(
        c.cancel_requested(),
        Some(CancelReason::BudgetExceeded(Resource::Memory))
    );
    drop(v);
    assert_eq!(
        c.mem.snapshot().freed_bytes,
        0,
        "outside a bracket nothing is attributed"
    );
}

#[test]
fn allocations_outside_brackets_are_not_attributed() {
    let hook = AllocHook::new();
    let c = ctx(1, 0, u64::MAX, u64::MAX);
    let before = vec![0u8; 5000];
    let mut t = Task::new(c.clone(), async {});
    let after = vec![0u8; 5000];
    assert!(matches!(t.run(&hook).1, Step::Ready(Verdict::Continue)));
    drop((before, after));
    assert_eq!(c.mem.snapshot(), pagegen_core::MemUsage::default());
}
