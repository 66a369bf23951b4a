//! The work of each step: fine-tune, sample, evaluate the base model, import the real data, and
//! the results table gathered from every finished model.

use crate::error::io;
use crate::layout::{model_dir, read_done, write_json, ModelDone, RunDir, SampleDone, SAMPLE_DONE};
use crate::plan::{plan, Step};
use crate::run_file::RunFile;
use crate::{Error, Result};
use candle_core::Device;
use std::path::{Path, PathBuf};
use thrive_core::fsutil::{recorded_model, relative_to};
use thrive_core::results::{Params, ResultsTable, RunRecord};
use thrive_core::{Seeds, Stream};
use thrive_pool::{BatchKey, ColumnMapping, HubSource, Pick, Pool, PoolWriter, TokenCounter, View};
use thrive_sampler::{file_sha256, synthesize, Mode, Origin};
use thrive_sft::{evaluate, train, Example, Gemma, Precision, RunControl, TextEncoder};

/// The results' metric columns, one row per (workflow, chain, generation).
pub const METRICS: [&str; 5] = ["eval_loss", "eval_loss_before", "train_loss", "train_examples", "synthetic_fraction"];

/// Does one step's work. The caller has checked, holding the step's lock, that it is not done;
/// `pool` is the run's pool as it opened it then.
pub(crate) fn perform(ctx: &Context<'_>, step: Step, pool: Pool) -> Result<()> {
    let (cfg, dir) = (ctx.cfg, ctx.dir);
    let base_dir = ctx.base_dir;
    let tokenizer_path = ctx.tokenizer_path;
    match step {
        Step::Train { workflow, chain, generation } => {
            let rows = pool.view(&View::training(workflow, chain, generation))?.examples()?;
            // The paper fine-tunes every generation from the base model; optionally from the previous one.
            let from = if ctx.continues(generation) {
                dir.model(workflow, chain, generation - 1).join("merged")
            } else {
                base_dir.clone()
            };
            ctx.fit(step, rows, &from, (chain, generation), cfg.generation_loop().continue_from_previous)?;
        }
        Step::TrainSource { source } => {
            let mut rows = pool.read_batch(&BatchKey::real("train"))?;
            rows.truncate(source.quality.real.unwrap_or(usize::MAX));
            ctx.fit(step, rows, base_dir, (source.seed, 1), false)?;
        }
        Step::Cell { num_real: 0, num_synthetic: 0, .. } => ctx.evaluate_base(step)?,
        Step::Cell { num_real, num_synthetic, source, seed } => {
            let v = cfg.value.as_ref().expect("cells only in value grids");
            let pick = if v.pick == "random" { Pick::Random { seed } } else { Pick::First };
            let rows = match source {
                Some(s) => {
                    let view = View::Mix { num_real, num_synthetic, synthetic: s.batch(), pick, filter: None };
                    pool.view(&view)?.examples()?
                }
                None => first_real(&pool, num_real, pick)?,
            };
            ctx.fit(step, rows, base_dir, (seed, 1), false)?;
        }
        Step::Sample { workflow, chain, generation } => {
            drop(pool);
            let from = if ctx.continues(generation) {
                dir.model(workflow, chain, generation - 1).join("merged")
            } else {
                base_dir.clone()
            };
            let target = Target {
                key: BatchKey::synthetic(workflow, chain, generation),
                call_seed: Seeds::new(chain).derive_u64(Stream::Synthesize(generation)),
                temperature: cfg.sampling.temperature,
            };
            ctx.sample(&dir.model(workflow, chain, generation), &from, target, tokenizer_path)?;
        }
        Step::SampleSource { source } => {
            drop(pool);
            // Every quality of a seed samples with the same random stream (common random
            // numbers: the sources differ by their quality alone).
            let call = Seeds::new(source.seed).derive_u64(Stream::Synthesize(1));
            let target = Target {
                key: source.batch(),
                call_seed: call,
                temperature: source.quality.temperature.unwrap_or(cfg.sampling.temperature),
            };
            ctx.sample(&dir.source_model(source), base_dir, target, tokenizer_path)?;
        }
    }
    Ok(())
}

