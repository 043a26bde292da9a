//! Per-class and per-request limits and the per-request profile, end to end on every backend,
//! driven poll-at-a-time with the crate's own driver on the test thread (the executor's contract).

mod common;

use std::sync::Arc;
use std::task::Poll;

use pagegen_core::{
    ClassId, ClassRegistry, ClassSpec, DriverFactory, Grant, IoOpKind, RequestCtx, RequestId,
    Shares, WorkerInfo,
};
use pagegen_io::fs::{self, File};
use pagegen_io::{ClassLimits, Io, IoError};

use common::{counting_waker, poll_once, BoxFut};

fn worker() -> WorkerInfo {
    WorkerInfo {
        index: 0,
        pool: None,
        name: "test".into(),
    }
}

/// Polls every future (inside `ctx`) and drives the driver until all are done, calling `check`
/// after every step.
fn drive(io: &Io, ctx: &Arc<RequestCtx>, mut futs: Vec<BoxFut<()>>, mut check: impl FnMut()) {
    let mut driver = io.worker_driver(&worker()).unwrap();
    let (_, waker) = counting_waker();
    let mut steps = 0;
    while !futs.is_empty() {
        {
            let _g = RequestCtx::enter(ctx);
            futs.retain_mut(|f| poll_once(f.as_mut(), &waker).is_pending());
        }
        check();
        driver.poll_nonblocking();
        check();
        steps += 1;
        assert!(steps < 1_000_000, "futures never finish");
        if !futs.is_empty() && steps % 64 == 0 {
            std::thread::yield_now(); // Let pool threads run on a busy machine.
        }
    }
}

fn reads(file: &Arc<File>, n: usize) -> Vec<BoxFut<()>> {
    (0..n)
        .map(|i| {
            let f = Arc::clone(file);
            Box::pin(async move {
                let (r, buf) = f.read_at(Vec::with_capacity(1024), i as u64 * 1024).await;
                assert_eq!(r.unwrap(), 1024);
                assert_eq!(buf[0], (i % 256) as u8);
            }) as BoxFut<()>
        })
        .collect()
}

fn data_file(dir: &tempfile::TempDir, name: &str) -> std::path::PathBuf {
    let p = dir.path().join(name);
    let data: Vec<u8> = (0..64 * 1024).map(|i| ((i / 1024) % 256) as u8).collect();
    std::fs::write(&p, data).unwrap();
    p
}

#[test]
fn class_depth_bounds_in_flight_operations() {
    let dir = tempfile::tempdir().unwrap();
    let p = data_file(&dir, "d");
    for io in common::backends() {
        let class = ClassId::from_raw(5);
        io.classes().set_depth(class, 2).unwrap();
        let ctx = RequestCtx::new(RequestId(1), Grant::unlimited(class), 0);
        let file = Arc::new(io.block_on(File::open(&p)).unwrap());
        let classes = Arc::clone(io.classes());
        let uring = io.backend() == pagegen_io::Backend::Uring;
        let mut peak = 0;
        let mut first = true;
        let futs = reads(&file, 16);
        drive(&io, &ctx, futs, || {
            let n = classes.in_flight(class);
            assert!(n <= 2, "class depth 2 exceeded: {n}");
            if first && uring {
                // On a ring nothing completes before the driver runs: the first poll round
                // fills the class's depth exactly (a pool thread may already have finished one).
                assert_eq!(n, 2, "the first poll round fills the class's depth");
            }
            first = false;
            peak = peak.max(n);
        });
        assert_eq!(classes.in_flight(class), 0);
        assert!(peak <= 2);
        let s = ctx.io.snapshot();
        assert_eq!(s.ops[IoOpKind::Read as usize], 16, "{}", io.backend());
        assert_eq!(s.read_bytes, 16 * 1024);
    }
}

#[test]
fn request_depth_bounds_one_request() {
    let dir = tempfile::tempdir().unwrap();
    let p = data_file(&dir, "r");
    for io in common::backends() {
        let mut grant = Grant::unlimited(ClassId::DEFAULT);
        grant.io_depth = 1;
        let ctx = RequestCtx::new(RequestId(2), grant, 0);
        let file = Arc::new(io.block_on(File::open(&p)).unwrap());
        let c = Arc::clone(&ctx);
        drive(&io, &ctx, reads(&file, 8), || {
            assert!(c.io.in_flight() <= 1, "request depth 1 exceeded");
        });
        assert_eq!(ctx.io.in_flight(), 0);
    }
}

