//! Thin, typed wrappers over the system calls the blocking pool and the rings need.
//!
//! One of the two modules allowed to hold `unsafe` (see the crate docs). Everything here is a plain
//! FFI call on memory the caller hands over for the duration of the call, plus the two ownership
//! transfers of raw file descriptors (`file_from_fd`) and spare-capacity bookkeeping
//! (`assume_filled`).

use std::ffi::CStr;
use std::fs::File;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

/// Errno of the last failed call, as the negative value io_uring completions carry.
fn neg_errno() -> i32 {
    -io::Error::last_os_error()
        .raw_os_error()
        .unwrap_or(libc::EIO)
}

/// An eventfd, used to wake a ring parked in `io_uring_enter` from another thread.
#[derive(Debug)]
pub(crate) struct EventFd(OwnedFd);

impl EventFd {
    /// A close-on-exec eventfd with a zero counter. It is left blocking on purpose: io_uring answers
    /// a read of a non-blocking fd that has nothing to read with `EAGAIN` instead of waiting for it.
    /// Writers never block (the counter would have to reach 2^64 - 2).
    pub(crate) fn new() -> io::Result<EventFd> {
        // SAFETY: eventfd takes no pointers; a non-negative return is a fresh fd that we own.
        let fd = unsafe { libc::eventfd(0, libc::EFD_CLOEXEC) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: `fd` was just returned by eventfd and is owned by nobody else.
        Ok(EventFd(unsafe { OwnedFd::from_raw_fd(fd) }))
    }

    /// Adds one to the counter, which completes a pending read of the eventfd.
    pub(crate) fn notify(&self) {
        let one: u64 = 1;
        loop {
            // SAFETY: writes 8 bytes from a live local `u64` to an fd we own.
            let n = unsafe {
                libc::write(
                    self.0.as_raw_fd(),
                    (&one as *const u64).cast(),
                    std::mem::size_of::<u64>(),
                )
            };
            // EINTR: retry. Anything else cannot happen on an eventfd we own.
            if n >= 0 || io::Error::last_os_error().kind() != io::ErrorKind::Interrupted {
                return;
            }
        }
    }

    /// The raw fd, for an io_uring read.
    pub(crate) fn raw(&self) -> RawFd {
        self.0.as_raw_fd()
    }
}

/// Takes ownership of `fd`, a descriptor returned by a successful `accept` (blocking or io_uring)
/// or `FIXED_FD_INSTALL` (chain.rs).
pub(crate) fn owned_fd(fd: i32) -> OwnedFd {
    debug_assert!(fd >= 0);
    // SAFETY: callers pass the result of a successful accept or install that nobody else has
    // wrapped; the `OwnedFd` becomes its only owner and closes it once.
    unsafe { OwnedFd::from_raw_fd(fd) }
}

/// Takes ownership of `fd`, a descriptor returned by a successful `openat` (blocking or io_uring).
pub(crate) fn file_from_fd(fd: i32) -> File {
    debug_assert!(fd >= 0);
    // SAFETY: callers pass the result of a successful open that nobody else has wrapped; the `File`
    // becomes its only owner and closes it once.
    unsafe { File::from_raw_fd(fd) }
}

/// Marks `n` more bytes of `buf`'s spare capacity as initialised.
///
/// Used after a read (blocking `pread` or an io_uring completion) wrote `n` bytes at
/// `buf.as_ptr() + buf.len()`.
///
/// # Safety
/// The caller guarantees that the kernel reported writing exactly `n` bytes starting at the first
/// spare byte of `buf`, and that `buf.len() + n <= buf.capacity()`.
pub(crate) unsafe fn assume_filled(buf: &mut Vec<u8>, n: usize) {
    debug_assert!(buf.len() + n <= buf.capacity());
    // SAFETY: the caller's contract: these bytes were written by the kernel and lie in capacity.
    unsafe { buf.set_len(buf.len() + n) }
}

/// Marks `n` bytes that the kernel wrote at `buf.as_ptr() + at` (in the spare capacity, possibly
/// after a gap of unwritten bytes) as the next initialised bytes of `buf`, moving them down to
/// `buf.len()` first when there is a gap (chain.rs: the probe read lands after the first read's
/// buffer, which a short first read leaves partly unwritten).
///
/// # Safety
/// The caller guarantees that the kernel reported writing exactly `n` bytes at offset `at` of
/// `buf`'s allocation, that `buf.len() <= at`, and that `at + n <= buf.capacity()`.
pub(crate) unsafe fn assume_filled_at(buf: &mut Vec<u8>, at: usize, n: usize) {
    debug_assert!(buf.len() <= at && at + n <= buf.capacity());
    let len = buf.len();
    if at != len {
        let base = buf.as_mut_ptr();
        // SAFETY: both ranges lie in the allocation (`len <= at`, `at + n <= capacity`); `copy`
        // allows overlap; the source bytes were written by the kernel (the caller's contract).
        unsafe { std::ptr::copy(base.add(at), base.add(len), n) };
    }
    // SAFETY: bytes `len..len + n` now hold what the kernel wrote, within capacity.
    unsafe { buf.set_len(len + n) }
}

/// `pread` into the spare capacity of `buf` (at most `len` bytes); returns bytes read or `-errno`.
/// `offset == u64::MAX` reads at the current position (streams), as io_uring's offset -1 does.
pub(crate) fn pread_spare(fd: RawFd, buf: &mut Vec<u8>, len: usize, offset: u64) -> i32 {
    let len = len.min(buf.capacity() - buf.len());
    if offset == u64::MAX {
        return read_spare(fd, buf, len);
    }
    loop {
        // SAFETY: the destination is `len` bytes of `buf`'s spare capacity, which we borrow mutably
        // for the call; the kernel writes at most `len` bytes there.
        let n = unsafe {
            libc::pread(
                fd,
                buf.as_mut_ptr().add(buf.len()).cast(),
                len,
                offset as libc::off_t,
            )
        };
        if n >= 0 {
            // SAFETY: pread reported writing `n <= len` bytes at the first spare byte.
            unsafe { assume_filled(buf, n as usize) };
            return n as i32;
        }
        let e = neg_errno();
        if e == -libc::ESPIPE && offset == 0 {
            // A pipe or socket: read at the current position, as an io_uring read at offset 0 does.
            return read_spare(fd, buf, len);
        }
        if e != -libc::EINTR {
            return e;
        }
    }
}

fn read_spare(fd: RawFd, buf: &mut Vec<u8>, len: usize) -> i32 {
    loop {
        // SAFETY: as in `pread_spare`: `len` bytes of spare capacity, borrowed mutably.
        let n = unsafe { libc::read(fd, buf.as_mut_ptr().add(buf.len()).cast(), len) };
        if n >= 0 {
            // SAFETY: read reported writing `n <= len` bytes at the first spare byte.
            unsafe { assume_filled(buf, n as usize) };
            return n as i32;
        }
        let e = neg_errno();
        if e != -libc::EINTR {
            return e;
        }
    }
}

/// `pwrite` of `buf`; returns bytes written or `-errno`. `offset == u64::MAX` writes at the
/// current position (streams).
pub(crate) fn pwrite(fd: RawFd, buf: &[u8], offset: u64) -> i32 {
    loop {
        if offset == u64::MAX {
            // SAFETY: reads `buf.len()` bytes from a live slice.
            let n = unsafe { libc::write(fd, buf.as_ptr().cast(), buf.len()) };
            if n >= 0 {
                return n as i32;
            }
            let e = neg_errno();
            if e != -libc::EINTR {
                return e;
            }
            continue;
        }
        // SAFETY: reads `buf.len()` bytes from a live slice.
        let n = unsafe { libc::pwrite(fd, buf.as_ptr().cast(), buf.len(), offset as libc::off_t) };
        if n >= 0 {
            return n as i32;
        }
        let mut e = neg_errno();
        if e == -libc::ESPIPE && offset == 0 {
            // A pipe or socket: write at the current position, as an io_uring write at 0 does.
            // SAFETY: reads `buf.len()` bytes from a live slice.
            let n = unsafe { libc::write(fd, buf.as_ptr().cast(), buf.len()) };
            if n >= 0 {
                return n as i32;
            }
            e = neg_errno();
        }
        if e != -libc::EINTR {
            return e;
        }
    }
}

/// `openat(AT_FDCWD, path, flags, mode)`; returns the fd or `-errno`.
pub(crate) fn open(path: &CStr, flags: i32, mode: u32) -> i32 {
    loop {
        // SAFETY: `path` is a valid NUL-terminated string for the duration of the call.
        let fd = unsafe { libc::openat(libc::AT_FDCWD, path.as_ptr(), flags, mode) };
        if fd >= 0 {
            return fd;
        }
        let e = neg_errno();
        if e != -libc::EINTR {
            return e;
        }
    }
}

/// `statx` on a path (`fd` = `AT_FDCWD`) or on an open fd (empty path + `AT_EMPTY_PATH`).
pub(crate) fn statx(dirfd: RawFd, path: &CStr, flags: i32, out: &mut libc::statx) -> i32 {
    // SAFETY: `path` is NUL-terminated and `out` is a live, exclusively borrowed statx buffer.
    let r = unsafe { libc::statx(dirfd, path.as_ptr(), flags, libc::STATX_BASIC_STATS, out) };
    if r == 0 {
        0
    } else {
        neg_errno()
    }
}

/// `fsync`; returns 0 or `-errno`.
pub(crate) fn fsync(fd: RawFd) -> i32 {
    // SAFETY: no pointers; fd validity is the kernel's to check.
    if unsafe { libc::fsync(fd) } == 0 {
        0
    } else {
        neg_errno()
    }
}

/// A zeroed `statx` buffer.
pub(crate) fn zeroed_statx() -> Box<libc::statx> {
    // SAFETY: `statx` is a plain C struct of integers, for which all-zero bytes are a valid value.
    Box::new(unsafe { std::mem::zeroed() })
}

/// Drops `file`'s pages from the page cache (`posix_fadvise(DONTNEED)`), so the next read is cold.
pub fn drop_cache(file: &File) -> io::Result<()> {
    // SAFETY: no pointers; the fd is borrowed from a live `File`.
    let r = unsafe { libc::posix_fadvise(file.as_raw_fd(), 0, 0, libc::POSIX_FADV_DONTNEED) };
    if r == 0 {
        Ok(())
    } else {
        Err(io::Error::from_raw_os_error(r))
    }
}

/// Drops `len` bytes of `file` from `offset` out of the page cache (`posix_fadvise(DONTNEED)` on
/// the range; `len` 0: to the end), so the next read of that range goes to the device.
pub fn drop_cache_range(file: &File, offset: u64, len: u64) -> io::Result<()> {
    fadvise(file, offset, len, libc::POSIX_FADV_DONTNEED)
}

/// Turns read-ahead off for this open file (`posix_fadvise(RANDOM)`): a cold read then fetches
/// what it asks for and no more, so the next read of a neighbouring range is cold too.
pub fn no_readahead(file: &File) -> io::Result<()> {
    fadvise(file, 0, 0, libc::POSIX_FADV_RANDOM)
}

fn fadvise(file: &File, offset: u64, len: u64, advice: libc::c_int) -> io::Result<()> {
    let (Ok(offset), Ok(len)) = (libc::off_t::try_from(offset), libc::off_t::try_from(len)) else {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "fadvise range beyond off_t",
        ));
    };
    // SAFETY: no pointers; the fd is borrowed from a live `File`.
    let r = unsafe { libc::posix_fadvise(file.as_raw_fd(), offset, len, advice) };
    if r == 0 {
        Ok(())
    } else {
        Err(io::Error::from_raw_os_error(r))
    }
}

