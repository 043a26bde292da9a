//! pagegen-alloc's errors.

use std::io;
use std::path::PathBuf;

/// What can go wrong outside the allocation hot path (which never fails with an error: it returns
/// null, as `GlobalAlloc` demands).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AllocError {
    /// A jemalloc control call failed (`code` is the errno-style value jemalloc returned).
    #[error("jemalloc control `{name}` failed with error {code}")]
    Mallctl {
        /// The control's name.
        name: &'static str,
        /// jemalloc's return value.
        code: i32,
    },
    /// The address range for class arenas could not be reserved.
    #[error("could not reserve the address range for class arenas")]
    Reserve,
    /// More classes than class arenas.
    #[error("more than {0} classes; the others share the default arena")]
    TooManyClasses(usize),
    /// The memory pool cannot cover a reservation.
    #[error("memory pool exhausted: asked for {requested} bytes, {available} available")]
    PoolExhausted {
        /// Bytes asked for.
        requested: u64,
        /// Bytes the pool had left.
        available: u64,
    },
    /// No cgroup memory limit applies to this process (or it is unlimited).
    #[error("no cgroup memory limit applies to this process; configure the pool size instead")]
    NoLimit,
    /// The limit leaves nothing once the headroom is taken off.
    #[error("memory limit of {limit} bytes is not above the headroom of {headroom} bytes")]
    Headroom {
        /// The limit found.
        limit: u64,
        /// The headroom asked for.
        headroom: u64,
    },
    /// A file could not be read.
    #[error("cannot read {}: {source}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// Why.
        source: io::Error,
    },
    /// A file did not hold what it should.
    #[error("cannot parse {}: {detail}", path.display())]
    Parse {
        /// The file.
        path: PathBuf,
        /// What was wrong.
        detail: String,
    },
}
