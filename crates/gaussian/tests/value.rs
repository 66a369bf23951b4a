//! The value-of-synthetic grid on Gaussians: the sign of the effect (theory in value.rs), its
//! seeding, and its refusals.

use thrive_core::{run_chain, ChainConfig, ParamValue, ResultsTable, Seeds, Workflow};
use thrive_gaussian::{Gaussian, Root, ValueGrid, METRICS, VALUE_METRICS, VALUE_SETTING};

fn grid(num_real: &[usize], num_synthetic: &[usize], source_real: &[usize], seeds: std::ops::Range<u64>) -> ValueGrid {
    ValueGrid {
        dims: vec![2],
        sigma2: 1.0,
        num_real: num_real.to_vec(),
        num_synthetic: num_synthetic.to_vec(),
        source_real: source_real.to_vec(),
        seeds: seeds.collect(),
        root: Root::Eigen,
    }
}

fn int(run: &thrive_core::RunRecord, name: &str) -> i64 {
    match run.params.get(name) {
        Some(ParamValue::Int(v)) => *v,
        other => panic!("{name}: {other:?}"),
    }
}

/// Mean KL over seeds of the cell (num_real, num_synthetic, source_real).
fn mean_kl(t: &ResultsTable, nr: i64, ns: i64, source: i64) -> f64 {
    let v: Vec<f64> = t
        .runs
        .iter()
        .filter(|r| int(r, "num_real") == nr && int(r, "num_synthetic") == ns && int(r, "source_real") == source)
        .map(|r| r.metrics[0])
        .collect();
    assert!(!v.is_empty(), "no cell ({nr}, {ns}, {source})");
    v.iter().sum::<f64>() / v.len() as f64
}

#[test]
fn synthetic_points_help_scarce_real_data_and_hurt_plentiful() {
    // Source fitted on 20 real points. Theory: any amount helps at num_real ≤ 10, any amount
    // hurts at num_real ≥ 20.
    let t = grid(&[6, 1000], &[0, 6, 60], &[20], 0..300).run().unwrap();
    assert_eq!(t.setting, VALUE_SETTING);
    assert_eq!(t.runs.len(), 300 * 2 * 3);
    let base_small = mean_kl(&t, 6, 0, -1);
    let base_large = mean_kl(&t, 1000, 0, -1);
    for ns in [6, 60] {
        let small = mean_kl(&t, 6, ns, 20);
        let large = mean_kl(&t, 1000, ns, 20);
        assert!(small < base_small, "num_real 6 + {ns} synthetic: {small} vs {base_small} without");
        assert!(large > base_large, "num_real 1000 + {ns} synthetic: {large} vs {base_large} without");
    }
}

#[test]
fn cells_without_synthetic_points_are_generation_one_of_a_chain() {
    let t = grid(&[5, 40], &[0, 8], &[30, 100], 0..4).run().unwrap();
    // Per seed: 2 baseline cells (source_real -1) + 2 × 2 synthetic cells.
    assert_eq!(t.runs.len(), 4 * 6);
    let g = Gaussian::new(2, 1.0).unwrap();
    for run in t.runs.iter().filter(|r| int(r, "num_synthetic") == 0) {
        assert_eq!(int(run, "source_real"), -1);
        let n = int(run, "num_real") as usize;
        let chain = run_chain(&g, &ChainConfig::paper(Workflow::Replace, n, 1), &Seeds::new(run.seed)).unwrap();
        let se = chain[METRICS.iter().position(|m| *m == "mean_squared_error").unwrap()];
        let ours = run.metrics[VALUE_METRICS.iter().position(|m| *m == "mean_squared_error").unwrap()];
        assert!((se - ours).abs() <= 1e-12 * se.abs().max(1e-300), "seed {}: {ours} vs {se}", run.seed);
    }
    // The source matters only where there are synthetic points.
    let a = t.runs.iter().find(|r| int(r, "num_synthetic") == 8 && int(r, "source_real") == 30).unwrap();
    let b = t.runs.iter().find(|r| int(r, "num_synthetic") == 8 && int(r, "source_real") == 100).unwrap();
    assert_ne!(a.metrics, b.metrics);
}

#[test]
fn same_results_for_any_thread_count_and_grid_shape() {
    let g = grid(&[3, 30, 300], &[0, 10, 100], &[10, 50], 0..6);
    let run = |threads| rayon::ThreadPoolBuilder::new().num_threads(threads).build().unwrap().install(|| g.run());
    let one = run(1).unwrap();
    assert_eq!(one, run(3).unwrap());
    // A cell does not depend on the rest of the grid: seed 4 alone, fewer sizes.
    let alone = grid(&[30], &[100], &[50], 4..5).run().unwrap();
    let same = one
        .runs
        .iter()
        .find(|r| {
            r.seed == 4 && int(r, "num_real") == 30 && int(r, "num_synthetic") == 100 && int(r, "source_real") == 50
        })
        .unwrap();
    assert_eq!(alone.runs[0], *same);
}

#[test]
fn bad_sizes_are_refused_by_name() {
    let cases: Vec<(ValueGrid, &str)> = vec![
        (grid(&[], &[0, 5], &[10], 0..1), "num-real"),
        (grid(&[5, 5], &[0, 5], &[10], 0..1), "num-real"),
        (grid(&[5], &[0, 5], &[2], 0..1), "source-real"),
        (grid(&[2], &[0, 5], &[10], 0..1), "num-real"),
        (grid(&[5], &[0], &[10], 0..1), "num-synthetic"),
        (grid(&[0], &[1, 5], &[10], 0..1), "num-real"),
        (grid(&[5], &[0, 5], &[10], 0..0), "seeds"),
        (ValueGrid { dims: vec![0], ..grid(&[5], &[0, 5], &[10], 0..1) }, "dim"),
        (ValueGrid { sigma2: -1.0, ..grid(&[5], &[0, 5], &[10], 0..1) }, "sigma2"),
    ];
    for (g, name) in cases {
        let err = g.run().unwrap_err();
        match &err {
            thrive_core::Error::InvalidParameter { name: n, .. } => assert_eq!(n, name, "{err}"),
            other => panic!("{other}"),
        }
    }
}
