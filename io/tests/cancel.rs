//! Cancellation: futures dropped on other threads than the one that submitted their operation,
//! many times. An operation's resources (buffer, file) must stay alive until the kernel's
//! completion — counted by `Io::live_ops` — and then be freed.

mod common;

use std::future::Future;
use std::io::Write;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc};
use std::task::{Context, Poll, Wake, Waker};
use std::time::Duration;

use pagegen_core::{DriverFactory, WorkerInfo};
use pagegen_io::fs::File;
use pagegen_io::{Backend, Io};

use common::{counting_waker, poll_once, BoxFut};

fn worker(name: &str) -> WorkerInfo {
    WorkerInfo {
        index: 0,
        pool: None,
        name: name.into(),
    }
}

/// Waits (driving `driver`) until every op's resources are freed; fails after a generous bound.
fn drain(io: &Io, driver: &mut Box<dyn pagegen_core::Driver>) {
    for _ in 0..100_000 {
        if io.live_ops() == 0 {
            return;
        }
        driver.poll_nonblocking();
        if io.live_ops() == 0 {
            return;
        }
        match io.backend() {
            Backend::Uring => driver.park(Some(Duration::from_millis(10))),
            Backend::Blocking => std::thread::yield_now(),
        }
    }
    panic!("{} operations never completed", io.live_ops());
}

#[test]
fn in_flight_ops_dropped_elsewhere_keep_their_buffers_until_completion() {
    const ROUNDS: usize = 100;
    const K: usize = 8;
    for io in common::backends() {
        let (to_b, from_a) = mpsc::channel::<Vec<BoxFut<()>>>();
        let (ack, acked) = mpsc::channel::<usize>();
        let io_b = io.clone();
        // Thread B: drops what A submitted, then reports how many ops still hold their resources.
        let b = std::thread::spawn(move || {
            for batch in from_a {
                let (_, waker) = counting_waker();
                let mut batch = batch;
                // Poll some on this thread first: tasks migrate.
                for f in batch.iter_mut().step_by(2) {
                    assert!(poll_once(f.as_mut(), &waker).is_pending());
                }
                drop(batch);
                ack.send(io_b.live_ops()).unwrap();
            }
        });
        let _enter = io.enter();
        let mut driver = io.worker_driver(&worker("a")).unwrap();
        let (_, waker) = counting_waker();
        for _ in 0..ROUNDS {
            // A fresh, empty pipe per round: no read can complete without data, EOF or a cancel.
            let (r, w) = std::io::pipe().unwrap();
            let file = Arc::new(File::from_std(std::fs::File::from(
                std::os::fd::OwnedFd::from(r),
            )));
            let mut batch: Vec<BoxFut<()>> = (0..K)
                .map(|_| {
                    let f = Arc::clone(&file);
                    Box::pin(async move {
                        let _ = f.read_at(Vec::with_capacity(4096), 0).await;
                    }) as BoxFut<()>
                })
                .collect();
            for f in &mut batch {
                assert!(
                    poll_once(f.as_mut(), &waker).is_pending(),
                    "the pipe is empty"
                );
            }
            driver.poll_nonblocking(); // Into the kernel.
            to_b.send(batch).unwrap();
            let live = acked.recv().unwrap();
            match io.backend() {
                Backend::Uring => {
                    // A is not reaping: every op is in the kernel and must still own its buffer.
                    assert_eq!(
                        live, K,
                        "dropped ops keep their buffers while the kernel has them"
                    );
                    // Cancels arrive through A's inbox; the writer is still open, so only the
                    // cancels can complete the reads.
                    drain(&io, &mut driver);
                    drop(w);
                }
                Backend::Blocking => {
                    // A pool thread that had not started a job skips it (it never reached the
                    // kernel); the others sit in read(2) until EOF.
                    assert!(live <= K);
                    drop(w);
                    drain(&io, &mut driver);
                }
            }
            assert_eq!(Arc::strong_count(&file), 1, "no op holds the file any more");
        }
        drop(to_b);
        b.join().unwrap();
        drop(driver);
    }
}

#[test]
fn a_cancelled_read_consumes_nothing() {
    // After cancelling reads that were waiting on a pipe, the next byte written goes to the next
    // reader: the cancelled ones are gone from the kernel.
    let Ok(io) = Io::new(pagegen_io::BackendChoice::Uring) else {
        eprintln!("io_uring unavailable: cancellation of in-kernel reads has nothing to test");
        return;
    };
    let (r, mut w) = std::io::pipe().unwrap();
    let _enter = io.enter();
    let mut driver = io.worker_driver(&worker("a")).unwrap();
    let file = Arc::new(File::from_std(std::fs::File::from(
        std::os::fd::OwnedFd::from(r),
    )));
    let (_, waker) = counting_waker();
    for _ in 0..50 {
        let mut f = Box::pin(file.read_at(Vec::with_capacity(1), 0));
        assert!(poll_once(f.as_mut(), &waker).is_pending());
        driver.poll_nonblocking();
        std::thread::scope(|s| {
            s.spawn(move || drop(f));
        });
        drain(&io, &mut driver);
    }
    w.write_all(b"Z").unwrap();
    let got = io.block_on(file.read_at(Vec::with_capacity(1), 0));
    assert_eq!(got.1, b"Z");
}

