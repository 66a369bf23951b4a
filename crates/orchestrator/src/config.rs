//! `run.toml`: everything a multi-generation run needs, in one file. Unknown keys are rejected
//! by name; bad values name their key.

use crate::{Error, Result};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use thrive_core::Workflow;
use thrive_sampler::SamplerSettings;
use thrive_sft::{LoraConfig, Mode, Schedule, TrainConfig, LORA_TARGETS};

/// A whole run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RunConfig {
    /// The run directory (pool, models, results); relative paths are relative to the config file.
    pub out: PathBuf,
    /// The base model: a directory or a Hugging Face Hub id.
    pub model: String,
    pub data: DataConfig,
    #[serde(default)]
    pub run: LoopConfig,
    #[serde(default)]
    pub sft: SftConfig,
    #[serde(default)]
    pub sampling: SamplingConfig,
    /// `auto` (CUDA when built with it and present), `cpu` or `cuda`.
    #[serde(default = "default_device")]
    pub device: String,
}

/// The real data.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DataConfig {
    /// A folder with HelpSteer2's `train` and `validation` splits (jsonl, jsonl.gz or Parquet).
    pub helpsteer2: Option<PathBuf>,
    /// Or a Hub dataset id, e.g. `nvidia/HelpSteer2`.
    pub hub: Option<String>,
}

/// Which chains, and how long.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LoopConfig {
    /// Any of `replace`, `accumulate`, `accumulate-subsample`.
    pub workflows: Vec<String>,
    /// Models per chain (generation 1 trains on the real data).
    pub generations: u32,
    /// Chain seeds.
    pub chains: Vec<u64>,
    /// Fine-tune generation t from generation t−1's model instead of the base model (the paper
    /// always starts from the base model).
    pub continue_from_previous: bool,
}

impl Default for LoopConfig {
    fn default() -> Self {
        LoopConfig {
            workflows: vec!["replace".into(), "accumulate".into(), "accumulate-subsample".into()],
            generations: 3,
            chains: vec![0],
            continue_from_previous: false,
        }
    }
}

/// Fine-tuning settings (the meaning of each is `thrive sft --help`'s).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SftConfig {
    pub full: bool,
    pub lr: Option<f64>,
    pub lora_rank: usize,
    pub lora_alpha: f64,
    pub lora_dropout: f64,
    pub lora_targets: Vec<String>,
    pub rslora: bool,
    pub weight_decay: f64,
    pub warmup_ratio: f64,
    /// `constant` or `cosine`.
    pub schedule: String,
    pub sequences_per_step: usize,
    pub micro_batch: usize,
    pub epochs: usize,
    pub max_len: usize,
    pub response_only: bool,
    pub eval_every: usize,
    pub checkpoint_every: usize,
    pub max_grad_norm: f64,
}

impl Default for SftConfig {
    fn default() -> Self {
        let l = LoraConfig::default();
        SftConfig {
            full: false,
            lr: None,
            lora_rank: l.rank,
            lora_alpha: l.alpha,
            lora_dropout: l.dropout,
            lora_targets: l.targets,
            rslora: false,
            weight_decay: 0.0,
            warmup_ratio: 0.05,
            schedule: "constant".into(),
            sequences_per_step: 128,
            micro_batch: 8,
            epochs: 1,
            max_len: 512,
            response_only: false,
            eval_every: 0,
            checkpoint_every: 10,
            max_grad_norm: 1.0,
        }
    }
}

/// Sampling settings (`thrive sample --help`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SamplingConfig {
    /// `unconditional` (the paper) or `prompted`.
    pub mode: String,
    /// Accepted rows per generation (the paper: 12531).
    pub count: usize,
    pub temperature: f64,
    pub top_p: f64,
    pub top_k: Option<u32>,
    pub max_new_tokens: usize,
    pub batch_size: usize,
    pub strip_quirk: bool,
    /// Give up after this many generations per call [default: 4 × count + 4096].
    pub max_attempts: Option<u64>,
}

impl Default for SamplingConfig {
    fn default() -> Self {
        SamplingConfig {
            mode: "unconditional".into(),
            count: 12531,
            temperature: 1.0,
            top_p: 1.0,
            top_k: None,
            max_new_tokens: 512,
            batch_size: 64,
            strip_quirk: true,
            max_attempts: None,
        }
    }
}

fn default_device() -> String {
    "auto".into()
}

impl RunConfig {
    /// Reads and checks a run file; relative paths in it become relative to its folder.
    pub fn from_file(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(crate::error::io(path))?;
        let mut cfg = Self::from_toml(&text, path)?;
        let base = path.parent().unwrap_or(Path::new("."));
        cfg.resolve_paths(base);
        Ok(cfg)
    }

    /// Parses and checks TOML text (`origin` names it in errors).
    pub fn from_toml(text: &str, origin: &Path) -> Result<Self> {
        let cfg: RunConfig =
            toml::from_str(text).map_err(|e| Error::Config { path: origin.into(), message: e.to_string() })?;
        cfg.check().map_err(|message| Error::Config { path: origin.into(), message })?;
        Ok(cfg)
    }

