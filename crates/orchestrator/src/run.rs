//! The two kinds of LM run.
//!
//! The generation loop (§4.4): for every chain and workflow, generation t fine-tunes on its
//! workflow's view of the pool, is evaluated on the real validation split, and (unless it is the
//! last) samples generation t's synthetic batch into the pool.
//!
//! The value-of-synthetic grid (§5): each source model is fine-tuned once on the real training
//! split and samples a large synthetic batch; then every cell (num_real, num_synthetic, source,
//! seed) fine-tunes the base model on the first rows of both and is evaluated.
//!
//! Every step is idempotent and leaves either nothing or a complete artifact: a model directory
//! is complete once its `done.json` exists (written last, atomically; training in between resumes
//! from its newest checkpoint), a synthetic batch once the pool's manifest lists it. Running the
//! same configuration again therefore continues where a killed run stopped and ends with the
//! same results as an uninterrupted run.

use crate::config::{RunConfig, SourceQuality};
use crate::error::io;
use crate::{Error, Result};
use candle_core::Device;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use std::time::Duration;
use thrive_core::fsutil::{recorded_model, relative_to};
use thrive_core::lock::FileLock;
use thrive_core::results::{Params, ResultsTable, RunRecord};
use thrive_core::{Seeds, Stream, Workflow};
use thrive_pool::{BatchKey, ColumnMapping, HubSource, Pick, Pool, PoolWriter, TokenCounter, View};
use thrive_sampler::{file_sha256, synthesize, Mode, Origin};
use thrive_sft::{evaluate, resolve_model_dir, train, Example, Gemma, Precision, RunControl, TextEncoder};

/// The results' metric columns, one row per (workflow, chain, generation).
pub const METRICS: [&str; 5] = ["eval_loss", "eval_loss_before", "train_loss", "train_examples", "synthetic_fraction"];

/// What a finished model step recorded (`done.json`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModelDone {
    #[serde(deserialize_with = "null_as_nan")]
    pub eval_loss: f64,
    #[serde(deserialize_with = "null_as_nan")]
    pub eval_loss_before: f64,
    /// NaN (null in the file) for a model that was not trained.
    #[serde(deserialize_with = "null_as_nan")]
    pub train_loss: f64,
    pub train_examples: usize,
    pub synthetic_examples: usize,
    pub steps: usize,
    pub seconds: f64,
}

/// What a finished sampling step recorded beside its model (`sample.json`): the pool's manifest
/// marks it done, this only times it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SampleDone {
    pub rows: usize,
    pub seconds: f64,
}

/// A sampling step's record in its model's directory.
pub const SAMPLE_DONE: &str = "sample.json";

/// The seconds a done step took, as recorded (a sampling step from before they were recorded:
/// `None`).
pub fn step_seconds(dir: &RunDir, step: Step) -> Option<f64> {
    let (path, model) = match step {
        Step::Sample { workflow, chain, generation } => {
            (dir.model(workflow, chain, generation).join(SAMPLE_DONE), false)
        }
        Step::SampleSource { source } => (dir.source_model(source).join(SAMPLE_DONE), false),
        _ => (model_dir(dir, step)?.join("done.json"), true),
    };
    let text = std::fs::read_to_string(path).ok()?;
    if model {
        serde_json::from_str::<ModelDone>(&text).ok().map(|d| d.seconds)
    } else {
        serde_json::from_str::<SampleDone>(&text).ok().map(|d| d.seconds)
    }
}

/// JSON has no NaN: serde_json writes it as null, read back here.
fn null_as_nan<'de, D: serde::Deserializer<'de>>(d: D) -> std::result::Result<f64, D::Error> {
    Option::<f64>::deserialize(d).map(|v| v.unwrap_or(f64::NAN))
}

