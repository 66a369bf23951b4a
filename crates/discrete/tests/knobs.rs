//! The loop knobs on discrete distributions (signs, not numbers).

use thrive_core::{run_chain, ChainConfig, Knobs, Seeds, Workflow};
use thrive_discrete::{distorted_probabilities, Discrete, DiscreteFit, METRICS};

fn mean_entropy(d: &Discrete, cfg: &ChainConfig, t: usize) -> f64 {
    (0..8u64)
        .map(|s| {
            let m = run_chain(d, cfg, &Seeds::new(s)).unwrap();
            // A run that fixed earlier has entropy 0 from then on.
            m.get((t - 1) * METRICS.len()).copied().unwrap_or(0.0)
        })
        .sum::<f64>()
        / 8.0
}

#[test]
fn cold_sampling_loses_entropy_faster() {
    let d = Discrete::new(10).unwrap();
    let mut cfg = ChainConfig::paper(Workflow::Accumulate, 50, 8);
    let plain = mean_entropy(&d, &cfg, 8);
    cfg.knobs = Knobs { temperature: 0.7, ..Knobs::PAPER };
    let cold = mean_entropy(&d, &cfg, 8);
    cfg.knobs = Knobs { top_p: 0.6, ..Knobs::PAPER };
    let nucleus = mean_entropy(&d, &cfg, 8);
    assert!(cold < plain - 0.05 && nucleus < plain - 0.05, "entropy at t = 8: {cold}, {nucleus} vs {plain}");
    cfg.knobs = Knobs { truncate: 2.0, ..Knobs::PAPER };
    assert!(run_chain(&d, &cfg, &Seeds::new(0)).unwrap_err().to_string().contains("truncate"));
    cfg.knobs = Knobs { select_threshold: 1.0, ..Knobs::PAPER };
    assert!(run_chain(&d, &cfg, &Seeds::new(0)).unwrap_err().to_string().contains("select-threshold"));
}

#[test]
fn distortions_of_known_probabilities() {
    let fit = DiscreteFit::of_counts(vec![6, 3, 1, 0]);
    assert_eq!(distorted_probabilities(&fit, 1.0, 1.0), vec![0.6, 0.3, 0.1, 0.0]);
    // τ = 0.5 squares and renormalises: 36, 9, 1 over 46.
    let p = distorted_probabilities(&fit, 0.5, 1.0);
    for (a, b) in p.iter().zip([36.0 / 46.0, 9.0 / 46.0, 1.0 / 46.0, 0.0]) {
        assert!((a - b).abs() < 1e-12, "{p:?}");
    }
    // Top-p 0.8 keeps 0.6 + 0.3.
    let p = distorted_probabilities(&fit, 1.0, 0.8);
    assert!((p[0] - 2.0 / 3.0).abs() < 1e-12 && (p[1] - 1.0 / 3.0).abs() < 1e-12 && p[2] == 0.0, "{p:?}");
}

#[test]
fn kept_real_draws_end_fixation_as_absorbing_state() {
    // With real draws in every generation, Replace runs its generations instead of stopping at fixation.
    let d = Discrete::new(3).unwrap();
    let mut cfg = ChainConfig::paper(Workflow::Replace, 10, 300);
    let plain = run_chain(&d, &cfg, &Seeds::new(0)).unwrap();
    assert!(plain.len() < 300 * METRICS.len());
    cfg.knobs = Knobs { keep_real: 0.3, ..Knobs::PAPER };
    let kept = run_chain(&d, &cfg, &Seeds::new(0)).unwrap();
    assert_eq!(kept.len(), 300 * METRICS.len());
    let last = &kept[299 * METRICS.len()..];
    assert!(last[0] > 0.0, "entropy at t = 300 with real draws kept: {}", last[0]);
    cfg.knobs = Knobs { fresh_real: 3.0, ..Knobs::PAPER };
    assert_eq!(run_chain(&d, &cfg, &Seeds::new(0)).unwrap().len(), 300 * METRICS.len());
    cfg.workflow = Workflow::AccumulateSubsample;
    cfg.generations = 5;
    cfg.knobs.keep_real = 0.3;
    run_chain(&d, &cfg, &Seeds::new(0)).unwrap();
}
