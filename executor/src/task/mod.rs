//! Tasks: one allocation per spawned future, a reference-counted state word, and the handles that
//! own references to it.
//!
//! # The state protocol
//!
//! The word (`state.rs`) holds six flags and a reference count. Each rule names who may do what; the
//! code of each transition cites its rule.
//!
//! - **S1 spawn.** A new task is `NOTIFIED | JOIN_INTEREST` with one reference per owner: the queue
//!   entry, the `JoinHandle`, and (for worker tasks) the runtime's owner list.
//! - **R1 run.** A worker spends a queue entry by clearing `NOTIFIED` and setting `RUNNING`. Only the
//!   holder of `RUNNING` touches the future and the output slot. A set `CANCELLED` turns the run into
//!   a drop; a set `COMPLETE` (shutdown got there first) just drops the entry's reference.
//! - **R2 idle.** After `Pending` the runner clears `RUNNING`. If a wake came during the poll
//!   (`NOTIFIED` set) it keeps the reference and requeues the task at the back (a yield); if an abort
//!   came (`CANCELLED`) it keeps `RUNNING` and drops the future now; otherwise the entry's reference is
//!   dropped.
//! - **R3 complete.** With the future dropped and the output stored, the runner flips `RUNNING` to
//!   `COMPLETE`. If `JOIN_INTEREST` was already gone, the runner drops the output; otherwise the handle
//!   will take it, and if `JOIN_WAKER` was set the runner wakes the handle's waker. Then the task
//!   leaves the owner list (dropping its reference) and the entry's reference is dropped.
//! - **W1 wake by reference.** On an idle task: set `NOTIFIED`, add a reference, submit it. On a
//!   running task: set `NOTIFIED` only (R2 requeues). On a queued or complete task: nothing.
//! - **W2 wake by value.** As W1, but the waker's own reference becomes the queue's when the task is
//!   submitted, and is dropped otherwise.
//! - **A1 abort.** Set `CANCELLED`; an idle task is also notified and submitted (like W1) so a worker
//!   drops it; a running one is notified without a new reference and cancelled at R2.
//! - **A2 shutdown.** The runtime, after its workers stopped, takes `RUNNING` of every idle or queued
//!   task in the owner list and drops its future (then R3). Queue entries left behind meet R1's
//!   `COMPLETE` case.
//! - **J1 join drop.** Clearing `JOIN_INTEREST` is one atomic step against R3's one step: whoever comes
//!   second drops the output.
//! - **J2/J3 join waker.** The handle writes the waker slot only while `JOIN_WAKER` is clear, then sets
//!   it with a CAS that fails on `COMPLETE`; to replace a waker it first clears the flag with a CAS
//!   that fails on `COMPLETE`. After `COMPLETE` the slot is read-only until deallocation.
//!
//! The last reference deallocates. The unsafe code is all in `raw.rs`; the state word in `state.rs` is
//! safe code over the `crate::loom` atomics and has its own loom model.

pub(crate) mod budget;
mod join;
pub(crate) mod raw;
pub(crate) mod state;
mod yield_now;

pub use budget::{consume_budget, has_budget_remaining, unconstrained, Unconstrained};
pub use join::{AbortHandle, JoinHandle};
pub use yield_now::yield_now;

#[cfg(all(test, loom))]
mod loom_state;
#[cfg(all(test, loom))]
pub(crate) mod tests_support;
