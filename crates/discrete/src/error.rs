//! Typed errors of the discrete setting: draws and counts that do not fit its K outcomes. They
//! reach users as [`thrive_core::Error::Setting`].

/// What the discrete setting refuses besides thrive-core's cases.
#[derive(Debug, thiserror::Error)]
pub enum DiscreteError {
    /// A draw outside the outcomes 0..K.
    #[error("draw {draw} is not one of {outcomes} outcomes")]
    UnknownOutcome { draw: u32, outcomes: usize },
    /// A batch with another number of counts than there are outcomes.
    #[error("{counts} counts for {outcomes} outcomes")]
    CountsMismatch { counts: usize, outcomes: usize },
}

impl From<DiscreteError> for thrive_core::Error {
    fn from(e: DiscreteError) -> Self {
        thrive_core::Error::Setting(Box::new(e))
    }
}
