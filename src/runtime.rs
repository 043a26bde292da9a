//! Runtime construction, under tokio's names (`tokio::runtime::{Builder, Runtime, Handle}`).

pub use pagegen_executor::{
    Builder, ClassStats, EnterGuard, Handle, PollSummary, PoolSize, PoolSpec, ResizeError, Runtime,
};
