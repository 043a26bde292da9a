//! The request context: one per request, shared by every task, blocking closure and I/O operation
//! that works on the request's behalf.
//!
//! Contracts:
//! - A [`RequestCtx`] is created at admission (`classify → predict → grant`) and lives in an `Arc` as
//!   long as any task of the request does. Its id and class never change; its grant may (checkpoints).
//! - Subsystems write into its accounts following the *flush once per poll* protocol of
//!   [`account`](crate::account).
//! - The executor makes the context of the task it is polling the thread's **current** context
//!   ([`RequestCtx::enter`]) for the duration of the poll, of a drop, or of a `spawn_blocking` closure,
//!   so code without a handle (pagegen-io's `fs` functions, a `tracing` layer) can find it with
//!   [`RequestCtx::current`]/[`RequestCtx::with_current`]. Children spawned from inside a poll inherit
//!   it.
//! - Control flags: anyone may ask for the request to be cancelled ([`RequestCtx::request_cancel`]);
//!   the executor honours it at the next poll boundary of each of the request's tasks. A task parked
//!   on a future that never wakes would never reach that boundary, so the request's root future
//!   registers its waker with [`RequestCtx::register_cancel_waker`] (the root crate's HTTP edge does,
//!   on every poll) and the call that sets the cancel reason wakes it: the executor then polls it,
//!   sees the flag first, and drops it. Other tasks of the request stop at their next poll. Checkpoint flags
//!   ([`RequestCtx::mark_checkpoint`]) record, once each, that usage crossed 50 % or 90 % of a grant.

use std::cell::RefCell;
use std::fmt;
use std::sync::atomic::{AtomicBool, AtomicU16, AtomicU32, AtomicU8, Ordering};
use std::sync::{Arc, Mutex};
use std::task::Waker;

use crate::account::{CpuAccount, IoAccount, MemAccount, NetAccount, SpanAccount};
use crate::cancel::CancelReason;
use crate::class::ClassId;
use crate::demand::{Demand, Resource};
use crate::grant::{Grant, GrantCell};
use crate::usage::{PerfCounters, Usage};

/// Process-unique request id.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Debug)]
pub struct RequestId(pub u64);

impl RequestId {
    /// The id of every background context (work nobody admitted: unclassified spawns, a class's
    /// background work, connection tasks). Accounts of such contexts are shared by unrelated work,
    /// so profilers skip them.
    pub const BACKGROUND: RequestId = RequestId(u64::MAX);

    /// Whether this is [`RequestId::BACKGROUND`].
    pub const fn is_background(self) -> bool {
        self.0 == u64::MAX
    }
}

impl fmt::Display for RequestId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "req#{}", self.0)
    }
}

/// Checkpoint levels, as bit positions within a resource's byte of the checkpoint word.
const LEVEL_HALF: u32 = 0;
const LEVEL_NINETY: u32 = 1;
const LEVEL_SOFT: u32 = 2;

/// How far a request's usage has gone into one of its grants.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum CheckpointLevel {
    /// 50 % of the grant.
    Half,
    /// 90 % of the grant.
    Ninety,
    /// The soft limit (memory); the runtime may extend the grant.
    Soft,
}

impl CheckpointLevel {
    fn bit(self, resource: Resource) -> u32 {
        let level = match self {
            CheckpointLevel::Half => LEVEL_HALF,
            CheckpointLevel::Ninety => LEVEL_NINETY,
            CheckpointLevel::Soft => LEVEL_SOFT,
        };
        1 << (resource as u32 * 4 + level)
    }
}

/// What the checkpoints of one request saw and did, as recorded in its profile.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Default)]
pub struct CheckpointLog {
    /// Levels reached: bit `resource × 4 + level` (level 0 = 50 %, 1 = 90 %, 2 = soft limit).
    pub reached: u32,
    /// Resources whose grant was extended at a checkpoint: bit `resource`.
    pub extended: u8,
    /// Resources for which an extension was wanted but refused (caps or pool): bit `resource`.
    pub refused: u8,
}

impl CheckpointLog {
    /// Whether `resource` crossed `level`.
    pub fn reached(&self, resource: Resource, level: CheckpointLevel) -> bool {
        self.reached & level.bit(resource) != 0
    }
    /// Whether `resource`'s grant was extended.
    pub fn extended(&self, resource: Resource) -> bool {
        self.extended & (1 << resource as u8) != 0
    }
    /// Whether an extension of `resource` was refused.
    pub fn refused(&self, resource: Resource) -> bool {
        self.refused & (1 << resource as u8) != 0
    }
    /// Whether any checkpoint fired.
    pub fn any(&self) -> bool {
        self.reached != 0
    }
}

