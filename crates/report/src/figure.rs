//! Trajectory figures: a metric against generation, one panel per workflow,
//! one line (mean over seeds, 95% bootstrap band) per hue value.

use crate::legend::{draw_legend, line_key, theory_key};
use crate::stats::{bootstrap_mean_ci, Band};
use crate::theory::Theory;
use crate::{Error, Result};
use plotters::coord::Shift;
use plotters::prelude::*;
use rayon::prelude::*;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Once;
use thrive_core::{ParamValue, ResultsTable, Workflow};

/// What to draw and where.
#[derive(Debug, Clone)]
pub struct FigureOptions {
    /// Folder for the PNG and SVG files (created if missing).
    pub out_dir: PathBuf,
    /// Metrics to draw; empty means every metric.
    pub metrics: Vec<String>,
    /// The parameter that colours the lines.
    pub hue: String,
    /// Bootstrap resamples for the bands (seaborn's default is 1000).
    pub resamples: usize,
    /// Seed of the bootstrap, so figures are reproducible.
    pub seed: u64,
    /// Log y axis: `None` chooses log when every value is positive.
    pub log_y: Option<bool>,
    /// Parameters left out of the facets (so runs that differ only in them share a figure).
    pub ignore: Vec<String>,
    /// Added to every file name, so figures of another grouping do not overwrite these.
    pub tag: String,
    /// Theory lines, drawn dashed in each curve's colour where they apply.
    pub theory: Option<Theory>,
    /// Runs that ended early (an absorbing state) count with their last values at later
    /// generations, so means never average only the runs still going.
    pub carry_forward: bool,
}

impl FigureOptions {
    pub fn new(out_dir: impl Into<PathBuf>) -> Self {
        FigureOptions {
            out_dir: out_dir.into(),
            metrics: Vec::new(),
            hue: "n".into(),
            resamples: 1000,
            seed: 0,
            log_y: None,
            ignore: Vec::new(),
            tag: String::new(),
            theory: None,
            carry_forward: false,
        }
    }
}

/// One line of a panel.
struct Curve {
    label: String,
    points: Vec<(u32, Band)>,
    /// The theory line at each generation where it applies.
    theory: Vec<(u32, f64)>,
}

struct Panel {
    workflow: Workflow,
    curves: Vec<Curve>,
}

struct Figure {
    title: String,
    stem: String,
    metric: String,
    /// The most seeds behind any point: the band is drawn (and named) only with two or more.
    seeds: usize,
    panels: Vec<Panel>,
}

pub(crate) const FONT: &str = "sans-serif";

/// Registers the embedded DejaVu Sans font with plotters (once per process).
pub(crate) fn ensure_font() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        let bytes: &'static [u8] = include_bytes!("../assets/DejaVuSans.ttf");
        for style in [FontStyle::Normal, FontStyle::Bold] {
            // The font is embedded and known to parse; a failure only loses text.
            let _ = plotters::style::register_font(FONT, style, bytes);
        }
    });
}

/// A viridis-like colour for position `t` in [0, 1].
pub(crate) fn viridis(t: f64) -> RGBColor {
    const STOPS: [(u8, u8, u8); 6] =
        [(68, 1, 84), (65, 68, 135), (42, 120, 142), (34, 168, 132), (122, 209, 81), (253, 231, 37)];
    let t = t.clamp(0.0, 1.0) * (STOPS.len() - 1) as f64;
    let i = (t.floor() as usize).min(STOPS.len() - 2);
    let f = t - i as f64;
    let mix = |a: u8, b: u8| (a as f64 + (b as f64 - a as f64) * f).round() as u8;
    let (a, b) = (STOPS[i], STOPS[i + 1]);
    RGBColor(mix(a.0, b.0), mix(a.1, b.1), mix(a.2, b.2))
}

/// The colour of line `j` of `n`: spread along viridis, stopping short of its pale yellow end,
/// which is hard to see on white.
pub(crate) fn hue_colour(j: usize, n: usize) -> RGBColor {
    viridis(if n > 1 { 0.85 * j as f64 / (n - 1) as f64 } else { 0.4 })
}

