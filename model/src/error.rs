//! Errors of the prediction crate.
//!
//! Most failures here are *recovered*, not returned: a corrupt checkpoint or a torn store tail is
//! reported (a `tracing` warning plus a [`Recovery`](crate::Recovery) note) and replaced by a fresh
//! start. What remains as an error is what a caller must decide about: the state directory is held by
//! another process, the disk refused a write, or an import file is not a pagegen model.

use std::path::PathBuf;

/// Why a model operation failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ModelError {
    /// Reading or writing a file failed.
    #[error("{path}: {source}")]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// Another open [`StateDir`](crate::StateDir) (in a live process, or this one) holds the state
    /// directory's lock.
    #[error("state directory {dir} is in use by {} (lock file {dir}/LOCK); give each process its own PAGEGEN_STATE_DIR", holder(.pid))]
    Locked {
        /// The directory.
        dir: PathBuf,
        /// The holder's process id as it wrote it in `LOCK`, as seen from the holder's pid
        /// namespace (information only; `None` when the holder had not written it yet).
        pid: Option<u32>,
    },
    /// A checkpoint or import file is not a usable pagegen model.
    #[error("checkpoint {path} is unusable: {reason}")]
    BadCheckpoint {
        /// The file.
        path: PathBuf,
        /// What was wrong with it.
        reason: String,
    },
    /// Candle failed while training or converting weights.
    #[error("candle: {0}")]
    Candle(#[from] candle_core::Error),
    /// A configuration value is outside its domain.
    #[error("invalid model configuration: {0}")]
    Config(String),
}

impl ModelError {
    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        ModelError::Io {
            path: path.into(),
            source,
        }
    }
}

fn holder(pid: &Option<u32>) -> String {
    match pid {
        Some(pid) => format!("process {pid}"),
        None => "a process that has not written its pid yet".into(),
    }
}
