//! Task memory and every `unsafe` operation on it.
//!
//! One heap allocation per task, a `#[repr(C)]` [`Cell`] whose first field is the type-erased
//! [`Header`]; everything that needs the concrete future, output or scheduler type goes through the
//! header's [`Vtable`]. References are counted in the state word (see [`super`]'s protocol). The safe
//! types below each *own* exactly one reference and encode who may touch which field:
//!
//! | type | owns | may touch |
//! |---|---|---|
//! | [`Notified`] | the queue's reference | nothing but the header; turns into [`Running`] (rule R1) |
//! | [`Running`] | the queue's reference and `RUNNING` | the future and the output slot |
//! | [`OwnedRef`] | the owner list's reference | the header; shutdown turns it into [`Running`] (rule A2) |
//! | [`JoinRaw`] | the `JoinHandle`'s reference | the join waker slot while `JOIN_WAKER` is clear, the output once `COMPLETE` |
//! | wakers | one reference each | the header |
//!
//! The layout follows the idea of tokio's `runtime/task/{core,raw,harness}.rs` and async-task's
//! `raw.rs`, written afresh.

use std::any::Any;
use std::cell::UnsafeCell;
use std::future::Future;
use std::mem::ManuallyDrop;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::pin::Pin;
use std::ptr::NonNull;
use std::sync::atomic::{AtomicU64, AtomicUsize};
use std::sync::Arc;
use std::task::{Context, Poll, RawWaker, RawWakerVTable, Waker};

use pagegen_core::RequestCtx;

use super::state::{State, ToIdle, ToRunning, WakeByVal, COMPLETE, JOIN_INTEREST, JOIN_WAKER};
use crate::error::JoinError;

/// What a task's owner does with it: the run queue it goes to and the list that holds it.
pub(crate) trait Schedule: Send + Sync + 'static {
    /// Puts a woken task in a run queue.
    fn schedule(&self, task: Notified);
    /// Removes the task from the owner's list of live tasks, giving back the list's reference.
    fn release(&self, task: &Header) -> Option<OwnedRef>;
}

/// The type-erased part of every task.
#[repr(C)]
pub(crate) struct Header {
    pub(crate) state: State,
    vtable: &'static Vtable,
    /// Unique id, for errors and logs.
    pub(crate) id: u64,
    /// The request this task works for; current during its polls and drops.
    pub(crate) ctx: Arc<RequestCtx>,
    /// The lane (class index, `class.rs`) of `ctx`'s class, fixed at spawn like the class itself:
    /// every push reads it, and reading it from the shared `RequestCtx` instead cost a cache miss
    /// per push whenever another worker was touching that context.
    pub(crate) lane: u32,
    /// Slot in the owner list; read and written only under that list's shard lock.
    pub(crate) owned_slot: AtomicUsize,
    /// Polls so far; written only by the holder of `RUNNING`.
    pub(crate) polls: AtomicU64,
    /// Poll-clock ticks at the last wake or spawn (instrumentation's scheduled delay); written by
    /// whoever queues the task, read by the worker that polls it, `Relaxed` (a stale value only skews
    /// one delay sample).
    pub(crate) woken_at: AtomicU64,
}

// SAFETY: `Header` is shared between threads only through `&`: its mutable parts are atomics, and
// `ctx` is an `Arc<RequestCtx>` which is `Sync`.
unsafe impl Sync for Header {}
// SAFETY: as above; moving the header between threads moves atomics and an `Arc`.
unsafe impl Send for Header {}

