//! Cold-cache I/O isolation on the pagegen executor: a heavy class bursting 1 MiB reads beside a
//! light class doing 4 KiB reads, both cold, on a device with a queue.
//!
//! Run it through `benches/io_cold.sh` (it builds this bench, puts it in a blk-throttle cgroup that
//! turns the VM's host-cached disk into a device of a fixed bandwidth with a FIFO queue, and cleans
//! up); `cargo bench --bench io_cold` alone runs it unthrottled.
//!
//! Load: `HEAVY_CONC` tasks of the heavy class each read 1 MiB after 1 MiB of a 256 MiB file, as
//! fast as they complete; light requests arrive open-loop at `LIGHT_RATE` per second, each one
//! 4 KiB read of a random page of a 64 MiB file. Every read is cold: just before it, the page
//! cache is dropped (`posix_fadvise(DONTNEED)`) around the heavy chunk and over the whole light
//! file (the cache may hold large folios, which a 4 KiB range cannot evict), and read-ahead is off
//! on every descriptor (`posix_fadvise(RANDOM)`), so each read costs about its own bytes on the
//! device. A light
//! request's latency runs from its scheduled arrival to its completion (no coordinated omission).
//!
//! Configurations, alternated in every round:
//! 1. tokio 2-worker runtime, `pread` in `spawn_blocking` (what `tokio::fs` does);
//! 2. pagegen executor, 2 workers, pagegen-io driver (as `#[pagegen::main]` builds it), no limits;
//! 3. pagegen, heavy class depth 1; 4. depth 2;
//! 5. pagegen, heavy class bandwidth capped at half the device's;
//! 6. pagegen, no class limit but each heavy request granted 1/32 of that cap
//!    (`Grant::io_bytes_per_sec`, the per-request bandwidth);
//! 7. pagegen, shares light 100 : heavy 1 with the device depth at 2 (the fair queue decides).
//!
//! Environment: `PAGEGEN_COLD_DEVICE_BPS` the device's bandwidth (set by the script; the cap of
//! configuration 5 is half of it; unset: unthrottled, cap 200 MB/s), `PAGEGEN_COLD_SECS` seconds
//! per configuration (default 6), `PAGEGEN_COLD_ROUNDS` (default 3), `PAGEGEN_COLD_DIR` where the
//! files go (default the target directory: it must be on the throttled disk, not tmpfs),
//! `PAGEGEN_BENCH_SMOKE=1` one short round. Prints per round and the median over rounds, and
//! writes the text to `<target>/criterion/io-cold.txt`.

use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use pagegen::core::{ClassId, ClassSpec, Grant, RequestCtx, RequestId, Shares};
use pagegen_executor::{Builder, Runtime};
use pagegen_io::fs::File;
use pagegen_io::{BackendChoice, Io};

const HEAVY_CONC: usize = 32;
const HEAVY_READ: u64 = 1 << 20;
const LIGHT_READ: u64 = 4 << 10;
const LIGHT_RATE: f64 = 100.0;
const LIGHT_FILE: u64 = 64 << 20;

fn smoke() -> bool {
    std::env::var("PAGEGEN_BENCH_SMOKE").is_ok_and(|v| v == "1")
}

fn env_u64(name: &str) -> Option<u64> {
    std::env::var(name).ok().and_then(|v| v.parse().ok())
}

/// Shared by both runtimes: which chunk and page come next, and what was measured.
struct Load {
    heavy_path: PathBuf,
    light_path: PathBuf,
    heavy_chunks: u64,
    next_chunk: AtomicU64,
    stop: AtomicBool,
    heavy_bytes: AtomicU64,
    light: Mutex<Vec<u64>>,
}

impl Load {
    fn chunk(&self) -> u64 {
        (self.next_chunk.fetch_add(1, Ordering::Relaxed) % self.heavy_chunks) * HEAVY_READ
    }
    fn page(k: u64) -> u64 {
        // A fixed scatter over the light file: neighbours in time are far apart on disk.
        (k.wrapping_mul(7919) % (LIGHT_FILE / LIGHT_READ)) * LIGHT_READ
    }
    fn heavy_done(&self, n: usize) {
        if !self.stop.load(Ordering::Relaxed) {
            self.heavy_bytes.fetch_add(n as u64, Ordering::Relaxed);
        }
    }
    fn light_done(&self, arrival: Instant) {
        let ns = arrival.elapsed().as_nanos() as u64;
        self.light
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(ns);
    }
}

