//! Per-class I/O limits, shared by every ring and the blocking pool of one [`Io`](crate::Io).
//!
//! [`IoClasses`] wraps the [`FairQueue`] state machine in a mutex and turns it into futures:
//! [`IoClasses::acquire`] resolves to a [`Permit`] once the operation's class (and request, and the
//! device) has room; dropping the permit after the operation's completion releases the slot and
//! hands it to the next waiter in virtual-time order. A class held back by its token bucket is
//! re-examined by a small pacer thread at the time the bucket refills (started on first need).
//!
//! It is the [`ClassObserver`] pagegen-io exports: subscribe it to the
//! [`ClassRegistry`](pagegen_core::ClassRegistry) and every class is set up with its shares and the
//! default limits on registration; [`IoClasses::set_depth`] and [`IoClasses::set_bandwidth`]
//! change a class at run time.
//!
//! Protocol for a waiter (the [`Ticket`]): `granted` is set only under the queue's lock, by
//! `dispatch`. A dropped [`Acquire`] removes its ticket under the same lock; if the ticket is no
//! longer queued it was granted, and the drop releases the slot it was given.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
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
        Some(ctx) => {
            let depth = ctx.grant().io_depth() as u64;
            if ctx.io.begin_op() > depth.max(1) {
                ctx.io.end_op();
                false
            } else {
                true
            }
        }
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
    deadline: Mutex<Option<Instant>>,
    cv: Condvar,
}

/// Per-class depth and bandwidth limits with fair queueing by shares. Cheap to share as `Arc`.
pub struct IoClasses {
    queue: Mutex<FairQueue<Arc<Ticket>>>,
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
            defaults: Mutex::new(ClassLimits::default()),
            epoch: Instant::now(),
            pacer: OnceLock::new(),
            me: me.clone(),
        })
    }

    fn lock(&self) -> MutexGuard<'_, FairQueue<Arc<Ticket>>> {
        self.queue.lock().unwrap_or_else(|e| e.into_inner())
    }
    fn now_ns(&self) -> u64 {
        self.epoch.elapsed().as_nanos() as u64
    }

    /// Limits newly registered classes start with.
    pub fn set_default_limits(&self, limits: ClassLimits) {
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
        self.lock().set_device_depth(depth);
        self.kick();
        Ok(())
    }
    /// A class's current limits.
    pub fn limits(&self, class: ClassId) -> ClassLimits {
        self.lock().limits(class)
    }
    /// Operations of `class` in flight now.
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
            let next = q.dispatch(self.now_ns(), &mut admitted);
            for t in &admitted {
                t.granted.store(true, Ordering::Release);
            }
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

    fn pace_at(&self, at: Instant) {
        let pacer = self.pacer.get_or_init(|| {
            let pacer = Arc::new(Pacer {
                deadline: Mutex::new(None),
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
        });
        let mut d = pacer.deadline.lock().unwrap_or_else(|e| e.into_inner());
        if d.is_none_or(|cur| at < cur) {
            *d = Some(at);
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
        }
    }
}

fn pacer_loop(me: Weak<IoClasses>, pacer: Arc<Pacer>) {
    loop {
        let mut d = pacer.deadline.lock().unwrap_or_else(|e| e.into_inner());
        loop {
            match *d {
                None => {
                    d = pacer.cv.wait(d).unwrap_or_else(|e| e.into_inner());
                }
                Some(at) => {
                    let now = Instant::now();
                    if now >= at {
                        *d = None;
                        break;
                    }
                    d = pacer
                        .cv
                        .wait_timeout(d, at - now)
                        .unwrap_or_else(|e| e.into_inner())
                        .0;
                }
            }
        }
        drop(d);
        match me.upgrade() {
            Some(classes) => classes.kick(),
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
        let waiting = {
            let mut q = self.classes.lock();
            q.release(self.class);
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
}

impl Acquire {
    fn permit(&mut self) -> Permit {
        self.done = true;
        Permit {
            classes: Arc::clone(&self.classes),
            class: self.class,
            ctx: self.ctx.take(),
        }
    }
}

impl Future for Acquire {
    type Output = Permit;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Permit> {
        let this = self.get_mut();
        assert!(!this.done, "Acquire polled after completion");
        match &this.ticket {
            None => {
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
                    if q.try_admit(&ticket, now) {
                        drop(q);
                        return Poll::Ready(this.permit());
                    }
                    q.enqueue(Arc::clone(&ticket));
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
        let removed = self
            .classes
            .lock()
            .remove(self.class, |t| Arc::ptr_eq(t, &ticket));
        if !removed {
            // Granted after our last poll: the slot is ours; give it back.
            debug_assert!(ticket.granted.load(Ordering::Acquire));
            drop(self.permit());
        }
    }
}
