//! `thrive run`, `thrive status` and `thrive demo`: multi-generation language-model runs.

use anyhow::{Context, Result};
use std::path::{Path, PathBuf};
use thrive_orchestrator::{RunConfig, SourceId, Step};

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
    let seeds = match &cfg.value {
        Some(v) => &v.seeds,
        None => &cfg.generation_loop().chains,
    };
    let seeds = seeds.iter().map(u64::to_string).collect::<Vec<_>>().join(",");
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
                let mut v = step_json(step);
                v["done"] = serde_json::json!(done);
                v["model"] = serde_json::json!(record);
                v
            })
            .collect();
        println!(
            "{}",
            serde_json::to_string_pretty(&serde_json::json!({"done": done, "total": s.steps.len(), "steps": steps}))?
        );
        return Ok(());
    }
    println!("{}: {done} of {} steps done", a.dir.display(), s.steps.len());
    let value = s.config.value.is_some();
    let header =
        if value { ["step", "source", "seed", "real", "synthetic"] } else { ["step", "workflow", "chain", "gen", ""] };
    println!(
        "{:<13} {:<21} {:>5} {:>6} {:>9}  {:<8} {:>10} {:>10}",
        header[0], header[1], header[2], header[3], header[4], "state", "eval loss", "train rows"
    );
    for (step, done, record) in &s.steps {
        let cols = columns(step);
        let state = if *done { "done" } else { "pending" };
        let (loss, rows) = record
            .as_ref()
            .map_or(("-".into(), "-".into()), |r| (format!("{:.4}", r.eval_loss), r.train_examples.to_string()));
        println!(
            "{:<13} {:<21} {:>5} {:>6} {:>9}  {state:<8} {loss:>10} {rows:>10}",
            cols[0], cols[1], cols[2], cols[3], cols[4]
        );
    }
    Ok(())
}

/// The table columns of a step: kind, then (workflow, chain, generation) or (source, seed, real,
/// synthetic).
fn columns(step: &Step) -> [String; 5] {
    let opt = |s: Option<SourceId>| s.map_or("-".to_string(), |s| s.to_string());
    match *step {
        Step::Train { workflow, chain, generation } => {
            ["train".into(), workflow.name().into(), chain.to_string(), generation.to_string(), String::new()]
        }
        Step::Sample { workflow, chain, generation } => {
            ["sample".into(), workflow.name().into(), chain.to_string(), generation.to_string(), String::new()]
        }
        Step::TrainSource { source } => {
            let real = source.quality.real.map_or("all".into(), |r| r.to_string());
            ["train-source".into(), source.to_string(), "-".into(), real, "0".into()]
        }
        Step::SampleSource { source } => {
            ["sample-source".into(), source.to_string(), "-".into(), "-".into(), "-".into()]
        }
        Step::Cell { num_real, num_synthetic, source, seed } => {
            ["cell".into(), opt(source), seed.to_string(), num_real.to_string(), num_synthetic.to_string()]
        }
    }
}

/// A source as JSON: its seed and the quality keys the run file sets (null: the default).
fn source_json(source: SourceId) -> serde_json::Value {
    let q = source.quality;
    serde_json::json!({"seed": source.seed, "real": q.real, "epochs": q.epochs, "temperature": q.temperature})
}

fn step_json(step: &Step) -> serde_json::Value {
    use serde_json::json;
    match *step {
        Step::Train { workflow, chain, generation } => {
            json!({"step": "train", "workflow": workflow.name(), "chain": chain, "generation": generation})
        }
        Step::Sample { workflow, chain, generation } => {
            json!({"step": "sample", "workflow": workflow.name(), "chain": chain, "generation": generation})
        }
        Step::TrainSource { source } => json!({"step": "train-source", "source": source_json(source)}),
        Step::SampleSource { source } => json!({"step": "sample-source", "source": source_json(source)}),
        Step::Cell { num_real, num_synthetic, source, seed } => json!({
            "step": "cell", "num_real": num_real, "num_synthetic": num_synthetic,
            "source": source.map(source_json), "seed": seed
        }),
    }
}

