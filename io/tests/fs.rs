//! The fs API on every backend: data, std error kinds, short reads, and the path without a
//! pagegen driver on the thread.

mod common;

use std::future::{poll_fn, Future};
use std::io::{ErrorKind, Write};
use std::pin::pin;
use std::sync::Arc;
use std::task::{Poll, Wake, Waker};

use pagegen_core::{ClassId, Grant, IoOpKind, RequestCtx, RequestId};
use pagegen_io::fs::{self, File};
use pagegen_io::Io;

fn pattern(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i * 31 % 251) as u8).collect()
}

#[test]
fn write_read_metadata_round_trip() {
    let dir = tempfile::tempdir().unwrap();
    for io in common::backends() {
        let p = dir.path().join(format!("rt-{}", io.backend()));
        let big = pattern(2 * 1024 * 1024 + 17);
        io.block_on(async {
            fs::write(&p, b"hello pagegen").await.unwrap();
            assert_eq!(fs::read(&p).await.unwrap(), b"hello pagegen");
            assert_eq!(fs::read_to_string(&p).await.unwrap(), "hello pagegen");
            let m = fs::metadata(&p).await.unwrap();
            assert_eq!(m.len(), 13);
            assert!(m.is_file() && !m.is_dir());
            assert!(fs::metadata(dir.path()).await.unwrap().is_dir());

            fs::write(&p, &big).await.unwrap();
            assert_eq!(fs::read(&p).await.unwrap(), big, "{}", io.backend());
            fs::write(&p, b"").await.unwrap();
            assert!(fs::read(&p).await.unwrap().is_empty());
        });
    }
}

#[test]
fn file_read_at_write_at_sync_and_short_reads_at_eof() {
    let dir = tempfile::tempdir().unwrap();
    for io in common::backends() {
        let p = dir.path().join(format!("f-{}", io.backend()));
        io.block_on(async {
            let f = File::create(&p).await.unwrap();
            let (n, _) = f.write_at(b"0123456789".to_vec(), 0).await;
            assert_eq!(n.unwrap(), 10);
            let (n, _) = f.write_at(b"abc".to_vec(), 20).await;
            assert_eq!(n.unwrap(), 3);
            f.sync_all().await.unwrap();
            assert_eq!(f.metadata().await.unwrap().len(), 23);
            drop(f);

            let f = File::open(&p).await.unwrap();
            let (n, buf) = f.read_at(Vec::with_capacity(4), 2).await;
            assert_eq!((n.unwrap(), &buf[..]), (4, &b"2345"[..]));
            // Appends after existing content.
            let mut prefix = b"x".to_vec();
            prefix.reserve_exact(3);
            let want = prefix.capacity() - 1;
            let (n, buf) = f.read_at(prefix, 7).await;
            assert_eq!(n.unwrap(), want);
            assert_eq!(&buf[..4], b"x789");
            // Short read at the end of the file: fewer bytes, no error.
            let (n, buf) = f.read_at(Vec::with_capacity(100), 18).await;
            assert_eq!(n.unwrap(), 5);
            assert_eq!(buf, b"\0\0abc");
            // Past the end.
            let (n, buf) = f.read_at(Vec::with_capacity(8), 1000).await;
            assert_eq!((n.unwrap(), buf.len()), (0, 0));
            // No spare capacity: nothing to do.
            let (n, _) = f.read_at(Vec::new(), 0).await;
            assert_eq!(n.unwrap(), 0);
            // Writing a read-only file fails with std's kind.
            let (r, _) = f.write_at(b"no".to_vec(), 0).await;
            assert!(r.is_err());
        });
    }
}

#[test]
fn missing_files_and_bad_paths_have_std_kinds() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("nope");
    let bad_utf8 = dir.path().join("bad");
    std::fs::write(&bad_utf8, [0xff, 0xfe]).unwrap();
    for io in common::backends() {
        io.block_on(async {
            assert_eq!(
                fs::read(&missing).await.unwrap_err().kind(),
                ErrorKind::NotFound
            );
            assert_eq!(
                File::open(&missing).await.unwrap_err().kind(),
                ErrorKind::NotFound
            );
            assert_eq!(
                fs::metadata(&missing).await.unwrap_err().kind(),
                ErrorKind::NotFound
            );
            assert_eq!(
                fs::read_to_string(&missing).await.unwrap_err().kind(),
                ErrorKind::NotFound
            );
            assert_eq!(
                fs::write(dir.path().join("no/such/dir"), b"x")
                    .await
                    .unwrap_err()
                    .kind(),
                ErrorKind::NotFound
            );
            assert_eq!(
                fs::read("a\0b").await.unwrap_err().kind(),
                ErrorKind::InvalidInput
            );
            assert_eq!(
                fs::read_to_string(&bad_utf8).await.unwrap_err().kind(),
                ErrorKind::InvalidData
            );
            assert_eq!(
                fs::read(dir.path()).await.unwrap_err().kind(),
                ErrorKind::IsADirectory
            );
        });
    }
}