struct Unparker(std::thread::Thread);
impl Wake for Unparker {
    fn wake(self: Arc<Self>) {
        self.0.unpark();
    }
}

fn block_on_foreign<F: Future + ?Sized>(mut fut: Pin<&mut F>) -> F::Output {
    let waker = Waker::from(Arc::new(Unparker(std::thread::current())));
    let mut cx = Context::from_waker(&waker);
    loop {
        if let Poll::Ready(v) = fut.as_mut().poll(&mut cx) {
            return v;
        }
        std::thread::park();
    }
}

#[test]
fn racing_drops_and_completions_across_threads() {
    const N: usize = 3000;
    let dir = tempfile::tempdir().unwrap();
    let data: Vec<u8> = (0..65536u32).map(|i| (i % 253) as u8).collect();
    for io in common::backends() {
        let p = dir.path().join(format!("race-{}", io.backend()));
        std::fs::write(&p, &data).unwrap();
        let _enter = io.enter();
        let mut driver = io.worker_driver(&worker("a")).unwrap();
        let file = Arc::new(io.block_on(File::open(&p)).unwrap());
        // Bounded: a granted slot belongs to a future until it is polled, so an unbounded pile of
        // unpolled futures would hold every device slot (as unpolled tasks would in any runtime).
        let (to_b, from_a) = mpsc::sync_channel::<(usize, BoxFut<(usize, Vec<u8>)>)>(64);
        let done = Arc::new(AtomicBool::new(false));
        let done_b = Arc::clone(&done);
        let expect = data.clone();
        let b = std::thread::spawn(move || {
            let mut completed = 0;
            for (i, mut f) in from_a {
                match i % 3 {
                    0 => drop(f),
                    1 => {
                        let (_, waker) = counting_waker();
                        let _ = poll_once(f.as_mut(), &waker);
                        drop(f);
                    }
                    _ => {
                        let (off, got) = block_on_foreign(f.as_mut());
                        assert_eq!(got, expect[off..off + got.len()]);
                        assert_eq!(got.len(), 16384.min(expect.len() - off));
                        completed += 1;
                    }
                }
            }
            done_b.store(true, Ordering::Release);
            completed
        });
        let (_, waker) = counting_waker();
        for i in 0..N {
            let f = Arc::clone(&file);
            let off = (i * 4096) % 65536;
            let mut fut: BoxFut<(usize, Vec<u8>)> = Box::pin(async move {
                let (r, buf) = f.read_at(Vec::with_capacity(16384), off as u64).await;
                r.unwrap();
                (off, buf)
            });
            if let Poll::Ready(v) = poll_once(fut.as_mut(), &waker) {
                // Completed inline (a fast pool thread): hand over the result instead.
                fut = Box::pin(async move { v });
            }
            let mut item = (i, fut);
            loop {
                // Keep reaping while B is busy: B may be waiting for a completion on A's ring.
                driver.poll_nonblocking();
                match to_b.try_send(item) {
                    Ok(()) => break,
                    Err(mpsc::TrySendError::Full(back)) => {
                        item = back;
                        driver.park(Some(Duration::from_millis(1)));
                    }
                    Err(e) => panic!("B is gone: {e}"),
                }
            }
        }
        drop(to_b);
        while !done.load(Ordering::Acquire) {
            driver.poll_nonblocking();
            driver.park(Some(Duration::from_millis(1)));
        }
        let completed = b.join().unwrap();
        assert_eq!(completed, N / 3);
        drain(&io, &mut driver);
        assert_eq!(io.live_ops(), 0, "{}: every buffer is freed", io.backend());
        drop(driver);
    }
}

#[test]
fn dropping_a_driver_waits_for_the_kernel() {
    // A ring torn down with reads in flight cancels them and waits for their completions before
    // freeing anything.
    for io in common::backends() {
        let (r, _w) = std::io::pipe().unwrap();
        let _enter = io.enter();
        let mut driver = io.worker_driver(&worker("a")).unwrap();
        let file = Arc::new(File::from_std(std::fs::File::from(
            std::os::fd::OwnedFd::from(r),
        )));
        let (_, waker) = counting_waker();
        let mut futs: Vec<_> = (0..4)
            .map(|_| {
                let f = Arc::clone(&file);
                Box::pin(async move { f.read_at(Vec::with_capacity(64), 0).await.0 })
            })
            .collect();
        for f in &mut futs {
            assert!(poll_once(f.as_mut(), &waker).is_pending());
        }
        driver.poll_nonblocking();
        if io.backend() == Backend::Blocking {
            // Nothing to tear down: pool threads own blocking calls; finish them with data.
            drop(_w);
            for f in &mut futs {
                let r = block_on_foreign(f.as_mut());
                assert_eq!(r.unwrap(), 0, "EOF once the writer is gone");
            }
            continue;
        }
        drop(driver);
        assert_eq!(io.live_ops(), 4, "completed ops wait for their futures");
        for f in &mut futs {
            let r = block_on_foreign(f.as_mut());
            assert!(r.is_err(), "a torn-down ring cancels: {r:?}");
        }
        drop(futs);
        assert_eq!(io.live_ops(), 0);
    }
}
