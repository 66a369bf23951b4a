//! `thrive gaussian`: the multivariate-Gaussian setting.

use super::common::{expand_knobs, flag_error, parse_list, parse_seeds, KnobArgs};
use super::output::{check_parquet, OutputArgs};
use anyhow::{bail, Context, Result};
use serde_json::json;
use std::path::PathBuf;
use thrive_core::manifest::Stopwatch;
use thrive_core::{run_grid, Workflow};
use thrive_gaussian::{grid_specs, paper_grid, Gaussian, Root, ValueGrid, METRICS};

#[derive(clap::Args)]
pub struct Args {
    /// Dimensions d (comma-separated).
    #[arg(long, default_value = "10")]
    dim: String,
    /// Points per generation n (comma-separated).
    #[arg(long, default_value = "100")]
    n: String,
    /// Generations (model fits) per run.
    #[arg(long, default_value_t = 100)]
    generations: u32,
    /// Run seeds: `0..100`, `0..=9`, `3` or `1,5,9`.
    #[arg(long, default_value = "0..100")]
    seeds: String,
    /// Workflows: replace, accumulate, accumulate-subsample, or all (comma-separated).
    #[arg(long, default_value = "all")]
    workflow: String,
    /// Variance σ² of the true distribution N(0, σ²I).
    #[arg(long, default_value_t = 1.0)]
    sigma2: f64,
    /// Keep this many real points in every generation's training set besides the synthetic ones.
    #[arg(long, default_value_t = 0)]
    real: usize,
    /// `paper`: the full sweep of docs/protocol.md §2.5 (d ∈ {1,3,10,31,100} × n ∈
    /// {10,32,100,316,1000}); overrides --dim and --n.
    #[arg(long)]
    grid: Option<String>,
    /// Sample every synthetic point, even where sampling a batch's moments is exact (slower).
    #[arg(long)]
    sample_points: bool,
    /// Sampling square root of the fitted covariance: `cholesky` (where positive definite, else
    /// eigen) or `eigen` (the eigendecomposition always). Same distribution, different draws;
    /// cholesky is several times faster at large d.
    #[arg(long, default_value = "cholesky")]
    root: String,
    /// The value-of-synthetic-data grid instead of generation chains: each cell fits real points
    /// plus points sampled from a Gaussian fitted on --source-real real points (setting
    /// `gaussian-value`, metrics kl, mean_squared_error, covariance_error).
    #[arg(long, conflicts_with_all = ["n", "generations", "workflow", "real", "grid", "sample_points", "keep_real", "fresh_real", "temperature", "truncate", "top_p", "verifier_bias", "select_threshold", "max_draws", "real_weight"])]
    value: bool,
    /// With --value: real points per cell (comma-separated) [default: 16,32,64,128,256,512,1024].
    #[arg(long, requires = "value")]
    num_real: Option<String>,
    /// With --value: synthetic points per cell (comma-separated; 0 is the cell without) [default: 0,16,64,256,1024,4096].
    #[arg(long, requires = "value")]
    num_synthetic: Option<String>,
    /// With --value: real points the source Gaussian is fitted on (comma-separated: an axis) [default: 64,512].
    #[arg(long, requires = "value")]
    source_real: Option<String>,
    /// Results file (Parquet); the manifest is written beside it [default: results/gaussian.parquet,
    /// or results/gaussian-value.parquet with --value].
    #[arg(long)]
    out: Option<PathBuf>,
    #[command(flatten)]
    output: OutputArgs,
    #[command(flatten)]
    knobs: KnobArgs,
}

