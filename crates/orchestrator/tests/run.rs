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
    let cfg = RunFile::from_toml(&config(&out), Path::new("run.toml")).unwrap();
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
    let other = RunFile::from_toml(&config(&out).replace("lr = 1e-2", "lr = 2e-2"), Path::new("run.toml")).unwrap();
    let err = run(&other).unwrap_err().to_string();
    assert!(err.contains("another configuration"), "{err}");
}

#[test]
fn run_files_name_their_bad_keys() {
    let out = Path::new("/tmp/unused");
    let check = |text: String, needles: &[&str]| {
        let err = RunFile::from_toml(&text, Path::new("run.toml")).unwrap_err().to_string();
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
    let cfg = RunFile::from_toml(&value_config(&out), Path::new("run.toml")).unwrap();
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
    let rows = pool.read_batch(&thrive_pool::BatchKey::value_source(1, 0)).unwrap();
    assert!(!rows.is_empty() && rows.len() <= 12);
    let lineage = pool.lineage(&rows[0].example_id).unwrap();
    assert_eq!(lineage.model_trained_on, vec![thrive_pool::BatchKey::real("train")]);
    // Cells keep their metrics, not their weights or checkpoints.
    let source = thrive_orchestrator::sources(&cfg)[0];
    assert_eq!(source.seed, 1);
    let cell = RunDir { root: out.clone() }.cell(8, 8, Some(source), 0);
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
    let err = |text: String| RunFile::from_toml(&text, Path::new("run.toml")).unwrap_err().to_string();
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
    let cfg = RunFile::from_toml(&text, Path::new("run.toml")).unwrap();
    let e = run(&cfg).unwrap_err().to_string();
    assert!(e.contains("value.num_real") && e.contains("6000"), "{e}");
    // Fixed, the same directory runs (the failed attempt recorded no configuration).
    let fixed = RunFile::from_toml(&text.replace("num_real = [0, 6000]", "num_real = [0, 8]"), Path::new("run.toml"));
    assert_eq!(run(&fixed.unwrap()).unwrap().runs.len(), 1 + 2 + 4);
}

#[test]
fn source_quality_keys_make_axes_and_bad_values_are_named() {
    let out = Path::new("/tmp/unused");
    let parse = |extra: &str| {
        let text = value_config(out).replace("seeds = [0, 2]", &format!("seeds = [0, 2]\n{extra}"));
        // `sources = ...` in `extra` replaces the file's.
        let text = if extra.contains("sources") { text.replacen("sources = [1]\n", "", 1) } else { text };
        RunFile::from_toml(&text, Path::new("run.toml"))
    };
    // No key: the paper's one source a seed, laid out as before.
    let cfg = parse("").unwrap();
    let s = sources(&cfg);
    assert_eq!(s.len(), 1);
    assert_eq!(s[0].quality, SourceQuality { real: None, epochs: None, temperature: None });
    assert_eq!(RunDir { root: out.into() }.source_model(s[0]), out.join("models/value/source-1"));
    assert_eq!(s[0].batch(), thrive_pool::BatchKey::value_source(1, 0));
    // A list is an axis, a single value is not; every seed gets every quality.
    let cfg = parse("sources = [1, 3]\nsource_real = [4, 16]\nsource_epochs = 2\nsource_temperature = [0.5, 1.0]")
        .unwrap_or_else(|e| panic!("{e}"));
    let s = sources(&cfg);
    assert_eq!(s.len(), 2 * 2 * 2);
    assert!(s.iter().all(|s| s.quality.epochs == Some(2)));
    let distinct: std::collections::BTreeSet<_> = s.iter().map(|s| format!("{:?}", s.batch())).collect();
    assert_eq!(distinct.len(), 8, "every source has its own pool batch");
    assert_eq!(
        RunDir { root: out.into() }.source_model(s[1]),
        out.join("models/value/source-1-real-4-epochs-2-temperature-1")
    );
    // Cells with synthetic rows: 2 seeds x 3 num_real x 8 sources.
    let cells = plan(&cfg).iter().filter(|s| matches!(s, Step::Cell { source: Some(_), .. })).count();
    assert_eq!(cells, 2 * 3 * 8);
    let bad = |extra: &str, needles: &[&str]| {
        let err = parse(extra).unwrap_err().to_string();
        for n in needles {
            assert!(err.contains(n), "expected `{n}` in: {err}");
        }
    };
    bad("source_real = 0", &["value.source_real", "0"]);
    bad("source_real = []", &["value.source_real"]);
    bad("source_epochs = [1, 1]", &["value.source_epochs", "twice"]);
    bad("source_temperature = -0.5", &["value.source_temperature", "-0.5"]);
    bad("source_real = \"all\"", &["source_real"]);
    bad("pick = [\"first\"]", &["pick"]);
    bad("source_reel = 3", &["source_reel"]);
    // More source rows than the real split has: refused before any training.
    let tmp = tempfile::tempdir().unwrap();
    let text = value_config(&tmp.path().join("v")).replace("seeds = [0, 2]", "seeds = [0, 2]\nsource_real = 100000");
    let err = run(&RunFile::from_toml(&text, Path::new("run.toml")).unwrap()).unwrap_err().to_string();
    assert!(err.contains("value.source_real") && err.contains("100000"), "{err}");
    assert!(!tmp.path().join("v/models").exists());
}