/// Draws every trajectory figure of `table` as PNG and SVG; returns the files written.
pub fn trajectory_figures(table: &ResultsTable, opts: &FigureOptions) -> Result<Vec<PathBuf>> {
    let figures = build_figures(table, opts)?;
    std::fs::create_dir_all(&opts.out_dir).map_err(|e| thrive_core::Error::io(&opts.out_dir, e))?;
    ensure_font();
    let mut written = Vec::new();
    for fig in &figures {
        let log_y = opts.log_y.unwrap_or_else(|| all_positive(fig));
        let size = (1400, 480).min_panels(fig.panels.len());
        written.extend(render(&opts.out_dir, &fig.stem, size, &TrajectoryDrawing { fig, log_y })?);
    }
    Ok(written)
}

trait PanelSize {
    fn min_panels(self, panels: usize) -> (u32, u32);
}
impl PanelSize for (u32, u32) {
    fn min_panels(self, panels: usize) -> (u32, u32) {
        (self.0.max(470 * panels as u32), self.1)
    }
}

/// Something that draws itself on any plotters backend.
pub(crate) trait Drawing {
    fn draw<DB: DrawingBackend>(&self, area: &DrawingArea<DB, Shift>) -> std::result::Result<(), String>;
}

struct TrajectoryDrawing<'a> {
    fig: &'a Figure,
    log_y: bool,
}

impl Drawing for TrajectoryDrawing<'_> {
    fn draw<DB: DrawingBackend>(&self, area: &DrawingArea<DB, Shift>) -> std::result::Result<(), String> {
        draw(area, self.fig, self.log_y)
    }
}

/// Renders one figure to `<stem>.png` and `<stem>.svg` in `dir`, each written atomically.
pub(crate) fn render<D: Drawing>(dir: &Path, stem: &str, size: (u32, u32), drawing: &D) -> Result<Vec<PathBuf>> {
    let png = dir.join(format!("{stem}.png"));
    let svg = dir.join(format!("{stem}.svg"));
    let draw_err = |path: &Path, message: String| Error::Draw { path: path.into(), message };

    // PNG: render into a temporary `.png` (the encoder picks the format from the extension), then rename.
    let tmp_png = dir.join(format!(".{stem}.{}.tmp.png", std::process::id()));
    let result = (|| {
        let area = BitMapBackend::new(&tmp_png, size).into_drawing_area();
        drawing.draw(&area).map_err(|m| draw_err(&png, m))?;
        area.present().map_err(|e| draw_err(&png, e.to_string()))?;
        drop(area);
        std::fs::rename(&tmp_png, &png).map_err(|e| thrive_core::Error::io(&png, e))?;
        Ok::<_, Error>(())
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp_png);
    }
    result?;

    let mut text = String::new();
    {
        let area = SVGBackend::with_string(&mut text, size).into_drawing_area();
        drawing.draw(&area).map_err(|m| draw_err(&svg, m))?;
        area.present().map_err(|e| draw_err(&svg, e.to_string()))?;
    }
    thrive_core::fsutil::write_atomic(&svg, |out| {
        use std::io::Write;
        out.write_all(text.as_bytes()).map_err(|e| thrive_core::Error::io(&svg, e))
    })?;
    Ok(vec![png, svg])
}

fn all_positive(fig: &Figure) -> bool {
    fig.panels.iter().flat_map(|p| &p.curves).flat_map(|c| &c.points).all(|(_, b)| b.lo > 0.0)
}

/// The number of theory points a figure draws (its legend names the dashed lines when any).
fn theory_points(fig: &Figure) -> usize {
    fig.panels.iter().flat_map(|p| &p.curves).map(|c| c.theory.len()).sum()
}

