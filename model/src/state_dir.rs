//! The state directory (`PAGEGEN_STATE_DIR`, default `./.pagegen`) and its lock file.
//!
//! Contract: one process at a time. [`StateDir::open`] creates `LOCK` exclusively (`O_EXCL`) holding
//! the owner's pid; a second open — from another process or the same one — fails with
//! [`ModelError::Locked`] while the owner lives. A lock left by a dead process (its pid absent from
//! `/proc`) is reported and taken over. Where `/proc` does not exist the liveness probe cannot be
//! made, so any existing lock is honoured (the safe side: an operator removes a stale one by hand).
//! The lock is removed when the [`StateDir`] is dropped.

use std::fs::{self, OpenOptions};
use std::io::{ErrorKind, Write};
use std::path::{Path, PathBuf};

use crate::error::ModelError;

/// Environment variable naming the state directory.
pub const STATE_DIR_ENV: &str = "PAGEGEN_STATE_DIR";
/// Default state directory, relative to the working directory.
pub const DEFAULT_STATE_DIR: &str = ".pagegen";

/// An opened, locked state directory.
#[derive(Debug)]
pub struct StateDir {
    path: PathBuf,
    lock: PathBuf,
}

fn alive(pid: u32) -> bool {
    if !Path::new("/proc/self").exists() {
        return true;
    }
    Path::new(&format!("/proc/{pid}")).exists()
}

impl StateDir {
    /// Opens the directory named by `PAGEGEN_STATE_DIR`, or `./.pagegen`.
    pub fn from_env() -> Result<Self, ModelError> {
        let path = std::env::var_os(STATE_DIR_ENV)
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from(DEFAULT_STATE_DIR));
        StateDir::open(path)
    }

    /// Creates (if needed) and locks `path`.
    pub fn open(path: impl Into<PathBuf>) -> Result<Self, ModelError> {
        let path = path.into();
        fs::create_dir_all(&path).map_err(|e| ModelError::io(&path, e))?;
        let lock = path.join("LOCK");
        for _ in 0..2 {
            match OpenOptions::new().write(true).create_new(true).open(&lock) {
                Ok(mut f) => {
                    writeln!(f, "{}", std::process::id()).map_err(|e| ModelError::io(&lock, e))?;
                    return Ok(StateDir { path, lock });
                }
                Err(e) if e.kind() == ErrorKind::AlreadyExists => {
                    let text = fs::read_to_string(&lock).unwrap_or_default();
                    match text.trim().parse::<u32>() {
                        Ok(pid) if alive(pid) => {
                            return Err(ModelError::Locked { dir: path, pid });
                        }
                        _ => {
                            tracing::warn!(
                                lock = %lock.display(),
                                content = %text.trim(),
                                "taking over a stale state-directory lock (its process is gone)"
                            );
                            fs::remove_file(&lock).map_err(|e| ModelError::io(&lock, e))?;
                        }
                    }
                }
                Err(e) => return Err(ModelError::io(&lock, e)),
            }
        }
        Err(ModelError::io(
            &lock,
            std::io::Error::other("lock file reappeared while taking it over"),
        ))
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

impl Drop for StateDir {
    fn drop(&mut self) {
        let _ = fs::remove_file(&self.lock);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn second_open_is_refused_and_lock_released_on_drop() {
        let tmp = tempfile::tempdir().unwrap();
        let a = StateDir::open(tmp.path()).unwrap();
        match StateDir::open(tmp.path()) {
            Err(ModelError::Locked { pid, .. }) => assert_eq!(pid, std::process::id()),
            other => panic!("expected Locked, got {other:?}"),
        }
        drop(a);
        let b = StateDir::open(tmp.path()).unwrap();
        assert_eq!(b.checkpoint(), tmp.path().join("model.safetensors"));
    }

    #[test]
    fn stale_or_garbage_lock_is_taken_over() {
        let tmp = tempfile::tempdir().unwrap();
        // Pid 0 is never a user process; `/proc/0` does not exist on Linux.
        fs::write(tmp.path().join("LOCK"), "0\n").unwrap();
        if Path::new("/proc/self").exists() {
            StateDir::open(tmp.path()).unwrap();
        }
        fs::write(tmp.path().join("LOCK"), "not a pid").unwrap();
        StateDir::open(tmp.path()).unwrap();
    }
}
