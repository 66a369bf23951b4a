//! Typed errors of the linear-regression setting: labels, noise and weights that do not fit
//! the fixed design. They reach users as [`thrive_core::Error::Setting`].

/// What the linear-regression setting refuses besides thrive-core's cases.
#[derive(Debug, thiserror::Error)]
pub enum LinRegError {
    /// A run's parts (true weights, design, test set) of another dimension than the setting's.
    #[error(
        "linear regression of dimension {dim}: w* has {w_star}, the design {design} and the test set {test} columns"
    )]
    Dimensions { dim: usize, w_star: usize, design: usize, test: usize },
    /// Noise for another number of rows than the design has.
    #[error("{noise} noise values for {rows} design rows")]
    NoiseLength { noise: usize, rows: usize },
    /// A weighted batch whose weights do not match its labels one to one.
    #[error("a batch needs one weight per label")]
    WeightPerLabel,
    /// A batch of labels for another number of rows than the design has.
    #[error("{labels} labels for a design of {rows} rows")]
    LabelCount { labels: usize, rows: usize },
    /// A sample of another size than the design (sampling relabels the design).
    #[error("cannot relabel {n} rows of a design of {rows}")]
    Relabel { n: usize, rows: usize },
}

impl From<LinRegError> for thrive_core::Error {
    fn from(e: LinRegError) -> Self {
        thrive_core::Error::Setting(Box::new(e))
    }
}
