//! `--real-weight` w in every toy setting: frequency weights, so a pool whose real examples weigh
//! an integer w must fit exactly as the pool holding each real example w times (weighted moments,
//! kernels, least squares and counts). Checked on the whole pool and on a subsample, with real
//! batches of D₀ and of fresh real data around a synthetic batch; then the signs of the loop.

use thrive_core::{run_chain, ChainConfig, Knobs, Seeds, Selection, Setting, Stream, Workflow};
use thrive_discrete::Discrete;
use thrive_gaussian::{Gaussian, Root};
use thrive_kde::{Bandwidth, BlobsCentres, Dataset, Kde, RealData};
use thrive_linreg::LinReg;

const W: usize = 3;

/// Fits the weighted pool [D₀ (w), S, F (w)] and the copied pool [D₀ × w, S, F × w], on all of
/// it and on the same subsample (a kept real example keeps all its copies), and compares every
/// metric within `tol` relative.
fn weights_count_as_copies<S: Setting>(label: &str, setting: &S, n: usize, fresh: bool, tol: f64)
where
    S::Batch: Clone,
{
    let seeds = Seeds::new(11);
    let (run, real) = setting.start(&seeds, n).unwrap();
    // A synthetic batch from the fit to the real data; fresh real data from their own stream.
    let synthetic = {
        // A subsampling pool's fit samples points, which every pool takes.
        let mut pool = setting.new_pool(&run, Workflow::AccumulateSubsample);
        setting.push(&mut pool, &real).unwrap();
        let fit = setting.fit(&run, &pool, Selection::All, 1).unwrap();
        setting.sample(&fit, n, &mut seeds.stream(Stream::Synthesize(1))).unwrap()
    };
    let mut batches = vec![(real, true), (synthetic, false)];
    if fresh {
        batches.push((setting.fresh_real(&run, 7, &mut seeds.stream(Stream::FreshReal(2))).unwrap(), true));
    }
    for workflow in [Workflow::Accumulate, Workflow::AccumulateSubsample] {
        let mut weighted = setting.new_pool(&run, workflow);
        let mut copied = setting.new_pool(&run, workflow);
        // Which examples the subsample keeps: a fixed scattered half, as (weighted, copied) indices.
        let (mut wi, mut ci) = (Vec::new(), Vec::new());
        let (mut wn, mut cn) = (0, 0);
        for (batch, is_real) in &batches {
            let len = setting.batch_len(batch);
            let chosen: Vec<usize> = (0..len).filter(|i| ((wn + i) * 7919) % 13 < 7).collect();
            wi.extend(chosen.iter().map(|i| wn + i));
            wn += len;
            if *is_real {
                let mut b = batch.clone();
                setting.weigh_real(&mut b, W as f64).unwrap();
                setting.push(&mut weighted, &b).unwrap();
                for _ in 0..W {
                    setting.push(&mut copied, batch).unwrap();
                    ci.extend(chosen.iter().map(|i| cn + i));
                    cn += len;
                }
            } else {
                setting.push(&mut weighted, batch).unwrap();
                setting.push(&mut copied, batch).unwrap();
                ci.extend(chosen.iter().map(|i| cn + i));
                cn += len;
            }
        }
        let mut selections = vec![(Selection::All, Selection::All)];
        if workflow.subsamples() {
            selections.push((Selection::Indices(&wi), Selection::Indices(&ci)));
        }
        for (a, b) in selections {
            let (mut ma, mut mb) = (Vec::new(), Vec::new());
            setting.evaluate(&run, &setting.fit(&run, &weighted, a, 2).unwrap(), &mut ma).unwrap();
            setting.evaluate(&run, &setting.fit(&run, &copied, b, 2).unwrap(), &mut mb).unwrap();
            for ((name, x), y) in setting.metric_names().iter().zip(&ma).zip(&mb) {
                let ok = (x.is_nan() && y.is_nan()) || (x - y).abs() <= tol * x.abs().max(y.abs()).max(1e-300);
                assert!(ok, "{label} {workflow} {a:?}: {name} weighted {x} vs copied {y}");
            }
        }
    }
}