/// Groups runs into figures (per metric and facet), panels (per workflow) and curves (per hue value).
fn build_figures(table: &ResultsTable, opts: &FigureOptions) -> Result<Vec<Figure>> {
    let metrics: Vec<(usize, String)> = if opts.metrics.is_empty() {
        table.metric_names.iter().cloned().enumerate().collect()
    } else {
        opts.metrics
            .iter()
            .map(|m| {
                table.metric_index(m).map(|i| (i, m.clone())).ok_or_else(|| {
                    Error::Input(format!(
                        "no metric `{m}` in the results (they have: {})",
                        table.metric_names.join(", ")
                    ))
                })
            })
            .collect::<Result<_>>()?
    };
    let params = table.param_names();
    if !params.iter().any(|p| p == &opts.hue) {
        return Err(Error::Input(format!(
            "no parameter `{}` to colour by (the results have: {})",
            opts.hue,
            params.join(", ")
        )));
    }
    // facet key -> (facet params, workflow -> hue key -> (hue value, run indices))
    type Curves = BTreeMap<Workflow, BTreeMap<String, (ParamValue, Vec<usize>)>>;
    let mut facets: Vec<(Vec<(String, ParamValue)>, Curves)> = Vec::new();
    for (i, run) in table.runs.iter().enumerate() {
        // Runs outside the generation loop have no trajectory.
        let Some(workflow) = run.workflow else { continue };
        let facet: Vec<(String, ParamValue)> =
            run.params.0.iter().filter(|(k, _)| k != &opts.hue && !opts.ignore.contains(k)).cloned().collect();
        let hue = run.params.get(&opts.hue).cloned().expect("checked above");
        let pos = match facets.iter().position(|(f, _)| same_params(f, &facet)) {
            Some(p) => p,
            None => {
                facets.push((facet, BTreeMap::new()));
                facets.len() - 1
            }
        };
        let entry = facets[pos].1.entry(workflow).or_default();
        let key = sort_key(&hue);
        entry.entry(key).or_insert_with(|| (hue, Vec::new())).1.push(i);
    }

    let vary = varying(&facets.iter().map(|(f, _)| f.as_slice()).collect::<Vec<_>>());
    let jobs: Vec<(usize, usize)> = (0..facets.len()).flat_map(|f| (0..metrics.len()).map(move |m| (f, m))).collect();
    let figures = jobs
        .par_iter()
        .map(|&(f, m)| {
            let (facet, curves) = &facets[f];
            let (metric_index, metric) = &metrics[m];
            let mut panels = Vec::new();
            for (workflow, by_hue) in curves {
                let mut out = Vec::new();
                for (hue, runs) in by_hue.values() {
                    let generations = runs.iter().map(|&r| table.generations(r)).max().unwrap_or(0);
                    let mut points = Vec::new();
                    for g in 0..generations {
                        let values: Vec<f64> = runs
                            .iter()
                            .filter(|&&r| table.generations(r) > 0 && (opts.carry_forward || g < table.generations(r)))
                            .map(|&r| {
                                let g = g.min(table.generations(r) - 1);
                                table.runs[r].metrics[g * table.metric_names.len() + metric_index]
                            })
                            .collect();
                        let cell = (f * 1_000_003 + m * 10_007 + g) as u32;
                        if let Some(b) = bootstrap_mean_ci(&values, opts.resamples, opts.seed, cell) {
                            points.push((g as u32 + 1, b));
                        }
                    }
                    if !points.is_empty() {
                        let theory = match &opts.theory {
                            Some(Theory(f)) => (1..=generations as u32)
                                .filter_map(|g| f(&table.runs[runs[0]].params, *workflow, metric, g).map(|v| (g, v)))
                                .collect(),
                            None => Vec::new(),
                        };
                        out.push(Curve { label: format!("{} = {hue}", opts.hue), points, theory });
                    }
                }
                if !out.is_empty() {
                    panels.push(Panel { workflow: *workflow, curves: out });
                }
            }
            let (facet_text, stem) = figure_names(&format!("{metric}{}", opts.tag), facet, &vary);
            let seeds = panels.iter().flat_map(|p: &Panel| &p.curves).flat_map(|c| &c.points).map(|p| p.1.count);
            Figure {
                title: format!("{}: {metric}  ({facet_text})", table.setting),
                stem,
                metric: metric.clone(),
                seeds: seeds.max().unwrap_or(0),
                panels,
            }
        })
        .filter(|f| !f.panels.is_empty())
        .collect();
    Ok(figures)
}

