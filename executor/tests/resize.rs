//! Resizing a pool by parking threads (`Handle::set_pool_workers`): nothing is lost or stranded,
//! tasks queued on a worker that leaves move to the ones that stay, and growing brings it back.
//!
//! Deterministic: the tests hold both workers inside polls that wait for each other (so where each
//! task is queued is known), and wait for observable state (`Handle::pool_size`), never for time.
//! The spin loops carry a generous deadline only so a broken protocol fails the test instead of
//! hanging it.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use pagegen_core::PoolId;
use pagegen_executor::{Builder, Handle, PoolSize, ResizeError, Runtime};

const GUARD: Duration = Duration::from_secs(20);

/// The worker index (within its pool) of the current thread, from its name `<rt>-<pool>-<i>`.
fn worker_index() -> usize {
    let name = std::thread::current().name().unwrap().to_owned();
    name.rsplit('-').next().unwrap().parse().unwrap()
}

/// Spins (yielding the OS thread) until `cond`, failing the test past [`GUARD`].
fn wait_until(what: &str, cond: impl Fn() -> bool) {
    let t = Instant::now();
    while !cond() {
        assert!(t.elapsed() < GUARD, "never happened: {what}");
        std::thread::yield_now();
    }
}

fn two_workers() -> Runtime {
    Builder::new().workers(2).build().unwrap()
}

/// Occupies both workers with one poll each; the poll on worker 1 first spawns `children` tasks
/// (queued on worker 1, which nobody can steal from while worker 0 is held too), each recording the
/// worker it ran on. Returns once both polls are running; `release` lets them finish.
fn hold_both(
    h: &Handle,
    children: usize,
    ran_on: Arc<Mutex<Vec<usize>>>,
    done: Arc<AtomicUsize>,
    release: Arc<AtomicBool>,
) {
    let started = Arc::new(AtomicUsize::new(0));
    for _ in 0..2 {
        let (started, release, ran_on, done) = (
            started.clone(),
            release.clone(),
            ran_on.clone(),
            done.clone(),
        );
        drop(h.spawn(async move {
            started.fetch_add(1, Ordering::SeqCst);
            let t = Instant::now();
            // Both polls run at once only on two different workers.
            while started.load(Ordering::SeqCst) < 2 {
                assert!(
                    t.elapsed() < GUARD,
                    "the two holders never ran side by side"
                );
                std::hint::spin_loop();
            }
            if worker_index() == 1 {
                for _ in 0..children {
                    let (ran_on, done) = (ran_on.clone(), done.clone());
                    drop(pagegen_executor::spawn(async move {
                        ran_on.lock().unwrap().push(worker_index());
                        done.fetch_add(1, Ordering::SeqCst);
                    }));
                }
            }
            while !release.load(Ordering::SeqCst) {
                assert!(t.elapsed() < GUARD, "never released");
                std::hint::spin_loop();
            }
        }));
    }
    wait_until("both holders started", || {
        started.load(Ordering::SeqCst) == 2
    });
}

#[test]
fn tasks_queued_on_a_shrunk_worker_move_and_all_complete() {
    let rt = two_workers();
    let h = rt.handle();
    let ran_on = Arc::new(Mutex::new(Vec::new()));
    let done = Arc::new(AtomicUsize::new(0));
    let release = Arc::new(AtomicBool::new(false));
    hold_both(&h, 200, ran_on.clone(), done.clone(), release.clone());
    // Worker 1 is inside its poll with 200 tasks queued behind it: shrink, then let it finish.
    assert_eq!(h.set_pool_workers(PoolId::LATENCY, 1), Ok(2));
    release.store(true, Ordering::SeqCst);
    wait_until("all children ran", || done.load(Ordering::SeqCst) == 200);
    let ran_on = ran_on.lock().unwrap();
    assert_eq!(ran_on.len(), 200);
    assert!(
        ran_on.iter().all(|&w| w == 0),
        "a worker above the active count polled after its current poll: {ran_on:?}"
    );
    wait_until("worker 1 parked", || {
        h.pool_size(PoolId::LATENCY).unwrap().parked == 1
    });
    assert_eq!(
        h.pool_size(PoolId::LATENCY),
        Some(PoolSize {
            configured: 2,
            active: 1,
            parked: 1
        })
    );
}

