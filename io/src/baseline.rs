//! The benchmarks' baseline, a bare io_uring loop: the same operation sequences as `fs::read` and
//! `File::read_at`, with no runtime around them (no futures, permits, profile or wakers), to
//! measure how much of the raw cost pagegen keeps. Not part of the API.
//!
//! Two `fs::read` sequences: `read_files_batch`, the unchained one (open + statx, read, close:
//! three phases), and `read_files_chained`, `fs::read`'s chain since issue 16 (chain.rs: open
//! into a direct slot, a 16 KiB read and a 1-byte probe, then the slot's close, one submission).

use std::ffi::CStr;
use std::io;
use std::os::fd::RawFd;

use io_uring::{opcode, squeue, types, IoUring};

/// The chain's first read (chain.rs `FIRST_READ`).
const CHAIN_FIRST: usize = 16 * 1024;

/// A ring and `n` buffers.
pub struct RawLoop {
    ring: IoUring,
    bufs: Vec<Vec<u8>>,
    fds: Vec<i32>,
    stats: Vec<libc::statx>,
}

impl std::fmt::Debug for RawLoop {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RawLoop")
            .field("slots", &self.bufs.len())
            .finish()
    }
}

impl RawLoop {
    /// A loop for up to `conc` operations at once, each reading up to `len` bytes (and at least
    /// the chain's 16 KiB + 1), with `conc` direct-descriptor slots.
    pub fn new(conc: usize, len: usize) -> io::Result<RawLoop> {
        let ring = IoUring::new((4 * conc).next_power_of_two().max(8) as u32)?;
        // Only `read_files_chained` needs the table; it fails without it.
        let _ = ring.submitter().register_files_sparse(conc as u32);
        Ok(RawLoop {
            ring,
            bufs: (0..conc)
                .map(|_| vec![0u8; (len + 1).max(CHAIN_FIRST + 1)])
                .collect(),
            fds: vec![-1; conc],
            // SAFETY: `statx` is a plain C struct of integers; all-zero is a valid value.
            stats: (0..conc).map(|_| unsafe { std::mem::zeroed() }).collect(),
        })
    }

    fn run(&mut self, want: usize) -> io::Result<()> {
        let mut got = 0;
        while got < want {
            self.ring.submit_and_wait(1)?;
            for c in self.ring.completion() {
                let i = c.user_data() as usize;
                if c.result() < 0 {
                    return Err(io::Error::from_raw_os_error(-c.result()));
                }
                if i < self.fds.len() && self.fds[i] == -2 {
                    self.fds[i] = c.result();
                }
                got += 1;
            }
        }
        Ok(())
    }

    /// `conc` `pread`s of `len` bytes from `fd` at `offsets`, submitted together, waited together.
    pub fn pread_batch(&mut self, fd: RawFd, len: usize, offsets: &[u64]) -> io::Result<()> {
        let n = offsets.len().min(self.bufs.len());
        for (i, &off) in offsets.iter().enumerate().take(n) {
            let e = opcode::Read::new(types::Fd(fd), self.bufs[i].as_mut_ptr(), len as u32)
                .offset(off)
                .build()
                .user_data(i as u64);
            // SAFETY: `bufs[i]` holds at least `len` bytes and is not touched until `run` has reaped
            // every completion of this batch.
            unsafe { self.ring.submission().push(&e) }
                .map_err(|_| io::Error::other("ring too small"))?;
        }
        self.run(n)
    }

