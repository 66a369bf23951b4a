//! Where everything of a run lives in its directory, and the records that mark steps done.
//!
//! Every step is idempotent and leaves either nothing or a complete artifact: a model directory
//! is complete once its `done.json` exists (written last, atomically; training in between resumes
//! from its newest checkpoint), a synthetic batch once the pool's manifest lists it. Running the
//! same configuration again therefore continues where a killed run stopped and ends with the
//! same results as an uninterrupted run.

use crate::error::io;
use crate::plan::{cell_path, SourceId, Step};
use crate::{Error, Result};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use thrive_core::Workflow;
use thrive_pool::{BatchKey, Pool};

/// A run directory's layout.
pub struct RunDir {
    /// The run directory itself (the run file's `out`).
    pub root: PathBuf,
}

impl RunDir {
    /// The pool: the real data and every synthetic batch.
    pub fn pool(&self) -> PathBuf {
        self.root.join("pool")
    }
    /// A generation-loop model: `models/WORKFLOW/chain-C/gen-GGGG`.
    pub fn model(&self, workflow: Workflow, chain: u64, generation: u32) -> PathBuf {
        self.root
            .join("models")
            .join(workflow.name())
            .join(format!("chain-{chain}"))
            .join(format!("gen-{generation:04}"))
    }
    /// A value-grid source model: `models/value/source-SEED[-QUALITY]`.
    pub fn source_model(&self, source: SourceId) -> PathBuf {
        self.root.join("models").join("value").join(source.dir_name())
    }
    /// A value-grid cell: under `models/value`, `base` for the empty cell, `real-only/...` for one
    /// without synthetic rows, else under its source's directory.
    pub fn cell(&self, num_real: usize, num_synthetic: usize, source: Option<SourceId>, seed: u64) -> PathBuf {
        self.root.join("models").join("value").join(cell_path(num_real, num_synthetic, source, seed))
    }
    /// The results table of every finished model.
    pub fn results(&self) -> PathBuf {
        self.root.join("results.parquet")
    }
    /// The configuration the run was started with.
    pub fn config(&self) -> PathBuf {
        self.root.join("run.json")
    }
    /// The lock a process holds while it runs `step`.
    pub fn step_lock(&self, step: Step) -> PathBuf {
        self.root.join("locks").join(format!("{}.lock", step.id().replace('/', "+")))
    }
}

/// Where a model step writes (its `done.json` marks it complete); `None` for sampling steps.
pub fn model_dir(dir: &RunDir, step: Step) -> Option<PathBuf> {
    match step {
        Step::Train { workflow, chain, generation } => Some(dir.model(workflow, chain, generation)),
        Step::TrainSource { source } => Some(dir.source_model(source)),
        Step::Cell { num_real, num_synthetic, source, seed } => Some(dir.cell(num_real, num_synthetic, source, seed)),
        Step::Sample { .. } | Step::SampleSource { .. } => None,
    }
}

/// The pool batch a sampling step writes.
fn sample_key(step: Step) -> Option<BatchKey> {
    match step {
        Step::Sample { workflow, chain, generation } => Some(BatchKey::synthetic(workflow, chain, generation)),
        Step::SampleSource { source } => Some(source.batch()),
        _ => None,
    }
}

/// Whether a step's artifact is complete.
pub fn is_done(dir: &RunDir, pool: Option<&Pool>, step: Step) -> bool {
    match (model_dir(dir, step), sample_key(step)) {
        (Some(model), _) => model.join("done.json").exists(),
        (None, Some(key)) => pool.is_some_and(|p| p.contains(&key)),
        (None, None) => false,
    }
}

/// What a finished model step recorded (`done.json`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModelDone {
    #[serde(deserialize_with = "null_as_nan")]
    pub eval_loss: f64,
    #[serde(deserialize_with = "null_as_nan")]
    pub eval_loss_before: f64,
    /// NaN (null in the file) for a model that was not trained.
    #[serde(deserialize_with = "null_as_nan")]
    pub train_loss: f64,
    pub train_examples: usize,
    pub synthetic_examples: usize,
    pub steps: usize,
    pub seconds: f64,
}

