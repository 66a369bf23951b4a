//! The loop knobs on KDEs (signs, not numbers) and the tail NLL.

use thrive_core::{run_chain, ChainConfig, Knobs, Seeds, Workflow};
use thrive_kde::{Bandwidth, BlobsCentres, Dataset, Kde, RealData, METRICS};

fn moons(h: f64) -> Kde {
    Kde::new(RealData::Generator { dataset: Dataset::Moons, centres: BlobsCentres::PerCall }, Bandwidth::Fixed(h))
        .unwrap()
}

#[test]
fn tail_nll_is_above_the_mean_nll() {
    for (w, b) in [(Workflow::Replace, Bandwidth::Fixed(0.1)), (Workflow::AccumulateSubsample, Bandwidth::Scott)] {
        let kde = Kde::new(RealData::Generator { dataset: Dataset::Moons, centres: BlobsCentres::PerCall }, b).unwrap();
        let m = run_chain(&kde, &ChainConfig::paper(w, 40, 3), &Seeds::new(2)).unwrap();
        for row in m.chunks(METRICS.len()) {
            assert!(row[2] > row[0] && row[2].is_finite(), "tail {} vs mean {}", row[2], row[0]);
        }
    }
}

#[test]
fn knobs_change_sampling_with_the_sign_expected() {
    let kde = moons(0.2);
    let nll = |knobs: Knobs, w: Workflow| -> f64 {
        let mut cfg = ChainConfig::paper(w, 40, 8);
        cfg.knobs = knobs;
        (0..4).map(|s| run_chain(&kde, &cfg, &Seeds::new(s)).unwrap()[7 * METRICS.len()]).sum::<f64>() / 4.0
    };
    let plain = nll(Knobs::PAPER, Workflow::Replace);
    // Real points kept hold Replace nearer the data; a hot sampler spreads the fit out.
    let kept = nll(Knobs { keep_real: 0.5, ..Knobs::PAPER }, Workflow::Replace);
    let hot = nll(Knobs { temperature: 2.0, ..Knobs::PAPER }, Workflow::Replace);
    let fresh = nll(Knobs { fresh_real: 40.0, ..Knobs::PAPER }, Workflow::Replace);
    assert!(
        kept < plain && hot > plain && fresh < plain,
        "NLL at t = 8: kept {kept}, hot {hot}, fresh {fresh}, plain {plain}"
    );
    nll(Knobs { keep_real: 0.5, truncate: 2.0, ..Knobs::PAPER }, Workflow::AccumulateSubsample);
    // A verifier that keeps only samples dense under the real data's KDE holds Replace nearer them.
    let verified = nll(Knobs { select_threshold: -2.0, ..Knobs::PAPER }, Workflow::Replace);
    assert!(verified < plain, "NLL at t = 8: verified {verified}, plain {plain}");
    let mut cfg = ChainConfig::paper(Workflow::Replace, 40, 3);
    cfg.knobs = Knobs { top_p: 0.9, ..Knobs::PAPER };
    assert!(run_chain(&kde, &cfg, &Seeds::new(0)).unwrap_err().to_string().contains("top-p"));
}
