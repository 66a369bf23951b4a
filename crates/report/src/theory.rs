//! Closed forms beside what the runs measured: the linear-regression setting's expected test MSE
//! (docs/protocol.md §6) and the discrete setting's mean fixation generation under Replace (§7),
//! as the figures' dashed lines, summary rows and notes. The rest of this crate draws and
//! summarises any setting; this module is the one place that knows which settings have a
//! closed form and where it holds.

use crate::{SummaryCell, SummaryRow};
use std::sync::Arc;
use thrive_core::{Params, ResultsTable, RunRecord, Workflow};

/// A closed form to draw beside the measured curves: the expected value of `metric` at a
/// generation for runs with these parameters under this workflow, or `None` where none applies.
/// [`closed_form`] gives the settings' own; a caller may supply any other.
#[derive(Clone)]
pub struct Theory(pub Arc<TheoryFn>);

/// (run parameters, workflow, metric, generation) -> the expected value, where one applies.
pub type TheoryFn = dyn Fn(&Params, Workflow, &str, u32) -> Option<f64> + Send + Sync;

impl std::fmt::Debug for Theory {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Theory(..)")
    }
}

/// The closed forms a table's setting has, for the figures' dashed lines and the summary.
pub fn closed_form(table: &ResultsTable) -> Option<Theory> {
    match table.setting.as_str() {
        "linreg" => Some(Theory(Arc::new(|p: &Params, w: Workflow, metric: &str, t: u32| {
            let num = |k: &str| p.get(k).and_then(|v| v.as_f64());
            if metric != "test_mse" || !paper_loop(p) {
                return None;
            }
            thrive_linreg::theory_mse(num("d")? as usize, num("n")? as usize, num("sigma2")?, w, t)
        }))),
        _ => None,
    }
}

/// The discrete setting's mean fixation generation for a Replace run's parameters (K, n), where
/// its loop is the paper's: the closed form of the fixation figure.
pub fn fixation(p: &Params) -> Option<f64> {
    let num = |k: &str| p.get(k).and_then(|v| v.as_f64());
    if !paper_loop(p) {
        return None;
    }
    Some(thrive_discrete::theory_fixation(num("K")? as usize, num("n")? as usize))
}

/// Whether a run's loop knobs (those among its results columns) are the paper's: the closed
/// forms hold only there.
fn paper_loop(p: &Params) -> bool {
    thrive_core::knobs::KNOB_NAMES.iter().all(|&k| {
        p.get(k).and_then(|v| v.as_f64()).is_none_or(|v| v.to_bits() == thrive_core::Knobs::PAPER.get(k).to_bits())
    })
}

/// Summary rows `<metric> (theory, closed form)` beside the measured ones, at the same generations.
pub fn rows(table: &ResultsTable, rows: &[SummaryRow]) -> Vec<SummaryRow> {
    let Some(Theory(f)) = closed_form(table) else { return Vec::new() };
    let mut out = Vec::new();
    for r in rows {
        let (Some(w), Some(run)) = (r.workflow, table.runs.iter().find(|run| same_group(run, r))) else { continue };
        let at: Vec<SummaryCell> =
            r.at.iter()
                .filter_map(|a| {
                    let mean = f(&run.params, w, &r.metric, a.generation)?;
                    Some(SummaryCell { generation: a.generation, mean, sd: None, sem: None, count: 0 })
                })
                .collect();
        if !at.is_empty() {
            out.push(SummaryRow { metric: format!("{} (theory, closed form)", r.metric), seeds: 0, at, ..r.clone() });
        }
    }
    out
}

fn same_group(run: &RunRecord, row: &SummaryRow) -> bool {
    run.workflow == row.workflow
        && run.params.0.len() == row.params.len()
        && run.params.0.iter().zip(&row.params).all(|((k, v), (rk, rv))| k == rk && v.to_string() == *rv)
}

/// The discrete setting's mean fixation generation per (K, n) under Replace, beside the
/// Wright-Fisher value −2nK(1 − 1/K) ln(1 − 1/K); empty for a table without Replace runs that
/// record one.
pub fn fixation_text(table: &ResultsTable) -> String {
    use std::fmt::Write;
    let Some(k) = table.metric_index("fixation_generation") else { return String::new() };
    let m = table.metric_names.len();
    let mut cells: std::collections::BTreeMap<(i64, i64), (Vec<f64>, usize)> = Default::default();
    for r in table.runs.iter().filter(|r| r.workflow == Some(Workflow::Replace) && r.metrics.len() >= m) {
        let (Some(kk), Some(n)) =
            (r.params.get("K").and_then(|v| v.as_f64()), r.params.get("n").and_then(|v| v.as_f64()))
        else {
            continue;
        };
        let cell = cells.entry((kk as i64, n as i64)).or_default();
        cell.1 += 1;
        let f = r.metrics[r.metrics.len() - m + k];
        if f.is_finite() {
            cell.0.push(f);
        }
    }
    if cells.is_empty() {
        return String::new();
    }
    let mut out = String::from("fixation_generation under Replace (mean over the runs that fixed)\n");
    let _ = writeln!(out, "  {:>8}  {:>8}  {:>6}  {:>6}  {:>12}  {:>12}", "K", "n", "runs", "fixed", "mean", "theory");
    for ((kk, n), (fixed, runs)) in cells {
        let mean = if fixed.is_empty() { f64::NAN } else { fixed.iter().sum::<f64>() / fixed.len() as f64 };
        let theory = thrive_discrete::theory_fixation(kk as usize, n as usize);
        let _ = writeln!(out, "  {kk:>8}  {n:>8}  {runs:>6}  {:>6}  {mean:>12.1}  {theory:>12.1}", fixed.len());
    }
    out.push('\n');
    out
}

