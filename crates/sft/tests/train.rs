//! The training loop on CPU: it learns, it resumes bit for bit, its result does not depend on
//! the micro-batch size, it exports an adapter and merged weights that load back to the same
//! model, and bad input gets clear errors without a corrupted checkpoint.
//!
//! Data: the 60-row HelpSteer2-shaped file that the pool tests ship (48 rows train, 12 validate);
//! model: the tiny random Gemma 2 of the parity tests.

use candle_core::{DType, Device, Tensor};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use thrive_sft::*;

fn model_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/tiny-gemma2")
}

fn data() -> (Vec<Example>, Vec<Example>) {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../pool/tests/fixtures/helpsteer2/train.jsonl");
    let mut all = read_jsonl(&path).unwrap();
    assert_eq!(all.len(), 60);
    let valid = all.split_off(48);
    (all, valid)
}

fn encoder() -> TextEncoder {
    TextEncoder::from_file(&model_dir().join("tokenizer.json")).unwrap()
}

fn model() -> Gemma {
    Gemma::load(&model_dir(), DType::F32, &Device::Cpu).unwrap()
}

fn lora_cfg() -> Hyperparams {
    Hyperparams {
        mode: Mode::Lora(LoraConfig { rank: 4, alpha: 8.0, dropout: 0.1, ..LoraConfig::default() }),
        lr: 1e-2,
        warmup_ratio: 0.1,
        schedule: Schedule::Cosine,
        sequences_per_step: 8,
        micro_batch: 4,
        epochs: 1,
        max_len: 128,
        checkpoint_every: 2,
        seed: 7,
        generation: 1,
        ..Hyperparams::default_lora()
    }
}

fn tensors(path: &Path) -> HashMap<String, Tensor> {
    candle_core::safetensors::load(path, &Device::Cpu).unwrap()
}

fn max_abs_diff(a: &Tensor, b: &Tensor) -> f32 {
    (a - b).unwrap().abs().unwrap().flatten_all().unwrap().max(0).unwrap().to_scalar::<f32>().unwrap()
}

#[test]
fn a_short_run_lowers_the_validation_loss() {
    let (train_set, valid) = data();
    let out = tempfile::tempdir().unwrap();
    let cfg = Hyperparams { epochs: 4, checkpoint_every: 0, ..lora_cfg() };
    let mut m = model();
    let outcome = train(&mut m, &encoder(), (&train_set, &valid), &cfg, out.path(), RunControl::default()).unwrap();
    assert_eq!(outcome.total_steps, 24);
    assert_eq!(outcome.dropped_train, 0);
    let first = outcome.metrics.first().unwrap().eval_loss.unwrap();
    let last = outcome.metrics.last().unwrap().eval_loss.unwrap();
    assert!(last < 0.8 * first, "validation loss {first} -> {last}");
    // Metrics as Parquet: one row before training and one per step.
    let file = std::fs::File::open(out.path().join("metrics.parquet")).unwrap();
    let rows: usize = parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(file)
        .unwrap()
        .build()
        .unwrap()
        .map(|b| b.unwrap().num_rows())
        .sum();
    assert_eq!(rows, 25);
    // The schedule warmed up from 0 and decayed.
    let lrs: Vec<f64> = outcome.metrics.iter().filter_map(|m| m.lr).collect();
    assert_eq!(lrs[0], 0.0);
    assert!(lrs.iter().cloned().fold(0.0, f64::max) <= cfg.lr && *lrs.last().unwrap() < 0.05 * cfg.lr);
}

