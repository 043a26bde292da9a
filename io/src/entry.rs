//! How a submission-queue entry is built from an op's resources, and how an accept completion is
//! queued back into them. Building an entry is safe (it only takes pointers); pushing it is not,
//! and happens in `ring` under the op.rs protocol.

use std::os::fd::AsRawFd;

use io_uring::{opcode, squeue, types};

use crate::op::Res;
use crate::sys;

/// The entry for an op's resources (all but a chain's, which `ring` pushes itself).
pub(crate) fn build(res: &mut Res) -> squeue::Entry {
    match res {
        Res::Read {
            file,
            buf,
            len,
            offset,
        } => {
            let spare = (buf.capacity() - buf.len())
                .min(*len)
                .min(u32::MAX as usize);
            // Pointer to the first spare byte; in bounds of the allocation (`len <= capacity`).
            let ptr = buf.as_mut_ptr().wrapping_add(buf.len());
            opcode::Read::new(types::Fd(file.as_raw_fd()), ptr, spare as u32)
                .offset(*offset)
                .build()
        }
        Res::Write {
            file,
            buf,
            from,
            offset,
        } => {
            let rest = &buf[(*from).min(buf.len())..];
            let n = rest.len().min(u32::MAX as usize) as u32;
            opcode::Write::new(types::Fd(file.as_raw_fd()), rest.as_ptr(), n)
                .offset(*offset)
                .build()
        }
        Res::Open { path, flags, mode } => {
            opcode::OpenAt::new(types::Fd(libc::AT_FDCWD), path.as_ptr())
                .flags(*flags | libc::O_CLOEXEC)
                .mode(*mode)
                .build()
        }
        Res::Statx { file, path, out } => {
            let (dirfd, flags) = match file {
                Some(f) => (f.as_raw_fd(), libc::AT_EMPTY_PATH),
                None => (libc::AT_FDCWD, 0),
            };
            let out: *mut libc::statx = &mut **out;
            opcode::Statx::new(types::Fd(dirfd), path.as_ptr(), out.cast())
                .flags(flags)
                .mask(libc::STATX_BASIC_STATS)
                .build()
        }
        Res::Fsync { file } => opcode::Fsync::new(types::Fd(file.as_raw_fd())).build(),
        Res::Recv { sock, buf, len } => {
            let spare = (buf.capacity() - buf.len())
                .min(*len)
                .min(u32::MAX as usize);
            let ptr = buf.as_mut_ptr().wrapping_add(buf.len());
            opcode::Recv::new(types::Fd(sock.as_raw_fd()), ptr, spare as u32).build()
        }
        Res::Send { sock, buf, from } => {
            let rest = &buf[(*from).min(buf.len())..];
            let n = rest.len().min(u32::MAX as usize) as u32;
            opcode::Send::new(types::Fd(sock.as_raw_fd()), rest.as_ptr(), n)
                .flags(libc::MSG_NOSIGNAL)
                .build()
        }
        Res::ReadFile(_) => unreachable!("submit pushes a chain's entries itself"),
        // Accepted sockets are left blocking: io_uring waits for them itself (a non-blocking fd
        // would answer EAGAIN instead of waiting on older kernels).
        Res::Accept { sock, .. } => opcode::AcceptMulti::new(types::Fd(sock.as_raw_fd()))
            .flags(libc::SOCK_CLOEXEC)
            .build(),
    }
}

/// Queues one accept completion (a new connection's fd, or `-errno`) in an accept op's resources.
pub(crate) fn queue_accepted(res: &mut Res, result: i32) {
    if let Res::Accept { ready, .. } = res {
        ready.push_back(if result >= 0 {
            Ok(sys::owned_fd(result))
        } else {
            Err(result)
        });
    }
}
