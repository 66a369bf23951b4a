//! `thrive sft` end to end on CPU: a pool imported from the HelpSteer2-shaped fixture, the tiny
//! random Gemma 2 of the sft parity tests, a short LoRA run that lowers the validation loss, a
//! run stopped and resumed through the CLI, and bad flags with clear errors.

mod common;
use common::*;
use std::path::{Path, PathBuf};

/// A pool holding the fixture's real train and validation splits.
fn pool(dir: &Path) -> PathBuf {
    let pool = dir.join("pool");
    let hs = root().join("pool/tests/fixtures/helpsteer2");
    ok(&["pool", "import", s(&pool), "--helpsteer2", s(&hs)]);
    pool
}

fn model() -> PathBuf {
    root().join("sft/tests/fixtures/tiny-gemma2")
}

/// `thrive sft`'s summary, "N/N steps; validation loss A -> B", says B < A.
fn assert_validation_loss_falls(stdout: &str) {
    let losses: Vec<f64> = stdout
        .split("validation loss ")
        .nth(1)
        .unwrap()
        .split(';')
        .next()
        .unwrap()
        .split(" -> ")
        .map(|x| x.trim().parse().unwrap())
        .collect();
    assert!(losses[1] < losses[0], "{stdout}");
}

const FAST: [&str; 10] =
    ["--lr", "1e-2", "--sequences-per-step", "8", "--micro-batch", "4", "--max-len", "128", "--device", "cpu"];

#[test]
fn trains_on_a_pool_view_and_resumes() {
    let tmp = tempfile::tempdir().unwrap();
    let pool = pool(tmp.path());
    let out = tmp.path().join("gen1");
    let m = model();
    let mut args = vec!["sft", "--model", s(&m), "--pool", s(&pool), "--view", "accumulate"];
    args.extend(["--generation", "1", "--epochs", "3", "--out", s(&out)]);
    args.extend(FAST);
    let stdout = ok(&args);
    assert_validation_loss_falls(&stdout);
    for f in
        ["metrics.parquet", "metrics.manifest.json", "adapter/adapter_model.safetensors", "adapter/adapter_config.json"]
    {
        assert!(out.join(f).exists(), "{f} missing");
    }
    let manifest: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("metrics.manifest.json")).unwrap()).unwrap();
    assert_eq!(manifest["setting"], "sft");
    assert_eq!(manifest["config"]["train"]["generation"], 1);

    // Stopped after 2 steps, then resumed: the same adapter as one uninterrupted run.
    let whole = tmp.path().join("whole");
    let parts = tmp.path().join("parts");
    let base = |o: &Path| {
        let mut v: Vec<String> =
            ["sft", "--model", s(&model()), "--pool", s(&pool), "--generation", "1", "--lora-dropout", "0.1"]
                .map(String::from)
                .to_vec();
        v.extend(["--checkpoint-every", "1", "--out", s(o)].map(String::from));
        v.extend(FAST.map(String::from));
        v
    };
    let run = |v: Vec<String>| ok(&v.iter().map(String::as_str).collect::<Vec<_>>());
    run(base(&whole));
    let mut first = base(&parts);
    first.extend(["--stop-after".to_string(), "2".to_string()]);
    assert!(run(first).contains("--resume"));
    let mut rest = base(&parts);
    rest.push("--resume".into());
    run(rest);
    let a = std::fs::read(whole.join("adapter/adapter_model.safetensors")).unwrap();
    let b = std::fs::read(parts.join("adapter/adapter_model.safetensors")).unwrap();
    assert!(a == b, "resumed run differs");
}

