//! File-read benchmarks: pagegen's fs on the pagegen executor against tokio, std in
//! spawn_blocking and a raw io_uring loop, in one run.
//!
//! Throughput matrix (`io/<size>/c<conc>`): sizes 4 KiB / 16 KiB / 1 MiB, concurrency 1 / 8 / 32
//! tasks. Warm page cache (files are read once before).
//! - `pagegen_fs_read`: `pagegen_io::fs::read(path)` (one linked open, read, probe; then the
//!   close; larger files go on reading), and
//!   `pagegen_read_at`: `File::read_at` on an open file; `conc` tasks on a **pagegen runtime of 2
//!   workers with pagegen-io's driver** (what `#[pagegen::main]` builds: each worker reaps its own
//!   ring), spawned and joined from the bench thread.
//! - `tokio_fs_read`: `tokio::fs::read(path)`; `std_read_spawn_blocking`: `std::fs::read` in
//!   `tokio::task::spawn_blocking`; both on a 2-worker multi-thread runtime, `conc` tasks.
//! - `raw_uring_read_files` / `raw_uring_pread`: the same operation sequences on bare rings (one
//!   per thread, 2 threads, concurrency 1 uses one; no futures, no permits, no profile): the
//!   ceiling. `raw_uring_read_files` is `fs::read`'s unchained sequence (open + statx, read,
//!   close); `raw_uring_read_files_chained` its chain since issue 16 (one linked submission per
//!   file; the close is linked in, where `fs::read`'s ring pushes it after the probe). Its reads
//!   are the chain's 16 KiB + 1 byte: a 1 MiB file is only partly read, so that row means
//!   nothing at 1 MiB.
//!
//! The cold-cache class-isolation measurement is `benches/io_cold.rs` (run by `benches/io_cold.sh`).
//!
//! `PAGEGEN_BENCH_SMOKE=1` runs a tiny configuration.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{Criterion, Throughput};
use pagegen_executor::{Builder, Runtime};
use pagegen_io::fs::File;
use pagegen_io::{BackendChoice, Io};

fn smoke() -> bool {
    std::env::var("PAGEGEN_BENCH_SMOKE").is_ok_and(|v| v == "1")
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
// pagegen: the executor with pagegen-io's driver, as `#[pagegen::main]` builds it.

/// Runs `n` reads as `conc` tasks on the 2-worker pagegen runtime; `read(task, i)` is read `i` of
/// task `task`. Returns the wall time.
fn pagegen_run<F, Fut>(rt: &Runtime, conc: usize, n: u64, read: F) -> Duration
where
    F: Fn(usize, usize) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let read = Arc::new(read);
    let share = (n as usize).div_ceil(conc);
    let start = Instant::now();
    let tasks: Vec<_> = (0..conc)
        .map(|t| {
            let read = Arc::clone(&read);
            rt.spawn(async move {
                for i in 0..share {
                    read(t, i).await;
                }
            })
        })
        .collect();
    rt.block_on(async {
        for t in tasks {
            t.await.unwrap();
        }
    });
    start.elapsed()
}

fn raw_run(
    conc: usize,
    n: u64,
    f: impl Fn(&mut pagegen_io::baseline::RawLoop, usize, usize) + Sync,
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
                let mut l = pagegen_io::baseline::RawLoop::new(per, size).unwrap();
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
    // `File::open` below binds the file to the thread's current runtime: make it the bench's.
    let _io = io.enter();
    eprintln!("pagegen-io backend: {}", io.backend());
    let prt = Builder::new()
        .workers(2)
        .driver(Arc::new(io.clone()))
        .build()
        .unwrap();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .build()
        .unwrap();
    let concs: &[usize] = if smoke() { &[8] } else { &[1, 8, 32] };
    for set in &sets {
        let big_file = Arc::new(prt.block_on(File::open(&set.big)).unwrap());
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
                    let paths = Arc::clone(&paths);
                    pagegen_run(&prt, conc, n, move |t, i| {
                        let p = paths[(i + t * 13) % count].clone();
                        async move {
                            let v = pagegen_io::fs::read(&p).await.unwrap();
                            assert_eq!(v.len(), size);
                        }
                    })
                })
            });
            g.bench_function("pagegen_read_at", |b| {
                b.iter_custom(|n| {
                    let f = Arc::clone(&big_file);
                    pagegen_run(&prt, conc, n, move |t, i| {
                        let f = Arc::clone(&f);
                        let off = (((i + t * 13) % count) * size) as u64;
                        async move {
                            let (r, _) = f.read_at(Vec::with_capacity(size), off).await;
                            assert_eq!(r.unwrap(), size);
                        }
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
            for (name, chained) in [
                ("raw_uring_read_files", false),
                ("raw_uring_read_files_chained", true),
            ] {
                let cp = Arc::clone(&cpaths);
                g.bench_function(name, |b| {
                    b.iter_custom(|n| {
                        raw_run(
                            conc,
                            n,
                            |l, batch, k| {
                                let ps: Vec<&std::ffi::CStr> =
                                    (0..batch).map(|j| cp[(k + j) % count].as_c_str()).collect();
                                if chained {
                                    l.read_files_chained(&ps).unwrap();
                                } else {
                                    l.read_files_batch(&ps).unwrap();
                                }
                            },
                            size,
                        )
                    })
                });
            }
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

fn main() {
    let mut c = Criterion::default().configure_from_args();
    bench_reads(&mut c);
    c.final_summary();
}
