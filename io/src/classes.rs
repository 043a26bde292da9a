//! Per-class I/O limits, shared by every ring and the blocking pool of one [`Io`](crate::Io).
//!
//! [`IoClasses`] wraps the [`FairQueue`] state machine in a mutex and turns it into futures:
//! [`IoClasses::acquire`] resolves to a [`Permit`] once the operation's class (and request, and the
//! device) has room; dropping the permit after the operation's completion releases the slot and
//! hands it to the next waiter in virtual-time order. The backend drops it before the operation's
//! future can see the result (op.rs protocol, step 3), so a returned future holds no slot. A class held back by its token bucket is
//! re-examined by a small pacer thread at the time the bucket refills (started on first need).
//!
//! It is the [`ClassObserver`] pagegen-io exports: subscribe it to the
//! [`ClassRegistry`](pagegen_core::ClassRegistry) and every class is set up with its shares and the
//! default limits on registration; [`IoClasses::set_depth`] and [`IoClasses::set_bandwidth`]
//! change a class at run time.
//!
//! Per-request bandwidth (`Grant::io_bytes_per_sec`): before an operation of a request with a
//! finite rate joins the class queue, [`Acquire`] reserves its bytes on the request's pacing clock
//! (`IoAccount::reserve_bandwidth` in core) and, when that gives a later start, sleeps until then
//! on the pacer thread, holding no slot. A future dropped while paced keeps its reservation (the
//! request is charged as if it had read): simpler, and it errs on the side of the limit.
//!
//! Protocol for a waiter (the [`Ticket`]): `granted` is set only under the queue's lock, by
//! `dispatch`. A dropped [`Acquire`] removes its ticket under the same lock; if the ticket is no
//! longer queued it was granted, and the drop releases the slot it was given.
//!
//! Fast path: while no class has a limit and nobody waits, an operation is admitted with two
//! atomics (`fast` in flight, checked against the device depth) and no lock; this is the common
//! case of a service that has not configured I/O limits. Such operations count device-wide only
//! (not in [`IoClasses::in_flight`]), and the queue sees them as `external` device load. Lost-wake
//! freedom: a releaser decrements `fast` then reads `waiting`; an enqueuer raises `waiting` then
//! reads `fast` in dispatch; all four accesses are `SeqCst`, so one of them sees the other.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, OnceLock, Weak};
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use pagegen_core::{ClassId, ClassObserver, ClassSpec, RequestCtx, Shares};

use crate::error::IoError;
use crate::fair::{ClassLimits, FairQueue, Waiter};

/// Device-wide operations in flight before classes queue by shares. 256 is one ring's submission
/// queue (see `ring.rs`): beyond it, extra depth only lengthens kernel queues.
pub const DEFAULT_DEVICE_DEPTH: u32 = 256;

/// One waiting (or just admitted) operation.
#[derive(Debug)]
pub(crate) struct Ticket {
    class: ClassId,
    bytes: u64,
    ctx: Option<Arc<RequestCtx>>,
    granted: AtomicBool,
    waker: Mutex<Option<Waker>>,
}

fn request_begin(ctx: &Option<Arc<RequestCtx>>) -> bool {
    match ctx {
        None => true,
        // Compare-and-swap: a request at its depth never sees its counter move, even when two
        // threads admit for it at once.
        Some(ctx) => ctx.io.try_begin_op((ctx.grant().io_depth() as u64).max(1)),
    }
}

impl Waiter for Arc<Ticket> {
    fn class(&self) -> ClassId {
        self.class
    }
    fn bytes(&self) -> u64 {
        self.bytes
    }
    fn try_begin_request(&self) -> bool {
        request_begin(&self.ctx)
    }
}

struct Pacer {
    state: Mutex<PacerState>,
    cv: Condvar,
}

#[derive(Default)]
struct PacerState {
    /// When the queue must be re-examined (a class bucket refills).
    kick_at: Option<Instant>,
    /// Operations held back by their request's bandwidth: woken at their start time.
    sleepers: Vec<(Instant, Waker)>,
}

