//! Which backend runs file operations, and how it is chosen.
//!
//! [`BackendChoice::Auto`] (what [`Io::global`](crate::Io::global) uses) honours `PAGEGEN_IO=blocking`,
//! otherwise probes io_uring (setup plus one no-op, see `ring::probe`) and falls back to the blocking
//! pool when the probe fails — `ENOSYS` (old kernel), `EPERM` (`kernel.io_uring_disabled`, a
//! container's seccomp profile), or anything else. The fallback is announced once per process with
//! `tracing::warn!`.

use std::fmt;
use std::sync::Once;

use crate::error::IoError;
use crate::ring;

/// The environment variable that forces the blocking backend when set to `blocking`.
pub const ENV_VAR: &str = "PAGEGEN_IO";

/// The backend an [`Io`](crate::Io) runs on.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Backend {
    /// io_uring rings: one per worker thread, plus a reaper thread's ring for other threads.
    Uring,
    /// A pool of threads doing blocking system calls.
    Blocking,
}

impl fmt::Display for Backend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Backend::Uring => "io_uring",
            Backend::Blocking => "blocking",
        })
    }
}

/// How to pick the backend.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum BackendChoice {
    /// `PAGEGEN_IO=blocking` forces the pool; otherwise io_uring if it works here, else the pool.
    #[default]
    Auto,
    /// io_uring or an error.
    Uring,
    /// The blocking pool.
    Blocking,
}

static FALLBACK_WARNING: Once = Once::new();

/// Resolves a choice to a backend.
pub(crate) fn resolve(choice: BackendChoice) -> Result<Backend, IoError> {
    match choice {
        BackendChoice::Blocking => Ok(Backend::Blocking),
        BackendChoice::Uring => ring::probe()
            .map(|()| Backend::Uring)
            .map_err(IoError::UringUnavailable),
        BackendChoice::Auto => {
            if std::env::var(ENV_VAR).is_ok_and(|v| v.eq_ignore_ascii_case("blocking")) {
                FALLBACK_WARNING.call_once(|| {
                    tracing::warn!(
                        "pagegen-io: {ENV_VAR}=blocking: file I/O runs on the blocking pool"
                    )
                });
                return Ok(Backend::Blocking);
            }
            match ring::probe() {
                Ok(()) => Ok(Backend::Uring),
                Err(e) => {
                    FALLBACK_WARNING.call_once(|| {
                        tracing::warn!(
                            "pagegen-io: io_uring is unavailable ({e}); file I/O falls back to the \
                             blocking pool (same API, limits and profile)"
                        )
                    });
                    Ok(Backend::Blocking)
                }
            }
        }
    }
}

/// Whether io_uring works in this process (the probe [`BackendChoice::Auto`] runs).
pub fn uring_available() -> bool {
    ring::probe().is_ok()
}

/// The environment variable that picks how sockets do their I/O on the io_uring backend:
/// `readiness` (the default) or `ring`.
pub const SOCKETS_ENV_VAR: &str = "PAGEGEN_IO_SOCKETS";

/// How [`net`](crate::net) sockets do their I/O.
///
/// The default is [`Readiness`](SocketPath::Readiness) on both backends, by measurement: with 2
/// workers on cores shared with other work, sockets on the ring have a bimodal tail (a receive
/// completes on its submitting worker's ring only, so a worker waiting for a CPU holds its
/// connections), while on readiness whichever worker runs takes any ready connection
/// (benches/RESULTS.md, network entries of 2026-12-06 and 2026-12-07).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum SocketPath {
    /// Accept, receive and send as io_uring operations on the polling worker's ring (multishot
    /// accept, owned buffers; uring backend only).
    Ring,
    /// Non-blocking system calls that wait for readiness in the polling worker's epoll set. On
    /// the uring backend the worker's ring watches the set (one poll entry), so one park covers
    /// files on the ring and sockets.
    Readiness,
}

impl SocketPath {
    /// The path for `backend`: readiness on the blocking backend; on io_uring, what
    /// `PAGEGEN_IO_SOCKETS` says (`readiness` or `ring`), else [`SocketPath::Readiness`]. Another
    /// value is reported once and ignored.
    pub fn for_backend(backend: Backend) -> SocketPath {
        static BAD_VALUE: Once = Once::new();
        if backend == Backend::Blocking {
            return SocketPath::Readiness;
        }
        match std::env::var(SOCKETS_ENV_VAR) {
            Ok(v) if v.eq_ignore_ascii_case("ring") => SocketPath::Ring,
            Ok(v) if v.eq_ignore_ascii_case("readiness") || v.is_empty() => SocketPath::Readiness,
            Ok(v) => {
                BAD_VALUE.call_once(|| {
                    tracing::warn!(
                        "pagegen-io: {SOCKETS_ENV_VAR}={v:?} is neither `readiness` nor `ring`; \
                         sockets use readiness"
                    )
                });
                SocketPath::Readiness
            }
            Err(_) => SocketPath::Readiness,
        }
    }
}
