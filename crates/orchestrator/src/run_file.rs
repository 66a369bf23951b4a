//! `run.toml`: everything a multi-generation run needs, in one file. Unknown keys are rejected
//! by name; bad values name their key.

use crate::{Error, Result};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use thrive_core::Workflow;
use thrive_sampler::SamplerSettings;
use thrive_sft::{Hyperparams, TrainSettings};

/// A whole run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RunFile {
    /// The run directory (pool, models, results); relative paths are relative to the config file.
    pub out: PathBuf,
    /// The base model: a directory, a Gemma 3 `.gguf` file or a Hugging Face Hub id.
    pub model: String,
    pub data: DataConfig,
    /// The generation loop (§4.4). Give this or `value`, not both.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub run: Option<LoopConfig>,
    /// The value-of-synthetic grid (§5) instead of the generation loop.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<ValueConfig>,
    #[serde(default)]
    pub sft: TrainSettings,
    #[serde(default)]
    pub sampling: SamplingConfig,
    /// `auto` (CUDA when built with it and present), `cpu` or `cuda`.
    #[serde(default = "default_device")]
    pub device: String,
    /// `f32` or `bf16` for the frozen weights and activations (default: bf16 on CUDA, f32 on
    /// the CPU), or `bf16-mixed` (f32 activations with every weight product in bf16; CPU, mkl
    /// build; under full fine-tuning the weights stay f32 masters); trained tensors are f32
    /// either way.
    #[serde(default)]
    pub dtype: Option<thrive_sft::PrecisionChoice>,
    /// Resources of the Slurm jobs of `thrive submit` (not part of what a run computes).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub slurm: Option<SlurmConfig>,
}

/// `[slurm]`: what every job of `thrive submit` asks Slurm for.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SlurmConfig {
    /// `--partition`.
    pub partition: Option<String>,
    /// `--account`.
    pub account: Option<String>,
    /// GPUs per job (`--gres=gpu:N`).
    pub gpus: Option<u32>,
    /// `--cpus-per-task`.
    pub cpus: Option<u32>,
    /// `--mem`, e.g. `"32G"`.
    pub mem: Option<String>,
    /// `--time`, e.g. `"04:00:00"`.
    pub time: Option<String>,
    /// More sbatch options, one a line, e.g. `"--qos=high"` (`#SBATCH` is added).
    pub extra: Vec<String>,
    /// Shell lines run before thrive in every job, e.g. `"module load cuda/12.4"`.
    pub setup: Vec<String>,
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

/// The value-of-synthetic grid (docs/protocol.md §5): every cell fine-tunes the base model once on the
/// first `num_real` rows of the real training split and the first `num_synthetic` rows of a
/// source's synthetic data, and is evaluated on the real validation split.
///
/// A source is the base model fine-tuned on real rows, which then samples `sampling.count` rows.
/// Its quality is set by `source_real`, `source_epochs` and `source_temperature`; each takes one
/// value or a list, and a list makes it an axis of the grid (every combination with every seed
/// in `sources` is a source of its own).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ValueConfig {
    pub num_real: Vec<usize>,
    pub num_synthetic: Vec<usize>,
    /// Seeds of the sources (the paper: one source fine-tuned on the whole real split).
    pub sources: Vec<u64>,
    /// Real training rows (the first ones of the split) each source is fine-tuned on
    /// [default: all of them, as the paper].
    #[serde(skip_serializing_if = "Option::is_none")]
    pub source_real: Option<OneOrMany<usize>>,
    /// The sources' epochs [default: sft.epochs].
    #[serde(skip_serializing_if = "Option::is_none")]
    pub source_epochs: Option<OneOrMany<usize>>,
    /// The temperature the sources sample at [default: sampling.temperature].
    #[serde(skip_serializing_if = "Option::is_none")]
    pub source_temperature: Option<OneOrMany<f64>>,
    /// Training seeds of every cell.
    pub seeds: Vec<u64>,
    /// `first` rows in pool order (the paper) or a seeded `random` choice.
    pub pick: String,
}

