//! The KDE setting against scikit-learn (fixtures from scripts/kde_fixtures.py) and the
//! reference trajectories of docs/protocol.md §3.5.

use thrive_core::{run_chain, run_grid, ChainConfig, Params, RunSpec, Seeds, SubsampleSize, Workflow};
use thrive_kde::{log_density, Bandwidth, BlobsCentres, Dataset, Kde, RealData, METRICS};

fn fixture() -> serde_json::Value {
    let text = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/sklearn.json")).unwrap();
    serde_json::from_str(&text).unwrap()
}

fn floats(v: &serde_json::Value) -> Vec<f64> {
    v.as_array().unwrap().iter().map(|x| x.as_f64().unwrap()).collect()
}

fn kde(dataset: Dataset, h: f64) -> Kde {
    Kde::new(RealData::Generator { dataset, centres: BlobsCentres::PerCall }, Bandwidth::Fixed(h)).unwrap()
}

fn nll_at(setting: &Kde, w: Workflow, n: usize, t_max: u32, seeds: std::ops::Range<u64>, ts: &[u32]) -> Vec<Vec<f64>> {
    let cfg = ChainConfig::paper(w, n, t_max);
    let runs: Vec<Vec<f64>> = seeds.map(|s| run_chain(setting, &cfg, &Seeds::new(s)).unwrap()).collect();
    ts.iter().map(|&t| runs.iter().map(|r| r[(t as usize - 1) * METRICS.len()]).collect()).collect()
}

fn mean_sem(v: &[f64]) -> (f64, f64, f64) {
    let n = v.len() as f64;
    let m = v.iter().sum::<f64>() / n;
    let sd = (v.iter().map(|x| (x - m).powi(2)).sum::<f64>() / (n - 1.0)).sqrt();
    (m, sd / n.sqrt(), sd)
}

#[test]
fn log_densities_equal_scikit_learn() {
    let fx = fixture();
    for case in fx["cases"].as_array().unwrap() {
        let dim = case["dim"].as_u64().unwrap() as usize;
        let h = case["h"].as_f64().unwrap();
        let points = floats(&case["points"]);
        let queries = floats(&case["queries"]);
        for (q, expected) in queries.chunks(dim).zip(floats(&case["log_density"])) {
            let ours = log_density(q, &points, h);
            assert!(
                (ours - expected).abs() <= 1e-9 * expected.abs().max(1.0),
                "d={dim} h={h} at {q:?}: {ours} vs scikit-learn {expected}"
            );
        }
    }
}

fn sorted_rows(data: &[f64], dim: usize) -> Vec<Vec<f64>> {
    let mut rows: Vec<Vec<f64>> = data.chunks(dim).map(|r| r.to_vec()).collect();
    rows.sort_by(|a, b| a.partial_cmp(b).unwrap());
    rows
}

#[test]
fn noise_free_moons_and_circles_are_scikit_learns() {
    let fx = fixture();
    for n in [9usize, 10, 101] {
        for (dataset, key) in [(Dataset::Moons, "moons"), (Dataset::Circles, "circles")] {
            let ours =
                dataset.sample_with_noise(n, &mut Seeds::new(1).stream(thrive_core::Stream::RealData), None, 0.0);
            let theirs = floats(&fx["shapes"][format!("{key}_{n}")]);
            // The same multiset of points: match each of ours to an unused one of theirs.
            let mut unused = sorted_rows(&theirs, 2);
            assert_eq!(unused.len(), ours.len());
            for a in ours.rows() {
                let pos = unused
                    .iter()
                    .position(|b| (a[0] - b[0]).abs() < 1e-12 && (a[1] - b[1]).abs() < 1e-12)
                    .unwrap_or_else(|| panic!("{key} n={n}: {a:?} is not among scikit-learn's points"));
                unused.swap_remove(pos);
            }
        }
    }
}

