//! The handle that awaits a task's output.

use std::fmt;
use std::future::Future;
use std::marker::PhantomData;
use std::pin::Pin;
use std::task::{Context, Poll};

use super::budget;
use super::raw::JoinRaw;
use crate::error::JoinError;

/// An owned permission to await a task's output; dropping it detaches the task (it keeps running).
///
/// Resolves to `Err(JoinError)` if the task panicked or was cancelled. Awaiting it consumes one unit
/// of the cooperative budget ([`consume_budget`](crate::task::consume_budget)).
pub struct JoinHandle<T> {
    raw: Option<JoinRaw>,
    _out: PhantomData<fn() -> T>,
}

impl<T> JoinHandle<T> {
    pub(crate) fn new(raw: JoinRaw) -> Self {
        JoinHandle {
            raw: Some(raw),
            _out: PhantomData,
        }
    }
    /// Asks the task to stop: it is dropped before its next poll (or now, if idle, by a worker) and
    /// this handle then yields a cancelled [`JoinError`]. Does nothing if it already finished.
    pub fn abort(&self) {
        if let Some(raw) = &self.raw {
            raw.abort();
        }
    }
    /// Whether the task has finished (completed, panicked or been cancelled).
    pub fn is_finished(&self) -> bool {
        self.raw.as_ref().is_none_or(JoinRaw::is_finished)
    }
    /// The task's id.
    pub fn id(&self) -> u64 {
        self.raw.as_ref().map_or(0, |r| r.header().id)
    }
    /// A handle that can abort the task without awaiting it.
    pub fn abort_handle(&self) -> AbortHandle {
        AbortHandle {
            id: self.id(),
            inner: self.raw.as_ref().map(|r| r.abort_ref()),
        }
    }
}

impl<T> Unpin for JoinHandle<T> {}

impl<T: Send + 'static> Future for JoinHandle<T> {
    type Output = Result<T, JoinError>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let Some(raw) = self.raw.as_ref() else {
            panic!("JoinHandle polled after it returned its output");
        };
        let restore = match budget::poll_proceed(cx) {
            Poll::Ready(r) => r,
            Poll::Pending => return Poll::Pending,
        };
        // SAFETY: `JoinHandle<T>` is only built by spawn functions for a task whose output is `T`,
        // and `raw` is taken below once the output has been read.
        let out = unsafe { raw.poll_output::<T>(cx.waker()) };
        if out.is_ready() {
            restore.made_progress();
            self.raw = None;
        }
        out
    }
}

impl<T> fmt::Debug for JoinHandle<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("JoinHandle")
            .field("id", &self.id())
            .field("finished", &self.is_finished())
            .finish()
    }
}

/// Aborts a task without owning its output.
pub struct AbortHandle {
    id: u64,
    inner: Option<super::raw::AbortRef>,
}

impl AbortHandle {
    /// Same as [`JoinHandle::abort`].
    pub fn abort(&self) {
        if let Some(r) = &self.inner {
            r.abort();
        }
    }
    /// Whether the task has finished.
    pub fn is_finished(&self) -> bool {
        self.inner.as_ref().is_none_or(|r| r.is_finished())
    }
}

impl fmt::Debug for AbortHandle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AbortHandle").field("id", &self.id).finish()
    }
}
