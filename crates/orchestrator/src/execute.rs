//! Running a run's steps: the locks that keep two processes off one run or one step, the checks
//! and preparation every process does first, the workers' devices, and the schedule that runs
//! steps in parallel once the steps they depend on are done.

use crate::error::io;
use crate::layout::{is_done, write_json, RunDir, JOBS_FILE};
use crate::plan::{dependencies, find_step, plan, Step};
use crate::run_file::RunFile;
use crate::steps::{describe, import_real, perform, results, to_sft, Context};
use crate::{Error, Result};
use candle_core::Device;
use std::path::{Path, PathBuf};
use std::time::Duration;
use thrive_core::lock::FileLock;
use thrive_core::results::ResultsTable;
use thrive_pool::{BatchKey, Pool};
use thrive_sft::{resolve_model_dir, Example, Precision, TextEncoder};

/// Keeps a second whole run off the run directory (host + PID of its owner; a lock whose process
/// is gone is taken over, one of another host never).
fn run_lock(root: &Path) -> Result<FileLock> {
    FileLock::acquire(&root.join("run.lock"), Duration::ZERO).map_err(|e| match e {
        thrive_core::Error::Locked { path, message } => {
            Error::Invalid(format!("{}: another `thrive run` is running this run: {message}", path.display()))
        }
        other => other.into(),
    })
}

/// Keeps a second process off one step (two Slurm jobs of it, or a job and a whole run).
fn step_lock(dir: &RunDir, step: Step) -> Result<FileLock> {
    let path = dir.step_lock(step);
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).map_err(io(parent))?;
    }
    FileLock::acquire(&path, Duration::ZERO).map_err(|e| match e {
        thrive_core::Error::Locked { path, message } => {
            Error::Invalid(format!("step {} is running elsewhere ({}: {message})", step.id(), path.display()))
        }
        other => other.into(),
    })
}

/// Whether the run directory was started, refusing it when it was started with another
/// configuration: the one it was started with is the only one it continues with (compared with
/// the generation loop's defaults filled in, as older files recorded them).
pub fn check_recorded(cfg: &RunFile, dir: &RunDir) -> Result<bool> {
    let recorded = dir.config();
    if !recorded.exists() {
        return Ok(false);
    }
    let text = std::fs::read_to_string(&recorded).map_err(io(&recorded))?;
    let mut before: RunFile =
        serde_json::from_str(&text).map_err(|e| Error::Invalid(format!("{}: {e}", recorded.display())))?;
    // Files written before run.json recorded paths relative to the run hold them as given.
    if before.out != Path::new(".") {
        before = before.recorded(&dir.root);
    }
    if before.normalized() != cfg.clone().recorded(&dir.root).normalized() {
        return Err(Error::Invalid(format!(
            "{} was started with another configuration ({}); use a new `out` to change settings",
            dir.root.display(),
            recorded.display()
        )));
    }
    Ok(true)
}

/// How `run_with` executes the plan.
#[derive(Debug, Clone, Default)]
pub struct RunOptions {
    /// Steps at a time (0 or 1: one after another).
    pub jobs: usize,
    /// CUDA devices handed out to the parallel steps, one each (empty: the run file's device).
    pub devices: Vec<usize>,
}

/// Runs (or continues) a whole run one step at a time; returns the results table.
pub fn run(cfg: &RunFile) -> Result<ResultsTable> {
    run_with(cfg, &RunOptions::default())
}

/// What every step of a run needs, prepared once per process: the configuration checked against
/// the run directory's, the real data imported, the tokenizer and validation split loaded.
struct Prepared {
    dir: RunDir,
    base_dir: PathBuf,
    tokenizer_path: PathBuf,
    enc: TextEncoder,
    valid: Vec<Example>,
}