#[test]
fn swiss_roll_and_blobs_have_scikit_learns_ranges() {
    let mut rng = Seeds::new(3).stream(thrive_core::Stream::RealData);
    let roll = Dataset::SwissRoll.sample_with_noise(5000, &mut rng, None, 0.0);
    let pi = std::f64::consts::PI;
    for r in roll.rows() {
        let t = (r[0] * r[0] + r[2] * r[2]).sqrt();
        assert!(t >= 1.5 * pi - 1e-9 && t <= 4.5 * pi + 1e-9, "t = {t}");
        assert!((r[0] - t * t.cos()).abs() < 1e-9 && (r[2] - t * t.sin()).abs() < 1e-9);
        assert!((0.0..=21.0).contains(&r[1]));
    }
    let blobs = Dataset::Blobs.sample(3001, &mut rng, None);
    assert_eq!(blobs.len(), 3001);
    // Shared centres: train and test come from the same mixture, so their means agree.
    let c = Dataset::blob_centres(&mut rng);
    let a = Dataset::Blobs.sample(3000, &mut rng, Some(&c));
    let b = Dataset::Blobs.sample(3000, &mut rng, Some(&c));
    let mean = |p: &thrive_core::Points, j: usize| p.rows().map(|r| r[j]).sum::<f64>() / p.len() as f64;
    assert!((mean(&a, 0) - mean(&b, 0)).abs() < 0.2 && (mean(&a, 1) - mean(&b, 1)).abs() < 0.2);
}

#[test]
fn carried_sums_equal_full_recomputation() {
    // A schedule with alpha = 0 has the same h but recomputes over the whole pool each generation.
    let fixed = kde(Dataset::Moons, 0.05);
    let recompute = Kde::new(fixed.data.clone(), Bandwidth::Schedule { h1: 0.05, alpha: 0.0 }).unwrap();
    for w in [Workflow::Accumulate, Workflow::Replace] {
        let cfg = ChainConfig::paper(w, 50, 30);
        let a = run_chain(&fixed, &cfg, &Seeds::new(9)).unwrap();
        let b = run_chain(&recompute, &cfg, &Seeds::new(9)).unwrap();
        for (x, y) in a.iter().zip(&b) {
            assert!((x - y).abs() <= 1e-10 * x.abs().max(1.0), "{w}: {x} vs {y}");
        }
    }
}

#[test]
fn extreme_bandwidths_stay_finite() {
    for h in [0.01, 100.0] {
        for w in Workflow::ALL {
            let r = run_chain(&kde(Dataset::Blobs, h), &ChainConfig::paper(w, 32, 10), &Seeds::new(0)).unwrap();
            assert!(r.iter().all(|v| v.is_finite()), "h={h} {w}: {r:?}");
        }
    }
}

#[test]
fn reference_trajectories_within_seed_spread() {
    // Protocol §3.5: moons, h = 0.1, n = 100, authors' loop, 20 seeds; mean NLL at t = 1, 10, 100.
    let reference = [
        (Workflow::Replace, [0.7298, 2.984, 30.39]),
        (Workflow::Accumulate, [0.7298, 1.12, 1.359]),
        (Workflow::AccumulateSubsample, [0.7298, 1.311, 1.64]),
    ];
    let setting = kde(Dataset::Moons, 0.1);
    for (w, expected) in reference {
        let at = nll_at(&setting, w, 100, 100, 0..40, &[1, 10, 100]);
        for (values, reference) in at.iter().zip(expected) {
            let (m, sem, sd) = mean_sem(values);
            // The reference is a mean over 20 seeds: its standard error is about sd / sqrt(20).
            let tol = 4.0 * (sem * sem + sd * sd / 20.0).sqrt();
            assert!((m - reference).abs() <= tol, "{w}: ours {m:.4} vs reference {reference} (tolerance {tol:.3})");
        }
    }
}

#[test]
fn scott_under_accumulate_converges() {
    // §3.4: with h_t² ~ (t n)^(-2/(D+4)), Σ h_t²/t converges, so the NLL settles.
    let setting =
        Kde::new(RealData::Generator { dataset: Dataset::Moons, centres: BlobsCentres::PerCall }, Bandwidth::Scott)
            .unwrap();
    let at = nll_at(&setting, Workflow::Accumulate, 32, 60, 0..10, &[30, 60]);
    let (a, _, _) = mean_sem(&at[0]);
    let (b, _, _) = mean_sem(&at[1]);
    assert!((b - a).abs() < 0.1, "NLL moved from {a} to {b} between t = 30 and 60");
}

#[test]
fn bad_input_is_refused() {
    assert!(Kde::new(
        RealData::Generator { dataset: Dataset::Moons, centres: BlobsCentres::PerCall },
        Bandwidth::Fixed(0.0)
    )
    .is_err());
    assert!(Kde::new(
        RealData::Generator { dataset: Dataset::Moons, centres: BlobsCentres::PerCall },
        Bandwidth::Fixed(f64::NAN)
    )
    .is_err());
    let mut cfg = ChainConfig::paper(Workflow::AccumulateSubsample, 20, 3);
    cfg.subsample = SubsampleSize::Count(21);
    let err = run_chain(&kde(Dataset::Moons, 0.1), &cfg, &Seeds::new(0)).unwrap_err().to_string();
    assert!(err.contains("larger than the pool"), "{err}");
}

