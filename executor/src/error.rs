//! Errors of the executor: why a task produced no output.
#![forbid(unsafe_code)]

use std::any::Any;
use std::fmt;
use std::sync::Mutex;

use pagegen_core::CancelReason;

/// Why awaiting a [`JoinHandle`](crate::JoinHandle) gave no output: the task panicked or was cancelled.
///
/// Opaque with `is_*` checks (the hyper `Error` style), so variants can grow without breaking callers.
pub struct JoinError {
    id: u64,
    repr: Repr,
}

enum Repr {
    Cancelled(CancelReason),
    /// The mutex makes the error `Sync` (so it converts into `anyhow::Error` and friends) without
    /// requiring the payload to be; it is locked only to read the message or take the payload.
    Panic(Mutex<Box<dyn Any + Send + 'static>>),
}

/// The cause of a [`JoinError`], for logs and `source()` chains.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum TaskFailure {
    /// Cancelled before it finished.
    #[error("task {id} was cancelled: {reason}")]
    Cancelled {
        /// Task id.
        id: u64,
        /// Why.
        reason: CancelReason,
    },
    /// Its future (or a hook around its poll) panicked.
    #[error("task {id} panicked: {message}")]
    Panicked {
        /// Task id.
        id: u64,
        /// The panic message when it was a string.
        message: String,
    },
}

impl JoinError {
    pub(crate) fn cancelled(id: u64, reason: CancelReason) -> Self {
        JoinError {
            id,
            repr: Repr::Cancelled(reason),
        }
    }
    pub(crate) fn panic(id: u64, payload: Box<dyn Any + Send + 'static>) -> Self {
        JoinError {
            id,
            repr: Repr::Panic(Mutex::new(payload)),
        }
    }
    /// Whether the task was cancelled (abort, hook verdict, request cancellation, shutdown).
    pub fn is_cancelled(&self) -> bool {
        matches!(self.repr, Repr::Cancelled(_))
    }
    /// Whether the task panicked.
    pub fn is_panic(&self) -> bool {
        matches!(self.repr, Repr::Panic(_))
    }
    /// Why the task was cancelled, if it was.
    pub fn cancel_reason(&self) -> Option<CancelReason> {
        match self.repr {
            Repr::Cancelled(r) => Some(r),
            Repr::Panic(_) => None,
        }
    }
    /// The id of the task.
    pub fn task_id(&self) -> u64 {
        self.id
    }
    /// The panic payload, to resume the panic (`std::panic::resume_unwind`).
    ///
    /// # Errors
    /// Gives the error back when it is not a panic.
    pub fn try_into_panic(self) -> Result<Box<dyn Any + Send + 'static>, JoinError> {
        match self.repr {
            Repr::Panic(p) => Ok(p.into_inner().unwrap_or_else(|e| e.into_inner())),
            repr => Err(JoinError { id: self.id, repr }),
        }
    }
    /// The failure as a plain, cloneable value.
    pub fn failure(&self) -> TaskFailure {
        match &self.repr {
            Repr::Cancelled(reason) => TaskFailure::Cancelled {
                id: self.id,
                reason: *reason,
            },
            Repr::Panic(p) => TaskFailure::Panicked {
                id: self.id,
                message: panic_message(p.lock().unwrap_or_else(|e| e.into_inner()).as_ref()),
            },
        }
    }
}

/// The message of a panic payload (`&str` or `String`), or a placeholder.
pub(crate) fn panic_message(p: &(dyn Any + Send)) -> String {
    if let Some(s) = p.downcast_ref::<&str>() {
        (*s).to_owned()
    } else if let Some(s) = p.downcast_ref::<String>() {
        s.clone()
    } else {
        "<non-string panic payload>".to_owned()
    }
}

impl fmt::Debug for JoinError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&self.failure(), f)
    }
}

impl fmt::Display for JoinError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.failure(), f)
    }
}

impl std::error::Error for JoinError {}

impl From<JoinError> for std::io::Error {
    fn from(e: JoinError) -> Self {
        std::io::Error::other(e.to_string())
    }
}
