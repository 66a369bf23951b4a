//! `thrive demo` and `thrive demo --value`, shortened with `--set` (one workflow, two
//! generations, few cells, samples and epochs) but otherwise the embedded run files through the
//! real command: results, pool and figures are written, and the demo model's unconditional
//! samples are accepted and parsed.

mod common;
use common::*;
use thrive_core::ResultsTable;
use thrive_pool::{BatchKey, Origin, Pool};

fn synthetic_rows(pool: &Pool) -> Vec<(BatchKey, usize)> {
    pool.manifest()
        .files
        .iter()
        .filter(|f| matches!(f.key, BatchKey::Synthetic { .. }))
        .map(|f| (f.key.clone(), pool.read_batch(&f.key).unwrap().len()))
        .collect()
}

#[test]
fn demo_runs_shortened() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("demo");
    // One workflow (generation 1 trains on all 1,000 real rows, the bulk of the time).
    let set = ["--set", "run.workflows=[\"replace\"]", "--set", "sampling.count=12", "--set", "sft.epochs=1"];
    let mut args = vec!["demo", "--out", s(&out), "--generations", "2"];
    args.extend(set);
    let stdout = ok(&args);
    assert!(stdout.contains("results.parquet"), "{stdout}");

    let t = ResultsTable::read_parquet(&out.join("results.parquet")).unwrap();
    assert_eq!(t.setting, "lm");
    let workflows: Vec<_> = t.runs.iter().map(|r| r.workflow.unwrap().name()).collect();
    assert_eq!(workflows, ["replace"]);
    let loss = t.metric_names.iter().position(|m| m == "eval_loss").unwrap();
    for r in &t.runs {
        assert_eq!(r.metrics.len(), 2 * t.metric_names.len(), "two generations of {:?}", r.workflow);
        assert!(r.metrics[loss].is_finite() && r.metrics[loss] > 0.0);
    }
    let r = &t.runs[0].metrics;
    let before = t.metric_names.iter().position(|m| m == "eval_loss_before").unwrap();
    assert!(r[loss] < r[before] - 0.5, "generation 1 did not learn the demo data: {r:?}");

    // Generation 1 sampled exactly 12 accepted rows unconditionally, parsed from
    // `user: …\nassistant: …`.
    let pool = Pool::open(out.join("pool")).unwrap();
    let batches = synthetic_rows(&pool);
    assert_eq!(batches.len(), 1, "{batches:?}");
    for (key, n) in &batches {
        assert_eq!(*n, 12, "{key}");
        for e in pool.read_batch(key).unwrap() {
            assert!(!e.prompt.is_empty(), "{e:?}");
            assert!(!e.prompt.starts_with("user:") && !e.response.contains("assistant: "), "{e:?}");
            let Origin::Synthetic { provenance, .. } = &e.origin else { panic!("{e:?}") };
            assert_eq!(provenance.filter, "accepted");
        }
    }
    assert!(out.join("results-figures").read_dir().unwrap().count() > 0);

    // `thrive sample` from generation 1's model, unconditionally, twice with the same seed: with
    // the authors' lstrip("user: ") quirk (the default) and without it.
    let chain = out.join("models/replace").read_dir().unwrap().next().unwrap().unwrap().path();
    let model = chain.join("gen-0001/merged");
    let sample = |quirk: &str| {
        let p = tmp.path().join(format!("pool-quirk-{quirk}"));
        ok(&["pool", "import", s(&p), "--helpsteer2", s(&root().join("../data/demo/helpsteer2"))]);
        let args = [
            "sample",
            "--model",
            s(&model),
            "--pool",
            s(&p),
            "--workflow",
            "replace",
            "--generation",
            "1",
            "--count",
            "20",
            "--batch-size",
            "6",
            "--max-new-tokens",
            "64",
            "--seed",
            "7",
            "--strip-quirk",
            quirk,
            "--device",
            "cpu",
        ];
        let stdout = ok(&args);
        let rows =
            Pool::open(&p).unwrap().read_batch(&BatchKey::synthetic(thrive_core::Workflow::Replace, 0, 1)).unwrap();
        (stdout, rows)
    };
    let (stdout, quirky) = sample("true");
    let (_, plain) = sample("false");
    // Exactly the target is kept; every generation is either kept, rejected for a named reason,
    // or the surplus of the last batch (at most batch size - 1).
    assert_eq!((quirky.len(), plain.len()), (20, 20), "{stdout}");
    let generations: u64 = stdout.split(" rows (").nth(1).unwrap().split(' ').next().unwrap().parse().unwrap();
    let rejected = stdout.split("rejected {").nth(1).unwrap().split('}').next().unwrap();
    let mut rejected_total = 0;
    for part in rejected.split(", ").filter(|p| !p.is_empty()) {
        let (reason, n) = part.split_once(": ").unwrap();
        assert!(
            ["\"no_user_prefix\"", "\"not_one_assistant_turn\"", "\"empty_response\""].contains(&reason),
            "{stdout}"
        );
        rejected_total += n.parse::<u64>().unwrap();
    }
    assert!(20 + rejected_total <= generations && generations < 20 + rejected_total + 6, "{stdout}");
    for (q, p) in quirky.iter().zip(&plain) {
        let Origin::Synthetic { provenance, .. } = &q.origin else { panic!("{q:?}") };
        let Origin::Synthetic { provenance: pp, .. } = &p.origin else { panic!("{p:?}") };
        // The same generation, parsed two ways: the quirk strips a character set off the prompt.
        assert_eq!((provenance.sample_index, &q.response), (pp.sample_index, &p.response));
        assert_eq!(q.prompt, p.prompt.trim_start_matches(['u', 's', 'e', 'r', ':', ' ']).trim(), "{p:?}");
        assert!(!q.response.is_empty() && !q.response.contains("assistant: "), "{q:?}");
    }
}