#[test]
fn files_of_unknown_size_are_read_to_the_end() {
    // /proc files report size 0; the read grows its buffer until a read returns 0.
    for io in common::backends() {
        let got = io
            .block_on(fs::read_to_string("/proc/self/status"))
            .unwrap();
        assert!(got.contains("Name:") && got.contains("VmPeak"), "{got}");
    }
}

/// Yields once to the driver.
async fn yield_now() {
    let mut yielded = false;
    poll_fn(|cx| {
        if yielded {
            Poll::Ready(())
        } else {
            yielded = true;
            cx.waker().wake_by_ref();
            Poll::Pending
        }
    })
    .await
}

#[test]
fn short_reads_are_continued() {
    // A pipe delivers what has been written so far: the first read is short, and read_at must
    // issue another one for the rest.
    for io in common::backends() {
        let (r, mut w) = std::io::pipe().unwrap();
        let ctx = RequestCtx::new(RequestId(1), Grant::unlimited(ClassId::DEFAULT), 0);
        let _g = RequestCtx::enter(&ctx);
        io.block_on(async {
            let f = File::from_std(std::fs::File::from(std::os::fd::OwnedFd::from(r)));
            w.write_all(b"abc").unwrap();
            let mut fut = pin!(f.read_at(Vec::with_capacity(8), 0));
            // Drive until the first (short) read has completed and been recorded.
            loop {
                let pending = poll_fn(|cx| Poll::Ready(fut.as_mut().poll(cx).is_pending())).await;
                assert!(pending, "cannot finish before the rest is written");
                if ctx.io.snapshot().ops[IoOpKind::Read as usize] == 1 {
                    break;
                }
                yield_now().await;
            }
            w.write_all(b"defgh").unwrap();
            let (n, buf) = fut.await;
            assert_eq!(n.unwrap(), 8);
            assert_eq!(buf, b"abcdefgh");
        });
        let s = ctx.io.snapshot();
        assert_eq!(s.ops[IoOpKind::Read as usize], 2, "{}", io.backend());
        assert_eq!(s.read_bytes, 8);
    }
}

struct Unparker(std::thread::Thread);
impl Wake for Unparker {
    fn wake(self: Arc<Self>) {
        self.0.unpark();
    }
}

/// A block_on with no pagegen driver: what a tokio task or a plain thread looks like to pagegen.
fn block_on_foreign<F: Future>(fut: F) -> F::Output {
    let waker = Waker::from(Arc::new(Unparker(std::thread::current())));
    let mut cx = std::task::Context::from_waker(&waker);
    let mut fut = pin!(fut);
    loop {
        if let Poll::Ready(v) = fut.as_mut().poll(&mut cx) {
            return v;
        }
        std::thread::park();
    }
}

#[test]
fn threads_without_a_driver_are_served() {
    let dir = tempfile::tempdir().unwrap();
    for io in common::backends() {
        let p = dir.path().join(format!("foreign-{}", io.backend()));
        let data = pattern(100_000);
        let _g = io.enter();
        block_on_foreign(async {
            fs::write(&p, &data).await.unwrap();
            assert_eq!(fs::read(&p).await.unwrap(), data);
            let f = File::open(&p).await.unwrap();
            let (n, buf) = f.read_at(Vec::with_capacity(10), 99_995).await;
            assert_eq!((n.unwrap(), &buf[..]), (5, &data[99_995..]));
        });
    }
}

#[test]
fn the_global_runtime_serves_plain_calls() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("global");
    std::fs::write(&p, b"global").unwrap();
    assert_eq!(block_on_foreign(fs::read(&p)).unwrap(), b"global");
    let _ = Io::global().backend();
}

#[test]
fn reads_of_every_size_around_the_first_read_match_std() {
    // The chain's first read is 16 KiB and its probe one byte: sizes on both sides of each.
    const FIRST: usize = 16 * 1024;
    let dir = tempfile::tempdir().unwrap();
    let sizes = [
        0,
        1,
        4096,
        FIRST - 1,
        FIRST,
        FIRST + 1,
        FIRST + 2,
        2 * FIRST,
        100_000,
        1 << 20,
        2 * 1024 * 1024 + 17,
    ];
    for io in common::backends() {
        let chained = common::chains(&io, dir.path());
        for &size in &sizes {
            let p = dir.path().join(format!("s{size}-{}", io.backend()));
            let data = pattern(size);
            std::fs::write(&p, &data).unwrap();
            let (got, s) = common::read_profiled(&io, &p);
            assert!(got == data, "{} bytes on {}", size, io.backend());
            assert!(
                got.capacity() <= 2 * size.max(4096) + 2,
                "{}",
                got.capacity()
            );
            assert_eq!(s.ops[IoOpKind::Open as usize], 1, "{size}");
            assert_eq!(s.read_bytes, size as u64, "{size}");
            if chained {
                // One open, the first read and the probe; a larger file adds a statx of its
                // open descriptor and the reads of the rest.
                let small = size <= FIRST;
                assert_eq!(s.ops[IoOpKind::Stat as usize], u64::from(!small), "{size}");
                if small {
                    assert_eq!(s.ops[IoOpKind::Read as usize], 2, "{size}");
                    assert_eq!(s.ops[IoOpKind::Close as usize], 1, "{size}");
                }
            } else {
                assert_eq!(s.ops[IoOpKind::Stat as usize], 1, "{size}");
            }
        }
    }
}

