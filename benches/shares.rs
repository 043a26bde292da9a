//! CPU split between two CPU-bound classes that saturate 2 workers, at shares 1:1 and 1:3, beside
//! tokio (which has no classes: its split is whatever FIFO gives). Each class runs 4 tasks whose polls
//! spin 500 µs and yield; the split is reported two ways: polls counted by the tasks themselves (each
//! poll is the same work), and the CPU the runtime charged each class (`Handle::class_stats`).
//!
//! A split, not an iteration time, so this is a plain `harness = false` program rather than a
//! criterion group. `cargo bench --bench shares` (3 s per configuration; `PAGEGEN_BENCH_SMOKE=1`:
//! 0.3 s).

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use pagegen::core::{ClassId, ClassSpec, Shares};
use pagegen_executor::{Builder, Handle};

const POLL: Duration = Duration::from_micros(500);
/// Tasks per class: twice the workers, so each class alone saturates the runtime.
const TASKS: usize = 4;

fn spin(d: Duration) {
    let t = Instant::now();
    while t.elapsed() < d {
        std::hint::spin_loop();
    }
}

struct Split {
    name: String,
    polls: [u64; 2],
    charged_ns: Option<[u64; 2]>,
    want: f64,
}

async fn worker_loop(stop: Arc<AtomicBool>, polls: Arc<AtomicU64>, tokio_yield: bool) {
    while !stop.load(Ordering::Relaxed) {
        spin(POLL);
        polls.fetch_add(1, Ordering::Relaxed);
        if tokio_yield {
            tokio::task::yield_now().await;
        } else {
            pagegen::task::yield_now().await;
        }
    }
}

fn measure(duration: Duration, spawn: &dyn Fn(usize, Arc<AtomicBool>, Arc<AtomicU64>)) -> [u64; 2] {
    let stop = Arc::new(AtomicBool::new(false));
    let counts = [Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0))];
    for _ in 0..TASKS {
        for (c, n) in counts.iter().enumerate() {
            spawn(c, stop.clone(), n.clone());
        }
    }
    // Warm-up: both classes queued and running before counting.
    std::thread::sleep(Duration::from_millis(100));
    let at = [
        counts[0].load(Ordering::Relaxed),
        counts[1].load(Ordering::Relaxed),
    ];
    std::thread::sleep(duration);
    let got = [
        counts[0].load(Ordering::Relaxed) - at[0],
        counts[1].load(Ordering::Relaxed) - at[1],
    ];
    stop.store(true, Ordering::Relaxed);
    std::thread::sleep(POLL * 4);
    got
}

fn pagegen_split(duration: Duration, a: u16, b: u16) -> Split {
    let rt = Builder::new()
        .workers(2)
        .class(ClassSpec::new("a").with_shares(Shares::new(a).unwrap()))
        .class(ClassSpec::new("b").with_shares(Shares::new(b).unwrap()))
        .build()
        .unwrap();
    let h: Handle = rt.handle();
    let ids: [ClassId; 2] = [
        h.class_registry().id_of("a").unwrap(),
        h.class_registry().id_of("b").unwrap(),
    ];
    let cpu0 = ids.map(|c| h.class_stats(c).unwrap().cpu_ns);
    let polls = measure(duration, &|c, stop, n| {
        drop(h.spawn_in(ids[c], worker_loop(stop, n, false)));
    });
    let cpu1 = ids.map(|c| h.class_stats(c).unwrap().cpu_ns);
    Split {
        name: format!("pagegen, shares {a}:{b}"),
        polls,
        charged_ns: Some([cpu1[0] - cpu0[0], cpu1[1] - cpu0[1]]),
        want: b as f64 / (a + b) as f64,
    }
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let smoke = std::env::var_os("PAGEGEN_BENCH_SMOKE").is_some_and(|v| v == "1");
    let duration = if smoke {
        Duration::from_millis(300)
    } else {
        Duration::from_secs(3)
    };
    let mut rows = Vec::new();
    {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .build()
            .unwrap();
        let polls = measure(duration, &|_, stop, n| {
            drop(rt.spawn(worker_loop(stop, n, true)));
        });
        rows.push(Split {
            name: "tokio (no classes)".into(),
            polls,
            charged_ns: None,
            want: 0.5,
        });
    }
    rows.push(pagegen_split(duration, 100, 100));
    rows.push(pagegen_split(duration, 100, 300));
    println!(
        "{:<26} {:>8} {:>8} {:>12} {:>14} {:>8}",
        "configuration", "polls a", "polls b", "b by polls", "b by charged", "b want"
    );
    for r in &rows {
        let by_polls = r.polls[1] as f64 / (r.polls[0] + r.polls[1]).max(1) as f64;
        let by_cpu = r
            .charged_ns
            .map(|c| format!("{:.3}", c[1] as f64 / (c[0] + c[1]).max(1) as f64))
            .unwrap_or_else(|| "-".into());
        println!(
            "{:<26} {:>8} {:>8} {:>12.3} {:>14} {:>8.3}",
            r.name, r.polls[0], r.polls[1], by_polls, by_cpu, r.want
        );
    }
}
