//! The linear-regression setting against the authors' numpy loop (draws replayed from
//! scripts/linreg_fixtures.py) and the closed forms of protocol §6.
//!
//! Statistical checks compare means over seeds with |ours − expected| ≤ Z standard errors.

use thrive_core::{run_chain, run_grid, ChainConfig, Points, Seeds, Selection, Setting, Workflow};
use thrive_linreg::{grid_specs, theory_mse, Batch, LinReg, METRICS};

const Z: f64 = 4.0;

fn floats(v: &serde_json::Value) -> Vec<f64> {
    v.as_array().unwrap().iter().map(|x| x.as_f64().unwrap()).collect()
}

fn close(a: f64, b: f64, scale: f64, what: &str) {
    assert!((a - b).abs() <= 1e-9 * scale.max(1e-300), "{what}: {a} vs {b} (scale {scale})");
}

#[test]
fn loop_matches_numpy_draw_for_draw() {
    let text = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/numpy_loop.json")).unwrap();
    let json: serde_json::Value = serde_json::from_str(&text).unwrap();
    let cases = json["cases"].as_array().unwrap();
    assert_eq!(cases.len(), 9);
    for case in cases {
        let d = case["dim"].as_u64().unwrap() as usize;
        let n = case["n"].as_u64().unwrap() as usize;
        let workflow: Workflow = case["workflow"].as_str().unwrap().parse().unwrap();
        let name = format!("d={d} n={n} {workflow}");
        let lr = LinReg { test_points: 20, ..LinReg::new(d, case["sigma2"].as_f64().unwrap()).unwrap() };
        let run = lr
            .run_from(
                floats(&case["w_star"]),
                Points::new(d, floats(&case["design"])).unwrap(),
                Points::new(d, floats(&case["test"])).unwrap(),
            )
            .unwrap();
        let real = lr.relabel(&run, run.w_star(), &floats(&case["real_noise"])).unwrap();
        for (a, b) in real.y.iter().zip(floats(&case["real_labels"])) {
            close(*a, b, b.abs().max(1.0), &format!("{name}: real labels"));
        }
        let mut pool = lr.new_pool(&run, workflow);
        lr.push(&mut pool, &real).unwrap();
        for (t, g) in case["generations"].as_array().unwrap().iter().enumerate() {
            let indices: Option<Vec<usize>> =
                g["indices"].as_array().map(|a| a.iter().map(|i| i.as_u64().unwrap() as usize).collect());
            let selection = indices.as_deref().map_or(Selection::All, Selection::Indices);
            let fit = lr.fit(&run, &pool, selection, t as u32 + 1).unwrap();
            let expected = floats(&g["weights"]);
            let norm = expected.iter().map(|w| w * w).sum::<f64>().sqrt().max(1.0);
            for (a, b) in fit.weights.iter().zip(&expected) {
                close(*a, *b, norm, &format!("{name} generation {}: weights", t + 1));
            }
            let mut metrics = Vec::new();
            lr.evaluate(&run, &fit, &mut metrics).unwrap();
            let mse = g["test_mse"].as_f64().unwrap();
            close(metrics[0], mse, mse.max(1e-6) * norm, &format!("{name} generation {}: test MSE", t + 1));
            let synthetic: Batch = lr.relabel(&run, &fit.weights, &floats(&g["noise"])).unwrap();
            if !workflow.keeps_history() {
                lr.clear(&mut pool);
            }
            lr.push(&mut pool, &synthetic).unwrap();
        }
    }
}

fn mean_sem(v: &[f64]) -> (f64, f64) {
    let n = v.len() as f64;
    let m = v.iter().sum::<f64>() / n;
    let sd = (v.iter().map(|x| (x - m).powi(2)).sum::<f64>() / (n - 1.0)).sqrt();
    (m, sd / n.sqrt())
}

#[test]
fn replace_and_accumulate_follow_the_theory() {
    for (d, n, sigma2) in [(3, 30, 1.0), (5, 20, 2.0)] {
        let lr = LinReg::new(d, sigma2).unwrap();
        for workflow in [Workflow::Replace, Workflow::Accumulate] {
            let cfg = ChainConfig::paper(workflow, n, 10);
            let runs: Vec<Vec<f64>> = (0..3000).map(|s| run_chain(&lr, &cfg, &Seeds::new(s)).unwrap()).collect();
            for t in [1u32, 2, 5, 10] {
                let values: Vec<f64> = runs.iter().map(|r| r[t as usize - 1]).collect();
                let (m, sem) = mean_sem(&values);
                let expected = theory_mse(d, n, sigma2, workflow, t).unwrap();
                assert!(
                    (m - expected).abs() <= Z * sem,
                    "d={d} n={n} σ²={sigma2} {workflow} t={t}: {m} vs theory {expected} ± {sem}"
                );
            }
        }
    }
}

