//! The profiler: what each admitted request actually used, joined from the executor's poll
//! statistics, the allocator's and the I/O driver's accounts, and handed to the model.
//!
//! | module | does |
//! |---|---|
//! | [`hook`] | [`ProfileHook`]: every poll's CPU, busy time and scheduled delay, the first-poll delay, and `spawn_blocking` time into the request's `CpuAccount` |
//! | [`histograms`] | per class: predicted vs actual CPU, memory and I/O, grant sizes and queueing, for the metrics |
//! | [`perf`] | the instruction mix from hardware counters, sampled polls, where the kernel has them (absent, not zero, where it does not) |
//! | [`record`] | a finished request's accounts → a [`ProfileRecord`](pagegen_core::ProfileRecord) ([`finish_record`]) |
//! | [`recorder`] | [`Recorder`]: records go to the model (`ModelRuntime::record`) on a thread of their own, off the request path; a full queue drops and counts, never blocks |
//!
//! No HTTP here: the HTTP edge calls [`finish_record`] with plain values.

pub mod histograms;
pub mod hook;
pub mod perf;
pub mod record;
pub mod recorder;

pub use hook::ProfileHook;
pub use record::finish_record;
pub use recorder::Recorder;
