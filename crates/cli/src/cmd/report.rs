//! `thrive report`: figures and a summary table from a results file.

use super::common::Format;
use anyhow::{Context, Result};
use std::path::PathBuf;
use thrive_core::ResultsTable;
use thrive_core::{Params, Workflow};
use thrive_report::{
    summary_csv, summary_json, summary_markdown, summary_rows_with, summary_text, trajectory_figures, FigureOptions,
    SummaryCell, SummaryRow, Theory,
};

#[derive(clap::Args)]
pub struct Args {
    /// A results file written by `thrive gaussian`, `thrive kde` or `thrive run` (or a run directory).
    results: PathBuf,
    /// Folder for the figures (default: `<results stem>-figures` beside the results).
    #[arg(long)]
    out_dir: Option<PathBuf>,
    /// Only these metrics (comma-separated; default: all).
    #[arg(long, value_delimiter = ',')]
    metric: Vec<String>,
    /// The parameter that colours the lines.
    #[arg(long, default_value = "n")]
    hue: String,
    /// Generations shown in the summary table (0 = the last one) [default: 1,10,100,0 as the
    /// protocol's Gaussian and KDE tables (docs/protocol.md §2.7, §3.5); every generation for a
    /// language-model run (§4.6)].
    #[arg(long, value_delimiter = ',')]
    generations: Vec<u32>,
    /// Bootstrap resamples for the 95% bands.
    #[arg(long, default_value_t = 1000)]
    resamples: usize,
    /// Linear y axis (default: log when every value is positive).
    #[arg(long)]
    linear: bool,
    /// How the summary is printed: plain, markdown, csv or json.
    #[arg(long, value_enum, default_value_t = Format::Plain)]
    format: Format,
    /// Same as `--format json`.
    #[arg(long, conflicts_with = "format")]
    json: bool,
    /// Skip the figures; print the summary only.
    #[arg(long)]
    no_figures: bool,
}

/// Figures and summary with the default options, for `--report` flags of the settings.
pub fn report_table(table: &ResultsTable, results: &std::path::Path) -> Result<()> {
    let args = Args {
        results: results.to_path_buf(),
        out_dir: None,
        metric: Vec::new(),
        hue: "n".into(),
        generations: Vec::new(),
        resamples: 1000,
        linear: false,
        format: Format::Plain,
        json: false,
        no_figures: false,
    };
    draw_and_summarise(table, &args)
}

/// The default figure folder beside a results file: `<stem>-figures`.
fn default_out_dir(results: &std::path::Path) -> PathBuf {
    let stem = results.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default();
    results.with_file_name(format!("{stem}-figures"))
}

pub fn run(mut args: Args) -> Result<()> {
    // A run directory of `thrive run` stands for its results file.
    if args.results.is_dir() {
        args.results = args.results.join("results.parquet");
    }
    let table = ResultsTable::read_parquet(&args.results)
        .with_context(|| format!("reading results {}", args.results.display()))?;
    draw_and_summarise(&table, &args)
}

/// The summary's generations: the flag's, else 1, 10, 100 and the last as the protocol's toy
/// tables, or every generation of a language-model run (its tables have a column per iteration).
fn summary_generations(table: &ResultsTable, flag: &[u32]) -> Vec<u32> {
    if !flag.is_empty() {
        return flag.to_vec();
    }
    if table.setting == "lm" {
        let last = (0..table.runs.len()).map(|r| table.generations(r)).max().unwrap_or(0) as u32;
        return (1..=last).collect();
    }
    vec![1, 10, 100, 0]
}

