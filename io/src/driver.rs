//! pagegen-io's [`Driver`]: what an executor worker (or [`Io::block_on`](crate::Io::block_on)) calls
//! to reap completions and to sleep.
//!
//! On the uring backend the driver owns the thread's ring through the thread-local of `ring.rs`:
//! created and installed on the worker thread by `worker_driver`, reaped by that worker only, torn
//! down (cancel everything, wait for every completion) when the driver is dropped on that thread or
//! when the thread exits. [`Unpark`] is the ring's inbox wake (an eventfd write), skipped when it is
//! called on the ring's own thread (which is not parked then). With sockets on the readiness path
//! (the default; `PAGEGEN_IO_SOCKETS=ring` puts them on the ring) a worker's driver also owns a
//! readiness set for its sockets: the ring watches the set's epoll fd with one poll entry (so a
//! park ends when a socket has an event), and the driver harvests the set after each reap and
//! each park.
//!
//! On the blocking backend completions arrive from pool threads, which wake their tasks directly;
//! the driver owns the thread's readiness set (`ready.rs`: the epoll instance its sockets wait in),
//! checks it in `poll_nonblocking` and sleeps in it in `park`; its eventfd is the unpark token, so
//! `unpark` before `park` is not lost. Where no set can be made, it parks on a token (mutex +
//! condvar).

use std::sync::{Arc, Condvar, Mutex};
use std::task::Waker;
use std::thread::ThreadId;
use std::time::{Duration, Instant};
use std::{fmt, io};

use pagegen_core::{Driver, Unpark};

use crate::backend::{Backend, SocketPath};
use crate::handle::Io;
use crate::ready::{self, PoolSets, ReadySet};
use crate::ring::{self, Inbox, LocalRing};

/// A token parker for threads without a ring.
#[derive(Debug, Default)]
pub(crate) struct Parker {
    token: Mutex<bool>,
    cv: Condvar,
}

impl Parker {
    fn park(&self, timeout: Option<Duration>) {
        let deadline = timeout.map(|t| Instant::now() + t);
        let mut tok = self.token.lock().unwrap_or_else(|e| e.into_inner());
        while !*tok {
            match deadline {
                None => tok = self.cv.wait(tok).unwrap_or_else(|e| e.into_inner()),
                Some(d) => {
                    let now = Instant::now();
                    if now >= d {
                        break;
                    }
                    tok = self
                        .cv
                        .wait_timeout(tok, d - now)
                        .unwrap_or_else(|e| e.into_inner())
                        .0;
                }
            }
        }
        *tok = false;
    }
}

impl Unpark for Parker {
    fn unpark(&self) {
        *self.token.lock().unwrap_or_else(|e| e.into_inner()) = true;
        self.cv.notify_one();
    }
}

enum Kind {
    Ring {
        inbox: Arc<Inbox>,
        /// Whether this driver installed the ring (and so tears it down), and the ring it displaced.
        owns: bool,
        displaced: Option<Box<LocalRing>>,
        /// Sockets on the readiness path: the thread's readiness set, which the ring watches.
        sockets: Option<ThreadSet>,
    },
    /// The blocking backend: the thread's readiness set is also where it sleeps.
    Ready(ThreadSet),
    Park(Arc<Parker>),
}

/// A readiness set installed as its thread's (ready.rs thread-local) for the driver's life, so
/// sockets polled on the thread register in it; dropped on that thread, it restores the set it
/// displaced.
struct ThreadSet {
    set: Arc<ReadySet>,
    displaced: Option<Arc<ReadySet>>,
    thread: ThreadId,
}

impl ThreadSet {
    /// Makes and installs a set for `io` on the calling thread, in `pool`'s sets when the thread
    /// is a pool's worker; `None` (said once in the log) if the kernel refuses one, and the
    /// thread's sockets then use the runtime's readiness thread.
    fn install(io: &Io, pool: Option<Arc<PoolSets>>) -> Option<ThreadSet> {
        match ReadySet::new(io.id()) {
            Ok(set) => {
                if let Some(p) = pool {
                    p.join(&set);
                }
                Some(ThreadSet {
                    displaced: ready::install(Arc::clone(&set)),
                    thread: std::thread::current().id(),
                    set,
                })
            }
            Err(e) => {
                tracing::warn!("pagegen-io: no readiness set for this thread ({e}); sockets on it wait in the runtime's readiness thread");
                None
            }
        }
    }

    /// Wakes the sockets whose readiness changed, without waiting; no system call while none is
    /// registered (file-only services pay nothing).
    fn harvest(&self) -> usize {
        if self.set.registered() == 0 {
            return 0;
        }
        self.set.wait(Some(Duration::ZERO))
    }
}

impl Drop for ThreadSet {
    fn drop(&mut self) {
        // The worker is gone: its pool's full sets stop placing sockets in this one.
        self.set.leave_pool();
        if self.thread == std::thread::current().id() {
            ready::uninstall();
            if let Some(d) = self.displaced.take() {
                ready::install(d);
            }
        }
    }
}