#[test]
fn resume_gives_the_uninterrupted_result_bit_for_bit() {
    let (train_set, valid) = data();
    let cfg = lora_cfg(); // 6 steps, dropout on, so the RNG state matters
    let enc = encoder();
    let whole = tempfile::tempdir().unwrap();
    train(&mut model(), &enc, (&train_set, &valid), &cfg, whole.path(), RunControl::default()).unwrap();

    let parts = tempfile::tempdir().unwrap();
    let stop = RunControl { stop_after: Some(3), ..RunControl::default() };
    let first = train(&mut model(), &enc, (&train_set, &valid), &cfg, parts.path(), stop.clone()).unwrap();
    assert_eq!(first.metrics.last().unwrap().step, 3);
    assert!(parts.path().join("checkpoint-000003/state.json").exists());
    assert!(!parts.path().join("checkpoint-000002").exists(), "older checkpoints are removed");
    assert!(!parts.path().join("adapter").exists(), "no export before the end");
    let resume = RunControl { resume: true, ..RunControl::default() };
    let rest = train(&mut model(), &enc, (&train_set, &valid), &cfg, parts.path(), resume.clone()).unwrap();

    let a = std::fs::read(whole.path().join("adapter/adapter_model.safetensors")).unwrap();
    let b = std::fs::read(parts.path().join("adapter/adapter_model.safetensors")).unwrap();
    assert!(a == b, "resumed adapter differs from the uninterrupted one");
    let whole_metrics = std::fs::read(whole.path().join("metrics.parquet")).unwrap();
    assert_eq!(rest.metrics.len(), 7);
    assert!(whole_metrics == std::fs::read(parts.path().join("metrics.parquet")).unwrap(), "metrics differ");

    // A resume with other settings is refused rather than silently mixed.
    let other = tempfile::tempdir().unwrap();
    train(&mut model(), &enc, (&train_set, &valid), &cfg, other.path(), stop).unwrap();
    let changed = Hyperparams { lr: 2e-2, ..cfg.clone() };
    let err = train(&mut model(), &enc, (&train_set, &valid), &changed, other.path(), resume).unwrap_err().to_string();
    assert!(err.contains("other settings"), "{err}");
}

#[test]
fn the_result_does_not_depend_on_the_micro_batch_size() {
    let (train_set, valid) = data();
    let cfg = Hyperparams {
        mode: Mode::Lora(LoraConfig { rank: 4, alpha: 8.0, ..LoraConfig::default() }),
        checkpoint_every: 0,
        ..lora_cfg()
    };
    let enc = encoder();
    let mut adapters = Vec::new();
    for micro_batch in [1, 3, 8] {
        let out = tempfile::tempdir().unwrap();
        let cfg = Hyperparams { micro_batch, ..cfg.clone() };
        train(&mut model(), &enc, (&train_set, &valid), &cfg, out.path(), RunControl::default()).unwrap();
        adapters.push(tensors(&out.path().join("adapter/adapter_model.safetensors")));
    }
    for other in &adapters[1..] {
        for (name, t) in &adapters[0] {
            let d = max_abs_diff(t, &other[name]);
            assert!(d < 1e-4, "{name}: {d}");
        }
    }
}

#[test]
fn exports_load_back_to_the_trained_model() {
    let (train_set, valid) = data();
    let out = tempfile::tempdir().unwrap();
    let cfg = Hyperparams { checkpoint_every: 0, ..lora_cfg() };
    let enc = encoder();
    let mut trained = model();
    let control = RunControl { export_merged: true, ..RunControl::default() };
    train(&mut trained, &enc, (&train_set, &valid), &cfg, out.path(), control).unwrap();

    // PEFT's file names and tensor names, the same set as the adapter peft itself wrote.
    let ours = tensors(&out.path().join("adapter/adapter_model.safetensors"));
    let peft = tensors(&model_dir().join("adapter/adapter_model.safetensors"));
    let mut a: Vec<_> = ours.keys().collect();
    let mut b: Vec<_> = peft.keys().collect();
    a.sort();
    b.sort();
    assert_eq!(a, b);
    let config: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.path().join("adapter/adapter_config.json")).unwrap())
            .unwrap();
    assert_eq!(config["peft_type"], "LORA");
    assert_eq!(config["r"], 4);
    assert_eq!(config["lora_alpha"], 8.0);
    // B has moved away from zero.
    let b0 = &ours["base_model.model.model.layers.0.self_attn.q_proj.lora_B.weight"];
    assert!(b0.abs().unwrap().max_all().unwrap().to_scalar::<f32>().unwrap() > 0.0);

    let batch = enc
        .batch(&[&enc.encode(&valid[0], false).unwrap(), &enc.encode(&valid[1], false).unwrap()], &Device::Cpu)
        .unwrap();
    let expected = trained.forward(&batch.input_ids, &batch.attention_mask).unwrap();
    // The adapter on a fresh base.
    let mut reloaded = model();
    reloaded
        .add_lora(
            &LoraConfig { rank: 4, alpha: 8.0, ..LoraConfig::default() },
            &mut thrive_core::Seeds::new(99).stream(thrive_core::Stream::Training(0)),
        )
        .unwrap();
    reloaded.load_lora_weights(&out.path().join("adapter/adapter_model.safetensors")).unwrap();
    let got = reloaded.forward(&batch.input_ids, &batch.attention_mask).unwrap();
    assert!(max_abs_diff(&expected, &got) < 1e-5);
    // The merged weights as a plain model directory.
    let merged = Gemma::load(&out.path().join("merged"), DType::F32, &Device::Cpu).unwrap();
    let got = merged.forward(&batch.input_ids, &batch.attention_mask).unwrap();
    assert!(max_abs_diff(&expected, &got) < 1e-4);
    TextEncoder::from_file(&out.path().join("merged/tokenizer.json")).unwrap();
}

