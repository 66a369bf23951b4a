//! The figures of a value grid beside its heatmap: the metric against the proportion of real
//! data for every source setting, and the crossover against each varying source parameter.

use super::{source_cells, varying, Crossover, SourceCells};
use crate::figure::{ensure_font, facet_labels, file_safe, hue_colour, render, sort_key, Drawing, FONT};
use crate::legend::{draw_legend, line_key};
use crate::Result;
use plotters::coord::Shift;
use plotters::prelude::*;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use thrive_core::{ParamValue, ResultsTable};

/// One line of a figure: label, points (x, y, error) and whether to join them.
struct Series {
    label: String,
    points: Vec<(f64, f64, f64)>,
}

struct Panel {
    title: String,
    x_desc: String,
    series: Vec<Series>,
    log_x: bool,
}

struct LineFigure {
    title: String,
    y_desc: String,
    panels: Vec<Panel>,
    log_y: bool,
}

/// The figures of a value grid beside the heatmap: for every source setting, `<stem>_vs_proportion_real[_<param>-<value>…]`
/// (the metric's mean over seeds against num_real / (num_real + num_synthetic), one line per
/// num_real on the left, one per total num_real + num_synthetic on the right); and where source
/// parameters vary, `<stem>_crossover_vs_<param>` (the crossover against each numeric one, one line
/// per combination of the others). PNG and SVG; returns the files written.
pub fn value_figures(
    table: &ResultsTable,
    crossovers: &[Crossover],
    metric: &str,
    out_dir: &Path,
    stem: &str,
) -> Result<Vec<PathBuf>> {
    std::fs::create_dir_all(out_dir).map_err(|e| thrive_core::Error::io(out_dir, e))?;
    ensure_font();
    let stem = file_safe(stem);
    let groups = source_cells(table, metric)?;
    let sources: Vec<Vec<(String, ParamValue)>> = groups.iter().map(|g| g.source.clone()).collect();
    let vary = varying(&sources);
    let mut files = Vec::new();
    for g in &groups {
        let shown: Vec<(String, ParamValue)> = g.source.iter().filter(|(k, _)| vary.contains(k)).cloned().collect();
        let (text, file) = facet_labels(&shown);
        let name = if file.is_empty() {
            format!("{stem}_vs_proportion_real")
        } else {
            format!("{stem}_vs_proportion_real_{}", file.join("_"))
        };
        let fig = proportion_figure(g, metric, &text.join(", "));
        if fig.panels.iter().all(|p| p.series.is_empty()) {
            continue;
        }
        files.extend(render(out_dir, &file_safe(&name), (1300, 560), &fig)?);
    }
    for p in &vary {
        if p == "source" || p == "seed" {
            // An identifier, not a quantity.
            continue;
        }
        if let Some(fig) = crossover_figure(crossovers, p, &vary) {
            files.extend(render(out_dir, &file_safe(&format!("{stem}_crossover_vs_{p}")), (900, 560), &fig)?);
        }
    }
    Ok(files)
}

/// An axis label without trailing zeros (`100`, `0.25`).
fn tick(v: f64) -> String {
    let s = format!("{v:.3}");
    let s = s.trim_end_matches('0').trim_end_matches('.');
    if s == "-0" {
        "0".into()
    } else {
        s.into()
    }
}

fn mean_se(values: &[f64]) -> Option<(f64, f64)> {
    let v: Vec<f64> = values.iter().copied().filter(|v| v.is_finite()).collect();
    if v.is_empty() {
        return None;
    }
    let m = v.iter().sum::<f64>() / v.len() as f64;
    let se = if v.len() > 1 {
        (v.iter().map(|x| (x - m).powi(2)).sum::<f64>() / (v.len() - 1) as f64 / v.len() as f64).sqrt()
    } else {
        0.0
    };
    Some((m, se))
}

