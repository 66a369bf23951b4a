//! With every loop knob at its default, today's metrics are unchanged in value: small chains of
//! each toy setting (every workflow; the Gaussian's two square roots, points and moments; KDE's
//! carried and refitted kernel sums) against the values recorded before the knobs existed.
//! Metrics added since are ignored; every recorded one must still be there, bit for bit.
//! `THRIVE_WRITE_BASELINE=1 cargo test -p thrive-cli --test default_loop` rewrites the fixture: only
//! do that when the default loop is meant to change.

use thrive_core::{run_chain, ChainConfig, Seeds, Setting, Workflow};
use thrive_discrete::Discrete;
use thrive_gaussian::{Gaussian, Root};
use thrive_kde::{Bandwidth, BlobsCentres, Dataset, Kde, RealData};
use thrive_linreg::LinReg;

const FIXTURE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/default_loop.json");

type Case = (String, Vec<String>, Vec<f64>);

fn chains<S: Setting>(out: &mut Vec<Case>, label: &str, setting: &S, n: usize, generations: u32) {
    for w in Workflow::ALL {
        for seed in [0, 7] {
            let metrics = run_chain(setting, &ChainConfig::paper(w, n, generations), &Seeds::new(seed)).unwrap();
            out.push((format!("{label} n{n} {w} seed {seed}"), setting.metric_names(), metrics));
        }
    }
}

fn cases() -> Vec<Case> {
    let mut out = Vec::new();
    for (dim, n, root, points) in [
        (3, 20, Root::Eigen, false),
        (3, 20, Root::Cholesky, false),
        (2, 15, Root::Eigen, true),
        (4, 3, Root::Eigen, false),
    ] {
        let g = Gaussian { root, sample_points: points, ..Gaussian::new(dim, 1.5).unwrap() };
        chains(&mut out, &format!("gaussian d{dim} {root:?} points={points}"), &g, n, 6);
    }
    for (dataset, bandwidth) in [
        (Dataset::Moons, Bandwidth::Fixed(0.2)),
        (Dataset::Blobs, Bandwidth::Scott),
        (Dataset::SwissRoll, Bandwidth::Fixed(1.0)),
    ] {
        let kde = Kde::new(RealData::Generator { dataset, centres: BlobsCentres::PerCall }, bandwidth).unwrap();
        chains(&mut out, &format!("kde {dataset} {bandwidth}"), &kde, 25, 4);
    }
    for (dim, n) in [(3, 20), (4, 3)] {
        chains(&mut out, &format!("linreg d{dim}"), &LinReg::new(dim, 0.5).unwrap(), n, 5);
    }
    chains(&mut out, "discrete K5", &Discrete::new(5).unwrap(), 12, 60);
    out
}

#[test]
fn default_loop_metrics_are_unchanged() {
    let cases = cases();
    if std::env::var_os("THRIVE_WRITE_BASELINE").is_some() {
        let json: Vec<serde_json::Value> = cases
            .iter()
            .map(|(name, names, m)| {
                let bits: Vec<u64> = m.iter().map(|v| v.to_bits()).collect();
                serde_json::json!({"case": name, "metrics": names, "bits": bits})
            })
            .collect();
        std::fs::write(FIXTURE, serde_json::to_string(&json).unwrap()).unwrap();
        return;
    }
    let fixture: Vec<serde_json::Value> = serde_json::from_str(&std::fs::read_to_string(FIXTURE).unwrap()).unwrap();
    assert_eq!(fixture.len(), cases.len());
    for (want, (name, names, got)) in fixture.iter().zip(&cases) {
        assert_eq!(want["case"], name.as_str());
        let old: Vec<&str> = want["metrics"].as_array().unwrap().iter().map(|v| v.as_str().unwrap()).collect();
        let bits: Vec<u64> = want["bits"].as_array().unwrap().iter().map(|v| v.as_u64().unwrap()).collect();
        let (m_old, m_new) = (old.len(), names.len());
        assert_eq!(bits.len() / m_old, got.len() / m_new, "{name}: generations");
        for (j, metric) in old.iter().enumerate() {
            let k = names.iter().position(|n| n == metric).unwrap_or_else(|| panic!("{name}: {metric} is gone"));
            for (g, row) in got.chunks(m_new).enumerate() {
                assert_eq!(row[k].to_bits(), bits[g * m_old + j], "{name}: {metric} at generation {}", g + 1);
            }
        }
    }
}
