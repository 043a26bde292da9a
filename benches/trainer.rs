//! The model trainer beside a busy runtime (issue 7: "the trainer runs beside a busy runtime without
//! disturbing it"). A pagegen runtime of 2 workers serves a light class (50 µs requests, Poisson
//! arrivals at 1,000/s) and a heavy class that saturates both workers (4 tasks of CPU-bound polls of
//! fixed work, registered classes at equal shares). Every light request, when done, hands a profile
//! record to the model (`ModelRuntime::record`, the completion path), so a trainer that held up
//! completions would show in the light latency. Five configurations, alternated run by run:
//! 1. no trainer (the model records, nothing trains) — the anchor,
//! 2. the trainer at normal priority, no CPU bound (`cpu_share` 1.0),
//! 3. the trainer at nice +19, no CPU bound (how the facade started it on main b7aee4e),
//! 4. the trainer at `SCHED_IDLE` (after nice +19), no CPU bound,
//! 5. the trainer as the facade starts it (`pagegen::trainer::start`): `SCHED_IDLE` plus the default
//!    duty cycle (`TrainerConfig::cpu_share` = 2 % of one core).
//!
//! The trainer runs continuous rounds (1 ms between ticks; one round of the default sizes is ~2 s of
//! CPU) on a profile store filled with 20,000 records from the evaluation's synthetic routes and 40
//! heavy-tailed feature-less classes. Reported per configuration (median over runs): the light
//! class's scheduling delay (arrival → first poll) p50/p99, heavy work units per second (a unit is a
//! fixed amount of arithmetic, so CPU taken by the trainer shows as fewer units, unlike a spin on the
//! wall clock), each as a ratio to the no-trainer runs; the trainer thread's CPU (from
//! `/proc/self/task/<tid>/schedstat`) as a share of one core; its rounds; and the threads the process
//! gained while the trainer ran (candle must add none: `RAYON_NUM_THREADS=1`).
//!
//! `cargo bench --bench trainer` (3 runs × 5 configurations × 4 s); `PAGEGEN_BENCH_SMOKE=1`: 1 run of
//! 0.5 s each; `PAGEGEN_TRAINER_BENCH_SECS=S` sets the window to S seconds (e.g. 10, to see whole
//! rounds).

#[path = "support/arrivals.rs"]
mod arrivals;

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use pagegen::core::{ClassId, ClassSpec, ProfileRecord, Shares, Usage, VirtualClock};
use pagegen::model::features::extract;
use pagegen::model::rng::SplitMix;
use pagegen::model::{ModelConfig, ModelRuntime, StateDir, TrainerConfig};
use pagegen_executor::Builder;

const LIGHT_SERVICE: Duration = Duration::from_micros(50);
const LIGHT_RATE: f64 = 1_000.0;
const HEAVY_TASKS: usize = 4;
/// Iterations of the heavy unit's arithmetic (~1 ms of one core on the development machine).
const HEAVY_UNIT: u64 = 400_000;
const STORE_RECORDS: usize = 20_000;

fn spin(d: Duration) {
    let t = Instant::now();
    while t.elapsed() < d {
        std::hint::spin_loop();
    }
}

/// A fixed amount of CPU work (an LCG chain the optimiser cannot skip).
fn heavy_unit(seed: u64) -> u64 {
    let mut x = seed | 1;
    for _ in 0..HEAVY_UNIT {
        x = x.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1);
        x ^= x >> 29;
    }
    std::hint::black_box(x)
}

