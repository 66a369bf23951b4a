//! What a researcher sees from the `thrive` binary: a log without colour escapes unless asked for,
//! the summary table in each `--format` (snapshots under tests/snapshots), figure file names.

mod common;
use common::run_toml::RunToml;

use common::s;
use std::path::Path;
use std::process::{Command, Stdio};

/// Runs a small Gaussian job with info logging and stderr to a file; returns the file's bytes.
fn stderr_bytes(dir: &Path, name: &str, color: Option<&str>, no_color: bool) -> Vec<u8> {
    let log = dir.join(format!("{name}.log"));
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_thrive"));
    cmd.args(["--log", "info"]);
    if let Some(c) = color {
        cmd.args(["--color", c]);
    }
    let out = dir.join(format!("{name}.parquet"));
    cmd.args(["gaussian", "--dim", "2", "--n", "10", "--generations", "2", "--seeds", "0", "--out", s(&out)]);
    cmd.env_remove("NO_COLOR");
    if no_color {
        cmd.env("NO_COLOR", "1");
    }
    let status = cmd.stderr(Stdio::from(std::fs::File::create(&log).unwrap())).status().unwrap();
    assert!(status.success());
    let bytes = std::fs::read(&log).unwrap();
    assert!(String::from_utf8_lossy(&bytes).contains("wrote"), "{}", String::from_utf8_lossy(&bytes));
    bytes
}

#[test]
fn log_colour_only_when_asked_or_on_a_terminal() {
    let dir = tempfile::tempdir().unwrap();
    let esc = |b: &[u8]| b.contains(&0x1b);
    // A file is not a terminal: plain text by default and with `never`.
    assert!(!esc(&stderr_bytes(dir.path(), "auto", None, false)));
    assert!(!esc(&stderr_bytes(dir.path(), "never", Some("never"), false)));
    // An explicit `always` wins, even over NO_COLOR.
    assert!(esc(&stderr_bytes(dir.path(), "always", Some("always"), false)));
    assert!(esc(&stderr_bytes(dir.path(), "always-no-color", Some("always"), true)));
    // NO_COLOR without --color: none.
    assert!(!esc(&stderr_bytes(dir.path(), "no-color", None, true)));
    common::fails(&["--color", "sometimes", "status", "x"], &["--color", "sometimes"]);
}

/// The snapshot folder, crates/cli/tests/snapshots.
fn snapshots() -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/snapshots")
}

/// Whether two texts agree: byte for byte, except that fields that are numbers (CSV fields, JSON
/// numbers) may differ in the last bits (relative 1e-9), as sums over seeds may on another CPU.
fn same_text(format: &str, got: &str, want: &str) -> bool {
    let close = |a: f64, b: f64| a == b || (a - b).abs() <= 1e-9 * a.abs().max(b.abs());
    match format {
        "csv" => {
            let (g, w): (Vec<&str>, Vec<&str>) = (got.lines().collect(), want.lines().collect());
            g.len() == w.len()
                && g.iter().zip(&w).all(|(g, w)| {
                    let (g, w): (Vec<&str>, Vec<&str>) = (g.split(',').collect(), w.split(',').collect());
                    g.len() == w.len()
                        && g.iter().zip(&w).all(|(a, b)| match (a.parse::<f64>(), b.parse::<f64>()) {
                            (Ok(a), Ok(b)) => close(a, b),
                            _ => a == b,
                        })
                })
        }
        "json" => {
            fn eq(a: &serde_json::Value, b: &serde_json::Value, close: &dyn Fn(f64, f64) -> bool) -> bool {
                use serde_json::Value::*;
                match (a, b) {
                    (Number(x), Number(y)) => close(x.as_f64().unwrap(), y.as_f64().unwrap()),
                    (Array(x), Array(y)) => x.len() == y.len() && x.iter().zip(y).all(|(a, b)| eq(a, b, close)),
                    (Object(x), Object(y)) => {
                        x.len() == y.len() && x.iter().all(|(k, v)| y.get(k).is_some_and(|w| eq(v, w, close)))
                    }
                    _ => a == b,
                }
            }
            let parse = |s: &str| serde_json::from_str::<serde_json::Value>(s).unwrap();
            eq(&parse(got), &parse(want), &close)
        }
        _ => got == want,
    }
}