#[test]
fn full_fine_tuning_trains_every_parameter() {
    let (train_set, valid) = data();
    let out = tempfile::tempdir().unwrap();
    let cfg = Hyperparams { mode: Mode::Full, lr: 1e-3, checkpoint_every: 0, ..lora_cfg() };
    let outcome =
        train(&mut model(), &encoder(), (&train_set, &valid), &cfg, out.path(), RunControl::default()).unwrap();
    assert!(!out.path().join("adapter").exists());
    let before = tensors(&model_dir().join("model.safetensors"));
    let after = tensors(&out.path().join("merged/model.safetensors"));
    let q = "model.layers.0.self_attn.q_proj.weight";
    assert!(max_abs_diff(&before[q], &after[q]) > 0.0);
    for name in ["model.embed_tokens.weight", "model.layers.0.input_layernorm.weight", "model.norm.weight"] {
        assert!(max_abs_diff(&before[name], &after[name]) > 0.0, "{name} did not move");
    }
    let first = outcome.metrics.first().unwrap().eval_loss.unwrap();
    let last = outcome.metrics.last().unwrap().eval_loss.unwrap();
    assert!(last < first, "{first} -> {last}");
}

#[test]
fn bad_input_gets_clear_errors_and_no_checkpoint() {
    let (train_set, valid) = data();
    let enc = encoder();
    let cfg = lora_cfg();
    let out = tempfile::tempdir().unwrap();
    let run = |train_set: &[Example], cfg: &Hyperparams| {
        train(&mut model(), &enc, (train_set, &valid), cfg, out.path(), RunControl::default()).unwrap_err().to_string()
    };
    let err = run(&[], &cfg);
    assert!(err.contains("empty"), "{err}");
    let err = run(&train_set, &Hyperparams { max_len: 5, ..cfg.clone() });
    assert!(err.contains("all 48 training examples") && err.contains("5 tokens"), "{err}");
    assert_eq!(std::fs::read_dir(out.path()).unwrap().count(), 0, "nothing written");

    let err = train(
        &mut model(),
        &enc,
        (&train_set, &valid),
        &cfg,
        out.path(),
        RunControl { resume: true, ..RunControl::default() },
    )
    .unwrap_err()
    .to_string();
    assert!(err.contains("no checkpoint"), "{err}");

    // A truncated checkpoint file is named, not half-loaded.
    let stop = RunControl { stop_after: Some(2), ..RunControl::default() };
    train(&mut model(), &enc, (&train_set, &valid), &cfg, out.path(), stop).unwrap();
    let weights = out.path().join("checkpoint-000002/trainable.safetensors");
    let bytes = std::fs::read(&weights).unwrap();
    std::fs::write(&weights, &bytes[..bytes.len() / 2]).unwrap();
    let resume = RunControl { resume: true, ..RunControl::default() };
    let err = train(&mut model(), &enc, (&train_set, &valid), &cfg, out.path(), resume).unwrap_err().to_string();
    assert!(err.contains("trainable.safetensors"), "{err}");

    // A tokenizer without an EOS token.
    let dir = tempfile::tempdir().unwrap();
    let text = std::fs::read_to_string(model_dir().join("tokenizer.json")).unwrap().replace("<eos>", "<notes>");
    let path = dir.path().join("tokenizer.json");
    std::fs::write(&path, text).unwrap();
    let err = TextEncoder::from_file(&path).err().unwrap().to_string();
    assert!(err.contains("EOS") && err.contains("tokenizer.json"), "{err}");

    // A jsonl line that is not an example names the file and line.
    let path = dir.path().join("bad.jsonl");
    std::fs::write(&path, "{\"prompt\": \"a\", \"response\": \"b\"}\n{\"prompt\": 3}\n").unwrap();
    let err = read_jsonl(&path).unwrap_err().to_string();
    assert!(err.contains("bad.jsonl") && err.contains("line 2"), "{err}");
}
