//! pagegen's runtime against the scenarios of tokio's runtime tests, written afresh: spawn, block_on,
//! join, abort, panics, wakes from other threads, spawns from tasks, yield, budget, timers, TCP echo,
//! shutdown, hooks and request contexts. Synchronisation is by channels and wakers, never sleeps.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::task::{Context, Poll, Wake, Waker};
use std::time::Duration;

use pagegen::core::{
    CancelReason, ClassId, DropCause, Grant, PollHook, PollStats, RequestCtx, RequestId, Resource,
    Verdict,
};
use pagegen::runtime::{Builder, Runtime};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

fn rt(workers: usize) -> Runtime {
    Builder::new()
        .temporary_state()
        .trainer(false)
        .workers(workers)
        .build()
        .expect("runtime")
}

/// A waker that reports each wake on a channel, so a test can block until a wake happened.
struct ChannelWaker(Mutex<mpsc::Sender<()>>);
impl Wake for ChannelWaker {
    fn wake(self: Arc<Self>) {
        let _ = self.0.lock().unwrap().send(());
    }
}
fn channel_waker() -> (Waker, mpsc::Receiver<()>) {
    let (tx, rx) = mpsc::channel();
    (Waker::from(Arc::new(ChannelWaker(Mutex::new(tx)))), rx)
}

#[test]
fn block_on_runs_a_future_and_spawned_tasks_join() {
    let rt = rt(2);
    let out = rt.block_on(async {
        let a = pagegen::spawn(async { 20 });
        let b = pagegen::spawn(async { 22 });
        a.await.unwrap() + b.await.unwrap()
    });
    assert_eq!(out, 42);
}

#[test]
fn join_handle_polled_one_step_at_a_time() {
    let rt = rt(2);
    let (tx, rx) = tokio::sync::oneshot::channel::<u32>();
    let mut h = rt.spawn(async move { rx.await.unwrap() * 2 });
    let (waker, woken) = channel_waker();
    let mut cx = Context::from_waker(&waker);
    assert!(Pin::new(&mut h).poll(&mut cx).is_pending());
    assert!(!h.is_finished());
    tx.send(21).unwrap();
    woken.recv().unwrap();
    match Pin::new(&mut h).poll(&mut cx) {
        Poll::Ready(Ok(v)) => assert_eq!(v, 42),
        other => panic!("expected the output, got {:?}", other.map(|r| r.is_ok())),
    }
}

#[test]
fn spawn_from_a_spawned_task_and_chains() {
    let rt = rt(2);
    let (tx, rx) = mpsc::channel();
    fn chain(left: u32, tx: mpsc::Sender<u32>) {
        if left == 0 {
            tx.send(7).unwrap();
        } else {
            drop(pagegen::spawn(async move { chain(left - 1, tx) }));
        }
    }
    rt.spawn(async move { chain(200, tx) });
    assert_eq!(rx.recv().unwrap(), 7);
    let nested = rt.block_on(async {
        pagegen::spawn(async { pagegen::spawn(async { 3 }).await.unwrap() + 1 })
            .await
            .unwrap()
    });
    assert_eq!(nested, 4);
}

#[test]
fn many_tasks_on_many_workers_all_complete() {
    let rt = rt(4);
    let n = Arc::new(AtomicUsize::new(0));
    let handles: Vec<_> = (0..2_000)
        .map(|_| {
            let n = n.clone();
            rt.spawn(async move {
                n.fetch_add(1, Ordering::Relaxed);
            })
        })
        .collect();
    rt.block_on(async {
        for h in handles {
            h.await.unwrap();
        }
    });
    assert_eq!(n.load(Ordering::Relaxed), 2_000);
}

#[test]
fn abort_cancels_an_idle_task_and_is_a_no_op_after_completion() {
    let rt = rt(2);
    let dropped = Arc::new(AtomicBool::new(false));
    struct SetOnDrop(Arc<AtomicBool>);
    impl Drop for SetOnDrop {
        fn drop(&mut self) {
            self.0.store(true, Ordering::SeqCst);
        }
    }
    let guard = SetOnDrop(dropped.clone());
    let h = rt.spawn(async move {
        let _g = guard;
        std::future::pending::<()>().await
    });
    h.abort();
    let e = rt.block_on(h).unwrap_err();
    assert!(e.is_cancelled() && !e.is_panic());
    assert_eq!(e.cancel_reason(), Some(CancelReason::Aborted));
    assert!(dropped.load(Ordering::SeqCst), "the future was dropped");

    let done = rt.spawn(async { 5 });
    let v = rt.block_on(async {
        while !done.is_finished() {
            pagegen::task::yield_now().await;
        }
        done.abort();
        done.await
    });
    assert_eq!(v.unwrap(), 5);
}