/// One unit of work.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    Train {
        workflow: Workflow,
        chain: u64,
        generation: u32,
    },
    Sample {
        workflow: Workflow,
        chain: u64,
        generation: u32,
    },
    /// Value grid: fine-tune a source model on (the first `source_real` rows of) the real
    /// training split.
    TrainSource {
        source: SourceId,
    },
    /// Value grid: sample the source's synthetic rows into the pool.
    SampleSource {
        source: SourceId,
    },
    /// Value grid: one cell. `source` is `None` when the cell has no synthetic rows (then the
    /// source does not matter and the cell is trained once per seed); with no rows at all the
    /// base model is evaluated untrained, once.
    Cell {
        num_real: usize,
        num_synthetic: usize,
        source: Option<SourceId>,
        seed: u64,
    },
}

/// A source of the value grid: its seed, and its quality (the `index`th combination of the
/// run file's source-quality keys, [`crate::ValueConfig::qualities`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SourceId {
    pub seed: u64,
    pub index: u32,
    pub quality: SourceQuality,
}

impl SourceId {
    /// Its directory under models/value: `source-SEED`, with the quality appended when the run
    /// file sets any source-quality key.
    fn dir_name(&self) -> String {
        match self.quality.label() {
            label if label.is_empty() => format!("source-{}", self.seed),
            label => format!("source-{}-{label}", self.seed),
        }
    }

    /// Its synthetic rows' pool batch.
    pub fn batch(&self) -> BatchKey {
        BatchKey::value_source(self.seed, self.index)
    }
}

impl std::fmt::Display for SourceId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.quality.label() {
            label if label.is_empty() => write!(f, "{}", self.seed),
            label => write!(f, "{} ({})", self.seed, label.replace('-', " ")),
        }
    }
}

/// A run directory's layout.
pub struct RunDir {
    pub root: PathBuf,
}

impl RunDir {
    pub fn pool(&self) -> PathBuf {
        self.root.join("pool")
    }
    pub fn model(&self, workflow: Workflow, chain: u64, generation: u32) -> PathBuf {
        self.root
            .join("models")
            .join(workflow.name())
            .join(format!("chain-{chain}"))
            .join(format!("gen-{generation:04}"))
    }
    pub fn source_model(&self, source: SourceId) -> PathBuf {
        self.root.join("models").join("value").join(source.dir_name())
    }
    pub fn cell(&self, num_real: usize, num_synthetic: usize, source: Option<SourceId>, seed: u64) -> PathBuf {
        let v = self.root.join("models").join("value");
        match (num_real + num_synthetic, source) {
            (0, _) => v.join("base"),
            (_, None) => v.join("real-only").join(format!("seed-{seed}")).join(format!("real-{num_real}")),
            (_, Some(s)) => v
                .join(s.dir_name())
                .join(format!("seed-{seed}"))
                .join(format!("real-{num_real}-synthetic-{num_synthetic}")),
        }
    }
    pub fn results(&self) -> PathBuf {
        self.root.join("results.parquet")
    }
    pub fn config(&self) -> PathBuf {
        self.root.join("run.json")
    }
    /// The lock a process holds while it runs `step`.
    pub fn step_lock(&self, step: Step) -> PathBuf {
        self.root.join("locks").join(format!("{}.lock", step.id().replace('/', "+")))
    }
}

/// Every step of a run in order.
pub fn plan(cfg: &RunConfig) -> Vec<Step> {
    let mut steps = Vec::new();
    if let Some(v) = &cfg.value {
        let sources = sources(cfg);
        for &source in &sources {
            steps.push(Step::TrainSource { source });
            steps.push(Step::SampleSource { source });
        }
        let mut base_done = false;
        for &seed in &v.seeds {
            for &num_real in &v.num_real {
                for &num_synthetic in &v.num_synthetic {
                    if num_real + num_synthetic == 0 {
                        // Nothing to train on: the base model, evaluated once.
                        if !base_done {
                            steps.push(Step::Cell { num_real, num_synthetic, source: None, seed });
                            base_done = true;
                        }
                    } else if num_synthetic == 0 {
                        steps.push(Step::Cell { num_real, num_synthetic, source: None, seed });
                    } else {
                        for &source in &sources {
                            steps.push(Step::Cell { num_real, num_synthetic, source: Some(source), seed });
                        }
                    }
                }
            }
        }
        return steps;
    }
    let run = cfg.generation_loop();
    for &chain in &run.chains {
        for workflow in cfg.workflows() {
            for generation in 1..=run.generations {
                steps.push(Step::Train { workflow, chain, generation });
                if generation < run.generations {
                    steps.push(Step::Sample { workflow, chain, generation });
                }
            }
        }
    }
    steps
}

