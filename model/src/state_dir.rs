//! The state directory (`PAGEGEN_STATE_DIR`, default `./.pagegen`) and its lock.
//!
//! Contract: one open [`StateDir`] at a time per directory. [`StateDir::open`] opens (creating it
//! if needed) the file `LOCK` and takes an exclusive kernel lock on it without waiting
//! ([`File::try_lock`], `flock(LOCK_EX | LOCK_NB)` on Linux); the [`StateDir`] keeps that file open
//! for its whole life, so the lock is held exactly as long as the `StateDir` lives. A second open —
//! from another process or from this one (the lock belongs to the open file, and each open makes a
//! new one) — fails with [`ModelError::Locked`].
//!
//! The kernel releases the lock when the holder's file is closed, and a process's files are closed
//! whenever and however it ends: dropped, exited, panicked, or killed with `SIGKILL` (an OOM kill),
//! as pid 1 of a container or not. So a crash never leaves the directory locked, and no liveness
//! probe or stale-lock takeover is needed. (The lock of earlier versions was the file's existence
//! plus the pid in it, and a container's pid 1 killed with `SIGKILL` left it held forever.)
//!
//! The holder writes its pid (as its own pid namespace sees it) into `LOCK`, for
//! [`ModelError::Locked`]'s message only; the content never decides anything.
//!
//! `LOCK` is never deleted, on drop or otherwise. Deleting it would race: a process that has just
//! opened the file and is about to lock it would lock the deleted file while a third process
//! creates a new `LOCK` and locks that, and both would believe they hold the directory. An empty or
//! stale `LOCK` left behind is harmless: the next open simply locks it.
//!
//! Children: `LOCK` is opened close-on-exec, but a forked child shares its parent's open files
//! until it `exec`s, and with them the lock. So a child `fork`ed without `exec` keeps the lock
//! while it lives, and while another thread is spawning a process (fork to exec, microseconds),
//! a reopen in the same process right after a drop can still find the lock held and fail with
//! [`ModelError::Locked`] (retrying a moment later succeeds). Tests that spawn processes live in a
//! binary of their own for this reason (`tests/state_dir_lock.rs`).

use std::fs::{self, File, OpenOptions, TryLockError};
use std::io::Write;
use std::path::{Path, PathBuf};

use crate::error::ModelError;

/// Environment variable naming the state directory.
pub const STATE_DIR_ENV: &str = "PAGEGEN_STATE_DIR";
/// Default state directory, relative to the working directory.
pub const DEFAULT_STATE_DIR: &str = ".pagegen";

/// An opened, locked state directory. The lock is released when it is dropped.
#[derive(Debug)]
pub struct StateDir {
    path: PathBuf,
    /// `LOCK`, open and locked: closing it (dropping the `StateDir`) releases the lock.
    _lock: File,
}

impl StateDir {
    /// Opens the directory named by `PAGEGEN_STATE_DIR`, or `./.pagegen`.
    pub fn from_env() -> Result<Self, ModelError> {
        let path = std::env::var_os(STATE_DIR_ENV)
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from(DEFAULT_STATE_DIR));
        StateDir::open(path)
    }

    /// Creates (if needed) and locks `path`; [`ModelError::Locked`] if another open `StateDir`,
    /// in any process, holds it.
    pub fn open(path: impl Into<PathBuf>) -> Result<Self, ModelError> {
        let path = path.into();
        fs::create_dir_all(&path).map_err(|e| ModelError::io(&path, e))?;
        let lock_path = path.join("LOCK");
        // Not truncated on open: the holder's pid stays readable for the error below.
        let mut lock = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&lock_path)
            .map_err(|e| ModelError::io(&lock_path, e))?;
        match lock.try_lock() {
            Ok(()) => {}
            Err(TryLockError::WouldBlock) => {
                let text = fs::read_to_string(&lock_path).unwrap_or_default();
                return Err(ModelError::Locked {
                    dir: path,
                    pid: text.trim().parse().ok(),
                });
            }
            Err(TryLockError::Error(e)) => return Err(ModelError::io(&lock_path, e)),
        }
        // Ours now. The pid is information only (see the module docs).
        lock.set_len(0)
            .and_then(|()| writeln!(lock, "{}", std::process::id()))
            .map_err(|e| ModelError::io(&lock_path, e))?;
        Ok(StateDir { path, _lock: lock })
    }

    /// The directory.
    pub fn path(&self) -> &Path {
        &self.path
    }
    /// Where the profile store keeps its segments.
    pub fn profiles(&self) -> PathBuf {
        self.path.join("profiles")
    }
    /// Where the champion checkpoint lives.
    pub fn checkpoint(&self) -> PathBuf {
        self.path.join("model.safetensors")
    }
}

#[cfg(test)]
mod tests {
    //! Same-process cases. A holder in another process, killed, is `tests/state_dir_lock.rs`: a
    //! binary of its own, because a process spawned by one test thread briefly inherits the locks
    //! of the others (see the module docs) and would make these reopen checks flaky.
    use super::*;

    fn expect_locked(dir: &Path) -> Option<u32> {
        match StateDir::open(dir) {
            Err(ModelError::Locked { pid, .. }) => pid,
            other => panic!("expected Locked, got {other:?}"),
        }
    }

    #[test]
    fn second_open_is_refused_even_in_the_same_process_and_reopen_after_drop_succeeds() {
        let tmp = tempfile::tempdir().unwrap();
        let a = StateDir::open(tmp.path()).unwrap();
        assert_eq!(expect_locked(tmp.path()), Some(std::process::id()));
        let e = StateDir::open(tmp.path()).unwrap_err().to_string();
        assert!(
            e.contains(&format!("process {}", std::process::id())),
            "{e}"
        );
        drop(a);
        let b = StateDir::open(tmp.path()).unwrap();
        assert_eq!(b.checkpoint(), tmp.path().join("model.safetensors"));
        drop(b);
        assert!(
            tmp.path().join("LOCK").exists(),
            "LOCK is left in place (module docs)"
        );
        StateDir::open(tmp.path()).unwrap();
    }

    #[test]
    fn a_lock_file_left_behind_decides_nothing() {
        let tmp = tempfile::tempdir().unwrap();
        // The pid of a live process (this one), the pid a container's init had, garbage, nothing.
        for content in [
            format!("{}\n", std::process::id()),
            "1\n".into(),
            "not a pid".into(),
            String::new(),
        ] {
            fs::write(tmp.path().join("LOCK"), &content).unwrap();
            let d = StateDir::open(tmp.path()).unwrap();
            let now = fs::read_to_string(tmp.path().join("LOCK")).unwrap();
            assert_eq!(
                now,
                format!("{}\n", std::process::id()),
                "after {content:?}"
            );
            drop(d);
        }
    }
}