/// Result of one poll of the future.
pub(crate) enum PollOutcome {
    /// Not done.
    Pending,
    /// Done; the output is stored.
    Ready,
    /// The future panicked; the payload is here, the future still needs dropping.
    Panicked(Box<dyn Any + Send + 'static>),
}

struct Vtable {
    poll: unsafe fn(NonNull<Header>, &mut Context<'_>) -> PollOutcome,
    drop_future: unsafe fn(NonNull<Header>) -> Option<Box<dyn Any + Send>>,
    store_error: unsafe fn(NonNull<Header>, JoinError),
    drop_output: unsafe fn(NonNull<Header>),
    read_output: unsafe fn(NonNull<Header>, *mut ()),
    set_join_waker: unsafe fn(NonNull<Header>, Waker),
    join_will_wake: unsafe fn(NonNull<Header>, &Waker) -> bool,
    wake_join: unsafe fn(NonNull<Header>),
    schedule: unsafe fn(NonNull<Header>),
    release: unsafe fn(NonNull<Header>) -> Option<OwnedRef>,
    dealloc: unsafe fn(NonNull<Header>),
}

#[repr(C)]
struct Cell<F: Future, S> {
    header: Header,
    scheduler: S,
    future: UnsafeCell<Option<F>>,
    output: UnsafeCell<Option<Result<F::Output, JoinError>>>,
    join_waker: UnsafeCell<Option<Waker>>,
}

struct Fns<F, S>(std::marker::PhantomData<(F, S)>);

impl<F, S> Fns<F, S>
where
    F: Future + Send + 'static,
    F::Output: Send + 'static,
    S: Schedule,
{
    const VTABLE: Vtable = Vtable {
        poll: Self::poll,
        drop_future: Self::drop_future,
        store_error: Self::store_error,
        drop_output: Self::drop_output,
        read_output: Self::read_output,
        set_join_waker: Self::set_join_waker,
        join_will_wake: Self::join_will_wake,
        wake_join: Self::wake_join,
        schedule: Self::schedule,
        release: Self::release,
        dealloc: Self::dealloc,
    };

    /// # Safety
    /// `ptr` is the header of a live `Cell<F, S>` (the caller holds a reference).
    unsafe fn cell<'a>(ptr: NonNull<Header>) -> &'a Cell<F, S> {
        // SAFETY: the cell is `repr(C)` with the header first, so the header pointer is the cell
        // pointer; the caller's reference keeps it alive.
        unsafe { ptr.cast::<Cell<F, S>>().as_ref() }
    }

    /// # Safety
    /// The caller holds `RUNNING` (rule R1/A2): it alone touches the future and the output.
    unsafe fn poll(ptr: NonNull<Header>, cx: &mut Context<'_>) -> PollOutcome {
        // SAFETY: caller's reference keeps the cell alive.
        let cell = unsafe { Self::cell(ptr) };
        // SAFETY: `RUNNING` gives exclusive access to `future` (rule R1).
        let slot = unsafe { &mut *cell.future.get() };
        let Some(fut) = slot.as_mut() else {
            return PollOutcome::Panicked(Box::new("task polled after its future was dropped"));
        };
        // SAFETY: the future lives inside the heap cell, which never moves until dealloc, and it is
        // dropped in place (`drop_future`), so it is pinned.
        let fut = unsafe { Pin::new_unchecked(fut) };
        match catch_unwind(AssertUnwindSafe(|| fut.poll(cx))) {
            Ok(Poll::Pending) => PollOutcome::Pending,
            Ok(Poll::Ready(v)) => {
                // SAFETY: `RUNNING` gives exclusive access to `output` (rule R1).
                unsafe { *cell.output.get() = Some(Ok(v)) };
                PollOutcome::Ready
            }
            Err(p) => PollOutcome::Panicked(p),
        }
    }

    /// # Safety
    /// The caller holds `RUNNING`.
    unsafe fn drop_future(ptr: NonNull<Header>) -> Option<Box<dyn Any + Send>> {
        // SAFETY: caller's reference keeps the cell alive.
        let cell = unsafe { Self::cell(ptr) };
        // SAFETY: `RUNNING` gives exclusive access to `future`.
        let slot = unsafe { &mut *cell.future.get() };
        catch_unwind(AssertUnwindSafe(|| *slot = None)).err()
    }

    /// # Safety
    /// The caller holds `RUNNING`.
    unsafe fn store_error(ptr: NonNull<Header>, err: JoinError) {
        // SAFETY: caller's reference keeps the cell alive.
        let cell = unsafe { Self::cell(ptr) };
        // SAFETY: `RUNNING` gives exclusive access to `output`; a previous value is a result whose
        // destructor must not run here (it cannot be: errors are stored only instead of a value).
        unsafe { *cell.output.get() = Some(Err(err)) };
    }

    /// # Safety
    /// `COMPLETE` is set and the caller is the one rule R3/J1 names to drop the output.
    unsafe fn drop_output(ptr: NonNull<Header>) {
        // SAFETY: caller's reference keeps the cell alive.
        let cell = unsafe { Self::cell(ptr) };
        // SAFETY: rule R3/J1 makes the caller the only one touching `output`.
        let out = unsafe { (*cell.output.get()).take() };
        // A panicking destructor of an output nobody wanted must not take the worker down.
        let _ = catch_unwind(AssertUnwindSafe(|| drop(out)));
    }

    /// # Safety
    /// `COMPLETE` is set, `JOIN_INTEREST` is ours, and `dst` points to a
    /// `Poll<Result<F::Output, JoinError>>`.
    unsafe fn read_output(ptr: NonNull<Header>, dst: *mut ()) {
        // SAFETY: caller's reference keeps the cell alive.
        let cell = unsafe { Self::cell(ptr) };
        // SAFETY: after `COMPLETE` the join handle owns `output` (rule J1).
        let out = unsafe { (*cell.output.get()).take() };
        let out = out.expect("JoinHandle polled after it returned its output");
        // SAFETY: the caller passes a pointer to a valid `Poll<Result<F::Output, JoinError>>`.
        unsafe { *dst.cast::<Poll<Result<F::Output, JoinError>>>() = Poll::Ready(out) };
    }

    /// # Safety
    /// The caller is the join handle and `JOIN_WAKER` is clear (rule J2).
    unsafe fn set_join_waker(ptr: NonNull<Header>, waker: Waker) {
        // SAFETY: caller's reference keeps the cell alive.
        let cell = unsafe { Self::cell(ptr) };
        // SAFETY: with `JOIN_WAKER` clear only the join handle touches the slot.
        unsafe { *cell.join_waker.get() = Some(waker) };
    }

    /// # Safety
    /// The caller is the join handle and `JOIN_WAKER` is set (the slot is read-only for everyone).
    unsafe fn join_will_wake(ptr: NonNull<Header>, waker: &Waker) -> bool {
        // SAFETY: caller's reference keeps the cell alive.
        let cell = unsafe { Self::cell(ptr) };
        // SAFETY: with `JOIN_WAKER` set nobody writes the slot (rule J2), so a shared read is fine.
        unsafe { (*cell.join_waker.get()).as_ref() }.is_some_and(|w| w.will_wake(waker))
    }

    /// # Safety
    /// The caller completed the task and saw `JOIN_WAKER` set in the previous state (rule R3).
    unsafe fn wake_join(ptr: NonNull<Header>) {
        // SAFETY: caller's reference keeps the cell alive.
        let cell = unsafe { Self::cell(ptr) };
        // SAFETY: after `COMPLETE` with `JOIN_WAKER` set, the join handle never writes the slot again
        // (rules J2/J3 fail on `COMPLETE`), so reading it is race-free.
        if let Some(w) = unsafe { (*cell.join_waker.get()).as_ref() } {
            let _ = catch_unwind(AssertUnwindSafe(|| w.wake_by_ref()));
        }
    }

    /// # Safety
    /// The caller transfers one reference, with `NOTIFIED` set for it.
    unsafe fn schedule(ptr: NonNull<Header>) {
        // SAFETY: the transferred reference keeps the cell alive.
        let cell = unsafe { Self::cell(ptr) };
        cell.scheduler.schedule(Notified(TaskRef(ptr)));
    }

    /// # Safety
    /// The caller holds a reference.
    unsafe fn release(ptr: NonNull<Header>) -> Option<OwnedRef> {
        // SAFETY: caller's reference keeps the cell alive.
        let cell = unsafe { Self::cell(ptr) };
        cell.scheduler.release(&cell.header)
    }

    /// # Safety
    /// The last reference was just dropped.
    unsafe fn dealloc(ptr: NonNull<Header>) {
        // SAFETY: the cell was made by `Box::new` in `new_task` and no reference remains.
        drop(unsafe { Box::from_raw(ptr.cast::<Cell<F, S>>().as_ptr()) });
    }
}

/// A pointer to a live task; owns nothing by itself.
#[derive(Clone, Copy, PartialEq, Eq)]
struct TaskRef(NonNull<Header>);

// SAFETY: a task is built from `Send` parts (`F: Send`, `S: Send + Sync`) and its shared fields are
// synchronised by the state word; the wrappers that own references may move between threads.
unsafe impl Send for TaskRef {}
// SAFETY: as above, every shared access goes through atomics or the state protocol.
unsafe impl Sync for TaskRef {}

impl TaskRef {
    #[inline]
    fn header(&self) -> &Header {
        // SAFETY: every `TaskRef` is held inside a wrapper that owns a reference.
        unsafe { self.0.as_ref() }
    }
    #[inline]
    fn vtable(&self) -> &'static Vtable {
        self.header().vtable
    }
    /// Drops one reference, deallocating on the last.
    #[inline]
    fn drop_ref(self) {
        if self.header().state.ref_dec() {
            // SAFETY: that was the last reference.
            unsafe { (self.vtable().dealloc)(self.0) }
        }
    }
}

/// Allocates a task. It starts queued (rule S1) with references for the returned [`Notified`],
/// [`JoinRaw`] and, when `owned`, an [`OwnedRef`] for the owner's list.
pub(crate) fn new_task<F, S>(
    future: F,
    scheduler: S,
    ctx: Arc<RequestCtx>,
    id: u64,
    owned: bool,
) -> (Notified, JoinRaw, Option<OwnedRef>)
where
    F: Future + Send + 'static,
    F::Output: Send + 'static,
    S: Schedule,
{
    let cell = Box::new(Cell {
        header: Header {
            state: State::new(if owned { 3 } else { 2 }),
            vtable: &Fns::<F, S>::VTABLE,
            id,
            lane: crate::class::Classes::index(ctx.class()) as u32,
            ctx,
            owned_slot: AtomicUsize::new(usize::MAX),
            polls: AtomicU64::new(0),
            woken_at: AtomicU64::new(0),
        },
        scheduler,
        future: UnsafeCell::new(Some(future)),
        output: UnsafeCell::new(None),
        join_waker: UnsafeCell::new(None),
    });
    // SAFETY: `Box::into_raw` never returns null.
    let ptr = unsafe { NonNull::new_unchecked(Box::into_raw(cell).cast::<Header>()) };
    let t = TaskRef(ptr);
    (Notified(t), JoinRaw(t), owned.then(|| OwnedRef(t)))
}

/// A queued task: owns the queue's reference.
pub(crate) struct Notified(TaskRef);

/// What [`Notified::start`] found.
pub(crate) enum Start {
    /// Poll it.
    Run(Running),
    /// Drop its future: it was aborted or shut down.
    Cancel(Running),
    /// Already complete; nothing to do (the reference was dropped).
    Skip,
}

impl Notified {
    /// The task's header.
    #[inline]
    pub(crate) fn header(&self) -> &Header {
        self.0.header()
    }
    /// Rule R1: take the run permit.
    #[inline]
    pub(crate) fn start(self) -> Start {
        let t = ManuallyDrop::new(self).0;
        match t.header().state.to_running() {
            ToRunning::Run => Start::Run(Running(t, std::marker::PhantomData)),
            ToRunning::Cancel => Start::Cancel(Running(t, std::marker::PhantomData)),
            ToRunning::Skip => {
                t.drop_ref();
                Start::Skip
            }
        }
    }
    /// Hands the task to its scheduler's queue.
    pub(crate) fn schedule(self) {
        let t = ManuallyDrop::new(self).0;
        // SAFETY: we transfer the queue's reference with `NOTIFIED` set.
        unsafe { (t.vtable().schedule)(t.0) }
    }
    /// For storing in an `AtomicPtr` slot: gives up ownership of the reference.
    #[inline]
    pub(crate) fn into_raw(self) -> *mut Header {
        ManuallyDrop::new(self).0 .0.as_ptr()
    }
    /// # Safety
    /// `ptr` came from [`Notified::into_raw`] and is converted back exactly once.
    #[inline]
    pub(crate) unsafe fn from_raw(ptr: *mut Header) -> Notified {
        // SAFETY: the caller guarantees `ptr` came from `into_raw`, which never yields null.
        Notified(TaskRef(unsafe { NonNull::new_unchecked(ptr) }))
    }
}

impl Drop for Notified {
    fn drop(&mut self) {
        self.0.drop_ref();
    }
}

/// The run permit of a task: owns the queue's reference and `RUNNING`.
pub(crate) struct Running(TaskRef, std::marker::PhantomData<std::cell::Cell<()>>);

/// What [`Running::idle`] found.
pub(crate) enum IdleOutcome {
    /// The task waits for a wake.
    Parked,
    /// It was woken while running: requeue it (a yield).
    Requeue(Notified),
    /// It was aborted while running: cancel it now.
    Cancel(Running),
}

impl Running {
    /// The task's header.
    #[inline]
    pub(crate) fn header(&self) -> &Header {
        self.0.header()
    }
    /// A waker for this poll, borrowed from the permit's reference (no count change).
    #[inline]
    pub(crate) fn waker(&self) -> WakerRef<'_> {
        // SAFETY: the permit's reference keeps the task alive for the borrow, and `ManuallyDrop`
        // keeps the borrowed waker from dropping a reference it never took.
        let w = unsafe { Waker::from_raw(RawWaker::new(self.0 .0.as_ptr().cast(), &WAKER_VTABLE)) };
        WakerRef(ManuallyDrop::new(w), std::marker::PhantomData)
    }
    /// Polls the future.
    #[inline]
    pub(crate) fn poll(&self, cx: &mut Context<'_>) -> PollOutcome {
        // SAFETY: we hold `RUNNING`.
        unsafe { (self.0.vtable().poll)(self.0 .0, cx) }
    }
    /// Drops the future in place; a panicking destructor's payload is returned.
    pub(crate) fn drop_future(&self) -> Option<Box<dyn Any + Send>> {
        // SAFETY: we hold `RUNNING`.
        unsafe { (self.0.vtable().drop_future)(self.0 .0) }
    }
    /// Stores a failure as the output (after the future was dropped).
    pub(crate) fn store_error(&self, err: JoinError) {
        // SAFETY: we hold `RUNNING`.
        unsafe { (self.0.vtable().store_error)(self.0 .0, err) }
    }
    /// Rule R2: give the permit back after `Pending`.
    #[inline]
    pub(crate) fn idle(self) -> IdleOutcome {
        let t = ManuallyDrop::new(self).0;
        match t.header().state.to_idle() {
            ToIdle::Idle(last) => {
                if last {
                    // SAFETY: the state transition dropped the last reference.
                    unsafe { (t.vtable().dealloc)(t.0) }
                }
                IdleOutcome::Parked
            }
            ToIdle::Requeue => IdleOutcome::Requeue(Notified(t)),
            ToIdle::Cancel => IdleOutcome::Cancel(Running(t, std::marker::PhantomData)),
        }
    }
    /// Rule R3: the future is dropped and the output stored; publish, wake the joiner, leave the
    /// owner list.
    pub(crate) fn complete(self) {
        let t = ManuallyDrop::new(self).0;
        let prev = t.header().state.to_complete();
        if !prev.has(JOIN_INTEREST) {
            // SAFETY: the join handle was gone before completion: the output is ours (rule R3).
            unsafe { (t.vtable().drop_output)(t.0) }
        } else if prev.has(JOIN_WAKER) {
            // SAFETY: `JOIN_WAKER` was set at completion (rule R3).
            unsafe { (t.vtable().wake_join)(t.0) }
        }
        // SAFETY: we still hold the permit's reference.
        drop(unsafe { (t.vtable().release)(t.0) });
        t.drop_ref();
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        // A permit is always consumed by `idle` or `complete`; reaching here means a worker bug,
        // and leaking the task is safer than freeing memory another thread may still touch.
        debug_assert!(false, "Running dropped without idle() or complete()");
    }
}

