//! Runtime construction, under tokio's names (`tokio::runtime::{Builder, Runtime, Handle}`).

pub use pagegen_executor::{
    lower_current_thread_priority, Builder, ClassStats, EnterGuard, Handle, PollSummary, PoolSize,
    PoolSpec, ResizeError, Runtime,
};
