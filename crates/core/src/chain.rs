//! The generation loop of the toy settings, over a small [`Setting`] trait.
//!
//! ```text
//! D_0 <- real data (stream RealData)            pool <- D_0
//! for t in 1..=T:
//!     Replace, Accumulate:     M_t <- fit(all of pool)
//!     Accumulate-Subsample:    M_t <- fit(pool[k distinct uniform indices])   (stream Subsample(t))
//!     record evaluate(M_t)
//!     S_t <- sample(M_t, n)                        (stream Synthesize(t))
//!     Replace: pool <- S_t          otherwise: pool <- pool ++ S_t
//! ```
//!
//! This is the loop of the paper's code (protocol §1). Beyond the paper,
//! [`ChainConfig::retained_real`] keeps the first R real points in every
//! generation's training set besides the synthetic ones: under Replace the pool
//! becomes D_0[..R] ++ S_t; under Accumulate-Subsample those R points are
//! always selected and the subsample is drawn from the rest of the pool; under
//! Accumulate every real point is already in every training set.

use crate::error::{Error, Result};
use crate::seed::{Rng, Seeds, Stream};
use crate::workflow::{subsample_indices, SubsampleSize, Workflow};

/// Which part of the pool a fit uses.
#[derive(Debug, Clone, Copy)]
pub enum Selection<'a> {
    /// Every point in the pool.
    All,
    /// The points at these indices (pool insertion order).
    Indices(&'a [usize]),
}

/// A setting run by the toy generation loop: the Gaussian and KDE settings.
///
/// A pool must keep its examples in insertion order, because subsample
/// indices refer to that order (real data first, then S_1, S_2, ...).
pub trait Setting: Sync {
    /// Per-run state drawn once from the run's seeds, e.g. a held-out test set.
    type Run: Send;
    /// One batch of data: real data or one generation's synthetic data. Usually
    /// [`crate::Points`]; a setting may instead sample a batch's sufficient statistics
    /// when that is exact in distribution.
    type Batch: Send;
    /// The training pool; it may keep running statistics beside (or instead of) points.
    type Pool: Send;
    /// A fitted model, which may borrow the pool it was fitted on.
    type Model<'a>
    where
        Self: 'a;

    /// Names of the metrics [`Setting::evaluate`] writes, in order.
    fn metric_names(&self) -> Vec<String>;
    /// Draws the run state and the n real training points.
    fn start(&self, seeds: &Seeds, n: usize) -> Result<(Self::Run, Self::Batch)>;
    /// The number of examples in a batch.
    fn batch_len(&self, batch: &Self::Batch) -> usize;
    /// The first `k` examples of a batch (used to keep real points, see [`ChainConfig::retained_real`]).
    fn batch_head(&self, batch: &Self::Batch, k: usize) -> Result<Self::Batch>;
    /// An empty pool for `workflow`.
    fn new_pool(&self, run: &Self::Run, workflow: Workflow) -> Self::Pool;
    /// Appends a batch to the pool.
    fn push(&self, pool: &mut Self::Pool, batch: &Self::Batch) -> Result<()>;
    /// Empties the pool (Replace).
    fn clear(&self, pool: &mut Self::Pool);
    /// The number of points in the pool.
    fn pool_len(&self, pool: &Self::Pool) -> usize;
    /// Fits generation `generation`'s model (from 1) on the selected part of the pool.
    fn fit<'a>(
        &'a self,
        run: &'a Self::Run,
        pool: &'a Self::Pool,
        selection: Selection<'_>,
        generation: u32,
    ) -> Result<Self::Model<'a>>;
    /// Appends the model's metrics to `out` (same order as `metric_names`).
    fn evaluate(&self, run: &Self::Run, model: &Self::Model<'_>, out: &mut Vec<f64>) -> Result<()>;
    /// Samples a batch of `n` synthetic examples from the model.
    fn sample(&self, model: &Self::Model<'_>, n: usize, rng: &mut Rng) -> Result<Self::Batch>;
}

/// How one chain runs.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ChainConfig {
    pub workflow: Workflow,
    /// Real points n, and synthetic points sampled per generation.
    pub n: usize,
    /// Number of generations T (model fits).
    pub generations: u32,
    /// Size of each Accumulate-Subsample training set (the paper: n).
    pub subsample: SubsampleSize,
    /// Real points kept in every training set besides the synthetic ones (0: the paper).
    pub retained_real: usize,
}

impl ChainConfig {
    /// The paper's loop: n points per generation, subsamples of n, no retained real data.
    pub fn paper(workflow: Workflow, n: usize, generations: u32) -> Self {
        ChainConfig { workflow, n, generations, subsample: SubsampleSize::Count(n), retained_real: 0 }
    }

    pub fn validate(&self) -> Result<()> {
        if self.n == 0 {
            return Err(Error::invalid("n", "must be at least 1"));
        }
        if self.generations == 0 {
            return Err(Error::invalid("generations", "must be at least 1"));
        }
        if self.retained_real > self.n {
            return Err(Error::invalid(
                "real",
                format!("cannot keep {} real points out of n = {}", self.retained_real, self.n),
            ));
        }
        Ok(())
    }
}

/// Runs one chain and returns its metrics, `generations × metric_names().len()`, row-major.
pub fn run_chain<S: Setting>(setting: &S, config: &ChainConfig, seeds: &Seeds) -> Result<Vec<f64>> {
    config.validate()?;
    let n_metrics = setting.metric_names().len();
    let mut metrics = Vec::with_capacity(config.generations as usize * n_metrics);
    let (run, real) = setting.start(seeds, config.n)?;
    if setting.batch_len(&real) != config.n {
        return Err(Error::Setting(format!(
            "setting drew {} real examples, expected {}",
            setting.batch_len(&real),
            config.n
        )));
    }
    let retained = (config.retained_real > 0).then(|| setting.batch_head(&real, config.retained_real)).transpose()?;
    let mut pool = setting.new_pool(&run, config.workflow);
    setting.push(&mut pool, &real)?;
    drop(real);

    for t in 1..=config.generations {
        let synthetic = {
            let indices;
            let selection = if config.workflow.subsamples() {
                let r = config.retained_real;
                let rest = setting.pool_len(&pool) - r;
                let k = config.subsample.resolve(rest, t)?;
                let mut rng = seeds.stream(Stream::Subsample(t));
                let mut idx: Vec<usize> = (0..r).collect();
                idx.extend(subsample_indices(&mut rng, rest, k)?.into_iter().map(|i| i + r));
                indices = idx;
                Selection::Indices(&indices)
            } else {
                Selection::All
            };
            let model = setting.fit(&run, &pool, selection, t)?;
            let before = metrics.len();
            setting.evaluate(&run, &model, &mut metrics)?;
            if metrics.len() - before != n_metrics {
                return Err(Error::Setting(format!(
                    "setting wrote {} metrics, expected {n_metrics}",
                    metrics.len() - before
                )));
            }
            if t == config.generations {
                break;
            }
            let mut rng = seeds.stream(Stream::Synthesize(t));
            setting.sample(&model, config.n, &mut rng)?
        };
        if config.workflow.keeps_history() {
            setting.push(&mut pool, &synthetic)?;
        } else {
            setting.clear(&mut pool);
            if let Some(retained) = &retained {
                setting.push(&mut pool, retained)?;
            }
            setting.push(&mut pool, &synthetic)?;
        }
    }
    Ok(metrics)
}