/// Compares `got` with the committed snapshot `name` (THRIVE_UPDATE_SNAPSHOTS=1 rewrites it).
fn snapshot(name: &str, format: &str, got: &str) {
    let path = snapshots().join(name);
    if std::env::var_os("THRIVE_UPDATE_SNAPSHOTS").is_some() {
        std::fs::create_dir_all(snapshots()).unwrap();
        std::fs::write(&path, got).unwrap();
        return;
    }
    let want = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    assert!(same_text(format, got, &want), "{} differs; got:\n{got}", path.display());
}

/// A small Gaussian grid: d = 2, n ∈ {10, 100}, every workflow, 12 generations, 3 seeds.
fn gaussian_grid(dir: &Path) -> std::path::PathBuf {
    let out = dir.join("g.parquet");
    common::ok(&[
        "gaussian",
        "--dim",
        "2",
        "--n",
        "10,100",
        "--generations",
        "12",
        "--seeds",
        "0..3",
        "--out",
        s(&out),
    ]);
    out
}

#[test]
fn report_table_in_each_format() {
    let dir = tempfile::tempdir().unwrap();
    let results = gaussian_grid(dir.path());
    for (format, ext) in [("plain", "txt"), ("markdown", "md"), ("csv", "csv"), ("json", "json")] {
        let got = common::ok(&[
            "report",
            s(&results),
            "--no-figures",
            "--metric",
            "mean_squared_error,trace_ratio",
            "--format",
            format,
        ]);
        snapshot(&format!("report-gaussian.{ext}"), format, &got);
    }
    // `--json` is `--format json`.
    let json =
        common::ok(&["report", s(&results), "--no-figures", "--metric", "mean_squared_error,trace_ratio", "--json"]);
    snapshot("report-gaussian.json", "json", &json);
    // Fixed point with four significant digits and ± sd over the 3 seeds; no `e-1`.
    let plain = std::fs::read_to_string(snapshots().join("report-gaussian.txt")).unwrap();
    assert!(plain.contains(" ± ") && plain.contains("t=1") && plain.contains("t=10") && plain.contains("t=12"));
    assert!(!plain.contains("e-1") && !plain.contains("e-2"), "{plain}");
    common::fails(&["report", s(&results), "--format", "xml"], &["--format", "xml"]);
    common::fails(&["report", s(dir.path())], &["results.parquet"]);
}

/// The files in a folder, sorted.
fn names(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> =
        std::fs::read_dir(dir).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
    v.sort();
    v
}

/// A two-generation language-model run of the tiny test model (one workflow, one chain) in
/// `dir/<name>`, from a run file `dir/<name>.toml`.
fn lm_run(dir: &Path, name: &str) -> std::path::PathBuf {
    let loops = "[run]\nworkflows = [\"replace\"]\ngenerations = 2\nchains = [1]\n";
    let config = RunToml::new(name, loops)
        .sft("max_len", "64")
        .sampling("count", "12")
        .sampling("max_new_tokens", "8")
        .sampling("batch_size", "12")
        .write(&dir.join(format!("{name}.toml")));
    common::ok(&["run", s(&config)]);
    dir.join(name)
}

