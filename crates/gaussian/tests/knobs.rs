//! The loop knobs on the Gaussian (signs, not numbers) and its tail metrics.

use thrive_core::{run_chain, ChainConfig, Knobs, Seeds, Workflow};
use thrive_gaussian::{Gaussian, METRICS};

fn col(name: &str) -> usize {
    METRICS.iter().position(|m| *m == name).unwrap()
}

/// Mean over `seeds` of metric `name` at generation `t`.
fn mean_at(g: &Gaussian, cfg: &ChainConfig, seeds: u64, name: &str, t: usize) -> f64 {
    (0..seeds).map(|s| run_chain(g, cfg, &Seeds::new(s)).unwrap()[(t - 1) * METRICS.len() + col(name)]).sum::<f64>()
        / seeds as f64
}

#[test]
fn keeping_real_data_stops_replace_collapse() {
    // Shumailov et al.: Replace with a tenth of the training set real every generation.
    let g = Gaussian::new(2, 1.0).unwrap();
    let mut cfg = ChainConfig::paper(Workflow::Replace, 20, 100);
    let collapsed = mean_at(&g, &cfg, 6, "trace_ratio", 100);
    cfg.knobs = Knobs { keep_real: 0.1, ..Knobs::PAPER };
    let kept = mean_at(&g, &cfg, 6, "trace_ratio", 100);
    assert!(collapsed < 0.05, "p = 0: trace ratio {collapsed} at t = 100");
    assert!(kept > 0.2 && kept > 10.0 * collapsed, "p = 0.1: {kept} vs p = 0: {collapsed}");
    // Generation 1 is the real data alone either way.
    let a = run_chain(&g, &cfg, &Seeds::new(3)).unwrap();
    let b = run_chain(&g, &ChainConfig::paper(Workflow::Replace, 20, 100), &Seeds::new(3)).unwrap();
    assert_eq!(a[..METRICS.len()], b[..METRICS.len()]);
    // Accumulate-Subsample keeps working with the pick; p = 1 trains on real data only.
    cfg.workflow = Workflow::AccumulateSubsample;
    cfg.generations = 5;
    run_chain(&g, &cfg, &Seeds::new(0)).unwrap();
    cfg.workflow = Workflow::Replace;
    cfg.knobs.keep_real = 1.0;
    let all_real = run_chain(&g, &cfg, &Seeds::new(0)).unwrap();
    let first = all_real[col("trace_ratio")];
    assert!(all_real.chunks(METRICS.len()).all(|r| (r[col("trace_ratio")] - first).abs() < 1e-9 * first));
    // Combined with --real, or out of range: refused, naming the flag.
    cfg.retained_real = 2;
    assert!(run_chain(&g, &cfg, &Seeds::new(0)).unwrap_err().to_string().contains("keep-real"));
    cfg.retained_real = 0;
    cfg.knobs.keep_real = 1.2;
    assert!(run_chain(&g, &cfg, &Seeds::new(0)).unwrap_err().to_string().contains("keep-real"));
}

