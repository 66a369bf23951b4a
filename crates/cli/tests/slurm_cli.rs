//! `thrive submit` against a real Slurm (scripts/slurm-local.sh starts one on this machine; then
//! set THRIVE_SLURM=1): a small run (2 workflows × 2 chains × 3 generations of the tiny test
//! model) submitted as jobs ends with the same results and pool, byte for byte, as `thrive run`
//! in one process; so does one whose jobs are cancelled mid-way and submitted again. Without
//! THRIVE_SLURM the test is skipped, and says so on stderr.

mod common;
use common::run_toml::RunToml;
use common::*;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

/// `dir/run.toml`: 2 workflows × 2 chains × 3 generations into `dir/run`, one CPU per job.
fn config(dir: &Path) -> PathBuf {
    let loops = "[run]\nworkflows = [\"replace\", \"accumulate\"]\ngenerations = 3\nchains = [1, 2]\n";
    let slurm = "[slurm]\ncpus = 1\ntime = \"00:30:00\"\n";
    RunToml::new("run", &format!("{loops}{slurm}")).sft("checkpoint_every", "1").write(&dir.join("run.toml"))
}

/// results.parquet and every pool file, relative path and bytes.
fn outputs(run: &Path) -> Vec<(PathBuf, Vec<u8>)> {
    let mut out = vec![(PathBuf::from("results.parquet"), std::fs::read(run.join("results.parquet")).unwrap())];
    let mut stack = vec![run.join("pool")];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap().flatten() {
            if e.path().is_dir() {
                stack.push(e.path());
            } else {
                out.push((e.path().strip_prefix(run).unwrap().to_path_buf(), std::fs::read(e.path()).unwrap()));
            }
        }
    }
    out.sort();
    out
}

/// The run's Slurm jobs still queued or running.
fn queued(run: &Path) -> usize {
    let s: serde_json::Value = serde_json::from_str(&ok(&["status", s(run), "--json"])).unwrap();
    s["steps"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|st| {
            ["PENDING", "RUNNING", "CONFIGURING", "COMPLETING"].contains(&st["slurm"]["state"].as_str().unwrap_or(""))
        })
        .count()
}

fn done_steps(run: &Path) -> u64 {
    let s: serde_json::Value = serde_json::from_str(&ok(&["status", s(run), "--json"])).unwrap();
    s["done"].as_u64().unwrap()
}

fn wait_for_jobs(run: &Path) {
    let deadline = Instant::now() + Duration::from_secs(1800);
    while queued(run) > 0 {
        assert!(Instant::now() < deadline, "the jobs did not finish in 30 minutes");
        std::thread::sleep(Duration::from_secs(2));
    }
}

fn same(a: &[(PathBuf, Vec<u8>)], b: &[(PathBuf, Vec<u8>)], what: &str) {
    assert_eq!(a.iter().map(|f| &f.0).collect::<Vec<_>>(), b.iter().map(|f| &f.0).collect::<Vec<_>>(), "{what}");
    for (x, y) in a.iter().zip(b) {
        assert!(x.1 == y.1, "{what}: {} differs", x.0.display());
    }
}

#[test]
fn submitted_runs_end_like_one_process_even_when_cancelled() {
    if std::env::var_os("THRIVE_SLURM").is_none() {
        let _ = writeln!(
            std::io::stderr(),
            "SKIPPED submitted_runs_end_like_one_process_even_when_cancelled: THRIVE_SLURM is not set \
             (bash scripts/slurm-local.sh, then THRIVE_SLURM=1)"
        );
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let cfg = config(tmp.path());
    let run = tmp.path().join("run");
    ok(&["run", s(&cfg)]);
    let whole = outputs(&run);
    std::fs::rename(&run, tmp.path().join("whole")).unwrap();

    // Submitted and left alone.
    let out = ok(&["submit", s(&cfg)]);
    assert!(out.contains("0 steps done, 0 running, 20 jobs submitted"), "{out}");
    wait_for_jobs(&run);
    assert_eq!(done_steps(&run), 20, "{}", ok(&["status", s(&run)]));
    same(&whole, &outputs(&run), "submitted");
    // Everything done: nothing to submit.
    assert!(ok(&["submit", s(&cfg)]).contains("20 steps done, 0 running, 0 jobs submitted"));
    std::fs::rename(&run, tmp.path().join("submitted")).unwrap();

    // Cancelled once a few steps are done (one is likely running), then submitted again.
    ok(&["submit", s(&cfg)]);
    let deadline = Instant::now() + Duration::from_secs(1800);
    while done_steps(&run) < 5 {
        assert!(Instant::now() < deadline);
        std::thread::sleep(Duration::from_millis(200));
    }
    let record: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(run.join("slurm/jobs.json")).unwrap()).unwrap();
    let jobs: Vec<&str> = record["steps"].as_object().unwrap().values().map(|v| v.as_str().unwrap()).collect();
    let status = Command::new("scancel").args(&jobs).status().unwrap();
    assert!(status.success());
    std::thread::sleep(Duration::from_secs(2));
    let done = done_steps(&run);
    assert!(done < 20, "every step finished before the jobs were cancelled");
    let out = ok(&["submit", s(&cfg)]);
    assert!(out.contains(&format!("{done} steps done")), "{out}");
    wait_for_jobs(&run);
    assert_eq!(done_steps(&run), 20, "{}", ok(&["status", s(&run)]));
    same(&whole, &outputs(&run), "cancelled and submitted again");
}
