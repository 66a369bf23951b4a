//! `thrive submit`: a run's steps as Slurm jobs, only those neither done nor running.

use anyhow::{Context, Result};
use std::path::PathBuf;
use thrive_orchestrator::RunFile;

#[derive(clap::Args)]
pub struct Args {
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
pub fn run(a: Args) -> Result<()> {
    use thrive_orchestrator::slurm;
    let cfg = RunFile::from_file(&a.config)?;
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