/// Records like the evaluation's synthetic routes (`model/examples/evaluate.rs`: `/search`,
/// `/report/{year}`, `/items`, `/`) plus 40 feature-less classes with a log-normal spread (σ 0.8,
/// medians from 100 µs to ~40 ms), interleaved in time.
fn records(n: usize) -> Vec<ProfileRecord> {
    let mut rng = SplitMix::new(7);
    let words = ["alpha", "beta", "gamma", "delta", "rust", "page"];
    (0..n)
        .map(|i| {
            let kind = rng.below(8);
            let (class, path, query, cpu, mem) = match kind {
                0 => {
                    let l = 1 + rng.below(40);
                    let q: Vec<&str> = (0..l).map(|_| words[rng.below(words.len())]).collect();
                    let l = l as f64;
                    (
                        1,
                        "/search".to_string(),
                        Some(format!("q={}", q.join("+"))),
                        (300e3 + 150e3 * l) * (0.15 * rng.normal()).exp(),
                        (65_536.0 + 8192.0 * l) * (0.1 * rng.normal()).exp(),
                    )
                }
                1 => {
                    let y = rng.below(26) as f64;
                    (
                        2,
                        format!("/report/{}", 2000 + y as u64),
                        None,
                        2e6 * (y + 2.0) * (0.2 * rng.normal()).exp(),
                        (2_097_152.0 + 1_048_576.0 * y) * (0.1 * rng.normal()).exp(),
                    )
                }
                2 => {
                    let size = [10u64, 20, 50, 100, 200][rng.below(5)];
                    (
                        3,
                        "/items".to_string(),
                        Some(format!("page={}&size={size}", 1 + rng.below(20))),
                        (50e3 + 8e3 * size as f64) * (0.2 * rng.normal()).exp(),
                        (32_768.0 + 4096.0 * size as f64) * (0.05 * rng.normal()).exp(),
                    )
                }
                3 => (
                    4,
                    "/".to_string(),
                    None,
                    200e3 * (0.2 * rng.normal()).exp(),
                    16_384.0 * (0.1 * rng.normal()).exp(),
                ),
                _ => {
                    let f = rng.below(40) as u32;
                    let med = 100e3 * 1.16f64.powi(f as i32);
                    (
                        10 + f,
                        format!("/fn/{f}"),
                        None,
                        med * (0.8 * rng.normal()).exp(),
                        (1_048_576.0 + 65_536.0 * f as f64) * (0.3 * rng.normal()).exp(),
                    )
                }
            };
            let class = ClassId::from_raw(class);
            let mut u = Usage::default();
            u.cpu.cpu_ns = cpu as u64;
            u.cpu.wall_ns = (cpu * 1.3) as u64;
            u.mem.peak_net_bytes = mem as i64;
            let mut r = ProfileRecord::new(i as u64, class, u);
            r.started_unix_ms = 1_700_000_000_000 + i as u64 * 5;
            r.features = extract(class, &path, query.as_deref(), 0, 5);
            r
        })
        .collect()
}

/// Names of this process's threads.
fn threads() -> Vec<(u64, String)> {
    let mut out = Vec::new();
    for e in std::fs::read_dir("/proc/self/task").unwrap().flatten() {
        let tid: u64 = e.file_name().to_string_lossy().parse().unwrap();
        let comm = std::fs::read_to_string(e.path().join("comm")).unwrap_or_default();
        out.push((tid, comm.trim().to_string()));
    }
    out
}

/// CPU time of thread `tid` in ns (first field of its schedstat).
fn thread_cpu_ns(tid: u64) -> Option<u64> {
    let s = std::fs::read_to_string(format!("/proc/self/task/{tid}/schedstat")).ok()?;
    s.split_whitespace().next()?.parse().ok()
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Trainer {
    Off,
    Nice0,
    Nice19,
    Idle,
    Facade,
}

impl Trainer {
    fn name(self) -> &'static str {
        match self {
            Trainer::Off => "no trainer",
            Trainer::Nice0 => "normal priority, unbounded",
            Trainer::Nice19 => "nice +19, unbounded",
            Trainer::Idle => "SCHED_IDLE, unbounded",
            Trainer::Facade => "facade: SCHED_IDLE + 2 %",
        }
    }
}

struct Run {
    p50_us: f64,
    p99_us: f64,
    heavy_units_per_s: f64,
    trainer_core_share: f64,
    rounds: u64,
    new_threads: BTreeSet<String>,
    dropped: u64,
}

