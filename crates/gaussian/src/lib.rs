//! thrive-gaussian (in progress).
