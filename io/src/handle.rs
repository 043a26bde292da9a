//! [`Io`]: one I/O runtime — a backend, its per-class limits, and the threads it may need.
//!
//! Which `Io` an `fs` call uses: the thread's current one — set by [`Io::enter`], or by
//! [`worker_driver`](pagegen_core::DriverFactory::worker_driver) on an executor's worker — else the
//! process-wide [`Io::global`].
//!
//! Where an operation goes (uring backend): to the calling thread's ring when the thread has one
//! for this `Io` (an executor worker, or a thread inside [`Io::block_on`]); otherwise to the `Io`'s
//! **reaper**, a thread that owns its own ring and serves everybody else (tokio tasks, plain threads)
//! through its inbox. The reaper costs one cross-thread wake per batch; workers pay none.

use std::cell::RefCell;
use std::collections::HashMap;
use std::fmt;
use std::future::Future;
use std::io;
use std::pin::pin;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::task::{Context, Poll, Wake, Waker};
use std::thread::JoinHandle;

use pagegen_core::{Driver, DriverFactory, PoolId, WorkerInfo};

use crate::backend::{resolve, Backend, BackendChoice, SocketPath};
use crate::classes::{IoClasses, DEFAULT_DEVICE_DEPTH};
use crate::driver::IoDriver;
use crate::error::IoError;
use crate::op::{self, Done, Op, Res};
use crate::pool::Pool;
use crate::ready::{self, PoolSets, ReadySet};
use crate::ring::{self, Inbox, LocalRing};

static NEXT_ID: AtomicU64 = AtomicU64::new(1);

struct Reaper {
    inbox: Arc<Inbox>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

/// The blocking backend's counterpart of the reaper: a thread waiting in a readiness set for the
/// sockets of threads that have none (ready.rs).
struct ReadyThread {
    set: Arc<ReadySet>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

struct Shared {
    id: u64,
    backend: Backend,
    sockets: SocketPath,
    classes: Arc<IoClasses>,
    pool: Pool,
    reaper: OnceLock<io::Result<Reaper>>,
    ready: OnceLock<io::Result<ReadyThread>>,
    live: Arc<AtomicUsize>,
    /// Each worker pool's readiness sets ([`ReadySet::place`]).
    pools: Mutex<HashMap<PoolId, Arc<PoolSets>>>,
}

impl Drop for Shared {
    fn drop(&mut self) {
        if let Some(Ok(r)) = self.ready.get_mut() {
            r.stop.store(true, Ordering::Release);
            r.set.wake();
            if let Some(t) = r.thread.take() {
                let _ = t.join();
            }
        }
        if let Some(Ok(r)) = self.reaper.get_mut() {
            r.stop.store(true, Ordering::Release);
            r.inbox.wake();
            if let Some(t) = r.thread.take() {
                let _ = t.join();
            }
        }
    }
}

/// An I/O runtime. Clones share it.
#[derive(Clone)]
pub struct Io {
    shared: Arc<Shared>,
}

impl fmt::Debug for Io {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Io")
            .field("id", &self.shared.id)
            .field("backend", &self.shared.backend)
            .finish_non_exhaustive()
    }
}

thread_local! {
    static CURRENT: RefCell<Option<Io>> = const { RefCell::new(None) };
}

static GLOBAL: OnceLock<Io> = OnceLock::new();

impl Io {
    /// A runtime on the chosen backend with default limits (see [`DEFAULT_DEVICE_DEPTH`]).
    /// Sockets take [`SocketPath::for_backend`] (`PAGEGEN_IO_SOCKETS`).
    pub fn new(choice: BackendChoice) -> Result<Io, IoError> {
        let backend = resolve(choice)?;
        Ok(Io::build(backend, SocketPath::for_backend(backend)))
    }

    /// As [`new`](Self::new), with sockets on `sockets` (the blocking backend has only
    /// [`SocketPath::Readiness`]: asking it for the ring is an error).
    pub fn with_sockets(choice: BackendChoice, sockets: SocketPath) -> Result<Io, IoError> {
        let backend = resolve(choice)?;
        if backend == Backend::Blocking && sockets == SocketPath::Ring {
            return Err(IoError::UringUnavailable(io::Error::new(
                io::ErrorKind::Unsupported,
                "sockets on the ring need the io_uring backend",
            )));
        }
        Ok(Io::build(backend, sockets))
    }

