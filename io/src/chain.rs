//! `fs::read` in one submission: the linked chain of io_uring entries that opens a file into a
//! direct descriptor, reads it and probes for its end, and what each completion means.
//!
//! Chain protocol (cited as "chain.rs protocol" elsewhere):
//! 1. **Phase 1**, pushed together so they reach the kernel in one batch:
//!    `OPENAT` into the ring's direct-descriptor slot `s` (`IOSQE_IO_LINK`) →
//!    `READ` of [`FIRST_READ`] bytes from `Fixed(s)` at the file position (`IOSQE_IO_HARDLINK`) →
//!    `READ` of [`PROBE_READ`] bytes at the file position. A failed open cancels both reads
//!    (`-ECANCELED`); the reads are hard-linked because a short first read (the usual case: the
//!    file is smaller than the buffer) "fails" a plain link. The probe read tells the end of the
//!    file without `statx`, on any kind of file: it returns 0 at the end, also on `/proc` files,
//!    whose reads may be short before the end. A small file is read in one round trip.
//! 2. When phase 1 ends, the ring closes the direct slot (`CLOSE` of `Fixed(s)`, an internal
//!    entry whose completion returns `s` to the free list), unless the probe found more data and
//!    the future still waits: then **phase 2** installs the slot as a normal descriptor
//!    (`FIXED_FD_INSTALL`, `IOSQE_IO_HARDLINK` → the same `CLOSE`) and, beside them, unlinked,
//!    `STATX`es the path for a size hint; `fs::read` continues with ordinary reads on that
//!    descriptor, the same open file (never a second open, which could read a replaced file's
//!    tail; a replaced file's hint only sizes the buffer wrongly).
//! 3. The ring holds the op (its `Arc<Op>`, op.rs protocol) until the last completion of the
//!    last phase; only then does it complete the op. Every slot is closed exactly once: by the
//!    `CLOSE` entry, which the ring pushes for every successful open, and by nothing else.
//! 4. A dropped future (op.rs step 4) cancels the entry the chain is waiting on; each further
//!    completion of an abandoned chain cancels the next one, and a cancel that found nothing
//!    (the next entry was not issued yet) is retried a bounded number of times. An abandoned
//!    chain never enters phase 2; a descriptor installed just before the future went away is
//!    owned by the resources and closed with them.
//!
//! This module probes whether a ring can chain, builds the entries and records the completions;
//! it touches no memory itself (the ring pushes the entries and marks the bytes the reads
//! wrote).

use std::ffi::CString;
use std::os::fd::OwnedFd;
use std::time::Instant;

use io_uring::{opcode, squeue, types, IoUring};

use crate::sys;

/// Bytes of the first read. 16 KiB: the page-generation files this is for (templates, small
/// JSON, the benches' 4 and 16 KiB files) fit, and jemalloc still serves it from a thread cache;
/// larger files pay one more round trip (phase 2), which is small beside copying them.
pub(crate) const FIRST_READ: usize = 16 * 1024;

/// Bytes of the probe read: one is enough to tell the end from more data.
pub(crate) const PROBE_READ: usize = 1;

/// Sub-operation indices (in user_data, ring.rs).
pub(crate) const OPEN: u8 = 0;
pub(crate) const READ: u8 = 1;
pub(crate) const PROBE: u8 = 2;
pub(crate) const INSTALL: u8 = 3;
pub(crate) const STAT: u8 = 4;

/// The resources of a chained read, and what each entry of the chain returned.
#[derive(Debug)]
pub(crate) struct ReadFile {
    pub(crate) path: CString,
    /// `FIRST_READ + PROBE_READ` bytes of capacity at submission; the first read fills the start,
    /// the probe reads into the byte after `FIRST_READ` and is moved down to follow the data.
    pub(crate) buf: Vec<u8>,
    /// Result of each entry (`OPEN`, `READ`, `PROBE`, `INSTALL`, `STAT`) and when it arrived.
    pub(crate) results: [Option<i32>; 5],
    pub(crate) at: [Option<Instant>; 5],
    /// Phase 2's statx buffer (the size hint of a file longer than the first read).
    pub(crate) stat: Option<Box<libc::statx>>,
    /// When phase 1 was pushed.
    pub(crate) started: Option<Instant>,
    /// The normal descriptor phase 2 installed (closed with the resources if nobody takes it).
    pub(crate) installed: Option<OwnedFd>,
    /// The ring that got the op cannot chain (no direct-descriptor table, or none free):
    /// nothing was done, and `fs::read` takes the unchained path.
    pub(crate) unsupported: bool,
}

