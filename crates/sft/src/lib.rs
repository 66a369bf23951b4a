//! thrive-sft (in progress).
