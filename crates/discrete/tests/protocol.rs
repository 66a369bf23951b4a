//! The discrete setting against the authors' numpy loop (draws replayed from
//! scripts/discrete_fixtures.py) and the Wright-Fisher fixation time of protocol §7.

use thrive_core::{run_chain, run_grid, ChainConfig, Seeds, Selection, Setting, Stream, Workflow};
use thrive_discrete::{grid_specs, theory_fixation, Batch, Discrete, DiscreteFit, METRICS};

const M: usize = METRICS.len();
const Z: f64 = 4.0;

fn ints(v: &serde_json::Value) -> Vec<u32> {
    v.as_array().unwrap().iter().map(|x| x.as_u64().unwrap() as u32).collect()
}

#[test]
fn loop_matches_numpy_draw_for_draw() {
    let text = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/numpy_loop.json")).unwrap();
    let json: serde_json::Value = serde_json::from_str(&text).unwrap();
    for case in json["cases"].as_array().unwrap() {
        let k = case["outcomes"].as_u64().unwrap() as usize;
        let workflow: Workflow = case["workflow"].as_str().unwrap().parse().unwrap();
        let name = format!("K={k} {workflow}");
        let setting = Discrete::new(k).unwrap();
        let mut pool = setting.new_pool(&(), workflow);
        setting.push(&mut pool, &Batch::from_draws(k, ints(&case["real"])).unwrap()).unwrap();
        let mut metrics = Vec::new();
        let generations = case["generations"].as_array().unwrap();
        for (t, g) in generations.iter().enumerate() {
            let indices: Option<Vec<usize>> =
                g["indices"].as_array().map(|a| a.iter().map(|i| i.as_u64().unwrap() as usize).collect());
            let selection = indices.as_deref().map_or(Selection::All, Selection::Indices);
            let fit = setting.fit(&(), &pool, selection, t as u32 + 1).unwrap();
            setting.evaluate(&(), &fit, &mut metrics).unwrap();
            let row = &metrics[t * M..];
            let entropy = g["entropy"].as_f64().unwrap();
            assert!((row[0] - entropy).abs() <= 1e-12, "{name} t={}: entropy {} vs {entropy}", t + 1, row[0]);
            assert!((row[1] - entropy / (k as f64).ln()).abs() <= 1e-12, "{name}: fraction");
            assert_eq!(row[2], g["zero_outcomes"].as_u64().unwrap() as f64, "{name} t={}: zero outcomes", t + 1);
            // numpy stops where the entropy falls below 1e-8; thrive where one outcome is left.
            let last = t + 1 == generations.len();
            assert_eq!(setting.stop(&fit, workflow), workflow == Workflow::Replace && g["draws"].is_null(), "{name}");
            if last && g["draws"].is_null() {
                break;
            }
            let synthetic = Batch::from_draws(k, ints(&g["draws"])).unwrap();
            if !workflow.keeps_history() {
                setting.clear(&mut pool);
            }
            setting.push(&mut pool, &synthetic).unwrap();
        }
        setting.finish_run(&mut metrics);
        let fixation = case["fixation"].as_u64().map(|f| f as f64);
        for row in metrics.chunks(M) {
            match fixation {
                Some(f) => assert_eq!(row[3], f, "{name}"),
                None => assert!(row[3].is_nan(), "{name}"),
            }
        }
    }
}

#[test]
fn sampled_counts_are_multinomial() {
    // n draws from p = (0.1, 0.2, 0, 0.7): each count has mean n·p_k and variance n·p_k(1 − p_k).
    let setting = Discrete::new(4).unwrap();
    let fit = DiscreteFit::of_counts(vec![1, 2, 0, 7]);
    let n = 50usize;
    let runs = 4000;
    let mut sums = [0.0f64; 4];
    for s in 0..runs {
        let b = setting.sample(&fit, n, &mut Seeds::new(s).stream(Stream::Synthesize(1))).unwrap();
        assert_eq!(b.counts.iter().sum::<u64>(), n as u64);
        assert_eq!(b.counts[2], 0);
        for (a, c) in sums.iter_mut().zip(&b.counts) {
            *a += *c as f64;
        }
    }
    for (k, p) in [0.1, 0.2, 0.0, 0.7].iter().enumerate() {
        let mean = sums[k] / runs as f64;
        let sem = (n as f64 * p * (1.0 - p) / runs as f64).sqrt();
        assert!((mean - n as f64 * p).abs() <= Z * sem + 1e-12, "outcome {k}: {mean} vs {}", n as f64 * p);
    }
}