impl Prepared {
    fn new(cfg: &RunFile) -> Result<Prepared> {
        let dir = RunDir { root: cfg.out.clone() };
        std::fs::create_dir_all(&dir.root).map_err(io(&dir.root))?;
        let started = check_recorded(cfg, &dir)?;
        let recorded = dir.config();
        let base_dir = resolve_model_dir(&cfg.model)?;
        let tokenizer_path = base_dir.join("tokenizer.json");
        let enc = TextEncoder::from_file(&tokenizer_path)?;
        import_real(cfg, &dir, &tokenizer_path)?;
        let valid: Vec<Example> = to_sft(Pool::open(dir.pool())?.read_batch(&BatchKey::real("validation"))?);
        if let Some(v) = &cfg.value {
            let rows = Pool::open(dir.pool())?.entry(&BatchKey::real("train"))?.rows as usize;
            if let Some(&most) = v.num_real.iter().max().filter(|&&m| m > rows) {
                return Err(Error::Invalid(format!(
                    "value.num_real: {most} is more than the {rows} rows of the real training split"
                )));
            }
            if let Some(&most) = v.source_real.iter().flat_map(|r| r.values()).max().filter(|&m| m > rows).as_ref() {
                return Err(Error::Invalid(format!(
                    "value.source_real: {most} is more than the {rows} rows of the real training split"
                )));
            }
        }
        // Recorded only once the settings are known to work with the data, so that a run file fixed
        // after an error here is not refused as another configuration.
        if !started {
            write_json(&recorded, &cfg.clone().recorded(&dir.root))?;
        }
        Ok(Prepared { dir, base_dir, tokenizer_path, enc, valid })
    }

    fn context<'a>(
        &'a self,
        cfg: &'a RunFile,
        device: &'a Device,
        dtype: Precision,
        multi: &'a indicatif::MultiProgress,
    ) -> Context<'a> {
        Context {
            cfg,
            dir: &self.dir,
            base_dir: &self.base_dir,
            tokenizer_path: &self.tokenizer_path,
            enc: &self.enc,
            valid: &self.valid,
            device,
            dtype,
            multi,
        }
    }
}

/// The devices of the workers: the run file's, or for `devices` one CUDA device each.
fn worker_devices(cfg: &RunFile, opts: &RunOptions, workers: usize) -> Result<Vec<(Device, Precision)>> {
    let (device, dtype) = thrive_sft::device_for(&cfg.device, cfg.dtype.unwrap_or_default())?;
    if opts.devices.is_empty() {
        return Ok(vec![(device, dtype); workers]);
    }
    if !device.is_cuda() {
        return Err(Error::Invalid(format!(
            "--devices: the run's device is the CPU (device = \"{}\"); devices are CUDA ordinals",
            cfg.device
        )));
    }
    (0..workers)
        .map(|i| {
            let ordinal = opts.devices[i % opts.devices.len()];
            let d = Device::new_cuda(ordinal)
                .map_err(|e| Error::Invalid(format!("--devices: CUDA device {ordinal}: {e}")))?;
            Ok((d, dtype))
        })
        .collect()
}