impl ReadFile {
    pub(crate) fn new(path: CString) -> ReadFile {
        ReadFile {
            path,
            buf: Vec::with_capacity(FIRST_READ + PROBE_READ),
            results: [None; 5],
            at: [None; 5],
            stat: None,
            started: None,
            installed: None,
            unsupported: false,
        }
    }

    /// The open succeeded: the direct slot holds a file, which must be closed.
    pub(crate) fn opened(&self) -> bool {
        self.results[OPEN as usize].is_some_and(|r| r >= 0)
    }

    /// Both reads succeeded and the probe found data: the end is not reached.
    pub(crate) fn more(&self) -> bool {
        self.results[READ as usize].is_some_and(|r| r >= 0)
            && self.results[PROBE as usize].is_some_and(|r| r > 0)
    }

    /// Latency of entry `sub`: from the previous entry's completion (or the push) to its own;
    /// phase 2's entries from the probe's completion.
    pub(crate) fn latency_ns(&self, sub: u8) -> u64 {
        let end = self.at[sub as usize];
        let start = (0..sub.min(INSTALL) as usize)
            .rev()
            .find_map(|i| self.at[i])
            .or(self.started);
        match (start, end) {
            (Some(s), Some(e)) => e.saturating_duration_since(s).as_nanos() as u64,
            _ => 0,
        }
    }

    /// Phase 1's entries for direct slot `slot`, with `ud(sub)` as each one's user_data. The
    /// pointers point into `self.path` and `self.buf`'s spare capacity, which the op keeps alive
    /// until the chain's last completion (chain.rs protocol, step 3).
    pub(crate) fn phase1(&mut self, slot: u32, ud: impl Fn(u8) -> u64) -> [squeue::Entry; 3] {
        debug_assert!(self.buf.is_empty() && self.buf.capacity() >= FIRST_READ + PROBE_READ);
        self.started = Some(Instant::now());
        let dest = types::DestinationSlot::try_from_slot_target(slot)
            .expect("direct slots are numbered below the table size");
        let base = self.buf.as_mut_ptr();
        // No O_CLOEXEC: the kernel refuses it for a direct descriptor (which no exec can see);
        // the install of phase 2 sets close-on-exec.
        let open = opcode::OpenAt::new(types::Fd(libc::AT_FDCWD), self.path.as_ptr())
            .flags(libc::O_RDONLY)
            .file_index(Some(dest))
            .build()
            .flags(squeue::Flags::IO_LINK)
            .user_data(ud(OPEN));
        // Offset -1: the file position, so the probe reads right after what the first read got.
        let read = opcode::Read::new(types::Fixed(slot), base, FIRST_READ as u32)
            .offset(u64::MAX)
            .build()
            .flags(squeue::Flags::IO_HARDLINK)
            .user_data(ud(READ));
        let probe = opcode::Read::new(
            types::Fixed(slot),
            base.wrapping_add(FIRST_READ),
            PROBE_READ as u32,
        )
        .offset(u64::MAX)
        .build()
        .user_data(ud(PROBE));
        [open, read, probe]
    }

    /// Records the completion of entry `sub`. The ring marks the bytes a read wrote (it alone
    /// may: that takes `unsafe`), then keeps an installed descriptor here.
    pub(crate) fn complete(&mut self, sub: u8, result: i32) {
        let i = sub as usize;
        if i < self.results.len() && self.results[i].is_none() {
            self.results[i] = Some(result);
            self.at[i] = Some(Instant::now());
            if sub == INSTALL && result >= 0 {
                self.installed = Some(sys::owned_fd(result));
            }
        }
    }
}