/// Drops the cache around a heavy chunk: the enclosing 2 MiB, because the page cache may hold the
/// file in folios larger than a chunk, and `DONTNEED` leaves a folio that the range only partly
/// covers.
fn drop_heavy(f: &std::fs::File, off: u64) -> std::io::Result<()> {
    pagegen_io::drop_cache_range(f, off & !((2 << 20) - 1), 2 << 20)
}

fn std_file(path: &Path) -> std::fs::File {
    let f = std::fs::File::open(path).expect("open bench file");
    pagegen_io::no_readahead(&f).expect("fadvise RANDOM");
    f
}

/// Open-loop light arrivals for `secs` on this thread; `spawn(k, arrival)` starts request `k`.
/// The generator's sleeps pace arrivals (load generation), they synchronise nothing.
fn arrivals(secs: f64, mut spawn: impl FnMut(u64, Instant)) {
    let start = Instant::now();
    let gap = Duration::from_secs_f64(1.0 / LIGHT_RATE);
    let n = (secs * LIGHT_RATE) as u64;
    for k in 0..n {
        let at = start + gap * k as u32;
        if let Some(d) = at.checked_duration_since(Instant::now()) {
            std::thread::sleep(d);
        }
        spawn(k, at);
    }
}

fn run_tokio(load: &Arc<Load>, secs: f64) -> f64 {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .build()
        .expect("tokio runtime");
    let heavy = Arc::new(std_file(&load.heavy_path));
    let light = Arc::new(std_file(&load.light_path));
    let start = Instant::now();
    let heavies: Vec<_> = (0..HEAVY_CONC)
        .map(|_| {
            let (load, f) = (Arc::clone(load), Arc::clone(&heavy));
            rt.spawn(async move {
                while !load.stop.load(Ordering::Relaxed) {
                    let off = load.chunk();
                    let f = Arc::clone(&f);
                    let n = tokio::task::spawn_blocking(move || {
                        drop_heavy(&f, off)?;
                        let mut buf = vec![0u8; HEAVY_READ as usize];
                        f.read_at(&mut buf, off)
                    })
                    .await
                    .expect("heavy task")
                    .expect("heavy read");
                    load.heavy_done(n);
                }
            })
        })
        .collect();
    let mut lights = Vec::new();
    arrivals(secs, |k, at| {
        let (load, f) = (Arc::clone(load), Arc::clone(&light));
        lights.push(rt.spawn(async move {
            let off = Load::page(k);
            let f2 = Arc::clone(&f);
            tokio::task::spawn_blocking(move || {
                pagegen_io::drop_cache(&f2)?;
                let mut buf = vec![0u8; LIGHT_READ as usize];
                f2.read_at(&mut buf, off)
            })
            .await
            .expect("light task")
            .expect("light read");
            load.light_done(at);
        }));
    });
    let window = start.elapsed().as_secs_f64();
    load.stop.store(true, Ordering::Relaxed);
    rt.block_on(async {
        for h in heavies.into_iter().chain(lights) {
            h.await.expect("task");
        }
    });
    window
}

fn pagegen_runtime(io: &Io) -> (Runtime, ClassId, ClassId) {
    let rt = Builder::new()
        .workers(2)
        .driver(Arc::new(io.clone()))
        .build()
        .expect("pagegen runtime");
    let h = rt.handle();
    h.class_registry()
        .subscribe(Arc::clone(io.classes()) as Arc<dyn pagegen::core::ClassObserver>);
    let heavy = h
        .register_class(ClassSpec::new("cold-heavy"))
        .expect("register");
    let light = h
        .register_class(ClassSpec::new("cold-light"))
        .expect("register");
    (rt, heavy, light)
}

