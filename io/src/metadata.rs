//! [`Metadata`]: what `statx` says about a file, the same on both backends.
//!
//! `std::fs::Metadata` cannot be built from a `statx` buffer an io_uring completion filled, so
//! pagegen-io has its own type with the accessors page generation uses.

use std::time::{Duration, SystemTime};

/// A file's size, type, identity and times.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Metadata {
    len: u64,
    mode: u32,
    ino: u64,
    dev: u64,
    mtime: (i64, u32),
}

impl Metadata {
    pub(crate) fn from_statx(s: &libc::statx) -> Self {
        Metadata {
            len: s.stx_size,
            mode: s.stx_mode as u32,
            ino: s.stx_ino,
            dev: ((s.stx_dev_major as u64) << 32) | s.stx_dev_minor as u64,
            mtime: (s.stx_mtime.tv_sec, s.stx_mtime.tv_nsec),
        }
    }
    /// Size in bytes.
    pub fn len(&self) -> u64 {
        self.len
    }
    /// Whether the size is zero.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
    /// A regular file.
    pub fn is_file(&self) -> bool {
        self.mode & libc::S_IFMT == libc::S_IFREG
    }
    /// A directory.
    pub fn is_dir(&self) -> bool {
        self.mode & libc::S_IFMT == libc::S_IFDIR
    }
    /// A symbolic link (only from an `lstat`; `metadata` follows links).
    pub fn is_symlink(&self) -> bool {
        self.mode & libc::S_IFMT == libc::S_IFLNK
    }
    /// Permission and type bits (`st_mode`).
    pub fn mode(&self) -> u32 {
        self.mode
    }
    /// Inode number.
    pub fn ino(&self) -> u64 {
        self.ino
    }
    /// Device id (major in the high 32 bits).
    pub fn dev(&self) -> u64 {
        self.dev
    }
    /// Last modification time.
    pub fn modified(&self) -> SystemTime {
        let (s, ns) = self.mtime;
        if s >= 0 {
            SystemTime::UNIX_EPOCH + Duration::new(s as u64, ns)
        } else {
            SystemTime::UNIX_EPOCH - Duration::from_secs(s.unsigned_abs())
                + Duration::from_nanos(ns as u64)
        }
    }
}