#[test]
fn eigenvalue_tails_bracket_the_trace() {
    use thrive_gaussian::Root;
    for root in [Root::Cholesky, Root::Eigen] {
        let g = Gaussian { root, ..Gaussian::new(4, 2.0).unwrap() };
        for w in Workflow::ALL {
            let m = run_chain(&g, &ChainConfig::paper(w, 12, 10), &Seeds::new(1)).unwrap();
            for row in m.chunks(METRICS.len()) {
                let (lo, tr, hi) = (row[col("min_eigen_ratio")], row[col("trace_ratio")], row[col("max_eigen_ratio")]);
                assert!(lo > 0.0 && lo <= tr * (1.0 + 1e-12) && tr <= hi * (1.0 + 1e-12), "{root:?}: {lo} {tr} {hi}");
            }
        }
        // In one dimension both are the fitted variance over σ².
        let g = Gaussian { root, ..Gaussian::new(1, 2.0).unwrap() };
        let m = run_chain(&g, &ChainConfig::paper(Workflow::Replace, 10, 5), &Seeds::new(0)).unwrap();
        for row in m.chunks(METRICS.len()) {
            let v = row[col("fit_variance")] / 2.0;
            assert!((row[col("min_eigen_ratio")] - v).abs() < 1e-12 && (row[col("max_eigen_ratio")] - v).abs() < 1e-12);
        }
    }
    // Generation 1 fits the same real data under both roots: the Cholesky root's two-ended
    // search gives the full eigendecomposition's ends.
    let chol = Gaussian::new(30, 1.5).unwrap();
    assert_eq!(chol.root, Root::Cholesky, "the default root");
    let eigen = Gaussian { root: Root::Eigen, ..chol };
    for seed in 0..5 {
        let cfg = ChainConfig::paper(Workflow::Accumulate, 200, 1);
        let (a, b) =
            (run_chain(&chol, &cfg, &Seeds::new(seed)).unwrap(), run_chain(&eigen, &cfg, &Seeds::new(seed)).unwrap());
        for name in ["min_eigen_ratio", "max_eigen_ratio"] {
            let (x, y) = (a[col(name)], b[col(name)]);
            assert!((x - y).abs() <= 1e-12 * b[col("max_eigen_ratio")], "{name}: {x} vs {y}");
        }
    }
}

#[test]
fn temperature_and_truncation_shrink_the_spread() {
    let g = Gaussian::new(2, 1.0).unwrap();
    let mut cfg = ChainConfig::paper(Workflow::Accumulate, 50, 6);
    let plain = mean_at(&g, &cfg, 4, "trace_ratio", 6);
    cfg.knobs = Knobs { temperature: 0.7, ..Knobs::PAPER };
    let cold = mean_at(&g, &cfg, 4, "trace_ratio", 6);
    cfg.knobs = Knobs { temperature: 1.5, ..Knobs::PAPER };
    let hot = mean_at(&g, &cfg, 4, "trace_ratio", 6);
    cfg.knobs = Knobs { truncate: 1.0, ..Knobs::PAPER };
    let cut = mean_at(&g, &cfg, 4, "trace_ratio", 6);
    assert!(cold < 0.8 * plain && hot > 1.3 * plain && cut < 0.8 * plain, "{cold} {plain} {hot} {cut}");
    // A truncation no draw passes fails, naming the flag; top-p is the discrete setting's.
    cfg.knobs = Knobs { truncate: 1e-6, ..Knobs::PAPER };
    assert!(run_chain(&g, &cfg, &Seeds::new(0)).unwrap_err().to_string().contains("truncate"));
    cfg.knobs = Knobs { top_p: 0.5, ..Knobs::PAPER };
    assert!(run_chain(&g, &cfg, &Seeds::new(0)).unwrap_err().to_string().contains("top-p"));
}

#[test]
fn fresh_real_points_stop_replace_collapse() {
    let g = Gaussian::new(2, 1.0).unwrap();
    let mut cfg = ChainConfig::paper(Workflow::Replace, 20, 100);
    let collapsed = mean_at(&g, &cfg, 6, "trace_ratio", 100);
    cfg.knobs = Knobs { fresh_real: 5.0, ..Knobs::PAPER };
    let fresh = mean_at(&g, &cfg, 6, "trace_ratio", 100);
    assert!(fresh > 0.3 && fresh > 10.0 * collapsed, "fresh {fresh} vs {collapsed}");
    cfg.workflow = Workflow::AccumulateSubsample;
    cfg.generations = 4;
    cfg.knobs.keep_real = 0.2;
    run_chain(&g, &cfg, &Seeds::new(0)).unwrap();
}