/// Pool rows as fine-tuning examples (text only; provenance stays in the pool).
pub fn to_sft(rows: Vec<thrive_pool::Example>) -> Vec<Example> {
    rows.into_iter().map(|e| Example { prompt: e.prompt, response: e.response }).collect()
}

/// Imports the real train and validation splits, each once.
pub(crate) fn import_real(cfg: &RunFile, dir: &RunDir, tokenizer: &Path) -> Result<()> {
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
        match writer.write_batch(&BatchKey::real(split), &rows) {
            Ok(_) => tracing::info!("imported {} {split} rows from {}", rows.len(), file.display()),
            // Another job of the run imported it first (the same rows).
            Err(_) if Pool::open(dir.pool())?.contains(&BatchKey::real(split)) => {}
            Err(e) => return Err(e.into()),
        }
    }
    Ok(())
}

/// A step's label for the progress bar.
pub(crate) fn describe(step: Step) -> String {
    match step {
        Step::Train { workflow, chain, generation } => {
            format!("{workflow} chain {chain}: training generation {generation}")
        }
        Step::Sample { workflow, chain, generation } => {
            format!("{workflow} chain {chain}: sampling from generation {generation}")
        }
        Step::TrainSource { source } => format!("value grid: training source {source}"),
        Step::SampleSource { source } => format!("value grid: sampling source {source}"),
        Step::Cell { num_real, num_synthetic, source, seed } => {
            let source = source.map_or("-".into(), |s| s.to_string());
            format!("value grid: {num_real} real + {num_synthetic} synthetic (source {source}, seed {seed})")
        }
    }
}

/// The first `n` real training rows, or `n` of them at random.
fn first_real(pool: &Pool, n: usize, pick: Pick) -> Result<Vec<thrive_pool::Example>> {
    let key = BatchKey::real("train");
    Ok(match pick {
        Pick::First => pool.read_batch(&key)?.into_iter().take(n).collect(),
        // The Mix view's random real rows with no synthetic ones.
        Pick::Random { .. } => {
            let view = View::Mix { num_real: n, num_synthetic: 0, synthetic: key, pick, filter: None };
            pool.view(&view)?.examples()?
        }
    })
}

/// Where a sampling step writes, and how it samples.
struct Target {
    key: BatchKey,
    call_seed: u64,
    temperature: f64,
}

/// What every step of a run shares.
pub(crate) struct Context<'a> {
    pub(crate) cfg: &'a RunFile,
    pub(crate) dir: &'a RunDir,
    pub(crate) base_dir: &'a PathBuf,
    pub(crate) tokenizer_path: &'a Path,
    pub(crate) enc: &'a TextEncoder,
    pub(crate) valid: &'a [Example],
    pub(crate) device: &'a Device,
    pub(crate) dtype: Precision,
    pub(crate) multi: &'a indicatif::MultiProgress,
}

