//! One io_uring ring per thread: the worker's ring (installed by its [`Driver`](pagegen_core::Driver))
//! or the reaper's ring (serving threads without a pagegen worker).
//!
//! One of the two modules allowed to hold `unsafe`: pushing a submission-queue entry hands the
//! kernel raw pointers, which is sound only under the op.rs protocol (the ring's in-flight table
//! holds an `Arc<Op>` owning every pointed-to resource until that entry's completion is reaped).
//! An `fs::read` is one op but several linked entries (chain.rs protocol): its slot holds the op
//! until the last of them completes, and the ring owns the table of direct descriptors they open
//! into.
//!
//! Threads: a [`LocalRing`] lives in its thread's thread-local and is touched by that thread only.
//! Other threads reach it through its [`Inbox`] (submissions and cancellations) plus a wake: the
//! ring keeps a read of an eventfd in flight, and `Inbox::wake` writes the eventfd, which completes
//! that read and ends any `io_uring_enter` wait. A flag makes repeated wakes cost one write, and the
//! eventfd counter makes a wake before a park a token: the next park finds the read completed.

use std::cell::RefCell;
use std::collections::VecDeque;
use std::fs::File;
use std::io;
use std::os::fd::IntoRawFd;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::Waker;
use std::time::Duration;

use io_uring::{cqueue, opcode, squeue, types, IoUring};
use pagegen_core::Unpark;

use crate::chain;
use crate::entry;
use crate::op::{Op, Res};
use crate::ready::ReadySet;
use crate::sys::{self, EventFd};

/// Submission-queue entries per ring. 256 covers a worker's concurrency in every bench here
/// (32 operations in flight per thread at most) with room for cancels and closes; the completion
/// queue is twice that (the kernel's default).
pub(crate) const RING_ENTRIES: u32 = 256;

const EVENTFD_TAG: u64 = u64::MAX;
const CANCEL_TAG: u64 = u64::MAX - 1;
const CLOSE_TAG: u64 = u64::MAX - 2;
/// The poll entry on the watched fd ([`LocalRing::watch`]).
const WATCH_TAG: u64 = u64::MAX - 3;

// An operation's user_data: in-flight slot index (bits 0..32), the slot's generation (32..58),
// the entry's index within a chain (58..61, chain.rs). Internal entries that carry a number set
// bit 62 (and never bit 63, which the tags above set): a direct slot's close (the slot in the low
// bits) or a chain's cancel (bit 61, the target's user_data in the low bits).
const GEN_MASK: u32 = (1 << 26) - 1;
const INTERNAL: u64 = 1 << 62;
const CHAIN_CANCEL: u64 = 1 << 61;
const TARGET_MASK: u64 = (1 << 61) - 1;

fn user_data(idx: u32, gen: u32, sub: u8) -> u64 {
    (u64::from(sub) << 58) | (u64::from(gen & GEN_MASK) << 32) | u64::from(idx)
}

/// (slot index, generation, entry within a chain).
fn split(ud: u64) -> (usize, u32, u8) {
    (
        (ud & 0xffff_ffff) as usize,
        (ud >> 32) as u32 & GEN_MASK,
        ((ud >> 58) & 7) as u8,
    )
}

/// Times a chain's cancel is re-sent when it found nothing (the next entry of the link was not
/// issued yet; chain.rs protocol, step 4). Plucked from thin air: the link's next entry is issued
/// by the same task work that posts the previous completion, so one retry is the usual case.
const CANCEL_RETRIES: u8 = 64;

enum Msg {
    Submit(Arc<Op>),
    Cancel(u64),
}

/// The door to a ring from other threads.
pub(crate) struct Inbox {
    msgs: Mutex<Vec<Msg>>,
    len: AtomicUsize,
    notified: AtomicBool,
    efd: EventFd,
}

impl std::fmt::Debug for Inbox {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Inbox")
            .field("len", &self.len.load(Ordering::Relaxed))
            .finish_non_exhaustive()
    }
}