/// One value, or a list of them that makes the key an axis of a grid.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum OneOrMany<T> {
    One(T),
    Many(Vec<T>),
}

impl<T: Copy> OneOrMany<T> {
    pub fn values(&self) -> Vec<T> {
        match self {
            OneOrMany::One(v) => vec![*v],
            OneOrMany::Many(v) => v.clone(),
        }
    }
}

/// What sets a source's quality; `None` where the run file leaves the key to its default.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SourceQuality {
    pub real: Option<usize>,
    pub epochs: Option<usize>,
    pub temperature: Option<f64>,
}

// Total: the run file's check refuses NaN temperatures.
impl Eq for SourceQuality {}

impl SourceQuality {
    /// The part of a source's directory name that tells its quality apart ("" for the paper's
    /// source, so that such runs keep their layout).
    pub fn label(&self) -> String {
        let mut parts = Vec::new();
        if let Some(r) = self.real {
            parts.push(format!("real-{r}"));
        }
        if let Some(e) = self.epochs {
            parts.push(format!("epochs-{e}"));
        }
        if let Some(t) = self.temperature {
            parts.push(format!("temperature-{t}"));
        }
        parts.join("-")
    }
}

impl Default for ValueConfig {
    fn default() -> Self {
        ValueConfig {
            num_real: vec![0, 256, 1024],
            num_synthetic: vec![0, 256, 1024],
            sources: vec![0],
            source_real: None,
            source_epochs: None,
            source_temperature: None,
            seeds: vec![0],
            pick: "first".into(),
        }
    }
}

impl ValueConfig {
    /// Every combination of the source-quality keys, in the order real × epochs × temperature.
    pub fn qualities(&self) -> Vec<SourceQuality> {
        fn axis<T: Copy>(v: &Option<OneOrMany<T>>) -> Vec<Option<T>> {
            v.as_ref().map_or(vec![None], |v| v.values().into_iter().map(Some).collect())
        }
        let mut out = Vec::new();
        for real in axis(&self.source_real) {
            for epochs in axis(&self.source_epochs) {
                for temperature in axis(&self.source_temperature) {
                    out.push(SourceQuality { real, epochs, temperature });
                }
            }
        }
        out
    }

    fn check(&self, sampled: usize) -> std::result::Result<(), String> {
        for (key, list) in [("value.num_real", &self.num_real), ("value.num_synthetic", &self.num_synthetic)] {
            if list.is_empty() {
                return Err(format!("{key}: name at least one size"));
            }
        }
        for (key, list) in [("value.sources", &self.sources), ("value.seeds", &self.seeds)] {
            if list.is_empty() {
                return Err(format!("{key}: name at least one"));
            }
        }
        if !["first", "random"].contains(&self.pick.as_str()) {
            return Err(format!("value.pick: `{}` is not first or random", self.pick));
        }
        let most = self.num_synthetic.iter().max().copied().unwrap_or(0);
        if most > sampled {
            return Err(format!(
                "value.num_synthetic: {most} is more than the {sampled} rows each source samples (sampling.count)"
            ));
        }
        // (key, values, smallest allowed): rows and epochs at least 1; temperature 0 is greedy.
        let lists = [
            (
                "value.source_real",
                self.source_real.as_ref().map(|v| v.values().iter().map(|&x| x as f64).collect()),
                1.0,
            ),
            (
                "value.source_epochs",
                self.source_epochs.as_ref().map(|v| v.values().iter().map(|&x| x as f64).collect()),
                1.0,
            ),
            ("value.source_temperature", self.source_temperature.as_ref().map(|v| v.values()), 0.0),
        ];
        for (key, values, least) in lists {
            let Some(values): Option<Vec<f64>> = values else { continue };
            if values.is_empty() {
                return Err(format!("{key}: name at least one value, or leave the key out for its default"));
            }
            if let Some(bad) = values.iter().find(|&&v| !(v >= least && v.is_finite())) {
                return Err(format!("{key}: {bad} is out of range (at least {least})"));
            }
            let mut sorted = values.clone();
            sorted.sort_by(f64::total_cmp);
            if let Some(w) = sorted.windows(2).find(|w| w[0] == w[1]) {
                return Err(format!("{key}: {} is listed twice", w[0]));
            }
        }
        Ok(())
    }
}

