//! The training loop of one generation: data order, gradient accumulation, AdamW with a
//! warm-up schedule, clipping, evaluation, checkpoints that resume bit for bit, and export.

use crate::data::{Example, TextEncoder, Tokenized};
use crate::hyperparams::{Hyperparams, Mode};
use crate::loss::{loss_and_grads, next_token_loss};
use crate::model::Gemma;
use crate::optim::{clip_grad_norm, AdamW, AdamWParams};
use crate::{Error, Result};
use candle_core::{Tensor, Var};
use rand::seq::SliceRandom;
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use thrive_core::tensorboard::EventWriter;
use thrive_core::{Seeds, Stream};

/// One row of the metrics table.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StepMetrics {
    /// Optimiser steps done (0: before training).
    pub step: usize,
    /// Target tokens trained on so far.
    pub tokens: u64,
    pub train_loss: Option<f64>,
    pub eval_loss: Option<f64>,
    pub lr: Option<f64>,
    pub grad_norm: Option<f64>,
}

/// What a run did.
#[derive(Debug, Clone)]
pub struct TrainOutcome {
    pub metrics: Vec<StepMetrics>,
    pub total_steps: usize,
    pub dropped_train: usize,
    pub dropped_valid: usize,
}

#[derive(Serialize, Deserialize)]
struct CheckpointState {
    step: usize,
    tokens: u64,
    /// The dropout stream's position (ChaCha word position, as a decimal string).
    rng_word_pos: String,
    metrics: Vec<StepMetrics>,
    config: Hyperparams,
}

/// The order of every sequence over all epochs (a fresh shuffle per epoch, from DataOrder(t)).
fn data_order(n: usize, cfg: &Hyperparams) -> Vec<usize> {
    let mut rng = Seeds::new(cfg.seed).stream(Stream::DataOrder(cfg.generation));
    let mut order = Vec::with_capacity(n * cfg.epochs);
    for _ in 0..cfg.epochs {
        let mut perm: Vec<usize> = (0..n).collect();
        perm.shuffle(&mut rng);
        order.extend(perm);
    }
    order
}

/// Token-mean cross-entropy of `data` (nats per target token); NaN for no data.
pub fn evaluate(model: &Gemma, enc: &TextEncoder, data: &[Tokenized], micro_batch: usize) -> Result<f64> {
    if data.is_empty() {
        return Ok(f64::NAN);
    }
    let (mut sum, mut count) = (0.0, 0usize);
    for chunk in data.chunks(micro_batch.max(1)) {
        let refs: Vec<&Tokenized> = chunk.iter().collect();
        let batch = enc.batch(&refs, model.device())?;
        let (loss, n) = next_token_loss(model, &batch, None)?;
        sum += loss.to_dtype(candle_core::DType::F64)?.to_scalar::<f64>()? * n as f64;
        count += n;
    }
    Ok(sum / count.max(1) as f64)
}

fn latest_checkpoint(out: &Path) -> Option<(usize, PathBuf)> {
    std::fs::read_dir(out)
        .ok()?
        .filter_map(|e| e.ok())
        .filter_map(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            let step = name.strip_prefix("checkpoint-")?.parse::<usize>().ok()?;
            e.path().join("state.json").exists().then(|| (step, e.path()))
        })
        .max_by_key(|(s, _)| *s)
}

fn io_err(path: &Path) -> impl Fn(std::io::Error) -> Error + '_ {
    move |e| Error::Io { path: path.into(), source: e }
}

fn save_tensors(map: &HashMap<String, Tensor>, path: &Path) -> Result<()> {
    let tmp = thrive_core::fsutil::temp_path(path);
    candle_core::safetensors::save(map, &tmp)?;
    std::fs::rename(&tmp, path).map_err(io_err(path))
}

