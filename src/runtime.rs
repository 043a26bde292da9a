//! Runtime construction, under tokio's names (`tokio::runtime::{Builder, Runtime, Handle}`).

pub use pagegen_executor::{Builder, EnterGuard, Handle, PollSummary, PoolSpec, Runtime};
