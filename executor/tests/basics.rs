//! The executor's own behaviour without tokio: spawn, join, abort, panics, yield, shutdown.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{mpsc, Arc};

use pagegen_executor::{task, Builder, Runtime};

fn runtime(workers: usize) -> Runtime {
    Builder::new()
        .workers(workers)
        .tokio_compat(false)
        .build()
        .expect("runtime")
}

#[test]
fn spawn_and_join_many() {
    let rt = runtime(2);
    let sum = rt.block_on(async {
        let hs: Vec<_> = (0..1000u64)
            .map(|i| pagegen_executor::spawn(async move { i }))
            .collect();
        let mut sum = 0;
        for h in hs {
            sum += h.await.unwrap();
        }
        sum
    });
    assert_eq!(sum, 999 * 1000 / 2);
}

#[test]
fn chained_spawn_from_tasks() {
    let rt = runtime(2);
    let (tx, rx) = mpsc::channel();
    fn chain(n: usize, tx: mpsc::Sender<usize>) {
        if n == 0 {
            tx.send(0).unwrap();
        } else {
            pagegen_executor::spawn(async move { chain(n - 1, tx) });
        }
    }
    rt.spawn(async move { chain(500, tx) });
    assert_eq!(rx.recv().unwrap(), 0);
}

#[test]
fn yield_many() {
    let rt = runtime(2);
    let n = Arc::new(AtomicUsize::new(0));
    let hs: Vec<_> = (0..20)
        .map(|_| {
            let n = n.clone();
            rt.spawn(async move {
                for _ in 0..100 {
                    task::yield_now().await;
                    n.fetch_add(1, Ordering::Relaxed);
                }
            })
        })
        .collect();
    rt.block_on(async {
        for h in hs {
            h.await.unwrap();
        }
    });
    assert_eq!(n.load(Ordering::Relaxed), 2000);
}

#[test]
fn panics_are_contained_and_worker_survives() {
    let rt = runtime(1);
    let h = rt.spawn(async { panic!("boom") });
    let e = rt.block_on(h).unwrap_err();
    assert!(e.is_panic());
    assert_eq!(rt.block_on(rt.spawn(async { 5 })).unwrap(), 5);
}

#[test]
fn abort_pending_task() {
    let rt = runtime(2);
    let h = rt.spawn(std::future::pending::<()>());
    h.abort();
    let e = rt.block_on(h).unwrap_err();
    assert!(e.is_cancelled());
    assert_eq!(e.cancel_reason(), Some(pagegen_core::CancelReason::Aborted));
}

#[test]
fn shutdown_cancels_pending() {
    let rt = runtime(2);
    let h = rt.spawn(std::future::pending::<()>());
    let h2 = rt.spawn(async { 1 });
    rt.shutdown_timeout(std::time::Duration::from_millis(50));
    let hb = runtime(1);
    assert!(hb.block_on(h).unwrap_err().is_cancelled());
    assert_eq!(hb.block_on(h2).unwrap(), 1);
}

#[test]
fn spawn_blocking_runs() {
    let rt = runtime(1);
    let v = rt.block_on(async { pagegen_executor::spawn_blocking(|| 41 + 1).await.unwrap() });
    assert_eq!(v, 42);
}
