//! Typed errors of the core.

use std::path::PathBuf;

/// Everything that can go wrong in the core.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A parameter is out of its valid range; the message names it.
    #[error("invalid {name}: {reason}")]
    InvalidParameter { name: String, reason: String },
    /// Reading or writing a file failed.
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    /// A Parquet file could not be written or read.
    #[error("{path}: {message}")]
    Parquet { path: PathBuf, message: String },
    /// A results file does not have the shape thrive writes.
    #[error("{path}: {message}")]
    BadResults { path: PathBuf, message: String },
    /// A setting failed while fitting, sampling or evaluating.
    #[error("{0}")]
    Setting(String),
    /// A lock file is held by another process.
    #[error("{path}: {message}")]
    Locked { path: PathBuf, message: String },
}

impl Error {
    pub fn invalid(name: impl Into<String>, reason: impl Into<String>) -> Self {
        Error::InvalidParameter { name: name.into(), reason: reason.into() }
    }
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io { path: path.into(), source }
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
