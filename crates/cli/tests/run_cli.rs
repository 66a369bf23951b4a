//! `thrive run` survives kill -9 at arbitrary moments: a run killed again and again and restarted
//! each time ends with the same results and the same pool as an uninterrupted run (same rows,
//! sampled by byte-identical adapters). Also `thrive status` and `thrive report RUN`.

mod common;
use common::run_toml::RunToml;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};
use thrive_core::ResultsTable;
use thrive_pool::Pool;

/// The generation loop's section of the run file.
const GENERATIONS: &str = "[run]\nworkflows = [\"replace\", \"accumulate\"]\ngenerations = 3\nchains = [1]\n";
/// A value-of-synthetic grid instead, with a source-quality axis: one source seed fine-tuned on 8
/// and on 24 real rows, 3 cells without synthetic rows and 3 x 2 x 2 with them.
const VALUE: &str =
    "[value]\nnum_real = [0, 8, 16]\nnum_synthetic = [0, 8, 16]\nsources = [1]\nsource_real = [8, 24]\nseeds = [0]\n";

/// `dir/<name>.toml`: a run into `dir/<name>` with these loop sections.
fn write_config(dir: &Path, name: &str, kind: &str) -> PathBuf {
    RunToml::new(name, kind)
        .sft("lora_dropout", "0.1")
        .sft("checkpoint_every", "1")
        .sampling("count", "24")
        .write(&dir.join(format!("{name}.toml")))
}

fn thrive(args: &[&str]) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_thrive"));
    c.args(["--log", "warn"]).args(args).stdout(Stdio::null()).stderr(Stdio::piped());
    c
}

/// Every pool row's id and text, and for synthetic rows the SHA-256 of the adapter that sampled
/// it.
fn pool_rows(dir: &Path) -> Vec<(String, String, String, String)> {
    let pool = Pool::open(dir.join("pool")).unwrap();
    let mut v = Vec::new();
    for f in &pool.manifest().files {
        for e in pool.read_batch(&f.key).unwrap() {
            let sha = match &e.origin {
                thrive_pool::Origin::Synthetic { provenance, .. } => provenance.adapter_sha256.clone().unwrap(),
                thrive_pool::Origin::Real { .. } => String::new(),
            };
            v.push((f.key.to_string() + " " + &e.example_id, e.prompt, e.response, sha));
        }
    }
    v.sort();
    v
}

/// Runs `kind` once uninterrupted (`whole/`) and once killed with SIGKILL at pseudo-random moments
/// and restarted each time (`killed/`); returns the number of kills.
///
/// The kill times are fractions of the uninterrupted run's time, and a resumed run has less left
/// to do, so each wait is at most half the one before. The cores' load can still change between
/// the two runs (other tests share them); if the killed run finishes before three kills, it is
/// thrown away and tried again with all waits a third as long.
fn run_whole_and_killed(dir: &Path, kind: &str) -> usize {
    // The two kill tests must not share the cores, or one's timing says nothing about the other's.
    static ONE_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let _turn = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let whole = write_config(dir, "whole", kind);
    let started = Instant::now();
    let out = thrive(&["run", whole.to_str().unwrap()]).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let full_time = started.elapsed();

    let mut state: u64 = 0x2545F4914F6CDD1D;
    let mut scale = 0.5;
    for _attempt in 0..5 {
        let _ = std::fs::remove_dir_all(dir.join("killed"));
        let killed = write_config(dir, "killed", kind);
        let mut kills = 0;
        loop {
            let mut child = thrive(&["run", killed.to_str().unwrap()]).spawn().unwrap();
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            let fraction = (state % 1000) as f64 / 1000.0 * scale * 0.5f64.powi(kills.min(3));
            let deadline = Instant::now() + full_time.mul_f64(fraction);
            let mut finished = None;
            while Instant::now() < deadline {
                if let Some(status) = child.try_wait().unwrap() {
                    finished = Some(status);
                    break;
                }
                std::thread::sleep(Duration::from_millis(10));
            }
            match finished {
                Some(status) => {
                    assert!(status.success(), "a restarted run failed");
                    break;
                }
                None if kills < 8 => {
                    child.kill().unwrap(); // SIGKILL
                    child.wait().unwrap();
                    kills += 1;
                }
                None => {
                    let out = child.wait_with_output().unwrap();
                    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
                    break;
                }
            }
        }
        if kills >= 3 {
            return kills as usize;
        }
        scale /= 3.0;
    }
    panic!("the run finished before three kills in five tries: too fast to test");
}

