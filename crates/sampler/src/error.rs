use std::path::PathBuf;

/// What can go wrong while sampling.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{0}")]
    Invalid(String),
    #[error("{path}: {message}")]
    BadInput { path: PathBuf, message: String },
    #[error(transparent)]
    Model(#[from] thrive_sft::Error),
    #[error(transparent)]
    Pool(#[from] thrive_pool::Error),
    #[error(transparent)]
    Candle(#[from] candle_core::Error),
}

pub type Result<T> = std::result::Result<T, Error>;