/// One request's identity, grant, accounts and control flags.
pub struct RequestCtx {
    id: RequestId,
    class: ClassId,
    /// Admission time on the runtime's clock, ns.
    admitted_ns: u64,
    grant: GrantCell,
    /// CPU and scheduling.
    pub cpu: CpuAccount,
    /// Memory.
    pub mem: MemAccount,
    /// File I/O.
    pub io: IoAccount,
    /// Outgoing network.
    pub net: NetAccount,
    /// Tracing spans.
    pub spans: SpanAccount,
    counters: Mutex<Option<PerfCounters>>,
    demand: Mutex<Option<Demand>>,
    /// 0 = not cancelled; otherwise `CancelReason::to_tag() + 1`.
    cancel: AtomicU8,
    cancel_waker: Mutex<Option<Waker>>,
    checkpoints: AtomicU32,
    /// Bits 0..8: extended resources; bits 8..16: refused extensions.
    actions: AtomicU16,
    demoted: AtomicBool,
}

impl fmt::Debug for RequestCtx {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RequestCtx")
            .field("id", &self.id)
            .field("class", &self.class)
            .field("grant", &self.grant.get())
            .field("cancel", &self.cancel_requested())
            .finish_non_exhaustive()
    }
}

thread_local! {
    static CURRENT: RefCell<Option<Arc<RequestCtx>>> = const { RefCell::new(None) };
}

impl RequestCtx {
    /// A new context. `admitted_ns` is the admission time on the runtime's [`Clock`](crate::Clock).
    pub fn new(id: RequestId, grant: Grant, admitted_ns: u64) -> Arc<Self> {
        Arc::new(RequestCtx {
            id,
            class: grant.class,
            admitted_ns,
            grant: GrantCell::new(grant),
            cpu: CpuAccount::default(),
            mem: MemAccount::default(),
            io: IoAccount::default(),
            net: NetAccount::default(),
            spans: SpanAccount::default(),
            counters: Mutex::new(None),
            demand: Mutex::new(None),
            cancel: AtomicU8::new(0),
            cancel_waker: Mutex::new(None),
            checkpoints: AtomicU32::new(0),
            actions: AtomicU16::new(0),
            demoted: AtomicBool::new(false),
        })
    }

    /// A context for work that is not a request (background tasks, unclassified spawns): unlimited
    /// grant in `class`.
    pub fn background(id: RequestId, class: ClassId) -> Arc<Self> {
        RequestCtx::new(id, Grant::unlimited(class), 0)
    }

    /// The request id.
    pub fn id(&self) -> RequestId {
        self.id
    }
    /// The request's class.
    pub fn class(&self) -> ClassId {
        self.class
    }
    /// Admission time, ns on the runtime's clock.
    pub fn admitted_ns(&self) -> u64 {
        self.admitted_ns
    }
    /// The grant, live.
    pub fn grant(&self) -> &GrantCell {
        &self.grant
    }

    /// Stores the prediction the grant was computed from (cold path: once per request and per
    /// re-prediction).
    pub fn set_demand(&self, demand: Demand) {
        *self.demand.lock().unwrap_or_else(|e| e.into_inner()) = Some(demand);
    }
    /// The stored prediction.
    pub fn demand(&self) -> Option<Demand> {
        *self.demand.lock().unwrap_or_else(|e| e.into_inner())
    }
    /// Adds hardware counter readings (cold path: at most once per poll, only where supported).
    pub fn add_counters(&self, c: PerfCounters) {
        let mut slot = self.counters.lock().unwrap_or_else(|e| e.into_inner());
        let acc = slot.get_or_insert_with(PerfCounters::default);
        acc.instructions += c.instructions;
        acc.cycles += c.cycles;
        acc.cache_misses += c.cache_misses;
        acc.branch_misses += c.branch_misses;
    }