#[test]
fn a_panicking_task_fails_alone_and_its_worker_survives() {
    let rt = rt(1);
    let h = rt.spawn(async { panic!("render failed") });
    let e = rt.block_on(h).unwrap_err();
    assert!(e.is_panic());
    assert!(e.to_string().contains("render failed"), "{e}");
    assert_eq!(rt.block_on(rt.spawn(async { 1 })).unwrap(), 1);
}

#[test]
fn wake_from_a_foreign_thread() {
    let rt = rt(2);
    let (tx, rx) = tokio::sync::oneshot::channel();
    let h = rt.spawn(async move { rx.await.unwrap() });
    let t = std::thread::spawn(move || tx.send("hi").unwrap());
    assert_eq!(rt.block_on(h).unwrap(), "hi");
    t.join().unwrap();
}

#[test]
fn yield_now_lets_other_tasks_run_on_a_single_worker() {
    let rt = rt(1);
    let flag = Arc::new(AtomicBool::new(false));
    let (seen_tx, seen_rx) = mpsc::channel();
    let f = flag.clone();
    let spinner = rt.spawn(async move {
        let mut yields = 0u32;
        while !f.load(Ordering::SeqCst) {
            pagegen::task::yield_now().await;
            yields += 1;
        }
        yields
    });
    rt.spawn(async move {
        flag.store(true, Ordering::SeqCst);
        seen_tx.send(()).unwrap();
    });
    seen_rx.recv().unwrap();
    assert!(rt.block_on(spinner).unwrap() >= 1);
}

#[test]
fn cooperative_budget_forces_a_yield_on_always_ready_work() {
    let rt = rt(1);
    let flag = Arc::new(AtomicBool::new(false));
    let f = flag.clone();
    // Never awaits anything but the budget: without it, the setter below could never run.
    let greedy = rt.spawn(async move {
        let mut units = 0u64;
        while !f.load(Ordering::SeqCst) {
            pagegen::task::consume_budget().await;
            units += 1;
        }
        units
    });
    rt.spawn(async move { flag.store(true, Ordering::SeqCst) });
    assert!(rt.block_on(greedy).unwrap() >= 128);
}

#[test]
fn tokio_timers_work_inside_tasks() {
    let rt = rt(2);
    let ticks = rt.block_on(async {
        pagegen::spawn(async {
            tokio::time::sleep(Duration::from_millis(1)).await;
            let timed_out =
                tokio::time::timeout(Duration::from_millis(1), std::future::pending::<()>())
                    .await
                    .is_err();
            assert!(timed_out);
            let mut iv = tokio::time::interval(Duration::from_millis(1));
            for _ in 0..3 {
                iv.tick().await;
            }
            3
        })
        .await
        .unwrap()
    });
    assert_eq!(ticks, 3);
}

#[test]
fn tcp_echo_over_tokio_net() {
    let rt = rt(2);
    let echoed = rt.block_on(async {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let server = pagegen::spawn(async move {
            let (mut s, _) = listener.accept().await.unwrap();
            let mut buf = vec![0u8; 5];
            s.read_exact(&mut buf).await.unwrap();
            s.write_all(&buf).await.unwrap();
        });
        let client = pagegen::spawn(async move {
            let mut c = tokio::net::TcpStream::connect(addr).await.unwrap();
            c.write_all(b"hello").await.unwrap();
            let mut buf = vec![0u8; 5];
            c.read_exact(&mut buf).await.unwrap();
            buf
        });
        server.await.unwrap();
        client.await.unwrap()
    });
    assert_eq!(echoed, b"hello");
}

#[test]
fn spawn_blocking_sees_the_request_context() {
    let rt = rt(1);
    let ctx = RequestCtx::new(RequestId(77), Grant::unlimited(ClassId::from_raw(3)), 0);
    let h = rt.handle().spawn_with_ctx(ctx, async {
        let child = pagegen::spawn(async { RequestCtx::current().map(|c| c.id()) });
        let blocking = pagegen::spawn_blocking(|| RequestCtx::current().map(|c| c.class()));
        (child.await.unwrap(), blocking.await.unwrap())
    });
    let (child, blocking) = rt.block_on(h).unwrap();
    assert_eq!(child, Some(RequestId(77)));
    assert_eq!(blocking, Some(ClassId::from_raw(3)));
    let bg = rt.block_on(rt.spawn(async { RequestCtx::current().map(|c| c.class()) }));
    assert_eq!(
        bg.unwrap(),
        Some(ClassId::DEFAULT),
        "unclassified work runs in default"
    );
}