#[test]
fn demo_value_runs_shortened() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("demo-value");
    let stdout = ok(&[
        "demo",
        "--value",
        "--out",
        s(&out),
        "--set",
        "value.num_real=[0, 16]",
        "--set",
        "value.num_synthetic=[0, 12]",
        "--set",
        "value.source_real=48",
        "--set",
        "value.sources=[0]",
        "--set",
        "sampling.count=12",
        "--set",
        "sampling.batch_size=12",
        // The demo's prompted mode (a 48-row source does not write `user: …` unprompted).
        "--set",
        "sampling.max_new_tokens=48",
    ]);
    assert!(stdout.contains("num_real \\ num_synthetic"), "{stdout}");
    let t = ResultsTable::read_parquet(&out.join("results.parquet")).unwrap();
    assert_eq!((t.setting.as_str(), t.runs.len()), ("lm-value", 4));
    let pool = Pool::open(out.join("pool")).unwrap();
    let batches = synthetic_rows(&pool);
    assert_eq!(batches.len(), 1, "{batches:?}");
    assert_eq!(batches[0].1, 12);
    assert!(out.join("results-figures/eval_loss_heatmap.png").exists());
}

#[test]
fn demo_overrides_fail_clearly() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("demo");
    fails(&["demo", "--out", s(&out), "--set", "sampling.cuont=3"], &["cuont", "<demo>"]);
    fails(&["demo", "--value", "--out", s(&out), "--set", "value.num_real"], &["--set", "KEY=VALUE"]);
}

/// The paper's key outcome, by its sign: where the real rows alone nearly saturate the
/// demo model (all 1,000, 2 epochs), synthetic rows from a poor source (fine-tuned on 200 real
/// rows) raise the validation loss, and rows from a good one (all 1,000 real rows) do not.
#[test]
fn a_poor_source_hurts_plentiful_real_data_and_a_good_one_does_not() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("demo-value");
    ok(&[
        "demo",
        "--value",
        "--out",
        s(&out),
        "--set",
        "value.num_real=[1000]",
        "--set",
        "value.num_synthetic=[0, 300]",
        "--set",
        "value.source_real=[200, 1000]",
        "--set",
        "value.sources=[0]",
        "--set",
        "sampling.count=400",
    ]);
    let t = ResultsTable::read_parquet(&out.join("results.parquet")).unwrap();
    let loss = t.metric_index("eval_loss").unwrap();
    let cell = |synthetic: i64, source_real: i64| -> f64 {
        let run = t
            .runs
            .iter()
            .find(|r| {
                let get = |k: &str| r.params.get(k).and_then(|v| v.as_f64()).unwrap() as i64;
                get("num_synthetic") == synthetic && (synthetic == 0 || get("source_real") == source_real)
            })
            .unwrap_or_else(|| panic!("no cell num_synthetic {synthetic}, source_real {source_real}: {t:?}"));
        run.metrics[run.metrics.len() - t.metric_names.len() + loss]
    };
    let (alone, poor, good) = (cell(0, -1), cell(300, 200), cell(300, 1000));
    eprintln!("real alone {alone}, + poor source {poor}, + good source {good}");
    assert!(poor > alone, "a poor source's rows did not hurt: {alone} alone, {poor} with them");
    assert!(good <= alone, "a good source's rows hurt: {alone} alone, {good} with them");
}