/// Writes a checkpoint directory under a temporary name and renames it into place, so a crash
/// leaves either the previous checkpoint or the new one complete; then removes older ones.
fn write_checkpoint(out: &Path, names: &[String], opt: &AdamW, state: &CheckpointState) -> Result<()> {
    let dir = out.join(format!("checkpoint-{:06}", state.step));
    let tmp = out.join(format!(".checkpoint-{:06}.{}.tmp", state.step, std::process::id()));
    let _ = std::fs::remove_dir_all(&tmp);
    std::fs::create_dir_all(&tmp).map_err(io_err(&tmp))?;
    let result = (|| {
        let weights: HashMap<String, Tensor> =
            names.iter().zip(&opt.vars).map(|(n, v)| (n.clone(), v.as_tensor().clone())).collect();
        save_tensors(&weights, &tmp.join("trainable.safetensors"))?;
        let mut moments = HashMap::new();
        for (n, (m, v)) in names.iter().zip(&opt.moments) {
            moments.insert(format!("m.{n}"), m.clone());
            moments.insert(format!("v.{n}"), v.clone());
        }
        save_tensors(&moments, &tmp.join("optimizer.safetensors"))?;
        let json = serde_json::to_vec_pretty(state).map_err(|e| Error::Invalid(e.to_string()))?;
        let state_path = tmp.join("state.json");
        std::fs::write(&state_path, json).map_err(io_err(&state_path))?;
        if dir.exists() {
            std::fs::remove_dir_all(&dir).map_err(io_err(&dir))?;
        }
        std::fs::rename(&tmp, &dir).map_err(io_err(&dir))?;
        thrive_core::fsutil::sync_parent(&dir);
        Ok(())
    })();
    if result.is_err() {
        let _ = std::fs::remove_dir_all(&tmp);
        return result;
    }
    for entry in std::fs::read_dir(out).map_err(io_err(out))?.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if let Some(s) = name.strip_prefix("checkpoint-").and_then(|s| s.parse::<usize>().ok()) {
            if s < state.step {
                let _ = std::fs::remove_dir_all(entry.path());
            }
        }
    }
    Ok(())
}

fn load_checkpoint(dir: &Path, names: &[String], opt: &mut AdamW) -> Result<CheckpointState> {
    let device = opt.vars.first().map(|v| v.device().clone()).unwrap_or(candle_core::Device::Cpu);
    let state_path = dir.join("state.json");
    let text = std::fs::read_to_string(&state_path).map_err(io_err(&state_path))?;
    let state: CheckpointState = serde_json::from_str(&text)
        .map_err(|e| Error::bad_model(&state_path, format!("not a checkpoint state: {e}")))?;
    let wpath = dir.join("trainable.safetensors");
    let weights = candle_core::safetensors::load(&wpath, &device)
        .map_err(|e| Error::bad_model(&wpath, format!("not readable safetensors: {e}")))?;
    let mpath = dir.join("optimizer.safetensors");
    let moments = candle_core::safetensors::load(&mpath, &device)
        .map_err(|e| Error::bad_model(&mpath, format!("not readable safetensors: {e}")))?;
    let get = |map: &HashMap<String, Tensor>, path: &Path, key: &str, like: &Var| -> Result<Tensor> {
        let t = map.get(key).ok_or_else(|| Error::bad_model(path, format!("missing tensor `{key}`")))?;
        if t.dims() != like.dims() {
            return Err(Error::bad_model(
                path,
                format!("`{key}` has shape {:?}, expected {:?}", t.dims(), like.dims()),
            ));
        }
        Ok(t.clone())
    };
    for (i, n) in names.iter().enumerate() {
        let var = opt.vars[i].clone();
        var.set(&get(&weights, &wpath, n, &var)?)?;
        opt.moments[i] =
            (get(&moments, &mpath, &format!("m.{n}"), &var)?, get(&moments, &mpath, &format!("v.{n}"), &var)?);
    }
    opt.step = state.step as u64;
    Ok(state)
}

/// How a run starts and ends, besides its hyper-parameters.
#[derive(Debug, Clone, Default)]
pub struct RunControl {
    /// Continue from the latest checkpoint in the output directory.
    pub resume: bool,
    /// End the run after this many optimiser steps in all (for tests and preemption), leaving its
    /// checkpoint.
    pub stop_after: Option<usize>,
    /// Also write merged weights (`merged/`) at the end; the adapter is always written.
    pub export_merged: bool,
    /// Write no weights at the end, only the metrics (the value-of-synthetic grid needs only the
    /// loss of each of its many models).
    pub skip_export: bool,
    /// Draw the progress bar under this one (a multi-generation run's own bar).
    pub progress: Option<indicatif::MultiProgress>,
}

