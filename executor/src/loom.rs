//! The one place the executor takes its synchronisation primitives from.
//!
//! Under `--cfg loom` these are loom's model-checked types, so the `loom_*` test modules explore every
//! interleaving of the run queues, the task state machine and the parker (the facade idea is tokio's
//! `src/loom/mod.rs`). Everything else in the crate imports from here, never from `std::sync` directly,
//! for the state that is shared between threads on the hot path.
#![forbid(unsafe_code)]

#[cfg(not(loom))]
pub(crate) use std::sync::atomic::{
    fence, AtomicBool, AtomicPtr, AtomicU64, AtomicUsize, Ordering,
};
#[cfg(not(loom))]
pub(crate) use std::sync::{Condvar, Mutex, MutexGuard};

#[cfg(loom)]
pub(crate) use loom::sync::atomic::{
    fence, AtomicBool, AtomicPtr, AtomicU64, AtomicUsize, Ordering,
};
#[cfg(loom)]
pub(crate) use loom::sync::{Condvar, Mutex, MutexGuard};

/// Locks `m`, ignoring poisoning: every critical section in the executor leaves its data consistent
/// before anything that can panic runs, so a poisoned lock holds valid data.
pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    #[cfg(not(loom))]
    {
        m.lock().unwrap_or_else(|e| e.into_inner())
    }
    #[cfg(loom)]
    {
        m.lock().unwrap()
    }
}
