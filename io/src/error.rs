//! Errors of pagegen-io's configuration API. File operations themselves return [`std::io::Error`]
//! with std's kinds; [`IoError`] converts into one for callers that mix both.

use std::io;

use pagegen_core::ClassId;

/// A rejected configuration or backend request.
#[derive(Debug, thiserror::Error)]
pub enum IoError {
    /// A depth limit of zero would block the class forever.
    #[error("{class}: an I/O depth of 0 would block every operation; use at least 1")]
    ZeroDepth {
        /// The class.
        class: ClassId,
    },
    /// A bandwidth of zero would block the class forever.
    #[error(
        "{class}: a bandwidth of 0 bytes/s would block every operation; use None for unlimited"
    )]
    ZeroBandwidth {
        /// The class.
        class: ClassId,
    },
    /// The id is beyond [`ClassId::MAX_CLASSES`].
    #[error("{class} is beyond the largest class id pagegen supports")]
    UnknownClass {
        /// The class.
        class: ClassId,
    },
    /// io_uring was asked for explicitly but cannot be set up here.
    #[error("io_uring is unavailable: {0}")]
    UringUnavailable(#[source] io::Error),
}

impl From<IoError> for io::Error {
    fn from(e: IoError) -> Self {
        match e {
            IoError::UringUnavailable(inner) => inner,
            other => io::Error::new(io::ErrorKind::InvalidInput, other),
        }
    }
}
