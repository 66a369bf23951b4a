//! Value-of-synthetic grids (`lm-value`, `gaussian-value`): the crossover and the loss against
//! the proportion of real data.
//!
//! A **source setting** is every parameter other than `num_real` and `num_synthetic` (the
//! language model's `source` seed, `source_real`, `source_epochs`, ...; the Gaussian's
//! `source_real`, `d`, `sigma2`), taken from the cells with synthetic rows. A cell without
//! synthetic rows (`num_synthetic = 0`) does not depend on the source and is written once, with
//! the source parameters set to a "none" value (−1, NaN, empty or `none`): it is the baseline
//! of every source setting whose other parameters it shares.
//!
//! The **crossover** of a source setting, per seed: over the `num_real` values that have a
//! baseline and at least one cell with synthetic rows, the gain is the baseline's loss minus the
//! lowest loss with synthetic rows (positive: some amount of synthetic rows helps). The crossover
//! is the `num_real` where the gain first stops being positive, interpolated linearly in
//! log `num_real` (linearly in `num_real` from 0) between the last row that gains and the first
//! that does not; "below the smallest" when the smallest row already does not gain, "none in the
//! grid" when every row gains. Seeds that cross inside the grid give the mean ± standard error.

use crate::figure::{file_safe, sort_key};
use crate::{Error, Result};
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use thrive_core::{ParamValue, ResultsTable};

mod figures;

pub use figures::value_figures;

const ROW: &str = "num_real";
const COL: &str = "num_synthetic";

/// A source setting: parameter names and values.
pub type Source = Vec<(String, ParamValue)>;

/// Per seed and num_real: the baseline's loss and the lowest loss with synthetic rows.
type SeedRows = BTreeMap<u64, BTreeMap<u64, (Option<f64>, Option<f64>)>>;

/// Where one seed's gain stops being positive.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Crossing {
    /// The smallest `num_real` of the grid already does not gain.
    BelowSmallest,
    /// Interpolated `num_real`.
    At(f64),
    /// Every `num_real` of the grid gains.
    NoneInGrid,
}

/// The crossover of one source setting.
#[derive(Debug, Clone, PartialEq)]
pub struct Crossover {
    pub metric: String,
    /// The source setting: every parameter but `num_real` and `num_synthetic`.
    pub source: Vec<(String, ParamValue)>,
    /// Per seed, ascending.
    pub seeds: Vec<(u64, Crossing)>,
    /// Smallest and largest `num_real` compared (over seeds).
    pub smallest: f64,
    pub largest: f64,
    /// Mean and standard error of the seeds that cross inside the grid (the error needs two).
    pub mean: Option<f64>,
    pub stderr: Option<f64>,
}

impl Crossover {
    pub fn count(&self, what: fn(&Crossing) -> bool) -> usize {
        self.seeds.iter().filter(|(_, c)| what(c)).count()
    }
    /// The crossover as text: `1234 ± 56 (3 of 3 seeds)`, `below the smallest (256)`, ...
    pub fn text(&self) -> String {
        let n = self.seeds.len();
        let within = self.count(|c| matches!(c, Crossing::At(_)));
        let below = self.count(|c| matches!(c, Crossing::BelowSmallest));
        let none = self.count(|c| matches!(c, Crossing::NoneInGrid));
        let mut parts = Vec::new();
        if let Some(m) = self.mean {
            let se = self.stderr.map_or(String::new(), |s| format!(" ± {}", num(s)));
            parts.push(format!("{}{se} ({within} of {n} seeds)", num(m)));
        }
        if below > 0 {
            parts.push(format!("below the smallest, {} ({below} of {n})", num(self.smallest)));
        }
        if none > 0 {
            parts.push(format!("none in the grid, > {} ({none} of {n})", num(self.largest)));
        }
        parts.join("; ")
    }
}

fn num(v: f64) -> String {
    if v.abs() >= 100.0 || v.fract() == 0.0 {
        format!("{v:.0}")
    } else if v.abs() >= 1.0 {
        format!("{v:.2}")
    } else {
        format!("{v:.4}")
    }
}

