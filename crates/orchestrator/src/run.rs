//! The generation loop of an LM run: for every chain and workflow, generation t fine-tunes on
//! its workflow's view of the pool, is evaluated on the real validation split, and (unless it is
//! the last) samples generation t's synthetic batch into the pool.
//!
//! Every step is idempotent and leaves either nothing or a complete artifact: a model directory
//! is complete once its `done.json` exists (written last, atomically; training in between resumes
//! from its newest checkpoint), a synthetic batch once the pool's manifest lists it. Running the
//! same configuration again therefore continues where a killed run stopped and ends with the
//! same results as an uninterrupted run.

use crate::config::RunConfig;
use crate::error::io;
use crate::{Error, Result};
use candle_core::{DType, Device};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use thrive_core::results::{Params, ResultsTable, RunRecord};
use thrive_core::{Seeds, Stream, Workflow};
use thrive_pool::{BatchKey, ColumnMapping, HubSource, Pool, PoolWriter, TokenCounter, View};
use thrive_sampler::{file_sha256, synthesize, Mode, Origin};
use thrive_sft::{resolve_model_dir, train, Example, Gemma2, LoraConfig, RunControl, TextEncoder};

/// The results' metric columns, one row per (workflow, chain, generation).
pub const METRICS: [&str; 5] = ["eval_loss", "eval_loss_before", "train_loss", "train_examples", "synthetic_fraction"];

/// What a finished model step recorded (`done.json`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModelDone {
    pub eval_loss: f64,
    pub eval_loss_before: f64,
    pub train_loss: f64,
    pub train_examples: usize,
    pub synthetic_examples: usize,
    pub steps: usize,
    pub seconds: f64,
}

/// One unit of work.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    Train { workflow: Workflow, chain: u64, generation: u32 },
    Sample { workflow: Workflow, chain: u64, generation: u32 },
}

/// A run directory's layout.
pub struct RunDir {
    pub root: PathBuf,
}

impl RunDir {
    pub fn pool(&self) -> PathBuf {
        self.root.join("pool")
    }
    pub fn model(&self, workflow: Workflow, chain: u64, generation: u32) -> PathBuf {
        self.root
            .join("models")
            .join(workflow.name())
            .join(format!("chain-{chain}"))
            .join(format!("gen-{generation:04}"))
    }
    pub fn results(&self) -> PathBuf {
        self.root.join("results.parquet")
    }
    pub fn config(&self) -> PathBuf {
        self.root.join("run.json")
    }
}

/// Every step of a run in order.
pub fn plan(cfg: &RunConfig) -> Vec<Step> {
    let mut steps = Vec::new();
    for &chain in &cfg.run.chains {
        for workflow in cfg.workflows() {
            for generation in 1..=cfg.run.generations {
                steps.push(Step::Train { workflow, chain, generation });
                if generation < cfg.run.generations {
                    steps.push(Step::Sample { workflow, chain, generation });
                }
            }
        }
    }
    steps
}

/// Whether a step's artifact is complete.
pub fn is_done(dir: &RunDir, pool: Option<&Pool>, step: Step) -> bool {
    match step {
        Step::Train { workflow, chain, generation } => {
            dir.model(workflow, chain, generation).join("done.json").exists()
        }
        Step::Sample { workflow, chain, generation } => {
            pool.is_some_and(|p| p.contains(&BatchKey::synthetic(workflow, chain, generation)))
        }
    }
}

fn read_done(path: &Path) -> Result<ModelDone> {
    let text = std::fs::read_to_string(path).map_err(io(path))?;
    serde_json::from_str(&text).map_err(|e| Error::Invalid(format!("{}: {e}", path.display())))
}

fn write_json<T: Serialize>(path: &Path, value: &T) -> Result<()> {
    let text = serde_json::to_string_pretty(value).map_err(|e| Error::Invalid(e.to_string()))?;
    thrive_core::fsutil::write_atomic(path, |w| {
        std::io::Write::write_all(w, text.as_bytes())
            .map_err(|e| thrive_core::Error::Io { path: path.into(), source: e })
    })?;
    Ok(())
}

