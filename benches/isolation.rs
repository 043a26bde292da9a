//! Latency isolation: a light class (50 µs polls, Poisson arrivals) beside a heavy class (20 ms
//! CPU-bound polls) that saturates the machine. Reports the light class's scheduling delay
//! (arrival → first poll) at p50/p99/p999 and the heavy class's throughput, for
//! 1. tokio's multi-thread runtime (2 workers),
//! 2. pagegen, one pool of 2 workers (the heavy class shares workers with the light one),
//! 3. pagegen, one pool, light and heavy as registered classes at equal shares (weighted-fair pick),
//! 4. the same with the light class favoured by shares (1000 : 1),
//! 5. pagegen with the heavy class in a bulk pool at nice +10 (latency pool 2 workers + bulk pool
//!    2 workers: more threads than cores, so the kernel preempts heavy polls for light ones),
//! 6. the same with a 100 µs scheduler slice on the latency pool (`PoolSpec::slice`, EEVDF),
//! 7. the same with, in addition, a 20 ms slice on the bulk pool,
//! 8. both pools at a 100 µs slice (a running bulk thread is protected from wake-up preemption for
//!    at most its own slice under EEVDF's run-to-parity, so a short bulk slice bounds the wait).
//!
//! 9. the bulk pool under `SCHED_IDLE` (the opt-in),
//! 10. **the kernel's floor**, no runtime at all: two plain threads at nice +10 spin the heavy polls,
//!     and each light arrival is handed to one of two parked nice-0 threads (a mutex and condvar
//!     each, the cheapest hand-off std offers). No user-space scheduler wakes a thread faster than
//!     this on the same machine, so it is the anchor for "near the service time".
//!
//! A distribution, not an iteration time, so this is a plain `harness = false` program rather than a
//! criterion group. `cargo bench --bench isolation` (3 s per configuration; `PAGEGEN_BENCH_SMOKE=1`:
//! 0.3 s); `PAGEGEN_ISO_REPEAT=5 cargo bench --bench isolation -- bulk` repeats only the bulk-pool
//! rows five times, interleaved, and prints medians.

#[path = "support/arrivals.rs"]
mod arrivals;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use pagegen::core::{ClassId, ClassSpec, Grant, PoolId, RequestCtx, RequestId, Shares};
use pagegen_executor::{Builder, PoolSpec};

const LIGHT_SERVICE: Duration = Duration::from_micros(50);
const HEAVY_POLL: Duration = Duration::from_millis(20);
/// Light arrivals per second: 1 000 × 50 µs = 5 % of one core, a light route at a busy site.
const LIGHT_RATE: f64 = 1_000.0;
/// Heavy tasks: twice the cores, so the heavy class alone saturates the machine.
const HEAVY_TASKS: usize = 4;

fn spin(d: Duration) {
    let t = Instant::now();
    while t.elapsed() < d {
        std::hint::spin_loop();
    }
}

struct Result {
    name: &'static str,
    light: Histogram<u64>,
    heavy_polls_per_s: f64,
    /// pagegen only: the executor's own spawn → first poll delay (`PollSummary`), i.e. the light
    /// delay without the bench thread's part (from `arrived` to the spawn's time stamp).
    exec_first: Option<Histogram<u64>>,
}

/// What a configuration must provide: spawning light and heavy work from a foreign thread.
trait Target: Sync {
    fn spawn_light(&self, f: Box<dyn FnOnce() + Send>);
    fn spawn_heavy(&self, stop: Arc<AtomicBool>, polls: Arc<AtomicU64>);
    /// The runtime's spawn → first-poll delays so far, where it records them.
    fn first_poll_delays(&self) -> Option<Histogram<u64>> {
        None
    }
}

struct Tokio(tokio::runtime::Runtime);
impl Target for Tokio {
    fn spawn_light(&self, f: Box<dyn FnOnce() + Send>) {
        self.0.spawn(async move { f() });
    }
    fn spawn_heavy(&self, stop: Arc<AtomicBool>, polls: Arc<AtomicU64>) {
        self.0.spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                spin(HEAVY_POLL);
                polls.fetch_add(1, Ordering::Relaxed);
                tokio::task::yield_now().await;
            }
        });
    }
}

