//! tokio compatibility: a tokio runtime (I/O and time drivers) on threads of its own, whose `Handle`
//! every pagegen thread enters for its life, so `tokio::net`, `tokio::time`, `tokio::sync` and the
//! crates built on them (hyper, reqwest-style clients) work inside pagegen tasks.
//!
//! How it works: tokio's I/O resources and timers register with the driver of the runtime whose
//! handle is entered, and wake the task's waker when ready — a pagegen waker, which schedules the task
//! on pagegen. The tokio threads run tokio's reactor and timer wheel, and whatever is passed to
//! `tokio::spawn`.
//!
//! **Why more than one tokio thread** ([`Builder::tokio_workers`](crate::Builder::tokio_workers),
//! default 2): libraries call `tokio::spawn` for their background work (connection pools, HTTP
//! clients, tower's `Buffer`). With one current-thread runtime, a spawned task that computes 5 ms
//! between yields holds the only thread that fires timers and reports socket readiness, so every
//! pagegen task's `tokio::time::sleep(1 ms)` woke 4.1 ms late at p50 (`benches/timers.rs`). A
//! multi-thread runtime's idle worker parks *on* the drivers (tokio's own design: whichever worker
//! parks last polls the reactor and the timer wheel), so while one tokio thread runs spawned work
//! another keeps the timers on time — as on tokio itself with two workers. The threads are idle
//! when nothing is `tokio::spawn`ed: one waits in the reactor, the other on a condition variable.
//! `tokio_workers(1)` keeps the single current-thread runtime.
//!
//! Limits, and why:
//! - **`tokio::spawn` lands on the tokio threads** and bypasses pagegen (no classes, shares, hooks,
//!   budgets, and no request to charge it to: tokio's task hooks are unstable): it spawns on the
//!   runtime whose handle is entered. The same holds for everything that calls it internally:
//!   `axum::serve`, `hyper_util::rt::TokioExecutor`, some client connection pools. Its volume shows
//!   in the root crate's metrics (tokio's alive tasks and busy time). Use `pagegen::spawn` and
//!   pagegen's `HyperExecutor` instead where you can; a serve loop written with `pagegen::spawn` per
//!   connection keeps every request on pagegen.
//! - **tokio's cooperative budget cannot be set by another executor**: tokio resources inside pagegen
//!   tasks run with tokio's budget unset (unconstrained); pagegen's own budget bounds pagegen
//!   primitives (`consume_budget`).
//! - **tokio's paused test clock (`tokio::time::pause`) is not deterministic here**: the timer wheel
//!   runs on another thread, racing with the workers. Deterministic tests use pagegen's
//!   `VirtualClock` (`pagegen_core::clock`).
//! - Every I/O readiness event and timer crosses a thread (driver → worker): a wake costs a remote
//!   schedule. pagegen-io's per-worker driver is the remedy for file I/O.
#![forbid(unsafe_code)]

use std::io;
use std::thread;

/// The handle workers enter. Under `--cfg loom` (models of the queues and state machine only) tokio is
/// not built: tokio itself swaps in loom under that flag and does not compile as a dependency then.
#[cfg(not(loom))]
pub(crate) type TokioHandle = tokio::runtime::Handle;
#[cfg(loom)]
pub(crate) use loom_stub::TokioHandle;

#[cfg(loom)]
mod loom_stub {
    /// Stand-in so the rest of the crate compiles unchanged under loom.
    #[derive(Clone, Debug)]
    pub(crate) struct TokioHandle;
    impl TokioHandle {
        pub(crate) fn enter(&self) {}
    }
}

/// The driver thread and its runtime's handle.
pub(crate) struct TokioDriver {
    pub(crate) handle: TokioHandle,
    #[cfg(not(loom))]
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<thread::JoinHandle<()>>,
}

impl std::fmt::Debug for TokioDriver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokioDriver").finish_non_exhaustive()
    }
}

impl TokioDriver {
    /// Under loom there is no tokio: the runtime is built without compatibility.
    #[cfg(loom)]
    pub(crate) fn start(_name: &str, _workers: usize) -> io::Result<Self> {
        Err(io::Error::other(
            "tokio compatibility is not built under --cfg loom",
        ))
    }

    /// Starts the tokio runtime: `workers` ≥ 2 tokio worker threads (multi-thread), or with 1 a
    /// current-thread runtime on the driver thread. The driver thread owns the runtime either way
    /// (and drops it at [`stop`](Self::stop), which drops whatever was `tokio::spawn`ed).
    #[cfg(not(loom))]
    pub(crate) fn start(name: &str, workers: usize) -> io::Result<Self> {
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let (handle_tx, handle_rx) = std::sync::mpsc::channel();
        let tokio_name = format!("{name}-tokio");
        let thread = thread::Builder::new()
            .name(format!("{name}-tokio-driver"))
            .spawn(move || {
                let rt = if workers <= 1 {
                    tokio::runtime::Builder::new_current_thread()
                        .enable_all()
                        .build()
                } else {
                    tokio::runtime::Builder::new_multi_thread()
                        .worker_threads(workers)
                        .thread_name(tokio_name)
                        .enable_all()
                        .build()
                };
                match rt {
                    Ok(rt) => {
                        let _ = handle_tx.send(Ok(rt.handle().clone()));
                        rt.block_on(async move {
                            let _ = stop_rx.await;
                        });
                        // Dropping `rt` here drops whatever was `tokio::spawn`ed onto it.
                    }
                    Err(e) => {
                        let _ = handle_tx.send(Err(e));
                    }
                }
            })?;
        let handle = handle_rx
            .recv()
            .map_err(|_| io::Error::other("tokio driver thread exited before starting"))??;
        Ok(TokioDriver {
            handle,
            stop: Some(stop_tx),
            thread: Some(thread),
        })
    }

    /// Stops the driver thread and waits for it.
    pub(crate) fn stop(&mut self) {
        #[cfg(not(loom))]
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for TokioDriver {
    fn drop(&mut self) {
        self.stop();
    }
}