/// `read` into `buf`'s spare capacity (a socket on the blocking pool); bytes read or `-errno`.
pub(crate) fn recv_spare(fd: RawFd, buf: &mut Vec<u8>, len: usize) -> i32 {
    let len = len.min(buf.capacity() - buf.len());
    read_spare(fd, buf, len)
}

/// `send(2)` with `MSG_NOSIGNAL` (a reset peer is `EPIPE`, not `SIGPIPE`); bytes sent or `-errno`.
pub(crate) fn send(fd: RawFd, buf: &[u8]) -> i32 {
    loop {
        // SAFETY: reads `buf.len()` bytes from a live slice borrowed for the call.
        let n = unsafe { libc::send(fd, buf.as_ptr().cast(), buf.len(), libc::MSG_NOSIGNAL) };
        if n >= 0 {
            return n.min(i32::MAX as isize) as i32;
        }
        let e = neg_errno();
        if e != -libc::EINTR {
            return e;
        }
    }
}

/// The slices of `bufs` one [`send_vectored`] offers the kernel: the first `IOV_MAX`.
pub(crate) fn sendable<'a, 'b>(bufs: &'a [std::io::IoSlice<'b>]) -> &'a [std::io::IoSlice<'b>] {
    &bufs[..bufs.len().min(libc::UIO_MAXIOV as usize)]
}

