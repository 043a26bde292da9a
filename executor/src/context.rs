//! Thread-local runtime context: which runtime `spawn` uses on this thread, and which worker of it
//! (if any) this thread is, for local scheduling and the LIFO slot.
#![forbid(unsafe_code)]

use std::cell::{Cell, RefCell};
use std::sync::Arc;

use crate::shared::Shared;
use crate::task::raw::Notified;

thread_local! {
    /// The runtime `spawn` targets: set on worker and blocking threads for their life, and inside
    /// `block_on` / `Runtime::enter`.
    static CURRENT: RefCell<Option<Arc<Shared>>> = const { RefCell::new(None) };
    /// `(address of the runtime's Shared, worker index)` on a worker thread; `(0, 0)` elsewhere.
    static WORKER: Cell<(usize, usize)> = const { Cell::new((0, 0)) };
    /// The worker's LIFO slot: the task most recently woken by a task of this worker.
    static LIFO: Cell<Option<Notified>> = const { Cell::new(None) };
}

/// The current runtime, if any.
pub(crate) fn current() -> Option<Arc<Shared>> {
    CURRENT.with(|c| c.borrow().clone())
}

/// Runs `f` with the current runtime without cloning it.
#[inline]
pub(crate) fn with_current<R>(f: impl FnOnce(Option<&Arc<Shared>>) -> R) -> R {
    CURRENT.with(|c| f(c.borrow().as_ref()))
}

/// Makes `shared` current until the guard drops (enters nest).
pub(crate) fn enter(shared: Arc<Shared>) -> EnterGuard {
    let prev = CURRENT.with(|c| c.replace(Some(shared)));
    EnterGuard {
        prev,
        _not_send: std::marker::PhantomData,
    }
}

/// Restores the previously current runtime on drop.
pub struct EnterGuard {
    prev: Option<Arc<Shared>>,
    _not_send: std::marker::PhantomData<*const ()>,
}

impl Drop for EnterGuard {
    fn drop(&mut self) {
        let prev = self.prev.take();
        let _ = CURRENT.try_with(|c| *c.borrow_mut() = prev);
    }
}

impl std::fmt::Debug for EnterGuard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EnterGuard").finish_non_exhaustive()
    }
}

/// Marks this thread as worker `index` of `shared` (`None` clears it).
pub(crate) fn set_worker(shared: Option<&Shared>, index: usize) {
    let key = shared.map_or(0, |s| s as *const Shared as usize);
    WORKER.with(|w| w.set((key, index)));
}

/// The worker index of this thread in `shared`, if it is one of its workers.
#[inline]
pub(crate) fn worker_index(shared: &Shared) -> Option<usize> {
    let (key, index) = WORKER.with(Cell::get);
    (key == shared as *const Shared as usize).then_some(index)
}

/// Whether this thread is any runtime's worker (nested `block_on` is refused there).
pub(crate) fn is_worker_thread() -> bool {
    WORKER.with(Cell::get).0 != 0
}

/// Puts `task` in the LIFO slot, returning the task it displaced.
#[inline]
pub(crate) fn lifo_replace(task: Notified) -> Option<Notified> {
    LIFO.with(|l| l.replace(Some(task)))
}

/// Takes the LIFO slot's task.
#[inline]
pub(crate) fn lifo_take() -> Option<Notified> {
    LIFO.with(Cell::take)
}
