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
    /// A setting's own error (the typed error enum of its crate), shown as it is.
    #[error(transparent)]
    Setting(Box<dyn std::error::Error + Send + Sync>),
    /// A fit was asked of no data: `model` is what would be fitted, `data` what there is none of.
    #[error("cannot fit {model} to no {data}")]
    NothingToFit { model: &'static str, data: &'static str },
    /// A numerical routine (a decomposition, a distribution's parameters) failed.
    #[error("{operation} failed: {message}")]
    Numerical { operation: &'static str, message: String },
    /// A subsampling fit of a pool that keeps only running statistics, no `data`.
    #[error("this pool keeps no {data} to subsample")]
    NoSubsample { data: &'static str },
    /// A setting drew another number of real examples than the chain asked for.
    #[error("setting drew {got} real examples, expected {expected}")]
    RealCount { got: usize, expected: usize },
    /// A setting wrote another number of metrics than it names.
    #[error("setting wrote {got} metrics, expected {expected}")]
    MetricCount { got: usize, expected: usize },
    /// A run's metric values are not whole rows of the table's metrics.
    #[error("{values} metric values do not fit {metrics} metrics")]
    MetricRows { values: usize, metrics: usize },
    /// A run's parameters differ in names or types from the table's first run.
    #[error("run parameters {run:?} differ from the table's {table:?}")]
    ParamsDiffer { run: Vec<String>, table: Vec<String> },
    /// A directory that cannot be written; `what` says what it is for (a flag or a name).
    #[error("{what} {dir}: cannot write there ({reason})")]
    Unwritable { what: &'static str, dir: PathBuf, reason: std::io::Error },
    /// A file's contents could not be encoded or decoded (TensorBoard events, exported rows).
    #[error("{path}: {message}")]
    Codec { path: PathBuf, message: String },
    /// A lock file is held by another process.
    #[error("{path}: {message}")]
    Locked { path: PathBuf, message: String },
}

impl Error {
    /// An [`Error::InvalidParameter`] naming the parameter (or flag) `name`.
    pub fn invalid(name: impl Into<String>, reason: impl Into<String>) -> Self {
        Error::InvalidParameter { name: name.into(), reason: reason.into() }
    }
    /// An [`Error::Io`] naming `path`.
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io { path: path.into(), source }
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
