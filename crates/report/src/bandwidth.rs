//! Figures of the KDE bandwidth study (docs/protocol.md §3.3 and §3.4).
//!
//! * NLL against bandwidth: for every combination of the other parameters
//!   (dataset, n, …), one panel per workflow, one line per chosen generation
//!   across the fixed bandwidths (log x), and the rules of thumb (Scott,
//!   Silverman) as markers at the bandwidth they actually used at that
//!   generation (the mean of the `h` metric).
//! * Shrinking schedules (`h1*t^-alpha`): NLL against generation with one line
//!   per schedule, so the §3.4 criterion (bounded under Accumulate iff
//!   Σ h_t²/t converges, i.e. α > 0) can be seen.
//!
//! The results only carry the bandwidth as text (`0.1`, `scott`,
//! `0.5*t^-0.25`); that is all this module reads.

use crate::figure::{ensure_font, figure_names, hue_colour, render, sort_key, varying, Drawing, FONT};
use crate::legend::{draw_legend, line_key};
use crate::stats::{bootstrap_mean_ci, Band};
use crate::{trajectory_figures, FigureOptions, Result};
use plotters::coord::ranged1d::ValueFormatter;
use plotters::coord::Shift;
use plotters::prelude::*;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use thrive_core::{ParamValue, ResultsTable, Workflow};

const RESAMPLES: usize = 1000;

/// A facet's parameters and its runs by workflow.
type Facet = (Vec<(String, ParamValue)>, BTreeMap<Workflow, Vec<usize>>);

enum Kind {
    Fixed(f64),
    Rule(String),
    Schedule,
}

fn kind(v: &ParamValue) -> Kind {
    let text = v.to_string();
    match text.parse::<f64>() {
        Ok(h) => Kind::Fixed(h),
        Err(_) if text.contains("t^") => Kind::Schedule,
        Err(_) => Kind::Rule(text),
    }
}

/// One line (fixed bandwidths) or marker set (a rule) of a panel.
struct Series {
    generation: u32,
    /// (bandwidth, NLL band), sorted by bandwidth.
    fixed: Vec<(f64, Band)>,
    /// (rule name, mean bandwidth used, NLL band).
    rules: Vec<(String, f64, Band)>,
}

struct Panel {
    workflow: Workflow,
    series: Vec<Series>,
}

struct BandwidthFigure {
    title: String,
    panels: Vec<Panel>,
}

