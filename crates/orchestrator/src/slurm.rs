//! `thrive submit`: the plan as Slurm jobs. One job per step, which runs `thrive run RUN.toml
//! --step ID`; value-grid cells that depend on the same source share one job array; the order is
//! `--dependency=afterok:…`. Scripts, logs and the job ids of every submitted step live under
//! `RUN/slurm/`, so that a second `thrive submit` submits only what is neither done nor running,
//! and `thrive status` shows each step's Slurm state.

use crate::error::io;
use crate::layout::{is_done, RunDir};
use crate::plan::{dependencies, plan, Step};
use crate::run_file::{RunFile, SlurmConfig};
use crate::{Error, Result};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use thrive_core::lock::Owner;
use thrive_pool::Pool;

/// The Slurm jobs of each submitted step (`RUN/slurm/jobs.json`).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct JobRecord {
    /// Step id → Slurm job id (`123`, or `123_4` for a task of an array).
    pub steps: BTreeMap<String, String>,
}

impl JobRecord {
    fn path(dir: &RunDir) -> PathBuf {
        dir.root.join("slurm").join("jobs.json")
    }

    /// The record of a run directory (empty if nothing was submitted).
    pub fn read(dir: &RunDir) -> Result<JobRecord> {
        let path = Self::path(dir);
        match std::fs::read_to_string(&path) {
            Ok(text) => serde_json::from_str(&text).map_err(|e| Error::Invalid(format!("{}: {e}", path.display()))),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(JobRecord::default()),
            Err(e) => Err(Error::Io { path, source: e }),
        }
    }

    fn write(&self, dir: &RunDir) -> Result<()> {
        let path = Self::path(dir);
        let text = serde_json::to_string_pretty(self).expect("serialises");
        thrive_core::fsutil::write_atomic(&path, |w| {
            std::io::Write::write_all(w, text.as_bytes()).map_err(|e| thrive_core::Error::io(&path, e))
        })?;
        Ok(())
    }
}

/// How to submit.
#[derive(Debug, Clone, Default)]
pub struct SubmitOptions {
    /// Write the scripts and report the jobs, but submit nothing.
    pub dry_run: bool,
    /// Check each job script with `sbatch --test-only` instead of submitting (dependencies are
    /// left out: there are no job ids to depend on).
    pub test_only: bool,
}

/// One job to submit: a step, or an array of cells that share their dependencies.
#[derive(Debug, Clone)]
pub struct Job {
    pub name: String,
    pub steps: Vec<Step>,
    pub script: PathBuf,
    /// The Slurm jobs it waits for (`afterok`).
    pub after: Vec<String>,
    /// Its Slurm id once submitted (the array's id for an array).
    pub id: Option<String>,
}

/// What `submit` did.
#[derive(Debug, Clone, Default)]
pub struct Submitted {
    pub jobs: Vec<Job>,
    /// Steps already done.
    pub done: usize,
    /// Steps left to jobs still running from an earlier submission: (step id, job id).
    pub running: Vec<(String, String)>,
    /// Pending jobs of an earlier submission that were cancelled to be submitted again.
    pub cancelled: Vec<String>,
    /// `sbatch --test-only`'s answer for each job (with `test_only`).
    pub tests: Vec<String>,
}

/// Finds a program on the PATH.
pub fn find_program(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path).map(|d| d.join(name)).find(|p| {
        use std::os::unix::fs::PermissionsExt;
        std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
    })
}

fn need(program: &str) -> Result<PathBuf> {
    find_program(program).ok_or_else(|| {
        Error::Invalid(format!(
            "`{program}` is not on the PATH: `thrive submit` needs Slurm's command-line tools (nothing was submitted)"
        ))
    })
}

