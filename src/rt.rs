//! Glue for hyper: an executor that spawns hyper's connection tasks on pagegen, plus hyper-util's
//! tokio adapters (which work unchanged, because tokio's drivers run inside pagegen).

use std::future::Future;

pub use hyper_util::rt::{TokioIo, TokioTimer};

/// A `hyper::rt::Executor` that spawns on the current pagegen runtime (use it where hyper asks for an
/// executor, instead of `hyper_util::rt::TokioExecutor`, which would spawn on tokio's threads, outside pagegen).
///
/// Spawned tasks inherit the spawner's request context, like every `pagegen::spawn`.
#[derive(Clone, Copy, Debug, Default)]
pub struct HyperExecutor;

impl HyperExecutor {
    /// The executor.
    pub fn new() -> Self {
        HyperExecutor
    }
}

impl<F> hyper::rt::Executor<F> for HyperExecutor
where
    F: Future + Send + 'static,
    F::Output: Send + 'static,
{
    fn execute(&self, fut: F) {
        drop(pagegen_executor::spawn(fut));
    }
}
