//! `thrive linreg` end to end: results, manifest, figures with theory lines, the summary's
//! closed form and notes, determinism across thread counts, and bad input named.

mod common;

use common::{fails, ok};
use thrive_core::ResultsTable;

#[test]
fn linreg_writes_results_figures_and_theory() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("lr.parquet");
    let stdout = ok(&[
        "linreg",
        "--dim",
        "3,10",
        "--n",
        "10,40",
        "--sigma2",
        "0.1,1",
        "--generations",
        "8",
        "--seeds",
        "0..3",
        "--out",
        out.to_str().unwrap(),
        "--report",
    ]);
    let table = ResultsTable::read_parquet(&out).unwrap();
    assert_eq!(table.setting, "linreg");
    assert_eq!(table.param_names(), ["d", "n", "sigma2"]);
    assert_eq!(table.metric_names, ["test_mse"]);
    assert_eq!(table.runs.len(), 2 * 2 * 2 * 3 * 3);
    assert_eq!(table.num_rows(), 2 * 2 * 2 * 3 * 3 * 8);
    assert!(table.runs.iter().all(|r| r.metrics.iter().all(|v| v.is_finite() && *v >= 0.0)));
    assert!(dir.path().join("lr.manifest.json").exists());
    let svg = std::fs::read_to_string(dir.path().join("lr-figures/test_mse_d-3_sigma2-1.svg")).unwrap();
    assert!(svg.contains("theory (dashed)"), "no theory legend");
    // The summary has the closed form beside the means, and says where it does not apply.
    assert!(
        stdout.contains("test_mse (theory, closed form)") && stdout.contains("test_mse (mean ± sd over seeds)"),
        "{stdout}"
    );
    assert!(stdout.contains("does not apply to d = 10, n = 10: it needs n > d + 1"), "{stdout}");
    assert!(!stdout.contains("d = 3, n = 10: it needs"), "{stdout}");
    assert!(stdout.contains("Accumulate-Subsample has no closed form"), "{stdout}");
}

#[test]
fn selection_records_draws_and_rejections() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("v.parquet");
    let o = out.to_str().unwrap();
    ok(&["linreg", "--dim", "3", "--n", "20", "--generations", "4", "--seeds", "0..2", "--workflow", "replace"]
        .into_iter()
        .chain(["--verifier-bias", "0.5,1", "--select-threshold", "0.2", "--out", o])
        .collect::<Vec<_>>());
    let table = ResultsTable::read_parquet(&out).unwrap();
    assert_eq!(table.param_names(), ["d", "n", "sigma2", "verifier_bias", "select_threshold"]);
    assert_eq!(table.metric_names, ["test_mse", "synthetic_draws", "rejected_draws"]);
    // Generation 2 on: every row labelled once (20 kept), the rest rejected.
    for r in &table.runs {
        for row in r.metrics.chunks(3).skip(1) {
            assert!(row[1] == 20.0 + row[2] && row[2] > 0.0, "{row:?}");
        }
    }
}

#[test]
fn real_weight_is_a_grid_axis_and_the_closed_form_keeps_to_the_paper_loop() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("w.parquet");
    let o = out.to_str().unwrap();
    let stdout = ok(&[
        "linreg",
        "--dim",
        "3",
        "--n",
        "20",
        "--generations",
        "12",
        "--seeds",
        "0..6",
        "--workflow",
        "accumulate",
        "--real-weight",
        "1,10",
        "--out",
        o,
        "--report",
    ]);
    let table = ResultsTable::read_parquet(&out).unwrap();
    assert_eq!(table.param_names(), ["d", "n", "sigma2", "real_weight"]);
    let manifest: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.path().join("w.manifest.json")).unwrap()).unwrap();
    assert_eq!(manifest["config"]["knobs"]["real_weight"], serde_json::json!([1.0, 10.0]));
    // Heavier real data: a lower mean test error at the last generation.
    let last = |w: f64| {
        let runs: Vec<_> =
            table.runs.iter().filter(|r| r.params.get("real_weight").unwrap().as_f64() == Some(w)).collect();
        runs.iter().map(|r| *r.metrics.last().unwrap()).sum::<f64>() / runs.len() as f64
    };
    assert!(last(10.0) < last(1.0), "w = 10: {}, w = 1: {}", last(10.0), last(1.0));
    // The closed form is the paper loop's: a theory row for w = 1 only.
    let rows: Vec<Vec<&str>> = stdout
        .lines()
        .skip_while(|l| !l.contains("theory, closed form"))
        .skip(2)
        .take_while(|l| !l.trim().is_empty())
        .map(|l| l.split_whitespace().collect())
        .collect();
    assert!(rows.len() == 1 && rows[0][3] == "1", "{stdout}");
}

#[test]
fn same_bytes_whatever_the_threads() {
    let dir = tempfile::tempdir().unwrap();
    let mut bytes = Vec::new();
    for threads in ["1", "2"] {
        let out = dir.path().join(format!("t{threads}.parquet"));
        ok(&[
            "--threads",
            threads,
            "linreg",
            "--dim",
            "4",
            "--n",
            "3,20",
            "--generations",
            "6",
            "--seeds",
            "0..4",
            "--out",
            out.to_str().unwrap(),
        ]);
        bytes.push(std::fs::read(&out).unwrap());
    }
    assert!(bytes[0] == bytes[1]);
}

#[test]
fn bad_input_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("sub/bad.parquet");
    let o = out.to_str().unwrap();
    let base = ["linreg", "--generations", "2", "--seeds", "0..2", "--out", o];
    for (extra, needle) in [
        (vec!["--dim", "0"], "--dim"),
        (vec!["--dim", "x"], "--dim"),
        (vec!["--n", "0"], "--n"),
        (vec!["--sigma2", "-1"], "--sigma2"),
        (vec!["--sigma2", "0"], "--sigma2"),
        (vec!["--grid", "big"], "--grid"),
        (vec!["--workflow", "collapse"], "collapse"),
        (vec!["--seeds", "3..3"], "--seeds"),
        (vec!["--keep-real", "1.1"], "--keep-real"),
        (vec!["--temperature", "0"], "--temperature"),
        (vec!["--truncate", "0"], "--truncate"),
        (vec!["--top-p", "0.5"], "--top-p"),
        (vec!["--fresh-real", "-3"], "--fresh-real"),
        (vec!["--max-draws", "0"], "--max-draws"),
        (vec!["--verifier-bias", "30", "--select-threshold", "0", "--max-draws", "1"], "generation 1"),
        (vec!["--real-weight", "0"], "--real-weight"),
        (vec!["--real-weight", "-2"], "--real-weight"),
    ] {
        let args: Vec<&str> = base.iter().copied().chain(extra).collect();
        fails(&args, &[needle]);
        assert!(!out.exists() && !dir.path().join("sub").exists(), "{args:?} wrote output");
    }
    fails(&["linreg", "--generations", "0", "--out", o], &["--generations"]);
    fails(&["linreg", "--out", dir.path().join("x.csv").to_str().unwrap()], &["--out", ".parquet"]);
}
