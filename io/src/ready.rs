//! The readiness set: how sockets wait on the blocking backend (no io_uring), on the worker's own
//! thread.
//!
//! Each worker's driver owns one [`ReadySet`] (an epoll instance plus an eventfd for unparking),
//! installed in this module's thread-local; threads without one (tests, tokio tasks) use their
//! `Io`'s readiness thread, the way files use the reaper ring. A socket registers **once**,
//! edge-triggered, in the set of the thread where it first had to wait, or, when that set already
//! holds [`SPILL`] sockets, in the set of the thread's pool that holds the fewest ([`PoolSets`]);
//! from then on that set's thread reports its events, whichever thread polls the socket (the idea
//! is mio's and tokio's I/O driver: register once, edge-triggered, and count events so a wait
//! never misses one). A woken task is queued on the thread that woke it, so a connection moves to
//! its set's worker with its first event.
//!
//! Readiness protocol (cited as "ready.rs protocol"), per direction (read, write):
//! 1. Before trying the system call, the socket reads the direction's event count `seq`.
//!
//!    Step 1a: if a call at that same count came back short (a read that did not fill its buffer,
//!    a write that did not send all its data), the direction is drained and no event came since:
//!    the call would answer `EAGAIN`, so it is skipped and the socket goes to step 3 as if it
//!    had. (A short answer is how tokio's streams learn the same: the socket buffer was emptied
//!    or filled, and the next edge will say when that changes.) This saves the second `recv` per
//!    request of a kept-alive connection, the one that finds nothing. Once an event said the
//!    direction is closed (the peer's hang-up, an error), nothing is skipped: the end of the
//!    stream is a state, not an edge, and the call must see it.
//! 2. It tries the call (non-blocking). Anything but `EAGAIN` is the answer.
//! 3. On `EAGAIN` it locks its [`Interest`], registers if it never did (an edge-triggered `ADD`
//!    reports the current readiness as one event), and compares `seq`: if an event arrived since
//!    step 1 it retries from step 1; otherwise it stores the waker under the same lock.
//! 4. The set's thread, for each event, locks the interest, increments the counts of the
//!    directions the event concerns and takes their wakers, which it wakes after unlocking.
//!
//! An event between steps 2 and 3 changes `seq` (retry); one after step 3 finds the waker. So a
//! wait ends at the next edge after the failed call, which the kernel produces on new data, new
//! send-buffer room, a hang-up or an error. A call skipped at step 1a is safe for the same
//! reason: the socket is registered edge-triggered (or registers at step 3, which reports its
//! current readiness), so data or room that comes after the short call raises an event, and the
//! event changes the count the mark was made at.
//!
//! The driver checks its set in `poll_nonblocking` (an `epoll_wait` with no timeout, skipped when no
//! socket is registered in it, so file-only services pay nothing) and sleeps in it in `park`; an
//! unpark writes the eventfd (a token: a write before the park makes that park return at once).

use std::cell::RefCell;
use std::io;
use std::os::fd::RawFd;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, Weak};
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use pagegen_core::Unpark;

use crate::sys::{self, Epoll, EventFd};

const EVENTFD_TOKEN: u64 = u64::MAX;

/// Events one wait collects at most: 128, what fits in the half queue the executor keeps free
/// before it checks the driver (`DRIVER_BACKLOG` in the executor's worker.rs); more wait in the
/// kernel's first-in first-out ready list for the next check.
const EVENTS: usize = 128;

/// Sockets a worker's set takes before new ones go to the emptiest set of its pool: one harvest's
/// worth ([`EVENTS`]).
///
/// Below it, every socket of a connection a worker accepted waits in that worker's set, and one
/// first-in first-out harvest feeds the pool (idle peers steal the woken tasks): the layout with
/// the best tail at 64 connections. Above it, that one worker's harvests and wakes become the
/// pool's bottleneck: at 1,024 connections on 2 workers the accepting worker used twice its
/// peer's CPU, and the peer slept and was woken ~5,000 times a second to steal; spilling the rest
/// evenly made the two workers' CPU even, cut the switches 4-5x and raised req/s in 12 of 15
/// paired rounds, with a p99 of 0.8x tokio's against 0.6x (benches/RESULTS.md, 2026-12-07
/// night). Spilling from the first socket (every set kept even) lost the tail at 64 connections
/// (p99 1.7x tokio's against 0.64x).
pub(crate) const SPILL: usize = EVENTS;