impl PacerState {
    fn next(&self) -> Option<Instant> {
        self.sleepers.iter().map(|s| s.0).chain(self.kick_at).min()
    }
}

/// The process-wide epoch of per-request bandwidth reservations (one request may use several
/// [`Io`](crate::Io) runtimes, whose queue clocks differ).
fn pace_epoch() -> Instant {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    *EPOCH.get_or_init(Instant::now)
}

/// Per-class depth and bandwidth limits with fair queueing by shares. Cheap to share as `Arc`.
pub struct IoClasses {
    queue: Mutex<FairQueue<Arc<Ticket>>>,
    /// Some class has a depth or bandwidth limit: every admission goes through the queue.
    limited: AtomicBool,
    /// Operations admitted by the fast path, in flight.
    fast: AtomicU32,
    /// Mirrors of the queue's waiting count, in-flight count and device depth (written under its
    /// lock), read by the fast path.
    waiting: AtomicUsize,
    queued_in_flight: AtomicU32,
    device_depth: AtomicU32,
    defaults: Mutex<ClassLimits>,
    epoch: Instant,
    pacer: OnceLock<Arc<Pacer>>,
    me: Weak<IoClasses>,
}

impl fmt::Debug for IoClasses {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let q = self.lock();
        f.debug_struct("IoClasses")
            .field("in_flight", &q.total_in_flight())
            .field("waiting", &q.waiting())
            .finish_non_exhaustive()
    }
}

impl IoClasses {
    /// Limits with `device_depth` operations in flight device-wide and no per-class limits.
    pub fn new(device_depth: u32) -> Arc<Self> {
        Arc::new_cyclic(|me| IoClasses {
            queue: Mutex::new(FairQueue::new(device_depth)),
            limited: AtomicBool::new(false),
            fast: AtomicU32::new(0),
            waiting: AtomicUsize::new(0),
            queued_in_flight: AtomicU32::new(0),
            device_depth: AtomicU32::new(device_depth.max(1)),
            defaults: Mutex::new(ClassLimits::default()),
            epoch: Instant::now(),
            pacer: OnceLock::new(),
            me: me.clone(),
        })
    }