/// Keeps a second process off the run directory; removed on drop. A lock whose process is gone
/// is taken over.
struct RunLock(PathBuf);

impl RunLock {
    fn take(root: &Path) -> Result<RunLock> {
        let path = root.join("run.lock");
        if let Ok(pid) = std::fs::read_to_string(&path) {
            let pid = pid.trim();
            if Path::new("/proc").join(pid).exists() && pid != std::process::id().to_string() {
                return Err(Error::Invalid(format!(
                    "{}: process {pid} is running this run (remove the file if it is not)",
                    path.display()
                )));
            }
        }
        std::fs::write(&path, std::process::id().to_string()).map_err(io(&path))?;
        Ok(RunLock(path))
    }
}

impl Drop for RunLock {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// Runs (or continues) a whole run; returns the results table.
pub fn run(cfg: &RunConfig) -> Result<ResultsTable> {
    let dir = RunDir { root: cfg.out.clone() };
    std::fs::create_dir_all(&dir.root).map_err(io(&dir.root))?;
    let _lock = RunLock::take(&dir.root)?;
    // The configuration a run directory was started with is the only one it continues with.
    let recorded = dir.config();
    if recorded.exists() {
        let text = std::fs::read_to_string(&recorded).map_err(io(&recorded))?;
        let before: RunConfig =
            serde_json::from_str(&text).map_err(|e| Error::Invalid(format!("{}: {e}", recorded.display())))?;
        if before != *cfg {
            return Err(Error::Invalid(format!(
                "{} was started with another configuration ({}); use a new `out` to change settings",
                dir.root.display(),
                recorded.display()
            )));
        }
    } else {
        write_json(&recorded, cfg)?;
    }

    let (device, dtype) = thrive_sft::device_for(&cfg.device)?;
    let base_dir = resolve_model_dir(&cfg.model)?;
    let tokenizer_path = base_dir.join("tokenizer.json");
    let enc = TextEncoder::from_file(&tokenizer_path)?;
    import_real(cfg, &dir, &tokenizer_path)?;
    let valid: Vec<Example> = to_sft(Pool::open(dir.pool())?.read_batch(&BatchKey::real("validation"))?);

    let steps = plan(cfg);
    let multi = indicatif::MultiProgress::new();
    let bar = multi.add(indicatif::ProgressBar::new(steps.len() as u64));
    bar.set_style(
        indicatif::ProgressStyle::with_template("run {bar:30} {pos}/{len} steps {msg} [{elapsed} / eta {eta}]")
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    for step in steps {
        let pool = Pool::open(dir.pool())?;
        if is_done(&dir, Some(&pool), step) {
            bar.inc(1);
            continue;
        }
        match step {
            Step::Train { workflow, chain, generation } => {
                bar.set_message(format!("{workflow} chain {chain}: training generation {generation}"));
                train_step(cfg, &dir, &pool, &base_dir, &enc, &valid, (&device, dtype), step, &multi)?;
            }
            Step::Sample { workflow, chain, generation } => {
                bar.set_message(format!("{workflow} chain {chain}: sampling from generation {generation}"));
                drop(pool);
                sample_step(cfg, &dir, &base_dir, &enc, &tokenizer_path, (&device, dtype), step, &multi)?;
            }
        }
        bar.inc(1);
        // Results so far, so that `thrive report` works on a run in progress.
        let table = results(cfg, &dir)?;
        if !table.runs.is_empty() {
            table.write_parquet(&dir.results())?;
        }
    }
    bar.finish_and_clear();
    let table = results(cfg, &dir)?;
    table.write_parquet(&dir.results())?;
    Ok(table)
}

fn to_sft(rows: Vec<thrive_pool::Example>) -> Vec<Example> {
    rows.into_iter().map(|e| Example { prompt: e.prompt, response: e.response }).collect()
}

/// Imports the real train and validation splits, each once.
fn import_real(cfg: &RunConfig, dir: &RunDir, tokenizer: &Path) -> Result<()> {
    let missing: Vec<&str> = {
        let pool = if dir.pool().join("pool.json").exists() { Some(Pool::open(dir.pool())?) } else { None };
        ["train", "validation"]
            .into_iter()
            .filter(|s| !pool.as_ref().is_some_and(|p| p.contains(&BatchKey::real(s))))
            .collect()
    };
    if missing.is_empty() {
        return Ok(());
    }
    let source = match (&cfg.data.helpsteer2, &cfg.data.hub) {
        (Some(folder), _) => HubSource::Local(folder.clone()),
        (None, Some(repo)) => HubSource::Hub { repo: repo.clone() },
        (None, None) => return Err(Error::Invalid("data: no source".into())),
    };
    let counter = TokenCounter::from_file(tokenizer)?;
    let mut writer = PoolWriter::open(dir.pool())?;
    for split in missing {
        let file = source.split_file(split)?;
        let mut rows = thrive_pool::import_file(&file, &ColumnMapping::default(), "helpsteer2", split)?;
        counter.annotate(&mut rows)?;
        writer.write_batch(&BatchKey::real(split), &rows)?;
        tracing::info!("imported {} {split} rows from {}", rows.len(), file.display());
    }
    Ok(())
}

#[allow(clippy::too_many_arguments)]
fn train_step(
    cfg: &RunConfig,
    dir: &RunDir,
    pool: &Pool,
    base_dir: &Path,
    enc: &TextEncoder,
    valid: &[Example],
    (device, dtype): (&Device, DType),
    step: Step,
    multi: &indicatif::MultiProgress,
) -> Result<()> {
    let Step::Train { workflow, chain, generation } = step else { unreachable!() };
    let out = dir.model(workflow, chain, generation);
    let started = std::time::Instant::now();
    let rows = pool.view(&View::training(workflow, chain, generation))?.examples()?;
    let synthetic = rows.iter().filter(|r| r.source() == "synthetic").count();
    let train_set = to_sft(rows);
    if train_set.is_empty() {
        return Err(Error::Invalid(format!("{workflow} chain {chain} generation {generation}: empty training set")));
    }
    // The paper fine-tunes every generation from the base model; optionally from the previous one.
    let from = if cfg.run.continue_from_previous && generation > 1 {
        dir.model(workflow, chain, generation - 1).join("merged")
    } else {
        base_dir.to_path_buf()
    };
    let mut model = Gemma2::load(&from, dtype, device)?;
    let train_cfg = cfg.train_config(chain, generation).map_err(Error::Invalid)?;
    let resume = std::fs::read_dir(&out)
        .map(|d| d.flatten().any(|e| e.file_name().to_string_lossy().starts_with("checkpoint-")))
        .unwrap_or(false);
    let control = RunControl {
        resume,
        stop_after: None,
        export_merged: cfg.run.continue_from_previous,
        progress: Some(multi.clone()),
    };
    let outcome = train(&mut model, enc, (&train_set, valid), &train_cfg, &out, control)?;
    let first = outcome.metrics.iter().find_map(|m| m.eval_loss).unwrap_or(f64::NAN);
    let last = outcome.metrics.iter().rev().find_map(|m| m.eval_loss).unwrap_or(f64::NAN);
    let train_loss = outcome.metrics.iter().rev().find_map(|m| m.train_loss).unwrap_or(f64::NAN);
    let done = ModelDone {
        eval_loss: last,
        eval_loss_before: first,
        train_loss,
        train_examples: train_set.len() - outcome.dropped_train,
        synthetic_examples: synthetic,
        steps: outcome.total_steps,
        seconds: started.elapsed().as_secs_f64(),
    };
    write_json(&out.join("done.json"), &done)?;
    tracing::info!(%workflow, chain, generation, eval_loss = last, "trained");
    Ok(())
}

/// The LoRA settings an adapter was trained with (from the run's configuration).
fn lora_of(cfg: &RunConfig) -> Option<LoraConfig> {
    match cfg.train_config(0, 1).ok()?.mode {
        thrive_sft::Mode::Lora(l) => Some(l),
        thrive_sft::Mode::Full => None,
    }
}

#[allow(clippy::too_many_arguments)]
fn sample_step(
    cfg: &RunConfig,
    dir: &RunDir,
    base_dir: &Path,
    enc: &TextEncoder,
    tokenizer: &Path,
    (device, dtype): (&Device, DType),
    step: Step,
    multi: &indicatif::MultiProgress,
) -> Result<()> {
    let Step::Sample { workflow, chain, generation } = step else { unreachable!() };
    let model_dir = dir.model(workflow, chain, generation);
    let (mut model, adapter_path, adapter_sha256) = match lora_of(cfg) {
        Some(lora) => {
            let base = if cfg.run.continue_from_previous && generation > 1 {
                dir.model(workflow, chain, generation - 1).join("merged")
            } else {
                base_dir.to_path_buf()
            };
            let mut model = Gemma2::load(&base, dtype, device)?;
            let weights = model_dir.join("adapter/adapter_model.safetensors");
            model.add_lora(&lora, &mut Seeds::new(0).stream(Stream::Training(0)))?;
            model.load_lora_weights(&weights)?;
            let sha = file_sha256(&weights)?;
            (model, Some(model_dir.join("adapter").display().to_string()), Some(sha))
        }
        None => {
            let weights = model_dir.join("merged/model.safetensors");
            let sha = file_sha256(&weights)?;
            (
                Gemma2::load(&model_dir.join("merged"), dtype, device)?,
                Some(model_dir.join("merged").display().to_string()),
                Some(sha),
            )
        }
    };
    model.merge_lora()?;
    let mode = match cfg.sampling.mode.as_str() {
        "prompted" => {
            let pool = Pool::open(dir.pool())?;
            Mode::Prompted {
                prompts: pool.read_batch(&BatchKey::real("train"))?.into_iter().map(|e| e.prompt).collect(),
            }
        }
        _ => Mode::Unconditional {
            strip_quirk: cfg.sampling.strip_quirk,
            max_attempts: cfg.sampling.max_attempts.unwrap_or(4 * cfg.sampling.count as u64 + 4096),
        },
    };
    let origin = Origin {
        workflow,
        chain,
        generation,
        base_model: cfg.model.clone(),
        adapter_path,
        adapter_sha256,
        call_seed: Seeds::new(chain).derive_u64(Stream::Synthesize(generation)),
    };
    let settings = cfg.sampler_settings().map_err(Error::Invalid)?;
    let mut out = synthesize(&model, enc, &mode, cfg.sampling.count, &settings, &origin, Some(multi))?;
    TokenCounter::from_file(tokenizer)?.annotate(&mut out.rows)?;
    PoolWriter::open(dir.pool())?.write_batch(&BatchKey::synthetic(workflow, chain, generation), &out.rows)?;
    tracing::info!(%workflow, chain, generation, rows = out.rows.len(), rejections = ?out.rejections, "sampled");
    Ok(())
}

/// The results of every finished model, as a tidy table (setting `lm`; one run per workflow and
/// chain, its generations in order up to the first unfinished one).
pub fn results(cfg: &RunConfig, dir: &RunDir) -> Result<ResultsTable> {
    let mut table = ResultsTable::new("lm", METRICS.iter().map(|m| m.to_string()).collect());
    for &chain in &cfg.run.chains {
        for workflow in cfg.workflows() {
            let mut metrics = Vec::new();
            for generation in 1..=cfg.run.generations {
                let path = dir.model(workflow, chain, generation).join("done.json");
                if !path.exists() {
                    break;
                }
                let d = read_done(&path)?;
                metrics.extend([
                    d.eval_loss,
                    d.eval_loss_before,
                    d.train_loss,
                    d.train_examples as f64,
                    d.synthetic_examples as f64 / d.train_examples.max(1) as f64,
                ]);
            }
            if metrics.is_empty() {
                continue;
            }
            let params = Params::new()
                .with("model", cfg.model.as_str())
                .with("n", cfg.sampling.count as i64)
                .with("mode", if cfg.sft.full { "full" } else { "lora" });
            table.push(RunRecord { params, workflow, seed: chain, metrics })?;
        }
    }
    Ok(table)
}