#[test]
fn the_request_profile_records_kinds_bytes_locality_and_files() {
    let dir = tempfile::tempdir().unwrap();
    let a = data_file(&dir, "a");
    let b = data_file(&dir, "b");
    let out = dir.path().join("out");
    for io in common::backends() {
        let chained = common::chains(&io, dir.path());
        let ctx = RequestCtx::new(RequestId(3), Grant::unlimited(ClassId::from_raw(2)), 0);
        let _g = RequestCtx::enter(&ctx);
        io.block_on(async {
            let f = File::open(&a).await.unwrap();
            // Four contiguous reads, then one that jumps back.
            for i in 0..4u64 {
                let (r, _) = f.read_at(Vec::with_capacity(4096), i * 4096).await;
                assert_eq!(r.unwrap(), 4096);
            }
            let (r, _) = f.read_at(Vec::with_capacity(100), 10).await;
            assert_eq!(r.unwrap(), 100);
            drop(f);
            assert_eq!(fs::read(&b).await.unwrap().len(), 64 * 1024);
            fs::write(&out, [1u8; 300]).await.unwrap();
            fs::metadata(&out).await.unwrap();
        });
        let s = ctx.io.snapshot();
        let ops = |k: IoOpKind| s.ops[k as usize];
        // read_at: 5 reads. fs::read unchained: a statx of the path, one read of size + 1 that
        // comes back short (EOF), the close. Chained (chain.rs): the first read and the probe,
        // the direct slot's close; the file is longer than the first read, so the rest is read
        // on the installed descriptor after a statx of it, and that descriptor closed.
        let (reads, sequential, closes) = if chained { (8, 5, 4) } else { (6, 3, 3) };
        assert_eq!(ops(IoOpKind::Read), reads, "{}", io.backend());
        assert_eq!(s.read_bytes, 4 * 4096 + 100 + 64 * 1024);
        assert_eq!(
            s.sequential_reads, sequential,
            "reads 2-4 continue the previous one"
        );
        assert_eq!(ops(IoOpKind::Write), 1);
        assert_eq!(s.write_bytes, 300);
        assert_eq!(ops(IoOpKind::Open), 3);
        assert_eq!(ops(IoOpKind::Stat), 2, "fs::read's size hint and metadata");
        assert_eq!(ops(IoOpKind::Close), closes);
        assert_eq!(s.distinct_files, 3);
        let timed: u64 = s.latency_log2.iter().sum();
        assert_eq!(
            timed,
            s.total_ops(),
            "every op lands in the latency histogram"
        );
    }
}

#[test]
fn work_outside_requests_counts_against_the_default_class() {
    let dir = tempfile::tempdir().unwrap();
    let p = data_file(&dir, "o");
    for io in common::backends() {
        io.classes().set_depth(ClassId::DEFAULT, 1).unwrap();
        let file = Arc::new(io.block_on(File::open(&p)).unwrap());
        let _enter = io.enter();
        let (r, mut w) = std::io::pipe().unwrap();
        let pipe = File::from_std(std::fs::File::from(std::os::fd::OwnedFd::from(r)));
        let mut driver = io.worker_driver(&worker()).unwrap();
        let (_, waker) = counting_waker();
        // `a` holds the class's only slot until the pipe has data.
        let mut a = Box::pin(pipe.read_at(Vec::with_capacity(1), 0));
        let mut b = Box::pin(file.read_at(Vec::with_capacity(8), 8));
        assert!(poll_once(a.as_mut(), &waker).is_pending());
        assert!(poll_once(b.as_mut(), &waker).is_pending());
        for _ in 0..10 {
            driver.poll_nonblocking();
            assert!(
                poll_once(b.as_mut(), &waker).is_pending(),
                "b waits for a's slot"
            );
        }
        assert_eq!(io.classes().in_flight(ClassId::DEFAULT), 1);
        std::io::Write::write_all(&mut w, b"x").unwrap();
        let mut done = (false, false);
        while !(done.0 && done.1) {
            driver.poll_nonblocking();
            if !done.0 {
                done.0 = matches!(poll_once(a.as_mut(), &waker), Poll::Ready(_));
            }
            if !done.1 {
                done.1 = matches!(poll_once(b.as_mut(), &waker), Poll::Ready(_));
            }
            assert!(io.classes().in_flight(ClassId::DEFAULT) <= 1);
            std::thread::yield_now();
        }
    }
}

