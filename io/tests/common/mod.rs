//! Helpers shared by the integration tests: the backends to run on, and poll-at-a-time tools.
#![allow(dead_code)]

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll, Wake, Waker};

use pagegen_io::{Backend, BackendChoice, Io, SocketPath};

/// Every backend that works here: io_uring when the probe passes (else the test covers the
/// fallback only, and says so), and always the blocking pool.
pub fn backends() -> Vec<Io> {
    let mut v = Vec::new();
    match Io::new(BackendChoice::Uring) {
        Ok(io) => v.push(io),
        Err(e) => eprintln!("io_uring unavailable here ({e}); testing the blocking backend only"),
    }
    v.push(Io::new(BackendChoice::Blocking).expect("the blocking backend always exists"));
    assert_eq!(v.last().map(Io::backend), Some(Backend::Blocking));
    v
}

/// Every way sockets can run here: with io_uring (when the probe passes) on the ring and on
/// readiness (files on the ring), and on the blocking backend (readiness).
pub fn socket_runtimes() -> Vec<Io> {
    let mut v: Vec<Io> = [SocketPath::Ring, SocketPath::Readiness]
        .into_iter()
        .map_while(|path| {
            Io::with_sockets(BackendChoice::Uring, path)
                .map_err(|e| {
                    eprintln!("io_uring unavailable here ({e}); testing the blocking backend only")
                })
                .ok()
        })
        .collect();
    v.push(Io::new(BackendChoice::Blocking).expect("the blocking backend always exists"));
    v
}

/// A waker that counts its wakes.
#[derive(Default)]
pub struct CountWaker(pub AtomicUsize);

impl Wake for CountWaker {
    fn wake(self: Arc<Self>) {
        self.0.fetch_add(1, Ordering::SeqCst);
    }
    fn wake_by_ref(self: &Arc<Self>) {
        self.0.fetch_add(1, Ordering::SeqCst);
    }
}

pub fn counting_waker() -> (Arc<CountWaker>, Waker) {
    let c = Arc::new(CountWaker::default());
    (Arc::clone(&c), Waker::from(c))
}

/// Polls once.
pub fn poll_once<F: Future + ?Sized>(fut: Pin<&mut F>, waker: &Waker) -> Poll<F::Output> {
    fut.poll(&mut Context::from_waker(waker))
}

pub type BoxFut<T> = Pin<Box<dyn Future<Output = T> + Send>>;

/// The ops `fs::read(path)` recorded in a fresh request's account.
pub fn read_profiled(io: &Io, path: &std::path::Path) -> (Vec<u8>, pagegen_core::IoUsage) {
    let ctx = pagegen_core::RequestCtx::new(
        pagegen_core::RequestId(7),
        pagegen_core::Grant::unlimited(pagegen_core::ClassId::DEFAULT),
        0,
    );
    let got = {
        let _g = pagegen_core::RequestCtx::enter(&ctx);
        io.block_on(pagegen_io::fs::read(path)).unwrap()
    };
    (got, ctx.io.snapshot())
}

/// Whether this runtime reads files through the chain (io_uring with direct descriptors, or the
/// blocking pool's same steps: no `statx`), probed by reading a small file, not assumed.
pub fn chains(io: &Io, dir: &std::path::Path) -> bool {
    let p = dir.join("probe-chain");
    std::fs::write(&p, b"probe").unwrap();
    let (got, s) = read_profiled(io, &p);
    assert_eq!(got, b"probe");
    let chained = s.ops[pagegen_core::IoOpKind::Stat as usize] == 0;
    if io.backend() == pagegen_io::Backend::Uring && !chained {
        eprintln!("this kernel cannot chain fs::read (no direct descriptors); testing unchained");
    }
    chained
}

/// The process's descriptor limit (`RLIMIT_NOFILE`).
pub fn nofile() -> libc::rlimit {
    let mut r = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: a pointer to a live local rlimit.
    assert_eq!(unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut r) }, 0);
    r
}

/// Sets the process's descriptor limit (`RLIMIT_NOFILE`).
pub fn set_nofile(r: libc::rlimit) {
    // SAFETY: a pointer to a live local rlimit.
    assert_eq!(unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &r) }, 0);
}
