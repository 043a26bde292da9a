//! # pagegen-core — the shared vocabulary
//!
//! Every pagegen subsystem (`executor`, `alloc`, `io`, `model`) depends on this crate and on no other
//! workspace crate: they meet here, through plain data types and small traits, and the facade crate
//! `pagegen` wires them together (the same trick as `tower-service` and hyper's `rt` module: a tiny,
//! stable trait layer that lets each side be explained without opening the other).
//!
//! What lives here, one concept per module:
//!
//! | module | contract |
//! |---|---|
//! | [`class`] | [`ClassId`], [`ClassSpec`], [`RouteSpec`], [`Shares`], [`PoolId`]: what a request class *is* |
//! | [`registry`] | [`ClassRegistry`]: the persisted name → id map and the fan-out of class registrations to subsystems ([`ClassObserver`]) |
//! | [`demand`] | [`Demand`], [`Estimate`], [`Resource`]: what a request is predicted to need |
//! | [`grant`] | [`Grant`], [`GrantCell`]: what the allocator hands a request before it runs |
//! | [`usage`] | [`Usage`] and its parts: what a request actually used (a snapshot) |
//! | [`account`] | the atomic per-request accounts other crates write into, flushed at most once per poll |
//! | [`ctx`] | [`RequestCtx`]: id, class, grant, accounts and control flags of one request; the thread's current context |
//! | [`conn`] | [`ConnAccount`]: a server connection's socket traffic, charged to the request it serves |
//! | [`cancel`] | [`CancelReason`]: why a request was stopped |
//! | [`hook`] | [`PollHook`], [`Verdict`]: the executor's instrumentation points |
//! | [`driver`] | [`Driver`], [`Unpark`], [`DriverFactory`]: how an I/O backend reaps completions on idle workers |
//! | [`clock`] | [`Clock`], [`RealClock`], [`VirtualClock`]: time that tests can drive by hand |
//! | [`shares`] | [`SharesPolicy`], [`ClassLoad`]: the periodic re-weighting of classes |
//! | [`record`] | [`ProfileRecord`], [`Outcome`], [`Features`]: one finished request, versioned for storage |
//!
//! The crate holds no policy: no scheduling, no prediction, no admission. Where a type has a little
//! logic (id allocation, record encoding, accounting arithmetic) it is the arithmetic every user of the
//! type must agree on, and it is unit-tested here.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod account;
pub mod cancel;
pub mod class;
pub mod clock;
pub mod conn;
pub mod ctx;
pub mod demand;
pub mod driver;
pub mod error;
pub mod grant;
pub mod hook;
pub mod record;
pub mod registry;
pub mod shares;
pub mod usage;

pub use account::{
    CpuAccount, FileSketch, IoAccount, MemAccount, MemFlush, NetAccount, SpanAccount,
};
pub use cancel::CancelReason;
pub use class::{ClassId, ClassSpec, PoolId, RouteSpec, Shares};
pub use clock::{Clock, Nanos, RealClock, VirtualClock};
pub use conn::{ConnAccount, OnSent};
pub use ctx::{CheckpointLevel, CheckpointLog, CtxGuard, RequestCtx, RequestId};
pub use demand::{Demand, Estimate, Resource, Serving};
pub use driver::{Driver, DriverFactory, Unpark, WorkerInfo};
pub use error::{DecodeError, RegistryError};
pub use grant::{Grant, GrantCell};
pub use hook::{BlockingStats, DropCause, NoHook, PollHook, PollStats, Verdict};
pub use record::{Features, Outcome, ProfileRecord, FEATURE_WIDTH, PROFILE_SCHEMA_VERSION};
pub use registry::{ClassObserver, ClassRegistry};
pub use shares::{ClassLoad, SharesPolicy, StaticShares};
pub use usage::{
    log2_bucket, CpuUsage, IoOpKind, IoUsage, MemUsage, NetUsage, PerfCounters, SocketUsage,
    SpanUsage, Usage, LOG2_BUCKETS,
};
