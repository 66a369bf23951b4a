//! thrive-kde (in progress).