struct Pagegen {
    rt: pagegen_executor::Runtime,
    heavy_pool: PoolId,
    /// `(light, heavy)` registered classes; `None`: unclassified light work, heavy in class id 2
    /// never registered.
    classes: Option<(ClassId, ClassId)>,
}
impl Target for Pagegen {
    fn first_poll_delays(&self) -> Option<Histogram<u64>> {
        Some(self.rt.handle().poll_summary().first_poll_delay_ns)
    }
    fn spawn_light(&self, f: Box<dyn FnOnce() + Send>) {
        match self.classes {
            Some((light, _)) => drop(self.rt.spawn_in(light, async move { f() })),
            None => drop(self.rt.spawn(async move { f() })),
        }
    }
    fn spawn_heavy(&self, stop: Arc<AtomicBool>, polls: Arc<AtomicU64>) {
        let heavy = self.classes.map_or(ClassId::from_raw(2), |(_, h)| h);
        let mut g = Grant::unlimited(heavy);
        g.pool = self.heavy_pool;
        let ctx = RequestCtx::new(RequestId(2), g, 0);
        self.rt.handle().spawn_with_ctx(ctx, async move {
            while !stop.load(Ordering::Relaxed) {
                spin(HEAVY_POLL);
                polls.fetch_add(1, Ordering::Relaxed);
                pagegen::task::yield_now().await;
            }
        });
    }
}

fn run(name: &'static str, target: &dyn Target, duration: Duration) -> Result {
    let stop = Arc::new(AtomicBool::new(false));
    let polls = Arc::new(AtomicU64::new(0));
    for _ in 0..HEAVY_TASKS {
        target.spawn_heavy(stop.clone(), polls.clone());
    }
    // Let the heavy class occupy the workers first.
    std::thread::sleep(HEAVY_POLL);
    let light = Arc::new(Mutex::new(
        Histogram::<u64>::new_with_bounds(1, 60_000_000_000, 3).unwrap(),
    ));
    let start = Instant::now();
    let polls_at_start = polls.load(Ordering::Relaxed);
    let mut arrivals = arrivals::Poisson::new(start, LIGHT_RATE);
    while start.elapsed() < duration {
        let arrived = arrivals.wait_next();
        let light = light.clone();
        target.spawn_light(Box::new(move || {
            let delay = arrived.elapsed().as_nanos() as u64;
            spin(LIGHT_SERVICE);
            light.lock().unwrap().saturating_record(delay.max(1));
        }));
    }
    let elapsed = start.elapsed().as_secs_f64();
    let heavy = (polls.load(Ordering::Relaxed) - polls_at_start) as f64 / elapsed;
    stop.store(true, Ordering::Relaxed);
    // Give in-flight light tasks a moment to record before reading.
    std::thread::sleep(HEAVY_POLL * 2);
    let light = light.lock().unwrap().clone();
    Result {
        name,
        light,
        heavy_polls_per_s: heavy,
        exec_first: target.first_poll_delays(),
    }
}

/// A configuration: its name and how to build its runtime.
type Config = (&'static str, fn() -> Box<dyn Target>);

fn tokio_2() -> Box<dyn Target> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .build()
        .unwrap();
    Box::new(Tokio(rt))
}

fn pagegen_one_pool() -> Box<dyn Target> {
    let rt = Builder::new().workers(2).build().unwrap();
    Box::new(Pagegen {
        rt,
        heavy_pool: PoolId::LATENCY,
        classes: None,
    })
}

fn pagegen_shares(light_shares: u16, heavy_shares: u16) -> Box<dyn Target> {
    let rt = Builder::new()
        .workers(2)
        .class(ClassSpec::new("light").with_shares(Shares::new(light_shares).unwrap()))
        .class(ClassSpec::new("heavy").with_shares(Shares::new(heavy_shares).unwrap()))
        .build()
        .unwrap();
    let reg = rt.handle().class_registry().clone();
    Box::new(Pagegen {
        rt,
        heavy_pool: PoolId::LATENCY,
        classes: Some((reg.id_of("light").unwrap(), reg.id_of("heavy").unwrap())),
    })
}

/// One parked thread of the floor configuration: a slot for the next job, and its wake-up.
#[derive(Default)]
struct Slot {
    job: Mutex<Option<Box<dyn FnOnce() + Send>>>,
    cv: std::sync::Condvar,
}

