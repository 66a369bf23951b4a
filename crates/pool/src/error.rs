//! Typed errors of the pool; every message names the file or column concerned.

use std::path::PathBuf;

/// Everything that can go wrong with a pool.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    /// A Parquet or Arrow file is unreadable, truncated, or has the wrong shape.
    #[error("{path}: {message}")]
    BadFile { path: PathBuf, message: String },
    /// Input data (jsonl, Parquet) that cannot be imported.
    #[error("{path}: {message}")]
    BadInput { path: PathBuf, message: String },
    /// Another writer holds the pool.
    #[error("{message}")]
    Locked { message: String },
    /// A request the pool cannot answer (unknown batch, bad view parameters …).
    #[error("{0}")]
    Invalid(String),
    #[error(transparent)]
    Core(#[from] thrive_core::Error),
}

impl Error {
    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io { path: path.into(), source }
    }
    pub(crate) fn bad_file(path: impl Into<PathBuf>, message: impl std::fmt::Display) -> Self {
        Error::BadFile { path: path.into(), message: message.to_string() }
    }
    pub(crate) fn bad_input(path: impl Into<PathBuf>, message: impl std::fmt::Display) -> Self {
        Error::BadInput { path: path.into(), message: message.to_string() }
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
