//! # thrive-report (in progress)
//!
//! Figures and summary tables from a [`thrive_core::ResultsTable`].