/// Trains `model` on `train`, evaluating on `valid`, writing checkpoints, metrics
/// (`metrics.parquet`) and the export into `out`.
pub fn train(
    model: &mut Gemma,
    enc: &TextEncoder,
    (train, valid): (&[Example], &[Example]),
    cfg: &Hyperparams,
    out: &Path,
    control: RunControl,
) -> Result<TrainOutcome> {
    let RunControl { resume, stop_after, export_merged, skip_export, progress } = control;
    if cfg.sequences_per_step == 0 || cfg.micro_batch == 0 || cfg.epochs == 0 {
        return Err(Error::Invalid("sequences per step, micro-batch and epochs must be positive".into()));
    }
    if train.is_empty() {
        return Err(Error::Invalid("the training set is empty".into()));
    }
    let (train_tok, dropped_train) = enc.encode_all(train, cfg.max_len, cfg.response_only)?;
    let (valid_tok, dropped_valid) = enc.encode_all(valid, cfg.max_len, cfg.response_only)?;
    if train_tok.is_empty() {
        return Err(Error::Invalid(format!(
            "all {} training examples are longer than the limit of {} tokens",
            train.len(),
            cfg.max_len
        )));
    }
    if valid_tok.is_empty() {
        tracing::warn!("no validation examples within the length limit: eval_loss will be NaN");
    }
    if dropped_train > 0 {
        tracing::warn!(dropped = dropped_train, limit = cfg.max_len, "training examples over the length limit dropped");
    }
    std::fs::create_dir_all(out).map_err(io_err(out))?;

    let mut rng = Seeds::new(cfg.seed).stream(Stream::Training(cfg.generation));
    match &cfg.mode {
        Mode::Lora(l) => {
            model.add_lora(l, &mut rng)?;
            if model.pack_output_layer()? {
                tracing::debug!("the frozen output matrix is packed for the loss");
            }
        }
        Mode::Full => model.make_all_trainable()?,
    }
    let (names, vars): (Vec<String>, Vec<Var>) = model.trainable().into_iter().unzip();
    let params = AdamWParams { lr: cfg.lr, weight_decay: cfg.weight_decay, ..AdamWParams::default() };
    let mut opt = AdamW::new(vars, params)?;

    let order = data_order(train_tok.len(), cfg);
    let total_steps = order.len().div_ceil(cfg.sequences_per_step);
    let (mut step, mut tokens, mut metrics) = (0usize, 0u64, Vec::new());
    if resume {
        let (_, dir) = latest_checkpoint(out)
            .ok_or_else(|| Error::Invalid(format!("--resume: no checkpoint in {}", out.display())))?;
        let state = load_checkpoint(&dir, &names, &mut opt)?;
        // Gradient checkpointing changes memory, not results: it may differ on resume.
        let recorded = Hyperparams { gradient_checkpointing: cfg.gradient_checkpointing, ..state.config.clone() };
        if recorded != *cfg {
            return Err(Error::Invalid(format!(
                "--resume: {} was written with other settings than this run's",
                dir.display()
            )));
        }
        let pos: u128 = state.rng_word_pos.parse().map_err(|_| Error::bad_model(&dir, "bad rng_word_pos"))?;
        rng.set_word_pos(pos);
        (step, tokens, metrics) = (state.step, state.tokens, state.metrics);
        tracing::info!(step, checkpoint = %dir.display(), "resumed");
    } else {
        let eval = evaluate(model, enc, &valid_tok, cfg.micro_batch)?;
        tracing::info!(eval_loss = eval, "before training");
        metrics.push(StepMetrics {
            step: 0,
            tokens: 0,
            train_loss: None,
            eval_loss: Some(eval),
            lr: None,
            grad_norm: None,
        });
    }

    // TensorBoard: the same scalars as metrics.parquet, plus timings that stay out of it (so that
    // resumed runs stay bit-exact). Resumed, it continues from the checkpoint's step.
    let mut events = if resume {
        EventWriter::resume(out, step as i64)
    } else {
        EventWriter::create(out).and_then(|mut w| {
            w.scalars(0, &[("eval/loss", metrics[0].eval_loss.unwrap_or(f64::NAN))])?;
            w.flush().map(|_| w)
        })
    }
    .map_err(|e| Error::Invalid(e.to_string()))?;

    let last = stop_after.map_or(total_steps, |s| s.min(total_steps));
    let bar = indicatif::ProgressBar::new(total_steps as u64).with_position(step as u64);
    let bar = match &progress {
        Some(multi) => multi.add(bar),
        None => bar,
    };
    bar.set_style(
        indicatif::ProgressStyle::with_template("{bar:30} {pos}/{len} steps {msg} eta {eta}")
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    let started = std::time::Instant::now();
    let tokens_at_start = tokens;
    let dropout = match &cfg.mode {
        Mode::Lora(l) => l.dropout > 0.0,
        Mode::Full => false,
    };
    while step < last {
        let step_started = std::time::Instant::now();
        let seqs: Vec<&Tokenized> = order
            [step * cfg.sequences_per_step..((step + 1) * cfg.sequences_per_step).min(order.len())]
            .iter()
            .map(|&i| &train_tok[i])
            .collect();
        // Token-weighted: each micro-batch's mean is weighted by its share of the step's targets,
        // so the step's loss and gradient do not depend on the micro-batch size.
        let step_targets: usize =
            seqs.iter().map(|s| s.target.iter().skip(1).map(|&t| t as usize).sum::<usize>()).sum();
        let mut acc: Option<Vec<Tensor>> = None;
        let mut loss_sum = 0.0;
        for chunk in seqs.chunks(cfg.micro_batch) {
            let batch = enc.batch(chunk, model.device())?;
            let rng = if dropout { Some(&mut rng) } else { None };
            let (loss, _, grads) =
                loss_and_grads(model, &batch, rng, cfg.gradient_checkpointing, step_targets, &opt.vars)
                    .map_err(|e| out_of_memory(e, step + 1, chunk.len(), cfg.gradient_checkpointing))?;
            loss_sum += loss;
            acc = Some(match acc {
                None => grads,
                Some(a) => a.iter().zip(&grads).map(|(x, y)| x + y).collect::<candle_core::Result<_>>()?,
            });
        }
        let mut grads = acc.unwrap_or_default();
        let norm = clip_grad_norm(&mut grads, cfg.max_grad_norm)?;
        let lr = cfg.lr_at(step, total_steps);
        opt.step(&grads, lr)?;
        let seconds = step_started.elapsed().as_secs_f64();
        step += 1;
        tokens += step_targets as u64;
        let eval_now = step == total_steps || (cfg.eval_every > 0 && step % cfg.eval_every == 0);
        let eval_loss = if eval_now { Some(evaluate(model, enc, &valid_tok, cfg.micro_batch)?) } else { None };
        metrics.push(StepMetrics {
            step,
            tokens,
            train_loss: Some(loss_sum),
            eval_loss,
            lr: Some(lr),
            grad_norm: Some(norm),
        });
        let mut scalars = vec![
            ("train/loss", loss_sum),
            ("train/learning_rate", lr),
            ("train/grad_norm", norm),
            ("train/tokens", tokens as f64),
            ("train/tokens_per_second", step_targets as f64 / seconds.max(1e-9)),
        ];
        if let Some(peak) = peak_memory_bytes() {
            scalars.push(("train/peak_memory_bytes", peak));
        }
        if let Some(e) = eval_loss {
            scalars.push(("eval/loss", e));
        }
        events
            .scalars(step as i64, &scalars)
            .and_then(|_| events.flush())
            .map_err(|e| Error::Invalid(e.to_string()))?;
        let rate = (tokens - tokens_at_start) as f64 / started.elapsed().as_secs_f64().max(1e-9);
        bar.set_message(format!("loss {loss_sum:.4} {rate:.0} tok/s"));
        bar.inc(1);
        tracing::debug!(
            step,
            loss = loss_sum,
            lr,
            grad_norm = norm,
            ?eval_loss,
            seconds,
            targets = step_targets,
            "step"
        );
        if let Some(e) = eval_loss {
            tracing::info!(step, eval_loss = e, "evaluated");
        }
        let checkpoint_now = (cfg.checkpoint_every > 0 && step % cfg.checkpoint_every == 0) || step == last;
        if checkpoint_now && step < total_steps {
            let state = CheckpointState {
                step,
                tokens,
                rng_word_pos: rng.get_word_pos().to_string(),
                metrics: metrics.clone(),
                config: cfg.clone(),
            };
            write_checkpoint(out, &names, &opt, &state)?;
            write_metrics(&metrics, &out.join("metrics.parquet"))?;
        }
    }
    bar.finish_and_clear();
    write_metrics(&metrics, &out.join("metrics.parquet"))?;
    if step == total_steps && !skip_export {
        crate::export::export(model, enc, cfg, out, export_merged)?;
    }
    Ok(TrainOutcome { metrics, total_steps, dropped_train, dropped_valid })
}

/// The process's peak resident memory (Linux: VmHWM), what a CPU run's model and activations
/// took at most; `None` where it cannot be read.
fn peak_memory_bytes() -> Option<f64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kb: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024.0)
}

