//! Language-model runs, resumable after a crash at any point: multi-generation runs (protocol
//! §4.4: pool → fine-tune → evaluate → sample → pool, for every workflow and chain seed) and the
//! value-of-synthetic grid (§5: num_real × num_synthetic → validation loss).
//!
//! The workflows themselves are thrive-core's ([`thrive_core::Workflow`]), reached through the
//! pool's training views, so the Gaussian, KDE and LM settings share one definition.

mod config;
mod error;
mod run;

pub use config::{DataConfig, LoopConfig, OneOrMany, RunConfig, SamplingConfig, SourceQuality, ValueConfig};
pub use error::{Error, Result};
pub use run::{is_done, model_dir, plan, results, run, sources, to_sft, ModelDone, RunDir, SourceId, Step, METRICS};
pub use thrive_sft::SftSettings;

/// What a run directory holds: its configuration and every step, done or not.
pub struct Status {
    pub config: RunConfig,
    /// Each step, whether it is complete, and for a finished model its record.
    pub steps: Vec<(Step, bool, Option<ModelDone>)>,
}

/// Reads the state of the run in `root` (the `out` of its configuration).
pub fn status(root: &std::path::Path) -> Result<Status> {
    let dir = RunDir { root: root.to_path_buf() };
    let path = dir.config();
    let text = std::fs::read_to_string(&path).map_err(|e| {
        Error::Invalid(format!("{}: not a run directory ({e}); `thrive run` writes run.json there", root.display()))
    })?;
    let config: RunConfig =
        serde_json::from_str(&text).map_err(|e| Error::Invalid(format!("{}: {e}", path.display())))?;
    let pool = thrive_pool::Pool::open(dir.pool()).ok();
    let steps = plan(&config)
        .into_iter()
        .map(|step| {
            let done = is_done(&dir, pool.as_ref(), step);
            let record = model_dir(&dir, step)
                .filter(|_| done)
                .and_then(|d| std::fs::read_to_string(d.join("done.json")).ok())
                .and_then(|t| serde_json::from_str(&t).ok());
            (step, done, record)
        })
        .collect();
    Ok(Status { config, steps })
}