#[derive(clap::Args)]
pub struct DemoArgs {
    /// Where the demo run goes.
    #[arg(long)]
    out: Option<PathBuf>,
    /// Generations per workflow.
    #[arg(long, default_value_t = 4)]
    generations: u32,
    /// Run the value-of-synthetic grid (num_real × num_synthetic → validation loss) instead of
    /// the generations [default out: checkpoints/demo-value].
    #[arg(long)]
    value: bool,
    /// Overrides a key of the demo's run file (crates/cli/src/cmd/demo.toml or demo-value.toml),
    /// VALUE in TOML: `--set sampling.count=100`, `--set value.num_real=[0,50]`. Repeatable.
    #[arg(long = "set", value_name = "KEY=VALUE")]
    set: Vec<String>,
}

/// The demo's run file; `{out}`, `{model}`, `{data}` and `{generations}` are filled in.
const DEMO_TOML: &str = include_str!("demo.toml");

/// The value-of-synthetic demo's run file (the same placeholders but `{generations}`).
const DEMO_VALUE_TOML: &str = include_str!("demo-value.toml");

pub fn demo(a: DemoArgs) -> Result<()> {
    let out =
        a.out.unwrap_or_else(|| PathBuf::from(if a.value { "checkpoints/demo-value" } else { "checkpoints/demo" }));
    let assets = super::demo_assets::unpack(&out.join("assets"))?;
    let cfg = demo_config(a.value, &out, &assets, a.generations, &a.set)?;
    if a.value {
        tracing::info!("demo: the value-of-synthetic grid of a tiny Gemma 2 on CPU; output in {}", out.display());
    } else {
        tracing::info!(
            "demo: 3 workflows × {} generations of a tiny Gemma 2 on CPU; output in {}",
            a.generations,
            out.display()
        );
    }
    execute(&cfg)
}

/// The demo's run file with its placeholders filled in and the `--set` overrides applied.
fn demo_config(value: bool, out: &Path, assets: &Path, generations: u32, set: &[String]) -> Result<RunConfig> {
    let text = if value { DEMO_VALUE_TOML } else { DEMO_TOML }
        .replace("{out}", &toml_path(out))
        .replace("{model}", &toml_path(&assets.join("model")))
        .replace("{data}", &toml_path(&assets.join("helpsteer2")))
        .replace("{generations}", &generations.to_string());
    let text = apply_overrides(&text, set)?;
    Ok(RunConfig::from_toml(&text, Path::new(if value { "<demo --value>" } else { "<demo>" }))?)
}

/// Sets `section.key = VALUE` for each `--set section.key=VALUE` (VALUE in TOML) in a run file.
fn apply_overrides(text: &str, set: &[String]) -> Result<String> {
    if set.is_empty() {
        return Ok(text.to_string());
    }
    let mut doc: toml::Table = toml::from_str(text).context("the demo's run file")?;
    for s in set {
        let (key, value) = s.split_once('=').with_context(|| format!("--set {s}: expected KEY=VALUE"))?;
        let value = toml::from_str::<toml::Table>(&format!("v = {value}"))
            .ok()
            .and_then(|mut t| t.remove("v"))
            .with_context(|| format!("--set {s}: `{value}` is not a TOML value (quote strings)"))?;
        let parts: Vec<&str> = key.trim().split('.').collect();
        let (last, sections) = parts.split_last().expect("split yields one part");
        let mut table = &mut doc;
        for p in sections {
            table = table
                .entry(p.to_string())
                .or_insert_with(|| toml::Value::Table(toml::Table::new()))
                .as_table_mut()
                .with_context(|| format!("--set {s}: `{p}` is not a section of the run file"))?;
        }
        table.insert(last.to_string(), value);
    }
    Ok(toml::to_string(&doc)?)
}

fn toml_path(p: &Path) -> String {
    p.display().to_string().replace('\\', "/")
}