/// A borrowed waker; see [`Running::waker`].
pub(crate) struct WakerRef<'a>(ManuallyDrop<Waker>, std::marker::PhantomData<&'a Running>);

impl std::ops::Deref for WakerRef<'_> {
    type Target = Waker;
    fn deref(&self) -> &Waker {
        &self.0
    }
}

/// The owner list's reference to a task.
pub(crate) struct OwnedRef(TaskRef);

impl OwnedRef {
    /// The task's header.
    pub(crate) fn header(&self) -> &Header {
        self.0.header()
    }
    /// Rule A2: take the permit of an idle or queued task at shutdown; `None` if it completed or is
    /// running elsewhere (then it only got `CANCELLED`).
    pub(crate) fn shutdown(self) -> Option<Running> {
        if self.0.header().state.to_shutdown() {
            Some(Running(ManuallyDrop::new(self).0, std::marker::PhantomData))
        } else {
            None
        }
    }
    /// Whether two references name the same task.
    pub(crate) fn is(&self, header: &Header) -> bool {
        std::ptr::eq(self.0 .0.as_ptr(), header)
    }
}

impl Drop for OwnedRef {
    fn drop(&mut self) {
        self.0.drop_ref();
    }
}

fn cancel(t: TaskRef) {
    if t.header().state.cancel() {
        // SAFETY: `cancel` added a reference with `NOTIFIED` set for the queue.
        unsafe { (t.vtable().schedule)(t.0) }
    }
}

