//! `thrive run`, `thrive status` and `thrive demo`: multi-generation language-model runs.

use anyhow::{Context, Result};
use std::path::{Path, PathBuf};
use thrive_orchestrator::{RunConfig, Step};

#[derive(clap::Args)]
pub struct RunArgs {
    /// The run file (TOML): model, data, workflows, generations, chains, sft and sampling settings, out.
    config: PathBuf,
}

#[derive(clap::Args)]
pub struct StatusArgs {
    /// The run directory (the `out` of its run file).
    dir: PathBuf,
    /// Machine-readable output.
    #[arg(long)]
    json: bool,
}

pub fn run(a: RunArgs) -> Result<()> {
    let cfg = RunConfig::from_file(&a.config)?;
    execute(&cfg)
}

fn execute(cfg: &RunConfig) -> Result<()> {
    let watch = thrive_core::manifest::Stopwatch::start();
    let table = thrive_orchestrator::run(cfg)?;
    let results = cfg.out.join("results.parquet");
    let config = serde_json::to_value(cfg)?;
    let seeds = cfg.run.chains.iter().map(u64::to_string).collect::<Vec<_>>().join(",");
    super::common::write_results(&table, &results, config, &seeds, &watch)?;
    super::report::report_table(&table, &results).with_context(|| format!("reporting {}", results.display()))?;
    println!("pool:    {}  (thrive pool inspect {0})", cfg.out.join("pool").display());
    println!("models:  {}", cfg.out.join("models").display());
    println!("results: {}", results.display());
    println!("figures: {}", cfg.out.join("results-figures").display());
    Ok(())
}

pub fn status(a: StatusArgs) -> Result<()> {
    let s = thrive_orchestrator::status(&a.dir)?;
    let done = s.steps.iter().filter(|(_, d, _)| *d).count();
    if a.json {
        let steps: Vec<serde_json::Value> = s
            .steps
            .iter()
            .map(|(step, done, record)| {
                let (kind, w, c, g) = parts(step);
                serde_json::json!({"step": kind, "workflow": w, "chain": c, "generation": g, "done": done,
                                   "model": record})
            })
            .collect();
        println!(
            "{}",
            serde_json::to_string_pretty(&serde_json::json!({"done": done, "total": s.steps.len(), "steps": steps}))?
        );
        return Ok(());
    }
    println!("{}: {done} of {} steps done", a.dir.display(), s.steps.len());
    println!(
        "{:<8} {:<21} {:>5} {:>4}  {:<8} {:>10} {:>10}",
        "step", "workflow", "chain", "gen", "state", "eval loss", "train rows"
    );
    for (step, done, record) in &s.steps {
        let (kind, w, c, g) = parts(step);
        let state = if *done { "done" } else { "pending" };
        let (loss, rows) = record
            .as_ref()
            .map_or(("-".into(), "-".into()), |r| (format!("{:.4}", r.eval_loss), r.train_examples.to_string()));
        println!("{kind:<8} {w:<21} {c:>5} {g:>4}  {state:<8} {loss:>10} {rows:>10}");
    }
    Ok(())
}

fn parts(step: &Step) -> (&'static str, &'static str, u64, u32) {
    match *step {
        Step::Train { workflow, chain, generation } => ("train", workflow.name(), chain, generation),
        Step::Sample { workflow, chain, generation } => ("sample", workflow.name(), chain, generation),
    }
}

#[derive(clap::Args)]
pub struct DemoArgs {
    /// Where the demo run goes.
    #[arg(long, default_value = "checkpoints/demo")]
    out: PathBuf,
    /// Generations per workflow.
    #[arg(long, default_value_t = 4)]
    generations: u32,
}

/// The demo's run file; `{out}`, `{model}`, `{data}` and `{generations}` are filled in.
const DEMO_TOML: &str = include_str!("demo.toml");

pub fn demo(a: DemoArgs) -> Result<()> {
    let assets = super::demo_assets::unpack(&a.out.join("assets"))?;
    let text = DEMO_TOML
        .replace("{out}", &toml_path(&a.out))
        .replace("{model}", &toml_path(&assets.join("model")))
        .replace("{data}", &toml_path(&assets.join("helpsteer2")))
        .replace("{generations}", &a.generations.to_string());
    let cfg = RunConfig::from_toml(&text, Path::new("<demo>"))?;
    tracing::info!(
        "demo: 3 workflows × {} generations of a tiny Gemma 2 on CPU; output in {}",
        a.generations,
        a.out.display()
    );
    execute(&cfg)
}

fn toml_path(p: &Path) -> String {
    p.display().to_string().replace('\\', "/")
}
