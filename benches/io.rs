//! File-read benchmarks: pagegen-io against tokio, std-in-spawn_blocking and a raw io_uring loop,
//! in one run, plus the cold-cache class-isolation measurement.
//!
//! Throughput matrix (`io/<size>/c<conc>`): sizes 4 KiB / 16 KiB / 1 MiB, total concurrency 1 / 8 /
//! 32 over 2 threads (concurrency 1 uses one). Warm page cache (files are read once before).
//! - `pagegen_fs_read`: `pagegen_io::fs::read(path)` (open + statx, read, close), and
//!   `pagegen_read_at`: `File::read_at` on an open file. pagegen's executor is not part of this
//!   crate, so each of the 2 threads runs pagegen-io's own `Driver` loop with a minimal slot
//!   scheduler (poll woken futures, `poll_nonblocking`, `park` when idle) — the executor contract.
//! - `tokio_fs_read`: `tokio::fs::read(path)`; `std_read_spawn_blocking`: `std::fs::read` in
//!   `tokio::task::spawn_blocking`; both on a 2-worker multi-thread runtime.
//! - `raw_uring_read_files` / `raw_uring_pread`: the same operation sequences on bare rings (one
//!   per thread, no futures, no permits, no profile): the ceiling.
//!
//! Isolation (`io-isolation`, printed and written to `target/criterion/io-isolation.txt`): cold
//! cache (`posix_fadvise(DONTNEED)`), a heavy class with 32 concurrent 1 MiB reads beside a light
//! class doing one 4 KiB read at a time; the light class's p50/p99 with no class limit and with the
//! heavy class's depth set to 2.
//!
//! `PAGEGEN_BENCH_SMOKE=1` runs a tiny configuration.

use std::future::Future;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::sync::Arc;
use std::task::{Context, Wake, Waker};
use std::thread::ThreadId;
use std::time::{Duration, Instant};

use criterion::{Criterion, Throughput};
use pagegen::core::{ClassId, DriverFactory, Grant, RequestCtx, RequestId, Unpark, WorkerInfo};
use pagegen_io::fs::File;
use pagegen_io::{BackendChoice, Io};

fn smoke() -> bool {
    std::env::var("PAGEGEN_BENCH_SMOKE").is_ok_and(|v| v == "1")
}

// ---------------------------------------------------------------------------------------------
// A minimal driver loop: `conc` slots of futures on one thread.

struct SlotWake {
    woken: AtomicBool,
    owner: ThreadId,
    unpark: Arc<dyn Unpark>,
}

impl Wake for SlotWake {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }
    fn wake_by_ref(self: &Arc<Self>) {
        if !self.woken.swap(true, Ordering::AcqRel) && std::thread::current().id() != self.owner {
            self.unpark.unpark();
        }
    }
}

type LocalFut = Pin<Box<dyn Future<Output = ()>>>;