#[test]
fn figures_named_by_metric_and_facets_never_a_path() {
    let dir = tempfile::tempdir().unwrap();
    // d splits the figures; n colours the lines; sigma2 and real are the same everywhere.
    let out = dir.path().join("g.parquet");
    let args = ["--dim", "2,3", "--n", "10", "--generations", "3", "--seeds", "0..2", "--workflow", "replace"];
    common::ok(&[&["gaussian", "--out", s(&out), "--report"][..], &args].concat());
    let figures = names(&dir.path().join("g-figures"));
    for metric in thrive_gaussian::METRICS {
        for d in [2, 3] {
            for ext in ["png", "svg"] {
                assert!(figures.contains(&format!("{metric}_d-{d}.{ext}")), "{metric}, d = {d}: {figures:?}");
            }
        }
    }
    assert_eq!(figures.len(), thrive_gaussian::METRICS.len() * 2 * 2, "{figures:?}");
    let svg = std::fs::read_to_string(dir.path().join("g-figures/mean_squared_error_d-3.svg")).unwrap();
    assert!(svg.contains("95% bootstrap band, 2 seeds"), "the band is not named");

    // A language-model run: one figure per metric, the model by its last path component and the
    // mode in the title.
    let run = lm_run(dir.path(), "lm");
    let figures = names(&run.join("results-figures"));
    assert!(
        figures.contains(&"eval_loss.png".to_string()) && figures.contains(&"eval_loss.svg".to_string()),
        "{figures:?}"
    );
    assert!(figures.iter().all(|f| !f.contains("model") && !f.contains("tiny")), "{figures:?}");
    let svg = std::fs::read_to_string(run.join("results-figures/eval_loss.svg")).unwrap();
    assert!(svg.contains("model = tiny-trained") && svg.contains("mode = "), "title");
    assert!(svg.contains("one seed: no band"));

    // `thrive status` in each format.
    let plain = common::ok(&["status", s(&run)]);
    assert!(plain.contains("4 of 4 steps done") || plain.contains("steps done"), "{plain}");
    let md = common::ok(&["status", s(&run), "--format", "markdown"]);
    assert!(md.contains("| step | workflow | chain | gen | state | eval loss | train rows |"), "{md}");
    let csv = common::ok(&["status", s(&run), "--format", "csv"]);
    assert!(csv.starts_with("step,workflow,chain,gen,state,eval loss,train rows\n"), "{csv}");
    assert!(csv.lines().skip(1).all(|l| l.contains(",done,")), "{csv}");
    let json: serde_json::Value = serde_json::from_str(&common::ok(&["status", s(&run), "--format", "json"])).unwrap();
    assert_eq!(json["done"], json["total"]);
    common::fails(&["status", s(&run), "--format", "yaml"], &["--format", "yaml"]);
    // Every generation of an LM run in the summary.
    let table = common::ok(&["report", s(&run), "--no-figures", "--metric", "eval_loss"]);
    assert!(table.contains("t=1") && table.contains("t=2"), "{table}");
}

/// Every `§N` cited in the README, the tests' README, the crates (code, `--help`, run files) and
/// the scripts is a section heading of docs/protocol.md.
#[test]
fn protocol_citations_point_into_docs_protocol() {
    let repo = common::root().join("..");
    let doc = std::fs::read_to_string(repo.join("docs/protocol.md")).unwrap();
    let sections: Vec<String> = doc
        .lines()
        .filter(|l| l.starts_with('#'))
        .filter_map(|l| l.trim_start_matches('#').split_whitespace().next())
        .map(|n| n.trim_end_matches('.').to_string())
        .filter(|n| n.starts_with(|c: char| c.is_ascii_digit()))
        .collect();
    assert!(sections.contains(&"4.4".to_string()) && sections.contains(&"2.7".to_string()), "{sections:?}");
    fn walk(dir: &Path, out: &mut Vec<std::path::PathBuf>) {
        for e in std::fs::read_dir(dir).unwrap() {
            let p = e.unwrap().path();
            let name = p.file_name().unwrap().to_string_lossy().into_owned();
            if p.is_dir() {
                if name != "fixtures" && name != "snapshots" && !name.starts_with('.') {
                    walk(&p, out);
                }
            } else if [".rs", ".toml", ".md", ".py", ".sh"].iter().any(|x| name.ends_with(x)) {
                out.push(p);
            }
        }
    }
    let mut files = vec![repo.join("README.md"), repo.join("tests/README.md")];
    walk(&repo.join("crates"), &mut files);
    walk(&repo.join("scripts"), &mut files);
    let mut cited = 0;
    for f in files {
        let text = std::fs::read_to_string(&f).unwrap();
        for (i, _) in text.match_indices('§') {
            let n: String =
                text[i + '§'.len_utf8()..].chars().take_while(|c| c.is_ascii_digit() || *c == '.').collect();
            let n = n.trim_end_matches('.');
            if n.is_empty() {
                continue; // a `§` that cites nothing (as in this test)
            }
            assert!(sections.iter().any(|s| s == n), "{}: §{n} is not a section of docs/protocol.md", f.display());
            cited += 1;
        }
    }
    assert!(cited > 50, "only {cited} citations found");
}