#[test]
fn accumulate_stays_below_replace_and_subsample_between() {
    // No closed form for Accumulate-Subsample: it must plateau, far below Replace.
    let (d, n) = (3, 30);
    let lr = LinReg::new(d, 1.0).unwrap();
    let last = |w| {
        let cfg = ChainConfig::paper(w, n, 30);
        let v: Vec<f64> = (0..400).map(|s| *run_chain(&lr, &cfg, &Seeds::new(s)).unwrap().last().unwrap()).collect();
        mean_sem(&v).0
    };
    let (rep, acc, sub) = (last(Workflow::Replace), last(Workflow::Accumulate), last(Workflow::AccumulateSubsample));
    assert!(acc < sub && sub < rep, "accumulate {acc}, subsample {sub}, replace {rep}");
    assert!(sub < 5.0 * theory_mse(d, n, 1.0, Workflow::Accumulate, 30).unwrap(), "subsample {sub}");
}

#[test]
fn first_generation_is_identical_across_workflows() {
    for (d, n) in [(3, 10), (10, 5), (1, 32)] {
        let lr = LinReg::new(d, 1.0).unwrap();
        let first: Vec<f64> = Workflow::ALL
            .iter()
            .map(|&w| run_chain(&lr, &ChainConfig::paper(w, n, 2), &Seeds::new(4)).unwrap()[0])
            .collect();
        assert_eq!(first[0], first[1], "d={d} n={n}");
        assert!((first[0] - first[2]).abs() <= 1e-9 * first[0], "d={d} n={n}: {first:?}");
    }
}

#[test]
fn same_output_for_any_thread_count_alone_or_in_a_grid() {
    let settings = [LinReg::new(3, 1.0).unwrap(), LinReg::new(10, 0.1).unwrap()];
    let specs = grid_specs(&settings, &[8, 32], &Workflow::ALL, &[0, 1, 2], 15).unwrap();
    let metrics: Vec<String> = METRICS.iter().map(|s| s.to_string()).collect();
    let run_with = |threads| {
        rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .build()
            .unwrap()
            .install(|| run_grid("linreg", metrics.clone(), &specs, false).unwrap())
    };
    let bits = |t: &thrive_core::ResultsTable| -> Vec<u64> {
        t.runs.iter().flat_map(|r| r.metrics.iter().map(|v| v.to_bits())).collect()
    };
    let one = run_with(1);
    assert_eq!(bits(&one), bits(&run_with(2)));
    for (spec, run) in specs.iter().zip(&one.runs) {
        let alone = run_chain(spec.setting, &spec.config, &Seeds::new(spec.seed)).unwrap();
        assert_eq!(alone.iter().map(|v| v.to_bits()).collect::<Vec<_>>(), bits_of(&run.metrics));
        assert!(alone.iter().all(|v| v.is_finite()), "{:?}", spec.params);
    }
}

fn bits_of(v: &[f64]) -> Vec<u64> {
    v.iter().map(|x| x.to_bits()).collect()
}

#[test]
fn theory_applies_only_where_n_exceeds_d_plus_one() {
    assert_eq!(theory_mse(10, 11, 1.0, Workflow::Replace, 3), None);
    assert_eq!(theory_mse(10, 10, 1.0, Workflow::Accumulate, 3), None);
    assert_eq!(theory_mse(10, 100, 1.0, Workflow::AccumulateSubsample, 3), None);
    assert_eq!(theory_mse(10, 12, 2.0, Workflow::Replace, 3), Some(60.0));
    let acc = theory_mse(1, 10, 8.0, Workflow::Accumulate, 2).unwrap();
    assert!((acc - 1.25).abs() < 1e-15, "{acc}");
}

#[test]
fn bad_parameters_are_named() {
    assert!(LinReg::new(0, 1.0).unwrap_err().to_string().contains("dim"));
    for s in [0.0, -1.0, f64::NAN] {
        assert!(LinReg::new(3, s).unwrap_err().to_string().contains("sigma2"));
    }
    // --real has no meaning on a relabelled fixed design: the loop says which flag.
    let lr = LinReg::new(2, 1.0).unwrap();
    let mut cfg = ChainConfig::paper(Workflow::Replace, 10, 3);
    cfg.retained_real = 2;
    assert!(run_chain(&lr, &cfg, &Seeds::new(0)).unwrap_err().to_string().contains("real"));
}
