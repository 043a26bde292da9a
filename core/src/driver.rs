//! How an I/O backend reaps completions on the executor's worker threads.
//!
//! The executor owns the threads; pagegen-io owns the rings. They meet here: when the runtime is built,
//! the executor calls [`DriverFactory::worker_driver`] **on each worker thread, before it runs any
//! task**, and keeps the returned [`Driver`] for that thread's life. A driver created this way may keep
//! thread-local state (a ring per worker), because every call on it comes from that one thread.
//!
//! The executor's contract with a driver:
//! - between tasks, every `driver_interval` polls, it calls [`Driver::poll_nonblocking`] to reap
//!   completions (which wake tasks); while the worker already has half a queue of tasks waiting it
//!   may skip a few of these calls (completions then wait in the kernel, in arrival order, rather
//!   than overflow its queue), but never more than a small fixed number in a row, so completions
//!   are reaped at least every few `driver_interval`s however busy the worker is;
//! - when the worker has nothing to run, it calls [`Driver::park`] instead of sleeping on its own
//!   condition variable, with the timeout it would have used (`None`: until woken);
//! - to wake a parked worker (new task, remote wake), it calls the worker's [`Unpark`], obtained once
//!   from [`Driver::unparker`]. `unpark` before `park` must make the next `park` return at once (a
//!   token, not an edge), or wakes are lost.
//! - at shutdown it drops the driver on the worker thread.

use std::fmt;
use std::io;
use std::sync::Arc;
use std::time::Duration;

/// Identity of a thread the runtime started.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WorkerInfo {
    /// Index among the runtime's threads of this kind.
    pub index: usize,
    /// Pool of a worker thread; `None` for a blocking-pool thread.
    pub pool: Option<crate::class::PoolId>,
    /// Thread name as set by the runtime.
    pub name: String,
}

/// Wakes one parked worker; callable from any thread.
pub trait Unpark: Send + Sync + 'static {
    /// Makes the worker's current or next [`Driver::park`] return.
    fn unpark(&self);
}

/// One worker thread's I/O driver. Not `Sync`: it is used by its worker only.
pub trait Driver: Send + 'static {
    /// Reaps whatever completions are ready without blocking; returns how many tasks were woken.
    fn poll_nonblocking(&mut self) -> usize;
    /// Blocks until a completion arrives, the worker is unparked, or `timeout` passes.
    fn park(&mut self, timeout: Option<Duration>);
    /// The handle other threads use to wake this worker.
    fn unparker(&self) -> Arc<dyn Unpark>;
}

/// Makes one [`Driver`] per worker thread.
pub trait DriverFactory: Send + Sync + 'static {
    /// Called on the worker thread itself before it runs tasks. An error makes the executor fall back
    /// to its own parking for this worker (and it says so once in the log).
    fn worker_driver(&self, worker: &WorkerInfo) -> io::Result<Box<dyn Driver>>;
}

impl fmt::Debug for dyn Driver {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("dyn Driver")
    }
}

impl fmt::Debug for dyn DriverFactory {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("dyn DriverFactory")
    }
}
