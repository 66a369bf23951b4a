//! Typed errors of fine-tuning; messages name the file or tensor concerned.

use std::path::PathBuf;

/// Everything that can go wrong while loading or training a model.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    /// A model file (config, weights, adapter) that is missing something or does not fit.
    #[error("{path}: {message}")]
    BadModel { path: PathBuf, message: String },
    /// A data file (training or validation examples) that cannot be used.
    #[error("{path}: {message}")]
    BadInput { path: PathBuf, message: String },
    /// GGUF metadata that is missing or not what is needed; `key` names the metadata entry.
    #[error("GGUF metadata {key}: {message}")]
    BadGguf { key: String, message: String },
    #[error("{0}")]
    Invalid(String),
    #[error(transparent)]
    Candle(#[from] candle_core::Error),
}

impl Error {
    pub(crate) fn bad_model(path: impl Into<PathBuf>, message: impl std::fmt::Display) -> Self {
        Error::BadModel { path: path.into(), message: message.to_string() }
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
