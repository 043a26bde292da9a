//! Task utilities, under tokio's names (`tokio::task::*`).

pub use pagegen_executor::task::{
    consume_budget, has_budget_remaining, unconstrained, yield_now, AbortHandle, JoinHandle,
    Unconstrained,
};
pub use pagegen_executor::{spawn, spawn_blocking, spawn_in, JoinError, TaskFailure};
