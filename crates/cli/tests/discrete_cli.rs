//! `thrive discrete` end to end: Replace rows end at fixation, the report's carried-forward
//! means, the fixation-against-n figure and table with the Wright-Fisher value, bad input named.

mod common;

use common::{fails, ok};
use thrive_core::{ResultsTable, Workflow};

#[test]
fn discrete_runs_until_fixation_and_reports_it() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("d.parquet");
    let stdout = ok(&[
        "discrete",
        "--outcomes",
        "3,10",
        "--n",
        "10,30",
        "--generations",
        "15",
        "--seeds",
        "0..5",
        "--out",
        out.to_str().unwrap(),
        "--report",
    ]);
    let table = ResultsTable::read_parquet(&out).unwrap();
    assert_eq!(table.setting, "discrete");
    assert_eq!(table.param_names(), ["K", "n"]);
    assert_eq!(table.metric_names, ["entropy", "entropy_fraction", "zero_outcomes", "fixation_generation"]);
    assert_eq!(table.runs.len(), 2 * 2 * 3 * 5);
    for (i, r) in table.runs.iter().enumerate() {
        let rows = table.generations(i);
        let k = r.params.get("K").unwrap().as_f64().unwrap();
        if r.workflow == Some(Workflow::Replace) {
            // Rows end at fixation, which every row records.
            assert_eq!(r.metrics[(rows - 1) * 4 + 2], k - 1.0, "{:?}", r.params);
            assert!(r.metrics.chunks(4).all(|row| row[3] == rows as f64));
        } else {
            assert_eq!(rows, 15);
        }
    }
    let figures = dir.path().join("d-figures");
    assert!(figures.join("fixation_generation_vs_n_replace.png").exists());
    let svg = std::fs::read_to_string(figures.join("fixation_generation_vs_n_replace.svg")).unwrap();
    assert!(svg.contains("theory (dashed)") && svg.contains("K = 10"));
    assert!(figures.join("entropy_K-3.png").exists());
    assert!(stdout.contains("fixation_generation under Replace") && stdout.contains("theory"), "{stdout}");
    assert!(stdout.contains("carry each Replace run's last values"), "{stdout}");
    // K = 10, n = 10: −2·10·10·0.9·ln 0.9 = 18.96.
    assert!(stdout.contains("19.0"), "{stdout}");
}

#[test]
fn bad_input_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("sub/bad.parquet");
    let o = out.to_str().unwrap();
    for (extra, needle) in [
        (vec!["--outcomes", "1"], "--outcomes"),
        (vec!["--outcomes", "ten"], "--outcomes"),
        (vec!["--n", "0"], "--n"),
        (vec!["--max-generations", "0"], "--max-generations"),
        (vec!["--generations", "0"], "--generations"),
        (vec!["--workflow", "collapse"], "collapse"),
        (vec!["--keep-real", "-0.5"], "--keep-real"),
        (vec!["--temperature", "0,1"], "--temperature"),
        (vec!["--top-p", "1.5"], "--top-p"),
        (vec!["--truncate", "2"], "--truncate"),
        (vec!["--select-threshold", "2"], "--select-threshold"),
    ] {
        let args: Vec<&str> = ["discrete", "--seeds", "0..2", "--out", o].into_iter().chain(extra).collect();
        fails(&args, &[needle]);
        assert!(!dir.path().join("sub").exists(), "{args:?} wrote output");
    }
}

#[test]
fn knob_lists_are_grid_axes_and_columns() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("k.parquet");
    ok(&[
        "discrete",
        "--outcomes",
        "4",
        "--n",
        "20",
        "--generations",
        "6",
        "--seeds",
        "0..2",
        "--workflow",
        "replace,accumulate-subsample",
        "--temperature",
        "0.5,1",
        "--keep-real",
        "0.2",
        "--out",
        out.to_str().unwrap(),
    ]);
    let table = ResultsTable::read_parquet(&out).unwrap();
    // Only the knobs that are set become columns; each list value is a cell of the grid.
    assert_eq!(table.param_names(), ["K", "n", "keep_real", "temperature"]);
    assert_eq!(table.runs.len(), 2 * 2 * 2);
    // With real draws kept, Replace is no longer absorbing: it runs --generations.
    assert!((0..table.runs.len()).all(|i| table.generations(i) == 6));
    let manifest: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.path().join("k.manifest.json")).unwrap()).unwrap();
    assert_eq!(manifest["config"]["knobs"]["temperature"], serde_json::json!([0.5, 1.0]), "{manifest}");
    assert_eq!(manifest["config"]["knobs"]["top_p"], serde_json::json!([1.0]), "{manifest}");
}
