//! `thrive status`: what a run directory has done and what is left.

use super::common::Format;
use super::steps::step_json;
use anyhow::Result;
use std::path::PathBuf;
use thrive_orchestrator::{SourceId, Step};
use thrive_report::table::{number, Table};

#[derive(clap::Args)]
pub struct Args {
    /// The run directory (the `out` of its run file).
    dir: PathBuf,
    /// How the table is printed: plain, markdown, csv or json.
    #[arg(long, value_enum, default_value_t = Format::Plain)]
    format: Format,
    /// Same as `--format json`.
    #[arg(long, conflicts_with = "format")]
    json: bool,
}

/// `thrive status`: the chains' progress and ETA, then every step's state.
pub fn run(a: Args) -> Result<()> {
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
                let mut v = step_json(step, *done);
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
