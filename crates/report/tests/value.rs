//! The crossover of value-of-synthetic grids on hand-built tables with known answers, and the
//! value figures.

use thrive_core::{ParamValue, Params, ResultsTable, RunRecord};
use thrive_report::value::{
    crossing, crossover_markdown, crossovers, source_tables, value_figures, write_crossover_csv, Crossing,
};

fn cell(t: &mut ResultsTable, nr: usize, ns: usize, source_real: i64, seed: u64, loss: f64) {
    t.push(RunRecord {
        params: Params::new()
            .with("num_real", nr)
            .with("num_synthetic", ns)
            .with("source_real", source_real)
            .with("d", 2usize),
        workflow: None,
        seed,
        metrics: vec![loss, -loss],
    })
    .unwrap();
}

/// Baselines (source_real −1) shared by three sources:
/// - source 20, seed 0: gains 0.2 at 10, −0.05 at 100 → crossing at 10^(1 + 0.8) = 63.0957;
///   seed 1: gains 0.1, 0.1, −0.1 at 10, 100, 1000 → 10^2.5 = 316.228.
/// - source 1000: every row gains in both seeds → none in the grid.
/// - source 5: no gain at 10 already → below the smallest.
fn table() -> ResultsTable {
    let mut t = ResultsTable::new("gaussian-value", vec!["kl".into(), "neg".into()]);
    let base = [(10, 1.0), (100, 0.5), (1000, 0.2)];
    for seed in 0..2u64 {
        for &(nr, b) in &base {
            cell(&mut t, nr, 0, -1, seed, b);
        }
    }
    // source 20: (seed, num_real) → gain; two amounts, the better one carries the gain.
    let gains = [[0.2, -0.05, -0.3], [0.1, 0.1, -0.1]];
    for seed in 0..2u64 {
        for (k, &(nr, b)) in base.iter().enumerate() {
            cell(&mut t, nr, 10, 20, seed, b - gains[seed as usize][k]);
            cell(&mut t, nr, 100, 20, seed, b - gains[seed as usize][k] + 0.5);
            cell(&mut t, nr, 10, 1000, seed, b - 0.01);
            cell(&mut t, nr, 100, 1000, seed, b + 1.0);
            cell(&mut t, nr, 10, 5, seed, b + 0.01);
        }
    }
    t
}

fn close(a: f64, b: f64) -> bool {
    (a - b).abs() <= 1e-9 * b.abs()
}

#[test]
fn crossover_of_known_tables() {
    let c = crossovers(&table(), "kl").unwrap();
    assert_eq!(c.len(), 3);
    let by = |m: i64| c.iter().find(|c| c.source[0].1 == ParamValue::Int(m)).unwrap();
    // Sources sorted by their parameters.
    assert_eq!(c.iter().map(|c| c.source[0].1.clone()).collect::<Vec<_>>(), [5i64, 20, 1000].map(ParamValue::Int));
    let s20 = by(20);
    assert_eq!(
        s20.source,
        vec![("source_real".to_string(), ParamValue::Int(20)), ("d".to_string(), ParamValue::Int(2))]
    );
    let at: Vec<f64> =
        s20.seeds.iter().map(|(_, x)| if let Crossing::At(v) = x { *v } else { panic!("{x:?}") }).collect();
    assert!(close(at[0], 10f64.powf(1.8)) && close(at[1], 10f64.powf(2.5)), "{at:?}");
    let mean = (at[0] + at[1]) / 2.0;
    assert!(close(s20.mean.unwrap(), mean));
    assert!(close(s20.stderr.unwrap(), (at[1] - at[0]).abs() / 2.0));
    assert_eq!((s20.smallest, s20.largest), (10.0, 1000.0));

    let s1000 = by(1000);
    assert_eq!(s1000.seeds, vec![(0, Crossing::NoneInGrid), (1, Crossing::NoneInGrid)]);
    assert_eq!((s1000.mean, s1000.stderr), (None, None));
    assert!(s1000.text().contains("none in the grid, > 1000 (2 of 2)"), "{}", s1000.text());
    let s5 = by(5);
    assert_eq!(s5.seeds, vec![(0, Crossing::BelowSmallest), (1, Crossing::BelowSmallest)]);
    assert!(s5.text().contains("below the smallest, 10 (2 of 2)"), "{}", s5.text());

    let md = crossover_markdown(&c);
    assert!(md.contains("| source_real | d | seeds | crossover num_real |"), "{md}");
    assert!(
        md.contains(&format!("| 20 | 2 | 2 | {:.0} ± {:.0} (2 of 2 seeds) |", mean, (at[1] - at[0]) / 2.0)),
        "{md}"
    );

    // The other metric (the loss negated): some amount of synthetic rows always "gains".
    let neg = crossovers(&table(), "neg").unwrap();
    assert!(neg.iter().all(|c| c.mean.is_none()));
    assert!(crossovers(&table(), "loss").unwrap_err().to_string().contains("no metric `loss`"));
}