/// The crossing of one seed from its rows `(num_real, baseline loss, lowest loss with synthetic
/// rows)`, in any order; `None` without rows.
pub fn crossing(rows: &[(f64, f64, f64)]) -> Option<Crossing> {
    let mut rows: Vec<(f64, f64)> = rows.iter().map(|&(r, base, best)| (r, gain(base, best))).collect();
    rows.sort_by(|a, b| a.0.total_cmp(&b.0));
    let j = match rows.iter().position(|&(_, g)| g <= 0.0) {
        None if rows.is_empty() => return None,
        None => return Some(Crossing::NoneInGrid),
        Some(0) => return Some(Crossing::BelowSmallest),
        Some(j) => j,
    };
    let ((r0, g0), (r1, g1)) = (rows[j - 1], rows[j]);
    if g1 == 0.0 || !g0.is_finite() {
        // A tie, or an infinite gain before it: the crossing is the first row that does not gain.
        return Some(Crossing::At(r1));
    }
    let t = g0 / (g0 - g1);
    let at = if r0 > 0.0 { (r0.ln() + t * (r1.ln() - r0.ln())).exp() } else { r0 + t * (r1 - r0) };
    Some(Crossing::At(at))
}

/// The baseline's loss minus the best loss with synthetic rows (+∞ when only the baseline is
/// infinite, 0 when both are).
fn gain(base: f64, best: f64) -> f64 {
    if base == best {
        0.0
    } else {
        base - best
    }
}

/// Whether a parameter value means "no source" (cells without synthetic rows).
fn is_none(v: &ParamValue) -> bool {
    match v {
        ParamValue::Int(i) => *i == -1,
        ParamValue::Float(f) => f.is_nan() || *f == -1.0,
        ParamValue::Str(s) => s.is_empty() || s == "none" || s == "-" || s == "-1",
    }
}

/// One source setting's cells: `(num_real, num_synthetic) → [(seed, loss)]`, baselines included.
#[derive(Debug, Clone)]
pub struct SourceCells {
    pub source: Vec<(String, ParamValue)>,
    pub cells: BTreeMap<(u64, u64), Vec<(u64, f64)>>,
}

fn size(v: &ParamValue, name: &str) -> Result<u64> {
    match v.as_f64() {
        Some(x) if x >= 0.0 && x.fract() == 0.0 => Ok(x as u64),
        _ => Err(Error::Input(format!("`{name}` = {v} is not a count"))),
    }
}

/// Splits a value-grid table into its source settings (sorted by their parameters).
pub fn source_cells(table: &ResultsTable, metric: &str) -> Result<Vec<SourceCells>> {
    let names = table.param_names();
    for p in [ROW, COL] {
        if !names.iter().any(|n| n == p) {
            return Err(Error::Input(format!(
                "no parameter `{p}` in the results: not a value-of-synthetic grid (they have: {})",
                names.join(", ")
            )));
        }
    }
    let m = table.metric_index(metric).ok_or_else(|| {
        Error::Input(format!("no metric `{metric}` in the results (they have: {})", table.metric_names.join(", ")))
    })?;
    let stride = table.metric_names.len();
    // (num_real, num_synthetic, source parameters, seed, loss)
    type Cell = (u64, u64, Vec<(String, ParamValue)>, u64, f64);
    let mut all: Vec<Cell> = Vec::new();
    for (i, run) in table.runs.iter().enumerate() {
        let g = table.generations(i);
        if g == 0 {
            continue;
        }
        let value = run.metrics[(g - 1) * stride + m];
        let nr = size(run.params.get(ROW).expect("checked"), ROW)?;
        let ns = size(run.params.get(COL).expect("checked"), COL)?;
        let source: Vec<(String, ParamValue)> =
            run.params.0.iter().filter(|(k, _)| k != ROW && k != COL).cloned().collect();
        all.push((nr, ns, source, run.seed, value));
    }
    let key = |s: &[(String, ParamValue)]| s.iter().map(|(_, v)| sort_key(v)).collect::<Vec<_>>();
    let mut groups: BTreeMap<Vec<String>, SourceCells> = BTreeMap::new();
    for (nr, ns, source, seed, value) in &all {
        if *ns > 0 {
            groups
                .entry(key(source))
                .or_insert_with(|| SourceCells { source: source.clone(), cells: BTreeMap::new() })
                .cells
                .entry((*nr, *ns))
                .or_default()
                .push((*seed, *value));
        }
    }
    for (nr, ns, source, seed, value) in &all {
        if *ns > 0 {
            continue;
        }
        for g in groups.values_mut() {
            let matches =
                g.source.iter().zip(source).all(|((_, a), (_, b))| is_none(b) || a.group_key() == b.group_key());
            if matches {
                g.cells.entry((*nr, 0)).or_default().push((*seed, *value));
            }
        }
    }
    Ok(groups.into_values().collect())
}