impl Inbox {
    fn push(&self, m: Msg) {
        self.msgs.lock().unwrap_or_else(|e| e.into_inner()).push(m);
        self.len.fetch_add(1, Ordering::Release);
        self.wake();
    }
    /// Asks the owning ring to cancel the operation with `user_data` (op.rs protocol, step 4).
    pub(crate) fn cancel(&self, user_data: u64) {
        self.push(Msg::Cancel(user_data));
    }
    /// Hands an operation to the ring (the reaper's ring, for threads without one).
    pub(crate) fn submit(&self, op: Arc<Op>) {
        self.push(Msg::Submit(op));
    }
    /// Whether a wake is pending (set by [`wake`](Self::wake), cleared when the ring consumes it).
    #[cfg(test)]
    pub(crate) fn is_notified(&self) -> bool {
        self.notified.load(Ordering::Acquire)
    }
    /// Makes the ring's current or next park return.
    pub(crate) fn wake(&self) {
        if !self.notified.swap(true, Ordering::AcqRel) {
            self.efd.notify();
        }
    }
}

impl Unpark for Inbox {
    fn unpark(&self) {
        self.wake();
    }
}

struct Slot {
    gen: u32,
    op: Option<Arc<Op>>,
    /// Set while the op is a chain (chain.rs).
    chain: Option<Chain>,
}

/// A chain's progress in the kernel (chain.rs protocol).
struct Chain {
    /// The direct-descriptor slot it opened into.
    file: u32,
    /// Its entries whose completions have not arrived, in the current phase.
    pending: u8,
    /// The first entry not yet completed: the one a cancel targets.
    next: u8,
    /// 1: open, read, probe; 2: install (then the slot's close) and the path's statx.
    phase: u8,
    cancel_retries: u8,
}

/// A thread's ring and its in-flight table.
pub(crate) struct LocalRing {
    ring: IoUring,
    io_id: u64,
    inbox: Arc<Inbox>,
    slots: Vec<Slot>,
    free: Vec<u32>,
    in_flight: usize,
    /// Cancels and closes in the kernel (their completions carry no op).
    internal: usize,
    efd_buf: Box<u64>,
    efd_armed: bool,
    /// The last reap consumed a wake (the eventfd read completed).
    woken: bool,
    backlog: VecDeque<Arc<Op>>,
    /// Free direct-descriptor slots; `None` when this ring cannot chain (chain.rs): the table
    /// could not be registered or the kernel lacks an opcode (probed once, in `new`).
    direct: Option<Vec<u32>>,
    /// Direct slots whose close did not fit in the submission queue yet.
    closes_due: Vec<u32>,
    cqes: Vec<(u64, i32, u32)>,
    /// Wakers of completed operations, woken by the caller once the ring is no longer borrowed.
    pub(crate) wakers: Vec<Waker>,
    shutting_down: bool,
    /// A readiness set the ring wakes for when it has events ([`watch`](Self::watch)); held so its
    /// epoll fd stays open while the poll entry may use it.
    watch: Option<Arc<ReadySet>>,
    watch_armed: bool,
}

impl std::fmt::Debug for LocalRing {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LocalRing")
            .field("io_id", &self.io_id)
            .field("in_flight", &self.in_flight)
            .finish_non_exhaustive()
    }
}

