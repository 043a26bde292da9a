//! [`File`]: an open file whose reads and writes go through pagegen's backend.
//!
//! Buffers are owned (`Vec<u8>` in, `Vec<u8>` out, as in tokio-uring): a kernel operation may
//! outlive the future that started it (op.rs protocol), so it cannot borrow the caller's slice.

use std::ffi::CString;
use std::fmt;
use std::io;
use std::os::fd::OwnedFd;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use pagegen_core::{IoOpKind, RequestCtx};

use crate::handle::Io;
use crate::metadata::Metadata;
use crate::op::Res;
use crate::profile::{file_key, note_file, record};
use crate::sys;

/// An open file. Closing happens on drop (through the thread's ring without waiting, when it has
/// one).
pub struct File {
    inner: Option<Arc<std::fs::File>>,
    io: Io,
    /// End offset of the last read, for locality (`u64::MAX`: none yet).
    last_read_end: AtomicU64,
    /// A pipe, socket or character device: offsets are meaningless, operations use the current
    /// position (io_uring offset -1).
    stream: bool,
}

impl fmt::Debug for File {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("File")
            .field("file", &self.inner)
            .field("backend", &self.io.backend())
            .finish()
    }
}

pub(crate) fn cstring(path: &Path) -> io::Result<CString> {
    CString::new(path.as_os_str().as_bytes()).map_err(|_| {
        io::Error::new(
            io::ErrorKind::InvalidInput,
            "file name contained an unexpected NUL byte",
        )
    })
}

pub(crate) fn os_err(result: i32) -> io::Error {
    io::Error::from_raw_os_error(-result)
}

impl File {
    /// Opens a file for reading.
    pub async fn open(path: impl AsRef<Path>) -> io::Result<File> {
        File::open_with(&Io::current(), path.as_ref(), libc::O_RDONLY, 0).await
    }

    /// Opens a file for writing, creating it or truncating it.
    pub async fn create(path: impl AsRef<Path>) -> io::Result<File> {
        File::open_with(
            &Io::current(),
            path.as_ref(),
            libc::O_WRONLY | libc::O_CREAT | libc::O_TRUNC,
            0o666,
        )
        .await
    }

    pub(crate) async fn open_with(io: &Io, path: &Path, flags: i32, mode: u32) -> io::Result<File> {
        let c = cstring(path)?;
        let done = io
            .run_op(
                Res::Open {
                    path: c,
                    flags,
                    mode,
                },
                0,
            )
            .await;
        File::from_open(io, path, done.result, done.latency_ns, done.ctx.as_ref())
    }

    /// Wraps the result of an open operation.
    pub(crate) fn from_open(
        io: &Io,
        path: &Path,
        result: i32,
        latency_ns: u64,
        ctx: Option<&Arc<RequestCtx>>,
    ) -> io::Result<File> {
        record(ctx, IoOpKind::Open, 0, latency_ns, false);
        if result < 0 {
            return Err(os_err(result));
        }
        let key = file_key(path);
        note_file(ctx, key);
        Ok(File {
            inner: Some(Arc::new(sys::file_from_fd(result))),
            io: io.clone(),
            last_read_end: AtomicU64::new(u64::MAX),
            stream: false,
        })
    }

    /// Wraps the descriptor `fs::read`'s chain installed (chain.rs, phase 2) after reading the
    /// file's first `read_end` bytes; the open is already recorded.
    pub(crate) fn from_installed(io: &Io, fd: OwnedFd, read_end: u64) -> File {
        File {
            inner: Some(Arc::new(std::fs::File::from(fd))),
            io: io.clone(),
            last_read_end: AtomicU64::new(read_end),
            stream: false,
        }
    }

    /// Marks the file as a pipe, socket or character device (see [`from_std`](File::from_std)).
    pub(crate) fn set_stream(&mut self, stream: bool) {
        self.stream = stream;
    }

    /// Wraps a file opened elsewhere (a pipe, a file opened with special flags); operations on it
    /// run on the current runtime. On a pipe, socket or character device the offsets of
    /// `read_at`/`write_at` are ignored: they read and write at the stream's position.
    pub fn from_std(file: std::fs::File) -> File {
        use std::os::unix::fs::FileTypeExt;
        let stream = file.metadata().is_ok_and(|m| {
            let t = m.file_type();
            t.is_fifo() || t.is_socket() || t.is_char_device()
        });
        File {
            inner: Some(Arc::new(file)),
            io: Io::current(),
            last_read_end: AtomicU64::new(u64::MAX),
            stream,
        }
    }

    fn pos(&self, offset: u64) -> u64 {
        if self.stream {
            u64::MAX
        } else {
            offset
        }
    }

    /// A clone of the shared std file, for an op to hold while it is in flight (op.rs protocol,
    /// step 1).
    fn shared(&self) -> Arc<std::fs::File> {
        Arc::clone(self.inner.as_ref().expect("file is open until dropped"))
    }

    /// The std file underneath (for calls pagegen-io does not wrap).
    pub fn as_std(&self) -> &std::fs::File {
        self.inner.as_ref().expect("file is open until dropped")
    }