    fn lock(&self) -> MutexGuard<'_, FairQueue<Arc<Ticket>>> {
        self.queue.lock().unwrap_or_else(|e| e.into_inner())
    }
    /// Publishes the queue's counters for the fast path (called with the lock held).
    fn mirror(&self, q: &FairQueue<Arc<Ticket>>) {
        self.waiting.store(q.waiting(), Ordering::SeqCst);
        self.queued_in_flight
            .store(q.total_in_flight(), Ordering::SeqCst);
        self.device_depth.store(q.device_depth(), Ordering::SeqCst);
    }
    /// Tells the queue about fast-path load before it admits anyone.
    fn sync_external(&self, q: &mut FairQueue<Arc<Ticket>>) {
        q.set_external(self.fast.load(Ordering::SeqCst));
    }
    fn now_ns(&self) -> u64 {
        self.epoch.elapsed().as_nanos() as u64
    }

    /// Limits newly registered classes start with.
    pub fn set_default_limits(&self, limits: ClassLimits) {
        if limits != ClassLimits::default() {
            self.limited.store(true, Ordering::SeqCst);
        }
        *self.defaults.lock().unwrap_or_else(|e| e.into_inner()) = limits;
    }

    /// Changes how many operations of `class` may be in flight at once (`u32::MAX`: unlimited).
    pub fn set_depth(&self, class: ClassId, depth: u32) -> Result<(), IoError> {
        if depth == 0 {
            return Err(IoError::ZeroDepth { class });
        }
        self.update(class, |l| l.depth = depth)
    }
    /// Changes `class`'s bandwidth limit in bytes per second (`None`: unlimited).
    pub fn set_bandwidth(&self, class: ClassId, bytes_per_sec: Option<u64>) -> Result<(), IoError> {
        if bytes_per_sec == Some(0) {
            return Err(IoError::ZeroBandwidth { class });
        }
        self.update(class, |l| l.bytes_per_sec = bytes_per_sec)
    }
    /// Changes the device-wide in-flight limit.
    pub fn set_device_depth(&self, depth: u32) -> Result<(), IoError> {
        if depth == 0 {
            return Err(IoError::ZeroDepth {
                class: ClassId::DEFAULT,
            });
        }
        {
            let mut q = self.lock();
            q.set_device_depth(depth);
            self.mirror(&q);
        }
        self.kick();
        Ok(())
    }
    /// A class's current limits.
    pub fn limits(&self, class: ClassId) -> ClassLimits {
        self.lock().limits(class)
    }
    /// Operations of `class` in flight now. Operations admitted while no class had a limit (the
    /// lock-free fast path) are counted device-wide only, not here.
    pub fn in_flight(&self, class: ClassId) -> u32 {
        self.lock().in_flight(class)
    }

    fn update(&self, class: ClassId, f: impl FnOnce(&mut ClassLimits)) -> Result<(), IoError> {
        if class.index() >= ClassId::MAX_CLASSES {
            return Err(IoError::UnknownClass { class });
        }
        let now = self.now_ns();
        {
            let mut q = self.lock();
            let mut l = q.limits(class);
            f(&mut l);
            if l != ClassLimits::default() {
                self.limited.store(true, Ordering::SeqCst);
            }
            q.set_limits(class, l, now);
        }
        self.kick();
        Ok(())
    }

    /// Runs the dispatcher and wakes whoever it admitted.
    fn kick(&self) {
        let mut admitted = Vec::new();
        let next = {
            let mut q = self.lock();
            self.sync_external(&mut q);
            let next = q.dispatch(self.now_ns(), &mut admitted);
            for t in &admitted {
                t.granted.store(true, Ordering::Release);
            }
            self.mirror(&q);
            next
        };
        for t in admitted {
            if let Some(w) = t.waker.lock().unwrap_or_else(|e| e.into_inner()).take() {
                w.wake();
            }
        }
        if let Some(at) = next {
            self.pace_at(self.epoch + Duration::from_nanos(at));
        }
    }

    fn pacer(&self) -> &Arc<Pacer> {
        self.pacer.get_or_init(|| {
            let pacer = Arc::new(Pacer {
                state: Mutex::new(PacerState::default()),
                cv: Condvar::new(),
            });
            let me = self.me.clone();
            let p = Arc::clone(&pacer);
            let spawned = std::thread::Builder::new()
                .name("pagegen-io-pacer".into())
                .spawn(move || pacer_loop(me, p));
            if let Err(e) = spawned {
                tracing::warn!("pagegen-io: cannot start the bandwidth pacer thread: {e}");
            }
            pacer
        })
    }

    fn pace_at(&self, at: Instant) {
        let pacer = self.pacer();
        let mut st = pacer.state.lock().unwrap_or_else(|e| e.into_inner());
        if st.kick_at.is_none_or(|cur| at < cur) {
            st.kick_at = Some(at);
            pacer.cv.notify_one();
        }
    }

    /// Wakes `waker` at `at` (an operation held back by its request's bandwidth).
    fn wake_at(&self, at: Instant, waker: Waker) {
        let pacer = self.pacer();
        let mut st = pacer.state.lock().unwrap_or_else(|e| e.into_inner());
        let earlier = st.next().is_none_or(|cur| at < cur);
        st.sleepers.push((at, waker));
        if earlier {
            pacer.cv.notify_one();
        }
    }

    /// Waits for room for one operation of `bytes` in the current request's class (or
    /// [`ClassId::DEFAULT`] outside any request).
    pub(crate) fn acquire(self: &Arc<Self>, bytes: u64) -> Acquire {
        let ctx = RequestCtx::current();
        let class = ctx.as_ref().map_or(ClassId::DEFAULT, |c| c.class());
        Acquire {
            classes: Arc::clone(self),
            class,
            bytes,
            ctx,
            ticket: None,
            done: false,
            fast: false,
            paced: false,
            not_before: None,
        }
    }
}

