//! `thrive run`: a multi-generation language-model run (or one step of it) from a run file.

use super::steps::step_json;
use anyhow::{Context, Result};
use std::path::PathBuf;
use thrive_orchestrator::{RunFile, Step};

#[derive(clap::Args)]
pub struct Args {
    /// The run file (TOML): model, data, workflows, generations, chains, sft and sampling settings, out.
    config: PathBuf,
    /// Run exactly this step of the plan (ids: --list-steps), idempotently: a done step is a
    /// no-op, a step killed before resumes from its checkpoint. Its dependencies must be done.
    #[arg(long, conflicts_with_all = ["list_steps", "jobs"])]
    step: Option<String>,
    /// Print the plan's steps, whether each is done and the steps each depends on.
    #[arg(long)]
    list_steps: bool,
    /// With --list-steps: machine-readable output.
    #[arg(long, requires = "list_steps")]
    json: bool,
    /// Steps at a time on this machine (independent chains, workflows, sources and cells in
    /// parallel); the results and pool are the same as with one.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u64).range(1..))]
    jobs: u64,
    /// CUDA devices for the parallel steps, one each, e.g. `0,1,2,3` (device = cuda or auto).
    #[arg(long, value_delimiter = ',', requires = "jobs")]
    devices: Vec<usize>,
}

impl Args {
    /// Steps at a time (each gets its share of the cores).
    pub fn jobs(&self) -> usize {
        self.jobs as usize
    }
}

/// `thrive run`: the whole run file (what is done is skipped, what was killed resumes), one step
/// of it, or its plan.
pub fn run(a: Args) -> Result<()> {
    let cfg = RunFile::from_file(&a.config)?;
    if a.list_steps {
        return list_steps(&cfg, a.json);
    }
    if let Some(id) = &a.step {
        let ran = thrive_orchestrator::run_step(&cfg, id).with_context(|| format!("{}", a.config.display()))?;
        println!("{id}: {}", if ran { "done" } else { "already done" });
        return Ok(());
    }
    let opts = thrive_orchestrator::RunOptions { jobs: a.jobs as usize, devices: a.devices };
    execute(&cfg, &opts)
}

/// `thrive run RUN.toml --list-steps`: the plan, what is done, and the dependencies.
fn list_steps(cfg: &RunFile, json: bool) -> Result<()> {
    let dir = thrive_orchestrator::RunDir { root: cfg.out.clone() };
    let pool = thrive_pool::Pool::open(dir.pool()).ok();
    let steps: Vec<(Step, bool, Vec<String>)> = thrive_orchestrator::plan(cfg)
        .into_iter()
        .map(|s| {
            let deps = thrive_orchestrator::dependencies(s).iter().map(Step::id).collect();
            (s, thrive_orchestrator::is_done(&dir, pool.as_ref(), s), deps)
        })
        .collect();
    if json {
        let steps: Vec<serde_json::Value> = steps
            .iter()
            .map(|(step, done, deps)| {
                let mut v = step_json(step, *done);
                v["depends_on"] = serde_json::json!(deps);
                v
            })
            .collect();
        println!("{}", serde_json::to_string_pretty(&serde_json::json!({"out": cfg.out, "steps": steps}))?);
        return Ok(());
    }
    let width = steps.iter().map(|s| s.0.id().len()).max().unwrap_or(4);
    println!("{:<width$}  {:<7}  depends on", "step", "state");
    for (step, done, deps) in &steps {
        let deps = if deps.is_empty() { "-".to_string() } else { deps.join(" ") };
        println!("{:<width$}  {:<7}  {deps}", step.id(), if *done { "done" } else { "pending" });
    }
    Ok(())
}

/// Runs a whole run file, then writes its results and manifest, draws its figures and prints its
/// summary and where everything is.
pub(super) fn execute(cfg: &RunFile, opts: &thrive_orchestrator::RunOptions) -> Result<()> {
    let watch = thrive_core::manifest::Stopwatch::start();
    let table = thrive_orchestrator::run_with(cfg, opts)?;
    let results = cfg.out.join("results.parquet");
    let config = serde_json::to_value(cfg)?;
    let seeds = match &cfg.value {
        Some(v) => &v.seeds,
        None => &cfg.generation_loop().chains,
    };
    let seeds = seeds.iter().map(u64::to_string).collect::<Vec<_>>().join(",");
    super::output::write_results(&table, &results, config, &seeds, &watch)?;
    super::report::report_table(&table, &results).with_context(|| format!("reporting {}", results.display()))?;
    println!("pool:    {}  (thrive pool inspect {0})", cfg.out.join("pool").display());
    println!("models:  {}", cfg.out.join("models").display());
    println!("results: {}", results.display());
    println!("figures: {}", cfg.out.join("results-figures").display());
    Ok(())
}
