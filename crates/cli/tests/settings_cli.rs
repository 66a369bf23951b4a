//! The `thrive` binary end to end for the Gaussian and KDE settings: results, manifest,
//! figures, determinism across thread counts, and bad input (clear error naming the
//! flag, non-zero exit, nothing written).

use std::path::Path;
use std::process::{Command, Output};
use thrive_core::ResultsTable;

fn thrive(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_thrive")).args(["--log", "warn"]).args(args).output().expect("run thrive")
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// Runs `args` expecting failure; the message must mention `needle` and `out` must not exist.
fn fails(args: &[&str], needle: &str, out: &Path) {
    let o = thrive(args);
    assert!(!o.status.success(), "{args:?} succeeded");
    let err = stderr(&o);
    assert!(err.contains(needle), "{args:?}: expected `{needle}` in:\n{err}");
    assert!(!err.contains("panicked"), "{args:?} panicked:\n{err}");
    assert!(!out.exists(), "{args:?} left {}", out.display());
    let parent = out.parent().unwrap();
    if parent.exists() {
        let leftovers: Vec<_> = std::fs::read_dir(parent).unwrap().map(|e| e.unwrap().file_name()).collect();
        assert!(leftovers.is_empty(), "{args:?} left {leftovers:?}");
    }
}

#[test]
fn gaussian_writes_results_manifest_and_figures() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("g.parquet");
    let o = thrive(&[
        "gaussian",
        "--dim",
        "3",
        "--n",
        "10,100",
        "--generations",
        "12",
        "--seeds",
        "0..4",
        "--workflow",
        "all",
        "--out",
        out.to_str().unwrap(),
        "--report",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let table = ResultsTable::read_parquet(&out).unwrap();
    assert_eq!(table.setting, "gaussian");
    assert_eq!(table.runs.len(), 2 * 3 * 4);
    assert_eq!(table.num_rows(), 2 * 3 * 4 * 12);
    let manifest: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.path().join("g.manifest.json")).unwrap()).unwrap();
    assert!(manifest.get("git_commit").is_some() && manifest.get("version").is_some(), "{manifest}");
    let figures: Vec<String> = std::fs::read_dir(dir.path().join("g-figures"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert!(figures.iter().any(|f| f == "mean_squared_error.png"), "{figures:?}");
    // The summary table is printed.
    let stdout = String::from_utf8_lossy(&o.stdout);
    assert!(stdout.contains("accumulate-subsample") && stdout.contains("t=12"), "{stdout}");
}

#[test]
fn same_seed_same_bytes_whatever_the_threads() {
    let dir = tempfile::tempdir().unwrap();
    for (setting, extra) in
        [("gaussian", vec!["--dim", "4", "--n", "20"]), ("kde", vec!["--dataset", "moons,blobs", "--n", "20"])]
    {
        let mut tables = Vec::new();
        for threads in ["1", "2"] {
            let out = dir.path().join(format!("{setting}{threads}.parquet"));
            let mut args = vec!["--threads", threads, setting, "--generations", "6", "--seeds", "3..9"];
            args.extend(&extra);
            args.extend(["--out", out.to_str().unwrap()]);
            let o = thrive(&args);
            assert!(o.status.success(), "{}", stderr(&o));
            tables.push(ResultsTable::read_parquet(&out).unwrap());
        }
        let bits =
            |t: &ResultsTable| t.runs.iter().flat_map(|r| r.metrics.iter().map(|v| v.to_bits())).collect::<Vec<_>>();
        assert_eq!(bits(&tables[0]), bits(&tables[1]), "{setting}");
    }
}

#[test]
fn kde_on_user_data_and_bandwidth_figures() {
    let dir = tempfile::tempdir().unwrap();
    let csv = dir.path().join("points.csv");
    let mut text = String::from("id,x,y,label\n");
    for i in 0..200 {
        let t = i as f64 * 0.1;
        text.push_str(&format!("{i},{},{},a\n", t.cos() * (1.0 + t / 20.0), t.sin()));
    }
    std::fs::write(&csv, text).unwrap();
    let out = dir.path().join("k.parquet");
    let o = thrive(&[
        "kde",
        "--data",
        csv.to_str().unwrap(),
        "--columns",
        "x,y",
        "--test-fraction",
        "0.25",
        "--bandwidth",
        "0.05,0.2,1,scott",
        "--generations",
        "5",
        "--seeds",
        "0..3",
        "--out",
        out.to_str().unwrap(),
        "--report",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let table = ResultsTable::read_parquet(&out).unwrap();
    assert_eq!(table.runs.len(), 4 * 3 * 3);
    assert_eq!(table.runs[0].params.get("n").unwrap().to_string(), "150");
    assert!(dir.path().join("k-figures/nll-vs-bandwidth.png").exists());
}

#[test]
fn bad_input_names_the_flag_and_writes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out").join("r.parquet");
    let o = out.to_str().unwrap();
    fails(&["gaussian", "--n", "1", "--out", o], "--n", &out);
    fails(&["gaussian", "--dim", "0", "--out", o], "--dim", &out);
    fails(&["gaussian", "--workflow", "recycle", "--out", o], "--workflow", &out);
    fails(&["gaussian", "--seeds", "5..5", "--out", o], "--seeds", &out);
    fails(&["kde", "--bandwidth", "-1", "--out", o], "bandwidth", &out);
    fails(&["kde", "--bandwidth", "0", "--out", o], "bandwidth", &out);
    fails(&["kde", "--dataset", "spirals", "--out", o], "dataset", &out);
    fails(&["kde", "--grid", "huge", "--out", o], "--grid", &out);
    // Loop knobs: ranges, and knobs a setting does not have.
    fails(&["gaussian", "--keep-real", "1.5", "--out", o], "--keep-real", &out);
    fails(&["gaussian", "--keep-real", "0.1,-0.2", "--out", o], "--keep-real", &out);
    fails(&["gaussian", "--temperature", "0", "--out", o], "--temperature", &out);
    fails(&["gaussian", "--truncate", "-1", "--out", o], "--truncate", &out);
    fails(&["gaussian", "--top-p", "0.9", "--out", o], "--top-p", &out);
    fails(&["gaussian", "--keep-real", "0.1", "--real", "5", "--out", o], "--keep-real", &out);
    fails(&["kde", "--keep-real", "2", "--out", o], "--keep-real", &out);
    fails(&["kde", "--temperature", "-1", "--out", o], "--temperature", &out);
    fails(&["kde", "--top-p", "0.5", "--out", o], "--top-p", &out);
    fails(&["gaussian", "--max-draws", "0.5", "--out", o], "--max-draws", &out);
    fails(&["gaussian", "--verifier-bias", "nan", "--out", o], "--verifier-bias", &out);
    // A selection that cannot fill a batch names the generation and the filter.
    let args = ["gaussian", "--generations", "3", "--seeds", "0", "--workflow", "replace", "--out", o];
    let mut bad_selection = args.to_vec();
    bad_selection.extend(["--verifier-bias", "40", "--select-threshold", "0.5", "--max-draws", "2"]);
    fails(&bad_selection, "generation 1", &out);
    fails(&bad_selection, "--select-threshold", &out);

    let bad = dir.path().join("bad.csv");
    std::fs::write(&bad, "x,y\n1,2\nNaN,3\n4,5\n").unwrap();
    fails(&["kde", "--data", bad.to_str().unwrap(), "--out", o], "NaN", &out);
    std::fs::write(&bad, "x,y\n1,2\n3\n").unwrap();
    fails(&["kde", "--data", bad.to_str().unwrap(), "--out", o], "bad.csv", &out);
    std::fs::write(&bad, "x,y\n1,two\n").unwrap();
    fails(&["kde", "--data", bad.to_str().unwrap(), "--out", o], "y", &out);
    // Fresh real data need a generator, not a fixed sample; counts only.
    std::fs::write(&bad, "x,y\n1,2\n3,4\n5,6\n7,8\n9,1\n").unwrap();
    fails(&["kde", "--data", bad.to_str().unwrap(), "--fresh-real", "5", "--out", o], "--fresh-real", &out);
    fails(&["gaussian", "--fresh-real", "2.5", "--out", o], "--fresh-real", &out);

    // An output path inside a file cannot be created.
    let file = dir.path().join("a-file");
    std::fs::write(&file, "").unwrap();
    let inside = file.join("r.parquet");
    let o = thrive(&["gaussian", "--generations", "2", "--seeds", "0..2", "--out", inside.to_str().unwrap()]);
    assert!(!o.status.success());
    assert!(stderr(&o).contains("a-file"), "{}", stderr(&o));
}
