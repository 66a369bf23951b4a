//! `thrive run`, `thrive status` and `thrive demo`: multi-generation language-model runs.

use super::common::Format;
use anyhow::{Context, Result};
use std::path::{Path, PathBuf};
use thrive_orchestrator::{RunConfig, SourceId, Step};
use thrive_report::table::{number, Table};

#[derive(clap::Args)]
pub struct RunArgs {
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

impl RunArgs {
    /// Steps at a time (each gets its share of the cores).
    pub fn jobs(&self) -> usize {
        self.jobs as usize
    }
}

#[derive(clap::Args)]
pub struct SubmitArgs {
    /// The run file (TOML); its `[slurm]` section sets the jobs' resources.
    config: PathBuf,
    /// Write the job scripts under RUN/slurm/scripts and print the jobs, but submit nothing.
    #[arg(long)]
    dry_run: bool,
    /// Check every job script with `sbatch --test-only` instead of submitting it.
    #[arg(long, conflicts_with = "dry_run")]
    test_only: bool,
}

/// `thrive submit`: the steps that are neither done nor running, as Slurm jobs.
pub fn submit(a: SubmitArgs) -> Result<()> {
    use thrive_orchestrator::slurm;
    let cfg = RunConfig::from_file(&a.config)?;
    let thrive = std::env::current_exe().context("the path of this thrive binary")?;
    let opts = slurm::SubmitOptions { dry_run: a.dry_run, test_only: a.test_only };
    let out = slurm::submit(&cfg, &a.config, &thrive, &opts).with_context(|| format!("{}", a.config.display()))?;
    for id in &out.cancelled {
        println!("cancelled pending job {id} (submitted again)");
    }
    for (step, job) in &out.running {
        println!("{step}: running in job {job}");
    }
    for job in &out.jobs {
        let what = match job.steps.len() {
            1 => job.steps[0].id(),
            n => format!("{n} cells (array)"),
        };
        let after = if job.after.is_empty() { String::new() } else { format!(" after {}", job.after.join(",")) };
        match &job.id {
            Some(id) => println!("job {id}: {what}{after}"),
            None => println!("{}: {what}{after}", job.script.display()),
        }
    }
    for t in &out.tests {
        println!("{t}");
    }
    let verb = if a.dry_run || a.test_only { "to submit" } else { "submitted" };
    println!(
        "{} steps done, {} running, {} jobs {verb}; logs in {}",
        out.done,
        out.running.len(),
        out.jobs.len(),
        cfg.out.join("slurm/logs").display()
    );
    Ok(())
}

#[derive(clap::Args)]
pub struct StatusArgs {
    /// The run directory (the `out` of its run file).
    dir: PathBuf,
    /// How the table is printed: plain, markdown, csv or json.
    #[arg(long, value_enum, default_value_t = Format::Plain)]
    format: Format,
    /// Same as `--format json`.
    #[arg(long, conflicts_with = "format")]
    json: bool,
}

pub fn run(a: RunArgs) -> Result<()> {
    let cfg = RunConfig::from_file(&a.config)?;
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
fn list_steps(cfg: &RunConfig, json: bool) -> Result<()> {
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
                let mut v = step_json(step);
                v["id"] = serde_json::json!(step.id());
                v["done"] = serde_json::json!(done);
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

fn execute(cfg: &RunConfig, opts: &thrive_orchestrator::RunOptions) -> Result<()> {
    let watch = thrive_core::manifest::Stopwatch::start();
    let table = thrive_orchestrator::run_with(cfg, opts)?;
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
    let dir = thrive_orchestrator::RunDir { root: a.dir.clone() };
    let jobs = thrive_orchestrator::slurm::step_states(&dir)?;
    let format = Format::resolve(a.format, a.json);
    if format == Format::Json {
        let steps: Vec<serde_json::Value> = s
            .steps
            .iter()
            .map(|(step, done, record)| {
                let mut v = step_json(step);
                v["id"] = serde_json::json!(step.id());
                v["done"] = serde_json::json!(done);
                v["model"] = serde_json::json!(record);
                if let Some((job, state)) = jobs.get(&step.id()) {
                    v["slurm"] = serde_json::json!({"job": job, "state": state});
                }
                v
            })
            .collect();
        let chains: Vec<serde_json::Value> = s
            .chains()
            .iter()
            .map(|c| {
                serde_json::json!({
                    "workflow": c.workflow.name(), "chain": c.chain, "generation": c.reached,
                    "generations": c.generations, "eval_loss": Some(c.eval_loss).filter(|v| v.is_finite()),
                    "eta_seconds": c.eta_seconds,
                })
            })
            .collect();
        let all = serde_json::json!({
            "done": done, "total": s.steps.len(), "eta_seconds": s.eta_seconds(), "jobs": s.jobs,
            "chains": chains, "steps": steps,
        });
        println!("{}", serde_json::to_string_pretty(&all)?);
        return Ok(());
    }
    let eta = s.eta_seconds().map_or("unknown until a step is timed".into(), duration);
    let at_once = if s.jobs > 1 { format!(", {} steps at a time", s.jobs) } else { String::new() };
    let chains = Table {
        title: format!("{}: {done} of {} steps done, ETA {eta}{at_once}", a.dir.display(), s.steps.len()),
        header: ["workflow", "chain", "generation", "eval loss", "ETA"].map(String::from).to_vec(),
        rows: s
            .chains()
            .iter()
            .map(|c| {
                vec![
                    c.workflow.name().to_string(),
                    c.chain.to_string(),
                    format!("{}/{}", c.reached, c.generations),
                    if c.eval_loss.is_finite() { number(c.eval_loss) } else { "-".into() },
                    c.eta_seconds.map_or("-".into(), duration),
                ]
            })
            .collect(),
    };
    // Per chain for a generation loop; CSV has room for one table, the steps'.
    match format {
        Format::Csv => {}
        _ if chains.rows.is_empty() => println!("{}\n", chains.title),
        Format::Markdown => println!("{}", chains.markdown()),
        _ => println!("{}", chains.plain()),
    }
    let value = s.config.value.is_some();
    let kind =
        if value { ["step", "source", "seed", "real", "synthetic"] } else { ["step", "workflow", "chain", "gen", ""] };
    let mut header: Vec<String> = kind.iter().filter(|h| !h.is_empty()).map(|h| h.to_string()).collect();
    header.extend(["state", "eval loss", "train rows"].map(String::from));
    if !jobs.is_empty() {
        header.push("slurm job".into());
    }
    let mut table = Table { title: "steps".into(), header, rows: Vec::new() };
    for (step, done, record) in &s.steps {
        let mut row: Vec<String> = columns(step).into_iter().take(if value { 5 } else { 4 }).collect();
        let (loss, rows) =
            record.as_ref().map_or(("-".into(), "-".into()), |r| (number(r.eval_loss), r.train_examples.to_string()));
        row.extend([if *done { "done" } else { "pending" }.to_string(), loss, rows]);
        if !jobs.is_empty() {
            row.push(jobs.get(&step.id()).map_or("-".into(), |(j, st)| format!("{j} {st}")));
        }
        table.rows.push(row);
    }
    match format {
        Format::Markdown => print!("{}", table.markdown()),
        Format::Csv => print!("{}", table.csv()),
        _ => print!("{}", table.plain()),
    }
    Ok(())
}

/// Seconds as a reader reads a duration: `42 s`, `3 min 20 s`, `2 h 05 min`.
fn duration(seconds: f64) -> String {
    let s = seconds.round() as u64;
    match s {
        0..60 => format!("{s} s"),
        60..3600 => format!("{} min {:02} s", s / 60, s % 60),
        _ => format!("{} h {:02} min", s / 3600, s / 60 % 60),
    }
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
    /// Steps at a time, each with its share of the cores [default: the cores, at most 3 (the
    /// workflows), or at most 8 with --value]. The results do not depend on it.
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..))]
    jobs: Option<u64>,
}

impl DemoArgs {
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

pub fn demo(a: DemoArgs) -> Result<()> {
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
    execute(&cfg, &thrive_orchestrator::RunOptions { jobs, devices: Vec::new() })
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