#[test]
fn request_cancel_drops_the_task_before_its_next_poll() {
    let rt = rt(1);
    let ctx = RequestCtx::new(RequestId(5), Grant::unlimited(ClassId::from_raw(1)), 0);
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let polls_after = Arc::new(AtomicUsize::new(0));
    let p = polls_after.clone();
    let h = rt.handle().spawn_with_ctx(ctx.clone(), async move {
        let _ = rx.await;
        p.fetch_add(1, Ordering::SeqCst);
    });
    ctx.request_cancel(CancelReason::BudgetExceeded(Resource::Memory));
    tx.send(()).unwrap();
    let e = rt.block_on(h).unwrap_err();
    assert_eq!(
        e.cancel_reason(),
        Some(CancelReason::BudgetExceeded(Resource::Memory))
    );
    assert_eq!(polls_after.load(Ordering::SeqCst), 0);
}

/// Counts polls and drops, cancels class 9 after its first poll, panics in `before_poll` for class 8.
#[derive(Default)]
struct TestHook {
    polls: AtomicUsize,
    drops: Mutex<Vec<DropCause>>,
}
impl PollHook for TestHook {
    fn before_poll(&self, ctx: &RequestCtx) {
        assert_eq!(
            RequestCtx::current().map(|c| c.id()),
            Some(ctx.id()),
            "the task's context is current during its poll"
        );
        if ctx.class() == ClassId::from_raw(8) {
            panic!("hook failure");
        }
    }
    fn after_poll(&self, ctx: &RequestCtx, _: &PollStats) -> Verdict {
        self.polls.fetch_add(1, Ordering::SeqCst);
        if ctx.class() == ClassId::from_raw(9) {
            Verdict::Cancel(CancelReason::Shed)
        } else {
            Verdict::Continue
        }
    }
    fn before_drop(&self, _: &RequestCtx, cause: DropCause) {
        self.drops.lock().unwrap().push(cause);
    }
}

#[test]
fn hooks_see_polls_cancel_by_verdict_and_panics_are_contained() {
    let hook = Arc::new(TestHook::default());
    let rt = Builder::new()
        .temporary_state()
        .trainer(false)
        .workers(1)
        .hook(hook.clone())
        .build()
        .unwrap();
    let shed = RequestCtx::new(RequestId(1), Grant::unlimited(ClassId::from_raw(9)), 0);
    let e = rt
        .block_on(
            rt.handle()
                .spawn_with_ctx(shed, std::future::pending::<()>()),
        )
        .unwrap_err();
    assert_eq!(e.cancel_reason(), Some(CancelReason::Shed));

    let broken = RequestCtx::new(RequestId(2), Grant::unlimited(ClassId::from_raw(8)), 0);
    let e = rt
        .block_on(rt.handle().spawn_with_ctx(broken, async { 1 }))
        .unwrap_err();
    assert!(e.is_panic(), "a panicking hook fails the task");

    assert_eq!(
        rt.block_on(rt.spawn(async { 2 })).unwrap(),
        2,
        "worker survived"
    );
    assert!(hook.polls.load(Ordering::SeqCst) >= 2);
    let drops = hook.drops.lock().unwrap().clone();
    assert!(
        drops.contains(&DropCause::Cancelled(CancelReason::Shed)),
        "{drops:?}"
    );
    assert!(drops.contains(&DropCause::Panicked), "{drops:?}");
    assert!(drops.contains(&DropCause::Completed), "{drops:?}");
}

#[test]
fn shutdown_timeout_drains_finishing_tasks_then_drops_the_rest() {
    let rt = rt(2);
    let (go_tx, go_rx) = tokio::sync::oneshot::channel::<()>();
    let (done_tx, done_rx) = mpsc::channel();
    rt.spawn(async move {
        go_rx.await.unwrap();
        done_tx.send("finished").unwrap();
    });
    let stuck = rt.spawn(std::future::pending::<()>());
    go_tx.send(()).unwrap();
    rt.shutdown_timeout(Duration::from_millis(100));
    assert_eq!(done_rx.recv().unwrap(), "finished");
    let other = self::rt(1);
    let e = other.block_on(stuck).unwrap_err();
    assert_eq!(e.cancel_reason(), Some(CancelReason::Shutdown));
}

#[test]
fn spawn_after_shutdown_yields_a_cancelled_handle() {
    let rt = rt(1);
    let handle = rt.handle();
    drop(rt);
    let h = handle.spawn(async { 1 });
    assert!(h.is_finished());
    let e = self::rt(1).block_on(h).unwrap_err();
    assert_eq!(e.cancel_reason(), Some(CancelReason::Shutdown));
}