/// `--dtype bf16-mixed` end to end where the binary has MKL's mixed products (.ci/run's mkl
/// stage runs this file with the feature): a LoRA run trains, lowers the validation loss and
/// records its precision. In the default build the flag's error is checked in
/// `bad_flags_are_named` instead.
#[test]
fn bf16_mixed_trains_where_the_build_has_mkl() {
    if !thrive_sft::matmul::mixed_products() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let pool = pool(tmp.path());
    let out = tmp.path().join("mixed");
    let m = model();
    let mut args = vec!["sft", "--model", s(&m), "--pool", s(&pool), "--epochs", "3", "--out", s(&out)];
    args.extend(["--dtype", "bf16-mixed"]);
    args.extend(FAST);
    let stdout = ok(&args);
    assert_validation_loss_falls(&stdout);
    let manifest: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("metrics.manifest.json")).unwrap()).unwrap();
    assert_eq!(manifest["config"]["dtype"], "bf16-mixed");
    assert!(out.join("adapter/adapter_model.safetensors").exists());

    // Full fine-tuning: f32 masters, bf16 products; the export is the f32 model.
    let out = tmp.path().join("mixed-full");
    let mut args = vec!["sft", "--model", s(&m), "--pool", s(&pool), "--epochs", "3", "--out", s(&out), "--full"];
    args.extend(["--dtype", "bf16-mixed", "--lr", "1e-3"]);
    args.extend(&FAST[2..]);
    assert_validation_loss_falls(&ok(&args));
    let merged =
        candle_core::safetensors::load(out.join("merged/model.safetensors"), &candle_core::Device::Cpu).unwrap();
    assert!(merged.values().all(|t| t.dtype() == candle_core::DType::F32), "full fine-tuning exports its f32 masters");
}

#[test]
fn bad_flags_are_named() {
    let tmp = tempfile::tempdir().unwrap();
    let pool = pool(tmp.path());
    let out = tmp.path().join("out");
    let m = model();
    let common = ["sft", "--model", s(&m), "--out", s(&out), "--device", "cpu"];
    fn with<'a>(common: &[&'a str], extra: &[&'a str]) -> Vec<&'a str> {
        [common, extra].concat()
    }
    fails(&with(&common, &[]), &["--pool", "--train"]);
    fails(&with(&common, &["--pool", s(&pool), "--lora-targets", "q_proj,x_proj"]), &["--lora-targets", "x_proj"]);
    fails(&with(&common, &["--pool", s(&pool), "--generation", "0"]), &["--generation"]);
    fails(&with(&common, &["--pool", s(&pool), "--view", "mix"]), &["--num-real"]);
    // Generation 2 of Replace needs generation 1's synthetic batch, which this pool lacks.
    fails(&with(&common, &["--pool", s(&pool), "--view", "replace", "--generation", "2"]), &["synthetic"]);
    fails(&with(&common, &["--pool", s(&pool), "--max-len", "5"]), &["5 tokens"]);
    fails(&with(&common, &["--pool", s(&pool), "--lr", "-1"]), &["--lr"]);
    fails(&with(&common, &["--pool", s(&pool), "--resume"]), &["no checkpoint"]);
    fails(&["sft", "--model", s(&tmp.path().join("nope")), "--pool", s(&pool), "--out", s(&out)], &["nope"]);
    let bad = tmp.path().join("bad.jsonl");
    std::fs::write(&bad, "{\"prompt\": 1}\n").unwrap();
    fails(&with(&common, &["--train", s(&bad)]), &["bad.jsonl", "line 1"]);
    // bf16-mixed needs MKL's mixed products; the default build says what to build or use.
    if !thrive_sft::matmul::mixed_products() {
        fails(&with(&common, &["--pool", s(&pool), "--dtype", "bf16-mixed"]), &["bf16-mixed", "mkl", "use f32"]);
        fails(&with(&common, &["--pool", s(&pool), "--full", "--dtype", "bf16-mixed"]), &["bf16-mixed", "mkl"]);
    }
    assert!(!out.join("adapter").exists());
}

