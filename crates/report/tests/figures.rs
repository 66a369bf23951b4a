//! Figures and summaries from a small synthetic results table.

use thrive_core::{Params, ResultsTable, RunRecord, Workflow};
use thrive_report::{summary_rows, summary_text, trajectory_figures, FigureOptions, Theory};

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
                        workflow: Some(w),
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
            // The band is named in the legend, with the seeds behind it.
            assert!(text.contains("95% bootstrap band, 5 seeds"), "{}", f.display());
        }
    }
    // Named by the metric and the facet that splits the figures (d), not the constant sigma2.
    let mut names: Vec<String> = files.iter().map(|f| f.file_name().unwrap().to_string_lossy().into_owned()).collect();
    names.sort();
    assert_eq!(
        names,
        [
            "growth_d-1.png",
            "growth_d-1.svg",
            "growth_d-3.png",
            "growth_d-3.svg",
            "signed_d-1.png",
            "signed_d-1.svg",
            "signed_d-3.png",
            "signed_d-3.svg"
        ]
    );
    if let Ok(keep) = std::env::var("THRIVE_KEEP_FIGURES") {
        for f in &files {
            std::fs::copy(f, std::path::Path::new(&keep).join(f.file_name().unwrap())).unwrap();
        }
    }
    // No temporary files are left behind.
    assert!(std::fs::read_dir(dir.path()).unwrap().all(|e| !e.unwrap().file_name().to_string_lossy().starts_with('.')));
}

#[test]
fn theory_lines_are_drawn_dashed_where_they_apply() {
    let dir = tempfile::tempdir().unwrap();
    let mut opts = FigureOptions::new(dir.path());
    opts.resamples = 50;
    opts.metrics = vec!["growth".into()];
    let svg = |opts: &FigureOptions| {
        trajectory_figures(&table(), opts).unwrap();
        std::fs::read_to_string(dir.path().join("growth_d-3.svg")).unwrap()
    };
    let without = svg(&opts);
    // The toy's expected growth, g·d·1.2/n, only for Replace and d = 3.
    opts.theory = Some(Theory(std::sync::Arc::new(|p: &Params, w, metric: &str, g| {
        let (d, n) = (p.get("d")?.as_f64()?, p.get("n")?.as_f64()?);
        (w == Workflow::Replace && metric == "growth" && d == 3.0).then(|| g as f64 * d * 1.2 / n)
    })));
    let with = svg(&opts);
    assert!(with.contains("theory (dashed)") && !without.contains("theory"), "legend");
    // Each n's dashed line is many short segments: far more path elements than without.
    let paths = |s: &str| s.matches("<polyline").count() + s.matches("<path").count();
    assert!(paths(&with) > paths(&without) + 20, "{} vs {}", paths(&with), paths(&without));
    // d = 1 has no theory: its figure has no theory legend.
    let d1 = std::fs::read_to_string(dir.path().join("growth_d-1.svg")).unwrap();
    assert!(!d1.contains("theory"));
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
            r.metric == "growth"
                && r.workflow == Some(Workflow::Replace)
                && r.params[0].1 == "3"
                && r.params[1].1 == "10"
        })
        .unwrap();
    // growth at g = 10, d = 3, n = 10: 3 * mean(1.0..1.4) = 3.6.
    let (g, mean) = (r.at[1].generation, r.at[1].mean);
    assert_eq!(g, 10);
    assert!((mean - 3.6).abs() < 1e-12, "{mean}");
    assert_eq!(r.at[2].generation, 20);
    let text = summary_text(&rows);
    assert!(text.contains("t=20") && text.contains("accumulate-subsample"), "{text}");
}

/// A KDE-shaped table: fixed bandwidths, a rule of thumb and a schedule.
fn kde_table() -> ResultsTable {
    let mut t = ResultsTable::new("kde", vec!["nll".into(), "h".into()]);
    let bandwidths = [("0.1", 0.1), ("1", 1.0), ("10", 10.0), ("scott", f64::NAN), ("0.5*t^-0.5", 0.5)];
    for (name, h1) in bandwidths {
        for w in Workflow::ALL {
            for seed in 0..4u64 {
                let metrics = (1..=12)
                    .flat_map(|g| {
                        let h = if h1.is_nan() { 0.3 } else { h1 };
                        [(h.ln().powi(2) + 1.0) * (1.0 + g as f64 / 10.0) + seed as f64 / 100.0, h]
                    })
                    .collect();
                let params =
                    Params::new().with("dataset", "moons").with("bandwidth", name).with("h1", h1).with("n", 100usize);
                t.push(RunRecord { params, workflow: Some(w), seed, metrics }).unwrap();
            }
        }
    }
    t
}

#[test]
fn bandwidth_figures_cover_fixed_rules_and_schedules() {
    let dir = tempfile::tempdir().unwrap();
    let files = thrive_report::bandwidth::bandwidth_figures(&kde_table(), dir.path(), &[1, 0]).unwrap();
    let names: Vec<String> = files.iter().map(|f| f.file_name().unwrap().to_string_lossy().into_owned()).collect();
    assert!(names.contains(&"nll-vs-bandwidth.png".to_string()), "{names:?}");
    // The schedule is present, so NLL against generation coloured by bandwidth is drawn too.
    assert!(names.iter().any(|n| n.starts_with("nll-by-bandwidth") && n.ends_with(".svg")), "{names:?}");
    let svg = std::fs::read_to_string(dir.path().join("nll-vs-bandwidth.svg")).unwrap();
    assert!(svg.contains("generation 12") && svg.contains("bandwidth h"), "missing legend or axis");

    // Without at least two fixed bandwidths there is nothing to draw against bandwidth.
    let mut single = ResultsTable::new("kde", vec!["nll".into(), "h".into()]);
    single
        .push(RunRecord {
            params: Params::new().with("bandwidth", "0.1").with("n", 10usize),
            workflow: Some(Workflow::Replace),
            seed: 0,
            metrics: vec![1.0, 0.1],
        })
        .unwrap();
    assert!(thrive_report::bandwidth::bandwidth_figures(&single, dir.path(), &[1]).unwrap().is_empty());
}