#[test]
fn an_integer_real_weight_fits_as_copies_in_every_setting() {
    for root in [Root::Eigen, Root::Cholesky] {
        let g = Gaussian { root, ..Gaussian::new(3, 1.5).unwrap() };
        weights_count_as_copies(&format!("gaussian {root:?}"), &g, 20, true, 1e-9);
    }
    for bandwidth in [Bandwidth::Fixed(0.3), Bandwidth::Scott] {
        let kde = Kde::new(RealData::Generator { dataset: Dataset::Moons, centres: BlobsCentres::PerCall }, bandwidth)
            .unwrap();
        weights_count_as_copies(&format!("kde {bandwidth}"), &kde, 25, true, 1e-9);
    }
    // Linear regression with more rows than dimensions (one weighted solution) and fewer (the
    // minimum-norm one).
    for (d, n) in [(3, 20), (6, 4)] {
        weights_count_as_copies(&format!("linreg d{d} n{n}"), &LinReg::new(d, 0.5).unwrap(), n, true, 1e-8);
    }
    weights_count_as_copies("discrete", &Discrete::new(5).unwrap(), 30, true, 1e-12);
}

#[test]
fn weighting_real_data_up_holds_the_fit_near_the_real_one() {
    // Under Accumulate a heavier D₀ keeps every generation's fit nearer generation 1's (the fit
    // to the real data): linear regression's test error stays nearer one generation's, the
    // Gaussian's trace ratio drifts less, the discrete entropy falls less.
    let drift = |col: usize, m: &[f64], t: usize, width: usize| (m[(t - 1) * width + col] - m[col]).abs();
    for (label, plain, heavy) in [
        ("linreg test_mse", mean_drift(&LinReg::new(3, 1.0).unwrap(), 20, 0, 40, drift, 1.0), {
            mean_drift(&LinReg::new(3, 1.0).unwrap(), 20, 0, 40, drift, 10.0)
        }),
        ("gaussian trace_ratio", mean_drift(&Gaussian::new(2, 1.0).unwrap(), 20, 3, 60, drift, 1.0), {
            mean_drift(&Gaussian::new(2, 1.0).unwrap(), 20, 3, 60, drift, 10.0)
        }),
        ("discrete entropy", mean_drift(&Discrete::new(10).unwrap(), 20, 0, 80, drift, 1.0), {
            mean_drift(&Discrete::new(10).unwrap(), 20, 0, 80, drift, 10.0)
        }),
    ] {
        assert!(heavy < 0.7 * plain, "{label}: drift from generation 1 with w = 10 {heavy}, w = 1 {plain}");
    }
}

/// Mean over seeds of `drift(col, metrics, T, width)` for Accumulate chains of T generations.
fn mean_drift<S: Setting>(
    s: &S,
    n: usize,
    col: usize,
    generations: u32,
    drift: impl Fn(usize, &[f64], usize, usize) -> f64,
    weight: f64,
) -> f64 {
    let mut cfg = ChainConfig::paper(Workflow::Accumulate, n, generations);
    cfg.knobs = Knobs { real_weight: weight, ..Knobs::PAPER };
    let width = s.metric_names().len();
    (0..16)
        .map(|seed| drift(col, &run_chain(s, &cfg, &Seeds::new(seed)).unwrap(), generations as usize, width))
        .sum::<f64>()
        / 16.0
}

#[test]
fn weight_one_is_the_paper_and_bad_weights_name_the_flag() {
    // w = 1 is the default loop exactly (the chain never weighs then); any other weight changes it.
    let g = Gaussian::new(3, 1.0).unwrap();
    let mut cfg = ChainConfig::paper(Workflow::Accumulate, 15, 5);
    let plain = run_chain(&g, &cfg, &Seeds::new(2)).unwrap();
    cfg.knobs.real_weight = 1.0;
    assert_eq!(run_chain(&g, &cfg, &Seeds::new(2)).unwrap(), plain);
    cfg.knobs.real_weight = 2.0;
    let weighted = run_chain(&g, &cfg, &Seeds::new(2)).unwrap();
    let m = thrive_gaussian::METRICS.len();
    assert_eq!(weighted[..m], plain[..m], "generation 1 is real data alone: weights cancel");
    assert_ne!(weighted[m..], plain[m..]);
    for bad in [0.0, -1.0, f64::NAN] {
        cfg.knobs.real_weight = bad;
        let err = run_chain(&g, &cfg, &Seeds::new(2)).unwrap_err().to_string();
        assert!(err.contains("real-weight"), "{bad}: {err}");
    }
}