/// Runs (or continues) a whole run, `opts.jobs` steps at a time (each once all the steps it
/// depends on are done); returns the results table. The results and pool are the same whatever
/// the number of jobs: every step's output depends on its inputs alone.
pub fn run_with(cfg: &RunFile, opts: &RunOptions) -> Result<ResultsTable> {
    std::fs::create_dir_all(&cfg.out).map_err(io(&cfg.out))?;
    let _lock = run_lock(&cfg.out)?;
    let prepared = Prepared::new(cfg)?;
    let dir = &prepared.dir;
    let steps = plan(cfg);
    let multi = indicatif::MultiProgress::new();
    let bar = multi.add(indicatif::ProgressBar::new(steps.len() as u64));
    bar.set_style(
        indicatif::ProgressStyle::with_template("run {bar:30} {pos}/{len} steps {msg} [{elapsed} / eta {eta}]")
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    let workers = opts.jobs.max(1).min(steps.len().max(1));
    // Steps at a time, for `thrive status`'s ETA.
    write_json(&dir.root.join(JOBS_FILE), &serde_json::json!({ "jobs": workers }))?;
    let devices = worker_devices(cfg, opts, workers)?;
    if workers == 1 {
        let ctx = prepared.context(cfg, &devices[0].0, devices[0].1, &multi);
        for step in steps {
            bar.set_message(describe(step));
            run_one(&ctx, step)?;
            bar.inc(1);
            // Results so far, so that `thrive report` works on a run in progress.
            write_results(cfg, dir, false)?;
        }
    } else {
        let pool = Pool::open(dir.pool())?;
        let done: Vec<bool> = steps.iter().map(|&s| is_done(dir, Some(&pool), s)).collect();
        let ids: Vec<String> = steps.iter().map(Step::id).collect();
        let deps: Vec<Vec<usize>> = steps
            .iter()
            .map(|&s| {
                dependencies(s).iter().map(|d| ids.iter().position(|i| *i == d.id()).expect("in the plan")).collect()
            })
            .collect();
        let state = std::sync::Mutex::new(Schedule { done, started: vec![false; steps.len()], failed: None });
        let turn = std::sync::Condvar::new();
        std::thread::scope(|scope| {
            for (device, dtype) in &devices {
                let ctx = prepared.context(cfg, device, *dtype, &multi);
                let (steps, deps, state, turn, bar) = (&steps, &deps, &state, &turn, &bar);
                scope.spawn(move || loop {
                    let next = {
                        let mut s = state.lock().unwrap_or_else(|e| e.into_inner());
                        loop {
                            if s.failed.is_some() || s.started.iter().all(|&x| x) {
                                break None;
                            }
                            // The first step in plan order whose dependencies are done.
                            let ready = (0..steps.len()).find(|&i| !s.started[i] && deps[i].iter().all(|&d| s.done[d]));
                            if let Some(i) = ready {
                                s.started[i] = true;
                                break Some(i);
                            }
                            s = turn.wait(s).unwrap_or_else(|e| e.into_inner());
                        }
                    };
                    let Some(i) = next else {
                        turn.notify_all();
                        return;
                    };
                    bar.set_message(describe(steps[i]));
                    let outcome = run_one(&ctx, steps[i]).and_then(|_| write_results(cfg, ctx.dir, false).map(drop));
                    let mut s = state.lock().unwrap_or_else(|e| e.into_inner());
                    match outcome {
                        Ok(()) => {
                            s.done[i] = true;
                            bar.inc(1);
                        }
                        Err(e) => s.failed = s.failed.take().or(Some(e)),
                    }
                    drop(s);
                    turn.notify_all();
                });
            }
        });
        let failed = state.into_inner().unwrap_or_else(|e| e.into_inner()).failed;
        if let Some(e) = failed {
            return Err(e);
        }
    }
    bar.finish_and_clear();
    write_results(cfg, dir, true)
}

/// The parallel run's bookkeeping, by index into the plan.
struct Schedule {
    done: Vec<bool>,
    started: Vec<bool>,
    failed: Option<Error>,
}

/// Runs exactly one step of the plan (`thrive run --step ID`), idempotently: a done step is a
/// no-op, a step killed before resumes from its checkpoint. The steps it depends on must be done.
/// Returns whether it ran.
pub fn run_step(cfg: &RunFile, id: &str) -> Result<bool> {
    let step = find_step(cfg, id)?;
    let prepared = Prepared::new(cfg)?;
    let dir = &prepared.dir;
    let pool = Pool::open(dir.pool())?;
    if is_done(dir, Some(&pool), step) {
        return Ok(false);
    }
    let missing: Vec<String> =
        dependencies(step).into_iter().filter(|&d| !is_done(dir, Some(&pool), d)).map(|d| d.id()).collect();
    if !missing.is_empty() {
        return Err(Error::Invalid(format!("step {id} needs {} first (not done)", missing.join(", "))));
    }
    drop(pool);
    let (device, dtype) = thrive_sft::device_for(&cfg.device, cfg.dtype.unwrap_or_default())?;
    let multi = indicatif::MultiProgress::new();
    let ran = run_one(&prepared.context(cfg, &device, dtype, &multi), step)?;
    write_results(cfg, dir, false)?;
    Ok(ran)
}

/// Writes results.parquet from every finished model (under a lock, so that of many processes
/// finishing steps the last to write has seen every step); with `always` false, not while it
/// would be empty.
fn write_results(cfg: &RunFile, dir: &RunDir, always: bool) -> Result<ResultsTable> {
    let _lock = FileLock::acquire(&dir.root.join("results.lock"), Duration::from_secs(120))?;
    let table = results(cfg, dir)?;
    if always || !table.runs.is_empty() {
        table.write_parquet(&dir.results())?;
    }
    Ok(table)
}

/// Runs one step unless it is done; returns whether it ran.
fn run_one(ctx: &Context<'_>, step: Step) -> Result<bool> {
    let dir = ctx.dir;
    if is_done(dir, Some(&Pool::open(dir.pool())?), step) {
        return Ok(false);
    }
    let _lock = step_lock(dir, step)?;
    // Checked again under the lock: another process may have finished it meanwhile.
    let pool = Pool::open(dir.pool())?;
    if is_done(dir, Some(&pool), step) {
        return Ok(false);
    }
    perform(ctx, step, pool)?;
    Ok(true)
}