    /// Asks for the request to be cancelled at its tasks' next poll boundary. The first reason wins;
    /// returns whether this call set it.
    /// Wakes the registered cancel waker (see the module docs) when this call set the reason.
    pub fn request_cancel(&self, reason: CancelReason) -> bool {
        let set = self
            .cancel
            .compare_exchange(0, reason.to_tag() + 1, Ordering::AcqRel, Ordering::Acquire)
            .is_ok();
        if set {
            let waker = self
                .cancel_waker
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .take();
            if let Some(w) = waker {
                w.wake();
            }
        }
        set
    }
    /// Registers the waker a [`request_cancel`](Self::request_cancel) wakes (the request's root
    /// task; the last registration wins). Cold path: a lock, once per poll of the root future.
    pub fn register_cancel_waker(&self, waker: &Waker) {
        let mut slot = self.cancel_waker.lock().unwrap_or_else(|e| e.into_inner());
        match slot.as_ref() {
            Some(w) if w.will_wake(waker) => {}
            _ => *slot = Some(waker.clone()),
        }
    }
    /// Drops the registered cancel waker (the request ended). A waker is a reference to the task
    /// that registered it, and that task may hold this context: clearing it breaks the cycle, so a
    /// finished request never keeps its connection's task — and what that task holds — alive.
    pub fn clear_cancel_waker(&self) {
        let w = self
            .cancel_waker
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take();
        drop(w);
    }
    /// Records that the request was moved to another pool while it ran; `true` only the first time.
    pub fn mark_demoted(&self) -> bool {
        !self.demoted.swap(true, Ordering::Relaxed)
    }
    /// Whether it was demoted.
    pub fn demoted(&self) -> bool {
        self.demoted.load(Ordering::Relaxed)
    }
    /// The pending cancellation, if any.
    pub fn cancel_requested(&self) -> Option<CancelReason> {
        match self.cancel.load(Ordering::Acquire) {
            0 => None,
            t => CancelReason::from_tag(t - 1),
        }
    }

    /// Records that usage of `resource` crossed `level` of its grant. Returns `true` only the first
    /// time, so a checkpoint fires once per level.
    pub fn mark_checkpoint(&self, resource: Resource, level: CheckpointLevel) -> bool {
        let bit = level.bit(resource);
        self.checkpoints.fetch_or(bit, Ordering::Relaxed) & bit == 0
    }
    /// Whether `resource` has crossed `level`.
    pub fn checkpoint_reached(&self, resource: Resource, level: CheckpointLevel) -> bool {
        self.checkpoints.load(Ordering::Relaxed) & level.bit(resource) != 0
    }

    /// Records that `resource`'s grant was extended at a checkpoint; `true` the first time.
    pub fn mark_extended(&self, resource: Resource) -> bool {
        let bit = 1u16 << resource as u16;
        self.actions.fetch_or(bit, Ordering::Relaxed) & bit == 0
    }
    /// Records that an extension of `resource` was wanted and refused; `true` the first time.
    pub fn mark_refused(&self, resource: Resource) -> bool {
        let bit = 1u16 << (8 + resource as u16);
        self.actions.fetch_or(bit, Ordering::Relaxed) & bit == 0
    }
    /// Everything the checkpoints saw and did so far.
    pub fn checkpoint_log(&self) -> CheckpointLog {
        let actions = self.actions.load(Ordering::Relaxed);
        CheckpointLog {
            reached: self.checkpoints.load(Ordering::Relaxed),
            extended: actions as u8,
            refused: (actions >> 8) as u8,
        }
    }

    /// Snapshot of everything used so far. `now_ns` (same clock as admission) gives the wall time.
    pub fn usage(&self, now_ns: u64) -> Usage {
        let mut cpu = self.cpu.snapshot();
        cpu.wall_ns = now_ns.saturating_sub(self.admitted_ns);
        Usage {
            cpu,
            mem: self.mem.snapshot(),
            io: self.io.snapshot(),
            net: self.net.snapshot(),
            socket: self.net.socket(),
            spans: self.spans.snapshot(),
            counters: *self.counters.lock().unwrap_or_else(|e| e.into_inner()),
        }
    }

    /// Makes `ctx` the thread's current context until the guard drops (then the previous one is
    /// restored, so enters nest).
    pub fn enter(ctx: &Arc<RequestCtx>) -> CtxGuard {
        let prev = CURRENT.with(|c| c.replace(Some(Arc::clone(ctx))));
        CtxGuard { prev }
    }
    /// The thread's current context, if the thread is running a request's work.
    pub fn current() -> Option<Arc<RequestCtx>> {
        CURRENT.with(|c| c.borrow().clone())
    }
    /// Runs `f` with the current context without cloning the `Arc`.
    pub fn with_current<R>(f: impl FnOnce(Option<&RequestCtx>) -> R) -> R {
        CURRENT.with(|c| f(c.borrow().as_deref()))
    }
}

/// Restores the previous current context when dropped. Not `Send`: it belongs to the thread that
/// entered.
#[derive(Debug)]
#[must_use = "the context is current only while the guard lives"]
pub struct CtxGuard {
    prev: Option<Arc<RequestCtx>>,
}