/// An allocation failure on the device becomes an error that says where it happened and what
/// lowers memory; the last checkpoint is untouched (checkpoints are written whole or not at all).
/// (A failed host allocation aborts the process, or the kernel's OOM killer ends it: the same
/// checkpoint holds.)
fn out_of_memory(e: Error, step: usize, micro_batch: usize, checkpointing: bool) -> Error {
    let text = e.to_string();
    let lower = text.to_lowercase();
    if !(lower.contains("out of memory") || lower.contains("out_of_memory") || lower.contains("failed to allocate")) {
        return e;
    }
    let advice = if checkpointing {
        "lower --micro-batch (sft.micro_batch)".to_string()
    } else {
        "add --gradient-checkpointing (sft.gradient_checkpointing = true) or lower --micro-batch (sft.micro_batch)"
            .to_string()
    };
    Error::Invalid(format!(
        "step {step}, micro-batch of {micro_batch} sequences: out of memory ({text}); {advice}, then continue \
         with --resume from the last checkpoint"
    ))
}

/// Writes the metrics table as Parquet (step, tokens, train_loss, eval_loss, lr, grad_norm; null
/// where a row has no such value), atomically.
pub fn write_metrics(rows: &[StepMetrics], path: &Path) -> Result<()> {
    use arrow::array::{ArrayRef, Float64Array, UInt64Array};
    use std::sync::Arc;
    let cols: Vec<(&str, ArrayRef)> = vec![
        ("step", Arc::new(UInt64Array::from_iter_values(rows.iter().map(|r| r.step as u64)))),
        ("tokens", Arc::new(UInt64Array::from_iter_values(rows.iter().map(|r| r.tokens)))),
        ("train_loss", Arc::new(Float64Array::from_iter(rows.iter().map(|r| r.train_loss)))),
        ("eval_loss", Arc::new(Float64Array::from_iter(rows.iter().map(|r| r.eval_loss)))),
        ("lr", Arc::new(Float64Array::from_iter(rows.iter().map(|r| r.lr)))),
        ("grad_norm", Arc::new(Float64Array::from_iter(rows.iter().map(|r| r.grad_norm)))),
    ];
    let batch = arrow::record_batch::RecordBatch::try_from_iter(cols).map_err(|e| Error::Invalid(e.to_string()))?;
    thrive_core::fsutil::write_atomic(path, |w| {
        let mut writer = parquet::arrow::ArrowWriter::try_new(w, batch.schema(), None)
            .map_err(|e| thrive_core::Error::Parquet { path: path.into(), message: e.to_string() })?;
        writer.write(&batch).map_err(|e| thrive_core::Error::Parquet { path: path.into(), message: e.to_string() })?;
        writer.close().map_err(|e| thrive_core::Error::Parquet { path: path.into(), message: e.to_string() })?;
        Ok(())
    })
    .map_err(|e| Error::Invalid(e.to_string()))
}

#[cfg(test)]
mod oom_tests {
    use super::*;

    #[test]
    fn a_device_allocation_failure_names_the_step_the_micro_batch_and_the_flag() {
        let cuda =
            Error::Candle(candle_core::Error::Msg("DriverError(CUDA_ERROR_OUT_OF_MEMORY, \"out of memory\")".into()));
        let msg = out_of_memory(cuda, 3, 8, false).to_string();
        for part in ["step 3", "micro-batch of 8", "--gradient-checkpointing", "--micro-batch", "--resume"] {
            assert!(msg.contains(part), "`{part}` missing from: {msg}");
        }
        let msg = out_of_memory(Error::Candle(candle_core::Error::Msg("out of memory".into())), 1, 2, true).to_string();
        assert!(!msg.contains("add --gradient-checkpointing") && msg.contains("--micro-batch"), "{msg}");
        let other = out_of_memory(Error::Invalid("shape mismatch".into()), 1, 2, false).to_string();
        assert_eq!(other, "shape mismatch", "other errors pass through unchanged");
    }
}