/// Checks that io_uring works here: sets a ring up and runs one no-op through it (a seccomp filter
/// may allow `io_uring_setup` and still refuse `io_uring_enter`). Also requires `EXT_ARG`
/// (Linux 5.11), which timed parks need.
pub(crate) fn probe() -> io::Result<()> {
    let mut ring = IoUring::new(2)?;
    if !ring.params().is_feature_ext_arg() {
        return Err(io::Error::new(
            io::ErrorKind::Unsupported,
            "kernel lacks IORING_FEAT_EXT_ARG (Linux 5.11)",
        ));
    }
    let nop = opcode::Nop::new().build().user_data(7);
    // SAFETY: a no-op references no memory.
    unsafe { ring.submission().push(&nop) }
        .map_err(|_| io::Error::other("empty submission queue is full"))?;
    ring.submit_and_wait(1)?;
    let got = ring
        .completion()
        .next()
        .map(|c| (c.user_data(), c.result()));
    match got {
        Some((7, r)) if r >= 0 => Ok(()),
        Some((_, r)) if r < 0 => Err(io::Error::from_raw_os_error(-r)),
        _ => Err(io::Error::other("io_uring no-op did not complete")),
    }
}

impl LocalRing {
    /// A ring serving operations of the [`Io`](crate::Io) with id `io_id`.
    pub(crate) fn new(io_id: u64) -> io::Result<LocalRing> {
        // Cooperative task running (Linux 5.19+): a completion that needs the submitting thread
        // (a socket receive, say) does not interrupt the worker with an IPI mid-task; it runs at
        // the worker's next kernel entry, and the TASKRUN flag tells `poll` when to enter just
        // for it. Sound because only the owning thread submits to and waits on a ring (module
        // docs), the case the flag is made for. Older kernels refuse the flags: a plain ring.
        let ring = IoUring::builder()
            .setup_coop_taskrun()
            .setup_taskrun_flag()
            .build(RING_ENTRIES)
            .or_else(|_| IoUring::builder().build(RING_ENTRIES))?;
        let direct = chain::probe(&ring);
        let inbox = Arc::new(Inbox {
            msgs: Mutex::new(Vec::new()),
            len: AtomicUsize::new(0),
            notified: AtomicBool::new(false),
            efd: EventFd::new()?,
        });
        let mut r = LocalRing {
            ring,
            io_id,
            inbox,
            slots: Vec::new(),
            free: Vec::new(),
            in_flight: 0,
            internal: 0,
            efd_buf: Box::new(0),
            efd_armed: false,
            woken: false,
            backlog: VecDeque::new(),
            direct,
            closes_due: Vec::new(),
            cqes: Vec::with_capacity(64),
            wakers: Vec::new(),
            shutting_down: false,
            watch: None,
            watch_armed: false,
        };
        r.arm_eventfd();
        Ok(r)
    }

    /// The door other threads use.
    pub(crate) fn inbox(&self) -> &Arc<Inbox> {
        &self.inbox
    }

    /// Pushes one entry, flushing the queue to the kernel once if it is full.
    ///
    /// # Safety
    /// Every pointer in `entry` must stay valid until the entry's completion is reaped.
    unsafe fn push(&mut self, entry: &squeue::Entry) -> bool {
        for _ in 0..2 {
            // SAFETY: forwarded from the caller.
            if unsafe { self.ring.submission().push(entry) }.is_ok() {
                return true;
            }
            self.flush();
        }
        false
    }

    /// Whether `n` entries fit in the submission queue (flushing it once if not).
    fn room(&mut self, n: usize) -> bool {
        let free = |r: &mut IoUring| {
            let sq = r.submission();
            sq.capacity() - sq.len()
        };
        if free(&mut self.ring) < n {
            self.flush();
        }
        free(&mut self.ring) >= n
    }

    /// Submits queued entries to the kernel.
    fn flush(&mut self) {
        loop {
            match self.ring.submit() {
                Err(e) if e.raw_os_error() == Some(libc::EINTR) => continue,
                // EBUSY/EAGAIN: the completion queue is overflowing; entries stay queued and go in
                // after the next reap.
                _ => return,
            }
        }
    }

    /// Makes a park return when `set` has events (a worker's epoll set, where sockets on the
    /// readiness path wait while files use the ring): one oneshot poll entry on its epoll fd,
    /// armed when the ring is about to sleep unless one is still pending. The caller harvests the
    /// set after the park.
    pub(crate) fn watch(&mut self, set: Arc<ReadySet>) {
        self.watch = Some(set);
    }

