//! `thrive report`: figures and a summary table from a results file.

use super::common::Format;
use anyhow::{Context, Result};
use std::path::PathBuf;
use thrive_core::{ResultsTable, Workflow};
use thrive_report::{
    summary_csv, summary_json, summary_markdown, summary_rows_with, summary_text, theory, trajectory_figures,
    FigureOptions,
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
        opts.theory = theory::closed_form(table);
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
            thrive_report::per_run_figure(
                table,
                "n",
                "fixation_generation",
                "K",
                Workflow::Replace,
                Some(&theory::fixation),
                &out_dir,
            )?
        } else {
            Vec::new()
        };
        tracing::info!("wrote {} figure files to {}", files.len() + extra.len(), out_dir.display());
    }
    let mut rows = summary_rows_with(table, &generations, &args.metric, table.setting == "discrete");
    rows.extend(theory::rows(table, &rows));
    let notes = || {
        if table.setting == "discrete" {
            print!("{}", theory::fixation_text(table));
        }
        for note in theory::notes(table) {
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