    /// Makes relative paths relative to `base`.
    pub fn resolve_paths(&mut self, base: &Path) {
        let fix = |p: &mut PathBuf| {
            if p.is_relative() {
                *p = base.join(&*p);
            }
        };
        fix(&mut self.out);
        if let Some(p) = self.data.helpsteer2.as_mut() {
            fix(p);
        }
        let local = base.join(&self.model);
        if Path::new(&self.model).is_relative() && local.is_dir() {
            self.model = local.display().to_string();
        }
    }

    /// The workflows, parsed.
    pub fn workflows(&self) -> Vec<Workflow> {
        self.run.workflows.iter().filter_map(|w| w.parse().ok()).collect()
    }

    fn check(&self) -> std::result::Result<(), String> {
        for w in &self.run.workflows {
            w.parse::<Workflow>().map_err(|e| format!("run.workflows: {e}"))?;
        }
        if self.run.workflows.is_empty() {
            return Err("run.workflows: name at least one workflow".into());
        }
        if self.run.generations == 0 {
            return Err("run.generations: must be at least 1".into());
        }
        if self.run.chains.is_empty() {
            return Err("run.chains: name at least one chain seed".into());
        }
        match (&self.data.helpsteer2, &self.data.hub) {
            (Some(_), Some(_)) => return Err("data: give helpsteer2 or hub, not both".into()),
            (None, None) => return Err("data: give helpsteer2 = \"FOLDER\" or hub = \"nvidia/HelpSteer2\"".into()),
            _ => {}
        }
        if !["auto", "cpu", "cuda"].contains(&self.device.as_str()) {
            return Err(format!("device: `{}` is not auto, cpu or cuda", self.device));
        }
        self.train_config(0, 1)?;
        self.sampler_settings()?;
        if !["unconditional", "prompted"].contains(&self.sampling.mode.as_str()) {
            return Err(format!("sampling.mode: `{}` is not unconditional or prompted", self.sampling.mode));
        }
        if self.sampling.count == 0 {
            return Err("sampling.count: must be positive".into());
        }
        Ok(())
    }

    /// The fine-tuning configuration of (chain, generation).
    pub fn train_config(&self, chain: u64, generation: u32) -> std::result::Result<TrainConfig, String> {
        let s = &self.sft;
        let mode = if s.full {
            Mode::Full
        } else {
            if let Some(bad) = s.lora_targets.iter().find(|t| !LORA_TARGETS.contains(&t.as_str())) {
                return Err(format!("sft.lora_targets: unknown module `{bad}` (expected some of {LORA_TARGETS:?})"));
            }
            if s.lora_rank == 0 {
                return Err("sft.lora_rank: must be positive".into());
            }
            if !(0.0..1.0).contains(&s.lora_dropout) {
                return Err("sft.lora_dropout: must be in [0, 1)".into());
            }
            Mode::Lora(LoraConfig {
                rank: s.lora_rank,
                alpha: s.lora_alpha,
                dropout: s.lora_dropout,
                targets: s.lora_targets.clone(),
                rslora: s.rslora,
            })
        };
        let base = if s.full { TrainConfig::paper_full() } else { TrainConfig::default_lora() };
        let lr = s.lr.unwrap_or(base.lr);
        if !(lr > 0.0 && lr.is_finite()) {
            return Err("sft.lr: must be a positive number".into());
        }
        if !(0.0..1.0).contains(&s.warmup_ratio) {
            return Err("sft.warmup_ratio: must be in [0, 1)".into());
        }
        let schedule = match s.schedule.as_str() {
            "constant" => Schedule::Constant,
            "cosine" => Schedule::Cosine,
            other => return Err(format!("sft.schedule: `{other}` is not constant or cosine")),
        };
        for (key, v) in [
            ("sft.sequences_per_step", s.sequences_per_step),
            ("sft.micro_batch", s.micro_batch),
            ("sft.epochs", s.epochs),
        ] {
            if v == 0 {
                return Err(format!("{key}: must be positive"));
            }
        }
        if s.max_len < 2 {
            return Err("sft.max_len: must be at least 2".into());
        }
        Ok(TrainConfig {
            mode,
            lr,
            weight_decay: s.weight_decay,
            warmup_ratio: s.warmup_ratio,
            schedule,
            sequences_per_step: s.sequences_per_step,
            micro_batch: s.micro_batch,
            epochs: s.epochs,
            max_len: s.max_len,
            response_only: s.response_only,
            eval_every: s.eval_every,
            checkpoint_every: s.checkpoint_every,
            max_grad_norm: s.max_grad_norm,
            seed: chain,
            generation,
        })
    }

    /// The sampler's settings.
    pub fn sampler_settings(&self) -> std::result::Result<SamplerSettings, String> {
        let s = &self.sampling;
        let settings = SamplerSettings {
            temperature: s.temperature,
            top_p: s.top_p,
            top_k: s.top_k,
            max_new_tokens: s.max_new_tokens,
            batch_size: s.batch_size,
            ignore_eos: false,
        };
        settings.check().map_err(|e| format!("sampling: {e}"))?;
        Ok(settings)
    }
}