    /// Whether a reap since the last call consumed a wake or a watch completion (tests).
    #[cfg(test)]
    pub(crate) fn take_woken(&mut self) -> bool {
        std::mem::take(&mut self.woken)
    }

    fn arm_watch(&mut self) {
        if self.watch_armed || self.shutting_down {
            return;
        }
        let Some(fd) = self.watch.as_ref().map(|s| s.epoll_fd()) else {
            return;
        };
        let e = opcode::PollAdd::new(types::Fd(fd), libc::POLLIN as u32)
            .build()
            .user_data(WATCH_TAG);
        // SAFETY: a poll references no memory; the epoll fd stays open while `self.watch` holds
        // its set, which the ring keeps until it is dropped, after the entry's completion.
        self.watch_armed = unsafe { self.push(&e) };
    }

    fn arm_eventfd(&mut self) {
        if self.efd_armed || self.shutting_down {
            return;
        }
        let buf: *mut u64 = &mut *self.efd_buf;
        let e = opcode::Read::new(types::Fd(self.inbox.efd.raw()), buf.cast(), 8)
            .build()
            .user_data(EVENTFD_TAG);
        // SAFETY: `efd_buf` is a heap box owned by the ring, and the ring's drop waits for this read's
        // completion before freeing it; the eventfd outlives the ring through `inbox`.
        self.efd_armed = unsafe { self.push(&e) };
    }

    /// Puts an operation in the kernel's queue (or the backlog when the queue is full).
    pub(crate) fn submit(&mut self, op: Arc<Op>) {
        if self.shutting_down {
            if let Some(w) = op.complete(-libc::ECANCELED) {
                self.wakers.push(w);
            }
            return;
        }
        let idx = match self.free.pop() {
            Some(i) => i,
            None => {
                self.slots.push(Slot {
                    gen: 0,
                    op: None,
                    chain: None,
                });
                (self.slots.len() - 1) as u32
            }
        };
        let gen = self.slots[idx as usize].gen;
        let user_data = user_data(idx, gen, 0);
        let mut g = op.lock();
        if g.abandoned() {
            drop(g);
            self.free.push(idx);
            op.discard();
            return;
        }
        if let Some(Res::ReadFile(rf)) = g.res.as_mut() {
            // chain.rs protocol, step 1.
            let Some(file) = self.direct.as_mut().and_then(Vec::pop) else {
                rf.unsupported = true;
                drop(g);
                self.free.push(idx);
                if let Some(w) = op.complete(0) {
                    self.wakers.push(w);
                }
                return;
            };
            if !self.room(3) {
                drop(g);
                self.free.push(idx);
                self.direct.as_mut().expect("popped from it").push(file);
                self.backlog.push_back(op);
                return;
            }
            for e in rf.phase1(file, |sub| self::user_data(idx, gen, sub)) {
                // SAFETY: op.rs protocol: the entries point into `op`'s path and buffer, which the
                // slot's `Arc<Op>` keeps alive, untouched, until the chain's last completion
                // (chain.rs protocol, step 3). `room` made space for all three, so the link is
                // pushed whole, never split across submissions.
                let pushed = unsafe { self.ring.submission().push(&e) }.is_ok();
                debug_assert!(pushed, "room was checked");
            }
            g.set_owner(Arc::clone(&self.inbox), user_data);
            drop(g);
            let slot = &mut self.slots[idx as usize];
            slot.op = Some(op);
            slot.chain = Some(Chain {
                file,
                pending: 3,
                next: chain::OPEN,
                phase: 1,
                cancel_retries: 0,
            });
            self.in_flight += 1;
            return;
        }
        let entry = entry::build(g.res.as_mut().expect("a queued op owns its resources"))
            .user_data(user_data);
        // SAFETY: op.rs protocol: the pointers in `entry` point into `op`'s resources, which the
        // slot's `Arc<Op>` keeps alive, untouched, until the completion for `user_data` is reaped.
        if unsafe { self.push(&entry) } {
            g.set_owner(Arc::clone(&self.inbox), user_data);
            drop(g);
            self.slots[idx as usize].op = Some(op);
            self.in_flight += 1;
        } else {
            drop(g);
            self.free.push(idx);
            self.backlog.push_back(op);
        }
    }

