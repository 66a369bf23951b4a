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
        (vec!["--fresh-real", "5", "--workflow", "accumulate-subsample"], "--fresh-real"),
    ] {
        let args: Vec<&str> = base.iter().copied().chain(extra).collect();
        fails(&args, &[needle]);
        assert!(!out.exists() && !dir.path().join("sub").exists(), "{args:?} wrote output");
    }
    fails(&["linreg", "--generations", "0", "--out", o], &["--generations"]);
    fails(&["linreg", "--out", dir.path().join("x.csv").to_str().unwrap()], &["--out", ".parquet"]);
}