/// `sendmsg(2)` of `bufs` in order (the first `IOV_MAX` of them) with `MSG_NOSIGNAL | flags`;
/// bytes sent or `-errno` (`-EAGAIN`: the send buffer is full).
pub(crate) fn send_vectored(fd: RawFd, bufs: &[std::io::IoSlice<'_>], flags: i32) -> i32 {
    let bufs = sendable(bufs);
    // SAFETY: `msghdr` is plain data; all zeroes is a valid value (no address, no control data).
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    // `IoSlice` is ABI-compatible with `iovec` on Unix (its documented guarantee); the kernel
    // only reads through this pointer.
    msg.msg_iov = bufs.as_ptr() as *mut libc::iovec;
    msg.msg_iovlen = bufs.len() as _;
    loop {
        // SAFETY: the kernel reads `msg`, its iovecs and the bytes they describe, all borrowed for
        // the call.
        let n = unsafe { libc::sendmsg(fd, &msg, flags | libc::MSG_NOSIGNAL) };
        if n >= 0 {
            return n.min(i32::MAX as isize) as i32;
        }
        let e = neg_errno();
        if e != -libc::EINTR {
            return e;
        }
    }
}

/// `accept4(2)` with `flags` (`SOCK_CLOEXEC` is always added); the new connection or `-errno`.
pub(crate) fn accept(fd: RawFd, flags: i32) -> Result<OwnedFd, i32> {
    loop {
        // SAFETY: null address pointers: the peer address is not written anywhere.
        let r = unsafe {
            libc::accept4(
                fd,
                std::ptr::null_mut(),
                std::ptr::null_mut(),
                flags | libc::SOCK_CLOEXEC,
            )
        };
        if r >= 0 {
            return Ok(owned_fd(r));
        }
        let e = neg_errno();
        if e != -libc::EINTR {
            return Err(e);
        }
    }
}

/// A non-blocking `recv(2)` into the unfilled part of `buf` (a socket on the readiness backend);
/// marks the received bytes filled.
pub(crate) fn recv_into(fd: RawFd, buf: &mut tokio::io::ReadBuf<'_>) -> io::Result<usize> {
    // SAFETY: `unfilled_mut` hands out the buffer's unfilled bytes, possibly uninitialised; they are
    // only written (by recv), never read, and only the `n` bytes recv reports are marked below.
    let dst = unsafe { buf.unfilled_mut() };
    loop {
        // SAFETY: writes at most `dst.len()` bytes into memory borrowed mutably for the call.
        let n = unsafe { libc::recv(fd, dst.as_mut_ptr().cast(), dst.len(), libc::MSG_DONTWAIT) };
        if n >= 0 {
            let n = n as usize;
            // SAFETY: recv reported initialising the first `n` unfilled bytes.
            unsafe { buf.assume_init(n) };
            buf.advance(n);
            return Ok(n);
        }
        let e = io::Error::last_os_error();
        if e.kind() != io::ErrorKind::Interrupted {
            return Err(e);
        }
    }
}

/// `shutdown(2)` of a listening socket's receive side: on Linux it leaves the listening state at
/// once (new connections are refused, a pending accept completes with an error), whoever still
/// holds the descriptor.
pub(crate) fn stop_listening(fd: RawFd) -> io::Result<()> {
    // SAFETY: `shutdown` takes no pointers; an invalid descriptor is reported as an error.
    let r = unsafe { libc::shutdown(fd, libc::SHUT_RD) };
    if r == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// `setsockopt(2)` of one `int` option.
pub(crate) fn set_int_opt(fd: RawFd, level: i32, name: i32, value: i32) -> io::Result<()> {
    // SAFETY: passes a pointer to a live local `int` and its size.
    let r = unsafe {
        libc::setsockopt(
            fd,
            level,
            name,
            (&value as *const i32).cast(),
            std::mem::size_of::<i32>() as libc::socklen_t,
        )
    };
    if r == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// `getsockopt(2)` of one `int` option.
pub(crate) fn int_opt(fd: RawFd, level: i32, name: i32) -> io::Result<i32> {
    let mut value: i32 = 0;
    let mut len = std::mem::size_of::<i32>() as libc::socklen_t;
    // SAFETY: passes a pointer to a live local `int` and its size, which the kernel may write.
    let r = unsafe { libc::getsockopt(fd, level, name, (&mut value as *mut i32).cast(), &mut len) };
    if r == 0 {
        Ok(value)
    } else {
        Err(io::Error::last_os_error())
    }
}

/// An epoll instance: the readiness set of the blocking backend (see `ready.rs`).
#[derive(Debug)]
pub(crate) struct Epoll(OwnedFd);

impl Epoll {
    /// A close-on-exec epoll instance.
    pub(crate) fn new() -> io::Result<Epoll> {
        // SAFETY: takes no pointers; a non-negative return is a fresh fd that we own.
        let fd = unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(Epoll(owned_fd(fd)))
    }

    /// Adds `fd` with `events`, reported with `token`.
    pub(crate) fn add(&self, fd: RawFd, events: u32, token: u64) -> io::Result<()> {
        let mut ev = libc::epoll_event { events, u64: token };
        // SAFETY: passes a pointer to a live local event, which the kernel only reads.
        let r = unsafe { libc::epoll_ctl(self.0.as_raw_fd(), libc::EPOLL_CTL_ADD, fd, &mut ev) };
        if r == 0 {
            Ok(())
        } else {
            Err(io::Error::last_os_error())
        }
    }

    /// The instance's own fd (pollable: readable while it has events to report).
    pub(crate) fn raw(&self) -> RawFd {
        self.0.as_raw_fd()
    }

    /// Removes `fd` (an error, e.g. `ENOENT`, is ignored: the fd is being closed anyway).
    pub(crate) fn delete(&self, fd: RawFd) {
        // SAFETY: a null event is allowed for EPOLL_CTL_DEL (Linux >= 2.6.9).
        unsafe {
            libc::epoll_ctl(
                self.0.as_raw_fd(),
                libc::EPOLL_CTL_DEL,
                fd,
                std::ptr::null_mut(),
            )
        };
    }

    /// Waits up to `timeout_ms` (-1: forever) and fills `events` (cleared first, up to its
    /// capacity) with what became ready.
    pub(crate) fn wait(&self, events: &mut Vec<libc::epoll_event>, timeout_ms: i32) {
        events.clear();
        let cap = events.capacity().clamp(1, i32::MAX as usize);
        // SAFETY: the kernel writes at most `cap` events into the vector's spare capacity.
        let n = unsafe {
            libc::epoll_wait(
                self.0.as_raw_fd(),
                events.as_mut_ptr(),
                cap as i32,
                timeout_ms,
            )
        };
        if n > 0 {
            // SAFETY: epoll_wait initialised the first `n <= cap` entries.
            unsafe { events.set_len(n as usize) };
        }
    }
}

/// Reads (and so resets) an eventfd's counter; the fd must be readable (epoll said so).
pub(crate) fn drain_eventfd(fd: RawFd) {
    let mut v: u64 = 0;
    // SAFETY: reads 8 bytes into a live local `u64`.
    unsafe { libc::read(fd, (&mut v as *mut u64).cast(), std::mem::size_of::<u64>()) };
}