#[test]
fn replace_fixation_time_follows_wright_fisher() {
    for (k, n) in [(10, 20), (10, 100), (2, 50), (4, 60)] {
        let setting = Discrete::new(k).unwrap();
        let cfg = ChainConfig::paper(Workflow::Replace, n, 100_000);
        let fixations: Vec<f64> = (0..500)
            .map(|s| {
                let m = run_chain(&setting, &cfg, &Seeds::new(s)).unwrap();
                let rows = m.len() / M;
                // Rows end at fixation, which every row records; the last fit has one outcome.
                assert_eq!(m[(rows - 1) * M + 2], (k - 1) as f64);
                assert!(m[(rows - 1) * M] < 1e-12);
                assert_eq!(m[3], rows as f64);
                rows as f64
            })
            .collect();
        let mean = fixations.iter().sum::<f64>() / 500.0;
        let sd = (fixations.iter().map(|f| (f - mean).powi(2)).sum::<f64>() / 499.0).sqrt();
        let expected = theory_fixation(k, n);
        // The diffusion approximation is off by O(1) generations at these n.
        assert!(
            (mean - expected).abs() <= Z * sd / 500f64.sqrt() + 0.05 * expected,
            "K={k} n={n}: mean fixation {mean} vs {expected} (sd {sd})"
        );
    }
    assert!((theory_fixation(10, 1000) / 1000.0 - 1.896).abs() < 1e-3);
}

#[test]
fn accumulate_keeps_the_real_outcomes_and_runs_every_generation() {
    let setting = Discrete::new(10).unwrap();
    for w in [Workflow::Accumulate, Workflow::AccumulateSubsample] {
        let m = run_chain(&setting, &ChainConfig::paper(w, 100, 50), &Seeds::new(1)).unwrap();
        assert_eq!(m.len(), 50 * M, "{w}");
        assert!(m[3].is_nan(), "{w}: no fixation");
    }
    // Under Accumulate every real outcome stays in the pool: no zero-probability outcome appears
    // that the real draws had.
    let m = run_chain(&setting, &ChainConfig::paper(Workflow::Accumulate, 100, 50), &Seeds::new(1)).unwrap();
    assert!(m.chunks(M).all(|r| r[2] == m[2]));
}

#[test]
fn first_generation_is_identical_across_workflows() {
    let setting = Discrete::new(7).unwrap();
    let first: Vec<Vec<f64>> = Workflow::ALL
        .iter()
        .map(|&w| run_chain(&setting, &ChainConfig::paper(w, 30, 3), &Seeds::new(9)).unwrap()[..3].to_vec())
        .collect();
    assert_eq!(first[0], first[1]);
    assert!(first[0].iter().zip(&first[2]).all(|(a, b)| (a - b).abs() < 1e-12), "{first:?}");
}

#[test]
fn same_output_for_any_thread_count_alone_or_in_a_grid() {
    let settings = [Discrete::new(3).unwrap(), Discrete::new(10).unwrap()];
    let specs = grid_specs(&settings, &[5, 30], &Workflow::ALL, &[0, 1, 2], 20, 10_000).unwrap();
    let metrics: Vec<String> = METRICS.iter().map(|s| s.to_string()).collect();
    let run_with = |threads| {
        rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .build()
            .unwrap()
            .install(|| run_grid("discrete", metrics.clone(), &specs, false).unwrap())
    };
    let bits = |t: &thrive_core::ResultsTable| -> Vec<u64> {
        t.runs.iter().flat_map(|r| r.metrics.iter().map(|v| v.to_bits())).collect()
    };
    let one = run_with(1);
    assert_eq!(bits(&one), bits(&run_with(2)));
    for (spec, run) in specs.iter().zip(&one.runs) {
        let alone = run_chain(spec.setting, &spec.config, &Seeds::new(spec.seed)).unwrap();
        assert_eq!(
            alone.iter().map(|v| v.to_bits()).collect::<Vec<_>>(),
            run.metrics.iter().map(|v| v.to_bits()).collect::<Vec<_>>()
        );
    }
}

#[test]
fn bad_parameters_are_named() {
    for k in [0, 1] {
        assert!(Discrete::new(k).unwrap_err().to_string().contains("outcomes"));
    }
    assert!(Batch::from_draws(3, vec![0, 3]).unwrap_err().to_string().contains("draw 3"));
}
