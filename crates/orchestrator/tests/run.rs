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
    let frac = |w: thrive_core::Workflow, g: usize| {
        table.runs.iter().find(|r| r.workflow == Some(w)).unwrap().metrics[g * m + 4]
    };
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

/// The value-of-synthetic grid's run file: two seeds, one source.
fn value_config(out: &Path) -> String {
    let loop_part = config(out);
    let (head, rest) = loop_part.split_once("[run]").unwrap();
    let sft = &rest[rest.find("[sft]").unwrap()..];
    format!(
        "{head}[value]\nnum_real = [0, 8, 16]\nnum_synthetic = [0, 8]\nsources = [1]\nseeds = [0, 2]\n{}",
        // No warm-up: a one-step run would otherwise take its only step at learning rate 0.
        sft.replace("count = 30", "count = 12").replace("lr = 1e-2", "lr = 1e-2\nwarmup_ratio = 0.0")
    )
}

#[test]
fn a_value_grid_trains_every_cell_once() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("value");
    let cfg = RunConfig::from_toml(&value_config(&out), Path::new("run.toml")).unwrap();
    let steps = plan(&cfg);
    // Source: train + sample; per seed 2 real-only cells and 3 mixed cells; the empty cell once.
    assert_eq!(steps.len(), 2 + 2 * (2 + 3) + 1);
    let table = run(&cfg).unwrap();
    assert_eq!(table.setting, "lm-value");
    assert_eq!(table.runs.len(), 11);
    let param = |r: &thrive_core::RunRecord, k: &str| r.params.get(k).unwrap().as_f64().unwrap();
    let base = table.runs.iter().find(|r| param(r, "num_real") + param(r, "num_synthetic") == 0.0).unwrap();
    for r in &table.runs {
        assert_eq!(r.workflow, None);
        let (real, syn) = (param(r, "num_real"), param(r, "num_synthetic"));
        let [eval, before, _train, examples, fraction] = r.metrics[..] else { panic!("{:?}", r.metrics) };
        assert_eq!(examples, real + syn, "{r:?}");
        assert_eq!(param(r, "source"), if syn == 0.0 { -1.0 } else { 1.0 });
        if real + syn > 0.0 {
            assert!((fraction - syn / (real + syn)).abs() < 1e-12);
            // Every cell starts from the base model, whose loss the empty cell records.
            assert!((before - base.metrics[0]).abs() < 1e-6, "{before} vs {}", base.metrics[0]);
            assert!(eval.is_finite() && eval != before);
        }
    }
    // The source's rows are in the pool, traced back to the real training split.
    let pool = thrive_pool::Pool::open(out.join("pool")).unwrap();
    let rows = pool.read_batch(&thrive_pool::BatchKey::value_source(1)).unwrap();
    assert!(!rows.is_empty() && rows.len() <= 12);
    let lineage = pool.lineage(&rows[0].example_id).unwrap();
    assert_eq!(lineage.model_trained_on, vec![thrive_pool::BatchKey::real("train")]);
    // Cells keep their metrics, not their weights or checkpoints.
    let cell = RunDir { root: out.clone() }.cell(8, 8, Some(1), 0);
    let names: Vec<String> =
        std::fs::read_dir(&cell).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
    assert!(names.contains(&"done.json".to_string()) && names.contains(&"metrics.parquet".to_string()), "{names:?}");
    assert!(!names.iter().any(|n| n.starts_with("checkpoint-") || n == "adapter" || n == "merged"), "{names:?}");
    // The results table reads back; a rerun does nothing.
    // (Compared as text: the empty cell's train_loss is NaN, which equals nothing.)
    let back = thrive_core::ResultsTable::read_parquet(&out.join("results.parquet")).unwrap();
    assert_eq!(format!("{back:?}"), format!("{table:?}"));
    assert_eq!(format!("{:?}", run(&cfg).unwrap()), format!("{table:?}"));
    let s = status(&out).unwrap();
    let dir = RunDir { root: out.clone() };
    assert!(s.steps.iter().all(|(step, done, record)| *done && record.is_some() == model_dir(&dir, *step).is_some()));
    // The heatmap's means: one value per cell, over both seeds where there are two.
    let grid = thrive_report::grid(&table, "num_real", "num_synthetic", "eval_loss").unwrap();
    assert_eq!(grid.count, vec![vec![1, 2], vec![2, 2], vec![2, 2]]);
}

#[test]
fn value_grid_files_name_their_bad_keys() {
    let out = Path::new("/tmp/unused");
    let err = |text: String| RunConfig::from_toml(&text, Path::new("run.toml")).unwrap_err().to_string();
    let both = value_config(out).replace("[value]", "[run]\ngenerations = 2\n[value]");
    assert!(err(both).contains("not both"));
    let e = err(value_config(out).replace("num_synthetic = [0, 8]", "num_synthetic = [0, 80]"));
    assert!(e.contains("value.num_synthetic") && e.contains("sampling.count"), "{e}");
    assert!(err(value_config(out).replace("seeds = [0, 2]", "seeds = []")).contains("value.seeds"));
    assert!(err(value_config(out).replace("sources = [1]", "sources = [1]\npick = \"last\"")).contains("value.pick"));
    assert!(err(value_config(out).replace("sources = [1]", "sources = [1]\nsauces = [2]")).contains("sauces"));
    // More real rows than the training split has: named when the run starts.
    let tmp = tempfile::tempdir().unwrap();
    let text = value_config(&tmp.path().join("v")).replace("num_real = [0, 8, 16]", "num_real = [0, 6000]");
    let cfg = RunConfig::from_toml(&text, Path::new("run.toml")).unwrap();
    let e = run(&cfg).unwrap_err().to_string();
    assert!(e.contains("value.num_real") && e.contains("6000"), "{e}");
    // Fixed, the same directory runs (the failed attempt recorded no configuration).
    let fixed = RunConfig::from_toml(&text.replace("num_real = [0, 6000]", "num_real = [0, 8]"), Path::new("run.toml"));
    assert_eq!(run(&fixed.unwrap()).unwrap().runs.len(), 1 + 2 + 4);
}