    /// Closes `file` through the ring without waiting (no buffer, no result anyone reads).
    pub(crate) fn close(&mut self, file: File) {
        let fd = file.into_raw_fd();
        let e = opcode::Close::new(types::Fd(fd))
            .build()
            .user_data(CLOSE_TAG);
        // SAFETY: a close references no memory; the fd was ours and is closed exactly once.
        if unsafe { self.push(&e) } {
            self.internal += 1;
        } else {
            drop(sys::file_from_fd(fd));
        }
    }

    fn cancel(&mut self, user_data: u64) {
        let (idx, gen, _) = split(user_data);
        let Some(slot) = self
            .slots
            .get(idx)
            .filter(|s| s.gen == gen && s.op.is_some())
        else {
            return; // Already completed.
        };
        if let Some(c) = &slot.chain {
            let next = c.next;
            self.cancel_chain(self::user_data(idx as u32, gen, next));
            return;
        }
        let e = opcode::AsyncCancel::new(user_data)
            .build()
            .user_data(CANCEL_TAG);
        // SAFETY: a cancel references no memory (the target is named by user_data).
        if unsafe { self.push(&e) } {
            self.internal += 1;
        }
    }

    /// Cancels the chain entry `target` if it is one that may wait (chain.rs protocol, step 4).
    fn cancel_chain(&mut self, target: u64) {
        if split(target).2 > chain::PROBE {
            return; // The install does not wait.
        }
        let e = opcode::AsyncCancel::new(target)
            .build()
            .user_data(INTERNAL | CHAIN_CANCEL | target);
        // SAFETY: a cancel references no memory (the target is named by user_data).
        if unsafe { self.push(&e) } {
            self.internal += 1;
        }
    }

    /// A chain's cancel completed: if it found nothing while its target still waits to be
    /// issued, sends it again (bounded).
    fn chain_cancel_done(&mut self, target: u64, result: i32) {
        if result != -libc::ENOENT {
            return;
        }
        let (idx, gen, sub) = split(target);
        let again = match self.slots.get_mut(idx) {
            Some(Slot {
                gen: g,
                op: Some(_),
                chain: Some(c),
            }) if *g == gen && c.next == sub && c.cancel_retries < CANCEL_RETRIES => {
                c.cancel_retries += 1;
                true
            }
            _ => false,
        };
        if again {
            self.cancel_chain(target);
        }
    }

    /// Closes direct slot `file`; it returns to the free list when the close completes (so a new
    /// open never lands in a slot whose close is still queued).
    fn close_file(&mut self, file: u32) {
        let e = chain::close_slot(file, INTERNAL | u64::from(file));
        // SAFETY: a close references no memory; every opened slot is closed once (chain.rs).
        if unsafe { self.push(&e) } {
            self.internal += 1;
        } else {
            self.closes_due.push(file);
        }
    }

