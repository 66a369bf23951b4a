//! Figures of the KDE bandwidth study (being written with the KDE setting).

use std::path::{Path, PathBuf};
use thrive_core::ResultsTable;

/// NLL against bandwidth at chosen generations (not drawn yet: returns no files).
pub fn bandwidth_figures(_table: &ResultsTable, _out_dir: &Path, _generations: &[u32]) -> crate::Result<Vec<PathBuf>> {
    Ok(Vec::new())
}
