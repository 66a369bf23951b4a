//! The summary table: mean over seeds of each metric at chosen generations.

use crate::stats::bootstrap_mean_ci;
use serde_json::json;
use std::fmt::Write;
use thrive_core::{ResultsTable, Workflow};

/// One line of the summary: a run group and its metric means at the chosen generations.
#[derive(Debug, Clone, PartialEq)]
pub struct SummaryRow {
    /// Parameters of the group (every run parameter), as text.
    pub params: Vec<(String, String)>,
    pub workflow: Option<Workflow>,
    pub seeds: usize,
    pub metric: String,
    /// (generation, mean over seeds, standard error) at each chosen generation that exists.
    pub at: Vec<(u32, f64, f64)>,
}

/// Means over seeds of every metric at `generations` (0 stands for the last generation).
pub fn summary_rows(table: &ResultsTable, generations: &[u32], metrics: &[String]) -> Vec<SummaryRow> {
    // (parameters as text, workflow, run indices)
    type Group = (Vec<(String, String)>, Option<Workflow>, Vec<usize>);
    let mut groups: Vec<Group> = Vec::new();
    for (i, run) in table.runs.iter().enumerate() {
        let params: Vec<(String, String)> = run.params.0.iter().map(|(k, v)| (k.clone(), v.to_string())).collect();
        match groups.iter_mut().find(|(p, w, _)| *p == params && *w == run.workflow) {
            Some(g) => g.2.push(i),
            None => groups.push((params, run.workflow, vec![i])),
        }
    }
    groups.sort_by(|a, b| a.1.cmp(&b.1).then_with(|| natural_cmp(&a.0, &b.0)));
    let m = table.metric_names.len();
    let mut rows = Vec::new();
    for (params, workflow, runs) in groups {
        let last = runs.iter().map(|&r| table.generations(r)).max().unwrap_or(0) as u32;
        let mut gens: Vec<u32> =
            generations.iter().map(|&g| if g == 0 { last } else { g }).filter(|&g| g >= 1 && g <= last).collect();
        gens.dedup();
        for (k, metric) in table.metric_names.iter().enumerate() {
            if !metrics.is_empty() && !metrics.contains(metric) {
                continue;
            }
            let at = gens
                .iter()
                .filter_map(|&g| {
                    let values: Vec<f64> = runs
                        .iter()
                        .filter(|&&r| (g as usize) <= table.generations(r))
                        .map(|&r| table.runs[r].metrics[(g as usize - 1) * m + k])
                        .collect();
                    let band = bootstrap_mean_ci(&values, 0, 0, 0)?;
                    let finite: Vec<f64> = values.into_iter().filter(|v| v.is_finite()).collect();
                    let var =
                        finite.iter().map(|v| (v - band.mean).powi(2)).sum::<f64>() / (finite.len().max(2) - 1) as f64;
                    Some((g, band.mean, (var / finite.len() as f64).sqrt()))
                })
                .collect();
            rows.push(SummaryRow { params: params.clone(), workflow, seeds: runs.len(), metric: metric.clone(), at });
        }
    }
    rows
}

/// Sorts numeric parameter values numerically.
/// Orders parameter lists value by value: numbers numerically (NaN last), then text.
fn natural_cmp(a: &[(String, String)], b: &[(String, String)]) -> std::cmp::Ordering {
    let key = |v: &str| match v.parse::<f64>() {
        Ok(x) if !x.is_nan() => (0, x),
        _ => (1, 0.0),
    };
    for ((_, x), (_, y)) in a.iter().zip(b) {
        let (kx, ky) = (key(x), key(y));
        let order = kx.0.cmp(&ky.0).then(kx.1.total_cmp(&ky.1)).then_with(|| x.cmp(y));
        if order.is_ne() {
            return order;
        }
    }
    a.len().cmp(&b.len())
}

/// The summary as an aligned text table, one block per metric.
pub fn summary_text(rows: &[SummaryRow]) -> String {
    let mut out = String::new();
    let mut metrics: Vec<&str> = Vec::new();
    for r in rows {
        if !metrics.contains(&r.metric.as_str()) {
            metrics.push(&r.metric);
        }
    }
    for metric in metrics {
        let block: Vec<&SummaryRow> = rows.iter().filter(|r| r.metric == metric).collect();
        let Some(first) = block.first() else { continue };
        let mut gens: Vec<u32> = block.iter().flat_map(|r| r.at.iter().map(|a| a.0)).collect();
        gens.sort();
        gens.dedup();
        let mut header: Vec<String> = first.params.iter().map(|(k, _)| k.clone()).collect();
        header.push("workflow".into());
        header.push("seeds".into());
        header.extend(gens.iter().map(|g| format!("t={g}")));
        let mut lines: Vec<Vec<String>> = vec![header];
        for r in &block {
            let mut line: Vec<String> = r.params.iter().map(|(_, v)| v.clone()).collect();
            line.push(r.workflow.map_or("-", Workflow::name).into());
            line.push(r.seeds.to_string());
            for g in &gens {
                line.push(
                    r.at.iter().find(|a| a.0 == *g).map(|a| format!("{:.4e}", a.1)).unwrap_or_else(|| "-".into()),
                );
            }
            lines.push(line);
        }
        let widths: Vec<usize> = (0..lines[0].len())
            .map(|c| lines.iter().map(|l| l.get(c).map_or(0, |s| s.len())).max().unwrap_or(0))
            .collect();
        let _ = writeln!(out, "{metric} (mean over seeds)");
        for l in &lines {
            let cells: Vec<String> = l.iter().zip(&widths).map(|(s, w)| format!("{s:>w$}")).collect();
            let _ = writeln!(out, "  {}", cells.join("  "));
        }
        out.push('\n');
    }
    out
}

/// The summary as JSON, for scripts.
pub fn summary_json(rows: &[SummaryRow]) -> serde_json::Value {
    serde_json::Value::Array(
        rows.iter()
            .map(|r| {
                json!({
                    "params": r.params.iter().map(|(k, v)| (k.clone(), json!(v))).collect::<serde_json::Map<String, serde_json::Value>>(),
                    "workflow": r.workflow.map(Workflow::name),
                    "seeds": r.seeds,
                    "metric": r.metric,
                    "at": r.at.iter().map(|(g, m, se)| json!({"generation": g, "mean": m, "sem": se})).collect::<Vec<_>>(),
                })
            })
            .collect(),
    )
}