#[test]
fn a_shrunk_pool_runs_everything_on_the_workers_left_and_growing_brings_one_back() {
    let rt = two_workers();
    let h = rt.handle();
    h.set_pool_workers(PoolId::LATENCY, 1).unwrap();
    wait_until("worker 1 parked", || {
        h.pool_size(PoolId::LATENCY).unwrap().parked == 1
    });
    // Spawns from outside and from inside, wakes and yields: all on worker 0.
    let ran_on = Arc::new(Mutex::new(Vec::new()));
    let joins: Vec<_> = (0..100)
        .map(|_| {
            let ran_on = ran_on.clone();
            h.spawn(async move {
                for _ in 0..3 {
                    ran_on.lock().unwrap().push(worker_index());
                    let inner = ran_on.clone();
                    pagegen_executor::spawn(async move {
                        inner.lock().unwrap().push(worker_index());
                    })
                    .await
                    .unwrap();
                    pagegen_executor::yield_now().await;
                }
            })
        })
        .collect();
    rt.block_on(async {
        for j in joins {
            j.await.unwrap();
        }
    });
    let seen = std::mem::take(&mut *ran_on.lock().unwrap());
    assert_eq!(seen.len(), 600);
    assert!(seen.iter().all(|&w| w == 0), "{seen:?}");
    // Grow: the two holders can only run side by side if worker 1 is back.
    assert_eq!(h.set_pool_workers(PoolId::LATENCY, 2), Ok(1));
    let done = Arc::new(AtomicUsize::new(0));
    let release = Arc::new(AtomicBool::new(false));
    hold_both(&h, 10, ran_on.clone(), done.clone(), release.clone());
    release.store(true, Ordering::SeqCst);
    wait_until("children ran", || done.load(Ordering::SeqCst) == 10);
    assert_eq!(h.pool_size(PoolId::LATENCY).unwrap().parked, 0);
}

#[test]
fn shrink_and_grow_repeatedly_under_load_loses_nothing() {
    let rt = Builder::new().workers(3).build().unwrap();
    let h = rt.handle();
    let done = Arc::new(AtomicUsize::new(0));
    let joins: Vec<_> = (0..300)
        .map(|i| {
            let done = done.clone();
            h.spawn(async move {
                for _ in 0..(i % 7) {
                    pagegen_executor::yield_now().await;
                }
                done.fetch_add(1, Ordering::SeqCst);
            })
        })
        .collect();
    for (k, n) in [1, 3, 2, 1, 3, 1, 2].into_iter().enumerate() {
        h.set_pool_workers(PoolId::LATENCY, n).unwrap();
        // Let the resize be seen before the next one, on alternate steps.
        if k % 2 == 0 {
            wait_until("resize taken", || {
                let s = h.pool_size(PoolId::LATENCY).unwrap();
                s.parked == s.configured - s.active
            });
        }
    }
    rt.block_on(async {
        for j in joins {
            j.await.unwrap();
        }
    });
    assert_eq!(done.load(Ordering::SeqCst), 300);
}

#[test]
fn bad_resizes_are_refused_with_a_reason() {
    let rt = Builder::new().workers(2).build().unwrap();
    let h = rt.handle();
    let e = h.set_pool_workers(PoolId::LATENCY, 0).unwrap_err();
    assert!(matches!(
        e,
        ResizeError::OutOfRange {
            active: 0,
            configured: 2,
            ..
        }
    ));
    assert!(e.to_string().contains("1..=2"), "{e}");
    assert!(matches!(
        h.set_pool_workers(PoolId::LATENCY, 3),
        Err(ResizeError::OutOfRange { .. })
    ));
    assert!(matches!(
        h.set_pool_workers(PoolId::BULK, 1),
        Err(ResizeError::NoSuchPool(1, 1))
    ));
    assert_eq!(h.pool_size(PoolId::BULK), None);
    assert_eq!(h.pool_size(PoolId::LATENCY).unwrap().active, 2);
}

#[test]
fn a_runtime_with_parked_workers_shuts_down() {
    let rt = two_workers();
    let h = rt.handle();
    h.set_pool_workers(PoolId::LATENCY, 1).unwrap();
    wait_until("worker 1 parked", || {
        h.pool_size(PoolId::LATENCY).unwrap().parked == 1
    });
    drop(rt);
}
