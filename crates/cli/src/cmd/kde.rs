//! `thrive kde`: the kernel-density setting.

use super::common::{expand_knobs, flag_error, parse_list, parse_seeds, KnobArgs};
use super::output::{check_parquet, OutputArgs};
use anyhow::{bail, Context, Result};
use serde_json::json;
use std::path::PathBuf;
use std::sync::Arc;
use thrive_core::manifest::Stopwatch;
use thrive_core::{run_grid, ChainConfig, Params, RunSpec, Workflow};
use thrive_kde::{data::read_points, Bandwidth, BlobsCentres, Dataset, Kde, RealData, METRICS};

#[derive(clap::Args)]
pub struct Args {
    /// Datasets: blobs, circles, moons, swiss_roll, or all (comma-separated).
    #[arg(long, default_value = "moons")]
    dataset: String,
    /// Bandwidths (comma-separated): numbers, `scott`, `silverman`, or schedules `H*t^-ALPHA`.
    #[arg(long, default_value = "0.1", allow_hyphen_values = true)]
    bandwidth: String,
    /// Points per generation n (comma-separated).
    #[arg(long, default_value = "100")]
    n: String,
    /// Generations (model fits) per run [default: 100; 1000 for --grid bandwidth].
    #[arg(long)]
    generations: Option<u32>,
    /// Run seeds: `0..100`, `0..=9`, `3` or `1,5,9` [default: 0..100].
    #[arg(long)]
    seeds: Option<String>,
    /// Workflows: replace, accumulate, accumulate-subsample, or all (comma-separated).
    #[arg(long, default_value = "all")]
    workflow: String,
    /// A preset sweep: `main` (docs/protocol.md §3.3: 4 datasets × h ∈ {0.1, 0.5, 1} × 5 n), `bandwidth`
    /// (h from 0.01 to 100, Scott and Silverman, 1,000 generations) or `schedule` (moons,
    /// h_t = 0.5 t^-α for α ∈ {0, 0.1, 0.25, 0.5, 1}, 300 generations). Overrides --dataset, --bandwidth and --n.
    #[arg(long)]
    grid: Option<String>,
    /// Blob centres: `per-call` (the authors' code: training and test data come from different
    /// centres) or `shared` (corrected: one set of centres per run).
    #[arg(long, default_value = "per-call")]
    blobs: String,
    /// Your own points instead of a generator: a .csv or .parquet file.
    #[arg(long)]
    data: Option<PathBuf>,
    /// Columns of --data to use (comma-separated; default: all).
    #[arg(long, value_delimiter = ',')]
    columns: Vec<String>,
    /// Fraction of --data held out as the test set.
    #[arg(long, default_value_t = 0.2)]
    test_fraction: f64,
    /// Results file (Parquet); the manifest is written beside it.
    #[arg(long, default_value = "results/kde.parquet")]
    out: PathBuf,
    #[command(flatten)]
    output: OutputArgs,
    #[command(flatten)]
    knobs: KnobArgs,
}

const MAIN_BANDWIDTHS: &str = "0.1,0.5,1.0";
const PAPER_NS: &str = "10,32,100,316,1000";
const BANDWIDTH_SWEEP: &str = "0.01,0.0316,0.1,0.316,1.0,3.16,10.0,31.6,100.0,scott,silverman";
const SCHEDULES: &str = "0.5,0.5*t^-0.1,0.5*t^-0.25,0.5*t^-0.5,0.5*t^-1";

