//! Figures and summaries from a small synthetic results table.

use thrive_core::{Params, ResultsTable, RunRecord, Workflow};
use thrive_report::{summary_rows, summary_text, trajectory_figures, FigureOptions};

/// Two values of d (two facets), two of n (hue), three workflows, 5 seeds, 20 generations.
/// Metric `growth` = seed-dependent multiple of the generation, `signed` takes negative values.
fn table() -> ResultsTable {
    let mut t = ResultsTable::new("toy", vec!["growth".into(), "signed".into()]);
    for d in [1usize, 3] {
        for n in [10usize, 100] {
            for w in Workflow::ALL {
                for seed in 0..5u64 {
                    let metrics = (1..=20)
                        .flat_map(|g| [(g * d) as f64 * (1.0 + seed as f64 / 10.0) / n as f64, g as f64 - 10.0])
                        .collect();
                    t.push(RunRecord {
                        params: Params::new().with("d", d).with("n", n).with("sigma2", 1.0),
                        workflow: w,
                        seed,
                        metrics,
                    })
                    .unwrap();
                }
            }
        }
    }
    t
}

#[test]
fn one_png_and_svg_per_metric_and_facet() {
    let dir = tempfile::tempdir().unwrap();
    let mut opts = FigureOptions::new(dir.path());
    opts.resamples = 200;
    let files = trajectory_figures(&table(), &opts).unwrap();
    // 2 facets (d) x 2 metrics x (png + svg).
    assert_eq!(files.len(), 8, "{files:?}");
    for f in &files {
        let bytes = std::fs::read(f).unwrap();
        if f.extension().unwrap() == "png" {
            assert_eq!(&bytes[..8], b"\x89PNG\r\n\x1a\n", "{}", f.display());
            assert!(bytes.len() > 10_000, "{} looks empty", f.display());
        } else {
            let text = String::from_utf8(bytes).unwrap();
            assert!(text.contains("<svg") && text.contains("Accumulate-Subsample") && text.contains("n = 100"));
        }
    }
    assert!(dir.path().join("toy_growth_d3_sigma21.png").exists(), "{files:?}");
    if let Ok(keep) = std::env::var("THRIVE_KEEP_FIGURES") {
        for f in &files {
            std::fs::copy(f, std::path::Path::new(&keep).join(f.file_name().unwrap())).unwrap();
        }
    }
    // No temporary files are left behind.
    assert!(std::fs::read_dir(dir.path()).unwrap().all(|e| !e.unwrap().file_name().to_string_lossy().starts_with('.')));
}

#[test]
fn unknown_metric_or_hue_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let mut opts = FigureOptions::new(dir.path());
    opts.metrics = vec!["nope".into()];
    let err = trajectory_figures(&table(), &opts).unwrap_err().to_string();
    assert!(err.contains("nope") && err.contains("growth"), "{err}");
    let mut opts = FigureOptions::new(dir.path());
    opts.hue = "h".into();
    assert!(trajectory_figures(&table(), &opts).unwrap_err().to_string().contains("`h`"));
}

#[test]
fn summary_means_match_hand_computation() {
    let rows = summary_rows(&table(), &[1, 10, 0], &[]);
    // 2 d x 2 n x 3 workflows x 2 metrics.
    assert_eq!(rows.len(), 24);
    let r = rows
        .iter()
        .find(|r| {
            r.metric == "growth" && r.workflow == Workflow::Replace && r.params[0].1 == "3" && r.params[1].1 == "10"
        })
        .unwrap();
    // growth at g = 10, d = 3, n = 10: 3 * mean(1.0..1.4) = 3.6.
    let (g, mean, _) = r.at[1];
    assert_eq!(g, 10);
    assert!((mean - 3.6).abs() < 1e-12, "{mean}");
    assert_eq!(r.at[2].0, 20);
    let text = summary_text(&rows);
    assert!(text.contains("t=20") && text.contains("accumulate-subsample"), "{text}");
}