/// A direction of readiness.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Dir {
    Read,
    Write,
}

#[derive(Debug, Default)]
struct Slot {
    gen: u32,
    interest: Option<Weak<Interest>>,
}

#[derive(Debug, Default)]
struct Slab {
    slots: Vec<Slot>,
    free: Vec<u32>,
}

/// One thread's readiness set. See the module docs.
#[derive(Debug)]
pub(crate) struct ReadySet {
    io_id: u64,
    epoll: Epoll,
    efd: EventFd,
    notified: AtomicBool,
    regs: Mutex<Slab>,
    registered: AtomicUsize,
    events: Mutex<Vec<libc::epoll_event>>,
    /// The sets of this set's worker pool, once it joined one ([`PoolSets::join`]).
    pool: OnceLock<Weak<PoolSets>>,
}

impl ReadySet {
    /// A set serving sockets of the [`Io`](crate::Io) with id `io_id`.
    pub(crate) fn new(io_id: u64) -> io::Result<Arc<ReadySet>> {
        let epoll = Epoll::new()?;
        let efd = EventFd::new()?;
        epoll.add(efd.raw(), libc::EPOLLIN as u32, EVENTFD_TOKEN)?;
        Ok(Arc::new(ReadySet {
            io_id,
            epoll,
            efd,
            notified: AtomicBool::new(false),
            regs: Mutex::new(Slab::default()),
            registered: AtomicUsize::new(0),
            events: Mutex::new(Vec::with_capacity(EVENTS)),
            pool: OnceLock::new(),
        }))
    }

    /// The set a socket that first waits on this set's thread registers in: this one until it
    /// holds [`SPILL`] sockets, then the set of its pool with the fewest (this one on a tie).
    pub(crate) fn place(self: &Arc<Self>) -> Arc<ReadySet> {
        let own = self.registered();
        if own < SPILL {
            return Arc::clone(self);
        }
        self.pool
            .get()
            .and_then(Weak::upgrade)
            .and_then(|p| p.emptiest())
            .filter(|s| s.registered() < own)
            .unwrap_or_else(|| Arc::clone(self))
    }

    /// Takes this set out of the pool it joined, if any: it gets no new sockets from its peers
    /// (those registered in it stay, reported by whatever thread waits on it).
    pub(crate) fn leave_pool(self: &Arc<Self>) {
        if let Some(p) = self.pool.get().and_then(Weak::upgrade) {
            p.leave(self);
        }
    }

    fn slab(&self) -> MutexGuard<'_, Slab> {
        self.regs.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The epoll instance's fd, for a ring to watch (readable while the set has events).
    pub(crate) fn epoll_fd(&self) -> RawFd {
        self.epoll.raw()
    }

    /// Sockets registered here now.
    pub(crate) fn registered(&self) -> usize {
        self.registered.load(Ordering::Acquire)
    }

    fn register(&self, fd: RawFd, interest: &Arc<Interest>) -> io::Result<u64> {
        let token = {
            let mut slab = self.slab();
            let idx = match slab.free.pop() {
                Some(i) => i,
                None => {
                    slab.slots.push(Slot::default());
                    (slab.slots.len() - 1) as u32
                }
            };
            let slot = &mut slab.slots[idx as usize];
            slot.interest = Some(Arc::downgrade(interest));
            ((slot.gen as u64) << 32) | idx as u64
        };
        let events = (libc::EPOLLIN | libc::EPOLLOUT | libc::EPOLLRDHUP | libc::EPOLLET) as u32;
        if let Err(e) = self.epoll.add(fd, events, token) {
            self.release(token);
            return Err(e);
        }
        self.registered.fetch_add(1, Ordering::AcqRel);
        Ok(token)
    }

    fn release(&self, token: u64) {
        let idx = (token & 0xffff_ffff) as u32;
        let mut slab = self.slab();
        if let Some(slot) = slab.slots.get_mut(idx as usize) {
            slot.interest = None;
            slot.gen = slot.gen.wrapping_add(1);
            slab.free.push(idx);
        }
    }