/// The parameters whose values differ between `facets` (each listing the same keys in order):
/// the ones that split the figures and so name their files.
pub(crate) fn varying(facets: &[&[(String, ParamValue)]]) -> Vec<String> {
    let Some(first) = facets.first() else { return Vec::new() };
    first
        .iter()
        .enumerate()
        .filter(|(i, _)| facets.iter().any(|f| f.get(*i).is_none_or(|(_, v)| v.group_key() != first[*i].1.group_key())))
        .map(|(_, (k, _))| k.clone())
        .collect()
}

/// A value as a reader names it: a path or Hub id by its last component (`checkpoints/x/model`
/// → `model`, `google/gemma-2-2b` → `gemma-2-2b`), anything else as written.
pub(crate) fn short_value(v: &ParamValue) -> String {
    let text = v.to_string();
    match text.trim_end_matches(['/', '\\']).rsplit(['/', '\\']).next() {
        Some(last) if !last.is_empty() => last.to_string(),
        _ => text,
    }
}

/// A figure's title text (`k = v` for every facet parameter, paths shortened) and its file stem:
/// `<name>[_<facet>-<value>…]` over the parameters in `vary` only, never a path.
pub(crate) fn figure_names(name: &str, facet: &[(String, ParamValue)], vary: &[String]) -> (String, String) {
    let shown: Vec<&(String, ParamValue)> = facet.iter().filter(|(_, v)| v.to_string() != "-").collect();
    let text: Vec<String> = shown.iter().map(|(k, v)| format!("{k} = {}", short_value(v))).collect();
    let mut stem = name.to_string();
    for (k, v) in shown.iter().filter(|(k, _)| vary.contains(k)) {
        stem.push_str(&format!("_{k}-{}", file_safe(&short_value(v))));
    }
    (text.join(", "), stem)
}

/// Title text (`k = v`) and file-name parts (`k-v`) of a facet; parameters set to "-" (not
/// applicable) are left out.
pub(crate) fn facet_labels(facet: &[(String, ParamValue)]) -> (Vec<String>, Vec<String>) {
    let shown = facet.iter().filter(|(_, v)| v.to_string() != "-");
    let text = shown.clone().map(|(k, v)| format!("{k} = {v}")).collect();
    let file = shown.map(|(k, v)| format!("{k}-{}", file_safe(&v.to_string()))).collect();
    (text, file)
}

fn same_params(a: &[(String, ParamValue)], b: &[(String, ParamValue)]) -> bool {
    a.len() == b.len() && a.iter().zip(b).all(|((ka, va), (kb, vb))| ka == kb && va.group_key() == vb.group_key())
}

/// A key that sorts numbers numerically and strings alphabetically.
pub(crate) fn sort_key(v: &ParamValue) -> String {
    match v.as_f64() {
        // Order-preserving encoding of a float's bits.
        Some(x) => {
            let bits = x.to_bits();
            let ordered = if x.is_sign_negative() { !bits } else { bits | (1 << 63) };
            format!("0{ordered:016x}")
        }
        None => format!("1{v}"),
    }
}