fn proportion_figure(g: &SourceCells, metric: &str, source: &str) -> LineFigure {
    // (num_real, total) → (proportion, mean, se)
    let mut points: Vec<(u64, u64, f64, f64, f64)> = Vec::new();
    for (&(nr, ns), values) in &g.cells {
        if nr + ns == 0 {
            continue;
        }
        let v: Vec<f64> = values.iter().map(|(_, v)| *v).collect();
        if let Some((m, se)) = mean_se(&v) {
            points.push((nr, nr + ns, nr as f64 / (nr + ns) as f64, m, se));
        }
    }
    let lines = |by: fn(&(u64, u64, f64, f64, f64)) -> u64, name: &str| {
        let mut map: BTreeMap<u64, Vec<(f64, f64, f64)>> = BTreeMap::new();
        for p in &points {
            map.entry(by(p)).or_default().push((p.2, p.3, p.4));
        }
        map.into_iter()
            .map(|(k, mut pts)| {
                pts.sort_by(|a, b| a.0.total_cmp(&b.0));
                Series { label: format!("{name} = {k}"), points: pts }
            })
            .collect::<Vec<_>>()
    };
    let log_y = points.iter().all(|p| p.3 > 0.0)
        && points.iter().map(|p| p.3).fold(f64::NEG_INFINITY, f64::max)
            > 10.0 * points.iter().map(|p| p.3).fold(f64::INFINITY, f64::min);
    let x_desc = "proportion of real data, num_real / (num_real + num_synthetic)".to_string();
    let title = if source.is_empty() {
        format!("{metric} against the proportion of real data (mean over seeds)")
    } else {
        format!("{metric} against the proportion of real data (mean over seeds), {source}")
    };
    LineFigure {
        title,
        y_desc: metric.into(),
        panels: vec![
            Panel {
                title: "one line per num_real".into(),
                x_desc: x_desc.clone(),
                series: lines(|p| p.0, "num_real"),
                log_x: false,
            },
            Panel {
                title: "one line per total num_real + num_synthetic".into(),
                x_desc,
                series: lines(|p| p.1, "total"),
                log_x: false,
            },
        ],
        log_y,
    }
}

fn crossover_figure(crossovers: &[Crossover], param: &str, vary: &[String]) -> Option<LineFigure> {
    let others: Vec<&String> = vary.iter().filter(|p| *p != param).collect();
    type Line = (String, Vec<(f64, f64, f64)>);
    let mut lines: BTreeMap<Vec<String>, Line> = BTreeMap::new();
    for c in crossovers {
        let x = c.source.iter().find(|(k, _)| k == param)?.1.as_f64()?;
        let (Some(m), se) = (c.mean, c.stderr) else { continue };
        let rest: Vec<&(String, ParamValue)> = c.source.iter().filter(|(k, _)| others.contains(&k)).collect();
        let key = rest.iter().map(|(_, v)| sort_key(v)).collect();
        let label = rest.iter().map(|(k, v)| format!("{k} = {v}")).collect::<Vec<_>>().join(", ");
        lines.entry(key).or_insert_with(|| (label, Vec::new())).1.push((x, m, se.unwrap_or(0.0)));
    }
    let series: Vec<Series> = lines
        .into_values()
        .map(|(label, mut points)| {
            points.sort_by(|a, b| a.0.total_cmp(&b.0));
            Series { label: if label.is_empty() { "crossover".into() } else { label }, points }
        })
        .collect();
    if series.iter().all(|s| s.points.is_empty()) {
        return None;
    }
    let xs = series.iter().flat_map(|s| &s.points).map(|p| p.0);
    let log_x = xs.clone().all(|x| x > 0.0);
    let metric = crossovers.first().map_or("", |c| c.metric.as_str());
    Some(LineFigure {
        title: format!("crossover num_real of {metric} against {param} (mean ± s.e. over seeds that cross)"),
        y_desc: "crossover num_real".into(),
        panels: vec![Panel { title: String::new(), x_desc: param.into(), series, log_x }],
        log_y: true,
    })
}

