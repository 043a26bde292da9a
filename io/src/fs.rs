//! `pagegen_io::fs`: file system calls with the names of `tokio::fs` / `std::fs`, run on pagegen's
//! backend, limited per class and profiled per request.
//!
//! Errors are [`io::Error`] with std's kinds (a missing file is `NotFound`). Short reads and writes,
//! `EINTR` and `EAGAIN` completions, and a full submission queue are handled inside. There is no
//! cache of open files: every call opens the path afresh, so a replaced file is never read stale.

use std::future::{poll_fn, Future};
use std::io;
use std::path::Path;
use std::pin::pin;
use std::task::Poll;

use pagegen_core::IoOpKind;

pub use crate::file::File;
pub use crate::metadata::Metadata;

use crate::file::{cstring, stat};
use crate::handle::Io;
use crate::op::Res;
use crate::profile::record;
use crate::sys;

/// Capacity of the first read when the size is unknown (`/proc` files report 0): one page-cache
/// page pair, grown by doubling.
const UNKNOWN_SIZE_FIRST_READ: usize = 8 * 1024;

/// Polls two futures together (their operations go to the kernel in the same batch).
async fn join<A: Future, B: Future>(a: A, b: B) -> (A::Output, B::Output) {
    let mut a = pin!(a);
    let mut b = pin!(b);
    let mut ra = None;
    let mut rb = None;
    poll_fn(|cx| {
        if ra.is_none() {
            if let Poll::Ready(v) = a.as_mut().poll(cx) {
                ra = Some(v);
            }
        }
        if rb.is_none() {
            if let Poll::Ready(v) = b.as_mut().poll(cx) {
                rb = Some(v);
            }
        }
        if ra.is_some() && rb.is_some() {
            Poll::Ready((ra.take().expect("set"), rb.take().expect("set")))
        } else {
            Poll::Pending
        }
    })
    .await
}

/// Reads the whole file.
///
/// The open and a `statx` of the path go to the kernel together; the size is a capacity hint.
/// On a regular file a read that returns fewer bytes than asked (but more than 0) is the end of
/// the file (POSIX regular-file semantics), which saves the extra zero-length read `std` makes;
/// otherwise reads continue until one returns 0.
pub async fn read(path: impl AsRef<Path>) -> io::Result<Vec<u8>> {
    let path = path.as_ref();
    let io = Io::current();
    let c = cstring(path)?;
    let open = io.run_op(
        Res::Open {
            path: c.clone(),
            flags: libc::O_RDONLY,
            mode: 0,
        },
        0,
    );
    let statx = io.run_op(
        Res::Statx {
            file: None,
            path: c,
            out: sys::zeroed_statx(),
        },
        0,
    );
    let (opened, stated) = join(open, statx).await;
    record(
        stated.ctx.as_ref(),
        IoOpKind::Stat,
        0,
        stated.latency_ns,
        false,
    );
    let file = File::from_open(
        &io,
        path,
        opened.result,
        opened.latency_ns,
        opened.ctx.as_ref(),
    )?;
    let (size, regular) = match (&stated.res, stated.result) {
        (Res::Statx { out, .. }, 0) => {
            let m = Metadata::from_statx(out);
            (m.len() as usize, m.is_file())
        }
        _ => (0, false),
    };
    let mut buf = Vec::with_capacity(if size > 0 {
        size + 1
    } else {
        UNKNOWN_SIZE_FIRST_READ
    });
    loop {
        let want = buf.capacity() - buf.len();
        let pos = buf.len() as u64;
        let (r, b) = file.read_step(buf, want, pos).await;
        buf = b;
        let n = r?;
        if n == 0 || (regular && n < want) {
            return Ok(buf);
        }
        if buf.len() == buf.capacity() {
            buf.reserve(buf.capacity().max(UNKNOWN_SIZE_FIRST_READ));
        }
    }
}

/// Reads the whole file as UTF-8 (`InvalidData` if it is not).
pub async fn read_to_string(path: impl AsRef<Path>) -> io::Result<String> {
    let bytes = read(path).await?;
    String::from_utf8(bytes).map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))
}

/// Writes `contents` to a file, creating or truncating it.
pub async fn write(path: impl AsRef<Path>, contents: impl AsRef<[u8]>) -> io::Result<()> {
    let file = File::create(path).await?;
    let (r, _) = file.write_at(contents.as_ref().to_vec(), 0).await;
    r.map(drop)
}

/// Metadata of the file at `path`, following symbolic links.
pub async fn metadata(path: impl AsRef<Path>) -> io::Result<Metadata> {
    let c = cstring(path.as_ref())?;
    stat(
        &Io::current(),
        Res::Statx {
            file: None,
            path: c,
            out: sys::zeroed_statx(),
        },
    )
    .await
}
