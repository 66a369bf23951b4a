//! Grid figures: the mean of a metric over every pair of values of two parameters (the
//! value-of-synthetic heatmap: `num_real` × `num_synthetic`), as a heatmap, as lines against the
//! column parameter, and as a table.

use crate::figure::{ensure_font, figure_names, file_safe, hue_colour, render, sort_key, viridis, Drawing, FONT};
use crate::legend::{draw_legend, line_key};
use crate::{Error, Result};
use plotters::coord::Shift;
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};
use std::collections::BTreeMap;
use std::fmt::Write;
use std::path::{Path, PathBuf};
use thrive_core::{ParamValue, ResultsTable};

/// Means of one metric over the runs (every seed and every other parameter) of each cell.
#[derive(Debug, Clone, PartialEq)]
pub struct Grid {
    pub metric: String,
    pub row_param: String,
    pub col_param: String,
    /// Row and column values, ascending.
    pub rows: Vec<ParamValue>,
    pub cols: Vec<ParamValue>,
    /// `mean[r][c]`: `None` where no run has that cell (or every value is NaN).
    pub mean: Vec<Vec<Option<f64>>>,
    /// Runs averaged in each cell.
    pub count: Vec<Vec<usize>>,
    /// R² of the ordinary least-squares fit of the metric on the row parameter alone, over all
    /// runs (the paper's check of how much the real-data count alone explains).
    pub r_squared_rows: Option<f64>,
}

/// Averages `metric` (its last generation) over the runs of every (`row`, `col`) cell.
pub fn grid(table: &ResultsTable, row: &str, col: &str, metric: &str) -> Result<Grid> {
    let names = table.param_names();
    for p in [row, col] {
        if !names.iter().any(|n| n == p) {
            return Err(Error::Input(format!("no parameter `{p}` in the results (they have: {})", names.join(", "))));
        }
    }
    let m = table.metric_index(metric).ok_or_else(|| {
        Error::Input(format!("no metric `{metric}` in the results (they have: {})", table.metric_names.join(", ")))
    })?;
    let stride = table.metric_names.len();
    let mut cells: BTreeMap<(String, String), Vec<f64>> = BTreeMap::new();
    let (mut rows, mut cols): (BTreeMap<String, ParamValue>, BTreeMap<String, ParamValue>) = Default::default();
    let mut points = Vec::new();
    for (i, run) in table.runs.iter().enumerate() {
        let g = table.generations(i);
        if g == 0 {
            continue;
        }
        let value = run.metrics[(g - 1) * stride + m];
        let (r, c) = (run.params.get(row).expect("checked"), run.params.get(col).expect("checked"));
        rows.entry(sort_key(r)).or_insert_with(|| r.clone());
        cols.entry(sort_key(c)).or_insert_with(|| c.clone());
        if value.is_finite() {
            cells.entry((sort_key(r), sort_key(c))).or_default().push(value);
            if let Some(x) = r.as_f64() {
                points.push((x, value));
            }
        }
    }
    let mut mean = Vec::new();
    let mut count = Vec::new();
    for rk in rows.keys() {
        let (mut m_row, mut c_row) = (Vec::new(), Vec::new());
        for ck in cols.keys() {
            let v = cells.get(&(rk.clone(), ck.clone()));
            m_row.push(v.map(|v| v.iter().sum::<f64>() / v.len() as f64));
            c_row.push(v.map_or(0, Vec::len));
        }
        mean.push(m_row);
        count.push(c_row);
    }
    Ok(Grid {
        metric: metric.into(),
        row_param: row.into(),
        col_param: col.into(),
        rows: rows.into_values().collect(),
        cols: cols.into_values().collect(),
        mean,
        count,
        r_squared_rows: crate::stats::r_squared(&points),
    })
}

impl Grid {
    /// The grid as a text table: rows down, columns across, means to four decimals.
    pub fn text(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(out, "{} (mean over runs), {} down, {} across", self.metric, self.row_param, self.col_param);
        let mut lines: Vec<Vec<String>> = Vec::new();
        let mut header = vec![format!("{} \\ {}", self.row_param, self.col_param)];
        header.extend(self.cols.iter().map(|c| c.to_string()));
        lines.push(header);
        for (r, row) in self.rows.iter().enumerate() {
            let mut line = vec![row.to_string()];
            line.extend(self.mean[r].iter().map(|v| v.map_or("-".into(), crate::table::number)));
            lines.push(line);
        }
        let widths: Vec<usize> =
            (0..lines[0].len()).map(|c| lines.iter().map(|l| l[c].len()).max().unwrap_or(0)).collect();
        for l in &lines {
            let cells: Vec<String> = l.iter().zip(&widths).map(|(s, w)| format!("{s:>w$}")).collect();
            let _ = writeln!(out, "  {}", cells.join("  "));
        }
        let runs: usize = self.count.iter().flatten().sum();
        let _ = writeln!(out, "  ({runs} runs; R² of {} on {} alone: {})", self.metric, self.row_param, {
            self.r_squared_rows.map_or("-".into(), |r| format!("{r:.3}"))
        });
        out
    }