pub(crate) fn file_safe(s: &str) -> String {
    s.chars().map(|c| if c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_') { c } else { '-' }).collect()
}

fn draw<DB: DrawingBackend>(
    root: &DrawingArea<DB, Shift>,
    fig: &Figure,
    log_y: bool,
) -> std::result::Result<(), String> {
    let err = |e: DrawingAreaErrorKind<DB::ErrorType>| e.to_string();
    root.fill(&WHITE).map_err(err)?;
    let root = root.titled(&fig.title, (FONT, 22)).map_err(err)?;
    let panels = root.split_evenly((1, fig.panels.len()));
    let all = fig.panels.iter().flat_map(|p| &p.curves).flat_map(|c| &c.points);
    let x_max = all.clone().map(|(g, _)| *g).max().unwrap_or(1).max(2);
    let (mut y_lo, mut y_hi) = all
        .filter(|(_, b)| !log_y || b.lo > 0.0)
        .fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), (_, b)| (lo.min(b.lo), hi.max(b.hi)));
    for (_, v) in fig.panels.iter().flat_map(|p| &p.curves).flat_map(|c| &c.theory) {
        if v.is_finite() && (!log_y || *v > 0.0) {
            (y_lo, y_hi) = (y_lo.min(*v), y_hi.max(*v));
        }
    }
    if !y_lo.is_finite() || !y_hi.is_finite() {
        (y_lo, y_hi) = (if log_y { 1e-3 } else { 0.0 }, 1.0);
    }
    if log_y {
        (y_lo, y_hi) = (y_lo / 1.5, y_hi * 1.5);
    } else {
        let pad = ((y_hi - y_lo) * 0.05).max(1e-12);
        (y_lo, y_hi) = (y_lo - pad, y_hi + pad);
    }
    let hues = fig.panels.iter().map(|p| p.curves.len()).max().unwrap_or(1);
    for (k, (area, panel)) in panels.iter().zip(&fig.panels).enumerate() {
        let mut builder = ChartBuilder::on(area);
        builder.caption(panel.workflow.title(), (FONT, 18)).margin(8).x_label_area_size(40).y_label_area_size(70);
        macro_rules! plot {
            ($chart:expr) => {{
                let mut chart = $chart;
                chart
                    .configure_mesh()
                    .x_desc("generation")
                    .y_desc(fig.metric.as_str())
                    .label_style((FONT, 13))
                    .axis_desc_style((FONT, 14))
                    .draw()
                    .map_err(err)?;
                for (j, curve) in panel.curves.iter().enumerate() {
                    let color = hue_colour(j, hues);
                    let visible: Vec<&(u32, Band)> =
                        curve.points.iter().filter(|(_, b)| !log_y || (b.lo > 0.0 && b.mean > 0.0)).collect();
                    let mut band: Vec<(u32, f64)> = visible.iter().map(|(g, b)| (*g, b.hi)).collect();
                    band.extend(visible.iter().rev().map(|(g, b)| (*g, b.lo)));
                    chart.draw_series(std::iter::once(Polygon::new(band, color.mix(0.2)))).map_err(err)?;
                    let line = chart
                        .draw_series(LineSeries::new(visible.iter().map(|(g, b)| (*g, b.mean)), color.stroke_width(2)))
                        .map_err(err)?;
                    if k + 1 == fig.panels.len() {
                        line.label(curve.label.clone()).legend(line_key(color));
                    }
                    let theory: Vec<(u32, f64)> =
                        curve.theory.iter().copied().filter(|(_, v)| v.is_finite() && (!log_y || *v > 0.0)).collect();
                    if !theory.is_empty() {
                        chart.draw_series(DashedLineSeries::new(theory, 6, 4, color.stroke_width(1))).map_err(err)?;
                    }
                }
                if k + 1 == fig.panels.len() && theory_points(fig) > 0 {
                    theory_key(&mut chart).map_err(err)?;
                }
                if k + 1 == fig.panels.len() {
                    // Name the shaded band in the legend (or say there is none).
                    let band = if fig.seeds > 1 {
                        format!("95% bootstrap band, {} seeds", fig.seeds)
                    } else {
                        "one seed: no band".to_string()
                    };
                    chart
                        .draw_series(std::iter::empty::<PathElement<(u32, f64)>>())
                        .map_err(err)?
                        .label(band)
                        .legend(|(x, y)| Rectangle::new([(x, y - 5), (x + 18, y + 5)], BLACK.mix(0.2).filled()));
                    draw_legend(&mut chart, SeriesLabelPosition::UpperLeft, 13).map_err(err)?;
                }
            }};
        }
        if log_y {
            plot!(builder.build_cartesian_2d(1u32..x_max, (y_lo..y_hi).log_scale()).map_err(err)?);
        } else {
            plot!(builder.build_cartesian_2d(1u32..x_max, y_lo..y_hi).map_err(err)?);
        }
    }
    Ok(())
}