impl Step {
    /// The step's name on the command line (`thrive run --step ID`) and in Slurm: its kind, then
    /// where it writes, e.g. `train/replace/chain-1/gen-2` or `cell/source-0/seed-0/real-8-synthetic-16`.
    pub fn id(&self) -> String {
        match *self {
            Step::Train { workflow, chain, generation } => format!("train/{workflow}/chain-{chain}/gen-{generation}"),
            Step::Sample { workflow, chain, generation } => format!("sample/{workflow}/chain-{chain}/gen-{generation}"),
            Step::TrainSource { source } => format!("train-source/{}", source.dir_name()),
            Step::SampleSource { source } => format!("sample-source/{}", source.dir_name()),
            Step::Cell { num_real, num_synthetic, source, seed } => {
                let path = RunDir { root: PathBuf::new() }.cell(num_real, num_synthetic, source, seed);
                let rel = path.strip_prefix("models/value").unwrap_or(&path);
                let parts: Vec<_> = rel.iter().map(|p| p.to_string_lossy()).collect();
                format!("cell/{}", parts.join("/"))
            }
        }
    }
}

/// The steps `step` needs done before it can run (the real data's import, which every step needs,
/// is done by whichever step comes first): generation t's fine-tune after generation t−1's
/// sampling of its workflow and chain, a sampling after its model's fine-tune, a value-grid cell
/// after its source's sampling.
pub fn dependencies(step: Step) -> Vec<Step> {
    match step {
        Step::Train { workflow, chain, generation } if generation > 1 => {
            vec![Step::Sample { workflow, chain, generation: generation - 1 }]
        }
        Step::Train { .. } | Step::TrainSource { .. } | Step::Cell { source: None, .. } => Vec::new(),
        Step::Sample { workflow, chain, generation } => vec![Step::Train { workflow, chain, generation }],
        Step::SampleSource { source } => vec![Step::TrainSource { source }],
        Step::Cell { source: Some(source), .. } => vec![Step::SampleSource { source }],
    }
}

/// The step of the plan with this id, or an error naming it.
pub fn find_step(cfg: &RunConfig, id: &str) -> Result<Step> {
    plan(cfg).into_iter().find(|s| s.id() == id).ok_or_else(|| {
        Error::Invalid(format!("step `{id}` is not in the plan (`thrive run RUN.toml --list-steps` lists them)"))
    })
}

/// The value grid's sources: every seed with every source quality (none for a generation loop).
pub fn sources(cfg: &RunConfig) -> Vec<SourceId> {
    let Some(v) = &cfg.value else { return Vec::new() };
    let qualities = v.qualities();
    v.sources
        .iter()
        .flat_map(|&seed| {
            qualities.iter().enumerate().map(move |(i, &quality)| SourceId { seed, index: i as u32, quality })
        })
        .collect()
}

/// Where a model step writes (its `done.json` marks it complete); `None` for sampling steps.
pub fn model_dir(dir: &RunDir, step: Step) -> Option<PathBuf> {
    match step {
        Step::Train { workflow, chain, generation } => Some(dir.model(workflow, chain, generation)),
        Step::TrainSource { source } => Some(dir.source_model(source)),
        Step::Cell { num_real, num_synthetic, source, seed } => Some(dir.cell(num_real, num_synthetic, source, seed)),
        Step::Sample { .. } | Step::SampleSource { .. } => None,
    }
}

/// The pool batch a sampling step writes.
fn sample_key(step: Step) -> Option<BatchKey> {
    match step {
        Step::Sample { workflow, chain, generation } => Some(BatchKey::synthetic(workflow, chain, generation)),
        Step::SampleSource { source } => Some(source.batch()),
        _ => None,
    }
}

/// Whether a step's artifact is complete.
pub fn is_done(dir: &RunDir, pool: Option<&Pool>, step: Step) -> bool {
    match (model_dir(dir, step), sample_key(step)) {
        (Some(model), _) => model.join("done.json").exists(),
        (None, Some(key)) => pool.is_some_and(|p| p.contains(&key)),
        (None, None) => false,
    }
}

