//! `thrive gaussian --value` and `thrive report` on its results, end to end: results, the
//! crossover table and files, the proportion and crossover figures, determinism across thread
//! counts, and bad input refused by name before anything is written.

use std::path::Path;
use std::process::{Command, Output};
use thrive_core::ResultsTable;

fn thrive(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_thrive")).args(["--log", "warn"]).args(args).output().expect("run thrive")
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

const GRID: [&str; 12] = [
    "--dim",
    "2",
    "--num-real",
    "4,16,64,256",
    "--num-synthetic",
    "0,8,64",
    "--source-real",
    "8,64",
    "--seeds",
    "0..4",
    "--sigma2",
    "1",
];

#[test]
fn value_grid_report_writes_crossover_and_figures() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("v.parquet");
    let o = thrive(&[&["gaussian", "--value"][..], &GRID, &["--out", out.to_str().unwrap(), "--report"]].concat());
    assert!(o.status.success(), "{}", text(&o.stderr));
    let table = ResultsTable::read_parquet(&out).unwrap();
    assert_eq!(table.setting, "gaussian-value");
    assert_eq!(table.param_names(), ["num_real", "num_synthetic", "source_real", "d", "sigma2"]);
    assert_eq!(table.metric_names, ["kl", "mean_squared_error", "covariance_error"]);
    // Per seed: 4 cells without synthetic points, 4 × 2 × 2 with.
    assert_eq!(table.runs.len(), 4 * (4 + 16));
    assert!(dir.path().join("v.manifest.json").exists());

    let stdout = text(&o.stdout);
    assert!(stdout.contains("| source_real | d | sigma2 | seeds | crossover num_real |"), "{stdout}");
    assert!(stdout.contains("| 8 | 2 | 1 | 4 |") && stdout.contains("| 64 | 2 | 1 | 4 |"), "{stdout}");
    let figs = dir.path().join("v-figures");
    for f in [
        "kl_heatmap",
        "kl_lines",
        "kl_heatmap_source_real-8",
        "kl_lines_source_real-64",
        "kl_vs_proportion_real_source_real-8",
        "kl_vs_proportion_real_source_real-64",
        "kl_crossover_vs_source_real",
    ] {
        for ext in ["png", "svg"] {
            let p = figs.join(format!("{f}.{ext}"));
            assert!(
                p.exists(),
                "{} missing; have {:?}",
                p.display(),
                std::fs::read_dir(&figs).unwrap().collect::<Vec<_>>()
            );
        }
    }
    let svg = std::fs::read_to_string(figs.join("kl_vs_proportion_real_source_real-8.svg")).unwrap();
    assert!(svg.contains("proportion of real data") && svg.contains("total = 72"), "proportion figure lacks its lines");
    // kl spans far more than a factor of three from 4 to 256 real points: a log axis, so the
    // plentiful rows' rise is visible.
    let lines_svg = std::fs::read_to_string(figs.join("kl_lines.svg")).unwrap();
    assert!(lines_svg.contains("kl (log scale)"), "lines figure not on a log axis");
    let csv = std::fs::read_to_string(figs.join("kl_crossover.csv")).unwrap();
    let lines: Vec<&str> = csv.lines().collect();
    assert!(lines[0].starts_with("source_real,d,sigma2,metric,seeds,crossing_seeds"), "{csv}");
    assert_eq!(lines.len(), 3, "{csv}");
    let seeds = std::fs::read_to_string(figs.join("kl_crossover_seeds.csv")).unwrap();
    assert_eq!(seeds.lines().count(), 1 + 2 * 4, "{seeds}");

    // `thrive report` on the file prints the same table; --json carries the crossover.
    let again = thrive(&["report", out.to_str().unwrap(), "--no-figures"]);
    assert!(again.status.success(), "{}", text(&again.stderr));
    assert!(text(&again.stdout).contains("| source_real | d | sigma2 | seeds | crossover num_real |"));
    let json = thrive(&["report", out.to_str().unwrap(), "--no-figures", "--json", "--metric", "kl,covariance_error"]);
    assert!(json.status.success(), "{}", text(&json.stderr));
    let v: serde_json::Value = serde_json::from_slice(&json.stdout).unwrap();
    assert_eq!(v.as_array().unwrap().len(), 2);
    assert_eq!(v[0]["crossover"].as_array().unwrap().len(), 2);
}

#[test]
fn same_bytes_whatever_the_threads() {
    let dir = tempfile::tempdir().unwrap();
    let mut bytes = Vec::new();
    for threads in ["1", "2"] {
        let out = dir.path().join(format!("t{threads}.parquet"));
        let o = thrive(
            &[&["--threads", threads, "gaussian", "--value"][..], &GRID, &["--out", out.to_str().unwrap()]].concat(),
        );
        assert!(o.status.success(), "{}", text(&o.stderr));
        bytes.push(std::fs::read(&out).unwrap());
    }
    assert!(bytes[0] == bytes[1], "results differ between 1 and 2 threads");
}

/// Runs `args` expecting failure; the message must mention `needle` and nothing may be written.
fn fails(args: &[&str], needle: &str, out: &Path) {
    let o = thrive(args);
    assert!(!o.status.success(), "{args:?} succeeded");
    let err = text(&o.stderr);
    assert!(err.contains(needle), "{args:?}: expected `{needle}` in:\n{err}");
    assert!(!err.contains("panicked"), "{args:?} panicked:\n{err}");
    assert!(!out.exists() && !out.parent().unwrap().exists(), "{args:?} wrote something");
}

#[test]
fn bad_value_input_names_the_flag_and_writes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out").join("v.parquet");
    let o = out.to_str().unwrap();
    let v = |rest: &[&'static str]| [&["gaussian", "--value", "--out", o][..], rest].concat();
    fails(&v(&["--num-real", "10,10"]), "--num-real", &out);
    fails(&v(&["--num-real", "ten"]), "--num-real", &out);
    fails(&v(&["--num-real", ""]), "--num-real", &out);
    fails(&v(&["--dim", "10", "--num-real", "5,50"]), "--num-real", &out);
    fails(&v(&["--dim", "2", "--num-real", "0,5", "--num-synthetic", "0,5"]), "--num-real", &out);
    fails(&v(&["--num-synthetic", "0"]), "--num-synthetic", &out);
    fails(&v(&["--num-synthetic=-5"]), "--num-synthetic", &out);
    fails(&v(&["--source-real", "0"]), "--source-real", &out);
    fails(&v(&["--source-real", "8", "--dim", "10", "--num-real", "20"]), "--source-real", &out);
    fails(&v(&["--sigma2", "1,2"]), "--sigma2", &out);
    fails(&v(&["--sigma2", "0"]), "--sigma2", &out);
    fails(&v(&["--seeds", "3..3"]), "--seeds", &out);
    fails(&v(&["--n", "100"]), "--n", &out);
    fails(&v(&["--generations", "3"]), "--generations", &out);
    fails(&v(&["--workflow", "replace"]), "--workflow", &out);
    fails(&["gaussian", "--num-real", "10", "--out", o], "--value", &out);
    fails(&v(&["--root", "qr"]), "--root", &out);
}