    /// One completion of a chain's entry `sub` (chain.rs protocol); returns whether it ended the
    /// op.
    fn chain_completion(&mut self, idx: usize, gen: u32, sub: u8, result: i32) -> bool {
        let slot = &mut self.slots[idx];
        let (Some(op), Some(c)) = (slot.op.clone(), slot.chain.as_mut()) else {
            return false;
        };
        c.pending = c.pending.saturating_sub(1);
        c.next = c.next.max(sub + 1);
        let (abandoned, opened, more) = {
            let mut g = op.lock();
            let abandoned = g.abandoned();
            let Some(Res::ReadFile(rf)) = g.res.as_mut() else {
                unreachable!("a chain op holds its chain resources")
            };
            let first_done = rf.results[chain::READ as usize].is_some();
            rf.complete(sub, result);
            if result > 0 && sub == chain::READ && rf.buf.is_empty() {
                let n = (result as usize).min(chain::FIRST_READ);
                // SAFETY: the completion of the first read, built by `phase1` from this buffer's
                // first byte with length FIRST_READ: the kernel wrote `n` bytes there.
                unsafe { sys::assume_filled(&mut rf.buf, n) };
            } else if result > 0 && sub == chain::PROBE && first_done {
                let n = (result as usize).min(chain::PROBE_READ);
                // SAFETY: the probe read, built by `phase1` at offset FIRST_READ with length
                // PROBE_READ (within capacity); it ran after the first read, which filled at most
                // FIRST_READ bytes, so `len <= FIRST_READ`.
                unsafe { sys::assume_filled_at(&mut rf.buf, chain::FIRST_READ, n) };
            }
            (abandoned, rf.opened(), rf.more())
        };
        let stop = abandoned || self.shutting_down;
        let (pending, next, phase, file) = (c.pending, c.next, c.phase, c.file);
        if pending > 0 {
            if stop {
                self.cancel_chain(user_data(idx as u32, gen, next));
            }
            return false;
        }
        if phase == 1 {
            if !opened {
                // A failed open leaves the slot empty.
                self.direct
                    .as_mut()
                    .expect("chains need the table")
                    .push(file);
            } else if more && !stop && self.room(3) {
                // Phase 2: install the slot as a normal fd, then close the slot; stat the path.
                let entries = {
                    let mut g = op.lock();
                    let Some(Res::ReadFile(rf)) = g.res.as_mut() else {
                        unreachable!("a chain op holds its chain resources")
                    };
                    rf.phase2(
                        file,
                        |sub| user_data(idx as u32, gen, sub),
                        INTERNAL | u64::from(file),
                    )
                };
                for e in entries {
                    // SAFETY: the install and the close reference no memory (the slot is closed
                    // once); the statx points into `op`'s path and statx buffer, which the slot's
                    // `Arc<Op>` keeps alive, untouched, until the chain's last completion.
                    let pushed = unsafe { self.ring.submission().push(&e) }.is_ok();
                    debug_assert!(pushed, "room was checked");
                }
                self.internal += 1;
                let c = self.slots[idx].chain.as_mut().expect("checked above");
                c.phase = 2;
                c.pending = 2;
                return false;
            } else {
                self.close_file(file);
            }
        }
        let slot = &mut self.slots[idx];
        slot.op = None;
        slot.chain = None;
        slot.gen = (slot.gen + 1) & GEN_MASK;
        self.free.push(idx as u32);
        self.in_flight -= 1;
        if let Some(w) = op.complete(0) {
            self.wakers.push(w);
        }
        true
    }

    fn drain_inbox(&mut self) {
        if self.inbox.len.load(Ordering::Acquire) == 0 {
            return;
        }
        let msgs = std::mem::take(&mut *self.inbox.msgs.lock().unwrap_or_else(|e| e.into_inner()));
        self.inbox.len.fetch_sub(msgs.len(), Ordering::AcqRel);
        for m in msgs {
            match m {
                Msg::Submit(op) => self.submit(op),
                Msg::Cancel(ud) => self.cancel(ud),
            }
        }
    }