    /// Draws `<stem>_heatmap[_<param>-<value>…]` and `<stem>_lines[…]` (the metric against the
    /// column parameter, one line per row value) as PNG and SVG in `out_dir`, for the subset of
    /// runs that `facet` (empty for all runs) names in the titles and file names; returns the
    /// files written.
    pub fn figures(&self, out_dir: &Path, stem: &str, facet: &[(String, ParamValue)]) -> Result<Vec<PathBuf>> {
        std::fs::create_dir_all(out_dir).map_err(|e| thrive_core::Error::io(out_dir, e))?;
        ensure_font();
        let every: Vec<String> = facet.iter().map(|(k, _)| k.clone()).collect();
        let (text, suffix) = figure_names("", facet, &every);
        let stem = file_safe(stem);
        let heatmap = format!("{stem}_heatmap{suffix}");
        let mut files = render(out_dir, &heatmap, (900, 640), &Heatmap(self, &text))?;
        files.extend(render(out_dir, &format!("{stem}_lines{suffix}"), (900, 560), &Lines(self, &text))?);
        Ok(files)
    }

    fn range(&self) -> (f64, f64) {
        let (lo, hi) = self
            .mean
            .iter()
            .flatten()
            .flatten()
            .fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), &v| (lo.min(v), hi.max(v)));
        if lo.is_finite() {
            (lo, hi)
        } else {
            (0.0, 1.0)
        }
    }
}

/// A grid's heatmap, titled with the facet text of its subset (empty for all runs).
struct Heatmap<'a>(&'a Grid, &'a str);

impl Drawing for Heatmap<'_> {
    fn draw<DB: DrawingBackend>(&self, root: &DrawingArea<DB, Shift>) -> std::result::Result<(), String> {
        let g = self.0;
        let err = |e: DrawingAreaErrorKind<DB::ErrorType>| e.to_string();
        root.fill(&WHITE).map_err(err)?;
        let title = with_facet(format!("{}: mean over runs", g.metric), self.1);
        let root = root.titled(&title, (FONT, 22)).map_err(err)?;
        let (main, bar) = root.split_horizontally(root.dim_in_pixel().0.saturating_sub(110));
        let (lo, hi) = g.range();
        let t = |v: f64| if hi > lo { (v - lo) / (hi - lo) } else { 0.5 };
        let (nr, nc) = (g.rows.len(), g.cols.len());
        let mut chart = ChartBuilder::on(&main)
            .margin(10)
            .x_label_area_size(50)
            .y_label_area_size(80)
            .build_cartesian_2d(0f64..nc as f64, 0f64..nr as f64)
            .map_err(err)?;
        let label = |values: &[ParamValue], x: f64| {
            let i = x.floor() as usize;
            if (x - i as f64 - 0.5).abs() < 1e-6 {
                values.get(i).map_or(String::new(), |v| v.to_string())
            } else {
                String::new()
            }
        };
        chart
            .configure_mesh()
            .disable_mesh()
            .x_labels(2 * nc + 1)
            .y_labels(2 * nr + 1)
            .x_label_formatter(&|x| label(&g.cols, *x))
            .y_label_formatter(&|y| label(&g.rows, *y))
            .x_desc(g.col_param.as_str())
            .y_desc(g.row_param.as_str())
            .label_style((FONT, 13))
            .axis_desc_style((FONT, 15))
            .draw()
            .map_err(err)?;
        for r in 0..nr {
            for c in 0..nc {
                let (x, y) = (c as f64, r as f64);
                let Some(v) = g.mean[r][c] else {
                    chart
                        .draw_series(std::iter::once(Rectangle::new(
                            [(x, y), (x + 1.0, y + 1.0)],
                            RGBColor(235, 235, 235).filled(),
                        )))
                        .map_err(err)?;
                    continue;
                };
                let color = viridis(t(v));
                chart
                    .draw_series(std::iter::once(Rectangle::new([(x, y), (x + 1.0, y + 1.0)], color.filled())))
                    .map_err(err)?;
                // Dark text on the pale end of the scale, white on the dark end.
                let ink = if t(v) > 0.6 { BLACK } else { WHITE };
                let style =
                    TextStyle::from((FONT, 13).into_font()).color(&ink).pos(Pos::new(HPos::Center, VPos::Center));
                chart
                    .draw_series(std::iter::once(Text::new(format!("{v:.3}"), (x + 0.5, y + 0.5), style)))
                    .map_err(err)?;
            }
        }
        // Colour bar.
        let mut scale = ChartBuilder::on(&bar)
            .margin_top(10)
            .margin_bottom(60)
            .margin_right(10)
            .y_label_area_size(60)
            .build_cartesian_2d(0f64..1.0, lo..hi.max(lo + 1e-12))
            .map_err(err)?;
        scale
            .configure_mesh()
            .disable_mesh()
            .disable_x_axis()
            .y_labels(6)
            .y_label_formatter(&|v| format!("{v:.3}"))
            .label_style((FONT, 12))
            .draw()
            .map_err(err)?;
        let steps = 64;
        let span = (hi - lo).max(1e-12);
        scale
            .draw_series((0..steps).map(|i| {
                let a = lo + span * i as f64 / steps as f64;
                let b = lo + span * (i + 1) as f64 / steps as f64;
                Rectangle::new([(0.0, a), (1.0, b)], viridis(i as f64 / (steps - 1) as f64).filled())
            }))
            .map_err(err)?;
        Ok(())
    }
}

