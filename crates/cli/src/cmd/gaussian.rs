//! `thrive gaussian`: the multivariate-Gaussian setting.

use super::common::{flag_error, parse_list, parse_seeds, write_results};
use anyhow::{bail, Context, Result};
use serde_json::json;
use std::path::PathBuf;
use thrive_core::manifest::Stopwatch;
use thrive_core::{run_grid, Workflow};
use thrive_gaussian::{grid_specs, paper_grid, Gaussian, Root, METRICS};

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
    /// `paper`: the full sweep of protocol §2.5 (d ∈ {1,3,10,31,100} × n ∈ {10,32,100,316,1000}); overrides --dim and --n.
    #[arg(long)]
    grid: Option<String>,
    /// Sample every synthetic point, even where sampling a batch's moments is exact (slower).
    #[arg(long)]
    sample_points: bool,
    /// Sampling square root of the fitted covariance: `eigen` (works for singular fits) or
    /// `cholesky` (where positive definite, else eigen; same distribution, faster at large d).
    #[arg(long, default_value = "eigen")]
    root: String,
    /// Results file (Parquet); the manifest is written beside it.
    #[arg(long, default_value = "results/gaussian.parquet")]
    out: PathBuf,
    /// Draw the figures and print the summary when done (as `thrive report`).
    #[arg(long)]
    report: bool,
}

pub fn run(args: Args) -> Result<()> {
    let watch = Stopwatch::start();
    let (dims, ns) = match args.grid.as_deref() {
        None => (parse_list::<usize>("--dim", &args.dim)?, parse_list::<usize>("--n", &args.n)?),
        Some("paper") => paper_grid(),
        Some(other) => bail!("--grid: unknown grid `{other}` (expected `paper`)"),
    };
    let workflows = Workflow::parse_list(&args.workflow).context("--workflow")?;
    let seeds = parse_seeds(&args.seeds).context("--seeds")?;
    if args.generations == 0 {
        bail!("--generations must be at least 1");
    }
    if let Some(&n) = ns.iter().find(|&&n| n < 2) {
        bail!("--n: {n} points per generation is too few (a covariance fit needs at least 2)");
    }
    if let Some(&n) = ns.iter().find(|&&n| n < args.real) {
        bail!("--real {}: cannot keep more real points than n = {n}", args.real);
    }
    if args.out.extension().and_then(|e| e.to_str()) != Some("parquet") {
        bail!("--out {}: the results file must end in .parquet", args.out.display());
    }
    let root = match args.root.as_str() {
        "eigen" => Root::Eigen,
        "cholesky" => Root::Cholesky,
        other => bail!("--root: unknown square root `{other}` (expected eigen or cholesky)"),
    };
    let settings: Vec<Gaussian> = dims
        .iter()
        .map(|&d| Gaussian::new(d, args.sigma2).map(|g| Gaussian { sample_points: args.sample_points, root, ..g }))
        .collect::<thrive_core::Result<_>>()
        .map_err(flag_error)?;
    let specs = grid_specs(&settings, &ns, &workflows, &seeds, args.generations, args.real).map_err(flag_error)?;
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
    let metrics = METRICS.iter().map(|s| s.to_string()).collect();
    let table = run_grid("gaussian", metrics, &specs, true)?;
    let config = json!({
        "dim": dims, "n": ns, "generations": args.generations, "seeds": seeds.len(),
        "workflows": workflows.iter().map(|w| w.name()).collect::<Vec<_>>(),
        "sigma2": args.sigma2, "real": args.real, "grid": args.grid, "sample_points": args.sample_points, "root": args.root,
    });
    write_results(&table, &args.out, config, &args.seeds, &watch)?;
    if args.report {
        super::report::report_table(&table, &args.out)?;
    }
    Ok(())
}
