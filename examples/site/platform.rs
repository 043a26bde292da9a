//! The few runtime services the pages use, behind one small type so the same handlers run on
//! pagegen and on tokio: blocking work (every SQLite call), file reads, and a cooperative yield.
//!
//! On pagegen each goes through pagegen's API, which charges it to the request being served
//! (`pagegen::spawn_blocking` runs on its blocking pool and books the closure's CPU to the
//! request; `pagegen::fs` reads on the worker's io_uring ring, bounded by the class's I/O depth).
//! On tokio they are tokio's own (`tokio::task::spawn_blocking`, `tokio::fs`), as a tokio service
//! would write them.

use std::io;
use std::path::Path;

/// Which runtime the site runs on: decides which API each call goes through.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Platform {
    /// pagegen's runtime (`pagegen::spawn_blocking`, `pagegen::fs`, `pagegen::task::yield_now`).
    Pagegen,
    /// tokio's multi-thread runtime (`tokio::task::spawn_blocking`, `tokio::fs`, tokio's yield).
    Tokio,
}

impl Platform {
    /// Runs `f` off the async workers and waits for it. A panic in `f` is resumed here, as if
    /// `f` had run inline.
    pub async fn blocking<F, R>(self, f: F) -> R
    where
        F: FnOnce() -> R + Send + 'static,
        R: Send + 'static,
    {
        match self {
            Platform::Pagegen => match pagegen::spawn_blocking(f).await {
                Ok(r) => r,
                Err(e) => match e.try_into_panic() {
                    Ok(payload) => std::panic::resume_unwind(payload),
                    Err(e) => panic!("blocking task failed: {e}"),
                },
            },
            Platform::Tokio => match tokio::task::spawn_blocking(f).await {
                Ok(r) => r,
                Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
                Err(e) => panic!("blocking task failed: {e}"),
            },
        }
    }

    /// Reads a whole file.
    pub async fn read(self, path: impl AsRef<Path>) -> io::Result<Vec<u8>> {
        match self {
            Platform::Pagegen => pagegen::fs::read(path).await,
            Platform::Tokio => tokio::fs::read(path).await,
        }
    }

    /// Reads a whole UTF-8 file.
    pub async fn read_to_string(self, path: impl AsRef<Path>) -> io::Result<String> {
        let bytes = self.read(path).await?;
        String::from_utf8(bytes).map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))
    }

    /// Lets other tasks run (a point where a long handler can be rescheduled, measured, demoted
    /// or cancelled).
    pub async fn yield_now(self) {
        match self {
            Platform::Pagegen => pagegen::task::yield_now().await,
            Platform::Tokio => tokio::task::yield_now().await,
        }
    }
}