    /// Reads at `offset` into `buf`'s spare capacity (`buf.capacity() - buf.len()` bytes), appending
    /// to `buf`. Short reads are continued; it stops early only at the end of the file. Returns the
    /// bytes read (0 at or past the end) and the buffer. On a stream (pipe, socket) it likewise
    /// waits until the buffer is full or the writer closes.
    pub async fn read_at(&self, mut buf: Vec<u8>, offset: u64) -> (io::Result<usize>, Vec<u8>) {
        let mut total = 0usize;
        loop {
            let want = buf.capacity() - buf.len();
            if want == 0 {
                return (Ok(total), buf);
            }
            let (r, b) = self.read_step(buf, want, offset + total as u64).await;
            buf = b;
            let n = match r {
                Ok(n) => n,
                Err(e) => return (Err(e), buf),
            };
            total += n;
            if n == 0 {
                return (Ok(total), buf);
            }
        }
    }

    /// One read operation (the step of [`read_at`](File::read_at) and `fs::read`): reads up to
    /// `want` bytes at `pos` into `buf`'s spare capacity, appending to `buf`, and records it in the
    /// request's profile (sequential when it starts where the previous read ended). Returns the
    /// bytes read (0 at the end) and the buffer; a short read is not continued.
    pub(crate) async fn read_step(
        &self,
        buf: Vec<u8>,
        want: usize,
        pos: u64,
    ) -> (io::Result<usize>, Vec<u8>) {
        let res = Res::Read {
            file: self.shared(),
            buf,
            len: want,
            offset: self.pos(pos),
        };
        let done = self.io.run_op(res, want as u64).await;
        let Res::Read { buf, .. } = done.res else {
            unreachable!("a read op hands back its read resources")
        };
        if done.result < 0 {
            record(done.ctx.as_ref(), IoOpKind::Read, 0, done.latency_ns, false);
            return (Err(os_err(done.result)), buf);
        }
        let n = done.result as usize;
        let sequential = self.last_read_end.swap(pos + n as u64, Ordering::Relaxed) == pos;
        record(
            done.ctx.as_ref(),
            IoOpKind::Read,
            n as u64,
            done.latency_ns,
            sequential,
        );
        (Ok(n), buf)
    }

    /// Writes all of `buf` at `offset` (short writes are continued). Returns the bytes written and
    /// the buffer.
    pub async fn write_at(&self, buf: Vec<u8>, offset: u64) -> (io::Result<usize>, Vec<u8>) {
        let mut from = 0usize;
        let mut buf = buf;
        while from < buf.len() {
            let bytes = (buf.len() - from) as u64;
            let res = Res::Write {
                file: self.shared(),
                buf,
                from,
                offset: self.pos(offset + from as u64),
            };
            let done = self.io.run_op(res, bytes).await;
            let Res::Write { buf: b, .. } = done.res else {
                unreachable!("a write op hands back its write resources")
            };
            buf = b;
            if done.result < 0 {
                record(
                    done.ctx.as_ref(),
                    IoOpKind::Write,
                    0,
                    done.latency_ns,
                    false,
                );
                return (Err(os_err(done.result)), buf);
            }
            let n = done.result as usize;
            record(
                done.ctx.as_ref(),
                IoOpKind::Write,
                n as u64,
                done.latency_ns,
                false,
            );
            if n == 0 {
                return (Err(io::ErrorKind::WriteZero.into()), buf);
            }
            from += n;
        }
        (Ok(from), buf)
    }

    /// Flushes data and metadata to the device (`fsync`).
    pub async fn sync_all(&self) -> io::Result<()> {
        let done = self
            .io
            .run_op(
                Res::Fsync {
                    file: self.shared(),
                },
                0,
            )
            .await;
        record(done.ctx.as_ref(), IoOpKind::Sync, 0, done.latency_ns, false);
        if done.result < 0 {
            Err(os_err(done.result))
        } else {
            Ok(())
        }
    }

    /// The open file's metadata.
    pub async fn metadata(&self) -> io::Result<Metadata> {
        let res = Res::Statx {
            file: Some(self.shared()),
            path: CString::default(),
            out: sys::zeroed_statx(),
        };
        stat(&self.io, res).await
    }
}

/// Runs a statx op and converts its result.
pub(crate) async fn stat(io: &Io, res: Res) -> io::Result<Metadata> {
    let done = io.run_op(res, 0).await;
    record(done.ctx.as_ref(), IoOpKind::Stat, 0, done.latency_ns, false);
    if done.result < 0 {
        return Err(os_err(done.result));
    }
    match done.res {
        Res::Statx { out, .. } => Ok(Metadata::from_statx(&out)),
        _ => unreachable!("a statx op hands back its statx resources"),
    }
}

impl Drop for File {
    fn drop(&mut self) {
        let Some(arc) = self.inner.take() else { return };
        // Ops still in flight hold their own clone; the last one closes the fd on drop.
        if let Ok(file) = Arc::try_unwrap(arc) {
            if let Some(ctx) = RequestCtx::current() {
                ctx.io.record_op(IoOpKind::Close, 0, 0, false);
            }
            self.io.close(file);
        }
    }
}