fn run_pagegen(
    rt: &Runtime,
    (heavy_class, light_class): (ClassId, ClassId),
    load: &Arc<Load>,
    secs: f64,
    heavy_request_bps: u64,
) -> f64 {
    let heavy = Arc::new(File::from_std(std_file(&load.heavy_path)));
    let light = Arc::new(File::from_std(std_file(&load.light_path)));
    let ids = AtomicU64::new(1 << 32);
    let ctx = |class, bps| {
        let mut grant = Grant::unlimited(class);
        grant.io_bytes_per_sec = bps;
        RequestCtx::new(RequestId(ids.fetch_add(1, Ordering::Relaxed)), grant, 0)
    };
    let handle = rt.handle();
    let start = Instant::now();
    let heavies: Vec<_> = (0..HEAVY_CONC)
        .map(|_| {
            let (load, f) = (Arc::clone(load), Arc::clone(&heavy));
            handle.spawn_with_ctx(ctx(heavy_class, heavy_request_bps), async move {
                while !load.stop.load(Ordering::Relaxed) {
                    let off = load.chunk();
                    drop_heavy(f.as_std(), off).expect("fadvise");
                    let (r, _) = f
                        .read_at(Vec::with_capacity(HEAVY_READ as usize), off)
                        .await;
                    load.heavy_done(r.expect("heavy read"));
                }
            })
        })
        .collect();
    let mut lights = Vec::new();
    arrivals(secs, |k, at| {
        let (load, f) = (Arc::clone(load), Arc::clone(&light));
        lights.push(
            handle.spawn_with_ctx(ctx(light_class, u64::MAX), async move {
                let off = Load::page(k);
                pagegen_io::drop_cache(f.as_std()).expect("fadvise");
                let (r, _) = f
                    .read_at(Vec::with_capacity(LIGHT_READ as usize), off)
                    .await;
                r.expect("light read");
                load.light_done(at);
            }),
        );
    });
    let window = start.elapsed().as_secs_f64();
    load.stop.store(true, Ordering::Relaxed);
    rt.block_on(async {
        for h in heavies.into_iter().chain(lights) {
            h.await.expect("task");
        }
    });
    window
}

#[derive(Clone, Copy)]
enum Config {
    Tokio,
    NoLimit,
    Depth(u32),
    Bandwidth,
    RequestBandwidth,
    Shares,
}

impl Config {
    fn name(self, cap: u64) -> String {
        match self {
            Config::Tokio => "tokio spawn_blocking pread".into(),
            Config::NoLimit => "pagegen, no class limits".into(),
            Config::Depth(d) => format!("pagegen, heavy depth {d}"),
            Config::Bandwidth => format!("pagegen, heavy cap {:.0} MB/s", cap as f64 / 1e6),
            Config::RequestBandwidth => format!(
                "pagegen, heavy requests {:.2} MB/s each",
                cap as f64 / HEAVY_CONC as f64 / 1e6
            ),
            Config::Shares => "pagegen, shares 100:1, device depth 2".into(),
        }
    }
}

