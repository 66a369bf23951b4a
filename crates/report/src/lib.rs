//! # thrive-report
//!
//! Figures (PNG and SVG, drawn with plotters) and summary tables from a
//! [`thrive_core::ResultsTable`]. It knows the tidy results format, not the
//! settings: a trajectory figure has one panel per workflow, generation on the
//! x axis, the mean over seeds with a 95% bootstrap band (as seaborn draws the
//! paper's figures), and one line per value of the hue column (`n` by
//! default). One figure is drawn per metric and per combination of the other
//! parameters (one per `d` for the Gaussian setting).
//!
//! A grid figure (heatmap, lines and table) shows the mean of a metric over
//! two parameters, e.g. the value-of-synthetic grid's `num_real` ×
//! `num_synthetic`. For value-of-synthetic grids, [`value`] finds the crossover (the `num_real`
//! above which synthetic rows stop helping) per source setting and draws the loss against the
//! proportion of real data.
//!
//! It must not run experiments. Only [`theory`] knows settings: which have a closed form (from
//! their crates: the linear-regression test MSE, the discrete fixation generation) and where it
//! holds; the figures and summaries draw any metric the same way.

pub mod bandwidth;
mod figure;
mod grid;
mod legend;
mod per_run;
mod stats;
mod summary;
pub mod table;
pub mod theory;
pub mod value;

pub use figure::{trajectory_figures, FigureOptions};
pub use grid::{grid, Grid};
pub use per_run::{per_run_figure, RunTheory};
pub use stats::{bootstrap_mean_ci, r_squared, Band};
pub use summary::{
    summary_csv, summary_json, summary_markdown, summary_rows, summary_rows_with, summary_tables, summary_text,
    SummaryCell, SummaryRow,
};
pub use theory::Theory;

use std::path::PathBuf;

/// Errors while drawing or summarising.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{path}: {message}")]
    Draw { path: PathBuf, message: String },
    #[error("{0}")]
    Input(String),
    #[error(transparent)]
    Core(#[from] thrive_core::Error),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