fn read_done(path: &Path) -> Result<ModelDone> {
    let text = std::fs::read_to_string(path).map_err(io(path))?;
    serde_json::from_str(&text).map_err(|e| Error::Invalid(format!("{}: {e}", path.display())))
}

fn write_json<T: Serialize>(path: &Path, value: &T) -> Result<()> {
    let text = serde_json::to_string_pretty(value).map_err(|e| Error::Invalid(e.to_string()))?;
    thrive_core::fsutil::write_atomic(path, |w| {
        std::io::Write::write_all(w, text.as_bytes())
            .map_err(|e| thrive_core::Error::Io { path: path.into(), source: e })
    })?;
    Ok(())
}

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
pub fn check_recorded(cfg: &RunConfig, dir: &RunDir) -> Result<bool> {
    let recorded = dir.config();
    if !recorded.exists() {
        return Ok(false);
    }
    let text = std::fs::read_to_string(&recorded).map_err(io(&recorded))?;
    let mut before: RunConfig =
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
pub fn run(cfg: &RunConfig) -> Result<ResultsTable> {
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
    fn new(cfg: &RunConfig) -> Result<Prepared> {
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
        cfg: &'a RunConfig,
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
fn worker_devices(cfg: &RunConfig, opts: &RunOptions, workers: usize) -> Result<Vec<(Device, Precision)>> {
    let (device, dtype) = thrive_sft::device_for(&cfg.device, cfg.dtype.as_deref())?;
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
pub fn run_with(cfg: &RunConfig, opts: &RunOptions) -> Result<ResultsTable> {
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

/// How many steps the latest `thrive run` of a directory ran at a time (`{"jobs": N}`).
pub const JOBS_FILE: &str = "jobs.json";

/// The parallel run's bookkeeping, by index into the plan.
struct Schedule {
    done: Vec<bool>,
    started: Vec<bool>,
    failed: Option<Error>,
}

/// Runs exactly one step of the plan (`thrive run --step ID`), idempotently: a done step is a
/// no-op, a step killed before resumes from its checkpoint. The steps it depends on must be done.
/// Returns whether it ran.
pub fn run_step(cfg: &RunConfig, id: &str) -> Result<bool> {
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
    let (device, dtype) = thrive_sft::device_for(&cfg.device, cfg.dtype.as_deref())?;
    let multi = indicatif::MultiProgress::new();
    let ran = run_one(&prepared.context(cfg, &device, dtype, &multi), step)?;
    write_results(cfg, dir, false)?;
    Ok(ran)
}

/// Writes results.parquet from every finished model (under a lock, so that of many processes
/// finishing steps the last to write has seen every step); with `always` false, not while it
/// would be empty.
fn write_results(cfg: &RunConfig, dir: &RunDir, always: bool) -> Result<ResultsTable> {
    let _lock = FileLock::acquire(&dir.root.join("results.lock"), Duration::from_secs(120))?;
    let table = results(cfg, dir)?;
    if always || !table.runs.is_empty() {
        table.write_parquet(&dir.results())?;
    }
    Ok(table)
}

/// Runs one step unless it is done; returns whether it ran.
fn run_one(ctx: &Context<'_>, step: Step) -> Result<bool> {
    let (cfg, dir) = (ctx.cfg, ctx.dir);
    if is_done(dir, Some(&Pool::open(dir.pool())?), step) {
        return Ok(false);
    }
    let _lock = step_lock(dir, step)?;
    // Checked again under the lock: another process may have finished it meanwhile.
    let pool = Pool::open(dir.pool())?;
    if is_done(dir, Some(&pool), step) {
        return Ok(false);
    }
    let base_dir = ctx.base_dir;
    let tokenizer_path = ctx.tokenizer_path;
    match step {
        Step::Train { workflow, chain, generation } => {
            let rows = pool.view(&View::training(workflow, chain, generation))?.examples()?;
            // The paper fine-tunes every generation from the base model; optionally from the previous one.
            let from = if ctx.continues(generation) {
                dir.model(workflow, chain, generation - 1).join("merged")
            } else {
                base_dir.clone()
            };
            ctx.fit(step, rows, &from, (chain, generation), cfg.generation_loop().continue_from_previous)?;
        }
        Step::TrainSource { source } => {
            let mut rows = pool.read_batch(&BatchKey::real("train"))?;
            rows.truncate(source.quality.real.unwrap_or(usize::MAX));
            ctx.fit(step, rows, base_dir, (source.seed, 1), false)?;
        }
        Step::Cell { num_real: 0, num_synthetic: 0, .. } => ctx.evaluate_base(step)?,
        Step::Cell { num_real, num_synthetic, source, seed } => {
            let v = cfg.value.as_ref().expect("cells only in value grids");
            let pick = if v.pick == "random" { Pick::Random { seed } } else { Pick::First };
            let rows = match source {
                Some(s) => {
                    let view = View::Mix { num_real, num_synthetic, synthetic: s.batch(), pick, filter: None };
                    pool.view(&view)?.examples()?
                }
                None => first_real(&pool, num_real, pick)?,
            };
            ctx.fit(step, rows, base_dir, (seed, 1), false)?;
        }
        Step::Sample { workflow, chain, generation } => {
            drop(pool);
            let from = if ctx.continues(generation) {
                dir.model(workflow, chain, generation - 1).join("merged")
            } else {
                base_dir.clone()
            };
            let target = Target {
                key: BatchKey::synthetic(workflow, chain, generation),
                call_seed: Seeds::new(chain).derive_u64(Stream::Synthesize(generation)),
                temperature: cfg.sampling.temperature,
            };
            ctx.sample(&dir.model(workflow, chain, generation), &from, target, tokenizer_path)?;
        }
        Step::SampleSource { source } => {
            drop(pool);
            // Every quality of a seed samples with the same random stream (common random
            // numbers: the sources differ by their quality alone).
            let call = Seeds::new(source.seed).derive_u64(Stream::Synthesize(1));
            let target = Target {
                key: source.batch(),
                call_seed: call,
                temperature: source.quality.temperature.unwrap_or(cfg.sampling.temperature),
            };
            ctx.sample(&dir.source_model(source), base_dir, target, tokenizer_path)?;
        }
    }
    Ok(true)
}

/// Pool rows as fine-tuning examples (text only; provenance stays in the pool).
pub fn to_sft(rows: Vec<thrive_pool::Example>) -> Vec<Example> {
    rows.into_iter().map(|e| Example { prompt: e.prompt, response: e.response }).collect()
}

/// Imports the real train and validation splits, each once.
fn import_real(cfg: &RunConfig, dir: &RunDir, tokenizer: &Path) -> Result<()> {
    let missing: Vec<&str> = {
        let pool = if dir.pool().join("pool.json").exists() { Some(Pool::open(dir.pool())?) } else { None };
        ["train", "validation"]
            .into_iter()
            .filter(|s| !pool.as_ref().is_some_and(|p| p.contains(&BatchKey::real(s))))
            .collect()
    };
    if missing.is_empty() {
        return Ok(());
    }
    let source = match (&cfg.data.helpsteer2, &cfg.data.hub) {
        (Some(folder), _) => HubSource::Local(folder.clone()),
        (None, Some(repo)) => HubSource::Hub { repo: repo.clone() },
        (None, None) => return Err(Error::Invalid("data: no source".into())),
    };
    let counter = TokenCounter::from_file(tokenizer)?;
    let mut writer = PoolWriter::open(dir.pool())?;
    for split in missing {
        let file = source.split_file(split)?;
        let mut rows = thrive_pool::import_file(&file, &ColumnMapping::default(), "helpsteer2", split)?;
        counter.annotate(&mut rows)?;
        match writer.write_batch(&BatchKey::real(split), &rows) {
            Ok(_) => tracing::info!("imported {} {split} rows from {}", rows.len(), file.display()),
            // Another job of the run imported it first (the same rows).
            Err(_) if Pool::open(dir.pool())?.contains(&BatchKey::real(split)) => {}
            Err(e) => return Err(e.into()),
        }
    }
    Ok(())
}

/// A step's label for the progress bar.
fn describe(step: Step) -> String {
    match step {
        Step::Train { workflow, chain, generation } => {
            format!("{workflow} chain {chain}: training generation {generation}")
        }
        Step::Sample { workflow, chain, generation } => {
            format!("{workflow} chain {chain}: sampling from generation {generation}")
        }
        Step::TrainSource { source } => format!("value grid: training source {source}"),
        Step::SampleSource { source } => format!("value grid: sampling source {source}"),
        Step::Cell { num_real, num_synthetic, source, seed } => {
            let source = source.map_or("-".into(), |s| s.to_string());
            format!("value grid: {num_real} real + {num_synthetic} synthetic (source {source}, seed {seed})")
        }
    }
}

/// The first `n` real training rows, or `n` of them at random.
fn first_real(pool: &Pool, n: usize, pick: Pick) -> Result<Vec<thrive_pool::Example>> {
    let key = BatchKey::real("train");
    Ok(match pick {
        Pick::First => pool.read_batch(&key)?.into_iter().take(n).collect(),
        // The Mix view's random real rows with no synthetic ones.
        Pick::Random { .. } => {
            let view = View::Mix { num_real: n, num_synthetic: 0, synthetic: key, pick, filter: None };
            pool.view(&view)?.examples()?
        }
    })
}

/// Where a sampling step writes, and how it samples.
struct Target {
    key: BatchKey,
    call_seed: u64,
    temperature: f64,
}

/// What every step of a run shares.
struct Context<'a> {
    cfg: &'a RunConfig,
    dir: &'a RunDir,
    base_dir: &'a PathBuf,
    tokenizer_path: &'a Path,
    enc: &'a TextEncoder,
    valid: &'a [Example],
    device: &'a Device,
    dtype: Precision,
    multi: &'a indicatif::MultiProgress,
}

impl Context<'_> {
    /// Whether generation `generation` starts from the previous generation's model.
    fn continues(&self, generation: u32) -> bool {
        self.cfg.generation_loop().continue_from_previous && generation > 1 && self.cfg.value.is_none()
    }

    /// Fine-tunes the model in `from` on `rows` with seed and generation `(seed, generation)`,
    /// evaluates it and writes `done.json` into the step's directory. Value-grid cells keep only
    /// their metrics, not their weights.
    fn fit(
        &self,
        step: Step,
        rows: Vec<thrive_pool::Example>,
        from: &Path,
        (seed, generation): (u64, u32),
        export_merged: bool,
    ) -> Result<()> {
        let out = model_dir(self.dir, step).expect("a model step");
        let started = std::time::Instant::now();
        let synthetic = rows.iter().filter(|r| r.source() == "synthetic").count();
        let train_set = to_sft(rows);
        if train_set.is_empty() {
            return Err(Error::Invalid(format!("{}: empty training set", describe(step))));
        }
        let mut train_cfg = self.cfg.train_config(seed, generation).map_err(Error::Invalid)?;
        if let Step::TrainSource { source } = step {
            train_cfg.epochs = source.quality.epochs.unwrap_or(train_cfg.epochs);
        }
        let mut model = match train_cfg.mode {
            thrive_sft::Mode::Full => Gemma::load_full(from, self.dtype, self.device)?,
            thrive_sft::Mode::Lora(_) => Gemma::load(from, self.dtype, self.device)?,
        };
        let resume = std::fs::read_dir(&out)
            .map(|d| d.flatten().any(|e| e.file_name().to_string_lossy().starts_with("checkpoint-")))
            .unwrap_or(false);
        let cell = matches!(step, Step::Cell { .. });
        let control = RunControl {
            resume,
            stop_after: None,
            export_merged,
            skip_export: cell,
            progress: Some(self.multi.clone()),
        };
        let outcome = train(&mut model, self.enc, (&train_set, self.valid), &train_cfg, &out, control)?;
        let first = outcome.metrics.iter().find_map(|m| m.eval_loss).unwrap_or(f64::NAN);
        let last = outcome.metrics.iter().rev().find_map(|m| m.eval_loss).unwrap_or(f64::NAN);
        let train_loss = outcome.metrics.iter().rev().find_map(|m| m.train_loss).unwrap_or(f64::NAN);
        let done = ModelDone {
            eval_loss: last,
            eval_loss_before: first,
            train_loss,
            train_examples: train_set.len() - outcome.dropped_train,
            synthetic_examples: synthetic,
            steps: outcome.total_steps,
            seconds: started.elapsed().as_secs_f64(),
        };
        write_json(&out.join("done.json"), &done)?;
        if cell {
            // A finished cell needs no checkpoint to resume from.
            for entry in std::fs::read_dir(&out).map_err(io(&out))?.flatten() {
                if entry.file_name().to_string_lossy().starts_with("checkpoint-") {
                    std::fs::remove_dir_all(entry.path()).map_err(io(&entry.path()))?;
                }
            }
        }
        tracing::info!(step = %describe(step), eval_loss = last, "trained");
        Ok(())
    }

    /// The value grid's empty cell: the base model's validation loss.
    fn evaluate_base(&self, step: Step) -> Result<()> {
        let out = model_dir(self.dir, step).expect("a model step");
        std::fs::create_dir_all(&out).map_err(io(&out))?;
        let started = std::time::Instant::now();
        let model = Gemma::load(self.base_dir, self.dtype, self.device)?;
        let train_cfg = self.cfg.train_config(0, 1).map_err(Error::Invalid)?;
        let (valid, _) = self.enc.encode_all(self.valid, train_cfg.max_len, train_cfg.response_only)?;
        let loss = evaluate(&model, self.enc, &valid, train_cfg.micro_batch)?;
        let done = ModelDone {
            eval_loss: loss,
            eval_loss_before: loss,
            train_loss: f64::NAN,
            train_examples: 0,
            synthetic_examples: 0,
            steps: 0,
            seconds: started.elapsed().as_secs_f64(),
        };
        write_json(&out.join("done.json"), &done)
    }

    /// Samples `sampling.count` rows from the model trained in `model_dir` (on top of `base`)
    /// into the pool batch `target.key`.
    fn sample(&self, model_dir: &Path, base: &Path, target: Target, tokenizer: &Path) -> Result<()> {
        let started = std::time::Instant::now();
        let BatchKey::Synthetic { workflow: name, chain, generation } = target.key.clone() else {
            unreachable!("sampling writes synthetic batches")
        };
        let cfg = self.cfg;
        let lora = match cfg.train_config(0, 1).map_err(Error::Invalid)?.mode {
            thrive_sft::Mode::Lora(l) => Some(l),
            thrive_sft::Mode::Full => None,
        };
        let (mut model, weights_dir, weights) = match lora {
            Some(lora) => {
                let mut model = Gemma::load(base, self.dtype, self.device)?;
                let weights = model_dir.join("adapter/adapter_model.safetensors");
                model.add_lora(&lora, &mut Seeds::new(0).stream(Stream::Training(0)))?;
                model.load_lora_weights(&weights)?;
                (model, model_dir.join("adapter"), weights)
            }
            None => {
                let merged = model_dir.join("merged");
                (Gemma::load(&merged, self.dtype, self.device)?, merged.clone(), merged.join("model.safetensors"))
            }
        };
        model.pack_for_decoding()?;
        let mode = match cfg.sampling.mode.as_str() {
            "prompted" => {
                let pool = Pool::open(self.dir.pool())?;
                Mode::Prompted {
                    prompts: pool.read_batch(&BatchKey::real("train"))?.into_iter().map(|e| e.prompt).collect(),
                }
            }
            _ => Mode::Unconditional {
                strip_quirk: cfg.sampling.strip_quirk,
                max_attempts: cfg.sampling.max_attempts.unwrap_or(4 * cfg.sampling.count as u64 + 4096),
            },
        };
        let origin = Origin {
            workflow: name.clone(),
            chain,
            generation,
            // Relative to the pool, so that pools of one job started in two places are the same.
            base_model: recorded_model(&cfg.model, &self.dir.pool()),
            adapter_path: Some(relative_to(&weights_dir, &self.dir.pool())),
            adapter_sha256: Some(file_sha256(&weights)?),
            call_seed: target.call_seed,
        };
        let mut settings = cfg.sampler_settings().map_err(Error::Invalid)?;
        settings.temperature = target.temperature;
        let mut out = synthesize(&model, self.enc, &mode, cfg.sampling.count, &settings, &origin, Some(self.multi))?;
        TokenCounter::from_file(tokenizer)?.annotate(&mut out.rows)?;
        PoolWriter::open(self.dir.pool())?.write_batch(&target.key, &out.rows)?;
        // The step's time, for `thrive status`'s ETA (beside the pool: pools hold no timings).
        let timing = SampleDone { rows: out.rows.len(), seconds: started.elapsed().as_secs_f64() };
        write_json(&model_dir.join(SAMPLE_DONE), &timing)?;
        tracing::info!(kind = name, chain, generation, rows = out.rows.len(), rejections = ?out.rejections, "sampled");
        Ok(())
    }
}

/// The results of every finished model, as a tidy table: for the generation loop setting `lm`,
/// one run per workflow and chain with its generations in order up to the first unfinished one;
/// for the value grid setting `lm-value`, one row per finished cell (no workflow; `source` is -1
/// for cells without synthetic rows).
pub fn results(cfg: &RunConfig, dir: &RunDir) -> Result<ResultsTable> {
    let metrics_of = |d: ModelDone| {
        [
            d.eval_loss,
            d.eval_loss_before,
            d.train_loss,
            d.train_examples as f64,
            d.synthetic_examples as f64 / d.train_examples.max(1) as f64,
        ]
    };
    let mode = if cfg.sft.full { "full" } else { "lora" };
    // Relative to the run directory (a Hub id as written): the same results wherever it ran.
    let model = recorded_model(&cfg.model, &dir.root);
    if cfg.value.is_some() {
        // A source's real rows when the run file leaves source_real to its default: all of them.
        let train_rows = match Pool::open(dir.pool()) {
            Ok(pool) if pool.contains(&BatchKey::real("train")) => pool.entry(&BatchKey::real("train"))?.rows as i64,
            _ => -1,
        };
        let mut table = ResultsTable::new("lm-value", METRICS.iter().map(|m| m.to_string()).collect());
        for step in plan(cfg) {
            let Step::Cell { num_real, num_synthetic, source, seed } = step else { continue };
            let path = dir.cell(num_real, num_synthetic, source, seed).join("done.json");
            if !path.exists() {
                continue;
            }
            let params = Params::new()
                .with("model", model.as_str())
                .with("mode", mode)
                .with("num_real", num_real)
                .with("num_synthetic", num_synthetic)
                .with("source", source.map_or(-1, |s| s.seed as i64))
                // The source's quality; -1 (NaN) for cells without synthetic rows.
                .with("source_real", source.map_or(-1, |s| s.quality.real.map_or(train_rows, |r| r as i64)))
                .with("source_epochs", source.map_or(-1, |s| s.quality.epochs.unwrap_or(cfg.sft.epochs) as i64))
                .with(
                    "source_temperature",
                    source.map_or(f64::NAN, |s| s.quality.temperature.unwrap_or(cfg.sampling.temperature)),
                );
            table.push(RunRecord { params, workflow: None, seed, metrics: metrics_of(read_done(&path)?).to_vec() })?;
        }
        return Ok(table);
    }
    let run = cfg.generation_loop();
    let mut table = ResultsTable::new("lm", METRICS.iter().map(|m| m.to_string()).collect());
    for &chain in &run.chains {
        for workflow in cfg.workflows() {
            let mut metrics = Vec::new();
            for generation in 1..=run.generations {
                let path = dir.model(workflow, chain, generation).join("done.json");
                if !path.exists() {
                    break;
                }
                metrics.extend(metrics_of(read_done(&path)?));
            }
            if metrics.is_empty() {
                continue;
            }
            let params =
                Params::new().with("model", model.as_str()).with("n", cfg.sampling.count as i64).with("mode", mode);
            table.push(RunRecord { params, workflow: Some(workflow), seed: chain, metrics })?;
        }
    }
    Ok(table)
}
