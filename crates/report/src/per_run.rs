//! A per-run value against a run parameter: e.g. the discrete setting's fixation generation
//! against n, one line per K, with a closed form dashed beside each line.

use crate::figure::{ensure_font, hue_colour, render, sort_key, Drawing, FONT};
use crate::legend::{draw_legend, line_key, theory_key};
use crate::{Error, Result};
use plotters::coord::Shift;
use plotters::prelude::*;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use thrive_core::{ParamValue, Params, ResultsTable, Workflow};

/// A closed form for a run's parameters.
pub type RunTheory = dyn Fn(&Params) -> Option<f64>;

/// One line: (x, mean over the runs with a finite value, runs) and the closed form at each x.
struct Line {
    label: String,
    points: Vec<(f64, f64, usize)>,
    theory: Vec<(f64, f64)>,
}

struct PerRun {
    title: String,
    x: String,
    metric: String,
    lines: Vec<Line>,
}

/// Draws the mean over runs of each run's last `metric` value against the parameter `x`,
/// one line per value of `hue`, for the runs of `workflow` (log-log axes); `theory` gives a
/// closed form for a run's parameters. Runs whose value is not finite (never reached) are
/// left out of the mean, and the count of runs kept is returned per point. Returns the files
/// written (none when no run has a finite value).
pub fn per_run_figure(
    table: &ResultsTable,
    x: &str,
    metric: &str,
    hue: &str,
    workflow: Workflow,
    theory: Option<&RunTheory>,
    out_dir: &Path,
) -> Result<Vec<PathBuf>> {
    let k = table.metric_index(metric).ok_or_else(|| Error::Input(format!("no metric `{metric}` in the results")))?;
    let m = table.metric_names.len();
    // hue key -> (hue value, x key -> (x, values, params))
    type Cells = BTreeMap<String, (f64, Vec<f64>, Params)>;
    let mut by_hue: BTreeMap<String, (ParamValue, Cells)> = BTreeMap::new();
    for run in table.runs.iter().filter(|r| r.workflow == Some(workflow) && r.metrics.len() >= m) {
        let (Some(h), Some(xv)) = (run.params.get(hue), run.params.get(x).and_then(|v| v.as_f64())) else { continue };
        let value = run.metrics[run.metrics.len() - m + k];
        let cells = &mut by_hue.entry(sort_key(h)).or_insert_with(|| (h.clone(), BTreeMap::new())).1;
        let cell =
            cells.entry(sort_key(&ParamValue::Float(xv))).or_insert_with(|| (xv, Vec::new(), run.params.clone()));
        if value.is_finite() {
            cell.1.push(value);
        }
    }
    let lines: Vec<Line> = by_hue
        .values()
        .map(|(h, cells)| Line {
            label: format!("{hue} = {h}"),
            points: cells
                .values()
                .filter(|(_, v, _)| !v.is_empty())
                .map(|(xv, v, _)| (*xv, v.iter().sum::<f64>() / v.len() as f64, v.len()))
                .collect(),
            theory: cells.values().filter_map(|(xv, _, p)| Some((*xv, theory?(p)?))).collect(),
        })
        .filter(|l| !l.points.is_empty())
        .collect();
    if lines.is_empty() {
        return Ok(Vec::new());
    }
    std::fs::create_dir_all(out_dir).map_err(|e| thrive_core::Error::io(out_dir, e))?;
    ensure_font();
    let fig = PerRun {
        title: format!("{}: {metric} against {x} ({})", table.setting, workflow.title()),
        x: x.into(),
        metric: metric.into(),
        lines,
    };
    let stem = format!("{metric}_vs_{x}_{}", workflow.name());
    render(out_dir, &stem, (900, 600), &fig)
}

impl Drawing for PerRun {
    fn draw<DB: DrawingBackend>(&self, area: &DrawingArea<DB, Shift>) -> std::result::Result<(), String> {
        let err = |e: DrawingAreaErrorKind<DB::ErrorType>| e.to_string();
        area.fill(&WHITE).map_err(err)?;
        let xs = self.lines.iter().flat_map(|l| l.points.iter().map(|p| p.0).chain(l.theory.iter().map(|t| t.0)));
        let ys = self.lines.iter().flat_map(|l| l.points.iter().map(|p| p.1).chain(l.theory.iter().map(|t| t.1)));
        let positive = |it: &mut dyn Iterator<Item = f64>| {
            it.filter(|v| *v > 0.0).fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), v| (a.min(v), b.max(v)))
        };
        let (mut x_lo, mut x_hi) = positive(&mut xs.into_iter());
        let (mut y_lo, mut y_hi) = positive(&mut ys.into_iter());
        if !x_lo.is_finite() || !y_lo.is_finite() {
            (x_lo, x_hi, y_lo, y_hi) = (1.0, 10.0, 1.0, 10.0);
        }
        let mut chart = ChartBuilder::on(area)
            .caption(&self.title, (FONT, 20))
            .margin(10)
            .x_label_area_size(40)
            .y_label_area_size(70)
            .build_cartesian_2d((x_lo / 1.5..x_hi * 1.5).log_scale(), (y_lo / 1.5..y_hi * 1.5).log_scale())
            .map_err(err)?;
        chart
            .configure_mesh()
            .x_desc(self.x.as_str())
            .y_desc(format!("mean {}", self.metric))
            .label_style((FONT, 13))
            .axis_desc_style((FONT, 14))
            .draw()
            .map_err(err)?;
        let n = self.lines.len();
        for (j, line) in self.lines.iter().enumerate() {
            let color = hue_colour(j, n);
            let pts: Vec<(f64, f64)> = line.points.iter().filter(|p| p.1 > 0.0).map(|p| (p.0, p.1)).collect();
            chart
                .draw_series(LineSeries::new(pts.clone(), color.stroke_width(2)))
                .map_err(err)?
                .label(line.label.clone())
                .legend(line_key(color));
            chart.draw_series(pts.iter().map(|&p| Circle::new(p, 4, color.filled()))).map_err(err)?;
            let theory: Vec<(f64, f64)> = line.theory.iter().copied().filter(|t| t.1 > 0.0).collect();
            if !theory.is_empty() {
                chart.draw_series(DashedLineSeries::new(theory, 6, 4, color.stroke_width(1))).map_err(err)?;
            }
        }
        if self.lines.iter().any(|l| !l.theory.is_empty()) {
            theory_key(&mut chart).map_err(err)?;
        }
        draw_legend(&mut chart, SeriesLabelPosition::UpperLeft, 13).map_err(err)?;
        Ok(())
    }
}