/// Draws the bandwidth figures of a KDE results table into `out_dir`;
/// `generations` picks the lines (0 stands for the last generation).
pub fn bandwidth_figures(table: &ResultsTable, out_dir: &Path, generations: &[u32]) -> Result<Vec<PathBuf>> {
    let (Some(nll), Some(h_metric)) = (table.metric_index("nll"), table.metric_index("h")) else {
        return Ok(Vec::new());
    };
    if !table.param_names().iter().any(|p| p == "bandwidth") {
        return Ok(Vec::new());
    }
    let mut written = Vec::new();
    std::fs::create_dir_all(out_dir).map_err(|e| thrive_core::Error::io(out_dir, e))?;
    ensure_font();

    // facet (params other than bandwidth and h1) -> workflow -> runs
    let mut facets: BTreeMap<String, Facet> = BTreeMap::new();
    let mut has_schedule = false;
    for (i, run) in table.runs.iter().enumerate() {
        let Some(workflow) = run.workflow else { continue };
        let facet: Vec<(String, ParamValue)> =
            run.params.0.iter().filter(|(k, _)| k != "bandwidth" && k != "h1").cloned().collect();
        let key = facet.iter().map(|(k, v)| format!("{k}={}", sort_key(v))).collect::<Vec<_>>().join(";");
        facets.entry(key).or_insert_with(|| (facet, BTreeMap::new())).1.entry(workflow).or_default().push(i);
        has_schedule |= matches!(run.params.get("bandwidth").map(kind), Some(Kind::Schedule));
    }
    let stride = table.metric_names.len();
    let value = |run: usize, g: u32, metric: usize| table.runs[run].metrics[(g as usize - 1) * stride + metric];

    let vary = varying(&facets.values().map(|(f, _)| f.as_slice()).collect::<Vec<_>>());
    for (facet_index, (facet, by_workflow)) in facets.values().enumerate() {
        let mut panels = Vec::new();
        for (&workflow, runs) in by_workflow {
            // bandwidth text -> runs
            let mut by_bandwidth: BTreeMap<String, (ParamValue, Vec<usize>)> = BTreeMap::new();
            for &r in runs {
                let b = table.runs[r].params.get("bandwidth").cloned().expect("checked above");
                by_bandwidth.entry(sort_key(&b)).or_insert_with(|| (b, Vec::new())).1.push(r);
            }
            let fixed_count = by_bandwidth.values().filter(|(b, _)| matches!(kind(b), Kind::Fixed(_))).count();
            if fixed_count < 2 {
                continue; // nothing to draw against bandwidth
            }
            let last = runs.iter().map(|&r| table.generations(r)).max().unwrap_or(0) as u32;
            let mut chosen: Vec<u32> =
                generations.iter().map(|&g| if g == 0 { last } else { g }).filter(|&g| g >= 1 && g <= last).collect();
            chosen.sort_unstable();
            chosen.dedup();
            let mut series = Vec::new();
            for (gi, &g) in chosen.iter().enumerate() {
                let cell = |b: usize| (facet_index * 7919 + gi * 131 + b) as u32;
                let mut s = Series { generation: g, fixed: Vec::new(), rules: Vec::new() };
                for (b, (bw, rs)) in by_bandwidth.values().enumerate() {
                    let alive: Vec<usize> =
                        rs.iter().copied().filter(|&r| table.generations(r) >= g as usize).collect();
                    let nlls: Vec<f64> = alive.iter().map(|&r| value(r, g, nll)).collect();
                    let Some(band) = bootstrap_mean_ci(&nlls, RESAMPLES, 0, cell(b)) else { continue };
                    match kind(bw) {
                        Kind::Fixed(h) => s.fixed.push((h, band)),
                        Kind::Rule(name) => {
                            let hs: Vec<f64> = alive.iter().map(|&r| value(r, g, h_metric)).collect();
                            let h = hs.iter().sum::<f64>() / hs.len() as f64;
                            s.rules.push((name, h, band));
                        }
                        Kind::Schedule => {}
                    }
                }
                s.fixed.sort_by(|a, b| a.0.total_cmp(&b.0));
                series.push(s);
            }
            panels.push(Panel { workflow, series });
        }
        if panels.is_empty() {
            continue;
        }
        let (text, stem) = figure_names("nll-vs-bandwidth", facet, &vary);
        let title = format!("{}: nll against bandwidth  ({text})   ▲ Scott  ■ Silverman", table.setting);
        let fig = BandwidthFigure { title, panels };
        let size = ((470 * fig.panels.len() as u32).max(1000), 480);
        written.extend(render(out_dir, &stem, size, &fig)?);
    }

    if has_schedule {
        let mut opts = FigureOptions::new(out_dir);
        opts.metrics = vec!["nll".into()];
        opts.hue = "bandwidth".into();
        opts.ignore = vec!["h1".into()];
        opts.tag = "-by-bandwidth".into();
        opts.resamples = RESAMPLES;
        written.extend(trajectory_figures(table, &opts)?);
    }
    Ok(written)
}