/// `title (facet)`, or the title alone for all runs.
fn with_facet(title: String, facet: &str) -> String {
    if facet.is_empty() {
        title
    } else {
        format!("{title} ({facet})")
    }
}

struct Lines<'a>(&'a Grid, &'a str);

impl Drawing for Lines<'_> {
    fn draw<DB: DrawingBackend>(&self, root: &DrawingArea<DB, Shift>) -> std::result::Result<(), String> {
        let g = self.0;
        let err = |e: DrawingAreaErrorKind<DB::ErrorType>| e.to_string();
        root.fill(&WHITE).map_err(err)?;
        let title = with_facet(format!("{} against {}, one line per {}", g.metric, g.col_param, g.row_param), self.1);
        let root = root.titled(&title, (FONT, 20)).map_err(err)?;
        let (lo, hi) = g.range();
        // Losses that span more than a factor of three (scarce real data far above plentiful)
        // read on a log axis: on a linear one the small rise of the plentiful rows is flat.
        let log_y = lo > 0.0 && hi > 3.0 * lo;
        let nc = g.cols.len();
        let x_range = -0.3f64..(nc as f64 - 0.7).max(0.7);
        let cols = &g.cols;
        let n = g.rows.len();
        macro_rules! plot {
            ($chart:expr) => {{
                let mut chart = $chart;
                chart
                    .configure_mesh()
                    .x_labels(nc.max(2))
                    .x_label_formatter(&|x| {
                        let i = x.round();
                        if (x - i).abs() < 1e-6 && i >= 0.0 {
                            cols.get(i as usize).map_or(String::new(), |v| v.to_string())
                        } else {
                            String::new()
                        }
                    })
                    .x_desc(format!("{} (categorical)", g.col_param))
                    .y_desc(if log_y { format!("{} (log scale)", g.metric) } else { g.metric.clone() })
                    .label_style((FONT, 13))
                    .axis_desc_style((FONT, 14))
                    .draw()
                    .map_err(err)?;
                for (r, row) in g.rows.iter().enumerate() {
                    let color = hue_colour(r, n);
                    let points: Vec<(f64, f64)> =
                        g.mean[r].iter().enumerate().filter_map(|(c, v)| v.map(|v| (c as f64, v))).collect();
                    chart
                        .draw_series(LineSeries::new(points.clone(), color.stroke_width(2)))
                        .map_err(err)?
                        .label(format!("{} = {row}", g.row_param))
                        .legend(line_key(color));
                    chart.draw_series(points.into_iter().map(|p| Circle::new(p, 3, color.filled()))).map_err(err)?;
                }
                draw_legend(&mut chart, SeriesLabelPosition::UpperRight, 12).map_err(err)?;
            }};
        }
        let mut builder = ChartBuilder::on(&root);
        builder.margin(10).x_label_area_size(45).y_label_area_size(70);
        if log_y {
            plot!(builder.build_cartesian_2d(x_range, ((lo / 1.15)..(hi * 1.15)).log_scale()).map_err(err)?);
        } else {
            let pad = ((hi - lo) * 0.08).max(1e-9);
            plot!(builder.build_cartesian_2d(x_range, (lo - pad)..(hi + pad)).map_err(err)?);
        }
        Ok(())
    }
}