/// The `JoinHandle`'s reference.
pub(crate) struct JoinRaw(TaskRef);

impl JoinRaw {
    /// The task's header.
    pub(crate) fn header(&self) -> &Header {
        self.0.header()
    }
    /// Rule A1: abort.
    pub(crate) fn abort(&self) {
        cancel(self.0);
    }
    /// Whether the task completed.
    pub(crate) fn is_finished(&self) -> bool {
        self.0.header().state.load().has(COMPLETE)
    }
    /// Rules J2/J3: the output if complete, otherwise registers `waker`.
    ///
    /// # Safety
    /// `T` is the task's output type, and the output was not read before.
    pub(crate) unsafe fn poll_output<T>(&self, waker: &Waker) -> Poll<Result<T, JoinError>> {
        let t = self.0;
        let state = &t.header().state;
        let snap = state.load();
        let mut done = snap.has(COMPLETE);
        if !done {
            if !snap.has(JOIN_WAKER) {
                // SAFETY: `JOIN_WAKER` is clear, so the slot is ours (rule J2).
                unsafe { (t.vtable().set_join_waker)(t.0, waker.clone()) };
                done = state.set_join_waker().is_err();
            } else {
                // SAFETY: `JOIN_WAKER` is set: read-only access (rule J2).
                if unsafe { (t.vtable().join_will_wake)(t.0, waker) } {
                    return Poll::Pending;
                }
                done = match state.unset_join_waker() {
                    Err(_) => true,
                    Ok(()) => {
                        // SAFETY: we just cleared `JOIN_WAKER`, so the slot is ours (rule J3).
                        unsafe { (t.vtable().set_join_waker)(t.0, waker.clone()) };
                        state.set_join_waker().is_err()
                    }
                };
            }
        }
        if !done {
            return Poll::Pending;
        }
        let mut out: Poll<Result<T, JoinError>> = Poll::Pending;
        // SAFETY: `COMPLETE` is set and the handle owns the output (rule J1); the caller guarantees
        // `T` is the output type.
        unsafe {
            (t.vtable().read_output)(t.0, (&mut out as *mut Poll<Result<T, JoinError>>).cast())
        };
        out
    }
}