/// Where source parameters other than the `source` seed vary (e.g. `source_real` is an axis), the
/// table split by them: one sub-table per combination, with the cells without synthetic rows
/// that serve as its baseline, for heatmaps that do not average different sources. Empty when
/// nothing but the source seed varies.
pub fn source_tables(table: &ResultsTable) -> Result<Vec<(Source, ResultsTable)>> {
    let names = table.param_names();
    if !names.iter().any(|n| n == COL) {
        return Err(Error::Input(format!("no parameter `{COL}` in the results: not a value-of-synthetic grid")));
    }
    let synthetic =
        |r: &thrive_core::RunRecord| r.params.get(COL).and_then(ParamValue::as_f64).is_some_and(|v| v > 0.0);
    let sources: Vec<Vec<(String, ParamValue)>> = table
        .runs
        .iter()
        .filter(|r| synthetic(r))
        .map(|r| r.params.0.iter().filter(|(k, _)| k != ROW && k != COL).cloned().collect())
        .collect();
    let vary: Vec<String> = varying(&sources).into_iter().filter(|p| p != "source").collect();
    if vary.is_empty() {
        return Ok(Vec::new());
    }
    let pick = |r: &thrive_core::RunRecord| -> Vec<(String, ParamValue)> {
        vary.iter().filter_map(|p| r.params.get(p).map(|v| (p.clone(), v.clone()))).collect()
    };
    let mut combos: BTreeMap<Vec<String>, Vec<(String, ParamValue)>> = BTreeMap::new();
    for r in table.runs.iter().filter(|r| synthetic(r)) {
        let c = pick(r);
        combos.entry(c.iter().map(|(_, v)| sort_key(v)).collect()).or_insert(c);
    }
    let mut out = Vec::new();
    for combo in combos.into_values() {
        let mut sub = ResultsTable::new(&table.setting, table.metric_names.clone());
        for r in &table.runs {
            let own = pick(r);
            let keep = own
                .iter()
                .zip(&combo)
                .all(|((_, a), (_, b))| a.group_key() == b.group_key() || (!synthetic(r) && is_none(a)));
            if keep {
                sub.push(r.clone())?;
            }
        }
        out.push((combo, sub));
    }
    Ok(out)
}

/// The crossover of every source setting of a value grid, for one metric (lower is better).
pub fn crossovers(table: &ResultsTable, metric: &str) -> Result<Vec<Crossover>> {
    let mut out = Vec::new();
    for group in source_cells(table, metric)? {
        // seed → num_real → (baseline, best with synthetic rows)
        let mut per_seed: SeedRows = BTreeMap::new();
        for (&(nr, ns), values) in &group.cells {
            for &(seed, v) in values {
                if v.is_nan() {
                    continue;
                }
                let e = per_seed.entry(seed).or_default().entry(nr).or_default();
                if ns == 0 {
                    e.0 = Some(e.0.map_or(v, |b: f64| b.min(v)));
                } else {
                    e.1 = Some(e.1.map_or(v, |b: f64| b.min(v)));
                }
            }
        }
        let mut seeds = Vec::new();
        let (mut smallest, mut largest) = (f64::INFINITY, f64::NEG_INFINITY);
        for (seed, rows) in per_seed {
            let rows: Vec<(f64, f64, f64)> =
                rows.into_iter().filter_map(|(nr, (base, best))| Some((nr as f64, base?, best?))).collect();
            for r in &rows {
                smallest = smallest.min(r.0);
                largest = largest.max(r.0);
            }
            if let Some(c) = crossing(&rows) {
                seeds.push((seed, c));
            }
        }
        if seeds.is_empty() {
            continue;
        }
        let at: Vec<f64> =
            seeds.iter().filter_map(|(_, c)| if let Crossing::At(x) = c { Some(*x) } else { None }).collect();
        let mean = (!at.is_empty()).then(|| at.iter().sum::<f64>() / at.len() as f64);
        let stderr = mean.filter(|_| at.len() >= 2).map(|m| {
            let var = at.iter().map(|x| (x - m).powi(2)).sum::<f64>() / (at.len() - 1) as f64;
            (var / at.len() as f64).sqrt()
        });
        out.push(Crossover { metric: metric.into(), source: group.source, seeds, smallest, largest, mean, stderr });
    }
    Ok(out)
}