    fn deregister(&self, fd: RawFd, token: u64) {
        self.epoll.delete(fd);
        self.release(token);
        self.registered.fetch_sub(1, Ordering::AcqRel);
    }

    /// Waits up to `timeout` (`Some(ZERO)`: not at all) and wakes the sockets whose readiness
    /// changed (ready.rs protocol, step 4); returns how many wakers it woke.
    pub(crate) fn wait(&self, timeout: Option<Duration>) -> usize {
        let ms = match timeout {
            None => -1,
            Some(d) => d.as_millis().min(i32::MAX as u128) as i32,
        };
        let ms = if ms == 0 && timeout.is_some_and(|d| !d.is_zero()) {
            1 // A sub-millisecond timeout rounds up: never spin.
        } else {
            ms
        };
        let mut wakers: Vec<Waker> = Vec::new();
        {
            let mut events = self.events.lock().unwrap_or_else(|e| e.into_inner());
            self.epoll.wait(&mut events, ms);
            for ev in events.iter() {
                let (token, mask) = (ev.u64, ev.events);
                if token == EVENTFD_TOKEN {
                    sys::drain_eventfd(self.efd.raw());
                    self.notified.store(false, Ordering::Release);
                    continue;
                }
                let idx = (token & 0xffff_ffff) as usize;
                let interest = {
                    let slab = self.slab();
                    slab.slots
                        .get(idx)
                        .filter(|s| s.gen == (token >> 32) as u32)
                        .and_then(|s| s.interest.as_ref())
                        .and_then(Weak::upgrade)
                };
                if let Some(interest) = interest {
                    interest.on_event(mask, &mut wakers);
                }
            }
        }
        let n = wakers.len();
        wakers.into_iter().for_each(Waker::wake);
        n
    }

    /// Makes the current or next [`wait`](Self::wait) return.
    pub(crate) fn wake(&self) {
        if !self.notified.swap(true, Ordering::AcqRel) {
            self.efd.notify();
        }
    }
}

impl Unpark for ReadySet {
    fn unpark(&self) {
        self.wake();
    }
}

/// The readiness sets of one pool's workers, where a full set places new sockets
/// ([`ReadySet::place`]). Only one pool's: a socket accepted by a latency worker never waits in a
/// bulk worker's set, whose lower priority would delay its events.
#[derive(Debug, Default)]
pub(crate) struct PoolSets {
    sets: Mutex<Vec<Arc<ReadySet>>>,
}

impl PoolSets {
    fn sets(&self) -> MutexGuard<'_, Vec<Arc<ReadySet>>> {
        self.sets.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Adds a worker's set to the pool, for as long as the worker runs ([`leave`](Self::leave)).
    pub(crate) fn join(self: &Arc<Self>, set: &Arc<ReadySet>) {
        let _ = set.pool.set(Arc::downgrade(self));
        self.sets().push(Arc::clone(set));
    }

    /// Takes a worker's set out of the pool ([`ReadySet::leave_pool`]).
    fn leave(&self, set: &Arc<ReadySet>) {
        self.sets().retain(|s| !Arc::ptr_eq(s, set));
    }

    fn emptiest(&self) -> Option<Arc<ReadySet>> {
        self.sets().iter().min_by_key(|s| s.registered()).cloned()
    }
}

/// One direction's readiness (ready.rs protocol).
#[derive(Debug, Default)]
struct DirState {
    /// Events that concerned this direction so far.
    seq: u64,
    /// The task waiting for the next one.
    waker: Option<Waker>,
    /// The count when a call last showed the direction drained (a short read or write), if that
    /// is still the count: no event since, so the next call would answer `EAGAIN` (step 1a).
    drained: Option<u64>,
    /// An event said the direction is closed (peer hang-up, error): a state no later edge
    /// announces again, so from then on every call is tried (step 1a never skips).
    closed: bool,
}

impl DirState {
    /// Counts an event for this direction and takes its waker; `closed` says the event ended it.
    fn on_event(&mut self, closed: bool, wakers: &mut Vec<Waker>) {
        self.closed |= closed;
        self.seq += 1;
        wakers.extend(self.waker.take());
    }

    /// Whether a call now would find the direction as drained as the last short one did.
    fn skips(&self) -> bool {
        !self.closed && self.drained == Some(self.seq)
    }
}