/// Runs `n` futures made by `make(i)`, at most `conc` at once, on this thread's driver.
fn run_slots(
    driver: &mut Box<dyn pagegen::core::Driver>,
    conc: usize,
    n: usize,
    ctx: Option<&Arc<RequestCtx>>,
    stop: Option<&AtomicBool>,
    mut make: impl FnMut(usize) -> LocalFut,
) {
    let unpark = driver.unparker();
    let owner = std::thread::current().id();
    let mut slots: Vec<(Option<LocalFut>, Arc<SlotWake>, Waker)> = (0..conc.max(1))
        .map(|_| {
            let w = Arc::new(SlotWake {
                woken: AtomicBool::new(true),
                owner,
                unpark: Arc::clone(&unpark),
            });
            let waker = Waker::from(Arc::clone(&w));
            (None, w, waker)
        })
        .collect();
    let mut issued = 0;
    let mut done = 0;
    for s in &mut slots {
        if issued < n {
            s.0 = Some(make(issued));
            issued += 1;
        }
    }
    while done < n {
        let mut any = false;
        for s in &mut slots {
            if s.0.is_none() || !s.1.woken.swap(false, Ordering::AcqRel) {
                continue;
            }
            any = true;
            let mut cx = Context::from_waker(&s.2);
            let _g = ctx.map(RequestCtx::enter);
            if s.0
                .as_mut()
                .expect("checked")
                .as_mut()
                .poll(&mut cx)
                .is_ready()
            {
                done += 1;
                let more = stop.is_none_or(|s| !s.load(Ordering::Relaxed));
                if issued < n && more {
                    s.0 = Some(make(issued));
                    issued += 1;
                    s.1.woken.store(true, Ordering::Release);
                } else {
                    s.0 = None;
                    if !more {
                        return;
                    }
                }
            }
        }
        if driver.poll_nonblocking() == 0 && !any {
            driver.park(None);
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Fixture.

struct Sized_ {
    label: &'static str,
    size: usize,
    paths: Arc<Vec<PathBuf>>,
    big: PathBuf,
    count: usize,
}

fn fixture(dir: &std::path::Path) -> Vec<Sized_> {
    let sizes: &[(&str, usize, usize)] = if smoke() {
        &[("16KiB", 16 << 10, 8)]
    } else {
        &[
            ("4KiB", 4 << 10, 64),
            ("16KiB", 16 << 10, 64),
            ("1MiB", 1 << 20, 16),
        ]
    };
    sizes
        .iter()
        .map(|&(label, size, count)| {
            let data: Vec<u8> = (0..size).map(|i| (i % 251) as u8).collect();
            let paths: Vec<PathBuf> = (0..count)
                .map(|i| {
                    let p = dir.join(format!("{label}-{i}"));
                    std::fs::write(&p, &data).unwrap();
                    let _ = std::fs::read(&p).unwrap(); // Warm.
                    p
                })
                .collect();
            let big = dir.join(format!("{label}-big"));
            std::fs::write(&big, data.repeat(count)).unwrap();
            let _ = std::fs::read(&big).unwrap();
            Sized_ {
                label,
                size,
                paths: Arc::new(paths),
                big,
                count,
            }
        })
        .collect()
}

// ---------------------------------------------------------------------------------------------
// Two pagegen driver threads.

type Job = Box<dyn FnOnce(&mut Box<dyn pagegen::core::Driver>) + Send>;

struct Workers {
    txs: Vec<mpsc::Sender<Job>>,
    done: mpsc::Receiver<()>,
}

impl Workers {
    fn new(io: &Io) -> Workers {
        let (done_tx, done) = mpsc::channel();
        let txs = (0..2)
            .map(|index| {
                let (tx, rx) = mpsc::channel::<Job>();
                let io = io.clone();
                let done_tx = done_tx.clone();
                std::thread::spawn(move || {
                    let _e = io.enter();
                    let info = WorkerInfo {
                        index,
                        pool: None,
                        name: format!("bench-{index}"),
                    };
                    let mut driver = io.worker_driver(&info).unwrap();
                    for job in rx {
                        job(&mut driver);
                        done_tx.send(()).unwrap();
                    }
                });
                tx
            })
            .collect();
        Workers { txs, done }
    }

    /// Runs `job(thread, share_of_n, slots)` on 1 or 2 threads; returns the wall time.
    fn run<F>(&self, conc: usize, n: u64, job: F) -> Duration
    where
        F: Fn(usize, usize, usize) -> Job,
    {
        let threads = if conc == 1 { 1 } else { 2 };
        let start = Instant::now();
        for t in 0..threads {
            let share = (n as usize).div_ceil(threads);
            self.txs[t].send(job(t, share, conc / threads)).unwrap();
        }
        for _ in 0..threads {
            self.done.recv().unwrap();
        }
        start.elapsed()
    }
}

fn raw_run(
    conc: usize,
    n: u64,
    f: impl Fn(&mut pagegen_io::raw::RawLoop, usize, usize) + Sync,
    size: usize,
) -> Duration {
    let threads = if conc == 1 { 1 } else { 2 };
    let per = conc / threads;
    let share = (n as usize).div_ceil(threads);
    let start = Instant::now();
    std::thread::scope(|s| {
        for t in 0..threads {
            let f = &f;
            s.spawn(move || {
                let mut l = pagegen_io::raw::RawLoop::new(per, size).unwrap();
                let mut left = share;
                let mut k = t * 7919;
                while left > 0 {
                    let b = left.min(per);
                    f(&mut l, b, k);
                    k += b;
                    left -= b;
                }
            });
        }
    });
    start.elapsed()
}

fn bench_reads(c: &mut Criterion) {
    let dir = tempfile::tempdir_in(std::env::temp_dir()).unwrap();
    let sets = fixture(dir.path());
    let io = Io::new(BackendChoice::Auto).unwrap();
    eprintln!("pagegen-io backend: {}", io.backend());
    let workers = Workers::new(&io);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .build()
        .unwrap();
    let concs: &[usize] = if smoke() { &[8] } else { &[1, 8, 32] };
    for set in &sets {
        let big_file = Arc::new(io.block_on(File::open(&set.big)).unwrap());
        let big_std = std::fs::File::open(&set.big).unwrap();
        let cpaths: Arc<Vec<std::ffi::CString>> = Arc::new(
            set.paths
                .iter()
                .map(|p| std::ffi::CString::new(p.as_os_str().as_encoded_bytes()).unwrap())
                .collect(),
        );
        for &conc in concs {
            let mut g = c.benchmark_group(format!("io/{}/c{conc}", set.label));
            g.throughput(Throughput::Elements(1));
            if smoke() {
                g.sample_size(10)
                    .warm_up_time(Duration::from_millis(50))
                    .measurement_time(Duration::from_millis(200));
            } else {
                g.sample_size(10)
                    .warm_up_time(Duration::from_millis(300))
                    .measurement_time(Duration::from_millis(1500));
            }
            let (count, size) = (set.count, set.size);
            let paths = Arc::clone(&set.paths);
            g.bench_function("pagegen_fs_read", |b| {
                b.iter_custom(|n| {
                    workers.run(conc, n, |t, share, slots| {
                        let paths = Arc::clone(&paths);
                        Box::new(move |d| {
                            run_slots(d, slots, share, None, None, |i| {
                                let p = paths[(i + t * 13) % count].clone();
                                Box::pin(async move {
                                    let v = pagegen_io::fs::read(&p).await.unwrap();
                                    assert_eq!(v.len(), size);
                                })
                            })
                        })
                    })
                })
            });
            g.bench_function("pagegen_read_at", |b| {
                b.iter_custom(|n| {
                    workers.run(conc, n, |t, share, slots| {
                        let f = Arc::clone(&big_file);
                        Box::new(move |d| {
                            run_slots(d, slots, share, None, None, |i| {
                                let f = Arc::clone(&f);
                                let off = (((i + t * 13) % count) * size) as u64;
                                Box::pin(async move {
                                    let (r, _) = f.read_at(Vec::with_capacity(size), off).await;
                                    assert_eq!(r.unwrap(), size);
                                })
                            })
                        })
                    })
                })
            });
            let paths = Arc::clone(&set.paths);
            g.bench_function("tokio_fs_read", |b| {
                b.iter_custom(|n| {
                    let paths = Arc::clone(&paths);
                    rt.block_on(async move {
                        let start = Instant::now();
                        let share = (n as usize).div_ceil(conc);
                        let tasks: Vec<_> = (0..conc)
                            .map(|t| {
                                let paths = Arc::clone(&paths);
                                tokio::spawn(async move {
                                    for i in 0..share {
                                        let v = tokio::fs::read(&paths[(i + t * 13) % count])
                                            .await
                                            .unwrap();
                                        assert_eq!(v.len(), size);
                                    }
                                })
                            })
                            .collect();
                        for t in tasks {
                            t.await.unwrap();
                        }
                        start.elapsed()
                    })
                })
            });
            let paths = Arc::clone(&set.paths);
            g.bench_function("std_read_spawn_blocking", |b| {
                b.iter_custom(|n| {
                    let paths = Arc::clone(&paths);
                    rt.block_on(async move {
                        let start = Instant::now();
                        let share = (n as usize).div_ceil(conc);
                        let tasks: Vec<_> = (0..conc)
                            .map(|t| {
                                let paths = Arc::clone(&paths);
                                tokio::spawn(async move {
                                    for i in 0..share {
                                        let p = paths[(i + t * 13) % count].clone();
                                        let v =
                                            tokio::task::spawn_blocking(move || std::fs::read(p))
                                                .await
                                                .unwrap()
                                                .unwrap();
                                        assert_eq!(v.len(), size);
                                    }
                                })
                            })
                            .collect();
                        for t in tasks {
                            t.await.unwrap();
                        }
                        start.elapsed()
                    })
                })
            });
            let cp = Arc::clone(&cpaths);
            g.bench_function("raw_uring_read_files", |b| {
                b.iter_custom(|n| {
                    raw_run(
                        conc,
                        n,
                        |l, batch, k| {
                            let ps: Vec<&std::ffi::CStr> =
                                (0..batch).map(|j| cp[(k + j) % count].as_c_str()).collect();
                            l.read_files_batch(&ps).unwrap();
                        },
                        size,
                    )
                })
            });
            let fd = std::os::fd::AsRawFd::as_raw_fd(&big_std);
            g.bench_function("raw_uring_pread", |b| {
                b.iter_custom(|n| {
                    raw_run(
                        conc,
                        n,
                        |l, batch, k| {
                            let offs: Vec<u64> = (0..batch)
                                .map(|j| (((k + j) % count) * size) as u64)
                                .collect();
                            l.pread_batch(fd, size, &offs).unwrap();
                        },
                        size,
                    )
                })
            });
            g.finish();
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Cold-cache isolation.

fn percentile(v: &mut [u64], p: f64) -> u64 {
    v.sort_unstable();
    v[((v.len() as f64 - 1.0) * p).round() as usize]
}

/// Light-class latencies (ns) and heavy throughput (MB/s) with the heavy class at `heavy_depth`.
fn isolation_trial(
    io: &Io,
    workers: &Workers,
    heavy: &std::path::Path,
    light: &std::path::Path,
    heavy_depth: u32,
    samples: usize,
) -> (Vec<u64>, f64) {
    let heavy_class = ClassId::from_raw(1);
    let light_class = ClassId::from_raw(2);
    io.classes().set_depth(heavy_class, heavy_depth).unwrap();
    let heavy_file = Arc::new(io.block_on(File::open(heavy)).unwrap());
    let light_file = Arc::new(io.block_on(File::open(light)).unwrap());
    pagegen_io::drop_cache(heavy_file.as_std()).unwrap();
    pagegen_io::drop_cache(light_file.as_std()).unwrap();
    let heavy_chunks = (heavy_file.as_std().metadata().unwrap().len() >> 20) as usize;
    let light_pages = (light_file.as_std().metadata().unwrap().len() >> 12) as usize;
    let stop = Arc::new(AtomicBool::new(false));
    let heavy_bytes = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let start = Instant::now();
    {
        let (stop, hb, hf) = (
            Arc::clone(&stop),
            Arc::clone(&heavy_bytes),
            Arc::clone(&heavy_file),
        );
        workers.txs[0]
            .send(Box::new(move |d| {
                let ctx = RequestCtx::new(RequestId(1), Grant::unlimited(heavy_class), 0);
                run_slots(d, 32, usize::MAX, Some(&ctx), Some(&stop), |i| {
                    let (f, hb) = (Arc::clone(&hf), Arc::clone(&hb));
                    let chunk = i % heavy_chunks;
                    if chunk == 0 && i > 0 {
                        let _ = pagegen_io::drop_cache(f.as_std());
                    }
                    Box::pin(async move {
                        let (r, _) = f
                            .read_at(Vec::with_capacity(1 << 20), (chunk as u64) << 20)
                            .await;
                        hb.fetch_add(r.unwrap() as u64, Ordering::Relaxed);
                    })
                });
            }))
            .unwrap();
    }
    let lat = Arc::new(std::sync::Mutex::new(Vec::with_capacity(samples)));
    {
        let (lat, lf, stop) = (Arc::clone(&lat), Arc::clone(&light_file), Arc::clone(&stop));
        workers.txs[1]
            .send(Box::new(move |d| {
                let ctx = RequestCtx::new(RequestId(2), Grant::unlimited(light_class), 0);
                // Let the heavy class fill the device first.
                std::thread::sleep(Duration::from_millis(50));
                run_slots(d, 1, samples, Some(&ctx), None, |i| {
                    let (f, lat) = (Arc::clone(&lf), Arc::clone(&lat));
                    // Spread over the file so read-ahead of one sample does not serve the next.
                    let page = (i * 7919) % light_pages;
                    let _ = pagegen_io::drop_cache(f.as_std());
                    Box::pin(async move {
                        let t = Instant::now();
                        let (r, _) = f
                            .read_at(Vec::with_capacity(4096), (page as u64) << 12)
                            .await;
                        r.unwrap();
                        lat.lock().unwrap().push(t.elapsed().as_nanos() as u64);
                    })
                });
                stop.store(true, Ordering::Relaxed);
            }))
            .unwrap();
    }
    workers.done.recv().unwrap();
    workers.done.recv().unwrap();
    let secs = start.elapsed().as_secs_f64();
    io.classes().set_depth(heavy_class, u32::MAX).unwrap();
    let v = std::mem::take(&mut *lat.lock().unwrap());
    (v, heavy_bytes.load(Ordering::Relaxed) as f64 / 1e6 / secs)
}

fn isolation() {
    let samples = if smoke() { 20 } else { 2000 };
    let heavy_mib = if smoke() { 16 } else { 256 };
    let dir = tempfile::tempdir_in(std::env::temp_dir()).unwrap();
    let heavy = dir.path().join("heavy");
    let light = dir.path().join("light");
    let mib: Vec<u8> = (0..1 << 20).map(|i| (i % 253) as u8).collect();
    {
        use std::io::Write;
        let mut h = std::fs::File::create(&heavy).unwrap();
        for _ in 0..heavy_mib {
            h.write_all(&mib).unwrap();
        }
        h.sync_all().unwrap();
        let mut l = std::fs::File::create(&light).unwrap();
        for _ in 0..64 {
            l.write_all(&mib).unwrap();
        }
        l.sync_all().unwrap();
    }
    let io = Io::new(BackendChoice::Auto).unwrap();
    let workers = Workers::new(&io);
    let mut lines = vec![format!(
        "io-isolation: backend {}, cold cache (posix_fadvise DONTNEED), heavy class 32 x 1 MiB reads, light class 1 x 4 KiB reads, {samples} light samples",
        io.backend()
    )];
    // The disk behind this VM warms between trials (its host caches what we evict), so the two
    // settings alternate after one discarded warm-up trial, and each is reported twice.
    let _ = isolation_trial(&io, &workers, &heavy, &light, u32::MAX, samples / 4);
    let mut p99s = [Vec::new(), Vec::new()];
    for round in 0..2 {
        for (k, (name, depth)) in [("no class limit", u32::MAX), ("heavy depth 2", 2)]
            .into_iter()
            .enumerate()
        {
            let (mut v, heavy_mbps) =
                isolation_trial(&io, &workers, &heavy, &light, depth, samples);
            let p50 = percentile(&mut v, 0.5);
            let p90 = percentile(&mut v, 0.9);
            let p99 = percentile(&mut v, 0.99);
            p99s[k].push(p99 as f64);
            lines.push(format!(
                "  round {round} {name:>15}: light p50 {:>7.1} us  p90 {:>8.1} us  p99 {:>8.1} us   heavy {heavy_mbps:>7.1} MB/s",
                p50 as f64 / 1e3,
                p90 as f64 / 1e3,
                p99 as f64 / 1e3
            ));
        }
    }
    let mean = |v: &[f64]| v.iter().sum::<f64>() / v.len() as f64;
    lines.push(format!(
        "  light p99 ratio (no limit / heavy depth 2), mean of rounds: {:.2}x",
        mean(&p99s[0]) / mean(&p99s[1])
    ));
    let text = lines.join("\n");
    println!("{text}");
    let out = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("target");
    let out = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or(out);
    let _ = std::fs::create_dir_all(out.join("criterion"));
    let _ = std::fs::write(out.join("criterion/io-isolation.txt"), text + "\n");
}

fn main() {
    let mut c = Criterion::default().configure_from_args();
    bench_reads(&mut c);
    isolation();
    c.final_summary();
}