#[test]
fn crossing_edge_cases() {
    assert_eq!(crossing(&[]), None);
    // A row that exactly ties is where it crosses.
    assert_eq!(crossing(&[(10.0, 1.0, 0.5), (100.0, 1.0, 1.0)]), Some(Crossing::At(100.0)));
    // Rows in any order; a gain that returns after the crossing does not move it.
    assert_eq!(
        crossing(&[(1000.0, 1.0, 0.5), (100.0, 1.0, 1.5), (10.0, 1.0, 0.0)]),
        Some(Crossing::At((10f64.ln() + (1.0 / 1.5) * (100f64.ln() - 10f64.ln())).exp()))
    );
    // From num_real 0 the interpolation is linear: gain 1 at 0, −1 at 100 → 50.
    assert_eq!(crossing(&[(0.0, 2.0, 1.0), (100.0, 1.0, 2.0)]), Some(Crossing::At(50.0)));
    assert_eq!(crossing(&[(10.0, 1.0, 0.9)]), Some(Crossing::NoneInGrid));
    assert_eq!(crossing(&[(10.0, 1.0, 1.1)]), Some(Crossing::BelowSmallest));
}

/// The language-model grid's shape: baselines with `source` −1 and NaN source settings, sources
/// by seed and by temperature.
#[test]
fn lm_value_baselines_serve_every_source() {
    let mut t = ResultsTable::new("lm-value", vec!["eval_loss".into()]);
    let mut push = |nr: usize, ns: usize, source: i64, temp: f64, seed: u64, loss: f64| {
        t.push(RunRecord {
            params: Params::new()
                .with("model", "tiny")
                .with("num_real", nr)
                .with("num_synthetic", ns)
                .with("source", source)
                .with("source_temperature", temp),
            workflow: None,
            seed,
            metrics: vec![loss],
        })
        .unwrap()
    };
    for seed in 0..3u64 {
        push(0, 0, -1, f64::NAN, seed, 6.0);
        push(100, 0, -1, f64::NAN, seed, 2.0);
        push(1000, 0, -1, f64::NAN, seed, 1.0);
        for source in 0..2i64 {
            for temp in [0.5, 1.0] {
                push(0, 50, source, temp, seed, 3.0);
                push(100, 50, source, temp, seed, 1.5);
                // Hot sources hurt at 1000 real rows; cool ones still help a little.
                push(1000, 50, source, temp, seed, if temp > 0.7 { 1.2 } else { 0.95 });
            }
        }
    }
    let c = crossovers(&t, "eval_loss").unwrap();
    assert_eq!(c.len(), 4);
    for x in &c {
        let hot = x.source.iter().any(|(k, v)| k == "source_temperature" && *v == ParamValue::Float(1.0));
        assert_eq!(x.seeds.len(), 3);
        if hot {
            // gain 0.5 at 100, −0.2 at 1000: 10^(2 + 0.5/0.7).
            let want = 10f64.powf(2.0 + 0.5 / 0.7);
            assert!(x.seeds.iter().all(|(_, s)| matches!(s, Crossing::At(v) if close(*v, want))), "{x:?}");
            assert!(x.stderr.unwrap() < 1e-9, "{x:?}");
        } else {
            assert!(x.seeds.iter().all(|(_, s)| *s == Crossing::NoneInGrid), "{x:?}");
        }
    }
    // Heatmaps per temperature (not per source seed), each with the shared baselines.
    let subs = source_tables(&t).unwrap();
    assert_eq!(subs.len(), 2);
    for (source, sub) in &subs {
        assert_eq!(source[0].0, "source_temperature");
        assert_eq!(sub.runs.len(), 3 * (3 + 2 * 3));
    }
}

#[test]
fn value_figures_and_csv_are_written() {
    let dir = tempfile::tempdir().unwrap();
    let t = table();
    let c = crossovers(&t, "kl").unwrap();
    let mut files = value_figures(&t, &c, "kl", dir.path(), "kl").unwrap();
    files.extend(write_crossover_csv(&c, dir.path(), "kl_crossover").unwrap());
    let names: Vec<String> = files.iter().map(|f| f.file_name().unwrap().to_string_lossy().into_owned()).collect();
    for want in [
        "kl_vs_proportion_real_source_real-5.png",
        "kl_vs_proportion_real_source_real-20.svg",
        "kl_vs_proportion_real_source_real-1000.png",
        "kl_crossover_vs_source_real.png",
        "kl_crossover_vs_source_real.svg",
        "kl_crossover.csv",
        "kl_crossover_seeds.csv",
    ] {
        assert!(names.iter().any(|n| n == want), "{want} missing from {names:?}");
    }
    for f in &files {
        assert!(std::fs::metadata(f).unwrap().len() > 100, "{} looks empty", f.display());
    }
    let csv = std::fs::read_to_string(dir.path().join("kl_crossover.csv")).unwrap();
    let row20 = csv.lines().find(|l| l.starts_with("20,")).unwrap();
    assert!(row20.starts_with("20,2,kl,2,2,0,0,"), "{row20}");
    let seeds = std::fs::read_to_string(dir.path().join("kl_crossover_seeds.csv")).unwrap();
    assert!(seeds.contains("1000,2,kl,0,none_in_grid,\n") && seeds.contains("5,2,kl,1,below_smallest,\n"), "{seeds}");
}