#[test]
fn same_output_for_any_thread_count() {
    let settings = [kde(Dataset::Moons, 0.1), kde(Dataset::SwissRoll, 0.5)];
    let specs: Vec<RunSpec<'_, Kde>> = settings
        .iter()
        .flat_map(|s| {
            Workflow::ALL.into_iter().flat_map(move |w| {
                (0..3u64).map(move |seed| RunSpec {
                    setting: s,
                    params: Params::new().with("n", 20usize),
                    config: ChainConfig::paper(w, 20, 10),
                    seed,
                    cost: 1.0,
                })
            })
        })
        .collect();
    let names: Vec<String> = METRICS.iter().map(|s| s.to_string()).collect();
    let run = |t| {
        rayon::ThreadPoolBuilder::new()
            .num_threads(t)
            .build()
            .unwrap()
            .install(|| run_grid("kde", names.clone(), &specs, false).unwrap())
    };
    assert_eq!(run(1), run(2));
}

/// The fraction of `values` at or below each of scikit-learn's deciles is the decile's level,
/// within `tol` (both sides are samples: about 5 standard errors).
fn matches_deciles(what: &str, values: &[f64], deciles: &[f64], tol: f64) {
    for (k, q) in deciles.iter().enumerate() {
        let level = (k + 1) as f64 / 10.0;
        let below = values.iter().filter(|v| **v <= *q).count() as f64 / values.len() as f64;
        assert!(
            (below - level).abs() <= tol,
            "{what}: {below:.4} of ours at or below scikit-learn's {level} quantile {q}"
        );
    }
}

/// Swiss roll and blobs against scikit-learn's own samples (scripts/kde_fixtures.py writes the
/// deciles of 200,000 make_swiss_roll points and 90,000 make_blobs points).
#[test]
fn swiss_roll_and_blobs_are_distributed_as_scikit_learns() {
    let text =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/sklearn_distributions.json"))
            .unwrap();
    let fx: serde_json::Value = serde_json::from_str(&text).unwrap();
    let mut rng = Seeds::new(11).stream(thrive_core::Stream::RealData);

    let roll = Dataset::SwissRoll.sample(200_000, &mut rng, None); // noise 0.05, as the fixture
    for j in 0..3 {
        let column: Vec<f64> = roll.rows().map(|r| r[j]).collect();
        matches_deciles(
            &format!("swiss roll coordinate {j}"),
            &column,
            &floats(&fx["swiss_roll_noise_0.05"]["deciles"][j]),
            0.008,
        );
    }

    let blobs = &fx["blobs"];
    let centres: Vec<[f64; 2]> = blobs["centres"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| {
            let c = floats(c);
            [c[0], c[1]]
        })
        .collect();
    let centres: [[f64; 2]; 3] = centres.try_into().unwrap();
    let nearest = |p: &[f64]| {
        (0..3)
            .min_by(|&a, &b| {
                let d = |k: usize| (p[0] - centres[k][0]).powi(2) + (p[1] - centres[k][1]).powi(2);
                d(a).partial_cmp(&d(b)).unwrap()
            })
            .unwrap()
    };
    // The split of n points over the centres.
    let mut split = [0u64; 3];
    for p in Dataset::Blobs.sample(1001, &mut rng, Some(&centres)).rows() {
        split[nearest(p)] += 1;
    }
    let want: Vec<u64> = blobs["split_1001"].as_array().unwrap().iter().map(|v| v.as_u64().unwrap()).collect();
    assert_eq!(split.to_vec(), want);
    // The spread around each centre.
    let points = Dataset::Blobs.sample(90_000, &mut rng, Some(&centres));
    for j in 0..2 {
        let dev: Vec<f64> = points.rows().map(|p| p[j] - centres[nearest(p)][j]).collect();
        matches_deciles(&format!("blob deviation {j}"), &dev, &floats(&blobs["deviation_deciles"][j]), 0.01);
    }
    // Centres drawn per call: uniform in the box, as make_blobs's.
    let drawn: Vec<f64> = (0..10_000).flat_map(|_| Dataset::blob_centres(&mut rng).concat()).collect();
    matches_deciles("blob centres", &drawn, &floats(&blobs["drawn_centre_deciles"]), 0.015);
}