impl Drop for CtxGuard {
    fn drop(&mut self) {
        let prev = self.prev.take();
        CURRENT.with(|c| {
            *c.borrow_mut() = prev;
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn enter_nests_and_restores() {
        assert!(RequestCtx::current().is_none());
        let a = RequestCtx::background(RequestId(1), ClassId::from_raw(1));
        let b = RequestCtx::background(RequestId(2), ClassId::from_raw(2));
        {
            let _ga = RequestCtx::enter(&a);
            assert_eq!(RequestCtx::current().map(|c| c.id()), Some(RequestId(1)));
            {
                let _gb = RequestCtx::enter(&b);
                assert_eq!(
                    RequestCtx::with_current(|c| c.map(|c| c.class())),
                    Some(ClassId::from_raw(2))
                );
            }
            assert_eq!(RequestCtx::current().map(|c| c.id()), Some(RequestId(1)));
        }
        assert!(RequestCtx::current().is_none());
    }

    #[test]
    fn first_cancel_reason_wins() {
        let c = RequestCtx::background(RequestId(1), ClassId::DEFAULT);
        assert_eq!(c.cancel_requested(), None);
        assert!(c.request_cancel(CancelReason::BudgetExceeded(Resource::Memory)));
        assert!(!c.request_cancel(CancelReason::Shed));
        assert_eq!(
            c.cancel_requested(),
            Some(CancelReason::BudgetExceeded(Resource::Memory))
        );
    }

    #[test]
    fn a_cancel_wakes_the_registered_waker_once() {
        use std::sync::atomic::AtomicUsize;
        use std::task::Wake;
        struct Count(AtomicUsize);
        impl Wake for Count {
            fn wake(self: Arc<Self>) {
                self.0.fetch_add(1, Ordering::SeqCst);
            }
        }
        let n = Arc::new(Count(AtomicUsize::new(0)));
        let c = RequestCtx::background(RequestId(1), ClassId::DEFAULT);
        c.register_cancel_waker(&Waker::from(n.clone()));
        assert!(c.request_cancel(CancelReason::Deadline));
        assert!(!c.request_cancel(CancelReason::Shed));
        assert_eq!(n.0.load(Ordering::SeqCst), 1);
        assert!(c.mark_demoted() && !c.mark_demoted() && c.demoted());
    }

    #[test]
    fn checkpoints_fire_once_per_level_and_resource() {
        let c = RequestCtx::background(RequestId(1), ClassId::DEFAULT);
        assert!(c.mark_checkpoint(Resource::Memory, CheckpointLevel::Half));
        assert!(!c.mark_checkpoint(Resource::Memory, CheckpointLevel::Half));
        assert!(c.mark_checkpoint(Resource::Memory, CheckpointLevel::Ninety));
        assert!(c.mark_checkpoint(Resource::Cpu, CheckpointLevel::Half));
        assert!(!c.checkpoint_reached(Resource::IoBytes, CheckpointLevel::Soft));
        assert!(c.mark_checkpoint(Resource::IoBytes, CheckpointLevel::Soft));
        assert!(c.checkpoint_reached(Resource::IoBytes, CheckpointLevel::Soft));
        assert!(c.mark_extended(Resource::Memory) && !c.mark_extended(Resource::Memory));
        assert!(c.mark_refused(Resource::Cpu));
        let log = c.checkpoint_log();
        assert!(log.reached(Resource::Memory, CheckpointLevel::Ninety));
        assert!(!log.reached(Resource::Wall, CheckpointLevel::Half));
        assert!(log.extended(Resource::Memory) && !log.extended(Resource::Cpu));
        assert!(log.refused(Resource::Cpu) && !log.refused(Resource::Memory));
    }

    #[test]
    fn usage_wall_is_measured_from_admission() {
        let mut g = Grant::unlimited(ClassId::from_raw(4));
        g.mem_hard = 10;
        let c = RequestCtx::new(RequestId(9), g, 1_000);
        c.cpu.record_poll(50, 60, 5);
        let u = c.usage(4_000);
        assert_eq!(u.cpu.wall_ns, 3_000);
        assert_eq!(u.cpu.cpu_ns, 50);
        assert_eq!(u.cpu.polls, 1);
        assert!(u.counters.is_none());
        c.add_counters(PerfCounters {
            instructions: 7,
            ..PerfCounters::default()
        });
        assert_eq!(c.usage(4_000).counters.map(|p| p.instructions), Some(7));
    }
}