/// A fine-tune's TensorBoard events: `train/loss` at every step 1..=steps of its done.json, each
/// once (also after kills and resumes), and `eval/loss` before training (step 0) and at the end.
fn check_events(model: &Path) {
    let done: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(model.join("done.json")).unwrap()).unwrap();
    let steps = done["steps"].as_i64().unwrap();
    let events = thrive_core::tensorboard::read_events(&model.join(thrive_core::tensorboard::EVENTS_FILE)).unwrap();
    let of = |tag: &str| -> Vec<i64> {
        events
            .iter()
            .filter(|e| e.summary.as_ref().is_some_and(|s| s.value.iter().any(|v| v.tag == tag)))
            .map(|e| e.step)
            .collect()
    };
    assert_eq!(of("train/loss"), (1..=steps).collect::<Vec<_>>(), "{}", model.display());
    assert_eq!(of("train/tokens_per_second").len(), steps as usize, "{}", model.display());
    let eval = of("eval/loss");
    assert!(eval.first() == Some(&0) && eval.last() == Some(&steps), "{}: {eval:?}", model.display());
}

fn status_json(dir: &Path) -> serde_json::Value {
    let out = thrive(&["status", dir.to_str().unwrap(), "--json"]).stdout(Stdio::piped()).output().unwrap();
    serde_json::from_slice(&out.stdout).unwrap()
}

#[test]
fn killed_runs_end_like_uninterrupted_ones() {
    let tmp = tempfile::tempdir().unwrap();
    let kills = run_whole_and_killed(tmp.path(), GENERATIONS);
    let a = ResultsTable::read_parquet(&tmp.path().join("whole/results.parquet")).unwrap();
    let b = ResultsTable::read_parquet(&tmp.path().join("killed/results.parquet")).unwrap();
    assert_eq!(a.runs.len(), 2);
    assert_eq!(a.runs.len(), b.runs.len(), "the runs differ in number after {kills} kills");
    for (x, y) in a.runs.iter().zip(&b.runs) {
        assert_eq!(x.workflow, y.workflow);
        assert_eq!(x.metrics.len(), y.metrics.len(), "{:?} lost rows after {kills} kills", x.workflow);
        assert_eq!(x.metrics, y.metrics, "{:?} differs after {kills} kills", x.workflow);
    }
    let (a, b) = (pool_rows(&tmp.path().join("whole")), pool_rows(&tmp.path().join("killed")));
    assert!(a.len() > 60 && a.iter().any(|r| !r.3.is_empty()));
    assert!(a == b, "the pools differ after {kills} kills");
    // One TensorBoard run per (workflow, chain, generation), no step twice after the kills.
    for workflow in ["replace", "accumulate"] {
        for generation in 1..=3 {
            check_events(&tmp.path().join(format!("killed/models/{workflow}/chain-1/gen-{generation:04}")));
        }
    }

    // status and report on the finished run.
    let s = status_json(&tmp.path().join("killed"));
    assert_eq!(s["done"], s["total"]);
    assert_eq!(s["total"], 10);
    let out = thrive(&["report", tmp.path().join("killed").to_str().unwrap()]).stdout(Stdio::piped()).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(tmp.path().join("killed/results-figures").read_dir().unwrap().count() > 0);
}