impl Drawing for LineFigure {
    fn draw<DB: DrawingBackend>(&self, root: &DrawingArea<DB, Shift>) -> std::result::Result<(), String> {
        let err = |e: DrawingAreaErrorKind<DB::ErrorType>| e.to_string();
        root.fill(&WHITE).map_err(err)?;
        let root = root.titled(&self.title, (FONT, 18)).map_err(err)?;
        let areas = root.split_evenly((1, self.panels.len()));
        let all = self.panels.iter().flat_map(|p| &p.series).flat_map(|s| &s.points);
        let (mut lo, mut hi) = all.clone().filter(|p| !self.log_y || p.1 - p.2 > 0.0 || p.1 > 0.0).fold(
            (f64::INFINITY, f64::NEG_INFINITY),
            |(lo, hi), p| {
                let l = if self.log_y && p.1 - p.2 <= 0.0 { p.1 } else { p.1 - p.2 };
                (lo.min(l), hi.max(p.1 + p.2))
            },
        );
        if !lo.is_finite() || !hi.is_finite() {
            (lo, hi) = (1.0, 10.0);
        }
        if self.log_y {
            (lo, hi) = (lo / 1.3, hi * 1.3);
        } else {
            let pad = ((hi - lo) * 0.06).max(1e-9);
            (lo, hi) = (lo - pad, hi + pad);
        }
        for (area, panel) in areas.iter().zip(&self.panels) {
            let xs = panel.series.iter().flat_map(|s| &s.points).map(|p| p.0);
            let (mut x0, mut x1) = xs.fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), x| (a.min(x), b.max(x)));
            if !x0.is_finite() {
                (x0, x1) = (0.0, 1.0);
            }
            if panel.log_x {
                (x0, x1) = (x0 / 1.5, x1 * 1.5);
            } else {
                let pad = ((x1 - x0) * 0.04).max(0.02);
                (x0, x1) = (x0 - pad, x1 + pad);
            }
            let mut builder = ChartBuilder::on(area);
            builder.caption(panel.title.as_str(), (FONT, 15)).margin(10).x_label_area_size(45).y_label_area_size(75);
            let n = panel.series.len();
            macro_rules! plot {
                ($chart:expr) => {{
                    let mut chart = $chart;
                    chart
                        .configure_mesh()
                        .x_desc(panel.x_desc.as_str())
                        .x_label_formatter(&|v| tick(*v))
                        .y_label_formatter(&|v| tick(*v))
                        .y_desc(self.y_desc.as_str())
                        .label_style((FONT, 12))
                        .axis_desc_style((FONT, 13))
                        .draw()
                        .map_err(err)?;
                    for (j, s) in panel.series.iter().enumerate() {
                        let color = hue_colour(j, n);
                        let pts: Vec<(f64, f64)> =
                            s.points.iter().filter(|p| !self.log_y || p.1 > 0.0).map(|p| (p.0, p.1)).collect();
                        chart
                            .draw_series(s.points.iter().filter(|p| p.2 > 0.0 && (!self.log_y || p.1 - p.2 > 0.0)).map(
                                |p| PathElement::new(vec![(p.0, p.1 - p.2), (p.0, p.1 + p.2)], color.stroke_width(1)),
                            ))
                            .map_err(err)?;
                        chart
                            .draw_series(LineSeries::new(pts.clone(), color.stroke_width(2)))
                            .map_err(err)?
                            .label(s.label.clone())
                            .legend(line_key(color));
                        chart.draw_series(pts.into_iter().map(|p| Circle::new(p, 3, color.filled()))).map_err(err)?;
                    }
                    if n <= 16 {
                        draw_legend(&mut chart, SeriesLabelPosition::UpperRight, 11).map_err(err)?;
                    }
                }};
            }
            match (panel.log_x, self.log_y) {
                (false, false) => plot!(builder.build_cartesian_2d(x0..x1, lo..hi).map_err(err)?),
                (false, true) => plot!(builder.build_cartesian_2d(x0..x1, (lo..hi).log_scale()).map_err(err)?),
                (true, false) => plot!(builder.build_cartesian_2d((x0..x1).log_scale(), lo..hi).map_err(err)?),
                (true, true) => {
                    plot!(builder.build_cartesian_2d((x0..x1).log_scale(), (lo..hi).log_scale()).map_err(err)?)
                }
            }
        }
        Ok(())
    }
}