/// What a finished sampling step recorded beside its model (`sample.json`): the pool's manifest
/// marks it done, this only times it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SampleDone {
    pub rows: usize,
    pub seconds: f64,
}

/// A sampling step's record in its model's directory.
pub const SAMPLE_DONE: &str = "sample.json";

/// How many steps the latest `thrive run` of a directory ran at a time (`{"jobs": N}`).
pub const JOBS_FILE: &str = "jobs.json";

/// The seconds a done step took, as recorded (a sampling step from before they were recorded:
/// `None`).
pub fn step_seconds(dir: &RunDir, step: Step) -> Option<f64> {
    let (path, model) = match step {
        Step::Sample { workflow, chain, generation } => {
            (dir.model(workflow, chain, generation).join(SAMPLE_DONE), false)
        }
        Step::SampleSource { source } => (dir.source_model(source).join(SAMPLE_DONE), false),
        _ => (model_dir(dir, step)?.join("done.json"), true),
    };
    let text = std::fs::read_to_string(path).ok()?;
    if model {
        serde_json::from_str::<ModelDone>(&text).ok().map(|d| d.seconds)
    } else {
        serde_json::from_str::<SampleDone>(&text).ok().map(|d| d.seconds)
    }
}

/// JSON has no NaN: serde_json writes it as null, read back here.
fn null_as_nan<'de, D: serde::Deserializer<'de>>(d: D) -> std::result::Result<f64, D::Error> {
    Option::<f64>::deserialize(d).map(|v| v.unwrap_or(f64::NAN))
}

/// Reads a model's `done.json`.
pub(crate) fn read_done(path: &Path) -> Result<ModelDone> {
    let text = std::fs::read_to_string(path).map_err(io(path))?;
    serde_json::from_str(&text).map_err(|e| Error::Invalid(format!("{}: {e}", path.display())))
}

/// Writes `value` as pretty JSON to `path`, atomically (a reader sees the old file or the new one).
pub(crate) fn write_json<T: Serialize>(path: &Path, value: &T) -> Result<()> {
    let text = serde_json::to_string_pretty(value).map_err(|e| Error::Invalid(e.to_string()))?;
    thrive_core::fsutil::write_atomic(path, |w| {
        std::io::Write::write_all(w, text.as_bytes())
            .map_err(|e| thrive_core::Error::Io { path: path.into(), source: e })
    })?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::run_file::SourceQuality;

    /// A cell's step id is its directory under `models/value`, whatever its kind.
    #[test]
    fn cell_ids_name_their_directories() {
        let dir = RunDir { root: PathBuf::from("/runs/r") };
        let quality = SourceQuality { real: Some(4), epochs: None, temperature: Some(0.5) };
        let source = SourceId { seed: 3, index: 1, quality };
        let cases = [
            (0, 0, None, 0, "base"),
            (8, 0, None, 1, "real-only/seed-1/real-8"),
            (8, 16, Some(source), 2, "source-3-real-4-temperature-0.5/seed-2/real-8-synthetic-16"),
        ];
        for (num_real, num_synthetic, source, seed, rel) in cases {
            let step = Step::Cell { num_real, num_synthetic, source, seed };
            assert_eq!(step.id(), format!("cell/{rel}"));
            assert_eq!(dir.cell(num_real, num_synthetic, source, seed), Path::new("/runs/r/models/value").join(rel));
            assert_eq!(model_dir(&dir, step), Some(dir.cell(num_real, num_synthetic, source, seed)));
        }
        let lock = dir.step_lock(Step::Cell { num_real: 8, num_synthetic: 0, source: None, seed: 1 });
        assert_eq!(lock, Path::new("/runs/r/locks/cell+real-only+seed-1+real-8.lock"));
    }
}