#[pagegen::test]
async fn the_test_attribute_runs_on_its_own_runtime() {
    let v = pagegen::spawn(async { 40 }).await.unwrap();
    tokio::time::sleep(Duration::from_millis(1)).await;
    assert_eq!(v + 2, 42);
}

#[pagegen::test(workers = 2)]
async fn the_test_attribute_takes_workers() {
    // `workers` sizes the latency pool; a test runtime also has a one-worker bulk pool, as every
    // pagegen runtime has two pools.
    let h = pagegen::runtime::Handle::current();
    let pool = |p| h.pool_size(pagegen::core::PoolId(p)).map(|s| s.configured);
    assert_eq!((pool(0), pool(1), h.workers()), (Some(2), Some(1), 3));
}

/// Records what the executor measured for each poll.
#[derive(Default)]
struct StatsHook(Mutex<Vec<PollStats>>);
impl PollHook for StatsHook {
    fn after_poll(&self, _: &RequestCtx, stats: &PollStats) -> Verdict {
        self.0.lock().unwrap().push(*stats);
        Verdict::Continue
    }
}

#[test]
fn every_poll_is_instrumented_and_summarised() {
    let hook = Arc::new(StatsHook::default());
    let rt = Builder::new()
        .temporary_state()
        .trainer(false)
        .temporary_state()
        .trainer(false)
        .workers(1)
        .hook(hook.clone())
        .build()
        .unwrap();
    let handle = rt.handle();
    rt.block_on(rt.spawn(async {
        pagegen::task::yield_now().await;
        pagegen::task::yield_now().await;
    }))
    .unwrap();
    drop(rt);
    let stats = hook.0.lock().unwrap().clone();
    let indices: Vec<u64> = stats.iter().map(|s| s.poll_index).collect();
    assert_eq!(indices, [0, 1, 2]);
    assert_eq!(stats.iter().filter(|s| s.ready).count(), 1);
    assert!(stats.iter().all(|s| s.cpu_ns <= s.busy_ns));
    let summary = handle.poll_summary();
    assert_eq!(
        summary.polls, 3,
        "workers publish what they saw before exiting"
    );
    assert_eq!(summary.first_poll_delay_ns.len(), 1);
    assert_eq!(summary.busy_ns.len(), 3);
}

#[test]
fn the_predictor_knob_pins_who_serves() {
    let built = |predictor: &str| {
        let mut cfg = pagegen::config::Config::default();
        cfg.set("predictor", predictor).unwrap();
        Builder::with_config(cfg)
            .temporary_state()
            .trainer(false)
            .workers(1)
            .build()
            .expect("runtime")
    };
    let rt = built("ewma");
    let deployed = rt.model().predictor();
    assert_eq!(deployed.serving(), pagegen::model::Serving::Ewma);
    // A gate round's decision (or an imported model) does not override the pin.
    deployed.set_serving(pagegen::model::Serving::Recurrent);
    assert_eq!(deployed.serving(), pagegen::model::Serving::Ewma);
    drop(rt);
    let rt = built("static");
    assert_eq!(
        rt.model().predictor().serving(),
        pagegen::model::Serving::Static
    );
}

#[test]
fn a_tokio_spawned_task_that_never_yields_does_not_stop_pagegen_timers() {
    let rt = rt(2);
    let release = Arc::new(AtomicBool::new(false));
    let spinning = Arc::new(AtomicBool::new(false));
    let (r, s) = (release.clone(), spinning.clone());
    // What a library's background task does at its worst: holds its tokio thread until told.
    rt.block_on(async move {
        drop(tokio::spawn(async move {
            s.store(true, Ordering::SeqCst);
            while !r.load(Ordering::SeqCst) {
                std::hint::spin_loop();
            }
        }));
    });
    while !spinning.load(Ordering::SeqCst) {
        std::thread::yield_now();
    }
    let metrics = rt
        .handle()
        .tokio_metrics()
        .expect("tokio compatibility is on");
    assert_eq!(metrics.num_workers(), 2);
    assert!(
        metrics.num_alive_tasks() >= 1,
        "the spawned task is visible"
    );
    // A pagegen task's timer still fires (with one tokio thread it could not: the spinning task
    // would hold the only thread that runs the timer wheel, and this would never finish).
    let (tx, rx) = mpsc::channel();
    let release2 = release.clone();
    drop(rt.spawn(async move {
        tokio::time::sleep(Duration::from_millis(1)).await;
        release2.store(true, Ordering::SeqCst);
        let _ = tx.send(());
    }));
    let fired = rx.recv_timeout(Duration::from_secs(60));
    release.store(true, Ordering::SeqCst);
    assert!(
        fired.is_ok(),
        "the timer never fired beside the spawned task"
    );
}