/// Runs a Slurm command, returning its stdout; errors carry the command and its stderr.
fn slurm(program: &Path, args: &[String]) -> Result<String> {
    let out = Command::new(program)
        .args(args)
        .output()
        .map_err(|e| Error::Invalid(format!("{} {}: {e}", program.display(), args.join(" "))))?;
    if !out.status.success() {
        return Err(Error::Invalid(format!(
            "{} {} failed ({}): {}",
            program.display(),
            args.join(" "),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// The states of the given jobs that Slurm still knows as queued or running
/// (`squeue`, array tasks one a line): job id → state, e.g. `PENDING`, `RUNNING`.
pub fn queue_states(ids: &[&str]) -> Result<BTreeMap<String, String>> {
    let mut states = BTreeMap::new();
    if ids.is_empty() {
        return Ok(states);
    }
    let squeue = need("squeue")?;
    // The array ids; squeue -r lists their tasks one a line.
    let mut jobs: Vec<&str> = ids.iter().map(|i| i.split('_').next().unwrap_or(i)).collect();
    jobs.sort();
    jobs.dedup();
    let args = vec!["-h".into(), "-r".into(), "-o".into(), "%i %T".into(), format!("--jobs={}", jobs.join(","))];
    // squeue fails on ids it has forgotten; then nothing of them is queued.
    let text = slurm(&squeue, &args).unwrap_or_default();
    for line in text.lines() {
        if let Some((id, state)) = line.trim().split_once(' ') {
            states.insert(id.to_string(), state.trim().to_string());
        }
    }
    Ok(states)
}

/// Final states of finished jobs from `sacct` (empty where accounting is not set up).
pub fn final_states(ids: &[&str]) -> BTreeMap<String, String> {
    let mut states = BTreeMap::new();
    let Some(sacct) = find_program("sacct").filter(|_| !ids.is_empty()) else { return states };
    let args =
        vec!["-n".into(), "-X".into(), "-P".into(), "-o".into(), "JobID,State".into(), format!("-j{}", ids.join(","))];
    for line in slurm(&sacct, &args).unwrap_or_default().lines() {
        if let Some((id, state)) = line.split_once('|') {
            // `CANCELLED by 0` → CANCELLED
            states.insert(id.to_string(), state.split_whitespace().next().unwrap_or("").to_string());
        }
    }
    states
}

/// The Slurm state of every submitted step: queued or running (squeue), else finished (sacct,
/// when accounting is set up), else `ENDED`.
pub fn step_states(dir: &RunDir) -> Result<BTreeMap<String, (String, String)>> {
    let record = JobRecord::read(dir)?;
    let ids: Vec<&str> = record.steps.values().map(String::as_str).collect();
    if ids.is_empty() || find_program("squeue").is_none() {
        return Ok(record.steps.into_iter().map(|(s, j)| (s, (j, "UNKNOWN".into()))).collect());
    }
    let queued = queue_states(&ids)?;
    let ended: Vec<&str> = ids.iter().copied().filter(|i| !queued.contains_key(*i)).collect();
    let finished = final_states(&ended);
    Ok(record
        .steps
        .iter()
        .map(|(step, job)| {
            let state = queued.get(job).or_else(|| finished.get(job)).cloned().unwrap_or_else(|| "ENDED".into());
            (step.clone(), (job.clone(), state))
        })
        .collect())
}

/// A job name that is also a file name.
fn job_name(label: &str) -> String {
    format!("thrive-{}", label.replace('/', "+"))
}

/// Single-quoted for the shell.
fn quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', "'\\''"))
}

/// The `#SBATCH` lines of the run file's `[slurm]` section.
fn resource_lines(s: &SlurmConfig) -> Vec<String> {
    let mut lines = Vec::new();
    let mut opt = |flag: &str, v: Option<String>| {
        if let Some(v) = v {
            lines.push(format!("#SBATCH --{flag}={v}"));
        }
    };
    opt("partition", s.partition.clone());
    opt("account", s.account.clone());
    opt("gres", s.gpus.filter(|&g| g > 0).map(|g| format!("gpu:{g}")));
    opt("cpus-per-task", s.cpus.map(|c| c.to_string()));
    opt("mem", s.mem.clone());
    opt("time", s.time.clone());
    for e in &s.extra {
        let e = e.trim();
        lines.push(if e.starts_with("#SBATCH") { e.to_string() } else { format!("#SBATCH {e}") });
    }
    lines
}

/// The job script of `steps` (one step, or an array's).
fn script(cfg: &RunFile, dir: &RunDir, run_file: &Path, thrive: &Path, name: &str, steps: &[Step]) -> String {
    let slurm = cfg.slurm.clone().unwrap_or_default();
    let logs = dir.root.join("slurm").join("logs");
    let array = steps.len() > 1;
    let mut s = String::from("#!/bin/bash\n");
    s += &format!("#SBATCH --job-name={name}\n");
    let log = if array { format!("{name}-%A_%a.out") } else { format!("{name}-%j.out") };
    s += &format!("#SBATCH --output={}\n", logs.join(log).display());
    if array {
        s += &format!("#SBATCH --array=0-{}\n", steps.len() - 1);
    }
    for line in resource_lines(&slurm) {
        s += &line;
        s.push('\n');
    }
    s += "set -euo pipefail\n";
    for line in &slurm.setup {
        s += line;
        s.push('\n');
    }
    if array {
        s += "STEPS=(";
        for step in steps {
            s += &format!("\n  {}", quote(&step.id()));
        }
        s += "\n)\nSTEP=\"${STEPS[$SLURM_ARRAY_TASK_ID]}\"\n";
    } else {
        s += &format!("STEP={}\n", quote(&steps[0].id()));
    }
    s += &format!(
        "exec {} run {} --step \"$STEP\"\n",
        quote(&thrive.display().to_string()),
        quote(&run_file.display().to_string())
    );
    s
}

/// Submits every step of the run in `run_file` (already read into `cfg`) that is neither done
/// nor running in a job of an earlier submission; `thrive` is the binary the jobs run.
pub fn submit(cfg: &RunFile, run_file: &Path, thrive: &Path, opts: &SubmitOptions) -> Result<Submitted> {
    let sbatch = if opts.dry_run { None } else { Some(need("sbatch")?) };
    let dir = RunDir { root: cfg.out.clone() };
    let run_file = std::path::absolute(run_file).map_err(io(run_file))?;
    // Nothing is submitted for a run directory started with another configuration; the one
    // submitted is kept for `thrive status` until the first job records run.json.
    crate::execute::check_recorded(cfg, &dir)?;
    let mut record = JobRecord::read(&dir)?;
    let submitted = dir.root.join("slurm").join("run.json");
    let text = serde_json::to_string_pretty(cfg).map_err(|e| Error::Invalid(e.to_string()))?;
    thrive_core::fsutil::write_atomic(&submitted, |w| {
        std::io::Write::write_all(w, text.as_bytes()).map_err(|e| thrive_core::Error::io(&submitted, e))
    })?;
    let pool = Pool::open(dir.pool()).ok();
    let steps = plan(cfg);

    // What earlier submissions left queued: running jobs are kept (and waited for), pending ones
    // are cancelled and submitted again (their dependencies may be jobs that failed).
    let mut out = Submitted::default();
    let earlier: Vec<&str> = if opts.dry_run || opts.test_only {
        Vec::new()
    } else {
        steps
            .iter()
            .filter(|&&s| !is_done(&dir, pool.as_ref(), s))
            .filter_map(|s| record.steps.get(&s.id()).map(String::as_str))
            .collect()
    };
    let queued = queue_states(&earlier)?;
    let mut job_of: BTreeMap<String, String> = BTreeMap::new();
    let mut todo = Vec::new();
    let mut cancel = Vec::new();
    for &step in &steps {
        let id = step.id();
        if is_done(&dir, pool.as_ref(), step) {
            out.done += 1;
            continue;
        }
        let job = record.steps.get(&id).filter(|j| earlier.contains(&j.as_str()));
        match job.and_then(|j| queued.get(j)).map(String::as_str) {
            Some("RUNNING" | "COMPLETING" | "CONFIGURING") => {
                let job = job.expect("queued").clone();
                job_of.insert(id.clone(), job.clone());
                out.running.push((id, job));
                continue;
            }
            Some(_) => cancel.push(job.expect("queued").clone()),
            None => {}
        }
        todo.push(step);
    }

    // Cells that wait for the same steps share an array; every other step is a job of its own.
    let mut groups: Vec<(String, Vec<Step>)> = Vec::new();
    for &step in &todo {
        let deps: Vec<String> = dependencies(step).iter().map(Step::id).collect();
        if let Step::Cell { .. } = step {
            let label = format!("cells-after-{}", if deps.is_empty() { "nothing".into() } else { deps.join("+") });
            if let Some(g) = groups.iter_mut().find(|g| g.0 == label) {
                g.1.push(step);
                continue;
            }
            groups.push((label, vec![step]));
        } else {
            groups.push((step.id(), vec![step]));
        }
    }
    let scripts = dir.root.join("slurm").join("scripts");
    for d in [scripts.clone(), dir.root.join("slurm").join("logs")] {
        std::fs::create_dir_all(&d).map_err(io(&d))?;
    }
    let mut jobs: Vec<Job> = groups
        .into_iter()
        .map(|(label, steps)| {
            let name = job_name(&label);
            let path = scripts.join(format!("{name}.sh"));
            let text = script(cfg, &dir, &run_file, thrive, &name, &steps);
            thrive_core::fsutil::write_atomic(&path, |w| {
                std::io::Write::write_all(w, text.as_bytes()).map_err(|e| thrive_core::Error::io(&path, e))
            })?;
            Ok(Job { name, steps, script: path, after: Vec::new(), id: None })
        })
        .collect::<Result<_>>()?;
    let Some(sbatch) = sbatch else {
        // A dry run: the dependencies by step id instead of job id.
        for job in &mut jobs {
            job.after = job
                .steps
                .iter()
                .flat_map(|&s| dependencies(s))
                .filter(|d| !is_done(&dir, pool.as_ref(), *d))
                .map(|d| d.id())
                .collect();
            job.after.dedup();
        }
        out.jobs = jobs;
        return Ok(out);
    };
    if opts.test_only {
        for job in &jobs {
            let args = vec!["--test-only".to_string(), job.script.display().to_string()];
            let answer = Command::new(&sbatch)
                .args(&args)
                .output()
                .map_err(|e| Error::Invalid(format!("{}: {e}", sbatch.display())))?;
            let text = String::from_utf8_lossy(&answer.stderr).trim().to_string()
                + String::from_utf8_lossy(&answer.stdout).trim();
            if !answer.status.success() {
                return Err(Error::Invalid(format!("sbatch --test-only {}: {text}", job.script.display())));
            }
            out.tests.push(format!("{}: {text}", job.name));
        }
        out.jobs = jobs;
        return Ok(out);
    }
    if !cancel.is_empty() {
        slurm(&need("scancel")?, &cancel)?;
        out.cancelled = cancel;
    }
    // A step killed with its job leaves its lock; no job of it runs now, so it goes.
    for job in &jobs {
        for &step in &job.steps {
            let lock = dir.step_lock(step);
            let Some(owner) = std::fs::read_to_string(&lock).ok().and_then(|t| Owner::parse(&t)) else { continue };
            if owner.host != Owner::me().host || owner.is_gone() {
                tracing::info!("{}: removing the lock of {owner}, whose job is gone", lock.display());
                let _ = std::fs::remove_file(&lock);
            } else {
                tracing::warn!("{}: {owner} on this host is running step {}", lock.display(), step.id());
            }
        }
    }
    for job in &mut jobs {
        let mut after: Vec<String> = job
            .steps
            .iter()
            .flat_map(|&s| dependencies(s))
            .filter(|d| !is_done(&dir, pool.as_ref(), *d))
            .map(|d| job_of.get(&d.id()).cloned().expect("dependencies come first in the plan"))
            .collect();
        after.sort();
        after.dedup();
        let mut args = vec!["--parsable".to_string()];
        if !after.is_empty() {
            args.push(format!("--dependency=afterok:{}", after.join(":")));
        }
        args.push(job.script.display().to_string());
        let answer = slurm(&sbatch, &args)?;
        // `--parsable`: `ID` or `ID;CLUSTER`.
        let id = answer.trim().split(';').next().unwrap_or("").to_string();
        if id.is_empty() || !id.chars().all(|c| c.is_ascii_digit()) {
            return Err(Error::Invalid(format!("sbatch answered `{}`, not a job id", answer.trim())));
        }
        for (i, step) in job.steps.iter().enumerate() {
            let task = if job.steps.len() > 1 { format!("{id}_{i}") } else { id.clone() };
            job_of.insert(step.id(), task.clone());
            record.steps.insert(step.id(), task);
        }
        // Recorded after every job, so that a failure part-way loses no job id.
        record.write(&dir)?;
        job.after = after;
        job.id = Some(id);
    }
    out.jobs = jobs;
    Ok(out)
}