impl Drop for JoinRaw {
    fn drop(&mut self) {
        let prev = self.0.header().state.drop_join_interest();
        if prev.has(COMPLETE) {
            // SAFETY: complete before the handle left: the output is the handle's to drop (rule J1).
            unsafe { (self.0.vtable().drop_output)(self.0 .0) }
        }
        self.0.drop_ref();
    }
}

static WAKER_VTABLE: RawWakerVTable =
    RawWakerVTable::new(waker_clone, waker_wake, waker_wake_by_ref, waker_drop);

/// # Safety
/// `p` is a task header pointer whose holder owns (or borrows) a reference.
unsafe fn waker_clone(p: *const ()) -> RawWaker {
    // SAFETY: the waker being cloned keeps the task alive.
    let h = unsafe { &*p.cast::<Header>() };
    h.state.ref_inc();
    RawWaker::new(p, &WAKER_VTABLE)
}

/// # Safety
/// `p` is a task header pointer and the waker owns one reference (rule W2).
unsafe fn waker_wake(p: *const ()) {
    // SAFETY: waker pointers are never null.
    let t = TaskRef(unsafe { NonNull::new_unchecked(p as *mut Header) });
    match t.header().state.wake_by_val() {
        WakeByVal::Submit => {
            // SAFETY: the waker's reference now belongs to the queue, with `NOTIFIED` set.
            unsafe { (t.vtable().schedule)(t.0) }
        }
        WakeByVal::Done(true) => {
            // SAFETY: the transition dropped the last reference.
            unsafe { (t.vtable().dealloc)(t.0) }
        }
        WakeByVal::Done(false) => {}
    }
}