fn draw_and_summarise(table: &ResultsTable, args: &Args) -> Result<()> {
    let out_dir = args.out_dir.clone().unwrap_or_else(|| default_out_dir(&args.results));
    let format = Format::resolve(args.format, args.json);
    if table.setting == "lm-value" || table.setting == "gaussian-value" {
        return value_grid(table, args, format, &out_dir);
    }
    let generations = summary_generations(table, &args.generations);
    if !args.no_figures {
        let mut opts = FigureOptions::new(&out_dir);
        opts.metrics = args.metric.clone();
        opts.hue = args.hue.clone();
        opts.resamples = args.resamples;
        opts.log_y = args.linear.then_some(false);
        if table.setting == "kde" {
            // h1 only restates the bandwidth column.
            opts.ignore = vec!["h1".into()];
        }
        if table.setting == "lm" {
            // Losses in nats per token vary within a factor of two: a linear axis reads better.
            opts.log_y = Some(false);
        }
        opts.theory = theory(table);
        if table.setting == "discrete" {
            // Replace runs end at fixation: carry their last values (entropy 0) forward.
            opts.carry_forward = true;
            if opts.metrics.is_empty() {
                // fixation_generation is one number per run: its own figure against n below.
                opts.metrics = thrive_discrete::METRICS[..3].iter().map(|s| s.to_string()).collect();
            }
        }
        let files = trajectory_figures(table, &opts)?;
        let extra = if table.setting == "kde" {
            thrive_report::bandwidth::bandwidth_figures(table, &out_dir, &generations)?
        } else if table.setting == "discrete" {
            let theory = |p: &Params| {
                let num = |k: &str| p.get(k).and_then(|v| v.as_f64());
                if !paper_loop(p) {
                    return None;
                }
                Some(thrive_discrete::theory_fixation(num("K")? as usize, num("n")? as usize))
            };
            thrive_report::per_run_figure(
                table,
                "n",
                "fixation_generation",
                "K",
                Workflow::Replace,
                Some(&theory),
                &out_dir,
            )?
        } else {
            Vec::new()
        };
        tracing::info!("wrote {} figure files to {}", files.len() + extra.len(), out_dir.display());
    }
    let mut rows = summary_rows_with(table, &generations, &args.metric, table.setting == "discrete");
    rows.extend(theory_rows(table, &rows));
    let notes = || {
        if table.setting == "discrete" {
            print!("{}", fixation_text(table));
        }
        for note in theory_notes(table) {
            println!("note: {note}");
        }
    };
    match format {
        Format::Plain => {
            print!("{}", summary_text(&rows));
            notes();
        }
        Format::Markdown => {
            print!("{}", summary_markdown(&rows));
            notes();
        }
        Format::Csv => print!("{}", summary_csv(&rows)),
        Format::Json => println!("{}", serde_json::to_string_pretty(&summary_json(&rows))?),
    }
    Ok(())
}

/// The closed forms a setting has, for the figures' dashed lines and the summary.
fn theory(table: &ResultsTable) -> Option<Theory> {
    match table.setting.as_str() {
        "linreg" => Some(Theory(std::sync::Arc::new(|p: &Params, w: Workflow, metric: &str, t: u32| {
            let num = |k: &str| p.get(k).and_then(|v| v.as_f64());
            if metric != "test_mse" || !paper_loop(p) {
                return None;
            }
            thrive_linreg::theory_mse(num("d")? as usize, num("n")? as usize, num("sigma2")?, w, t)
        }))),
        _ => None,
    }
}

/// Whether a run's loop knobs (those among its results columns) are the paper's: the closed
/// forms hold only there.
fn paper_loop(p: &Params) -> bool {
    thrive_core::knobs::KNOB_NAMES.iter().all(|&k| {
        p.get(k).and_then(|v| v.as_f64()).is_none_or(|v| v.to_bits() == thrive_core::Knobs::PAPER.get(k).to_bits())
    })
}