    /// `fs::read`'s sequence for each path: openat + statx together, then one read of size + 1,
    /// then close — each phase submitted for all paths at once.
    pub fn read_files_batch(&mut self, paths: &[&CStr]) -> io::Result<()> {
        let n = paths.len().min(self.bufs.len());
        for (i, p) in paths.iter().enumerate().take(n) {
            self.fds[i] = -2;
            let open = opcode::OpenAt::new(types::Fd(libc::AT_FDCWD), p.as_ptr())
                .flags(libc::O_RDONLY | libc::O_CLOEXEC)
                .build()
                .user_data(i as u64);
            let st: *mut libc::statx = &mut self.stats[i];
            let stat = opcode::Statx::new(types::Fd(libc::AT_FDCWD), p.as_ptr(), st.cast())
                .mask(libc::STATX_BASIC_STATS)
                .build()
                .user_data(u64::MAX);
            // SAFETY: the paths and `stats[i]` outlive the batch (`run` reaps every completion).
            unsafe {
                let mut sq = self.ring.submission();
                sq.push(&open)
                    .and_then(|_| sq.push(&stat))
                    .map_err(|_| io::Error::other("ring too small"))?;
            }
        }
        self.run(2 * n)?;
        for i in 0..n {
            let len = (self.stats[i].stx_size as usize + 1).min(self.bufs[i].len());
            let e = opcode::Read::new(
                types::Fd(self.fds[i]),
                self.bufs[i].as_mut_ptr(),
                len as u32,
            )
            .build()
            .user_data(u64::MAX);
            // SAFETY: `bufs[i]` holds `len` bytes and is untouched until `run` reaps the batch.
            unsafe { self.ring.submission().push(&e) }
                .map_err(|_| io::Error::other("ring too small"))?;
        }
        self.run(n)?;
        for i in 0..n {
            let e = opcode::Close::new(types::Fd(self.fds[i]))
                .build()
                .user_data(u64::MAX);
            // SAFETY: a close references no memory; each fd is closed once.
            unsafe { self.ring.submission().push(&e) }
                .map_err(|_| io::Error::other("ring too small"))?;
        }
        self.run(n)
    }

    /// `fs::read`'s chain for each path, all submitted at once: open into direct slot `i`
    /// (linked) → 16 KiB read → 1-byte probe → close of the slot (hard-linked), then one wait for
    /// every completion.
    pub fn read_files_chained(&mut self, paths: &[&CStr]) -> io::Result<()> {
        let n = paths.len().min(self.bufs.len());
        for (i, p) in paths.iter().enumerate().take(n) {
            let slot = types::DestinationSlot::try_from_slot_target(i as u32)
                .map_err(|_| io::Error::other("slot out of range"))?;
            let base = self.bufs[i].as_mut_ptr();
            let fixed = types::Fixed(i as u32);
            let entries = [
                opcode::OpenAt::new(types::Fd(libc::AT_FDCWD), p.as_ptr())
                    .flags(libc::O_RDONLY)
                    .file_index(Some(slot))
                    .build()
                    .flags(squeue::Flags::IO_LINK),
                opcode::Read::new(fixed, base, CHAIN_FIRST as u32)
                    .offset(u64::MAX)
                    .build()
                    .flags(squeue::Flags::IO_HARDLINK),
                opcode::Read::new(fixed, base.wrapping_add(CHAIN_FIRST), 1)
                    .offset(u64::MAX)
                    .build()
                    .flags(squeue::Flags::IO_HARDLINK),
                opcode::Close::new(fixed).build(),
            ];
            for e in entries {
                // SAFETY: the paths and `bufs[i]` (16 KiB + 1 bytes at least) outlive the batch:
                // `drain` reaps every completion before returning.
                unsafe { self.ring.submission().push(&e.user_data(u64::MAX)) }
                    .map_err(|_| io::Error::other("ring too small"))?;
            }
        }
        self.drain(4 * n)
    }

    /// Waits for `want` completions; any failed entry is an error.
    fn drain(&mut self, want: usize) -> io::Result<()> {
        let mut got = 0;
        while got < want {
            self.ring.submit_and_wait(1)?;
            for c in self.ring.completion() {
                if c.result() < 0 {
                    return Err(io::Error::from_raw_os_error(-c.result()));
                }
                got += 1;
            }
        }
        Ok(())
    }
}