/// Sampling settings (`thrive sample --help`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SamplingConfig {
    /// `unconditional` (the paper) or `prompted`.
    pub mode: String,
    /// Accepted rows per generation (the paper: 12531), or per source of the value grid (the
    /// paper: 200,000).
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

impl RunFile {
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
        let cfg: RunFile =
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
        if Path::new(&self.model).is_relative() && (local.is_dir() || local.is_file()) {
            self.model = local.display().to_string();
        }
    }

    /// The configuration as its run directory `root` records it (run.json): `out` as `.`, and the
    /// model and data relative to `root` (a Hub id as written), so that the record is the same
    /// wherever the run was started and still holds once the run is moved with its model.
    pub fn recorded(mut self, root: &Path) -> Self {
        use thrive_core::fsutil::{recorded_model, relative_to};
        self.model = recorded_model(&self.model, root);
        if let Some(p) = self.data.helpsteer2.as_mut() {
            *p = PathBuf::from(relative_to(p, root));
        }
        self.out = PathBuf::from(".");
        self
    }

    /// The same configuration with the generation loop's defaults written out (a file without
    /// `[run]` means them), for comparing configurations.
    pub fn normalized(mut self) -> Self {
        if self.value.is_none() && self.run.is_none() {
            self.run = Some(LoopConfig::default());
        }
        // Where it runs does not change what it computes.
        self.slurm = None;
        self
    }

    /// The generation loop's settings (defaults where the file has no `[run]`).
    pub fn generation_loop(&self) -> LoopConfig {
        self.run.clone().unwrap_or_default()
    }

    /// The workflows, parsed (none for a value-of-synthetic grid).
    pub fn workflows(&self) -> Vec<Workflow> {
        if self.value.is_some() {
            return Vec::new();
        }
        self.generation_loop().workflows.iter().filter_map(|w| w.parse().ok()).collect()
    }

    fn check(&self) -> std::result::Result<(), String> {
        match (&self.run, &self.value) {
            (Some(_), Some(_)) => {
                return Err("run and value: a run file is either a generation loop ([run]) or a value-of-synthetic \
                            grid ([value]), not both"
                    .into())
            }
            (_, Some(v)) => v.check(self.sampling.count)?,
            (_, None) => {
                let run = self.generation_loop();
                for w in &run.workflows {
                    w.parse::<Workflow>().map_err(|e| format!("run.workflows: {e}"))?;
                }
                if run.workflows.is_empty() {
                    return Err("run.workflows: name at least one workflow".into());
                }
                if run.generations == 0 {
                    return Err("run.generations: must be at least 1".into());
                }
                if run.chains.is_empty() {
                    return Err("run.chains: name at least one chain seed".into());
                }
            }
        }
        match (&self.data.helpsteer2, &self.data.hub) {
            (Some(_), Some(_)) => return Err("data: give helpsteer2 or hub, not both".into()),
            (None, None) => return Err("data: give helpsteer2 = \"FOLDER\" or hub = \"nvidia/HelpSteer2\"".into()),
            _ => {}
        }
        if !["auto", "cpu", "cuda"].contains(&self.device.as_str()) {
            return Err(format!("device: `{}` is not auto, cpu or cuda", self.device));
        }
        self.hyperparams(0, 1)?;
        self.sampler_settings()?;
        if !["unconditional", "prompted"].contains(&self.sampling.mode.as_str()) {
            return Err(format!("sampling.mode: `{}` is not unconditional or prompted", self.sampling.mode));
        }
        if self.sampling.count == 0 {
            return Err("sampling.count: must be positive".into());
        }
        Ok(())
    }

    /// The fine-tuning configuration of (seed, generation).
    pub fn hyperparams(&self, seed: u64, generation: u32) -> std::result::Result<Hyperparams, String> {
        self.sft.hyperparams(seed, generation).map_err(|e| format!("sft.{}: {}", e.field, e.message))
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
