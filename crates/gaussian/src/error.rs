//! Typed errors of the Gaussian setting: a batch of moments where points are needed. They reach
//! users as [`thrive_core::Error::Setting`].

/// What the Gaussian setting refuses besides thrive-core's cases.
#[derive(Debug, thiserror::Error)]
pub enum GaussianError {
    /// Points were asked of a batch that holds only its moments.
    #[error("cannot take points from a batch of moments")]
    PointsFromMoments,
    /// Real data to weigh came as moments.
    #[error("real data come as points, not moments")]
    RealAsMoments,
    /// A pool that subsamples was handed a batch of moments.
    #[error("a subsampling pool needs points, not moments")]
    MomentsInSubsamplingPool,
}

impl From<GaussianError> for thrive_core::Error {
    fn from(e: GaussianError) -> Self {
        thrive_core::Error::Setting(Box::new(e))
    }
}