impl Context<'_> {
    /// Whether generation `generation` starts from the previous generation's model.
    fn continues(&self, generation: u32) -> bool {
        self.cfg.generation_loop().continue_from_previous && generation > 1 && self.cfg.value.is_none()
    }

    /// Fine-tunes the model in `from` on `rows` with seed and generation `(seed, generation)`,
    /// evaluates it and writes `done.json` into the step's directory. Value-grid cells keep only
    /// their metrics, not their weights.
    fn fit(
        &self,
        step: Step,
        rows: Vec<thrive_pool::Example>,
        from: &Path,
        (seed, generation): (u64, u32),
        export_merged: bool,
    ) -> Result<()> {
        let out = model_dir(self.dir, step).expect("a model step");
        let started = std::time::Instant::now();
        let synthetic = rows.iter().filter(|r| r.source() == "synthetic").count();
        let train_set = to_sft(rows);
        if train_set.is_empty() {
            return Err(Error::Invalid(format!("{}: empty training set", describe(step))));
        }
        let mut train_cfg = self.cfg.hyperparams(seed, generation).map_err(Error::Invalid)?;
        if let Step::TrainSource { source } = step {
            train_cfg.epochs = source.quality.epochs.unwrap_or(train_cfg.epochs);
        }
        let mut model = match train_cfg.mode {
            thrive_sft::Mode::Full => Gemma::load_full(from, self.dtype, self.device)?,
            thrive_sft::Mode::Lora(_) => Gemma::load(from, self.dtype, self.device)?,
        };
        let resume = std::fs::read_dir(&out)
            .map(|d| d.flatten().any(|e| e.file_name().to_string_lossy().starts_with("checkpoint-")))
            .unwrap_or(false);
        let cell = matches!(step, Step::Cell { .. });
        let control = RunControl {
            resume,
            stop_after: None,
            export_merged,
            skip_export: cell,
            progress: Some(self.multi.clone()),
        };
        let outcome = train(&mut model, self.enc, (&train_set, self.valid), &train_cfg, &out, control)?;
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
        if cell {
            // A finished cell needs no checkpoint to resume from.
            for entry in std::fs::read_dir(&out).map_err(io(&out))?.flatten() {
                if entry.file_name().to_string_lossy().starts_with("checkpoint-") {
                    std::fs::remove_dir_all(entry.path()).map_err(io(&entry.path()))?;
                }
            }
        }
        tracing::info!(step = %describe(step), eval_loss = last, "trained");
        Ok(())
    }

    /// The value grid's empty cell: the base model's validation loss.
    fn evaluate_base(&self, step: Step) -> Result<()> {
        let out = model_dir(self.dir, step).expect("a model step");
        std::fs::create_dir_all(&out).map_err(io(&out))?;
        let started = std::time::Instant::now();
        let model = Gemma::load(self.base_dir, self.dtype, self.device)?;
        let train_cfg = self.cfg.hyperparams(0, 1).map_err(Error::Invalid)?;
        let (valid, _) = self.enc.encode_all(self.valid, train_cfg.max_len, train_cfg.response_only)?;
        let loss = evaluate(&model, self.enc, &valid, train_cfg.micro_batch)?;
        let done = ModelDone {
            eval_loss: loss,
            eval_loss_before: loss,
            train_loss: f64::NAN,
            train_examples: 0,
            synthetic_examples: 0,
            steps: 0,
            seconds: started.elapsed().as_secs_f64(),
        };
        write_json(&out.join("done.json"), &done)
    }

    /// Samples `sampling.count` rows from the model trained in `model_dir` (on top of `base`)
    /// into the pool batch `target.key`.
    fn sample(&self, model_dir: &Path, base: &Path, target: Target, tokenizer: &Path) -> Result<()> {
        let started = std::time::Instant::now();
        let BatchKey::Synthetic { workflow: name, chain, generation } = target.key.clone() else {
            unreachable!("sampling writes synthetic batches")
        };
        let cfg = self.cfg;
        let lora = match cfg.hyperparams(0, 1).map_err(Error::Invalid)?.mode {
            thrive_sft::Mode::Lora(l) => Some(l),
            thrive_sft::Mode::Full => None,
        };
        let (mut model, weights_dir, weights) = match lora {
            Some(lora) => {
                let mut model = Gemma::load(base, self.dtype, self.device)?;
                let weights = model_dir.join("adapter/adapter_model.safetensors");
                model.add_lora(&lora, &mut Seeds::new(0).stream(Stream::Training(0)))?;
                model.load_lora_weights(&weights)?;
                (model, model_dir.join("adapter"), weights)
            }
            None => {
                let merged = model_dir.join("merged");
                (Gemma::load(&merged, self.dtype, self.device)?, merged.clone(), merged.join("model.safetensors"))
            }
        };
        model.pack_for_decoding()?;
        let mode = match cfg.sampling.mode.as_str() {
            "prompted" => {
                let pool = Pool::open(self.dir.pool())?;
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
            workflow: name.clone(),
            chain,
            generation,
            // Relative to the pool, so that pools of one job started in two places are the same.
            base_model: recorded_model(&cfg.model, &self.dir.pool()),
            adapter_path: Some(relative_to(&weights_dir, &self.dir.pool())),
            adapter_sha256: Some(file_sha256(&weights)?),
            call_seed: target.call_seed,
        };
        let mut settings = cfg.sampler_settings().map_err(Error::Invalid)?;
        settings.temperature = target.temperature;
        let mut out = synthesize(&model, self.enc, &mode, cfg.sampling.count, &settings, &origin, Some(self.multi))?;
        TokenCounter::from_file(tokenizer)?.annotate(&mut out.rows)?;
        PoolWriter::open(self.dir.pool())?.write_batch(&target.key, &out.rows)?;
        // The step's time, for `thrive status`'s ETA (beside the pool: pools hold no timings).
        let timing = SampleDone { rows: out.rows.len(), seconds: started.elapsed().as_secs_f64() };
        write_json(&model_dir.join(SAMPLE_DONE), &timing)?;
        tracing::info!(kind = name, chain, generation, rows = out.rows.len(), rejections = ?out.rejections, "sampled");
        Ok(())
    }
}