    /// Reaps every available completion; returns how many operations completed.
    fn reap(&mut self) -> usize {
        let mut done = 0;
        loop {
            self.cqes.clear();
            self.cqes.extend(
                self.ring
                    .completion()
                    .map(|c| (c.user_data(), c.result(), c.flags())),
            );
            if self.cqes.is_empty() {
                break;
            }
            for i in 0..self.cqes.len() {
                let (ud, res, flags) = self.cqes[i];
                match ud {
                    EVENTFD_TAG => {
                        self.efd_armed = false;
                        self.woken = true;
                        // AcqRel: whatever a waker published before waking is visible after this.
                        self.inbox.notified.swap(false, Ordering::AcqRel);
                    }
                    WATCH_TAG => {
                        self.watch_armed = false;
                        self.woken = true; // The park returns; its caller checks the set.
                    }
                    CANCEL_TAG | CLOSE_TAG => self.internal -= 1,
                    ud if ud & INTERNAL != 0 => {
                        self.internal -= 1;
                        if ud & CHAIN_CANCEL != 0 {
                            self.chain_cancel_done(ud & TARGET_MASK, res);
                        } else if let Some(free) = self.direct.as_mut() {
                            // A direct slot's close (chain.rs protocol, step 2).
                            free.push(ud as u32);
                        }
                    }
                    _ => {
                        let (idx, gen, sub) = split(ud);
                        let Some(slot) = self.slots.get_mut(idx) else {
                            continue;
                        };
                        if slot.gen != gen {
                            continue;
                        }
                        if slot.chain.is_some() {
                            if self.chain_completion(idx, gen, sub, res) {
                                done += 1;
                            }
                            continue;
                        }
                        if cqueue::more(flags) {
                            // One completion of a multishot op, which stays in flight (op.rs,
                            // multishot operations).
                            if let Some(w) = slot
                                .op
                                .as_ref()
                                .and_then(|op| op.deliver(|r| entry::queue_accepted(r, res)))
                            {
                                self.wakers.push(w);
                            }
                            done += 1;
                            continue;
                        }
                        let Some(op) = slot.op.take() else { continue };
                        slot.gen = (slot.gen + 1) & GEN_MASK;
                        self.free.push(idx as u32);
                        self.in_flight -= 1;
                        let mark_filled = |r: &mut Res| match r {
                            Res::Read { buf, .. } | Res::Recv { buf, .. } if res > 0 => {
                                // SAFETY: this is the completion of the read (or receive) built
                                // from this very buffer by `entry::build`: the kernel wrote `res`
                                // bytes at its first spare byte, and `res` <= the spare length it
                                // was given.
                                unsafe { sys::assume_filled(buf, res as usize) };
                            }
                            Res::Accept { .. } => entry::queue_accepted(r, res),
                            _ => {}
                        };
                        if let Some(w) = op.complete_with(res, mark_filled) {
                            self.wakers.push(w);
                        }
                        done += 1;
                    }
                }
            }
        }
        for file in std::mem::take(&mut self.closes_due) {
            self.close_file(file);
        }
        while let Some(op) = self.backlog.pop_front() {
            let before = self.backlog.len();
            self.submit(op);
            if self.backlog.len() > before {
                break; // Still full.
            }
        }
        self.arm_eventfd();
        done
    }

    /// Drains the inbox, submits, reaps. Never blocks.
    pub(crate) fn poll(&mut self) -> usize {
        self.drain_inbox();
        let mut n = self.reap();
        // Entries to submit, or completions waiting for this thread's task work (cooperative
        // task running): one enter does both.
        let pending = {
            let sq = self.ring.submission();
            !sq.is_empty() || sq.taskrun()
        };
        if pending {
            self.flush();
            n += self.reap();
        }
        n
    }

