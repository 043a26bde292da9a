//! `pagegen_io::fs`: file system calls with the names of `tokio::fs` / `std::fs`, run on pagegen's
//! backend, limited per class and profiled per request.
//!
//! Errors are [`io::Error`] with std's kinds (a missing file is `NotFound`). Short reads and writes,
//! `EINTR` and `EAGAIN` completions, and a full submission queue are handled inside. There is no
//! cache of open files: every call opens the path afresh, so a replaced file is never read stale.

use std::ffi::CString;
use std::future::{poll_fn, Future};
use std::io;
use std::path::Path;
use std::pin::pin;
use std::task::Poll;

use pagegen_core::IoOpKind;

pub use crate::file::File;
pub use crate::metadata::Metadata;

use crate::chain::{self, ReadFile};
use crate::file::{cstring, os_err, stat};
use crate::handle::Io;
use crate::op::Res;
use crate::profile::{file_key, note_file, record};
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
/// On io_uring the open, a first read of 16 KiB and a one-byte probe for the end go to the kernel
/// as one linked chain into a direct descriptor, which the ring then closes (chain.rs protocol):
/// a file up to 16 KiB costs one round trip and no `statx`. A larger file continues on the same
/// open file (never a second open), sized by a `statx` of the path sent with the descriptor's
/// install. The blocking pool
/// runs the same steps as plain calls in one job, so both backends charge the same operations.
///
/// Unchained (a ring that cannot chain: no direct-descriptor table, or a kernel before 6.8): the
/// open and a `statx` of the path go to the kernel together; the size is a capacity hint. On a
/// regular file a read that returns fewer bytes than asked (but more than 0) is the end of the
/// file (POSIX regular-file semantics), which saves the extra zero-length read `std` makes;
/// otherwise reads continue until one returns 0.
pub async fn read(path: impl AsRef<Path>) -> io::Result<Vec<u8>> {
    let path = path.as_ref();
    let io = Io::current();
    let c = cstring(path)?;
    match read_chained(&io, path, c).await {
        Ok(r) => r,
        Err(c) => read_unchained(&io, path, c).await,
    }
}

/// `read` through the chain; `Err(path)` when the ring could not chain it (nothing was done).
async fn read_chained(io: &Io, path: &Path, c: CString) -> Result<io::Result<Vec<u8>>, CString> {
    let done = io
        .run_op(Res::ReadFile(ReadFile::new(c)), chain::FIRST_READ as u64)
        .await;
    let Res::ReadFile(mut rf) = done.res else {
        unreachable!("a chain op hands back its chain resources")
    };
    if rf.unsupported {
        return Err(rf.path);
    }
    if done.result < 0 {
        // The ring shut down before pushing it.
        return Ok(Err(os_err(done.result)));
    }
    let ctx = done.ctx.as_ref();
    let canceled = || os_err(-libc::ECANCELED);
    // The first real error of the chain: a failed open cancels the reads (`-ECANCELED`).
    let opened = rf.results[chain::OPEN as usize].ok_or_else(canceled);
    record(ctx, IoOpKind::Open, 0, rf.latency_ns(chain::OPEN), false);
    match opened {
        Ok(r) if r < 0 => return Ok(Err(os_err(r))),
        Err(e) => return Ok(Err(e)),
        Ok(_) => {}
    }
    note_file(ctx, file_key(path));
    let mut failed = None;
    for (sub, sequential) in [(chain::READ, false), (chain::PROBE, true)] {
        let latency = rf.latency_ns(sub);
        match rf.results[sub as usize] {
            Some(n) if n >= 0 => record(ctx, IoOpKind::Read, n as u64, latency, sequential),
            r => {
                record(ctx, IoOpKind::Read, 0, latency, false);
                failed = Some(r.map_or_else(canceled, os_err));
                break;
            }
        }
    }
    // The ring closed the direct slot.
    record(ctx, IoOpKind::Close, 0, 0, false);
    if let Some(e) = failed {
        return Ok(Err(e));
    }
    if !rf.more() {
        let mut buf = rf.buf;
        // The buffer was sized for 16 KiB: give a much smaller file's caller back the rest, as
        // `std::fs::read`'s exact-size buffer would.
        if buf.capacity() > 2 * buf.len() {
            buf.shrink_to_fit();
        }
        return Ok(Ok(buf));
    }
    match (rf.installed.take(), rf.results[chain::INSTALL as usize]) {
        (Some(fd), _) => {
            let read_end = rf.buf.len() as u64;
            let file = File::from_installed(io, fd, read_end);
            let hint = match (rf.results[chain::STAT as usize], &rf.stat) {
                (Some(0), Some(out)) => {
                    record(ctx, IoOpKind::Stat, 0, rf.latency_ns(chain::STAT), false);
                    Some(Metadata::from_statx(out))
                }
                _ => None,
            };
            Ok(read_rest(file, rf.buf, hint).await)
        }
        (None, Some(r)) if r < 0 => Ok(Err(os_err(r))),
        // Phase 2 found no room in the submission queue: read it afresh, unchained.
        (None, _) => Err(rf.path),
    }
}

/// Continues a chained read of a file longer than the first read, on its installed descriptor,
/// sized by phase 2's statx of the path (else a statx of the descriptor).
async fn read_rest(
    mut file: File,
    mut buf: Vec<u8>,
    hint: Option<Metadata>,
) -> io::Result<Vec<u8>> {
    let m = match hint {
        Some(m) => m,
        None => file.metadata().await?,
    };
    let kind = m.mode() & libc::S_IFMT;
    file.set_stream(matches!(
        kind,
        libc::S_IFIFO | libc::S_IFSOCK | libc::S_IFCHR
    ));
    let size = m.len() as usize;
    if size > buf.len() {
        buf.reserve_exact(size + 1 - buf.len());
    } else {
        buf.reserve(UNKNOWN_SIZE_FIRST_READ);
    }
    read_to_end(&file, buf, ends_at_short_read(&m)).await
}

/// Whether a short read of this file is its end: a regular file that reports a size. `/proc` and
/// `/sys` files are regular files of size 0 whose reads stop short at every seq_file page.
fn ends_at_short_read(m: &Metadata) -> bool {
    m.is_file() && !m.is_empty()
}

/// Reads `file` from offset `buf.len()` to its end, appending to `buf`, growing it when full.
async fn read_to_end(file: &File, mut buf: Vec<u8>, regular: bool) -> io::Result<Vec<u8>> {
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

/// `read` without the chain: open and `statx` together, then reads, then the close on drop.
async fn read_unchained(io: &Io, path: &Path, c: CString) -> io::Result<Vec<u8>> {
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
        io,
        path,
        opened.result,
        opened.latency_ns,
        opened.ctx.as_ref(),
    )?;
    let (size, regular) = match (&stated.res, stated.result) {
        (Res::Statx { out, .. }, 0) => {
            let m = Metadata::from_statx(out);
            (m.len() as usize, ends_at_short_read(&m))
        }
        _ => (0, false),
    };
    let buf = Vec::with_capacity(if size > 0 {
        size + 1
    } else {
        UNKNOWN_SIZE_FIRST_READ
    });
    read_to_end(&file, buf, regular).await
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
