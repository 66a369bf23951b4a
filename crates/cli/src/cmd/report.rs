//! `thrive report`: figures and a summary table from a results file.

use anyhow::{Context, Result};
use std::path::PathBuf;
use thrive_core::ResultsTable;
use thrive_report::{summary_json, summary_rows, summary_text, trajectory_figures, FigureOptions};

#[derive(clap::Args)]
pub struct Args {
    /// A results file written by `thrive gaussian` or `thrive kde`.
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
    /// Generations shown in the summary table (0 = the last one).
    #[arg(long, value_delimiter = ',', default_value = "1,10,100,0")]
    generations: Vec<u32>,
    /// Bootstrap resamples for the 95% bands.
    #[arg(long, default_value_t = 1000)]
    resamples: usize,
    /// Linear y axis (default: log when every value is positive).
    #[arg(long)]
    linear: bool,
    /// Print the summary as JSON instead of a table.
    #[arg(long)]
    json: bool,
    /// Skip the figures; print the summary only.
    #[arg(long)]
    no_figures: bool,
}

pub fn run(args: Args) -> Result<()> {
    let table = ResultsTable::read_parquet(&args.results)
        .with_context(|| format!("reading results {}", args.results.display()))?;
    let out_dir = args.out_dir.clone().unwrap_or_else(|| {
        let stem = args.results.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default();
        args.results.with_file_name(format!("{stem}-figures"))
    });
    if !args.no_figures {
        let mut opts = FigureOptions::new(&out_dir);
        opts.metrics = args.metric.clone();
        opts.hue = args.hue.clone();
        opts.resamples = args.resamples;
        opts.log_y = args.linear.then_some(false);
        let files = trajectory_figures(&table, &opts)?;
        let extra = if table.setting == "kde" {
            thrive_report::bandwidth::bandwidth_figures(&table, &out_dir, &args.generations)?
        } else {
            Vec::new()
        };
        tracing::info!("wrote {} figure files to {}", files.len() + extra.len(), out_dir.display());
    }
    let rows = summary_rows(&table, &args.generations, &args.metric);
    if args.json {
        println!("{}", serde_json::to_string_pretty(&summary_json(&rows))?);
    } else {
        print!("{}", summary_text(&rows));
    }
    Ok(())
}