/// The kernel's floor (item 10): plain threads, no executor.
struct OsFloor {
    light: Vec<Arc<Slot>>,
    busy: Vec<Arc<AtomicBool>>,
    /// Where the search for an idle light thread starts (round-robin).
    next: std::sync::atomic::AtomicUsize,
    stop: Arc<AtomicBool>,
    heavy_started: std::sync::atomic::AtomicUsize,
}

impl Target for OsFloor {
    fn spawn_light(&self, f: Box<dyn FnOnce() + Send>) {
        // An idle thread if there is one, else round-robin (its slot queues one job at a time:
        // at 5 % load a second job while both are busy is rare and waits for the slot).
        let n = self.light.len();
        let start = self.next.fetch_add(1, Ordering::Relaxed);
        let k = (0..n)
            .map(|i| (start + i) % n)
            .find(|&i| !self.busy[i].load(Ordering::Acquire))
            .unwrap_or(start % n);
        let slot = &self.light[k];
        let mut f = Some(f);
        loop {
            let mut g = slot.job.lock().unwrap();
            if g.is_none() {
                *g = f.take();
                drop(g);
                slot.cv.notify_one();
                return;
            }
            drop(g);
            std::thread::yield_now();
        }
    }
    fn spawn_heavy(&self, stop: Arc<AtomicBool>, polls: Arc<AtomicU64>) {
        // Two heavy threads (one per core), whatever the number of heavy tasks asked for.
        if self.heavy_started.fetch_add(1, Ordering::Relaxed) >= 2 {
            return;
        }
        let own_stop = self.stop.clone();
        std::thread::spawn(move || {
            let _ = pagegen::runtime::lower_current_thread_priority(10);
            while !stop.load(Ordering::Relaxed) && !own_stop.load(Ordering::Relaxed) {
                spin(HEAVY_POLL);
                polls.fetch_add(1, Ordering::Relaxed);
            }
        });
    }
}

impl Drop for OsFloor {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        for s in &self.light {
            s.cv.notify_one();
        }
    }
}

fn os_floor() -> Box<dyn Target> {
    let stop = Arc::new(AtomicBool::new(false));
    let mut light = Vec::new();
    let mut busy = Vec::new();
    for _ in 0..2 {
        let slot = Arc::new(Slot::default());
        let b = Arc::new(AtomicBool::new(false));
        let (s, b2, stop) = (slot.clone(), b.clone(), stop.clone());
        std::thread::spawn(move || loop {
            let job = {
                let mut g = s.job.lock().unwrap();
                loop {
                    if stop.load(Ordering::Relaxed) {
                        return;
                    }
                    if let Some(j) = g.take() {
                        break j;
                    }
                    g = s.cv.wait(g).unwrap();
                }
            };
            b2.store(true, Ordering::Release);
            job();
            b2.store(false, Ordering::Release);
        });
        light.push(slot);
        busy.push(b);
    }
    Box::new(OsFloor {
        light,
        busy,
        next: std::sync::atomic::AtomicUsize::new(0),
        stop,
        heavy_started: std::sync::atomic::AtomicUsize::new(0),
    })
}

/// Latency pool of 2 and bulk pool of 2 under `SCHED_IDLE` (the opt-in).
fn pagegen_bulk_idle() -> Box<dyn Target> {
    let rt = Builder::new()
        .pool(PoolSpec::new("latency", 2))
        .pool(PoolSpec::new("bulk", 2).nice(10).sched_idle(true))
        .build()
        .unwrap();
    Box::new(Pagegen {
        rt,
        heavy_pool: PoolId::BULK,
        classes: None,
    })
}

/// Latency pool of 2 and bulk pool of 2 at nice +10, with optional scheduler slices.
fn pagegen_bulk(latency_slice: Option<Duration>, bulk_slice: Option<Duration>) -> Box<dyn Target> {
    let mut latency = PoolSpec::new("latency", 2);
    if let Some(s) = latency_slice {
        latency = latency.slice(s);
    }
    let mut bulk = PoolSpec::new("bulk", 2).nice(10);
    if let Some(s) = bulk_slice {
        bulk = bulk.slice(s);
    }
    let rt = Builder::new().pool(latency).pool(bulk).build().unwrap();
    Box::new(Pagegen {
        rt,
        heavy_pool: PoolId::BULK,
        classes: None,
    })
}

