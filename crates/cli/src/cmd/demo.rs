//! `thrive demo`: every workflow for a few generations of a tiny Gemma 2 (or the
//! value-of-synthetic grid), on CPU, offline, from a run file embedded in the binary.

use anyhow::{Context, Result};
use std::path::{Path, PathBuf};
use thrive_orchestrator::RunFile;

#[derive(clap::Args)]
pub struct Args {
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
    /// Steps at a time, each with its share of the cores [default: the cores, at most 3 (the
    /// workflows), or at most 8 with --value]. The results do not depend on it.
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..))]
    jobs: Option<u64>,
}

impl Args {
    /// Steps at a time: `--jobs`, or one per core up to the three independent workflow chains
    /// (up to 8 for the value grid: its 2 sources, then its 10 cells). On the tiny demo model
    /// one-thread steps side by side use the cores better than one step on all of them; more
    /// jobs than steps to run would leave their share of the cores idle.
    pub fn jobs(&self) -> usize {
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        self.jobs.map_or(cores.min(if self.value { 8 } else { 3 }), |j| j as usize)
    }
}

/// The demo's run file; `{out}`, `{model}`, `{data}` and `{generations}` are filled in.
const DEMO_TOML: &str = include_str!("demo.toml");

/// The value-of-synthetic demo's run file (the same placeholders but `{generations}`).
const DEMO_VALUE_TOML: &str = include_str!("demo-value.toml");

pub fn run(a: Args) -> Result<()> {
    let jobs = a.jobs();
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
    super::run::execute(&cfg, &thrive_orchestrator::RunOptions { jobs, devices: Vec::new() })
}

/// The demo's run file with its placeholders filled in and the `--set` overrides applied.
fn demo_config(value: bool, out: &Path, assets: &Path, generations: u32, set: &[String]) -> Result<RunFile> {
    let text = if value { DEMO_VALUE_TOML } else { DEMO_TOML }
        .replace("{out}", &toml_path(out))
        .replace("{model}", &toml_path(&assets.join("model")))
        .replace("{data}", &toml_path(&assets.join("helpsteer2")))
        .replace("{generations}", &generations.to_string());
    let text = apply_overrides(&text, set)?;
    Ok(RunFile::from_toml(&text, Path::new(if value { "<demo --value>" } else { "<demo>" }))?)
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