fn pacer_loop(me: Weak<IoClasses>, pacer: Arc<Pacer>) {
    let mut due = Vec::new();
    loop {
        let mut st = pacer.state.lock().unwrap_or_else(|e| e.into_inner());
        let kick = loop {
            let now = Instant::now();
            match st.next() {
                None => st = pacer.cv.wait(st).unwrap_or_else(|e| e.into_inner()),
                Some(at) if now >= at => {
                    st.sleepers.retain(|(t, w)| {
                        if *t <= now {
                            due.push(w.clone());
                        }
                        *t > now
                    });
                    break st.kick_at.take_if(|t| *t <= now).is_some();
                }
                Some(at) => {
                    st = pacer
                        .cv
                        .wait_timeout(st, at - now)
                        .unwrap_or_else(|e| e.into_inner())
                        .0;
                }
            }
        };
        drop(st);
        for w in due.drain(..) {
            w.wake();
        }
        match me.upgrade() {
            Some(classes) if kick => classes.kick(),
            Some(_) => {}
            None => return,
        }
    }
}

impl ClassObserver for IoClasses {
    fn class_registered(&self, id: ClassId, spec: &ClassSpec) {
        let defaults = *self.defaults.lock().unwrap_or_else(|e| e.into_inner());
        let now = self.now_ns();
        let mut q = self.lock();
        q.set_shares(id, spec.shares);
        // Idempotent: a re-registration keeps limits set at run time.
        if q.limits(id) == ClassLimits::default() && defaults != ClassLimits::default() {
            self.limited.store(true, Ordering::SeqCst);
            q.set_limits(id, defaults, now);
        }
    }
}

impl IoClasses {
    /// Sets a class's shares directly (what a registration does).
    pub fn set_shares(&self, class: ClassId, shares: Shares) {
        self.lock().set_shares(class, shares);
    }
}

/// Room for one operation; dropping it releases the class, device and request slots.
#[derive(Debug)]
pub(crate) struct Permit {
    classes: Arc<IoClasses>,
    class: ClassId,
    ctx: Option<Arc<RequestCtx>>,
    /// Admitted by the fast path (counted in `IoClasses::fast`, not in the queue).
    fast: bool,
}

impl Permit {
    /// The request the operation works for.
    pub(crate) fn ctx(&self) -> Option<&Arc<RequestCtx>> {
        self.ctx.as_ref()
    }
}

impl Drop for Permit {
    fn drop(&mut self) {
        if let Some(ctx) = &self.ctx {
            ctx.io.end_op();
        }
        let waiting = if self.fast {
            self.classes.fast.fetch_sub(1, Ordering::SeqCst);
            self.classes.waiting.load(Ordering::SeqCst)
        } else {
            let mut q = self.classes.lock();
            q.release(self.class);
            self.classes.mirror(&q);
            q.waiting()
        };
        if waiting > 0 {
            self.classes.kick();
        }
    }
}

/// Future of [`IoClasses::acquire`].
#[derive(Debug)]
pub(crate) struct Acquire {
    classes: Arc<IoClasses>,
    class: ClassId,
    bytes: u64,
    ctx: Option<Arc<RequestCtx>>,
    ticket: Option<Arc<Ticket>>,
    done: bool,
    fast: bool,
    /// The request's bandwidth was reserved (first poll).
    paced: bool,
    /// Start time given by the request's bandwidth (`Grant::io_bytes_per_sec`).
    not_before: Option<Instant>,
}

impl Acquire {
    fn permit(&mut self) -> Permit {
        self.done = true;
        Permit {
            classes: Arc::clone(&self.classes),
            class: self.class,
            ctx: self.ctx.take(),
            fast: self.fast,
        }
    }