/// Summary rows `<metric> (theory, closed form)` beside the measured ones, at the same generations.
fn theory_rows(table: &ResultsTable, rows: &[SummaryRow]) -> Vec<SummaryRow> {
    let Some(Theory(f)) = theory(table) else { return Vec::new() };
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

fn same_group(run: &thrive_core::RunRecord, row: &SummaryRow) -> bool {
    run.workflow == row.workflow
        && run.params.0.len() == row.params.len()
        && run.params.0.iter().zip(&row.params).all(|((k, v), (rk, rv))| k == rk && v.to_string() == *rv)
}

/// The discrete setting's mean fixation generation per (K, n) under Replace, beside the
/// Wright-Fisher value −2nK(1 − 1/K) ln(1 − 1/K).
fn fixation_text(table: &ResultsTable) -> String {
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

/// Where a setting's closed form does not apply although the workflow has one.
fn theory_notes(table: &ResultsTable) -> Vec<String> {
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

/// The value-of-synthetic grid (`lm-value`, `gaussian-value`): a heatmap and lines of each
/// chosen metric (default: the validation loss, or the Gaussian's KL) over num_real ×
/// num_synthetic, per source setting where source parameters vary; the crossover per source
/// setting (a Markdown table and CSV files); the metric against the proportion of real data; and
/// the crossover against each varying source parameter.
fn value_grid(table: &ResultsTable, args: &Args, format: Format, out_dir: &std::path::Path) -> Result<()> {
    if format == Format::Csv {
        anyhow::bail!(
            "--format csv: a value grid's tables are written as CSV beside the figures (<metric>_crossover.csv, <metric>_crossover_seeds.csv); \
             use plain, markdown or json"
        );
    }
    use thrive_report::value;
    let default = if table.setting == "gaussian-value" { "kl" } else { "eval_loss" };
    let metrics = if args.metric.is_empty() { vec![default.to_string()] } else { args.metric.clone() };
    let sources = value::source_tables(table)?;
    let mut json = Vec::new();
    for metric in &metrics {
        let stem = metric.clone();
        let grid = thrive_report::grid(table, "num_real", "num_synthetic", metric)?;
        let mut per_source = Vec::new();
        for (source, sub) in &sources {
            let label: Vec<String> = source.iter().map(|(k, v)| format!("{k} = {v}")).collect();
            per_source.push((label.join(", "), source, thrive_report::grid(sub, "num_real", "num_synthetic", metric)?));
        }
        let crossovers = value::crossovers(table, metric)?;
        if !args.no_figures {
            let mut files = grid.figures(out_dir, &stem, &[])?;
            for (_, source, g) in &per_source {
                files.extend(g.figures(out_dir, &stem, source)?);
            }
            files.extend(value::value_figures(table, &crossovers, metric, out_dir, &stem)?);
            files.extend(value::write_crossover_csv(&crossovers, out_dir, &format!("{stem}_crossover"))?);
            tracing::info!("wrote {} figure and table files to {}", files.len(), out_dir.display());
        }
        if format == Format::Json {
            let cells = |g: &thrive_report::Grid| {
                serde_json::json!({
                    "metric": g.metric,
                    "num_real": g.rows.iter().map(|v| v.to_string()).collect::<Vec<_>>(),
                    "num_synthetic": g.cols.iter().map(|v| v.to_string()).collect::<Vec<_>>(),
                    "mean": g.mean,
                    "runs": g.count,
                    "r_squared_num_real": g.r_squared_rows,
                })
            };
            let mut entry = cells(&grid);
            entry["per_source"] =
                per_source.iter().map(|(label, _, g)| serde_json::json!({"source": label, "grid": cells(g)})).collect();
            entry["crossover"] = crossovers
                .iter()
                .map(|c| {
                    serde_json::json!({
                        "source": c.source.iter().map(|(k, v)| (k.clone(), serde_json::Value::from(v.to_string()))).collect::<serde_json::Map<_, _>>(),
                        "mean": c.mean,
                        "stderr": c.stderr,
                        "seeds": c.seeds.iter().map(|(s, x)| serde_json::json!({"seed": s, "crossing": match x {
                            value::Crossing::At(v) => serde_json::json!(v),
                            value::Crossing::BelowSmallest => serde_json::json!("below the smallest"),
                            value::Crossing::NoneInGrid => serde_json::json!("none in the grid"),
                        }})).collect::<Vec<_>>(),
                        "text": c.text(),
                    })
                })
                .collect();
            json.push(entry);
        } else {
            println!("{}", grid.text());
            for (label, _, g) in &per_source {
                println!("{label}:\n{}", g.text());
            }
            println!("{}", value::crossover_markdown(&crossovers));
        }
    }
    if format == Format::Json {
        println!("{}", serde_json::to_string_pretty(&json)?);
    }
    Ok(())
}