    fn build(backend: Backend, sockets: SocketPath) -> Io {
        Io {
            shared: Arc::new(Shared {
                id: NEXT_ID.fetch_add(1, Ordering::Relaxed),
                backend,
                sockets,
                classes: IoClasses::new(DEFAULT_DEVICE_DEPTH),
                pool: Pool::default(),
                reaper: OnceLock::new(),
                ready: OnceLock::new(),
                live: Arc::new(AtomicUsize::new(0)),
                pools: Mutex::default(),
            }),
        }
    }

    /// The process-wide runtime ([`BackendChoice::Auto`]), created on first use.
    pub fn global() -> &'static Io {
        GLOBAL.get_or_init(|| Io::new(BackendChoice::Auto).expect("Auto always resolves"))
    }

    /// The thread's current runtime, else the global one.
    pub fn current() -> Io {
        CURRENT
            .try_with(|c| c.borrow().clone())
            .ok()
            .flatten()
            .unwrap_or_else(|| Io::global().clone())
    }

    /// Makes this runtime the thread's current one until the guard drops.
    pub fn enter(&self) -> IoGuard {
        let prev = CURRENT.with(|c| c.replace(Some(self.clone())));
        IoGuard { prev }
    }

    /// The backend.
    pub fn backend(&self) -> Backend {
        self.shared.backend
    }

    /// How this runtime's sockets do their I/O.
    pub fn socket_path(&self) -> SocketPath {
        self.shared.sockets
    }

    /// Per-class limits. Subscribe them to the class registry to set classes up on registration.
    pub fn classes(&self) -> &Arc<IoClasses> {
        &self.shared.classes
    }

    /// Operations whose resources (buffers, paths) are still alive: submitted and not yet completed,
    /// or completed and not yet collected by their future. A future dropped mid-operation leaves its
    /// op counted here until the kernel's completion arrives (op.rs protocol).
    pub fn live_ops(&self) -> usize {
        self.shared.live.load(Ordering::Acquire)
    }

    /// Runs one operation on this runtime: its class limits, its live-op count and its backend
    /// ([`op::run_retrying`], which resubmits on `EINTR` and `EAGAIN`).
    pub(crate) async fn run_op(&self, res: Res, bytes: u64) -> Done {
        let s = &self.shared;
        op::run_retrying(&s.classes, &s.live, |op| self.submit(op), res, bytes).await
    }

    pub(crate) fn id(&self) -> u64 {
        self.shared.id
    }

    /// Hands an op to the backend (op.rs protocol, step 1).
    pub(crate) fn submit(&self, op: Arc<Op>) {
        match self.shared.backend {
            Backend::Blocking => self.shared.pool.submit(op),
            Backend::Uring => {
                let mut op = Some(op);
                ring::with_local(self.id(), |r| r.submit(op.take().expect("taken once")));
                if let Some(op) = op {
                    match self.reaper() {
                        Ok(inbox) => inbox.submit(op),
                        Err(e) => {
                            tracing::warn!("pagegen-io: reaper ring unavailable ({e}); running one op on the blocking pool");
                            self.shared.pool.submit(op);
                        }
                    }
                }
            }
        }
    }

    /// Closes a file without waiting, through this thread's ring when it has one.
    pub(crate) fn close(&self, file: std::fs::File) {
        let mut file = Some(file);
        if self.shared.backend == Backend::Uring {
            ring::with_local(self.id(), |r| r.close(file.take().expect("taken once")));
        }
        drop(file);
    }

    /// The runtime's count of live operations (op.rs protocol), for operations started without
    /// [`run_op`](Self::run_op).
    pub(crate) fn live(&self) -> &Arc<AtomicUsize> {
        &self.shared.live
    }

    /// The readiness set a socket polled on this thread registers in (sockets on the readiness
    /// path): the thread's own (a worker's, or inside [`block_on`](Self::block_on)) or, once that
    /// holds its share, its pool's emptiest ([`ReadySet::place`]); else the runtime's readiness
    /// thread's, started on first use.
    pub(crate) fn ready_set(&self) -> io::Result<Arc<ReadySet>> {
        if let Some(set) = ready::local(self.id()) {
            return Ok(set.place());
        }
        let r = self.shared.ready.get_or_init(|| {
            let set = ReadySet::new(self.id())?;
            let stop = Arc::new(AtomicBool::new(false));
            let (set2, stop2) = (Arc::clone(&set), Arc::clone(&stop));
            let thread = std::thread::Builder::new()
                .name("pagegen-io-ready".into())
                .spawn(move || {
                    while !stop2.load(Ordering::Acquire) {
                        set2.wait(None);
                    }
                })?;
            Ok(ReadyThread {
                set,
                stop,
                thread: Some(thread),
            })
        });
        match r {
            Ok(r) => Ok(Arc::clone(&r.set)),
            Err(e) => Err(io::Error::new(e.kind(), e.to_string())),
        }
    }

