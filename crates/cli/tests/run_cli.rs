//! `thrive run` survives kill -9 at arbitrary moments: a run killed again and again and restarted
//! each time ends with the same results and the same pool as an uninterrupted run (same rows,
//! sampled by byte-identical adapters). Also `thrive status` and `thrive report RUN`.

mod common;
use common::root;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};
use thrive_core::ResultsTable;
use thrive_pool::Pool;

/// The generation loop's section of the run file.
const GENERATIONS: &str = "[run]\nworkflows = [\"replace\", \"accumulate\"]\ngenerations = 3\nchains = [1]\n";
/// A value-of-synthetic grid instead (10 cells, one source).
const VALUE: &str = "[value]\nnum_real = [0, 8, 16]\nnum_synthetic = [0, 8, 16]\nsources = [1]\nseeds = [0]\n";

fn write_config(dir: &Path, name: &str, kind: &str) -> PathBuf {
    let text = format!(
        r#"
out = "{name}"
model = "{model}"
device = "cpu"
[data]
helpsteer2 = "{data}"
{kind}
[sft]
lr = 1e-2
warmup_ratio = 0.0
lora_rank = 4
lora_alpha = 8.0
lora_dropout = 0.1
sequences_per_step = 8
micro_batch = 4
max_len = 128
checkpoint_every = 1
[sampling]
mode = "prompted"
count = 24
max_new_tokens = 12
batch_size = 8
"#,
        model = root().join("sampler/tests/fixtures/tiny-trained").display(),
        data = root().join("pool/tests/fixtures/helpsteer2").display(),
    );
    let path = dir.join(format!("{name}.toml"));
    std::fs::write(&path, text).unwrap();
    path
}

fn thrive(args: &[&str]) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_thrive"));
    c.args(["--log", "warn"]).args(args).stdout(Stdio::null()).stderr(Stdio::piped());
    c
}

/// Every pool row's id and text, and for synthetic rows the SHA-256 of the adapter that sampled
/// it (the adapter's path differs between the two run directories, so file hashes cannot be
/// compared).
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
/// spread over the run's length and restarted each time (`killed/`); returns the number of kills.
fn run_whole_and_killed(dir: &Path, kind: &str) -> usize {
    // The kill times are fractions of the uninterrupted run's time: the two kill tests must not
    // share the cores, or one's timing says nothing about the other's.
    static ONE_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let _turn = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let whole = write_config(dir, "whole", kind);
    let started = Instant::now();
    let out = thrive(&["run", whole.to_str().unwrap()]).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let full_time = started.elapsed();

    let killed = write_config(dir, "killed", kind);
    let mut state: u64 = 0x2545F4914F6CDD1D;
    let mut kills = 0;
    loop {
        let mut child = thrive(&["run", killed.to_str().unwrap()]).spawn().unwrap();
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        let wait = full_time.mul_f64((state % 1000) as f64 / 1000.0 * 0.5);
        let deadline = Instant::now() + wait;
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
    assert!(kills >= 3, "only {kills} kills: the run finished too fast to test");
    kills
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
    assert_eq!((a.setting.as_str(), a.runs.len()), ("lm-value", 9));
    // (As text: the empty cell's train_loss is NaN.)
    assert_eq!(format!("{:?}", a.runs), format!("{:?}", b.runs), "the cells differ after {kills} kills");
    assert!(pool_rows(&tmp.path().join("whole")) == pool_rows(&tmp.path().join("killed")));
    let s = status_json(&tmp.path().join("killed"));
    assert_eq!((s["done"].clone(), s["total"].clone()), (serde_json::json!(11), serde_json::json!(11)));
    let out = thrive(&["report", tmp.path().join("killed").to_str().unwrap()]).stdout(Stdio::piped()).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let table = String::from_utf8_lossy(&out.stdout);
    assert!(table.contains("num_real \\ num_synthetic"), "{table}");
    assert!(tmp.path().join("killed/results-figures/value-eval-loss-heatmap.png").exists());
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
        // The same out directory both times: rows record their adapter's path.
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