#[test]
fn killed_value_grids_end_like_uninterrupted_ones() {
    let tmp = tempfile::tempdir().unwrap();
    let kills = run_whole_and_killed(tmp.path(), VALUE);
    let a = ResultsTable::read_parquet(&tmp.path().join("whole/results.parquet")).unwrap();
    let b = ResultsTable::read_parquet(&tmp.path().join("killed/results.parquet")).unwrap();
    assert_eq!((a.setting.as_str(), a.runs.len()), ("lm-value", 15));
    // Both source qualities made cells (and the real-only cells record none, as -1).
    let mut qualities: Vec<String> = a.runs.iter().map(|r| format!("{:?}", r.params.get("source_real"))).collect();
    qualities.sort();
    qualities.dedup();
    assert_eq!(qualities.len(), 3, "{qualities:?}");
    // (As text: the empty cell's train_loss is NaN.)
    assert_eq!(format!("{:?}", a.runs), format!("{:?}", b.runs), "the cells differ after {kills} kills");
    assert!(pool_rows(&tmp.path().join("whole")) == pool_rows(&tmp.path().join("killed")));
    let s = status_json(&tmp.path().join("killed"));
    assert_eq!((s["done"].clone(), s["total"].clone()), (serde_json::json!(19), serde_json::json!(19)));
    // One TensorBoard run per trained cell.
    check_events(&tmp.path().join("killed/models/value/real-only/seed-0/real-8"));
    check_events(&tmp.path().join("killed/models/value/source-1-real-8/seed-0/real-16-synthetic-8"));
    let out = thrive(&["report", tmp.path().join("killed").to_str().unwrap()]).stdout(Stdio::piped()).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let table = String::from_utf8_lossy(&out.stdout);
    assert!(table.contains("num_real \\ num_synthetic"), "{table}");
    assert!(tmp.path().join("killed/results-figures/eval_loss_heatmap.png").exists());
}

/// Every file under `dir`, relative path and bytes, in path order.
fn files_under(dir: &Path) -> Vec<(PathBuf, Vec<u8>)> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                stack.push(p);
            } else {
                out.push((p.strip_prefix(dir).unwrap().to_path_buf(), std::fs::read(&p).unwrap()));
            }
        }
    }
    out.sort();
    out
}

#[test]
fn results_and_pool_do_not_depend_on_threads() {
    let tmp = tempfile::tempdir().unwrap();
    let kind = "[run]\nworkflows = [\"replace\", \"accumulate\"]\ngenerations = 2\nchains = [1]\n";
    let config = write_config(tmp.path(), "run", kind);
    let mut outputs = Vec::new();
    for threads in ["1", "2"] {
        let out = thrive(&["--threads", threads, "run", config.to_str().unwrap()]).output().unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        let run = tmp.path().join("run");
        let results = std::fs::read(run.join("results.parquet")).unwrap();
        outputs.push((results, files_under(&run.join("pool"))));
        std::fs::rename(&run, tmp.path().join(format!("run-{threads}-threads"))).unwrap();
    }
    assert!(outputs[0].1.len() > 3, "{:?}", outputs[0].1.iter().map(|f| &f.0).collect::<Vec<_>>());
    assert!(outputs[0].0 == outputs[1].0, "results.parquet differs between 1 and 2 threads");
    for (a, b) in outputs[0].1.iter().zip(&outputs[1].1) {
        assert!(a == b, "pool file {} differs between 1 and 2 threads", a.0.display());
    }
    assert_eq!(outputs[0].1.len(), outputs[1].1.len());
}

/// `run.continue_from_previous`: generation 2 starts from generation 1's model, so its
/// validation loss before training is generation 1's final one; without it generation 2 starts
/// from the base model again, as generation 1 did.
#[test]
fn continue_from_previous_starts_from_the_last_model() {
    let tmp = tempfile::tempdir().unwrap();
    let mut before = Vec::new();
    for (name, continued) in [("base", false), ("continued", true)] {
        let kind = format!(
            "[run]\nworkflows = [\"replace\"]\ngenerations = 2\nchains = [0]\ncontinue_from_previous = {continued}\n"
        );
        let config = write_config(tmp.path(), name, &kind);
        let out = thrive(&["run", config.to_str().unwrap()]).output().unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        let t = ResultsTable::read_parquet(&tmp.path().join(name).join("results.parquet")).unwrap();
        let k = t.metric_names.len();
        let col = |m: &str| t.metric_names.iter().position(|x| x == m).unwrap();
        let r = &t.runs[0].metrics;
        assert_eq!(r.len(), 2 * k);
        before.push((r[col("eval_loss_before")], r[col("eval_loss")], r[k + col("eval_loss_before")]));
    }
    let (base, continued) = (before[0], before[1]);
    // Generation 1 is the same in both runs.
    assert_eq!((base.0, base.1), (continued.0, continued.1));
    assert!(base.1 < base.0 - 0.05, "generation 1 did not learn: {base:?}");
    assert_eq!(base.2, base.0, "without continue_from_previous generation 2 starts from the base model");
    assert!((continued.2 - continued.1).abs() <= 1e-4 * continued.1, "generation 2 starts at {continued:?}");
}

