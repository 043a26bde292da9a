//! # pagegen-executor
//!
//! pagegen's multi-threaded, work-stealing executor: `N` workers with bounded per-worker queues, a
//! global injector, a LIFO slot for the just-woken task, token-based parking that never loses a wake,
//! a blocking pool, a cooperative budget, and [`PollHook`](pagegen_core::PollHook)s called around every
//! poll with static dispatch. Every task carries the [`RequestCtx`](pagegen_core::RequestCtx) it works
//! for (children inherit the spawner's; unclassified work runs in a background context of class
//! `default`) and that context is current during its polls, drops and blocking closures.
//!
//! **Classes and shares.** Each worker queues tasks per class; the next task comes from the class
//! of least virtual time (CPU used divided by shares, CFS-style, `vruntime.rs`), FIFO within a class,
//! so always-runnable classes share CPU in the ratio of their shares. Classes are registered on the
//! [`Builder`] or at run time through the runtime's [`ClassRegistry`](pagegen_core::ClassRegistry);
//! [`spawn_in`] starts work in a class and children inherit it. Workers count each class's scheduled
//! delay (wake → poll) next to its CPU, so a [`SharesPolicy`](pagegen_core::SharesPolicy) sees a p99
//! per class and period.
//!
//! **Pools.** Fixed sets of workers at fixed OS priorities (nice, opt-in `SCHED_IDLE`, opt-in EEVDF
//! scheduler slice with [`PoolSpec::slice`]); tasks move between pools, threads never change
//! priority; a pool is resized at run time by parking threads ([`Handle::set_pool_workers`]).
//!
//! tokio compatibility ([`compat`]): tokio's I/O and time drivers run on a driver thread whose handle
//! every pagegen thread enters, so `tokio::net`, `tokio::time` and crates on them work in pagegen tasks.
//!
//! | module | concept |
//! |---|---|
//! | [`task`] | the task state protocol, `JoinHandle`, `yield_now`, the cooperative budget |
//! | `queue` | the bounded work-stealing ring (one per worker and class); [`queue_contention`] |
//! | `lanes` | a worker's rings, one per class |
//! | `vruntime` | the arithmetic of weighted-fair class virtual time |
//! | `class` | per-class shares, virtual runtime and CPU; the `SharesPolicy` call |
//! | `injector` | the global queue |
//! | `idle` | which workers sleep/search; the no-lost-wake rule |
//! | `park` | the fallback parker and the driver-or-parker choice |
//! | `owned` | the live-task list used by shutdown |
//! | `worker` | the worker loop |
//! | `pool` | worker pools at fixed OS priorities and slices; tasks move, threads do not; resizing |
//! | `run` | one poll with its hooks, panic containment |
//! | `blocking` | the `spawn_blocking` pool |
//! | `shared`, `context` | shared runtime state; thread-local current runtime and worker |
//! | [`compat`] | tokio's drivers on a driver thread, and the limits that follow |
//! | `builder`, `runtime` | [`Builder`], [`Runtime`], [`Handle`], [`spawn`], [`spawn_blocking`] |
//! | `instrument`, [`clock`] | always-on poll instrumentation; the TSC-or-`Instant` poll clock |
//! | `loom` | the atomics facade swapped under `--cfg loom` |
//!
//! **Unsafe code** lives only in `task/raw.rs` (task memory, wakers), `task/join.rs` (reading the
//! output as the handle's `T`), `queue.rs` (converting a claimed slot back to a task reference) and
//! `sys.rs` (`rdtsc`, the thread CPU clock, thread nice
//! values and scheduler slices); every block
//! names its invariant. The other modules (but `lib.rs` and `task/mod.rs`, which only declare
//! modules) are `#![forbid(unsafe_code)]`.
#![warn(missing_docs)]

mod blocking;
mod builder;
mod class;
pub mod clock;
pub mod compat;
mod context;
mod error;
mod idle;
mod injector;
mod instrument;
mod lanes;
mod loom;
mod owned;
mod park;
mod pool;
mod queue;
mod run;
mod runtime;
mod shared;
mod sys;
pub mod task;
mod vruntime;
mod worker;

pub use builder::Builder;
pub use class::ClassSchedStats;
pub use context::EnterGuard;
pub use error::{JoinError, TaskFailure};
pub use instrument::PollSummary;
pub use pool::{
    lower_current_thread_priority, set_current_thread_sched_idle, PoolSize, PoolSpec, ResizeError,
};
pub use queue::{queue_contention, QueueContention};
pub use runtime::{spawn, spawn_blocking, spawn_in, Handle, Runtime};
pub use task::{yield_now, JoinHandle};