/// The crossovers as a Markdown table, one row per source setting.
pub fn crossover_markdown(crossovers: &[Crossover]) -> String {
    let mut out = String::new();
    let Some(first) = crossovers.first() else {
        return "no source setting has both cells with and without synthetic rows: no crossover\n".into();
    };
    let names: Vec<&str> = first.source.iter().map(|(k, _)| k.as_str()).collect();
    let _ = writeln!(
        out,
        "Crossover of {}: the num_real above which no amount of synthetic rows lowers it (per seed, interpolated in log num_real; mean ± standard error over seeds)\n",
        first.metric
    );
    let _ = writeln!(out, "| {} | seeds | crossover num_real |", names.join(" | "));
    let _ = writeln!(out, "|{}", "---|".repeat(names.len() + 2));
    for c in crossovers {
        let values: Vec<String> = c.source.iter().map(|(_, v)| v.to_string()).collect();
        let _ = writeln!(out, "| {} | {} | {} |", values.join(" | "), c.seeds.len(), c.text());
    }
    out
}

fn csv_field(s: &str) -> String {
    if s.contains([',', '"', '\n']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s.to_string()
    }
}

fn write_text(path: &Path, text: &str) -> Result<()> {
    thrive_core::fsutil::write_atomic(path, |out| {
        use std::io::Write;
        out.write_all(text.as_bytes()).map_err(|e| thrive_core::Error::io(path, e))
    })?;
    Ok(())
}

/// Writes `<stem>.csv` (one row per source setting) and `<stem>_seeds.csv` (one row per source
/// setting and seed) in `out_dir`; returns the files written.
pub fn write_crossover_csv(crossovers: &[Crossover], out_dir: &Path, stem: &str) -> Result<Vec<PathBuf>> {
    let Some(first) = crossovers.first() else {
        return Ok(Vec::new());
    };
    let names: Vec<String> = first.source.iter().map(|(k, _)| csv_field(k)).collect();
    let values = |c: &Crossover| c.source.iter().map(|(_, v)| csv_field(&v.to_string())).collect::<Vec<_>>().join(",");
    let opt = |v: Option<f64>| v.map_or(String::new(), |v| v.to_string());
    let mut summary = format!(
        "{},metric,seeds,crossing_seeds,below_smallest,none_in_grid,crossover_mean,crossover_stderr,smallest_num_real,largest_num_real\n",
        names.join(",")
    );
    let mut seeds = format!("{},metric,seed,crossing,crossover_num_real\n", names.join(","));
    for c in crossovers {
        let _ = writeln!(
            summary,
            "{},{},{},{},{},{},{},{},{},{}",
            values(c),
            csv_field(&c.metric),
            c.seeds.len(),
            c.count(|x| matches!(x, Crossing::At(_))),
            c.count(|x| matches!(x, Crossing::BelowSmallest)),
            c.count(|x| matches!(x, Crossing::NoneInGrid)),
            opt(c.mean),
            opt(c.stderr),
            c.smallest,
            c.largest
        );
        for (seed, x) in &c.seeds {
            let (what, at) = match x {
                Crossing::At(v) => ("within", v.to_string()),
                Crossing::BelowSmallest => ("below_smallest", String::new()),
                Crossing::NoneInGrid => ("none_in_grid", String::new()),
            };
            let _ = writeln!(seeds, "{},{},{seed},{what},{at}", values(c), csv_field(&c.metric));
        }
    }
    std::fs::create_dir_all(out_dir).map_err(|e| thrive_core::Error::io(out_dir, e))?;
    let a = out_dir.join(format!("{}.csv", file_safe(stem)));
    let b = out_dir.join(format!("{}_seeds.csv", file_safe(stem)));
    write_text(&a, &summary)?;
    write_text(&b, &seeds)?;
    Ok(vec![a, b])
}

/// Source parameters that vary between source settings, as (name, distinct values).
fn varying(groups: &[Vec<(String, ParamValue)>]) -> Vec<String> {
    let Some(first) = groups.first() else { return Vec::new() };
    first
        .iter()
        .enumerate()
        .filter(|(i, _)| groups.iter().any(|g| g[*i].1.group_key() != first[*i].1.group_key()))
        .map(|(_, (k, _))| k.clone())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gain_handles_infinities() {
        assert_eq!(gain(f64::INFINITY, f64::INFINITY), 0.0);
        assert_eq!(gain(f64::INFINITY, 1.0), f64::INFINITY);
        // An infinite gain then a loss: the crossing is at the first row that does not gain.
        assert_eq!(crossing(&[(10.0, f64::INFINITY, 1.0), (100.0, 1.0, 2.0)]), Some(Crossing::At(100.0)));
    }
}