impl ReadFile {
    /// The chain as plain system calls, for the blocking pool: the same steps with the same
    /// results (the open's descriptor stands for the direct slot, and "installing" it keeps it),
    /// so both backends charge the same operations to the request.
    pub(crate) fn run_blocking(&mut self) {
        self.started = Some(Instant::now());
        let fd = sys::open(&self.path, libc::O_RDONLY | libc::O_CLOEXEC, 0);
        self.complete(OPEN, fd);
        if fd < 0 {
            self.complete(READ, -libc::ECANCELED);
            self.complete(PROBE, -libc::ECANCELED);
            return;
        }
        let file = sys::file_from_fd(fd);
        // Offset `u64::MAX`: the file position, as the chain's reads use.
        let n = sys::pread_spare(fd, &mut self.buf, FIRST_READ, u64::MAX);
        self.complete(READ, n);
        let n = sys::pread_spare(fd, &mut self.buf, PROBE_READ, u64::MAX);
        self.complete(PROBE, n);
        if self.more() {
            let mut out = sys::zeroed_statx();
            let r = sys::statx(fd, c"", libc::AT_EMPTY_PATH, &mut out);
            self.stat = Some(out);
            self.complete(STAT, r);
            self.complete(INSTALL, std::os::fd::IntoRawFd::into_raw_fd(file));
        }
    }
}

impl ReadFile {
    /// Phase 2's entries: install the slot as a normal descriptor, then close the slot; beside
    /// them a statx of the path into `self.stat`, which the op keeps alive until its completion.
    pub(crate) fn phase2(
        &mut self,
        slot: u32,
        ud: impl Fn(u8) -> u64,
        close_ud: u64,
    ) -> [squeue::Entry; 3] {
        let install = opcode::FixedFdInstall::new(types::Fixed(slot), 0)
            .build()
            .flags(squeue::Flags::IO_HARDLINK)
            .user_data(ud(INSTALL));
        let out: *mut libc::statx = &mut **self.stat.insert(sys::zeroed_statx());
        let stat = opcode::Statx::new(types::Fd(libc::AT_FDCWD), self.path.as_ptr(), out.cast())
            .mask(libc::STATX_BASIC_STATS)
            .build()
            .user_data(ud(STAT));
        [install, close_slot(slot, close_ud), stat]
    }
}

/// Closes direct slot `slot`.
pub(crate) fn close_slot(slot: u32, ud: u64) -> squeue::Entry {
    opcode::Close::new(types::Fixed(slot)).build().user_data(ud)
}

/// Direct-descriptor slots per ring. As many as submission entries: a chain holds one
/// slot from its open to its close, and a worker has at most a few dozen reads in flight. A
/// sparse table this size is far below `RLIMIT_NOFILE`, which bounds it.
const FILE_SLOTS: u32 = crate::ring::RING_ENTRIES;

/// Probes, once per ring, whether `ring` can run the chain: the opcodes (`FIXED_FD_INSTALL` is
/// Linux 6.8; linked reads of a direct descriptor opened earlier in the same link need 5.19 or
/// so, which 6.8 implies) and a sparse table of direct descriptors. Returns the free slots.
pub(crate) fn probe(ring: &IoUring) -> Option<Vec<u32>> {
    let mut p = io_uring::Probe::new();
    let codes = [
        opcode::OpenAt::CODE,
        opcode::Read::CODE,
        opcode::Close::CODE,
        opcode::AsyncCancel::CODE,
        opcode::FixedFdInstall::CODE,
    ];
    let supported =
        ring.submitter().register_probe(&mut p).is_ok() && codes.iter().all(|&c| p.is_supported(c));
    if !supported {
        tracing::debug!("pagegen-io: this kernel cannot chain fs::read (opcode probe); unchained");
        return None;
    }
    match ring.submitter().register_files_sparse(FILE_SLOTS) {
        Ok(()) => Some((0..FILE_SLOTS).rev().collect()),
        Err(e) => {
            tracing::debug!("pagegen-io: no direct-descriptor table ({e}); fs::read unchained");
            None
        }
    }
}