#[test]
fn proc_files_longer_than_one_read_are_read_to_the_end() {
    // /proc files report size 0 and their reads stop short of the end (one seq_file page at a
    // time): only a read that returns 0 ends them. smaps runs to tens of KiB, past the chain's
    // first read; it changes between reads (the other tests start and end threads, each with a
    // stack mapping), so it is compared by shape: complete records, and not a fraction of std's
    // count (stopping at the first short read kept about a quarter).
    for io in common::backends() {
        let smaps = io.block_on(fs::read_to_string("/proc/self/smaps")).unwrap();
        let std_smaps = std::fs::read_to_string("/proc/self/smaps").unwrap();
        let mappings = |s: &str| s.lines().filter(|l| l.starts_with("VmFlags:")).count();
        assert!(
            smaps.len() > 16 * 1024 + 1
                && smaps.ends_with('\n')
                && smaps.lines().last().unwrap().starts_with("VmFlags:")
                && smaps.lines().filter(|l| l.starts_with("Size:")).count() == mappings(&smaps)
                && 2 * mappings(&smaps) > mappings(&std_smaps),
            "{} mappings of {} on {}: {smaps}",
            mappings(&smaps),
            mappings(&std_smaps),
            io.backend()
        );
        let stat = io.block_on(fs::read("/proc/self/stat")).unwrap();
        assert!(stat.ends_with(b"\n"));
    }
}

#[test]
fn errors_keep_std_kinds_through_the_chain() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("missing");
    for io in common::backends() {
        // A failed open cancels the chain's reads (`-ECANCELED`): the open's error is reported.
        let ctx = RequestCtx::new(RequestId(9), Grant::unlimited(ClassId::DEFAULT), 0);
        let e = {
            let _g = RequestCtx::enter(&ctx);
            io.block_on(fs::read(&missing)).unwrap_err()
        };
        assert_eq!(e.kind(), ErrorKind::NotFound, "{e} on {}", io.backend());
        assert_eq!(ctx.io.snapshot().ops[IoOpKind::Open as usize], 1);
        // A directory opens, and its first read fails.
        let e = io.block_on(fs::read(dir.path())).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::IsADirectory, "{e}");
        let long = dir.path().join("x".repeat(300));
        let e = io.block_on(fs::read(&long)).unwrap_err();
        assert_eq!(e.raw_os_error(), Some(libc::ENAMETOOLONG), "{e}");
    }
}

/// Polls `fut` once, then lets the driver run `turns` times, then drops it.
async fn poll_then_drop<F: Future>(fut: F, turns: usize) {
    let mut fut = pin!(fut);
    let _ = poll_fn(|cx| Poll::Ready(fut.as_mut().poll(cx).is_pending())).await;
    for _ in 0..turns {
        yield_now().await;
    }
}

/// Drives the runtime until every dropped operation's resources are freed (bounded).
async fn drained(io: &Io) {
    for _ in 0..1_000_000 {
        if io.live_ops() == 0 {
            return;
        }
        yield_now().await;
    }
    panic!("{} operations never completed", io.live_ops());
}

#[test]
fn reads_dropped_mid_chain_free_their_direct_slots() {
    // More cancellations than a ring has direct slots (256): a slot that a cancelled chain kept
    // would leave later reads unchained (counted by their statx), and a chain whose cancel was
    // lost would never complete (counted by live_ops).
    const ROUNDS: usize = 600;
    let dir = tempfile::tempdir().unwrap();
    let small = dir.path().join("small");
    std::fs::write(&small, pattern(3000)).unwrap();
    let fifo = dir.path().join("fifo");
    let c = std::ffi::CString::new(fifo.as_os_str().as_encoded_bytes()).unwrap();
    // SAFETY: a valid NUL-terminated path.
    assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
    // Held open for reading and writing: the read's open succeeds at once and its reads wait for
    // data that never comes, so each drop lands mid-chain.
    let _held = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(&fifo)
        .unwrap();
    for io in common::backends() {
        let chained = common::chains(&io, dir.path());
        // The blocking pool cannot cancel a read that waits on a pipe: it gets regular files,
        // dropped before or after their job ran.
        let target = if io.backend() == pagegen_io::Backend::Uring {
            &fifo
        } else {
            &small
        };
        io.block_on(async {
            for i in 0..ROUNDS {
                poll_then_drop(fs::read(target), i % 4).await;
                if i % 100 == 99 {
                    drained(&io).await;
                }
            }
            drained(&io).await;
        });
        for _ in 0..ROUNDS {
            let (got, s) = common::read_profiled(&io, &small);
            assert_eq!(got, pattern(3000));
            assert_eq!(
                s.ops[IoOpKind::Stat as usize] == 0,
                chained,
                "{}",
                io.backend()
            );
        }
        // A pool thread drops its clone of an op just after completing it.
        io.block_on(drained(&io));
    }
}