    /// Per-request bandwidth: on the first poll, reserves this operation's bytes on the request's
    /// pacing clock (`IoAccount::reserve_bandwidth`); until the start time it gives, the operation
    /// waits here, before the class queue, holding no slot. `true`: go on.
    fn paced(&mut self, cx: &Context<'_>) -> bool {
        if !self.paced {
            self.paced = true;
            if let (Some(ctx), true) = (&self.ctx, self.bytes > 0) {
                let rate = ctx.grant().get().io_bytes_per_sec;
                let epoch = pace_epoch();
                let now = epoch.elapsed().as_nanos() as u64;
                let wait = ctx.io.reserve_bandwidth(self.bytes, rate, now);
                if wait > 0 {
                    self.not_before = Some(epoch + Duration::from_nanos(now + wait));
                }
            }
        }
        match self.not_before {
            Some(at) if Instant::now() < at => {
                self.classes.wake_at(at, cx.waker().clone());
                false
            }
            _ => {
                self.not_before = None;
                true
            }
        }
    }

    /// The lock-free admission (see the module docs); `false` leaves no trace.
    fn try_fast(&mut self) -> bool {
        let c = &self.classes;
        if c.limited.load(Ordering::Relaxed) || c.waiting.load(Ordering::SeqCst) > 0 {
            return false;
        }
        if !request_begin(&self.ctx) {
            return false;
        }
        let n = c.fast.fetch_add(1, Ordering::SeqCst) + 1;
        let queued = c.queued_in_flight.load(Ordering::SeqCst);
        if n.saturating_add(queued) <= c.device_depth.load(Ordering::SeqCst) {
            self.fast = true;
            return true;
        }
        c.fast.fetch_sub(1, Ordering::SeqCst);
        if let Some(ctx) = &self.ctx {
            ctx.io.end_op();
        }
        false
    }
}

impl Future for Acquire {
    type Output = Permit;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Permit> {
        let this = self.get_mut();
        assert!(!this.done, "Acquire polled after completion");
        if !this.paced(cx) {
            return Poll::Pending;
        }
        match &this.ticket {
            None => {
                if this.try_fast() {
                    return Poll::Ready(this.permit());
                }
                let ticket = Arc::new(Ticket {
                    class: this.class,
                    bytes: this.bytes,
                    ctx: this.ctx.clone(),
                    granted: AtomicBool::new(false),
                    waker: Mutex::new(Some(cx.waker().clone())),
                });
                let now = this.classes.now_ns();
                {
                    let mut q = this.classes.lock();
                    this.classes.sync_external(&mut q);
                    if q.try_admit(&ticket, now) {
                        this.classes.mirror(&q);
                        drop(q);
                        return Poll::Ready(this.permit());
                    }
                    q.enqueue(Arc::clone(&ticket));
                    this.classes.mirror(&q);
                }
                this.ticket = Some(ticket);
                this.classes.kick();
            }
            Some(ticket) => {
                *ticket.waker.lock().unwrap_or_else(|e| e.into_inner()) = Some(cx.waker().clone());
            }
        }
        let ticket = this.ticket.as_ref().expect("ticket set above");
        if ticket.granted.load(Ordering::Acquire) {
            this.ticket = None;
            Poll::Ready(this.permit())
        } else {
            Poll::Pending
        }
    }
}

