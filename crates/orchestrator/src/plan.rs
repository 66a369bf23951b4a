//! What steps a run has, in what order, and what each needs done first. There are two kinds of
//! LM run.
//!
//! The generation loop (§4.4): for every chain and workflow, generation t fine-tunes on its
//! workflow's view of the pool, is evaluated on the real validation split, and (unless it is the
//! last) samples generation t's synthetic batch into the pool.
//!
//! The value-of-synthetic grid (§5): each source model is fine-tuned once on the real training
//! split and samples a large synthetic batch; then every cell (num_real, num_synthetic, source,
//! seed) fine-tunes the base model on the first rows of both and is evaluated.
//!
//! Each step is named by its id (`thrive run --step ID`), which mirrors where it writes.

use crate::run_file::{RunFile, SourceQuality};
use crate::{Error, Result};
use std::path::PathBuf;
use thrive_core::Workflow;
use thrive_pool::BatchKey;

/// One unit of work.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    Train {
        workflow: Workflow,
        chain: u64,
        generation: u32,
    },
    Sample {
        workflow: Workflow,
        chain: u64,
        generation: u32,
    },
    /// Value grid: fine-tune a source model on (the first `source_real` rows of) the real
    /// training split.
    TrainSource {
        source: SourceId,
    },
    /// Value grid: sample the source's synthetic rows into the pool.
    SampleSource {
        source: SourceId,
    },
    /// Value grid: one cell. `source` is `None` when the cell has no synthetic rows (then the
    /// source does not matter and the cell is trained once per seed); with no rows at all the
    /// base model is evaluated untrained, once.
    Cell {
        num_real: usize,
        num_synthetic: usize,
        source: Option<SourceId>,
        seed: u64,
    },
}

/// A source of the value grid: its seed, and its quality (the `index`th combination of the
/// run file's source-quality keys, [`crate::ValueConfig::qualities`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SourceId {
    pub seed: u64,
    pub index: u32,
    pub quality: SourceQuality,
}

impl SourceId {
    /// Its directory under models/value: `source-SEED`, with the quality appended when the run
    /// file sets any source-quality key.
    pub(crate) fn dir_name(&self) -> String {
        match self.quality.label() {
            label if label.is_empty() => format!("source-{}", self.seed),
            label => format!("source-{}-{label}", self.seed),
        }
    }

    /// Its synthetic rows' pool batch.
    pub fn batch(&self) -> BatchKey {
        BatchKey::value_source(self.seed, self.index)
    }
}

impl std::fmt::Display for SourceId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.quality.label() {
            label if label.is_empty() => write!(f, "{}", self.seed),
            label => write!(f, "{} ({})", self.seed, label.replace('-', " ")),
        }
    }
}

/// Every step of a run in order.
pub fn plan(cfg: &RunFile) -> Vec<Step> {
    let mut steps = Vec::new();
    if let Some(v) = &cfg.value {
        let sources = sources(cfg);
        for &source in &sources {
            steps.push(Step::TrainSource { source });
            steps.push(Step::SampleSource { source });
        }
        let mut base_done = false;
        for &seed in &v.seeds {
            for &num_real in &v.num_real {
                for &num_synthetic in &v.num_synthetic {
                    if num_real + num_synthetic == 0 {
                        // Nothing to train on: the base model, evaluated once.
                        if !base_done {
                            steps.push(Step::Cell { num_real, num_synthetic, source: None, seed });
                            base_done = true;
                        }
                    } else if num_synthetic == 0 {
                        steps.push(Step::Cell { num_real, num_synthetic, source: None, seed });
                    } else {
                        for &source in &sources {
                            steps.push(Step::Cell { num_real, num_synthetic, source: Some(source), seed });
                        }
                    }
                }
            }
        }
        return steps;
    }
    let run = cfg.generation_loop();
    for &chain in &run.chains {
        for workflow in cfg.workflows() {
            for generation in 1..=run.generations {
                steps.push(Step::Train { workflow, chain, generation });
                if generation < run.generations {
                    steps.push(Step::Sample { workflow, chain, generation });
                }
            }
        }
    }
    steps
}

impl Step {
    /// The step's name on the command line (`thrive run --step ID`) and in Slurm: its kind, then
    /// where it writes, e.g. `train/replace/chain-1/gen-2` or `cell/source-0/seed-0/real-8-synthetic-16`.
    pub fn id(&self) -> String {
        match *self {
            Step::Train { workflow, chain, generation } => format!("train/{workflow}/chain-{chain}/gen-{generation}"),
            Step::Sample { workflow, chain, generation } => format!("sample/{workflow}/chain-{chain}/gen-{generation}"),
            Step::TrainSource { source } => format!("train-source/{}", source.dir_name()),
            Step::SampleSource { source } => format!("sample-source/{}", source.dir_name()),
            Step::Cell { num_real, num_synthetic, source, seed } => {
                let rel = cell_path(num_real, num_synthetic, source, seed);
                let parts: Vec<_> = rel.iter().map(|p| p.to_string_lossy()).collect();
                format!("cell/{}", parts.join("/"))
            }
        }
    }
}

/// A value-grid cell's directory relative to `models/value` (`base` for the empty cell): where
/// [`crate::RunDir::cell`] puts it, and its step id after `cell/`.
pub(crate) fn cell_path(num_real: usize, num_synthetic: usize, source: Option<SourceId>, seed: u64) -> PathBuf {
    match (num_real + num_synthetic, source) {
        (0, _) => PathBuf::from("base"),
        (_, None) => PathBuf::from("real-only").join(format!("seed-{seed}")).join(format!("real-{num_real}")),
        (_, Some(s)) => PathBuf::from(s.dir_name())
            .join(format!("seed-{seed}"))
            .join(format!("real-{num_real}-synthetic-{num_synthetic}")),
    }
}

/// The steps `step` needs done before it can run (the real data's import, which every step needs,
/// is done by whichever step comes first): generation t's fine-tune after generation t−1's
/// sampling of its workflow and chain, a sampling after its model's fine-tune, a value-grid cell
/// after its source's sampling.
pub fn dependencies(step: Step) -> Vec<Step> {
    match step {
        Step::Train { workflow, chain, generation } if generation > 1 => {
            vec![Step::Sample { workflow, chain, generation: generation - 1 }]
        }
        Step::Train { .. } | Step::TrainSource { .. } | Step::Cell { source: None, .. } => Vec::new(),
        Step::Sample { workflow, chain, generation } => vec![Step::Train { workflow, chain, generation }],
        Step::SampleSource { source } => vec![Step::TrainSource { source }],
        Step::Cell { source: Some(source), .. } => vec![Step::SampleSource { source }],
    }
}

/// The step of the plan with this id, or an error naming it.
pub fn find_step(cfg: &RunFile, id: &str) -> Result<Step> {
    plan(cfg).into_iter().find(|s| s.id() == id).ok_or_else(|| {
        Error::Invalid(format!("step `{id}` is not in the plan (`thrive run RUN.toml --list-steps` lists them)"))
    })
}

/// The value grid's sources: every seed with every source quality (none for a generation loop).
pub fn sources(cfg: &RunFile) -> Vec<SourceId> {
    let Some(v) = &cfg.value else { return Vec::new() };
    let qualities = v.qualities();
    v.sources
        .iter()
        .flat_map(|&seed| {
            qualities.iter().enumerate().map(move |(i, &quality)| SourceId { seed, index: i as u32, quality })
        })
        .collect()
}
