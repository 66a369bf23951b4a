//! A whole run on CPU with the sampler's tiny trained Gemma 2 and the pool tests' HelpSteer2-shaped
//! data: every workflow for three generations, results and status, rerun as a no-op, and run
//! files with unknown keys or bad values named.

use std::path::{Path, PathBuf};
use thrive_orchestrator::*;

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn config(out: &Path) -> String {
    format!(
        r#"
out = "{out}"
model = "{model}"
device = "cpu"
[data]
helpsteer2 = "{data}"
[run]
workflows = ["replace", "accumulate", "accumulate-subsample"]
generations = 3
chains = [5]
[sft]
lr = 1e-2
lora_rank = 4
lora_alpha = 8.0
sequences_per_step = 8
micro_batch = 8
max_len = 128
checkpoint_every = 2
[sampling]
mode = "prompted"
count = 30
max_new_tokens = 12
batch_size = 16
"#,
        out = out.display(),
        model = root().join("sampler/tests/fixtures/tiny-trained").display(),
        data = root().join("pool/tests/fixtures/helpsteer2").display(),
    )
}

#[test]
fn a_run_completes_and_reruns_as_a_no_op() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("run");
    let cfg = RunConfig::from_toml(&config(&out), Path::new("run.toml")).unwrap();
    let table = run(&cfg).unwrap();
    assert_eq!(table.setting, "lm");
    assert_eq!(table.runs.len(), 3);
    let m = METRICS.len();
    for r in &table.runs {
        assert_eq!(r.metrics.len(), 3 * m, "{:?}", r.workflow);
        assert_eq!(r.seed, 5);
    }
    // Generation 1 trains on the real data in every workflow: the same model.
    let first: Vec<f64> = table.runs.iter().map(|r| r.metrics[0]).collect();
    assert!(first.iter().all(|&x| x == first[0]), "{first:?}");
    // Synthetic share of generation 2's training set: Replace 1, Accumulate 30 / 90.
    let frac =
        |w: thrive_core::Workflow, g: usize| table.runs.iter().find(|r| r.workflow == w).unwrap().metrics[g * m + 4];
    assert_eq!(frac(thrive_core::Workflow::Replace, 1), 1.0);
    // (Prompted sampling drops empty responses, so "up to 30" synthetic rows per generation.)
    let (a1, a2) = (frac(thrive_core::Workflow::Accumulate, 1), frac(thrive_core::Workflow::Accumulate, 2));
    assert!(a1 > 0.0 && a1 <= 30.0 / 90.0 && a2 > a1 && a2 <= 60.0 / 120.0, "{a1} {a2}");
    assert!(out.join("results.parquet").exists());
    let s = status(&out).unwrap();
    assert_eq!(s.steps.len(), 3 * (3 + 2));
    assert!(s.steps.iter().all(|(_, done, _)| *done));

    // Again: nothing to do, same results.
    let again = run(&cfg).unwrap();
    assert_eq!(again, table);
    // Another configuration on the same directory is refused.
    let other = RunConfig::from_toml(&config(&out).replace("lr = 1e-2", "lr = 2e-2"), Path::new("run.toml")).unwrap();
    let err = run(&other).unwrap_err().to_string();
    assert!(err.contains("another configuration"), "{err}");
}

#[test]
fn run_files_name_their_bad_keys() {
    let out = Path::new("/tmp/unused");
    let check = |text: String, needles: &[&str]| {
        let err = RunConfig::from_toml(&text, Path::new("run.toml")).unwrap_err().to_string();
        for n in needles {
            assert!(err.contains(n), "expected `{n}` in: {err}");
        }
        assert!(err.contains("run.toml"), "{err}");
    };
    check(config(out).replace("lora_rank = 4", "lora_rank = 4\nlora_rnak = 3"), &["lora_rnak"]);
    check(config(out).replace("lr = 1e-2", "lr = -1.0"), &["sft.lr"]);
    check(config(out).replace("lr = 1e-2", "lr = \"fast\""), &["lr"]);
    check(config(out).replace("\"replace\",", "\"replcae\","), &["run.workflows", "replcae"]);
    check(config(out).replace("generations = 3", "generations = 0"), &["run.generations"]);
    check(config(out).replace("mode = \"prompted\"", "mode = \"chatty\""), &["sampling.mode"]);
    check(config(out).replace("top_p", "x").replace("batch_size = 16", "batch_size = 16\ntop_p = 0.0"), &["top-p"]);
    check(config(out).replace("device = \"cpu\"", "device = \"tpu\""), &["device"]);
    check(config(out).replace("[data]", "[data]\nhub = \"nvidia/HelpSteer2\""), &["not both"]);
}