/// Notes on the closed forms: where a setting's does not apply although the workflow has one,
/// and how the discrete setting's means treat runs that fixed.
pub fn notes(table: &ResultsTable) -> Vec<String> {
    if table.setting == "discrete" {
        return vec!["means over seeds carry each Replace run's last values (entropy 0) past its fixation".into()];
    }
    if table.setting != "linreg" {
        return Vec::new();
    }
    let mut pairs: Vec<(i64, i64)> = table
        .runs
        .iter()
        .filter_map(|r| Some((r.params.get("d")?.as_f64()? as i64, r.params.get("n")?.as_f64()? as i64)))
        .filter(|&(d, n)| n <= d + 1)
        .collect();
    pairs.sort();
    pairs.dedup();
    let mut notes: Vec<String> = pairs
        .into_iter()
        .map(|(d, n)| {
            format!(
                "the test_mse theory line does not apply to d = {d}, n = {n}: it needs n > d + 1 (docs/protocol.md §6)"
            )
        })
        .collect();
    if table.runs.iter().any(|r| r.workflow == Some(Workflow::AccumulateSubsample)) {
        notes.push("Accumulate-Subsample has no closed form for test_mse: no theory line".into());
    }
    notes
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::summary_rows;

    /// A linear-regression table: d = 2 with n = 3 (no closed form) and n = 10, Replace and
    /// Accumulate-Subsample, two seeds, three generations of `test_mse`.
    fn linreg() -> ResultsTable {
        let mut t = ResultsTable::new("linreg", vec!["test_mse".into()]);
        for n in [3usize, 10] {
            for w in [Workflow::Replace, Workflow::AccumulateSubsample] {
                for seed in 0..2u64 {
                    let params = Params::new().with("d", 2usize).with("n", n).with("sigma2", 1.0);
                    let metrics = vec![1.0 + seed as f64, 2.0, 3.0];
                    t.push(RunRecord { params, workflow: Some(w), seed, metrics }).unwrap();
                }
            }
        }
        t
    }

    #[test]
    fn only_the_papers_loop_has_a_closed_form() {
        let p = Params::new().with("K", 4usize).with("n", 10usize);
        assert_eq!(fixation(&p), Some(thrive_discrete::theory_fixation(4, 10)));
        assert_eq!(fixation(&p.clone().with("keep_real", 0.0)), fixation(&p));
        assert_eq!(fixation(&p.clone().with("keep_real", 0.1)), None);
        assert_eq!(fixation(&Params::new().with("n", 10usize)), None);
    }

    #[test]
    fn linreg_rows_sit_beside_the_measured_ones_where_n_exceeds_d_plus_one() {
        let t = linreg();
        let measured = summary_rows(&t, &[1, 3], &[]);
        let theory = rows(&t, &measured);
        // Only n = 10 under Replace: n = 3 ≤ d + 1, and Accumulate-Subsample has no closed form.
        assert_eq!(theory.len(), 1, "{theory:?}");
        let row = &theory[0];
        assert_eq!(row.metric, "test_mse (theory, closed form)");
        assert_eq!((row.workflow, row.seeds), (Some(Workflow::Replace), 0));
        let want: Vec<(u32, f64)> =
            [1, 3].iter().map(|&g| (g, thrive_linreg::theory_mse(2, 10, 1.0, Workflow::Replace, g).unwrap())).collect();
        assert_eq!(row.at.iter().map(|a| (a.generation, a.mean)).collect::<Vec<_>>(), want);
        assert!(rows(&ResultsTable { setting: "gaussian".into(), ..t.clone() }, &measured).is_empty());
    }

    #[test]
    fn notes_name_where_the_closed_form_does_not_apply() {
        let t = linreg();
        assert_eq!(
            notes(&t),
            [
                "the test_mse theory line does not apply to d = 2, n = 3: it needs n > d + 1 (docs/protocol.md §6)",
                "Accumulate-Subsample has no closed form for test_mse: no theory line",
            ]
        );
        assert_eq!(notes(&ResultsTable::new("discrete", Vec::new())).len(), 1);
        assert!(notes(&ResultsTable::new("gaussian", Vec::new())).is_empty());
    }

    #[test]
    fn fixation_text_averages_the_runs_that_fixed() {
        let mut t = ResultsTable::new("discrete", vec!["entropy".into(), "fixation_generation".into()]);
        for (seed, fixed) in [(0u64, 12.0), (1, 20.0), (2, f64::NAN)] {
            let params = Params::new().with("K", 4usize).with("n", 10usize);
            let metrics = vec![1.0, fixed, 0.0, fixed];
            t.push(RunRecord { params, workflow: Some(Workflow::Replace), seed, metrics }).unwrap();
        }
        let text = fixation_text(&t);
        let theory = thrive_discrete::theory_fixation(4, 10);
        let want = format!(
            "fixation_generation under Replace (mean over the runs that fixed)\n         K         n    runs   fixed          mean        theory\n         4        10       3       2          16.0  {theory:>12.1}\n\n"
        );
        assert_eq!(text, want);
        assert_eq!(fixation_text(&ResultsTable::new("discrete", vec!["fixation_generation".into()])), "");
    }
}