impl Drawing for BandwidthFigure {
    fn draw<DB: DrawingBackend>(&self, root: &DrawingArea<DB, Shift>) -> std::result::Result<(), String> {
        let err = |e: DrawingAreaErrorKind<DB::ErrorType>| e.to_string();
        root.fill(&WHITE).map_err(err)?;
        let root = root.titled(&self.title, (FONT, 22)).map_err(err)?;
        let areas = root.split_evenly((1, self.panels.len()));
        let series = self.panels.iter().flat_map(|p| &p.series);
        let xs = series.flat_map(|s| s.fixed.iter().map(|(h, _)| *h).chain(s.rules.iter().map(|r| r.1)));
        let (x_lo, x_hi) = xs.fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), x| (lo.min(x), hi.max(x)));
        if !(x_lo.is_finite() && x_hi.is_finite() && x_lo > 0.0) {
            return Ok(());
        }
        let x_range = (x_lo / 1.5)..(x_hi * 1.5);
        for (k, (area, panel)) in areas.iter().zip(&self.panels).enumerate() {
            // Each panel gets its own y range: Replace at small h reaches NLLs that would flatten the others.
            let bands =
                panel.series.iter().flat_map(|s| s.fixed.iter().map(|f| f.1).chain(s.rules.iter().map(|r| r.2)));
            let (y_lo, y_hi) =
                bands.fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), b| (lo.min(b.lo), hi.max(b.hi)));
            if !(y_lo.is_finite() && y_hi.is_finite()) {
                continue;
            }
            let pad = ((y_hi - y_lo) * 0.05).max(1e-9);
            let mut builder = ChartBuilder::on(area);
            builder.caption(panel.workflow.title(), (FONT, 18)).margin(8).x_label_area_size(40).y_label_area_size(70);
            if y_lo > 0.0 {
                let chart =
                    builder.build_cartesian_2d(x_range.clone().log_scale(), ((y_lo / 1.2)..(y_hi * 1.2)).log_scale());
                self.panel(chart.map_err(err)?, panel, k + 1 == self.panels.len()).map_err(err)?;
            } else {
                let chart = builder.build_cartesian_2d(x_range.clone().log_scale(), (y_lo - pad)..(y_hi + pad));
                self.panel(chart.map_err(err)?, panel, k + 1 == self.panels.len()).map_err(err)?;
            }
        }
        Ok(())
    }
}

impl BandwidthFigure {
    fn panel<'a, DB, Y>(
        &self,
        mut chart: ChartContext<'a, DB, Cartesian2d<LogCoord<f64>, Y>>,
        panel: &Panel,
        legend: bool,
    ) -> std::result::Result<(), DrawingAreaErrorKind<DB::ErrorType>>
    where
        DB: DrawingBackend + 'a,
        Y: Ranged<ValueType = f64> + ValueFormatter<f64>,
    {
        {
            chart
                .configure_mesh()
                .x_desc("bandwidth h")
                .y_desc("test NLL")
                .label_style((FONT, 13))
                .axis_desc_style((FONT, 14))
                .draw()?;
            let count = panel.series.len();
            for (j, s) in panel.series.iter().enumerate() {
                let color = hue_colour(j, count);
                let mut band: Vec<(f64, f64)> = s.fixed.iter().map(|(h, b)| (*h, b.hi)).collect();
                band.extend(s.fixed.iter().rev().map(|(h, b)| (*h, b.lo)));
                chart.draw_series(std::iter::once(Polygon::new(band, color.mix(0.2))))?;
                let line = chart
                    .draw_series(LineSeries::new(s.fixed.iter().map(|(h, b)| (*h, b.mean)), color.stroke_width(2)))?;
                if legend {
                    line.label(format!("generation {}", s.generation)).legend(line_key(color));
                }
                for (name, h, b) in &s.rules {
                    // Scott as triangles, Silverman (and anything else) as squares.
                    let style = color.filled();
                    if name == "scott" {
                        chart.draw_series(std::iter::once(TriangleMarker::new((*h, b.mean), 7, style)))?;
                    } else {
                        let (x, y) = (*h, b.mean);
                        chart.draw_series(std::iter::once(
                            EmptyElement::at((x, y)) + Rectangle::new([(-5, -5), (5, 5)], style),
                        ))?;
                    }
                }
            }
            if legend {
                draw_legend(&mut chart, SeriesLabelPosition::UpperRight, 13)?;
            }
        }
        Ok(())
    }
}
