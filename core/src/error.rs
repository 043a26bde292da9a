//! Errors of the vocabulary crate: decoding stored records and opening the class registry.
//!
//! Both are *reported* errors: a caller that meets one on a file it owns moves the file aside and starts
//! fresh (DESIGN.md: "a corrupt file is reported and replaced by a fresh start, never a crash").

use std::path::PathBuf;

/// Why bytes could not be decoded into a [`ProfileRecord`](crate::ProfileRecord).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DecodeError {
    /// The bytes do not start with the record magic.
    #[error("not a pagegen profile record (bad magic)")]
    BadMagic,
    /// The record was written by a newer schema than this build understands.
    #[error("profile record schema {found} is newer than the supported {supported}")]
    UnsupportedVersion {
        /// Version found in the record.
        found: u16,
        /// Newest version this build reads.
        supported: u16,
    },
    /// The record ends before all of its fields.
    #[error("profile record truncated: needed {needed} more bytes at offset {offset}")]
    Truncated {
        /// Offset where the read failed.
        offset: usize,
        /// Bytes missing.
        needed: usize,
    },
    /// A field holds a value outside its domain (e.g. an unknown enum tag).
    #[error("profile record field `{field}` holds invalid value {value}")]
    InvalidField {
        /// Field name.
        field: &'static str,
        /// Raw value found.
        value: u64,
    },
    /// Bytes remain after the last field.
    #[error("profile record has {0} trailing bytes")]
    TrailingBytes(usize),
}

/// Why the class registry could not be opened or saved.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RegistryError {
    /// Reading or writing the registry file failed (other than corruption, which is recovered).
    #[error("class registry at {path}: {source}")]
    Io {
        /// The registry file.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// More classes than a [`ClassId`](crate::ClassId) can name.
    #[error("class registry is full ({0} classes)")]
    Full(usize),
}