/// The executor's wake for a worker parked in its ring: an eventfd write on the ring's inbox,
/// skipped when the wake comes from the ring's own thread. That thread is running, not parked in
/// the ring (a wake issued while it reaps inside `park` happens after the kernel wait returned),
/// and the executor re-checks its queues when `park` returns; the write would only make the
/// *next* park return at once for nothing.
struct RingUnpark {
    inbox: Arc<Inbox>,
    owner: ThreadId,
}

impl Unpark for RingUnpark {
    fn unpark(&self) {
        if std::thread::current().id() != self.owner {
            self.inbox.wake();
        }
    }
}

/// The same wake for a worker parked in its readiness set: an eventfd write, skipped on the set's
/// own thread for the reason [`RingUnpark`] gives.
struct ReadyUnpark {
    set: Arc<ReadySet>,
    owner: ThreadId,
}

impl Unpark for ReadyUnpark {
    fn unpark(&self) {
        if std::thread::current().id() != self.owner {
            self.set.wake();
        }
    }
}

/// One thread's I/O driver. See the module docs.
pub struct IoDriver {
    io: Io,
    kind: Kind,
    thread: ThreadId,
    spare: Vec<Waker>,
}

impl fmt::Debug for IoDriver {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("IoDriver")
            .field("io", &self.io)
            .field("ring", &matches!(self.kind, Kind::Ring { .. }))
            .finish_non_exhaustive()
    }
}

impl IoDriver {
    /// A driver for the calling thread: installs a ring on the uring backend (or reuses the one this
    /// runtime already installed here).
    pub(crate) fn new(io: &Io, pool: Option<Arc<PoolSets>>) -> io::Result<IoDriver> {
        let kind = match io.backend() {
            Backend::Blocking => match ThreadSet::install(io, pool) {
                Some(set) => Kind::Ready(set),
                None => Kind::Park(Arc::default()),
            },
            Backend::Uring => match ring::with_local(io.id(), |r| Arc::clone(r.inbox())) {
                // A ring this runtime installed here before (a `block_on` thread): its sockets on
                // the readiness path use the readiness thread.
                Some(inbox) => Kind::Ring {
                    inbox,
                    owns: false,
                    displaced: None,
                    sockets: None,
                },
                None => {
                    let mut r = LocalRing::new(io.id())?;
                    let sockets = match io.socket_path() {
                        SocketPath::Ring => None,
                        SocketPath::Readiness => ThreadSet::install(io, pool),
                    };
                    if let Some(s) = &sockets {
                        r.watch(Arc::clone(&s.set));
                    }
                    let inbox = Arc::clone(r.inbox());
                    let displaced = ring::install(r).map(Box::new);
                    Kind::Ring {
                        inbox,
                        owns: true,
                        displaced,
                        sockets,
                    }
                }
            },
        };
        Ok(IoDriver {
            io: io.clone(),
            kind,
            thread: std::thread::current().id(),
            spare: Vec::new(),
        })
    }

    /// A driver that only parks (no ring).
    pub(crate) fn parker(io: &Io) -> IoDriver {
        IoDriver {
            io: io.clone(),
            kind: Kind::Park(Arc::default()),
            thread: std::thread::current().id(),
            spare: Vec::new(),
        }
    }
}

impl IoDriver {
    /// Runs `f` on the thread's ring, then wakes the tasks it completed (outside the ring's
    /// borrow, through `spare`, a buffer kept between calls).
    fn run_ring(&mut self, f: impl FnOnce(&mut LocalRing) -> usize) -> usize {
        debug_assert_eq!(
            self.thread,
            std::thread::current().id(),
            "a Driver is used on its own worker thread only"
        );
        let spare = &mut self.spare;
        let n = ring::with_local(self.io.id(), |r| {
            let n = f(r);
            std::mem::swap(&mut r.wakers, spare);
            n
        })
        .unwrap_or(0);
        for w in spare.drain(..) {
            w.wake();
        }
        n
    }

    /// Harvests a ring's readiness set, when its sockets are on the readiness path.
    fn harvest_ring_sockets(&self) -> usize {
        match &self.kind {
            Kind::Ring {
                sockets: Some(s), ..
            } => s.harvest(),
            _ => 0,
        }
    }
}

impl Driver for IoDriver {
    fn poll_nonblocking(&mut self) -> usize {
        match &self.kind {
            Kind::Ring { .. } => self.run_ring(LocalRing::poll) + self.harvest_ring_sockets(),
            Kind::Ready(s) => s.harvest(),
            Kind::Park(_) => 0,
        }
    }