#[test]
fn bad_run_files_fail_clearly() {
    let tmp = tempfile::tempdir().unwrap();
    let path = write_config(tmp.path(), "bad", GENERATIONS);
    let text = std::fs::read_to_string(&path).unwrap().replace("[sampling]", "[sampling]\ncuont = 3");
    std::fs::write(&path, text).unwrap();
    let out = thrive(&["run", path.to_str().unwrap()]).output().unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("cuont") && err.contains("bad.toml"), "{err}");
    let out = thrive(&["status", tmp.path().to_str().unwrap()]).output().unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("not a run directory"));
}

fn run_ok(args: &[&str]) -> String {
    let out = thrive(args).stdout(Stdio::piped()).output().unwrap();
    assert!(out.status.success(), "{args:?}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap()
}

fn run_err(args: &[&str]) -> String {
    let out = thrive(args).output().unwrap();
    assert!(!out.status.success(), "{args:?} succeeded");
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(!err.contains("panicked"), "{err}");
    err
}

/// results.parquet and every pool file of a run directory.
fn outputs(run: &Path) -> (Vec<u8>, Vec<(PathBuf, Vec<u8>)>) {
    (std::fs::read(run.join("results.parquet")).unwrap(), files_under(&run.join("pool")))
}

/// `--list-steps --json`, then every step by `--step` in plan order (one of them SIGKILLed once
/// it has written a checkpoint, and run again), ends byte for byte like a whole `thrive run`; a
/// step whose dependencies are not done, and one not in the plan, are named.
#[test]
fn steps_one_by_one_end_like_a_whole_run() {
    let tmp = tempfile::tempdir().unwrap();
    let kind = "[run]\nworkflows = [\"replace\", \"accumulate\"]\ngenerations = 2\nchains = [1]\n";
    let config = write_config(tmp.path(), "run", kind);
    let c = config.to_str().unwrap();
    let run = tmp.path().join("run");
    run_ok(&["run", c]);
    let whole = outputs(&run);
    std::fs::rename(&run, tmp.path().join("whole")).unwrap();

    let listed: serde_json::Value = serde_json::from_str(&run_ok(&["run", c, "--list-steps", "--json"])).unwrap();
    let steps = listed["steps"].as_array().unwrap();
    let ids: Vec<&str> = steps.iter().map(|s| s["id"].as_str().unwrap()).collect();
    assert_eq!(
        ids,
        [
            "train/replace/chain-1/gen-1",
            "sample/replace/chain-1/gen-1",
            "train/replace/chain-1/gen-2",
            "train/accumulate/chain-1/gen-1",
            "sample/accumulate/chain-1/gen-1",
            "train/accumulate/chain-1/gen-2"
        ]
    );
    assert_eq!(steps[2]["depends_on"], serde_json::json!(["sample/replace/chain-1/gen-1"]));
    assert_eq!(steps[1]["depends_on"], serde_json::json!(["train/replace/chain-1/gen-1"]));
    assert!(steps.iter().all(|s| s["done"] == false));
    let text = run_ok(&["run", c, "--list-steps"]);
    let rows: Vec<String> = text.lines().map(|l| l.split_whitespace().collect::<Vec<_>>().join(" ")).collect();
    assert!(rows.contains(&"train/replace/chain-1/gen-2 pending sample/replace/chain-1/gen-1".into()), "{text}");

    let err = run_err(&["run", c, "--step", "train/replace/chain-9/gen-1"]);
    assert!(err.contains("train/replace/chain-9/gen-1") && err.contains("--list-steps"), "{err}");
    let err = run_err(&["run", c, "--step", "train/replace/chain-1/gen-2"]);
    assert!(err.contains("needs sample/replace/chain-1/gen-1"), "{err}");

    // The first fine-tune is killed once its first checkpoint is written, then resumed.
    let mut child = thrive(&["run", c, "--step", ids[0]]).spawn().unwrap();
    let model = run.join("models/replace/chain-1/gen-0001");
    let deadline = Instant::now() + Duration::from_secs(600);
    while !std::fs::read_dir(&model).is_ok_and(|d| {
        d.flatten().any(|e| e.file_name().to_string_lossy().starts_with("checkpoint-") && e.path().is_dir())
    }) {
        assert!(
            Instant::now() < deadline && child.try_wait().unwrap().is_none(),
            "no checkpoint before the step ended"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    child.kill().unwrap();
    child.wait().unwrap();
    for id in &ids {
        assert_eq!(run_ok(&["run", c, "--step", id]).trim(), format!("{id}: done"));
    }
    assert_eq!(run_ok(&["run", c, "--step", ids[0]]).trim(), format!("{}: already done", ids[0]));
    let listed: serde_json::Value = serde_json::from_str(&run_ok(&["run", c, "--list-steps", "--json"])).unwrap();
    assert!(listed["steps"].as_array().unwrap().iter().all(|s| s["done"] == true));
    let stepped = outputs(&run);
    assert!(whole.0 == stepped.0, "results.parquet differs between --step and a whole run");
    assert_eq!(whole.1.len(), stepped.1.len());
    for (a, b) in whole.1.iter().zip(&stepped.1) {
        assert!(a == b, "pool file {} differs between --step and a whole run", a.0.display());
    }
}

/// One job run in two directories gives byte-identical results and pools: the model column and
/// the pool's base_model and adapter_path are relative to the run (and pool) directory. A run
/// moved elsewhere is still read by `thrive status` and `thrive report`, and continues from where
/// it is.
#[test]
fn runs_in_two_directories_are_byte_identical_and_movable() {
    let tmp = tempfile::tempdir().unwrap();
    let kind = "[run]\nworkflows = [\"replace\"]\ngenerations = 2\nchains = [1]\n";
    let mut runs = Vec::new();
    for place in ["a", "b"] {
        std::fs::create_dir(tmp.path().join(place)).unwrap();
        let config = write_config(&tmp.path().join(place), "run", kind);
        run_ok(&["run", config.to_str().unwrap()]);
        runs.push(outputs(&tmp.path().join(place).join("run")));
    }
    assert!(runs[0].0 == runs[1].0, "results.parquet differs between two directories");
    assert_eq!(runs[0].1.len(), runs[1].1.len());
    assert!(runs[0].1.len() >= 4, "no synthetic batch");
    for (a, b) in runs[0].1.iter().zip(&runs[1].1) {
        assert!(a == b, "pool file {} differs between two directories", a.0.display());
    }
    let run = tmp.path().join("a/run");
    let table = ResultsTable::read_parquet(&run.join("results.parquet")).unwrap();
    let model = table.runs[0].params.get("model").unwrap().to_string();
    assert!(model.starts_with("../") && model.ends_with("/tiny-trained"), "{model}");
    assert!(run.join(&model).join("config.json").exists(), "{model} is not relative to the run");
    let pool = Pool::open(run.join("pool")).unwrap();
    let key = thrive_pool::BatchKey::synthetic("replace".parse().unwrap(), 1, 1);
    let row = pool.read_batch(&key).unwrap().remove(0);
    let thrive_pool::Origin::Synthetic { provenance: p, .. } = row.origin else { panic!("a synthetic row") };
    assert_eq!(p.adapter_path.as_deref(), Some("../models/replace/chain-1/gen-0001/adapter"));
    assert!(run.join("pool").join(p.adapter_path.unwrap()).join("adapter_model.safetensors").exists());
    assert!(run.join("pool").join(&p.base_model).join("config.json").exists(), "{}", p.base_model);

    check_events(&run.join("models/replace/chain-1/gen-0001"));
    check_events(&run.join("models/replace/chain-1/gen-0002"));

    // Moved to another folder at the same depth: status and report read it, and its run file
    // (pointed at the new place) finds every step done.
    std::fs::rename(tmp.path().join("a"), tmp.path().join("moved")).unwrap();
    let moved = tmp.path().join("moved/run");
    let status = status_json(&moved);
    assert_eq!(status["done"], status["total"], "{status}");
    run_ok(&["report", moved.to_str().unwrap()]);
    let config = tmp.path().join("moved/run.toml");
    let before = std::fs::read(moved.join("results.parquet")).unwrap();
    run_ok(&["run", config.to_str().unwrap()]);
    assert!(std::fs::read(moved.join("results.parquet")).unwrap() == before, "the moved run ran again");
}

/// `thrive status` on a partly done run: per chain the generation reached, the last validation
/// loss and an ETA from the recorded step times (the sampling step's too), divided by the steps
/// the run ran at a time.
#[test]
fn status_shows_progress_and_an_eta() {
    let tmp = tempfile::tempdir().unwrap();
    let kind = "[run]\nworkflows = [\"replace\"]\ngenerations = 3\nchains = [1]\n";
    let config = write_config(tmp.path(), "run", kind);
    let c = config.to_str().unwrap();
    for id in ["train/replace/chain-1/gen-1", "sample/replace/chain-1/gen-1", "train/replace/chain-1/gen-2"] {
        run_ok(&["run", c, "--step", id]);
    }
    let run = tmp.path().join("run");
    let read =
        |p: PathBuf| -> serde_json::Value { serde_json::from_str(&std::fs::read_to_string(p).unwrap()).unwrap() };
    let gen = |g: u32| read(run.join(format!("models/replace/chain-1/gen-{g:04}/done.json")));
    let sampled = read(run.join("models/replace/chain-1/gen-0001/sample.json"));
    assert_eq!(sampled["rows"], 24);
    let sample_seconds = sampled["seconds"].as_f64().unwrap();
    assert!(sample_seconds > 0.0);
    let s = status_json(&run);
    let chain = &s["chains"][0];
    assert_eq!((chain["workflow"].as_str(), chain["generation"].as_u64()), (Some("replace"), Some(2)), "{s}");
    assert_eq!(chain["eval_loss"], gen(2)["eval_loss"]);
    // Left: one sampling and one fine-tune, at the mean of those timed so far.
    let train_mean = (gen(1)["seconds"].as_f64().unwrap() + gen(2)["seconds"].as_f64().unwrap()) / 2.0;
    let want = sample_seconds + train_mean;
    let eta = chain["eta_seconds"].as_f64().unwrap();
    assert!((eta - want).abs() < 1e-9 * want, "{eta} != {want}");
    assert_eq!(s["eta_seconds"].as_f64(), Some(eta));
    let plain = run_ok(&["status", run.to_str().unwrap()]);
    assert!(plain.contains("3 of 5 steps done, ETA ") && plain.contains("2/3"), "{plain}");
    // Two steps at a time: the run's ETA halves, a chain's (one step after another) does not.
    std::fs::write(run.join("jobs.json"), r#"{"jobs": 2}"#).unwrap();
    let s = status_json(&run);
    assert!((s["eta_seconds"].as_f64().unwrap() - want / 2.0).abs() < 1e-9 * want, "{s}");
    assert_eq!(s["chains"][0]["eta_seconds"].as_f64(), Some(eta));
}

/// `--jobs 2` runs independent steps at once and ends byte for byte like `--jobs 1`.
#[test]
fn two_jobs_at_once_end_like_one() {
    let tmp = tempfile::tempdir().unwrap();
    let kind = "[run]\nworkflows = [\"replace\", \"accumulate\"]\ngenerations = 2\nchains = [1, 2]\n";
    let config = write_config(tmp.path(), "run", kind);
    let run = tmp.path().join("run");
    let mut results = Vec::new();
    for jobs in ["1", "2"] {
        run_ok(&["run", config.to_str().unwrap(), "--jobs", jobs]);
        results.push(outputs(&run));
        std::fs::rename(&run, tmp.path().join(format!("run-{jobs}"))).unwrap();
    }
    // pool.json, the real splits, generation 1's samples of 2 workflows × 2 chains.
    assert_eq!(results[0].1.len(), 7);
    assert!(results[0].0 == results[1].0, "results.parquet differs between --jobs 1 and 2");
    assert_eq!(results[0].1.len(), results[1].1.len());
    for (a, b) in results[0].1.iter().zip(&results[1].1) {
        assert!(a == b, "pool file {} differs between --jobs 1 and 2", a.0.display());
    }
}

/// A fake Slurm on the PATH: `sbatch` hands out job ids 101, 102, … and logs its arguments,
/// `squeue` prints `queue.txt`, `scancel` logs its arguments.
fn fake_slurm(bin: &Path) {
    std::fs::create_dir_all(bin).unwrap();
    let b = bin.display();
    let scripts = [
        ("sbatch", format!("#!/bin/bash\nif [ \"$1\" = --test-only ]; then echo \"sbatch: Job 1 to start at now using 1 processors on nodes localhost in partition debug\" >&2; exit 0; fi\nn=$(cat {b}/next 2>/dev/null || echo 101)\necho $((n + 1)) > {b}/next\necho \"$n $*\" >> {b}/sbatch.log\necho \"$n\"\n")),
        ("squeue", format!("#!/bin/bash\ncat {b}/queue.txt 2>/dev/null || true\n")),
        ("scancel", format!("#!/bin/bash\necho \"$*\" >> {b}/scancel.log\n")),
    ];
    for (name, text) in scripts {
        let path = bin.join(name);
        std::fs::write(&path, text).unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
}

fn with_path(mut c: Command, bin: &Path) -> Command {
    c.env("PATH", format!("{}:/usr/bin:/bin", bin.display()));
    c
}

/// `thrive submit` against a fake sbatch: one job per step, the value grid's cells in arrays by
/// source, afterok dependencies by job id, the [slurm] resources in every script; a second
/// submit keeps running jobs, cancels pending ones and submits only what is not done; `thrive
/// status` shows the jobs. Without sbatch, or with an unknown [slurm] key, nothing is submitted.
#[test]
fn submit_makes_one_job_per_step_and_resubmits_what_is_not_done() {
    let tmp = tempfile::tempdir().unwrap();
    let bin = tmp.path().join("bin");
    fake_slurm(&bin);
    let slurm = "[slurm]\npartition = \"gpu\"\naccount = \"lab\"\ngpus = 1\ncpus = 8\nmem = \"32G\"\ntime = \"02:00:00\"\nextra = [\"--qos=high\"]\nsetup = [\"module load cuda\"]\n";
    // One source model: the job names and counts below are per source.
    let value = VALUE.replace("source_real = [8, 24]\n", "");
    let config = write_config(tmp.path(), "grid", &format!("{value}{slurm}"));
    let c = config.to_str().unwrap();
    let run = tmp.path().join("grid");

    // No sbatch on the PATH: named, nothing written.
    let empty = tmp.path().join("empty");
    std::fs::create_dir_all(&empty).unwrap();
    let mut no_slurm = thrive(&["submit", c]);
    no_slurm.env("PATH", &empty);
    let out = no_slurm.output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.contains("sbatch") && err.contains("nothing was submitted"), "{err}");
    assert!(!run.join("slurm").exists());
    // An unknown [slurm] key: named.
    let bad = tmp.path().join("bad.toml");
    std::fs::write(&bad, std::fs::read_to_string(&config).unwrap().replace("partition =", "partiton =")).unwrap();
    let out = with_path(thrive(&["submit", bad.to_str().unwrap()]), &bin).output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.contains("partiton"), "{err}");
    assert!(!bin.join("sbatch.log").exists());

    let out = with_path(thrive(&["submit", c]), &bin).stdout(Stdio::piped()).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let log = std::fs::read_to_string(bin.join("sbatch.log")).unwrap();
    let lines: Vec<&str> = log.lines().collect();
    // train-source, sample-source after it, the cells without synthetic rows (3), the cells of
    // the source after its sampling (6).
    assert_eq!(lines.len(), 4, "{log}");
    assert!(lines[0].starts_with("101 --parsable ") && lines[0].ends_with("thrive-train-source+source-1.sh"), "{log}");
    assert!(lines[1].starts_with("102 --parsable --dependency=afterok:101 "), "{log}");
    assert!(lines[2].starts_with("103 --parsable ") && !lines[2].contains("dependency"), "{log}");
    assert!(lines[3].starts_with("104 --parsable --dependency=afterok:102 "), "{log}");
    let array = std::fs::read_to_string(lines[3].rsplit(' ').next().unwrap()).unwrap();
    for line in [
        "#SBATCH --array=0-5",
        "#SBATCH --partition=gpu",
        "#SBATCH --account=lab",
        "#SBATCH --gres=gpu:1",
        "#SBATCH --cpus-per-task=8",
        "#SBATCH --mem=32G",
        "#SBATCH --time=02:00:00",
        "#SBATCH --qos=high",
        "module load cuda",
        "'cell/source-1/seed-0/real-16-synthetic-16'",
        "--step \"$STEP\"",
    ] {
        assert!(array.contains(line), "`{line}` not in:\n{array}");
    }
    assert!(array.contains(&format!(
        "--output={}",
        run.join("slurm/logs/thrive-cells-after-sample-source+source-1-%A_%a.out").display()
    )));
    let s: serde_json::Value = serde_json::from_slice(
        &with_path(thrive(&["status", run.to_str().unwrap(), "--json"]), &bin)
            .stdout(Stdio::piped())
            .output()
            .unwrap()
            .stdout,
    )
    .unwrap();
    assert_eq!(s["steps"][0]["slurm"]["job"], "101");
    assert_eq!(s["steps"][10]["slurm"]["job"], "104_5");

    // The source's training runs, its sampling's job is pending, a real-only cell is done, the
    // rest have ended (failed or cancelled).
    std::fs::write(bin.join("queue.txt"), "101 RUNNING\n102 PENDING\n104_0 PENDING\n").unwrap();
    let done = run.join("models/value/real-only/seed-0/real-8");
    std::fs::create_dir_all(&done).unwrap();
    std::fs::write(done.join("done.json"), "{\"eval_loss\": 1.0, \"eval_loss_before\": 2.0, \"train_loss\": 1.5, \"train_examples\": 8, \"synthetic_examples\": 0, \"steps\": 1, \"seconds\": 1.0}").unwrap();
    let text = String::from_utf8(
        with_path(thrive(&["status", run.to_str().unwrap()]), &bin).stdout(Stdio::piped()).output().unwrap().stdout,
    )
    .unwrap();
    assert!(text.contains("101 RUNNING") && text.contains("102 PENDING") && text.contains("104_3 ENDED"), "{text}");
    let out = with_path(thrive(&["submit", c]), &bin).stdout(Stdio::piped()).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let cancelled = std::fs::read_to_string(bin.join("scancel.log")).unwrap();
    assert_eq!(cancelled.trim(), "102 104_0");
    let log = std::fs::read_to_string(bin.join("sbatch.log")).unwrap();
    let again: Vec<&str> = log.lines().skip(4).collect();
    assert_eq!(again.len(), 3, "{log}");
    assert!(again[0].starts_with("105 --parsable --dependency=afterok:101 "), "{log}");
    assert!(again[1].starts_with("106 --parsable ") && !again[1].contains("dependency"), "{log}");
    assert!(again[2].starts_with("107 --parsable --dependency=afterok:105 "), "{log}");
    let base = std::fs::read_to_string(again[1].rsplit(' ').next().unwrap()).unwrap();
    assert!(base.contains("#SBATCH --array=0-1") && !base.contains("'cell/real-only/seed-0/real-8'"), "{base}");
}