    fn reaper(&self) -> io::Result<&Arc<Inbox>> {
        let r = self.shared.reaper.get_or_init(|| {
            let ring = LocalRing::new(self.id())?;
            let inbox = Arc::clone(ring.inbox());
            let stop = Arc::new(AtomicBool::new(false));
            let stop2 = Arc::clone(&stop);
            let thread = std::thread::Builder::new()
                .name("pagegen-io-reaper".into())
                .spawn(move || reaper_loop(ring, stop2))?;
            Ok(Reaper {
                inbox,
                stop,
                thread: Some(thread),
            })
        });
        match r {
            Ok(r) => Ok(&r.inbox),
            Err(e) => Err(io::Error::new(e.kind(), e.to_string())),
        }
    }

    /// Runs `fut` to completion on this thread, with this runtime current and a pagegen driver
    /// installed for the duration (exactly what an executor worker does: poll, reap, park).
    pub fn block_on<F: Future>(&self, fut: F) -> F::Output {
        let _enter = self.enter();
        let mut driver = self.driver_for_this_thread();
        let flag = Arc::new(Flag {
            woken: AtomicBool::new(true),
            unpark: driver.unparker(),
            owner: std::thread::current().id(),
        });
        let waker = Waker::from(Arc::clone(&flag));
        let mut cx = Context::from_waker(&waker);
        let mut fut = pin!(fut);
        loop {
            if flag.woken.swap(false, Ordering::AcqRel) {
                if let Poll::Ready(v) = fut.as_mut().poll(&mut cx) {
                    return v;
                }
            }
            driver.poll_nonblocking();
            if !flag.woken.load(Ordering::Acquire) {
                driver.park(None);
            }
        }
    }

    /// A driver for the calling thread (its own ring on the uring backend).
    pub(crate) fn driver_for_this_thread(&self) -> Box<dyn Driver> {
        match IoDriver::new(self, None) {
            Ok(d) => Box::new(d),
            Err(e) => {
                tracing::warn!("pagegen-io: no ring for this thread ({e}); parking without one");
                Box::new(IoDriver::parker(self))
            }
        }
    }
}

struct Flag {
    woken: AtomicBool,
    unpark: Arc<dyn pagegen_core::Unpark>,
    /// Wakes on the owning thread (completions reaped by its own driver) need no unpark: the
    /// thread is awake and checks the flag before parking. Saves an eventfd write per completion.
    owner: std::thread::ThreadId,
}

impl Wake for Flag {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }
    fn wake_by_ref(self: &Arc<Self>) {
        if !self.woken.swap(true, Ordering::AcqRel) && std::thread::current().id() != self.owner {
            self.unpark.unpark();
        }
    }
}

fn reaper_loop(mut ring: LocalRing, stop: Arc<AtomicBool>) {
    let mut wakers = Vec::new();
    while !stop.load(Ordering::Acquire) {
        ring.park(None);
        std::mem::swap(&mut wakers, &mut ring.wakers);
        for w in wakers.drain(..) {
            w.wake();
        }
    }
}

impl DriverFactory for Io {
    /// Installs this thread's ring (uring backend) and makes this runtime the thread's current one.
    fn worker_driver(&self, worker: &WorkerInfo) -> io::Result<Box<dyn Driver>> {
        CURRENT.with(|c| *c.borrow_mut() = Some(self.clone()));
        let pool = worker.pool.map(|p| {
            let mut pools = self.shared.pools.lock().unwrap_or_else(|e| e.into_inner());
            Arc::clone(pools.entry(p).or_default())
        });
        Ok(Box::new(IoDriver::new(self, pool)?))
    }
}

/// Restores the previous current runtime when dropped.
#[derive(Debug)]
#[must_use = "the runtime is current only while the guard lives"]
pub struct IoGuard {
    prev: Option<Io>,
}

impl Drop for IoGuard {
    fn drop(&mut self) {
        let prev = self.prev.take();
        let _ = CURRENT.try_with(|c| *c.borrow_mut() = prev);
    }
}