pub fn run(args: Args) -> Result<()> {
    let watch = Stopwatch::start();
    args.output.check()?;
    let (datasets, bandwidths, ns, default_generations) = match args.grid.as_deref() {
        None => (args.dataset.as_str(), args.bandwidth.as_str(), args.n.as_str(), 100),
        Some("main") => ("all", MAIN_BANDWIDTHS, PAPER_NS, 100),
        Some("bandwidth") => ("all", BANDWIDTH_SWEEP, PAPER_NS, 1000),
        Some("schedule") => ("moons", SCHEDULES, "100", 300),
        Some(other) => bail!("--grid: unknown grid `{other}` (expected main, bandwidth or schedule)"),
    };
    let generations = args.generations.unwrap_or(default_generations);
    if generations == 0 {
        bail!("--generations must be at least 1");
    }
    let seeds_text = args.seeds.clone().unwrap_or_else(|| "0..100".into());
    let seeds = parse_seeds(&seeds_text).context("--seeds")?;
    let workflows = Workflow::parse_list(&args.workflow).context("--workflow")?;
    let knobs = args.knobs.grid()?;
    let bandwidths = Bandwidth::parse_list(bandwidths).map_err(flag_error)?;
    if bandwidths.is_empty() {
        bail!("--bandwidth: no bandwidth given");
    }
    let centres = match args.blobs.as_str() {
        "per-call" => BlobsCentres::PerCall,
        "shared" => BlobsCentres::Shared,
        other => bail!("--blobs: unknown mode `{other}` (expected per-call or shared)"),
    };
    if !(args.test_fraction > 0.0 && args.test_fraction < 1.0) {
        bail!("--test-fraction {}: must be between 0 and 1", args.test_fraction);
    }
    check_parquet(&args.out)?;

    // (name, real data, n values)
    let mut sources: Vec<(String, RealData, Vec<usize>)> = Vec::new();
    if let Some(path) = &args.data {
        let points = read_points(path, &args.columns).with_context(|| format!("--data {}", path.display()))?;
        let name = path.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_else(|| "data".into());
        let data = RealData::File { name: name.clone(), points: Arc::new(points), test_fraction: args.test_fraction };
        let probe = Kde::new(data.clone(), bandwidths[0]).map_err(flag_error)?;
        let n = probe.training_size().unwrap_or(0);
        if n < 2 {
            bail!(
                "--data {}: {n} training points after holding out the test set; at least 2 are needed",
                path.display()
            );
        }
        sources.push((name, data, vec![n]));
    } else {
        let ns = parse_list::<usize>("--n", ns)?;
        if let Some(n) = ns.iter().find(|&&n| n == 0) {
            bail!("--n: {n} points per generation is too few (at least 1)");
        }
        for dataset in Dataset::parse_list(datasets).map_err(flag_error)? {
            sources.push((dataset.name().into(), RealData::Generator { dataset, centres }, ns.clone()));
        }
    }

    let mut settings: Vec<(String, Vec<usize>, Kde)> = Vec::new();
    for (name, data, ns) in &sources {
        for &b in &bandwidths {
            settings.push((name.clone(), ns.clone(), Kde::new(data.clone(), b).map_err(flag_error)?));
        }
    }
    let mut specs = Vec::new();
    for (name, ns, setting) in &settings {
        for &n in ns {
            for &workflow in &workflows {
                let config = ChainConfig::paper(workflow, n, generations);
                config.validate().map_err(flag_error)?;
                let per_fit = (n * 500 * setting.dim()) as f64;
                // Rules and schedules under Accumulate refit on the whole, growing pool.
                let cost = if setting.bandwidth.is_fixed() || workflow != Workflow::Accumulate {
                    generations as f64 * per_fit
                } else {
                    (generations as f64).powi(2) / 2.0 * per_fit
                };
                for &seed in &seeds {
                    let params = Params::new()
                        .with("dataset", name.as_str())
                        .with("dim", setting.dim())
                        .with("bandwidth", setting.bandwidth.to_string())
                        .with("h1", setting.bandwidth.h1())
                        .with("n", n)
                        // Only blobs has a centres mode; "-" keeps the column tidy for the others.
                        .with("blobs", if name == "blobs" { args.blobs.as_str() } else { "-" });
                    specs.push(RunSpec { setting, params, config, seed, cost });
                }
            }
        }
    }
    let specs = expand_knobs(&knobs, specs, &workflows)?;
    tracing::info!(
        "kde: {} runs ({} data sources × {} bandwidths × {} workflows × {} seeds), {generations} generations, {} threads",
        specs.len(),
        sources.len(),
        bandwidths.len(),
        workflows.len(),
        seeds.len(),
        rayon::current_num_threads()
    );
    let metrics = knobs.metric_names(&METRICS);
    let table = run_grid("kde", metrics, &specs, true).map_err(flag_error)?;
    let config = json!({
        "datasets": sources.iter().map(|s| s.0.clone()).collect::<Vec<_>>(),
        "bandwidths": bandwidths.iter().map(|b| b.to_string()).collect::<Vec<_>>(),
        "generations": generations, "seeds": seeds.len(),
        "workflows": workflows.iter().map(|w| w.name()).collect::<Vec<_>>(),
        "grid": args.grid, "blobs": args.blobs, "data": args.data, "columns": args.columns,
        "test_fraction": args.test_fraction, "knobs": knobs.manifest(),
    });
    args.output.finish(&table, &args.out, config, &seeds_text, &watch)
}