#[derive(Debug, Default)]
struct State {
    read: DirState,
    write: DirState,
    /// The set this socket is registered in, and its token there.
    reg: Option<(Arc<ReadySet>, u64)>,
}

impl State {
    fn dir(&mut self, dir: Dir) -> &mut DirState {
        match dir {
            Dir::Read => &mut self.read,
            Dir::Write => &mut self.write,
        }
    }
}

/// One socket's readiness: event counts and wakers per direction (ready.rs protocol).
#[derive(Debug, Default)]
pub(crate) struct Interest {
    state: Mutex<State>,
}

impl Interest {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn on_event(&self, mask: u32, wakers: &mut Vec<Waker>) {
        let read = (libc::EPOLLIN | libc::EPOLLRDHUP | libc::EPOLLHUP | libc::EPOLLERR) as u32;
        let write = (libc::EPOLLOUT | libc::EPOLLHUP | libc::EPOLLERR) as u32;
        let closed = (libc::EPOLLHUP | libc::EPOLLERR) as u32;
        let mut g = self.lock();
        if mask & read != 0 {
            let ended = mask & (closed | libc::EPOLLRDHUP as u32) != 0;
            g.read.on_event(ended, wakers);
        }
        if mask & write != 0 {
            g.write.on_event(mask & closed != 0, wakers);
        }
    }

    /// Runs the non-blocking `call` on `fd` until it stops answering `EAGAIN`, waiting for the
    /// direction's readiness in between (ready.rs protocol, steps 1-3). `set` finds the set to
    /// register in on the first wait. `drains` says of an answer whether it emptied the direction
    /// (a read shorter than its buffer, a write shorter than its data): the next call then waits
    /// for an event instead of trying (step 1a).
    pub(crate) fn poll_io<T>(
        self: &Arc<Self>,
        cx: &mut Context<'_>,
        dir: Dir,
        fd: RawFd,
        set: impl Fn() -> io::Result<Arc<ReadySet>>,
        mut call: impl FnMut() -> io::Result<T>,
        drains: impl Fn(&T) -> bool,
    ) -> Poll<io::Result<T>> {
        loop {
            let (seq, drained) = {
                let mut g = self.lock();
                let d = g.dir(dir);
                (d.seq, d.skips())
            };
            if !drained {
                match call() {
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                    Ok(v) if drains(&v) => {
                        // Marked with the count read before the call: an event since then
                        // (data or room that came after the call) makes the mark stale.
                        self.lock().dir(dir).drained = Some(seq);
                        return Poll::Ready(Ok(v));
                    }
                    r => return Poll::Ready(r),
                }
            }
            let mut g = self.lock();
            if g.reg.is_none() {
                let set = match set() {
                    Ok(s) => s,
                    Err(e) => return Poll::Ready(Err(e)),
                };
                let token = match set.register(fd, self) {
                    Ok(t) => t,
                    Err(e) => return Poll::Ready(Err(e)),
                };
                g.reg = Some((set, token));
            }
            let d = g.dir(dir);
            if d.seq != seq {
                continue; // An event arrived since the call: try again.
            }
            match &mut d.waker {
                Some(w) if w.will_wake(cx.waker()) => {}
                slot => *slot = Some(cx.waker().clone()),
            }
            return Poll::Pending;
        }
    }

    /// Removes the socket from its set; call before closing `fd`.
    pub(crate) fn deregister(&self, fd: RawFd) {
        let reg = self.lock().reg.take();
        if let Some((set, token)) = reg {
            set.deregister(fd, token);
        }
    }
}

thread_local! {
    static LOCAL: RefCell<Option<Arc<ReadySet>>> = const { RefCell::new(None) };
}

/// Makes `set` this thread's readiness set; returns the one it replaces.
pub(crate) fn install(set: Arc<ReadySet>) -> Option<Arc<ReadySet>> {
    LOCAL.with(|l| l.borrow_mut().replace(set))
}

/// Removes this thread's set.
pub(crate) fn uninstall() -> Option<Arc<ReadySet>> {
    LOCAL.try_with(|l| l.borrow_mut().take()).ok().flatten()
}

