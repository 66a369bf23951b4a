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
    // "N/N steps; validation loss A -> B"
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
    assert!(!out.join("adapter").exists());
}
