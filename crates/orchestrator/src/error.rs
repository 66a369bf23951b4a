use std::path::PathBuf;

/// What can go wrong in a multi-generation run.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A run configuration that cannot be used; the message names the key.
    #[error("{path}: {message}")]
    Config { path: PathBuf, message: String },
    #[error("{0}")]
    Invalid(String),
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error(transparent)]
    Core(#[from] thrive_core::Error),
    #[error(transparent)]
    Pool(#[from] thrive_pool::Error),
    #[error(transparent)]
    Sft(#[from] thrive_sft::Error),
    #[error(transparent)]
    Sampler(#[from] thrive_sampler::Error),
    #[error(transparent)]
    Candle(#[from] candle_core::Error),
}

pub type Result<T> = std::result::Result<T, Error>;

pub(crate) fn io(path: &std::path::Path) -> impl Fn(std::io::Error) -> Error + '_ {
    move |source| Error::Io { path: path.into(), source }
}