/// This thread's set, if it serves `io_id`.
pub(crate) fn local(io_id: u64) -> Option<Arc<ReadySet>> {
    LOCAL
        .try_with(|l| l.borrow().as_ref().filter(|s| s.io_id == io_id).cloned())
        .ok()
        .flatten()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;
    use std::os::fd::AsRawFd;
    use std::task::Wake;

    struct Count(AtomicUsize);
    impl Wake for Count {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }

    type Pair = std::os::unix::net::UnixStream;

    /// A set, a socket pair (the second end non-blocking, to be read), an interest for it, and a
    /// waker counting its wakes.
    fn fixture() -> (Arc<ReadySet>, Pair, Pair, Arc<Interest>, Arc<Count>, Waker) {
        let set = ReadySet::new(1).unwrap();
        let (a, b) = Pair::pair().unwrap();
        b.set_nonblocking(true).unwrap();
        let count = Arc::new(Count(AtomicUsize::new(0)));
        let waker = Waker::from(Arc::clone(&count));
        (set, a, b, Arc::default(), count, waker)
    }

    #[test]
    fn a_wait_ends_at_the_next_edge_and_an_unpark_before_a_wait_is_kept() {
        let (set, mut a, b, interest, count, waker) = fixture();
        let mut cx = Context::from_waker(&waker);
        let mut buf = [0u8; 8];
        let read = |buf: &mut [u8]| io::Read::read(&mut &b, buf);
        let r = interest.poll_io(
            &mut cx,
            Dir::Read,
            b.as_raw_fd(),
            || Ok(Arc::clone(&set)),
            || read(&mut buf),
            |_| false,
        );
        assert!(r.is_pending(), "nothing to read yet");
        assert_eq!(set.registered(), 1);
        // The registration's own report (writable) concerns the other direction: no read wake.
        set.wait(Some(Duration::ZERO));
        assert_eq!(count.0.load(Ordering::SeqCst), 0);
        a.write_all(b"hi").unwrap();
        assert_eq!(set.wait(None), 1, "the new data is one edge, one wake");
        assert_eq!(count.0.load(Ordering::SeqCst), 1);
        let r = interest.poll_io(
            &mut cx,
            Dir::Read,
            b.as_raw_fd(),
            || Ok(Arc::clone(&set)),
            || read(&mut buf),
            |_| false,
        );
        assert!(matches!(r, Poll::Ready(Ok(2))));
        // A wake before the wait: the wait returns at once.
        set.wake();
        assert_eq!(set.wait(None), 0);
        interest.deregister(b.as_raw_fd());
        assert_eq!(set.registered(), 0);
    }

    #[test]
    fn a_short_read_waits_for_the_next_edge_instead_of_calling_again() {
        let (set, mut a, b, interest, count, waker) = fixture();
        let calls = std::cell::Cell::new(0);
        let poll = || {
            interest.poll_io(
                &mut Context::from_waker(&waker),
                Dir::Read,
                b.as_raw_fd(),
                || Ok(Arc::clone(&set)),
                || {
                    calls.set(calls.get() + 1);
                    io::Read::read(&mut &b, &mut [0u8; 8])
                },
                |&n| n > 0 && n < 8,
            )
        };
        let woken = || count.0.load(Ordering::SeqCst);

        // Two bytes into eight: drained. The next read waits (and registers) without a call.
        a.write_all(b"hi").unwrap();
        assert!(matches!(poll(), Poll::Ready(Ok(2))));
        assert!(poll().is_pending());
        assert_eq!((calls.get(), set.registered()), (1, 1));
        set.wait(Some(Duration::ZERO));
        assert_eq!(woken(), 0, "the registration reported nothing to read");

        // New data is an edge: one wake, one call, the data.
        a.write_all(b"abc").unwrap();
        assert_eq!(set.wait(None), 1);
        assert_eq!(woken(), 1);
        assert!(matches!(poll(), Poll::Ready(Ok(3))));
        assert_eq!(calls.get(), 2);

        // Data that came after the short read but before its event was collected: the read
        // still waits, and the event ends the wait.
        a.write_all(b"x").unwrap();
        assert!(poll().is_pending());
        assert_eq!(calls.get(), 2);
        assert_eq!(set.wait(None), 1);
        assert_eq!(woken(), 2);
        assert!(matches!(poll(), Poll::Ready(Ok(1))));

        // A read that fills its buffer says nothing of what is left: the next one calls.
        a.write_all(b"12345678").unwrap();
        set.wait(None);
        assert!(matches!(poll(), Poll::Ready(Ok(8))));
        let before = calls.get();
        assert!(poll().is_pending());
        assert_eq!(
            calls.get(),
            before + 1,
            "the full read's successor tried the call"
        );

        // The peer's last bytes and its hang-up, collected before the read: the short read that
        // takes the bytes is followed by a call that sees the end, though no edge follows it.
        a.write_all(b"end").unwrap();
        drop(a);
        set.wait(None);
        assert!(matches!(poll(), Poll::Ready(Ok(3))));
        assert!(matches!(poll(), Poll::Ready(Ok(0))));
        interest.deregister(b.as_raw_fd());
    }

    /// Registers the reading end of a fresh socket pair through `from`'s placement.
    fn place_one(
        from: &Arc<ReadySet>,
    ) -> (
        Arc<Interest>,
        std::os::unix::net::UnixStream,
        std::os::unix::net::UnixStream,
    ) {
        let (a, b) = std::os::unix::net::UnixStream::pair().unwrap();
        b.set_nonblocking(true).unwrap();
        let interest = Arc::new(Interest::default());
        let waker = Waker::from(Arc::new(Count(AtomicUsize::new(0))));
        let mut buf = [0u8; 8];
        let r = interest.poll_io(
            &mut Context::from_waker(&waker),
            Dir::Read,
            b.as_raw_fd(),
            || Ok(from.place()),
            || io::Read::read(&mut &b, &mut buf),
            |_| false,
        );
        assert!(r.is_pending(), "nothing to read yet");
        (interest, a, b)
    }

    #[test]
    fn a_full_set_places_new_sockets_in_its_pools_emptiest_set() {
        let pool = Arc::new(PoolSets::default());
        let (busy, idle, outsider) = (
            ReadySet::new(1).unwrap(),
            ReadySet::new(1).unwrap(),
            ReadySet::new(1).unwrap(),
        );
        pool.join(&busy);
        pool.join(&idle);
        // Below its share, a set keeps what first waits on its thread.
        let mut socks: Vec<_> = (0..SPILL).map(|_| place_one(&busy)).collect();
        assert_eq!((busy.registered(), idle.registered()), (SPILL, 0));
        // Then new ones go to the emptiest set until the two are even; on a tie, the own set.
        socks.extend((0..SPILL + 3).map(|_| place_one(&busy)));
        assert_eq!(busy.registered(), SPILL + 2);
        assert_eq!(idle.registered(), SPILL + 1);
        // A set outside any pool keeps everything.
        socks.extend((0..SPILL + 1).map(|_| place_one(&outsider)));
        assert_eq!(outsider.registered(), SPILL + 1);
        assert_eq!(busy.registered() + idle.registered(), 2 * SPILL + 3);

        // A socket placed in the peer's set is reported by the peer's wait, not the full set's.
        let (interest, mut a, b) = place_one(&busy);
        assert_eq!(idle.registered(), SPILL + 2);
        // First the registrations' own (writable) reports, more than one harvest's worth.
        for set in [&busy, &idle] {
            for _ in 0..=(SPILL + 2).div_ceil(EVENTS) {
                assert_eq!(
                    set.wait(Some(Duration::ZERO)),
                    0,
                    "no read waits were ready"
                );
            }
        }
        a.write_all(b"x").unwrap();
        assert_eq!(busy.wait(Some(Duration::ZERO)), 0);
        assert_eq!(idle.wait(Some(Duration::ZERO)), 1);
        interest.deregister(b.as_raw_fd());
        assert_eq!(idle.registered(), SPILL + 1);

        // A set that left its pool (its worker stopped) gets no new sockets.
        idle.leave_pool();
        let before = idle.registered();
        socks.extend((0..4).map(|_| place_one(&busy)));
        assert_eq!(idle.registered(), before);
        assert_eq!(busy.registered(), SPILL + 6);
        for (interest, _a, b) in &socks {
            interest.deregister(b.as_raw_fd());
        }
        assert_eq!(
            busy.registered() + idle.registered() + outsider.registered(),
            0
        );
    }
}
