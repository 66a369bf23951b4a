//! `thrive discrete`: the discrete-distribution setting.

use super::common::{expand_knobs, flag_error, parse_list, parse_seeds, KnobArgs};
use super::output::{check_parquet, OutputArgs};
use anyhow::{bail, Context, Result};
use serde_json::json;
use std::path::PathBuf;
use thrive_core::manifest::Stopwatch;
use thrive_core::{run_grid, Workflow};
use thrive_discrete::{grid_specs, Discrete, METRICS};

#[derive(clap::Args)]
pub struct Args {
    /// Numbers of outcomes K (comma-separated).
    #[arg(long, default_value = "10")]
    outcomes: String,
    /// Draws per generation n (comma-separated).
    #[arg(long, default_value = "100")]
    n: String,
    /// Generations (model fits) per run of Accumulate and Accumulate-Subsample.
    #[arg(long, default_value_t = 100)]
    generations: u32,
    /// Replace runs until one outcome is left (fixation) or this many generations.
    #[arg(long, default_value_t = 100_000)]
    max_generations: u32,
    /// Run seeds: `0..100`, `0..=9`, `3` or `1,5,9`.
    #[arg(long, default_value = "0..100")]
    seeds: String,
    /// Workflows: replace, accumulate, accumulate-subsample, or all (comma-separated).
    #[arg(long, default_value = "all")]
    workflow: String,
    /// Results file (Parquet); the manifest is written beside it.
    #[arg(long, default_value = "results/discrete.parquet")]
    out: PathBuf,
    #[command(flatten)]
    output: OutputArgs,
    #[command(flatten)]
    knobs: KnobArgs,
}

pub fn run(args: Args) -> Result<()> {
    let watch = Stopwatch::start();
    args.output.check()?;
    let outcomes = parse_list::<usize>("--outcomes", &args.outcomes)?;
    let ns = parse_list::<usize>("--n", &args.n)?;
    let workflows = Workflow::parse_list(&args.workflow).context("--workflow")?;
    let seeds = parse_seeds(&args.seeds).context("--seeds")?;
    let knobs = args.knobs.grid()?;
    if args.generations == 0 {
        bail!("--generations must be at least 1");
    }
    if args.max_generations == 0 {
        bail!("--max-generations must be at least 1");
    }
    if let Some(&n) = ns.iter().find(|&&n| n == 0) {
        bail!("--n: {n} draws per generation is too few (need at least 1)");
    }
    check_parquet(&args.out)?;
    let settings: Vec<Discrete> =
        outcomes.iter().map(|&k| Discrete::new(k)).collect::<thrive_core::Result<_>>().map_err(flag_error)?;
    let specs =
        grid_specs(&settings, &ns, &workflows, &seeds, args.generations, args.max_generations).map_err(flag_error)?;
    let mut specs = expand_knobs(&knobs, specs, &workflows)?;
    // Real data flowing in make fixation no absorbing state: such Replace runs go --generations.
    for spec in &mut specs {
        if spec.config.workflow == Workflow::Replace && spec.config.knobs.real_inflow(Workflow::Replace, spec.config.n)
        {
            spec.config.generations = args.generations;
        }
    }
    tracing::info!(
        "discrete: {} runs (K {:?} × n {:?} × {} workflows × {} seeds), Replace until fixation or {} generations, \
         others {} generations, {} threads",
        specs.len(),
        outcomes,
        ns,
        workflows.len(),
        seeds.len(),
        args.max_generations,
        args.generations,
        rayon::current_num_threads()
    );
    let metrics = knobs.metric_names(&METRICS);
    let table = run_grid("discrete", metrics, &specs, true).map_err(flag_error)?;
    let unfixed = table
        .runs
        .iter()
        .filter(|r| r.workflow == Some(Workflow::Replace) && r.metrics.last().is_some_and(|f| f.is_nan()))
        .count();
    if unfixed > 0 {
        tracing::warn!("{unfixed} Replace runs reached --max-generations {} before fixation", args.max_generations);
    }
    let config = json!({
        "outcomes": outcomes, "n": ns, "generations": args.generations, "max_generations": args.max_generations,
        "seeds": seeds.len(), "workflows": workflows.iter().map(|w| w.name()).collect::<Vec<_>>(),
        "knobs": knobs.manifest(),
    });
    args.output.finish(&table, &args.out, config, &args.seeds, &watch)
}