fn run(mode: Trainer, duration: Duration, store: &[ProfileRecord]) -> Run {
    let tmp = tempfile::tempdir().unwrap();
    let rt = Builder::new()
        .workers(2)
        .class(ClassSpec::new("light").with_shares(Shares::new(100).unwrap()))
        .class(ClassSpec::new("heavy").with_shares(Shares::new(100).unwrap()))
        .build()
        .unwrap();
    // Threads the trainer adds are those not here yet (the runtime's own are).
    let before: BTreeSet<u64> = threads().into_iter().map(|(t, _)| t).collect();
    let mut trainer_tid = None;
    let unbounded = ModelConfig {
        trainer: TrainerConfig {
            cpu_share: 1.0,
            ..TrainerConfig::default()
        },
        ..ModelConfig::default()
    };
    let mut m = ModelRuntime::open(
        StateDir::open(tmp.path()).unwrap(),
        Arc::new(VirtualClock::new()),
        if mode == Trainer::Facade {
            ModelConfig::default()
        } else {
            unbounded
        },
    )
    .unwrap();
    for r in store {
        m.record(r);
    }
    m.flush().unwrap();
    let tick = Duration::from_millis(1);
    match mode {
        Trainer::Off => {}
        Trainer::Nice0 => m.start_trainer(tick).unwrap(),
        Trainer::Nice19 => m
            .start_trainer_with(
                tick,
                Box::new(|| {
                    pagegen_executor::lower_current_thread_priority(19).unwrap();
                }),
            )
            .unwrap(),
        Trainer::Idle => m
            .start_trainer_with(tick, pagegen::trainer::isolation_hook())
            .unwrap(),
        Trainer::Facade => pagegen::trainer::start(&mut m, tick).unwrap(),
    }
    if mode != Trainer::Off {
        // The thread names itself once it runs: look until it has (bounded).
        let deadline = Instant::now() + Duration::from_secs(10);
        while trainer_tid.is_none() && Instant::now() < deadline {
            trainer_tid = threads()
                .into_iter()
                .find(|(_, n)| n == "pagegen-trainer")
                .map(|(t, _)| t);
            std::thread::yield_now();
        }
        assert!(trainer_tid.is_some(), "no pagegen-trainer thread found");
    }
    let model = Arc::new(m);
    let reg = rt.handle().class_registry().clone();
    let (light_class, heavy_class) = (reg.id_of("light").unwrap(), reg.id_of("heavy").unwrap());
    let stop = Arc::new(AtomicBool::new(false));
    let units = Arc::new(AtomicU64::new(0));
    for i in 0..HEAVY_TASKS {
        let (stop, units) = (stop.clone(), units.clone());
        drop(rt.spawn_in(heavy_class, async move {
            let mut s = i as u64;
            while !stop.load(Ordering::Relaxed) {
                s = heavy_unit(s);
                units.fetch_add(1, Ordering::Relaxed);
                pagegen::task::yield_now().await;
            }
        }));
    }
    // Let the heavy class occupy the workers first.
    spin(Duration::from_millis(20));
    let light = Arc::new(Mutex::new(
        Histogram::<u64>::new_with_bounds(1, 60_000_000_000, 3).unwrap(),
    ));
    let cpu0 = trainer_tid.and_then(thread_cpu_ns);
    let rounds0 = model.trainer().map_or(0, |t| t.rounds());
    let start = Instant::now();
    let units0 = units.load(Ordering::Relaxed);
    let mut arrivals = arrivals::Poisson::new(start, LIGHT_RATE);
    let mut seq = 0u64;
    while start.elapsed() < duration {
        let arrived = arrivals.wait_next();
        let light = light.clone();
        let model = model.clone();
        seq += 1;
        let n = seq;
        drop(rt.spawn_in(light_class, async move {
            let delay = arrived.elapsed().as_nanos() as u64;
            spin(LIGHT_SERVICE);
            light.lock().unwrap().saturating_record(delay.max(1));
            // The completion path: the model observes and stores the finished request.
            let mut u = Usage::default();
            u.cpu.cpu_ns = LIGHT_SERVICE.as_nanos() as u64;
            u.cpu.wall_ns = delay + u.cpu.cpu_ns;
            let mut r = ProfileRecord::new(n, ClassId::from_raw(60), u);
            r.started_unix_ms = 1_800_000_000_000 + n;
            model.record(&r);
        }));
    }
    let elapsed = start.elapsed().as_secs_f64();
    let heavy = (units.load(Ordering::Relaxed) - units0) as f64 / elapsed;
    let cpu1 = trainer_tid.and_then(thread_cpu_ns);
    let rounds = model.trainer().map_or(0, |t| t.rounds()) - rounds0;
    let new_threads = threads()
        .into_iter()
        .filter(|(t, _)| !before.contains(t))
        .map(|(_, n)| n)
        .collect();
    stop.store(true, Ordering::Relaxed);
    drop(rt);
    let dropped = model.dropped_records();
    drop(model);
    let light = light.lock().unwrap().clone();
    let q = |p: f64| light.value_at_quantile(p) as f64 / 1_000.0;
    Run {
        p50_us: q(0.5),
        p99_us: q(0.99),
        heavy_units_per_s: heavy,
        trainer_core_share: match (cpu0, cpu1) {
            (Some(a), Some(b)) => (b - a) as f64 / 1e9 / elapsed,
            _ => 0.0,
        },
        rounds,
        new_threads,
        dropped,
    }
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    // Before any thread starts, as `#[pagegen::main]` does.
    if std::env::var_os("RAYON_NUM_THREADS").is_none() {
        std::env::set_var("RAYON_NUM_THREADS", "1");
    }
    let smoke = std::env::var_os("PAGEGEN_BENCH_SMOKE").is_some_and(|v| v == "1");
    let (mut duration, runs) = if smoke {
        (Duration::from_millis(500), 1)
    } else {
        (Duration::from_secs(4), 3)
    };
    // Longer windows show whole rounds (one is ~2 s of CPU on a quiet core).
    if let Some(secs) = std::env::var("PAGEGEN_TRAINER_BENCH_SECS")
        .ok()
        .and_then(|v| v.parse::<f64>().ok())
        .filter(|s| s.is_finite() && *s > 0.0)
    {
        duration = Duration::from_secs_f64(secs);
    }
    let store = records(STORE_RECORDS);
    let modes = [
        Trainer::Off,
        Trainer::Nice0,
        Trainer::Nice19,
        Trainer::Idle,
        Trainer::Facade,
    ];
    let mut results: Vec<Vec<Run>> = modes.iter().map(|_| Vec::new()).collect();
    for i in 0..runs {
        for (m, mode) in modes.iter().enumerate() {
            let r = run(*mode, duration, &store);
            println!(
                "run {i} {:<28} p50 {:>8.1} µs  p99 {:>9.1} µs  heavy {:>7.1} units/s  trainer {:>5.1} % of a core, {} ticks, {} records dropped, new threads {:?}",
                mode.name(),
                r.p50_us,
                r.p99_us,
                r.heavy_units_per_s,
                r.trainer_core_share * 100.0,
                r.rounds,
                r.dropped,
                r.new_threads
            );
            results[m].push(r);
        }
    }
    let med = |m: usize, f: fn(&Run) -> f64| median(results[m].iter().map(f).collect());
    let (b50, b99, bh) = (
        med(0, |r| r.p50_us),
        med(0, |r| r.p99_us),
        med(0, |r| r.heavy_units_per_s),
    );
    println!(
        "\nmedians over {runs} run(s) of {:.1} s; ratios against 'no trainer' from the same runs",
        duration.as_secs_f64()
    );
    println!(
        "{:<28} {:>9} {:>9} {:>9} {:>9} {:>10} {:>8} {:>12}",
        "configuration", "p50 µs", "p99 µs", "p50 ×", "p99 ×", "heavy ×", "trainer", "ticks/run"
    );
    for (m, mode) in modes.iter().enumerate() {
        let (p50, p99, h) = (
            med(m, |r| r.p50_us),
            med(m, |r| r.p99_us),
            med(m, |r| r.heavy_units_per_s),
        );
        println!(
            "{:<28} {:>9.1} {:>9.1} {:>9.2} {:>9.2} {:>10.3} {:>7.1}% {:>12.1}",
            mode.name(),
            p50,
            p99,
            p50 / b50,
            p99 / b99,
            h / bh,
            med(m, |r| r.trainer_core_share) * 100.0,
            med(m, |r| r.rounds as f64)
        );
    }
}
