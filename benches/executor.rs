//! Executor parity: the workload shapes of tokio's `benches/rt_multi_threaded.rs`, on tokio's
//! multi-thread runtime and on pagegen (with its always-on poll instrumentation, and without it as
//! `pagegen-bare`), all with 2 workers, in the same run. The `poll_cost` group measures what the
//! instrumentation costs per poll, beside `tokio-metrics`' `TaskMonitor::instrument`.
//!
//! `cargo bench --bench executor -- --measurement-time 2 --warm-up-time 1`
//! (`PAGEGEN_BENCH_SMOKE=1` runs a tiny configuration.) Each group holds one workload; compare the
//! `tokio` and `pagegen` medians of a group.

use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, Criterion};

const WORKERS: usize = 2;

fn smoke() -> bool {
    std::env::var_os("PAGEGEN_BENCH_SMOKE").is_some_and(|v| v == "1")
}
fn num_spawn() -> usize {
    if smoke() {
        100
    } else {
        10_000
    }
}
fn num_pings() -> usize {
    if smoke() {
        10
    } else {
        1_000
    }
}
fn num_yield() -> usize {
    if smoke() {
        10
    } else {
        1_000
    }
}
const YIELD_TASKS: usize = 200;

#[derive(Clone, Copy)]
enum Kind {
    Tokio,
    Pagegen,
    PagegenBare,
}

impl Kind {
    fn id(self) -> &'static str {
        match self {
            Kind::Tokio => "tokio",
            Kind::Pagegen => "pagegen",
            Kind::PagegenBare => "pagegen-bare",
        }
    }
}

enum Rt {
    Tokio(tokio::runtime::Runtime),
    Pagegen(pagegen_executor::Runtime),
}

enum Join {
    Tokio(tokio::task::JoinHandle<()>),
    Pagegen(pagegen::JoinHandle<()>),
}

impl Join {
    async fn join(self) {
        match self {
            Join::Tokio(h) => h.await.unwrap(),
            Join::Pagegen(h) => h.await.unwrap(),
        }
    }
}

impl Rt {
    fn new(kind: Kind) -> Rt {
        Rt::with_workers(kind, WORKERS)
    }
    fn with_workers(kind: Kind, workers: usize) -> Rt {
        match kind {
            Kind::Tokio => Rt::Tokio(
                tokio::runtime::Builder::new_multi_thread()
                    .worker_threads(workers)
                    .enable_all()
                    .build()
                    .unwrap(),
            ),
            Kind::Pagegen | Kind::PagegenBare => Rt::Pagegen(
                pagegen_executor::Builder::new()
                    .workers(workers)
                    .poll_timing(matches!(kind, Kind::Pagegen))
                    .build()
                    .unwrap(),
            ),
        }
    }
    /// Which spawn/yield functions tasks call (both pagegen flavours use pagegen's).
    fn kind(&self) -> Kind {
        match self {
            Rt::Tokio(_) => Kind::Tokio,
            Rt::Pagegen(_) => Kind::Pagegen,
        }
    }
    fn block_on<F: Future>(&self, f: F) -> F::Output {
        match self {
            Rt::Tokio(rt) => rt.block_on(f),
            Rt::Pagegen(rt) => rt.block_on(f),
        }
    }
    /// A spawn from outside the runtime (the remote path).
    fn spawn_remote<F: Future<Output = ()> + Send + 'static>(&self, f: F) -> Join {
        match self {
            Rt::Tokio(rt) => Join::Tokio(rt.spawn(f)),
            Rt::Pagegen(rt) => Join::Pagegen(rt.spawn(f)),
        }
    }
}

/// A spawn from inside the runtime (`tokio::spawn` / `pagegen::spawn`).
fn spawn<F: Future<Output = ()> + Send + 'static>(kind: Kind, f: F) -> Join {
    match kind {
        Kind::Tokio => Join::Tokio(tokio::spawn(f)),
        Kind::Pagegen | Kind::PagegenBare => Join::Pagegen(pagegen::spawn(f)),
    }
}

async fn yield_now(kind: Kind) {
    match kind {
        Kind::Tokio => tokio::task::yield_now().await,
        Kind::Pagegen | Kind::PagegenBare => pagegen::task::yield_now().await,
    }
}

/// Busy work between yields of the background tasks (tokio's bench stalls the same way).
fn stall() {
    let start = Instant::now();
    while start.elapsed() < Duration::from_micros(10) {
        std::hint::spin_loop();
    }
}