    /// Blocks until a completion, a wake, or `timeout`.
    ///
    /// It never sleeps after consuming a wake: a wake whose eventfd write was skipped because the
    /// flag was still set is covered by the completion this call just reaped, and a message pushed
    /// before that wake is visible through `len` (the push happens before the flag's swap, which
    /// this thread's clearing swap reads).
    pub(crate) fn park(&mut self, timeout: Option<Duration>) -> usize {
        self.woken = false;
        let n = self.poll();
        if n > 0
            || self.woken
            || timeout == Some(Duration::ZERO)
            || self.inbox.len.load(Ordering::Acquire) > 0
            || self.inbox.notified.load(Ordering::Acquire)
            || !self.efd_armed
        {
            return n + self.poll();
        }
        // Armed only here, so a busy worker's reaps never submit it: it goes in with the wait,
        // and completes at once if the watched set already has events.
        self.arm_watch();
        let r = match timeout {
            None => self.ring.submit_and_wait(1),
            Some(d) => {
                let ts = types::Timespec::from(d);
                let args = types::SubmitArgs::new().timespec(&ts);
                self.ring.submitter().submit_with_args(1, &args)
            }
        };
        if let Err(e) = r {
            match e.raw_os_error() {
                Some(libc::ETIME) | Some(libc::EINTR) | Some(libc::EBUSY) => {}
                _ => tracing::warn!("pagegen-io: io_uring wait failed: {e}"),
            }
        }
        self.drain_inbox();
        n + self.reap()
    }
}

impl Drop for LocalRing {
    /// Cancels everything in flight and waits for every completion, so no buffer is freed while the
    /// kernel may still write it (op.rs protocol).
    fn drop(&mut self) {
        self.shutting_down = true;
        self.drain_inbox();
        for op in std::mem::take(&mut self.backlog) {
            if let Some(w) = op.complete(-libc::ECANCELED) {
                self.wakers.push(w);
            }
        }
        let live: Vec<u64> = self
            .slots
            .iter()
            .enumerate()
            .filter(|(_, s)| s.op.is_some())
            .map(|(i, s)| user_data(i as u32, s.gen, 0))
            .collect();
        for ud in live {
            self.cancel(ud);
        }
        if self.efd_armed {
            // Completes the eventfd read; it is not re-armed while shutting down.
            self.inbox.efd.notify();
        }
        let mut watch_removal_sent = false;
        while self.in_flight > 0 || self.internal > 0 || self.efd_armed || self.watch_armed {
            if self.watch_armed && !watch_removal_sent {
                // The watch completes only when removed (or its fd becomes readable); retried
                // each turn until the removal fits in the submission queue.
                let e = opcode::PollRemove::new(WATCH_TAG)
                    .build()
                    .user_data(CANCEL_TAG);
                // SAFETY: a poll removal references no memory (the target is named by user_data).
                watch_removal_sent = unsafe { self.push(&e) };
                if watch_removal_sent {
                    self.internal += 1;
                }
            }
            if let Err(e) = self.ring.submit_and_wait(1) {
                if e.raw_os_error() != Some(libc::EINTR) {
                    tracing::warn!("pagegen-io: io_uring wait during shutdown failed: {e}");
                    // The ring cannot make progress; leak the in-flight resources rather than free
                    // memory the kernel may still write.
                    for s in &mut self.slots {
                        if let Some(op) = s.op.take() {
                            std::mem::forget(op);
                        }
                    }
                    std::mem::forget(std::mem::replace(&mut self.efd_buf, Box::new(0)));
                    break;
                }
            }
            self.reap();
        }
        for w in self.wakers.drain(..) {
            w.wake();
        }
    }
}

thread_local! {
    static LOCAL: RefCell<Option<LocalRing>> = const { RefCell::new(None) };
}

/// Makes `ring` this thread's ring; returns the one it replaces.
pub(crate) fn install(ring: LocalRing) -> Option<LocalRing> {
    LOCAL.with(|l| l.borrow_mut().replace(ring))
}

/// Removes this thread's ring.
pub(crate) fn uninstall() -> Option<LocalRing> {
    LOCAL.try_with(|l| l.borrow_mut().take()).ok().flatten()
}

/// Runs `f` on this thread's ring if it serves `io_id` and is not already borrowed.
pub(crate) fn with_local<R>(io_id: u64, f: impl FnOnce(&mut LocalRing) -> R) -> Option<R> {
    LOCAL
        .try_with(|l| {
            let mut g = l.try_borrow_mut().ok()?;
            let ring = g.as_mut()?;
            (ring.io_id == io_id).then(|| f(ring))
        })
        .ok()
        .flatten()
}