#[test]
fn a_biased_verifier_pulls_the_fitted_mean_toward_its_bias() {
    // Feng et al. / Qiao et al.: only samples near b·e₁ survive, so the fit drifts toward it.
    let g = Gaussian::new(2, 1.0).unwrap();
    let mut cfg = ChainConfig::paper(Workflow::Replace, 30, 6);
    cfg.knobs = Knobs { verifier_bias: 2.0, select_threshold: 1.5, ..Knobs::PAPER };
    let mut first = 0.0;
    for s in 0..4 {
        let m = run_chain(&g, &cfg, &Seeds::new(s)).unwrap();
        // ‖μ̂ − b·e₁‖² shrinks while ‖μ̂‖² grows toward b² = 4; the mean's first coordinate is not a
        // metric, so read it from the squared error: near b² once the batch sits around b·e₁.
        first += m[5 * METRICS.len() + col("mean_squared_error")] / 4.0;
    }
    assert!(first > 0.5, "mean ‖μ̂‖² at t = 6 over b² = 4: {first}");
    let plain = mean_at(&g, &ChainConfig::paper(Workflow::Replace, 30, 6), 4, "mean_squared_error", 6);
    assert!(plain < 0.5, "{plain}");
    // A verifier nothing passes fails, naming the generation and the filter.
    cfg.knobs = Knobs { verifier_bias: 50.0, select_threshold: 0.1, ..Knobs::PAPER };
    let err = run_chain(&g, &cfg, &Seeds::new(0)).unwrap_err().to_string();
    assert!(err.contains("select-threshold") && err.contains("generation 1") && err.contains("verifier"), "{err}");
}

#[test]
fn draws_and_rejections_are_recorded_per_generation() {
    let g = Gaussian::new(2, 1.0).unwrap();
    let mut cfg = ChainConfig::paper(Workflow::Replace, 30, 4);
    cfg.record_draws = true;
    let width = METRICS.len() + thrive_core::DRAW_METRICS.len();
    // Without a filter: n draws, none rejected (generation 1 trains on real data: 0, 0).
    let m = run_chain(&g, &cfg, &Seeds::new(0)).unwrap();
    let rows: Vec<&[f64]> = m.chunks(width).collect();
    assert_eq!(rows.len(), 4);
    assert_eq!(&rows[0][METRICS.len()..], [0.0, 0.0]);
    assert!(rows[1..].iter().all(|r| r[METRICS.len()..] == [30.0, 0.0]));
    // The setting's metrics are the run's without recording.
    let plain = run_chain(&g, &ChainConfig::paper(Workflow::Replace, 30, 4), &Seeds::new(0)).unwrap();
    assert!(rows.iter().zip(plain.chunks(METRICS.len())).all(|(r, p)| r[..METRICS.len()] == *p));
    // A verifier rejects: draws = 30 + rejected.
    cfg.knobs = Knobs { verifier_bias: 1.0, select_threshold: 1.0, ..Knobs::PAPER };
    let m = run_chain(&g, &cfg, &Seeds::new(0)).unwrap();
    for r in m.chunks(width).skip(1) {
        let (draws, rejected) = (r[METRICS.len()], r[METRICS.len() + 1]);
        assert!(rejected > 0.0 && draws == 30.0 + rejected, "{draws} {rejected}");
    }
}

#[test]
fn retained_real_points_work_under_accumulate_subsample() {
    // `--real R` under Accumulate-Subsample: generation 1 trains on D₀ (the R points and the
    // n − R others), like every workflow; later subsamples always hold the R points.
    let g = Gaussian::new(3, 1.0).unwrap();
    let mut cfg = ChainConfig::paper(Workflow::AccumulateSubsample, 20, 6);
    cfg.retained_real = 5;
    let subsample = run_chain(&g, &cfg, &Seeds::new(4)).unwrap();
    cfg.workflow = Workflow::Replace;
    let replace = run_chain(&g, &cfg, &Seeds::new(4)).unwrap();
    for (a, b) in subsample[..METRICS.len()].iter().zip(&replace[..METRICS.len()]) {
        assert!((a - b).abs() <= 1e-12 * a.abs().max(1.0), "generation 1: {a} vs {b}");
    }
    assert_eq!(subsample.len(), 6 * METRICS.len());
}