    fn park(&mut self, timeout: Option<Duration>) {
        match &self.kind {
            Kind::Ring { .. } => {
                // With sockets on readiness, the ring's watch on their set ends the park when one
                // has an event; the harvest then wakes its task.
                self.run_ring(|r| r.park(timeout));
                self.harvest_ring_sockets();
            }
            Kind::Ready(s) => {
                s.set.wait(timeout);
            }
            Kind::Park(p) => p.park(timeout),
        }
    }

    fn unparker(&self) -> Arc<dyn Unpark> {
        match &self.kind {
            Kind::Ring { inbox, .. } => Arc::new(RingUnpark {
                inbox: Arc::clone(inbox),
                owner: self.thread,
            }),
            Kind::Ready(s) => Arc::new(ReadyUnpark {
                set: Arc::clone(&s.set),
                owner: self.thread,
            }),
            Kind::Park(p) => Arc::clone(p) as Arc<dyn Unpark>,
        }
    }
}

impl Drop for IoDriver {
    fn drop(&mut self) {
        if let Kind::Ring {
            owns: true,
            displaced,
            ..
        } = &mut self.kind
        {
            if self.thread == std::thread::current().id() {
                // Dropping the ring cancels and waits for everything in flight.
                let ring = ring::uninstall();
                if let Some(d) = displaced.take() {
                    ring::install(*d);
                }
                drop(ring);
            }
            // Dropped elsewhere: the thread-local's destructor tears the ring down at thread exit.
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::BackendChoice;

    #[test]
    fn the_ring_unpark_skips_its_own_thread_and_wakes_from_others() {
        let Ok(io) = Io::new(BackendChoice::Uring) else {
            return; // No io_uring here: the blocking backend's parker has no ring to skip.
        };
        if io.backend() != Backend::Uring {
            return;
        }
        let mut driver = IoDriver::new(&io, None).unwrap();
        let Kind::Ring { inbox, .. } = &driver.kind else {
            panic!("the uring backend's driver owns a ring");
        };
        let inbox = Arc::clone(inbox);
        let unpark = driver.unparker();
        unpark.unpark();
        assert!(!inbox.is_notified(), "own thread: no eventfd write");
        std::thread::scope(|s| {
            s.spawn(|| unpark.unpark());
        });
        assert!(inbox.is_notified(), "another thread: the wake is written");
        // And it is consumed: this park returns at once instead of sleeping.
        driver.park(None);
        assert!(!inbox.is_notified());
    }

    #[test]
    fn a_ring_with_sockets_on_readiness_ends_its_park_for_a_socket_event() {
        use crate::ready::{Dir, Interest};
        use std::io::Write;
        use std::os::fd::AsRawFd;
        use std::sync::atomic::{AtomicUsize, Ordering};
        use std::task::{Context, Wake};

        struct Count(AtomicUsize);
        impl Wake for Count {
            fn wake(self: Arc<Self>) {
                self.0.fetch_add(1, Ordering::SeqCst);
            }
        }
        let Ok(io) = Io::with_sockets(BackendChoice::Uring, SocketPath::Readiness) else {
            return; // No io_uring here: the blocking backend's sockets are tested in ready.rs.
        };
        let mut driver = IoDriver::new(&io, None).unwrap();
        let set = ready::local(io.id()).expect("the driver installed the thread's readiness set");
        let (mut tx, rx) = std::os::unix::net::UnixStream::pair().unwrap();
        rx.set_nonblocking(true).unwrap();
        let interest = Arc::new(Interest::default());
        let count = Arc::new(Count(AtomicUsize::new(0)));
        let waker = Waker::from(Arc::clone(&count));
        let mut buf = [0u8; 8];
        let r = interest.poll_io(
            &mut Context::from_waker(&waker),
            Dir::Read,
            rx.as_raw_fd(),
            || Ok(Arc::clone(&set)),
            || std::io::Read::read(&mut &rx, &mut buf),
            |_| false,
        );
        assert!(r.is_pending());
        assert_eq!(
            set.registered(),
            1,
            "the socket waits in the worker's own set"
        );
        // The registration's writable report concerns the other direction: no wake.
        driver.poll_nonblocking();
        assert_eq!(count.0.load(Ordering::SeqCst), 0);
        tx.write_all(b"hi").unwrap();
        // The park ends on the ring's watch of the set (not on its timeout), and reports the
        // socket.
        driver.park(Some(Duration::from_secs(10)));
        let fired = ring::with_local(io.id(), |r| r.take_woken());
        assert_eq!(
            fired,
            Some(true),
            "the ring's watch on the set ended the park"
        );
        assert_eq!(
            count.0.load(Ordering::SeqCst),
            1,
            "the park reported the socket"
        );
        // Nothing left: a short park wakes nothing more.
        driver.park(Some(Duration::from_millis(1)));
        assert_eq!(count.0.load(Ordering::SeqCst), 1);
        interest.deregister(rx.as_raw_fd());
        drop(driver);
        assert!(
            ready::local(io.id()).is_none(),
            "the driver's drop uninstalls its set"
        );
    }
}