#[test]
fn classes_are_set_up_on_registration_and_changed_at_run_time() {
    let io = Io::new(pagegen_io::BackendChoice::Blocking).unwrap();
    let classes = Arc::clone(io.classes());
    classes.set_default_limits(ClassLimits {
        depth: 4,
        bytes_per_sec: None,
    });
    let reg = ClassRegistry::in_memory();
    reg.subscribe(classes.clone());
    let id = reg
        .register(ClassSpec::new("GET /feed").with_shares(Shares::new(300).unwrap()))
        .unwrap();
    assert_eq!(
        classes.limits(id).depth,
        4,
        "defaults applied on registration"
    );
    classes.set_depth(id, 9).unwrap();
    classes.set_bandwidth(id, Some(1 << 20)).unwrap();
    reg.register(ClassSpec::new("GET /feed")).unwrap();
    assert_eq!(
        classes.limits(id),
        ClassLimits {
            depth: 9,
            bytes_per_sec: Some(1 << 20)
        },
        "a re-registration keeps run-time limits"
    );
    assert!(matches!(
        classes.set_depth(id, 0),
        Err(IoError::ZeroDepth { .. })
    ));
    assert!(matches!(
        classes.set_bandwidth(id, Some(0)),
        Err(IoError::ZeroBandwidth { .. })
    ));
    assert!(matches!(
        classes.set_depth(ClassId::from_raw(1 << 20), 1),
        Err(IoError::UnknownClass { .. })
    ));
    let e: std::io::Error = IoError::ZeroDepth { class: id }.into();
    assert_eq!(e.kind(), std::io::ErrorKind::InvalidInput);
}

#[test]
fn a_bandwidth_limit_paces_reads_without_losing_any() {
    // The timing itself is a benchmark; here: a paced class still completes everything, woken by
    // the pacer rather than by completions.
    let dir = tempfile::tempdir().unwrap();
    let p = data_file(&dir, "bw");
    for io in common::backends() {
        let class = ClassId::from_raw(9);
        // 64 MB/s: a 6.4 MB burst covers the first reads; the rest wait for refills.
        io.classes().set_bandwidth(class, Some(64 << 20)).unwrap();
        let ctx = RequestCtx::new(RequestId(4), Grant::unlimited(class), 0);
        let _g = RequestCtx::enter(&ctx);
        let total = io.block_on(async {
            let f = File::open(&p).await.unwrap();
            let mut total = 0;
            for _ in 0..200 {
                let (r, _) = f.read_at(Vec::with_capacity(64 * 1024), 0).await;
                total += r.unwrap();
            }
            total
        });
        assert_eq!(total, 200 * 64 * 1024);
    }
}

#[test]
fn a_request_bandwidth_paces_its_reads_without_losing_any() {
    // The per-request rate of `Grant::io_bytes_per_sec`: reads after the first wait on the pacer
    // thread (no completion wakes them) and all complete, with nothing left in flight.
    let dir = tempfile::tempdir().unwrap();
    let p = data_file(&dir, "rbw");
    for io in common::backends() {
        let mut grant = Grant::unlimited(ClassId::DEFAULT);
        grant.io_bytes_per_sec = 16 << 20; // 16 KiB reads: about 1 ms apart.
        let ctx = RequestCtx::new(RequestId(5), grant, 0);
        let _g = RequestCtx::enter(&ctx);
        let total = io.block_on(async {
            let f = File::open(&p).await.unwrap();
            let mut total = 0;
            for _ in 0..20 {
                let (r, _) = f.read_at(Vec::with_capacity(16 * 1024), 0).await;
                total += r.unwrap();
            }
            total
        });
        assert_eq!(total, 20 * 16 * 1024);
        assert_eq!(ctx.io.in_flight(), 0);
        assert_eq!(ctx.io.snapshot().read_bytes, 20 * 16 * 1024);
    }
}