impl Drop for Acquire {
    fn drop(&mut self) {
        let Some(ticket) = self.ticket.take() else {
            return;
        };
        let removed = {
            let mut q = self.classes.lock();
            let removed = q.remove(self.class, |t| Arc::ptr_eq(t, &ticket));
            self.classes.mirror(&q);
            removed
        };
        if !removed {
            // Granted after our last poll: the slot is ours; give it back.
            debug_assert!(ticket.granted.load(Ordering::Acquire));
            drop(self.permit());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::task::Wake;

    struct Count(std::sync::atomic::AtomicUsize);
    impl Wake for Count {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }

    fn poll(a: &mut Acquire, w: &Waker) -> Poll<Permit> {
        Pin::new(a).poll(&mut Context::from_waker(w))
    }

    #[test]
    fn the_fast_path_respects_the_device_depth_and_hands_over_on_release() {
        let classes = IoClasses::new(2);
        let count = Arc::new(Count(std::sync::atomic::AtomicUsize::new(0)));
        let waker = Waker::from(Arc::clone(&count));
        let mut a = classes.acquire(0);
        let mut b = classes.acquire(0);
        let mut c = classes.acquire(0);
        let pa = poll(&mut a, &waker);
        let pb = poll(&mut b, &waker);
        assert!(pa.is_ready() && pb.is_ready(), "two fast admissions");
        assert!(poll(&mut c, &waker).is_pending(), "device depth 2 is full");
        assert_eq!(classes.fast.load(Ordering::SeqCst), 2);
        drop(pa);
        assert_eq!(
            count.0.load(Ordering::SeqCst),
            1,
            "the release wakes the waiter"
        );
        let pc = poll(&mut c, &waker);
        assert!(pc.is_ready());
        // While someone waits, newcomers queue behind them (no overtaking by the fast path).
        let mut d = classes.acquire(0);
        let mut e = classes.acquire(0);
        assert!(poll(&mut d, &waker).is_pending());
        assert!(poll(&mut e, &waker).is_pending());
        drop(pb);
        let pd = poll(&mut d, &waker);
        assert!(pd.is_ready());
        assert!(poll(&mut e, &waker).is_pending());
        drop(e); // A dropped waiter leaves the queue.
        assert_eq!(classes.waiting.load(Ordering::SeqCst), 0);
        drop((pc, pd));
        assert_eq!(classes.fast.load(Ordering::SeqCst), 0);
        assert_eq!(classes.lock().total_in_flight(), 0);
    }

    #[test]
    fn a_class_limit_turns_the_fast_path_off() {
        let classes = IoClasses::new(64);
        classes.set_depth(ClassId::DEFAULT, 1).unwrap();
        let count = Arc::new(Count(std::sync::atomic::AtomicUsize::new(0)));
        let waker = Waker::from(count);
        let mut a = classes.acquire(0);
        let mut b = classes.acquire(0);
        let pa = poll(&mut a, &waker);
        assert!(pa.is_ready());
        assert_eq!(classes.in_flight(ClassId::DEFAULT), 1, "counted per class");
        assert!(poll(&mut b, &waker).is_pending());
        drop(pa);
        assert!(poll(&mut b, &waker).is_ready());
    }

    #[test]
    fn a_request_bandwidth_holds_the_next_operation_back_without_a_slot() {
        use pagegen_core::{Grant, RequestId};
        let classes = IoClasses::new(64);
        let mut grant = Grant::unlimited(ClassId::DEFAULT);
        grant.io_bytes_per_sec = 1_000; // 4 KiB take about 4 s: the second read must wait.
        let ctx = RequestCtx::new(RequestId(7), grant, 0);
        let count = Arc::new(Count(std::sync::atomic::AtomicUsize::new(0)));
        let waker = Waker::from(count);
        let (mut a, mut b, mut meta) = {
            let _in = RequestCtx::enter(&ctx);
            (
                classes.acquire(4096),
                classes.acquire(4096),
                classes.acquire(0),
            )
        };
        let pa = poll(&mut a, &waker);
        assert!(pa.is_ready(), "an idle request starts at once");
        assert!(
            poll(&mut b, &waker).is_pending(),
            "paced by the request's rate"
        );
        assert_eq!(
            ctx.io.in_flight(),
            1,
            "the paced operation holds no request slot"
        );
        assert_eq!(
            classes.waiting.load(Ordering::SeqCst),
            0,
            "nor a queue place"
        );
        assert!(
            poll(&mut meta, &waker).is_ready(),
            "metadata moves no bytes"
        );
        drop(b);
        drop((pa, meta));
        assert_eq!(ctx.io.in_flight(), 0);
        // Another request is not slowed by this one's reservations.
        let other = RequestCtx::new(RequestId(8), grant, 0);
        let mut c = {
            let _in = RequestCtx::enter(&other);
            classes.acquire(4096)
        };
        assert!(poll(&mut c, &waker).is_ready());
    }
}