fn percentile(sorted: &[u64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize] as f64 / 1e6
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn write_file(path: &Path, bytes: u64) {
    use std::io::Write;
    let mib: Vec<u8> = (0..1 << 20).map(|i| (i % 253) as u8).collect();
    let mut f = std::fs::File::create(path).expect("create bench file");
    for _ in 0..bytes >> 20 {
        f.write_all(&mib).expect("write bench file");
    }
    f.sync_all().expect("sync bench file");
}

fn main() {
    // Criterion-style arguments (`--bench`) are accepted and ignored: this is one program.
    let device_bps = env_u64("PAGEGEN_COLD_DEVICE_BPS");
    let cap = device_bps.map_or(200_000_000, |b| b / 2);
    let secs = if smoke() {
        1.0
    } else {
        env_u64("PAGEGEN_COLD_SECS").unwrap_or(6) as f64
    };
    let rounds = if smoke() {
        1
    } else {
        env_u64("PAGEGEN_COLD_ROUNDS").unwrap_or(3) as usize
    };
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("target"));
    let dir_base = std::env::var_os("PAGEGEN_COLD_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| target.clone());
    std::fs::create_dir_all(&dir_base).expect("bench directory");
    let dir = tempfile::tempdir_in(&dir_base).expect("bench directory");
    let heavy_path = dir.path().join("heavy");
    let light_path = dir.path().join("light");
    write_file(&heavy_path, if smoke() { 32 << 20 } else { 256 << 20 });
    write_file(&light_path, LIGHT_FILE);

    let io = Io::new(BackendChoice::Auto).expect("pagegen-io");
    // Files opened on this thread belong to the runtime current here: make it the bench's.
    let _io = io.enter();
    let (rt, heavy, light) = pagegen_runtime(&io);
    let classes = io.classes();
    let configs = [
        Config::Tokio,
        Config::NoLimit,
        Config::Depth(1),
        Config::Depth(2),
        Config::Bandwidth,
        Config::RequestBandwidth,
        Config::Shares,
    ];
    let mut lines = vec![format!(
        "io-cold: backend {}, device {}, heavy {HEAVY_CONC} x 1 MiB reads, light 4 KiB reads open-loop at {LIGHT_RATE}/s, {secs} s per configuration, {rounds} rounds; every read cold (DONTNEED + RANDOM); latency ms",
        io.backend(),
        match device_bps {
            Some(b) => format!("blk-throttle {:.0} MB/s", b as f64 / 1e6),
            None => "unthrottled (host-cached disk: not device-bound)".into(),
        }
    )];
    println!("{}", lines[0]);
    let mut table: Vec<[Vec<f64>; 4]> = configs.iter().map(|_| Default::default()).collect();
    for round in 0..rounds {
        for (i, &config) in configs.iter().enumerate() {
            let load = Arc::new(Load {
                heavy_path: heavy_path.clone(),
                light_path: light_path.clone(),
                heavy_chunks: std::fs::metadata(&heavy_path).expect("stat").len() / HEAVY_READ,
                next_chunk: AtomicU64::new(0),
                stop: AtomicBool::new(false),
                heavy_bytes: AtomicU64::new(0),
                light: Mutex::new(Vec::new()),
            });
            match config {
                Config::Tokio | Config::NoLimit | Config::RequestBandwidth => {}
                Config::Depth(d) => classes.set_depth(heavy, d).expect("depth"),
                Config::Bandwidth => classes.set_bandwidth(heavy, Some(cap)).expect("cap"),
                Config::Shares => {
                    rt.handle().set_shares(light, Shares::saturating(100));
                    rt.handle().set_shares(heavy, Shares::saturating(1));
                    classes.set_device_depth(2).expect("device depth");
                }
            }
            let window = match config {
                Config::Tokio => run_tokio(&load, secs),
                Config::RequestBandwidth => {
                    run_pagegen(&rt, (heavy, light), &load, secs, cap / HEAVY_CONC as u64)
                }
                _ => run_pagegen(&rt, (heavy, light), &load, secs, u64::MAX),
            };
            classes.set_depth(heavy, u32::MAX).expect("reset");
            classes.set_bandwidth(heavy, None).expect("reset");
            classes
                .set_device_depth(pagegen_io::DEFAULT_DEVICE_DEPTH)
                .expect("reset");
            rt.handle().set_shares(light, Shares::saturating(1));
            rt.handle().set_shares(heavy, Shares::saturating(1));
            let mut v = std::mem::take(&mut *load.light.lock().unwrap_or_else(|e| e.into_inner()));
            v.sort_unstable();
            let (p50, p99, p999) = (
                percentile(&v, 0.5),
                percentile(&v, 0.99),
                percentile(&v, 0.999),
            );
            let mbps = load.heavy_bytes.load(Ordering::Relaxed) as f64 / window / 1e6;
            let line = format!(
                "  round {round} {:<38} light p50 {p50:>8.2}  p99 {p99:>8.2}  p999 {p999:>8.2}  ({} samples)  heavy {mbps:>7.1} MB/s",
                config.name(cap),
                v.len()
            );
            println!("{line}");
            lines.push(line);
            for (slot, x) in table[i].iter_mut().zip([p50, p99, p999, mbps]) {
                slot.push(x);
            }
        }
    }
    lines.push(format!("median over {rounds} rounds:"));
    let tokio_p99 = median(table[0][1].clone());
    for (i, &config) in configs.iter().enumerate() {
        let [p50, p99, p999, mbps] = table[i].clone();
        let p99 = median(p99);
        let line = format!(
            "  {:<38} light p50 {:>8.2}  p99 {p99:>8.2}  p999 {:>8.2}  heavy {:>7.1} MB/s  p99 tokio/this {:>6.1}x",
            config.name(cap),
            median(p50),
            median(p999),
            median(mbps),
            tokio_p99 / p99
        );
        lines.push(line);
    }
    let text = lines.join("\n");
    println!(
        "{}",
        text.split("median over")
            .nth(1)
            .map_or(String::new(), |t| format!("median over{t}"))
    );
    let _ = std::fs::create_dir_all(target.join("criterion"));
    let _ = std::fs::write(target.join("criterion/io-cold.txt"), text + "\n");
    rt.shutdown_timeout(Duration::from_secs(5));
}
