//! `thrive linreg`: the linear-regression setting.

use super::common::{expand_knobs, flag_error, parse_list, parse_seeds, KnobArgs};
use super::output::{check_parquet, OutputArgs};
use anyhow::{bail, Context, Result};
use serde_json::json;
use std::path::PathBuf;
use thrive_core::manifest::Stopwatch;
use thrive_core::{run_grid, Workflow};
use thrive_linreg::{grid_specs, paper_grid, LinReg, METRICS};

#[derive(clap::Args)]
pub struct Args {
    /// Dimensions d (comma-separated).
    #[arg(long, default_value = "10")]
    dim: String,
    /// Rows of the fixed design n (comma-separated).
    #[arg(long, default_value = "100")]
    n: String,
    /// Label-noise variances σ² (comma-separated).
    #[arg(long, default_value = "1", allow_hyphen_values = true)]
    sigma2: String,
    /// Generations (model fits) per run.
    #[arg(long, default_value_t = 100)]
    generations: u32,
    /// Run seeds: `0..100`, `0..=9`, `3` or `1,5,9`.
    #[arg(long, default_value = "0..100")]
    seeds: String,
    /// Workflows: replace, accumulate, accumulate-subsample, or all (comma-separated).
    #[arg(long, default_value = "all")]
    workflow: String,
    /// `paper`: the authors' sweep (protocol §6: d ∈ {1,3,10,32,100} × n ∈ {10,32,100,316,1000} ×
    /// σ² ∈ {0.1,1,10}); overrides --dim, --n and --sigma2.
    #[arg(long)]
    grid: Option<String>,
    /// Results file (Parquet); the manifest is written beside it.
    #[arg(long, default_value = "results/linreg.parquet")]
    out: PathBuf,
    #[command(flatten)]
    output: OutputArgs,
    #[command(flatten)]
    knobs: KnobArgs,
}

pub fn run(args: Args) -> Result<()> {
    let watch = Stopwatch::start();
    args.output.check()?;
    let (dims, ns, sigma2s) = match args.grid.as_deref() {
        None => (
            parse_list::<usize>("--dim", &args.dim)?,
            parse_list::<usize>("--n", &args.n)?,
            parse_list::<f64>("--sigma2", &args.sigma2)?,
        ),
        Some("paper") => paper_grid(),
        Some(other) => bail!("--grid: unknown grid `{other}` (expected `paper`)"),
    };
    let workflows = Workflow::parse_list(&args.workflow).context("--workflow")?;
    let seeds = parse_seeds(&args.seeds).context("--seeds")?;
    let knobs = args.knobs.grid()?;
    if args.generations == 0 {
        bail!("--generations must be at least 1");
    }
    if let Some(&n) = ns.iter().find(|&&n| n == 0) {
        bail!("--n: {n} rows is too few (a design needs at least 1)");
    }
    check_parquet(&args.out)?;
    let mut settings = Vec::new();
    for &d in &dims {
        for &s in &sigma2s {
            settings.push(LinReg::new(d, s).map_err(flag_error)?);
        }
    }
    for &d in &dims {
        let small: Vec<usize> = ns.iter().copied().filter(|&n| n <= d + 1).collect();
        if !small.is_empty() {
            tracing::info!("d = {d}, n = {small:?}: n ≤ d + 1, so the report draws no theory line for these runs");
        }
    }
    let specs = grid_specs(&settings, &ns, &workflows, &seeds, args.generations).map_err(flag_error)?;
    let specs = expand_knobs(&knobs, specs, &workflows)?;
    tracing::info!(
        "linreg: {} runs (d {:?} × n {:?} × σ² {:?} × {} workflows × {} seeds), {} generations, {} threads",
        specs.len(),
        dims,
        ns,
        sigma2s,
        workflows.len(),
        seeds.len(),
        args.generations,
        rayon::current_num_threads()
    );
    let metrics = knobs.metric_names(&METRICS);
    let table = run_grid("linreg", metrics, &specs, true).map_err(flag_error)?;
    let config = json!({
        "dim": dims, "n": ns, "sigma2": sigma2s, "generations": args.generations, "seeds": seeds.len(),
        "workflows": workflows.iter().map(|w| w.name()).collect::<Vec<_>>(), "grid": args.grid,
        "test_points": thrive_linreg::TEST_POINTS, "knobs": knobs.manifest(),
    });
    args.output.finish(&table, &args.out, config, &args.seeds, &watch)
}
