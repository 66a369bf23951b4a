//! The summary table: mean ± standard deviation over seeds of each metric at chosen generations.

use crate::table::{mean_sd, Table};
use serde_json::json;
use thrive_core::{ResultsTable, Workflow};

/// One line of the summary: a run group and its metric means at the chosen generations.
#[derive(Debug, Clone, PartialEq)]
pub struct SummaryRow {
    /// Parameters of the group (every run parameter), as text.
    pub params: Vec<(String, String)>,
    pub workflow: Option<Workflow>,
    pub seeds: usize,
    pub metric: String,
    /// The statistics at each chosen generation that exists.
    pub at: Vec<SummaryCell>,
}

/// A metric over the seeds of one group at one generation (non-finite values left out).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SummaryCell {
    pub generation: u32,
    pub mean: f64,
    /// Sample standard deviation over seeds; `None` with fewer than two finite values.
    pub sd: Option<f64>,
    /// Standard error of the mean (sd / √count); `None` as `sd`.
    pub sem: Option<f64>,
    /// Seeds with a finite value.
    pub count: usize,
}

/// Means over seeds of every metric at `generations` (0 stands for the last generation).
pub fn summary_rows(table: &ResultsTable, generations: &[u32], metrics: &[String]) -> Vec<SummaryRow> {
    summary_rows_with(table, generations, metrics, false)
}

/// As [`summary_rows`]; with `carry_forward`, runs that ended early count with their last
/// values at later generations (see [`crate::FigureOptions::carry_forward`]).
pub fn summary_rows_with(
    table: &ResultsTable,
    generations: &[u32],
    metrics: &[String],
    carry_forward: bool,
) -> Vec<SummaryRow> {
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
        gens.sort();
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
                        .filter(|&&r| {
                            table.generations(r) > 0 && (carry_forward || (g as usize) <= table.generations(r))
                        })
                        .map(|&r| table.runs[r].metrics[(g as usize).min(table.generations(r)) * m - m + k])
                        .collect();
                    let finite: Vec<f64> = values.into_iter().filter(|v| v.is_finite()).collect();
                    let count = finite.len();
                    if count == 0 {
                        return None;
                    }
                    let mean = finite.iter().sum::<f64>() / count as f64;
                    let sd = (count > 1)
                        .then(|| (finite.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / (count - 1) as f64).sqrt());
                    let sem = sd.map(|sd| sd / (count as f64).sqrt());
                    Some(SummaryCell { generation: g, mean, sd, sem, count })
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

/// The summary as one table per metric: the group's parameters, workflow and seeds, then
/// `mean ± sd` at each generation (the mean alone for a single seed).
pub fn summary_tables(rows: &[SummaryRow]) -> Vec<Table> {
    let mut metrics: Vec<&str> = Vec::new();
    for r in rows {
        if !metrics.contains(&r.metric.as_str()) {
            metrics.push(&r.metric);
        }
    }
    let mut tables = Vec::new();
    for metric in metrics {
        let block: Vec<&SummaryRow> = rows.iter().filter(|r| r.metric == metric).collect();
        let Some(first) = block.first() else { continue };
        let mut gens: Vec<u32> = block.iter().flat_map(|r| r.at.iter().map(|a| a.generation)).collect();
        gens.sort();
        gens.dedup();
        let mut header: Vec<String> = first.params.iter().map(|(k, _)| k.clone()).collect();
        header.push("workflow".into());
        header.push("seeds".into());
        header.extend(gens.iter().map(|g| format!("t={g}")));
        let mut lines = Vec::new();
        for r in &block {
            let mut line: Vec<String> = r.params.iter().map(|(_, v)| v.clone()).collect();
            line.push(r.workflow.map_or("-", Workflow::name).into());
            line.push(r.seeds.to_string());
            for g in &gens {
                line.push(r.at.iter().find(|a| a.generation == *g).map_or("-".into(), |a| mean_sd(a.mean, a.sd)));
            }
            lines.push(line);
        }
        // Rows without seeds are closed forms (theory lines), not measurements: their name says so.
        let title = if block.iter().all(|r| r.seeds == 0) {
            metric.to_string()
        } else if block.iter().any(|r| r.seeds > 1) {
            format!("{metric} (mean ± sd over seeds)")
        } else {
            format!("{metric} (one seed)")
        };
        tables.push(Table { title, header, rows: lines });
    }
    tables
}

/// The summary as aligned text tables, one block per metric.
pub fn summary_text(rows: &[SummaryRow]) -> String {
    summary_tables(rows).iter().map(|t| t.plain() + "\n").collect()
}

/// The summary as Markdown tables, one per metric.
pub fn summary_markdown(rows: &[SummaryRow]) -> String {
    summary_tables(rows).iter().map(|t| t.markdown() + "\n").collect()
}

/// The summary as tidy CSV for scripts: one line per (group, metric, generation) with the
/// parameters, workflow, metric, generation, seeds counted, mean, sd and sem at full precision
/// (empty where undefined).
pub fn summary_csv(rows: &[SummaryRow]) -> String {
    let mut params: Vec<&str> = Vec::new();
    for r in rows {
        for (k, _) in &r.params {
            if !params.contains(&k.as_str()) {
                params.push(k);
            }
        }
    }
    let mut header: Vec<String> = params.iter().map(|p| p.to_string()).collect();
    header.extend(["workflow", "metric", "generation", "seeds", "mean", "sd", "sem"].map(String::from));
    let opt = |x: Option<f64>| x.map_or(String::new(), |x| x.to_string());
    let mut table = Table { title: String::new(), header, rows: Vec::new() };
    for r in rows {
        for a in &r.at {
            let mut line: Vec<String> = params
                .iter()
                .map(|p| r.params.iter().find(|(k, _)| k == p).map_or(String::new(), |(_, v)| v.clone()))
                .collect();
            line.push(r.workflow.map_or("", Workflow::name).into());
            line.push(r.metric.clone());
            line.push(a.generation.to_string());
            line.push(a.count.to_string());
            line.push(a.mean.to_string());
            line.push(opt(a.sd));
            line.push(opt(a.sem));
            table.rows.push(line);
        }
    }
    table.csv()
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
                    "at": r.at.iter().map(|a| json!({"generation": a.generation, "mean": a.mean, "sd": a.sd, "sem": a.sem, "count": a.count})).collect::<Vec<_>>(),
                })
            })
            .collect(),
    )
}