fn both(c: &mut Criterion, name: &str, mut f: impl FnMut(&Rt, &mut criterion::Bencher<'_>)) {
    let mut g = c.benchmark_group(name);
    if smoke() {
        g.sample_size(10)
            .measurement_time(Duration::from_millis(200))
            .warm_up_time(Duration::from_millis(50));
    }
    for kind in [Kind::Tokio, Kind::PagegenBare, Kind::Pagegen] {
        let rt = Rt::new(kind);
        g.bench_function(kind.id(), |b| f(&rt, b));
    }
    g.finish();
}

fn spawn_many_local(c: &mut Criterion) {
    both(c, "spawn_many_local", |rt, b| {
        let kind = rt.kind();
        let (tx, rx) = mpsc::sync_channel(1);
        let rem = Arc::new(AtomicUsize::new(0));
        b.iter(|| {
            rem.store(num_spawn(), Ordering::Relaxed);
            let (tx, rem) = (tx.clone(), rem.clone());
            rt.block_on(async move {
                spawn(kind, async move {
                    for _ in 0..num_spawn() {
                        let (tx, rem) = (tx.clone(), rem.clone());
                        spawn(kind, async move {
                            if rem.fetch_sub(1, Ordering::Relaxed) == 1 {
                                tx.send(()).unwrap();
                            }
                        });
                    }
                });
            });
            rx.recv().unwrap();
        });
    });
}

fn spawn_many_remote_idle(c: &mut Criterion) {
    both(c, "spawn_many_remote_idle", |rt, b| {
        b.iter(|| {
            let handles: Vec<Join> = (0..num_spawn())
                .map(|_| rt.spawn_remote(async {}))
                .collect();
            rt.block_on(async {
                for h in handles {
                    h.join().await;
                }
            });
        });
    });
}

fn spawn_many_remote_busy(c: &mut Criterion) {
    both(c, "spawn_many_remote_busy", |rt, b| {
        let kind = rt.kind();
        let flag = Arc::new(AtomicBool::new(true));
        for _ in 0..2 * WORKERS {
            let flag = flag.clone();
            rt.spawn_remote(async move {
                while flag.load(Ordering::Relaxed) {
                    yield_now(kind).await;
                    stall();
                }
            });
        }
        b.iter(|| {
            let handles: Vec<Join> = (0..num_spawn())
                .map(|_| rt.spawn_remote(async {}))
                .collect();
            rt.block_on(async {
                for h in handles {
                    h.join().await;
                }
            });
        });
        flag.store(false, Ordering::Relaxed);
    });
}

fn ping_pong(c: &mut Criterion) {
    both(c, "ping_pong", |rt, b| {
        let kind = rt.kind();
        let (done_tx, done_rx) = mpsc::sync_channel(1);
        let rem = Arc::new(AtomicUsize::new(0));
        b.iter(|| {
            let done_tx = done_tx.clone();
            let rem = rem.clone();
            rem.store(num_pings(), Ordering::Relaxed);
            rt.block_on(async move {
                spawn(kind, async move {
                    for _ in 0..num_pings() {
                        let rem = rem.clone();
                        let done_tx = done_tx.clone();
                        spawn(kind, async move {
                            let (tx1, rx1) = tokio::sync::oneshot::channel::<()>();
                            let (tx2, rx2) = tokio::sync::oneshot::channel::<()>();
                            spawn(kind, async move {
                                rx1.await.unwrap();
                                tx2.send(()).unwrap();
                            });
                            tx1.send(()).unwrap();
                            rx2.await.unwrap();
                            if rem.fetch_sub(1, Ordering::Relaxed) == 1 {
                                done_tx.send(()).unwrap();
                            }
                        });
                    }
                });
            });
            done_rx.recv().unwrap();
        });
    });
}

fn yield_many(c: &mut Criterion) {
    both(c, "yield_many", |rt, b| {
        let kind = rt.kind();
        let (tx, rx) = mpsc::sync_channel(YIELD_TASKS);
        b.iter(|| {
            for _ in 0..YIELD_TASKS {
                let tx = tx.clone();
                rt.spawn_remote(async move {
                    for _ in 0..num_yield() {
                        yield_now(kind).await;
                    }
                    tx.send(()).unwrap();
                });
            }
            for _ in 0..YIELD_TASKS {
                rx.recv().unwrap();
            }
        });
    });
}

fn chained_spawn(c: &mut Criterion) {
    const ITER: usize = 1_000;
    fn iter(kind: Kind, done: mpsc::SyncSender<()>, n: usize) {
        if n == 0 {
            done.send(()).unwrap();
        } else {
            spawn(kind, async move { iter(kind, done, n - 1) });
        }
    }
    both(c, "chained_spawn", |rt, b| {
        let kind = rt.kind();
        let (done_tx, done_rx) = mpsc::sync_channel(1);
        b.iter(|| {
            let done_tx = done_tx.clone();
            rt.block_on(async move {
                spawn(kind, async move { iter(kind, done_tx, ITER) });
            });
            done_rx.recv().unwrap();
        });
    });
}

/// One task yielding `POLLS` times on a 1-worker runtime: `POLLS + 1` polls, nothing else. The
/// per-poll cost of instrumentation is (instrumented − bare) / polls.
fn poll_cost(c: &mut Criterion) {
    let polls = if smoke() { 1_000 } else { 100_000 };
    let mut g = c.benchmark_group("poll_cost");
    if smoke() {
        g.sample_size(10)
            .measurement_time(Duration::from_millis(200))
            .warm_up_time(Duration::from_millis(50));
    }
    for kind in [Kind::Tokio, Kind::PagegenBare, Kind::Pagegen] {
        let rt = Rt::with_workers(kind, 1);
        g.bench_function(kind.id(), |b| {
            b.iter(|| {
                let kind = rt.kind();
                rt.block_on(async move {
                    spawn(kind, async move {
                        for _ in 0..polls {
                            yield_now(kind).await;
                        }
                    })
                    .join()
                    .await
                })
            })
        });
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let monitor = tokio_metrics::TaskMonitor::new();
    g.bench_function("tokio-metrics", |b| {
        b.iter(|| {
            rt.block_on(async {
                tokio::spawn(monitor.instrument(async move {
                    for _ in 0..polls {
                        tokio::task::yield_now().await;
                    }
                }))
                .await
                .unwrap()
            })
        })
    });
    g.finish();
}

/// Lane contention (issue #4, "measure contention"): a root task spawns `num_spawn()` short tasks
/// from inside, round-robin over `CLASSES` request classes (8 lanes per worker) or all in `default`
/// (one lane), each yielding `LANE_YIELDS` times; both workers push, pop and steal at once. Ratios
/// against the one-class case show what the per-class lanes and the weighted-fair pick cost under
/// contention; after the group, the worker queues' CAS retries per task (`queue_contention`) tell
/// how often a pop or steal lost a race.
fn lanes_contention(c: &mut Criterion) {
    const CLASSES: usize = 8;
    const LANE_YIELDS: usize = 3;
    let mut g = c.benchmark_group("lanes_contention");
    if smoke() {
        g.sample_size(10)
            .measurement_time(Duration::from_millis(200))
            .warm_up_time(Duration::from_millis(50));
    }
    fn work(kind: Kind, classes: Vec<pagegen::core::ClassId>, done: mpsc::SyncSender<()>) -> Join {
        let rem = Arc::new(AtomicUsize::new(num_spawn()));
        let root = async move {
            for i in 0..num_spawn() {
                let (rem, done) = (rem.clone(), done.clone());
                let task = async move {
                    for _ in 0..LANE_YIELDS {
                        yield_now(kind).await;
                    }
                    if rem.fetch_sub(1, Ordering::Relaxed) == 1 {
                        done.send(()).unwrap();
                    }
                };
                if classes.is_empty() {
                    drop(spawn(kind, task));
                } else {
                    drop(pagegen::spawn_in(classes[i % classes.len()], task));
                }
            }
        };
        spawn(kind, root)
    }
    let configs: [(&str, Kind, usize); 3] = [
        ("tokio", Kind::Tokio, 0),
        ("pagegen-1-class", Kind::Pagegen, 0),
        ("pagegen-8-classes", Kind::Pagegen, CLASSES),
    ];
    let mut contention = Vec::new();
    for (id, kind, n) in configs {
        let (rt, classes) = match kind {
            Kind::Tokio => (Rt::new(kind), Vec::new()),
            _ => {
                let mut b = pagegen_executor::Builder::new().workers(WORKERS);
                for k in 0..n {
                    b = b.class(pagegen::core::ClassSpec::new(format!("c{k}")));
                }
                let rt = b.build().unwrap();
                let reg = rt.handle().class_registry().clone();
                let classes = (0..n)
                    .map(|k| reg.id_of(&format!("c{k}")).unwrap())
                    .collect();
                (Rt::Pagegen(rt), classes)
            }
        };
        let (tx, rx) = mpsc::sync_channel(1);
        let before = pagegen_executor::queue_contention();
        let mut iters = 0u64;
        g.bench_function(id, |b| {
            b.iter(|| {
                iters += 1;
                let (kind, classes, tx) = (rt.kind(), classes.clone(), tx.clone());
                rt.block_on(async move { work(kind, classes, tx).join().await });
                rx.recv().unwrap();
            })
        });
        let after = pagegen_executor::queue_contention();
        if !matches!(kind, Kind::Tokio) {
            let tasks = (iters * num_spawn() as u64).max(1) as f64;
            contention.push(format!(
                "{id}: {:.4} pop retries and {:.4} steal retries per task ({iters} runs)",
                (after.pop_retries - before.pop_retries) as f64 / tasks,
                (after.steal_retries - before.steal_retries) as f64 / tasks,
            ));
        }
    }
    g.finish();
    for line in contention {
        println!("lanes_contention queue CAS retries, {line}");
    }
}

criterion_group!(
    executor,
    lanes_contention,
    poll_cost,
    spawn_many_local,
    spawn_many_remote_idle,
    spawn_many_remote_busy,
    ping_pong,
    yield_many,
    chained_spawn
);
criterion_main!(executor);
