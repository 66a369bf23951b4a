//! Language-model runs, resumable after a crash at any point: multi-generation runs
//! (docs/protocol.md §4.4: pool → fine-tune → evaluate → sample → pool, for every workflow and
//! chain seed) and the value-of-synthetic grid (§5: num_real × num_synthetic → validation loss).
//!
//! The workflows themselves are thrive-core's ([`thrive_core::Workflow`]), reached through the
//! pool's training views, so the Gaussian, KDE and LM settings share one definition.

mod error;
mod execute;
mod layout;
mod plan;
mod run_file;
pub mod slurm;
mod steps;

pub use error::{Error, Result};
pub use execute::{check_recorded, run, run_step, run_with, RunOptions};
pub use layout::{is_done, model_dir, step_seconds, ModelDone, RunDir, SampleDone, JOBS_FILE, SAMPLE_DONE};
pub use plan::{dependencies, find_step, plan, sources, SourceId, Step};
pub use run_file::{
    DataConfig, LoopConfig, OneOrMany, RunFile, SamplingConfig, SlurmConfig, SourceQuality, ValueConfig,
};
pub use steps::{results, to_sft, METRICS};
pub use thrive_sft::TrainSettings;

/// What a run directory holds: its configuration and every step, done or not.
pub struct Status {
    pub config: RunFile,
    /// Each step, whether it is complete, and for a finished model its record.
    pub steps: Vec<(Step, bool, Option<ModelDone>)>,
    /// The seconds each done step took, where recorded (in the order of `steps`).
    pub seconds: Vec<Option<f64>>,
    /// Steps the latest `thrive run` ran at a time (1 when not recorded).
    pub jobs: usize,
}

/// Where one chain of a generation loop stands.
#[derive(Debug, Clone, PartialEq)]
pub struct ChainProgress {
    pub workflow: thrive_core::Workflow,
    pub chain: u64,
    /// Generations trained so far, and in all.
    pub reached: u32,
    pub generations: u32,
    /// The newest trained generation's validation loss (NaN before the first).
    pub eval_loss: f64,
    /// Seconds its remaining steps take at the mean time of the steps of their kind done so far
    /// (`None` while no step of a kind still needed has been timed).
    pub eta_seconds: Option<f64>,
}

impl Status {
    /// Mean seconds of the done steps of each kind: (fine-tunes and evaluations, samplings).
    fn mean_seconds(&self) -> (Option<f64>, Option<f64>) {
        let mean = |sampling: bool| {
            let v: Vec<f64> = self
                .steps
                .iter()
                .zip(&self.seconds)
                .filter(|((s, done, _), _)| *done && is_sampling(*s) == sampling)
                .filter_map(|(_, secs)| *secs)
                .collect();
            (!v.is_empty()).then(|| v.iter().sum::<f64>() / v.len() as f64)
        };
        (mean(false), mean(true))
    }

    /// Estimated seconds for the pending steps among `steps` (one after another).
    fn remaining(&self, steps: impl Iterator<Item = Step>) -> Option<f64> {
        let (train, sample) = self.mean_seconds();
        let pending: Vec<Step> = steps.filter(|s| self.steps.iter().any(|(t, done, _)| t == s && !*done)).collect();
        pending.iter().map(|&s| if is_sampling(s) { sample.or(train) } else { train }).sum()
    }

    /// Estimated seconds until the whole run is done: its pending steps at the mean time of their
    /// kind, divided by the steps run at a time.
    pub fn eta_seconds(&self) -> Option<f64> {
        self.remaining(self.steps.iter().map(|s| s.0)).map(|t| t / self.jobs.max(1) as f64)
    }

    /// Each chain of a generation loop (none for a value grid).
    pub fn chains(&self) -> Vec<ChainProgress> {
        let run = self.config.generation_loop();
        let mut out = Vec::new();
        for &chain in &run.chains {
            for workflow in self.config.workflows() {
                let mine = |s: &Step| match *s {
                    Step::Train { workflow: w, chain: c, .. } | Step::Sample { workflow: w, chain: c, .. } => {
                        w == workflow && c == chain
                    }
                    _ => false,
                };
                let trained: Vec<&ModelDone> = self
                    .steps
                    .iter()
                    .filter(|(s, done, _)| mine(s) && *done && !is_sampling(*s))
                    .filter_map(|(_, _, r)| r.as_ref())
                    .collect();
                out.push(ChainProgress {
                    workflow,
                    chain,
                    reached: trained.len() as u32,
                    generations: run.generations,
                    eval_loss: trained.last().map_or(f64::NAN, |d| d.eval_loss),
                    eta_seconds: self.remaining(self.steps.iter().map(|s| s.0).filter(mine)),
                });
            }
        }
        out
    }
}

fn is_sampling(step: Step) -> bool {
    matches!(step, Step::Sample { .. } | Step::SampleSource { .. })
}

/// Reads the state of the run in `root` (the `out` of its configuration).
pub fn status(root: &std::path::Path) -> Result<Status> {
    let dir = RunDir { root: root.to_path_buf() };
    // Before its first step, a run submitted to Slurm has only the configuration submitted.
    let path = Some(dir.config()).filter(|p| p.exists()).unwrap_or_else(|| dir.root.join("slurm").join("run.json"));
    let text = std::fs::read_to_string(&path).map_err(|e| {
        Error::Invalid(format!("{}: not a run directory ({e}); `thrive run` writes run.json there", root.display()))
    })?;
    let config: RunFile =
        serde_json::from_str(&text).map_err(|e| Error::Invalid(format!("{}: {e}", path.display())))?;
    let pool = thrive_pool::Pool::open(dir.pool()).ok();
    let steps: Vec<(Step, bool, Option<ModelDone>)> = plan(&config)
        .into_iter()
        .map(|step| {
            let done = is_done(&dir, pool.as_ref(), step);
            let record = model_dir(&dir, step)
                .filter(|_| done)
                .and_then(|d| std::fs::read_to_string(d.join("done.json")).ok())
                .and_then(|t| serde_json::from_str(&t).ok());
            (step, done, record)
        })
        .collect::<Vec<_>>();
    let seconds = steps.iter().map(|&(s, done, _)| if done { step_seconds(&dir, s) } else { None }).collect();
    let jobs = std::fs::read_to_string(dir.root.join(JOBS_FILE))
        .ok()
        .and_then(|t| serde_json::from_str::<serde_json::Value>(&t).ok())
        .and_then(|v| v["jobs"].as_u64())
        .unwrap_or(1) as usize;
    Ok(Status { config, steps, seconds, jobs })
}
