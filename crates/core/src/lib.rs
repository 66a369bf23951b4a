//! # thrive-core
//!
//! The small shared core of thrive. It owns the concepts that every setting
//! (Gaussian, KDE, language-model fine-tuning) must agree on, so that each is
//! defined exactly once:
//!
//! - [`Workflow`]: Replace, Accumulate and Accumulate-Subsample, and which
//!   data each generation trains on ([`Workflow::training_batches`]).
//! - [`seed`]: the seeding scheme. Every run, generation and kind of draw has
//!   its own random stream derived from the run seed, so results do not depend
//!   on thread count, batch size or whether a run is part of a grid.
//! - [`chain`]: the generation loop over a small [`Setting`] trait
//!   (real data, fit, evaluate, sample) for settings whose data are points in
//!   R^d.
//! - [`knobs`]: the loop's knobs beyond the paper (real data kept or fresh, sampling temperature,
//!   truncation and top-p, a verifier's selection), defined once for every toy setting, and
//!   [`knob_grid`], a list of values per knob as a grid.
//! - [`draws`]: the rejection-draw loop of filtered sampling and its draw counts.
//! - [`grid`]: many runs in parallel (rayon) with a progress bar, in a
//!   deterministic output order.
//! - [`results`]: tidy Parquet results (one row per run and generation) and the
//!   run [`manifest`] written beside them.
//! - [`tensorboard`]: TensorBoard event files of per-step and per-generation scalars.
//! - [`text_format`]: the paper's `user: …\nassistant: …` text of language-model examples.
//!
//! It must not know about any particular setting, model or plotting library.

pub mod chain;
pub mod draws;
pub mod error;
pub mod fsutil;
pub mod grid;
pub mod knob_grid;
pub mod knobs;
pub mod lock;
pub mod manifest;
pub mod points;
pub mod results;
pub mod seed;
pub mod tensorboard;
pub mod text_format;
pub mod workflow;

pub use chain::{run_chain, ChainConfig, Selection, Setting};
pub use draws::{draw_until_filled, Draws, DRAW_METRICS};
pub use error::{Error, Result};
pub use grid::{par_map, run_grid, RunSpec};
pub use knob_grid::KnobGrid;
pub use knobs::Knobs;
pub use manifest::Manifest;
pub use points::Points;
pub use results::{ParamValue, Params, ResultsTable, RunRecord};
pub use seed::{Rng, Seeds, Stream};
pub use workflow::{BatchRef, SubsampleSize, Workflow};

/// The version of thrive that produced a result, for manifests.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");
/// The git commit thrive was built from (`unknown` outside a git checkout).
pub const GIT_COMMIT: &str = env!("THRIVE_GIT_COMMIT");