pub fn run(args: Args) -> Result<()> {
    let watch = Stopwatch::start();
    args.output.check()?;
    if args.value {
        return run_value(args, watch);
    }
    let out = args.out.clone().unwrap_or_else(|| PathBuf::from("results/gaussian.parquet"));
    let (dims, ns) = match args.grid.as_deref() {
        None => (parse_list::<usize>("--dim", &args.dim)?, parse_list::<usize>("--n", &args.n)?),
        Some("paper") => paper_grid(),
        Some(other) => bail!("--grid: unknown grid `{other}` (expected `paper`)"),
    };
    let workflows = Workflow::parse_list(&args.workflow).context("--workflow")?;
    let seeds = parse_seeds(&args.seeds).context("--seeds")?;
    let knobs = args.knobs.grid()?;
    if args.generations == 0 {
        bail!("--generations must be at least 1");
    }
    if let Some(&n) = ns.iter().find(|&&n| n < 2) {
        bail!("--n: {n} points per generation is too few (a covariance fit needs at least 2)");
    }
    if let Some(&n) = ns.iter().find(|&&n| n < args.real) {
        bail!("--real {}: cannot keep more real points than n = {n}", args.real);
    }
    check_parquet(&out)?;
    let root = parse_root(&args.root)?;
    let settings: Vec<Gaussian> = dims
        .iter()
        .map(|&d| Gaussian::new(d, args.sigma2).map(|g| Gaussian { sample_points: args.sample_points, root, ..g }))
        .collect::<thrive_core::Result<_>>()
        .map_err(flag_error)?;
    let specs = grid_specs(&settings, &ns, &workflows, &seeds, args.generations, args.real).map_err(flag_error)?;
    let specs = expand_knobs(&knobs, specs, &workflows)?;
    tracing::info!(
        "gaussian: {} runs (d {:?} × n {:?} × {} workflows × {} seeds), {} generations, {} threads",
        specs.len(),
        dims,
        ns,
        workflows.len(),
        seeds.len(),
        args.generations,
        rayon::current_num_threads()
    );
    let metrics = knobs.metric_names(&METRICS);
    let table = run_grid("gaussian", metrics, &specs, true).map_err(flag_error)?;
    let config = json!({
        "dim": dims, "n": ns, "generations": args.generations, "seeds": seeds.len(),
        "workflows": workflows.iter().map(|w| w.name()).collect::<Vec<_>>(),
        "sigma2": args.sigma2, "real": args.real, "grid": args.grid, "sample_points": args.sample_points, "root": args.root,
        "knobs": knobs.manifest(),
    });
    args.output.finish(&table, &out, config, &args.seeds, &watch)
}

/// `--root`: the sampling square root of the fitted covariance.
fn parse_root(text: &str) -> Result<Root> {
    Ok(match text {
        "eigen" => Root::Eigen,
        "cholesky" => Root::Cholesky,
        other => bail!("--root: unknown square root `{other}` (expected eigen or cholesky)"),
    })
}

/// `--value`: the value-of-synthetic grid; every size is checked before anything runs.
fn run_value(args: Args, watch: Stopwatch) -> Result<()> {
    let list = |flag: &str, given: &Option<String>, default: &str| {
        parse_list::<usize>(flag, given.as_deref().unwrap_or(default))
    };
    let root = parse_root(&args.root)?;
    let grid = ValueGrid {
        dims: parse_list::<usize>("--dim", &args.dim)?,
        sigma2: args.sigma2,
        num_real: list("--num-real", &args.num_real, "16,32,64,128,256,512,1024")?,
        num_synthetic: list("--num-synthetic", &args.num_synthetic, "0,16,64,256,1024,4096")?,
        source_real: list("--source-real", &args.source_real, "64,512")?,
        seeds: parse_seeds(&args.seeds).context("--seeds")?,
        root,
    };
    let out = args.out.clone().unwrap_or_else(|| PathBuf::from("results/gaussian-value.parquet"));
    check_parquet(&out)?;
    grid.validate().map_err(flag_error)?;
    tracing::info!(
        "gaussian-value: {} cells (d {:?} × num_real {:?} × num_synthetic {:?} × source_real {:?} × {} seeds), {} threads",
        grid.cells(),
        grid.dims,
        grid.num_real,
        grid.num_synthetic,
        grid.source_real,
        grid.seeds.len(),
        rayon::current_num_threads()
    );
    let table = grid.run().map_err(flag_error)?;
    let config = json!({
        "value": true, "dim": grid.dims, "sigma2": grid.sigma2, "num_real": grid.num_real,
        "num_synthetic": grid.num_synthetic, "source_real": grid.source_real, "seeds": grid.seeds.len(), "root": args.root,
    });
    args.output.finish(&table, &out, config, &args.seeds, &watch)
}
