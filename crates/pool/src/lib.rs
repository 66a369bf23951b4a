//! thrive-pool (in progress).