/// The results of every finished model, as a tidy table: for the generation loop setting `lm`,
/// one run per workflow and chain with its generations in order up to the first unfinished one;
/// for the value grid setting `lm-value`, one row per finished cell (no workflow; `source` is -1
/// for cells without synthetic rows).
pub fn results(cfg: &RunFile, dir: &RunDir) -> Result<ResultsTable> {
    let metrics_of = |d: ModelDone| {
        [
            d.eval_loss,
            d.eval_loss_before,
            d.train_loss,
            d.train_examples as f64,
            d.synthetic_examples as f64 / d.train_examples.max(1) as f64,
        ]
    };
    let mode = if cfg.sft.full { "full" } else { "lora" };
    // Relative to the run directory (a Hub id as written): the same results wherever it ran.
    let model = recorded_model(&cfg.model, &dir.root);
    if cfg.value.is_some() {
        // A source's real rows when the run file leaves source_real to its default: all of them.
        let train_rows = match Pool::open(dir.pool()) {
            Ok(pool) if pool.contains(&BatchKey::real("train")) => pool.entry(&BatchKey::real("train"))?.rows as i64,
            _ => -1,
        };
        let mut table = ResultsTable::new("lm-value", METRICS.iter().map(|m| m.to_string()).collect());
        for step in plan(cfg) {
            let Step::Cell { num_real, num_synthetic, source, seed } = step else { continue };
            let path = dir.cell(num_real, num_synthetic, source, seed).join("done.json");
            if !path.exists() {
                continue;
            }
            let params = Params::new()
                .with("model", model.as_str())
                .with("mode", mode)
                .with("num_real", num_real)
                .with("num_synthetic", num_synthetic)
                .with("source", source.map_or(-1, |s| s.seed as i64))
                // The source's quality; -1 (NaN) for cells without synthetic rows.
                .with("source_real", source.map_or(-1, |s| s.quality.real.map_or(train_rows, |r| r as i64)))
                .with("source_epochs", source.map_or(-1, |s| s.quality.epochs.unwrap_or(cfg.sft.epochs) as i64))
                .with(
                    "source_temperature",
                    source.map_or(f64::NAN, |s| s.quality.temperature.unwrap_or(cfg.sampling.temperature)),
                );
            table.push(RunRecord { params, workflow: None, seed, metrics: metrics_of(read_done(&path)?).to_vec() })?;
        }
        return Ok(table);
    }
    let run = cfg.generation_loop();
    let mut table = ResultsTable::new("lm", METRICS.iter().map(|m| m.to_string()).collect());
    for &chain in &run.chains {
        for workflow in cfg.workflows() {
            let mut metrics = Vec::new();
            for generation in 1..=run.generations {
                let path = dir.model(workflow, chain, generation).join("done.json");
                if !path.exists() {
                    break;
                }
                metrics.extend(metrics_of(read_done(&path)?));
            }
            if metrics.is_empty() {
                continue;
            }
            let params =
                Params::new().with("model", model.as_str()).with("n", cfg.sampling.count as i64).with("mode", mode);
            table.push(RunRecord { params, workflow: Some(workflow), seed: chain, metrics })?;
        }
    }
    Ok(table)
}