/// # Safety
/// `p` is a task header pointer and the waker owns or borrows a reference (rule W1).
unsafe fn waker_wake_by_ref(p: *const ()) {
    // SAFETY: waker pointers are never null.
    let t = TaskRef(unsafe { NonNull::new_unchecked(p as *mut Header) });
    if t.header().state.wake_by_ref() {
        // SAFETY: `wake_by_ref` added a reference with `NOTIFIED` set for the queue.
        unsafe { (t.vtable().schedule)(t.0) }
    }
}

/// # Safety
/// `p` is a task header pointer and the waker owns one reference.
unsafe fn waker_drop(p: *const ()) {
    // SAFETY: waker pointers are never null.
    TaskRef(unsafe { NonNull::new_unchecked(p as *mut Header) }).drop_ref();
}

impl JoinRaw {
    /// A second, abort-only reference.
    pub(crate) fn abort_ref(&self) -> AbortRef {
        self.0.header().state.ref_inc();
        AbortRef(self.0)
    }
}

/// An abort-only reference (for [`AbortHandle`](crate::task::AbortHandle)).
pub(crate) struct AbortRef(TaskRef);

impl AbortRef {
    /// Rule A1.
    pub(crate) fn abort(&self) {
        cancel(self.0);
    }
    /// Whether the task completed.
    pub(crate) fn is_finished(&self) -> bool {
        self.0.header().state.load().has(COMPLETE)
    }
}

impl Drop for AbortRef {
    fn drop(&mut self) {
        self.0.drop_ref();
    }
}
