//! The loop knobs on linear regression (signs, not numbers).

use thrive_core::{run_chain, ChainConfig, Knobs, Seeds, Workflow};
use thrive_linreg::LinReg;

fn mse_at(lr: &LinReg, cfg: &ChainConfig, t: usize) -> f64 {
    (0..6).map(|s| run_chain(lr, cfg, &Seeds::new(s)).unwrap()[t - 1]).sum::<f64>() / 6.0
}

#[test]
fn knobs_move_replace_error_the_expected_way() {
    let lr = LinReg::new(3, 1.0).unwrap();
    let mut cfg = ChainConfig::paper(Workflow::Replace, 20, 30);
    let plain = mse_at(&lr, &cfg, 30);
    cfg.knobs = Knobs { keep_real: 0.5, ..Knobs::PAPER };
    let kept = mse_at(&lr, &cfg, 30);
    cfg.knobs = Knobs { temperature: 0.3, ..Knobs::PAPER };
    let cold = mse_at(&lr, &cfg, 30);
    cfg.knobs = Knobs { truncate: 0.5, ..Knobs::PAPER };
    let cut = mse_at(&lr, &cfg, 30);
    assert!(kept < plain / 3.0 && cold < plain / 3.0 && cut < plain / 2.0, "{kept} {cold} {cut} vs {plain}");
    cfg.workflow = Workflow::AccumulateSubsample;
    cfg.knobs = Knobs { keep_real: 0.5, ..Knobs::PAPER };
    run_chain(&lr, &cfg, &Seeds::new(0)).unwrap();
}

#[test]
fn fresh_real_rows_keep_replace_error_bounded() {
    // Alemohammad et al.'s fresh-data loop: Replace's error grows like t·σ²d/(n − d − 1) without
    // fresh data and stays near one generation's with n fresh rows a generation.
    let lr = LinReg::new(3, 1.0).unwrap();
    let mut cfg = ChainConfig::paper(Workflow::Replace, 20, 40);
    let plain = mse_at(&lr, &cfg, 40);
    let first = mse_at(&lr, &cfg, 1);
    cfg.knobs = Knobs { fresh_real: 20.0, ..Knobs::PAPER };
    let fresh = mse_at(&lr, &cfg, 40);
    assert!(
        fresh < 3.0 * first && fresh < plain / 5.0,
        "t = 40: {fresh} with fresh rows, {plain} without; t = 1: {first}"
    );
    // Accumulate takes them too, and Accumulate-Subsample draws its subsample over them.
    cfg.workflow = Workflow::Accumulate;
    assert!(mse_at(&lr, &cfg, 40) < first);
    cfg.workflow = Workflow::AccumulateSubsample;
    let subsampled = mse_at(&lr, &cfg, 40);
    cfg.knobs = Knobs::PAPER;
    let without = mse_at(&lr, &cfg, 40);
    assert!(subsampled < without / 2.0, "accumulate-subsample t = 40: {subsampled} with fresh rows, {without} without");
}

#[test]
fn a_biased_verifier_pulls_the_fit_toward_its_weights() {
    // Yi et al.: labels kept only near the verifier's β' = w* + b·e₁ pull ŵ toward β'.
    let lr = LinReg::new(3, 1.0).unwrap();
    let mut cfg = ChainConfig::paper(Workflow::Replace, 30, 10);
    let plain = mse_at(&lr, &cfg, 10);
    cfg.knobs = Knobs { verifier_bias: 0.0, select_threshold: 0.0, ..Knobs::PAPER };
    let unbiased = mse_at(&lr, &cfg, 10);
    cfg.knobs = Knobs { verifier_bias: 1.0, select_threshold: 0.0, ..Knobs::PAPER };
    let biased = mse_at(&lr, &cfg, 10);
    // An unbiased verifier keeps labels near the truth; a biased one moves ŵ about b away (MSE ≈ b²).
    assert!(unbiased < plain / 2.0 && biased > 0.5, "unbiased {unbiased}, biased {biased}, none {plain}");
}

#[test]
fn labels_of_unequal_weight_fit_by_weighted_least_squares() {
    // Replace with --keep-real and --real-weight gives some rows of the design weight w: the fit
    // must solve XᵀWXβ = XᵀWy (n > d, one solution), here checked by Gaussian elimination.
    use thrive_core::{Selection, Setting};
    let lr = LinReg::new(3, 1.0).unwrap();
    let (run, mut batch) = lr.start(&Seeds::new(4), 12).unwrap();
    let w: Vec<f64> = (0..12).map(|i| if i % 4 == 1 { 7.0 } else { 1.0 }).collect();
    batch.weights = Some(w.clone());
    let mut pool = lr.new_pool(&run, Workflow::Replace);
    lr.push(&mut pool, &batch).unwrap();
    let fit = lr.fit(&run, &pool, Selection::All, 2).unwrap();
    // The normal equations, augmented [XᵀWX | XᵀWy].
    let mut a = [[0.0f64; 4]; 3];
    for ((x, y), w) in run.design().rows().zip(&batch.y).zip(&w) {
        for i in 0..3 {
            for j in 0..3 {
                a[i][j] += w * x[i] * x[j];
            }
            a[i][3] += w * x[i] * y;
        }
    }
    for c in 0..3 {
        for r in 0..3 {
            if r != c {
                let f = a[r][c] / a[c][c];
                let pivot = a[c];
                a[r].iter_mut().zip(pivot).for_each(|(v, p)| *v -= f * p);
            }
        }
    }
    for (i, (row, got)) in a.iter().zip(&fit.weights).enumerate() {
        let expected = row[3] / row[i];
        assert!((got - expected).abs() < 1e-10, "β[{i}] = {got} vs {expected}");
    }
    // With unit weights it is the ordinary fit.
    batch.weights = Some(vec![1.0; 12]);
    let mut pool = lr.new_pool(&run, Workflow::Replace);
    lr.push(&mut pool, &batch).unwrap();
    let unit = lr.fit(&run, &pool, Selection::All, 2).unwrap().weights;
    batch.weights = None;
    let mut pool = lr.new_pool(&run, Workflow::Replace);
    lr.push(&mut pool, &batch).unwrap();
    assert_eq!(unit, lr.fit(&run, &pool, Selection::All, 2).unwrap().weights);
}