/// `--rslora` scales LoRA by alpha/√r (PEFT's use_rslora) instead of alpha/r: the merged weights
/// are the base weights plus (alpha/√r)·B·A of the exported adapter, and the adapter says so.
#[test]
fn rslora_merges_with_alpha_over_root_r() {
    use candle_core::{Device, Tensor};
    let tmp = tempfile::tempdir().unwrap();
    let pool = pool(tmp.path());
    let out = tmp.path().join("rs");
    let m = model();
    let mut args = vec!["sft", "--model", s(&m), "--pool", s(&pool), "--generation", "1", "--out", s(&out)];
    args.extend(["--rslora", "--lora-rank", "4", "--lora-alpha", "8", "--merged"]);
    args.extend(FAST);
    ok(&args);
    let config: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("adapter/adapter_config.json")).unwrap()).unwrap();
    assert_eq!((config["use_rslora"].as_bool(), config["r"].as_u64()), (Some(true), Some(4)));
    let load = |p: PathBuf| candle_core::safetensors::load(p, &Device::Cpu).unwrap();
    let (base, merged, adapter) = (
        load(m.join("model.safetensors")),
        load(out.join("merged/model.safetensors")),
        load(out.join("adapter/adapter_model.safetensors")),
    );
    let find = |suffix: &str| {
        let k = adapter.keys().find(|k| k.ends_with(suffix)).unwrap_or_else(|| panic!("no {suffix} in the adapter"));
        adapter[k].to_dtype(candle_core::DType::F32).unwrap()
    };
    let mut checked = 0;
    for module in ["self_attn.q_proj", "mlp.down_proj"] {
        let name = format!("model.layers.1.{module}.weight");
        let (a, b) =
            (find(&format!("layers.1.{module}.lora_A.weight")), find(&format!("layers.1.{module}.lora_B.weight")));
        let ba = b.matmul(&a).unwrap();
        let delta = (&merged[&name] - &base[&name]).unwrap();
        let max = |t: &Tensor| t.abs().unwrap().flatten_all().unwrap().max(0).unwrap().to_scalar::<f32>().unwrap();
        let size = max(&delta);
        assert!(size > 1e-4, "{name}: LoRA did not move ({size})");
        let off = |scale: f64| max(&(&delta - (&ba * scale).unwrap()).unwrap()) / size;
        assert!(off(8.0 / 2.0) < 1e-4, "{name}: merged ≠ base + (alpha/√r)·B·A ({})", off(4.0));
        assert!(off(8.0 / 4.0) > 0.3, "{name}: merged = base + (alpha/r)·B·A");
        checked += 1;
    }
    assert_eq!(checked, 2);
}

/// `--response-only` trains and evaluates on the responses' tokens alone (the targets are
/// checked in crates/sft/tests/response_only.rs): another loss than the whole sequence's, and
/// the manifest records it.
#[test]
fn response_only_changes_the_loss_and_is_recorded() {
    let tmp = tempfile::tempdir().unwrap();
    let pool = pool(tmp.path());
    let m = model();
    let mut first = Vec::new();
    for (name, extra) in [("all", None), ("response", Some("--response-only"))] {
        let out = tmp.path().join(name);
        let mut args = vec!["sft", "--model", s(&m), "--pool", s(&pool), "--generation", "1", "--out", s(&out)];
        args.extend(extra);
        args.extend(FAST);
        let stdout = ok(&args);
        let loss: f64 =
            stdout.split("validation loss ").nth(1).unwrap().split(" -> ").next().unwrap().trim().parse().unwrap();
        first.push(loss);
        let manifest: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(out.join("metrics.manifest.json")).unwrap()).unwrap();
        assert_eq!(manifest["config"]["train"]["response_only"], extra.is_some(), "{manifest}");
    }
    assert!((first[0] - first[1]).abs() > 1e-3, "the same untrained loss with and without --response-only: {first:?}");
}

#[test]
fn check_device_on_the_cpu_rehearses_the_gpu_code_paths() {
    // The device side takes the GPU's fused kernels and hand-written backward passes even on the
    // CPU, so a bug in them (a batch's non-contiguous last positions once reached candle's fused
    // RMSNorm) fails here rather than in a device's scarce minutes.
    let gemma3 = root().join("sft/tests/fixtures/tiny-gemma3");
    let out = ok(&[
        "check-device",
        "--device",
        "cpu",
        "--model",
        model().to_str().unwrap(),
        "--model",
        gemma3.to_str().unwrap(),
    ]);
    let lines: Vec<serde_json::Value> = out.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(lines.len(), 4, "two models in f32 and bf16:\n{out}");
    for l in &lines {
        let (logits, grads) = (l["logits_rel"].as_f64().unwrap(), l["grads_rel"].as_f64().unwrap());
        let limit = if l["dtype"] == "f32" { (1e-4, 1e-3) } else { (0.1, 0.2) };
        assert!(logits <= limit.0 && grads <= limit.1, "{l}");
        if l["dtype"] == "f32" {
            assert_eq!(l["greedy_same_prefix"], l["greedy_tokens"], "{l}");
        }
    }
}