const CONFIGS: &[Config] = &[
    ("tokio (2 workers)", tokio_2),
    ("pagegen, one pool (2 workers)", pagegen_one_pool),
    ("pagegen, equal shares, one pool", || {
        pagegen_shares(100, 100)
    }),
    ("pagegen, light favoured 1000:1, one pool", || {
        pagegen_shares(1000, 1)
    }),
    ("pagegen, heavy in bulk pool (2+2, nice 10)", || {
        pagegen_bulk(None, None)
    }),
    ("bulk pool + latency slice 100 µs", || {
        pagegen_bulk(Some(Duration::from_micros(100)), None)
    }),
    ("bulk pool + latency 100 µs + bulk 20 ms slice", || {
        pagegen_bulk(
            Some(Duration::from_micros(100)),
            Some(Duration::from_millis(20)),
        )
    }),
    ("bulk pool + both slices 100 µs", || {
        pagegen_bulk(
            Some(Duration::from_micros(100)),
            Some(Duration::from_micros(100)),
        )
    }),
    ("bulk pool SCHED_IDLE (opt-in)", pagegen_bulk_idle),
    ("floor: plain threads, bulk nice 10 (no runtime)", os_floor),
];

fn main() {
    // `cargo bench --bench isolation [-- SUBSTRING]`: only configurations whose name contains
    // SUBSTRING. `PAGEGEN_ISO_REPEAT=N`: every configuration N times, interleaved (round-robin, so
    // load changes hit all alike), reporting the median of each figure over the N runs.
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.iter().any(|a| a == "--list") {
        return;
    }
    let filter = args.iter().find(|a| !a.starts_with('-')).cloned();
    let smoke = std::env::var_os("PAGEGEN_BENCH_SMOKE").is_some_and(|v| v == "1");
    let duration = if smoke {
        Duration::from_millis(300)
    } else {
        Duration::from_secs(3)
    };
    let repeat: usize = std::env::var("PAGEGEN_ISO_REPEAT")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1)
        .max(1);
    let configs: Vec<&Config> = CONFIGS
        .iter()
        .filter(|(name, _)| filter.as_deref().is_none_or(|f| name.contains(f)))
        .collect();
    let mut results: Vec<Vec<Result>> = configs.iter().map(|_| Vec::new()).collect();
    for _ in 0..repeat {
        for (k, (name, make)) in configs.iter().enumerate() {
            let target = make();
            results[k].push(run(name, &*target, duration));
        }
    }
    println!(
        "{:<48} {:>10} {:>10} {:>10} {:>8} {:>14}",
        "configuration (median of runs)", "p50 µs", "p99 µs", "p999 µs", "light n", "heavy polls/s"
    );
    for runs in &results {
        let median = |f: &dyn Fn(&Result) -> f64| {
            let mut v: Vec<f64> = runs.iter().map(f).collect();
            v.sort_by(|a, b| a.total_cmp(b));
            v[v.len() / 2]
        };
        let q = |p: f64| median(&|r: &Result| r.light.value_at_quantile(p) as f64 / 1_000.0);
        println!(
            "{:<48} {:>10.1} {:>10.1} {:>10.1} {:>8} {:>14.1}",
            runs[0].name,
            q(0.5),
            q(0.99),
            q(0.999),
            runs[0].light.len(),
            median(&|r: &Result| r.heavy_polls_per_s)
        );
        if runs[0].exec_first.is_some() {
            let e = |p: f64| {
                median(&|r: &Result| {
                    r.exec_first.as_ref().unwrap().value_at_quantile(p) as f64 / 1_000.0
                })
            };
            println!(
                "    executor's own spawn → first poll (µs): p50 {:.1}, p99 {:.1}, p999 {:.1}",
                e(0.5),
                e(0.99),
                e(0.999)
            );
        }
        if runs.len() > 1 {
            let each: Vec<String> = runs
                .iter()
                .map(|r| format!("{:.0}", r.light.value_at_quantile(0.99) as f64 / 1_000.0))
                .collect();
            println!("    p99 of each run (µs): {}", each.join(", "));
        }
    }
}
