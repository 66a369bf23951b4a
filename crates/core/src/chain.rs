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
//! This is the loop of the paper's code (docs/protocol.md §1). Beyond the paper,
//! [`ChainConfig::retained_real`] keeps the first R real points in every
//! generation's training set besides the synthetic ones: under Replace the pool
//! becomes D_0[..R] ++ S_t; under Accumulate-Subsample those R points are
//! always selected and the subsample is drawn from the rest of the pool; under
//! Accumulate every real point is already in every training set.
//!
//! The other knobs beyond the paper live in [`ChainConfig::knobs`] (see [`crate::knobs`]): with
//! `keep_real` the training set of every generation after the first holds ⌊p·n⌋ real points
//! drawn afresh from D_0 (Replace: `D_0[pick] ++ S_t` with n − ⌊p·n⌋ synthetic points; Accumulate-Subsample:
//! the pick plus a subsample of the synthetic part of the pool); sampling goes through
//! [`Setting::sample_with`], which applies temperature, truncation, top-p and the verifier
//! (counting draws for [`DRAW_METRICS`](crate::DRAW_METRICS)); with `fresh_real` m new real examples
//! ([`Setting::fresh_real`]) join the pool after each synthetic batch; with `real_weight` w every
//! real batch (D_0, the retained and kept points, fresh ones) goes through
//! [`Setting::weigh_real`] before it joins the pool, so it counts w times in every fit.
//!
//! A setting may end a chain early ([`Setting::stop`], an absorbing state), so runs can have
//! fewer than T generations; [`Setting::finish_run`] fills per-run columns at the end.

use crate::draws::Draws;
use crate::error::{Error, Result};
use crate::knobs::Knobs;
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
    /// `k` examples drawn uniformly without replacement from `batch` (`--keep-real`).
    fn batch_pick(&self, _batch: &Self::Batch, _k: usize, _rng: &mut Rng) -> Result<Self::Batch> {
        Err(Error::invalid("keep-real", "this setting cannot keep part of its real data"))
    }
    /// Makes every example of `batch`, real data, count `weight` times a synthetic example in
    /// every fit it joins (`--real-weight`; frequency weights: an integer w fits as w copies).
    /// It sets the weight (calling it twice is calling it once). The chain calls it only for
    /// w ≠ 1. Default: refused.
    fn weigh_real(&self, _batch: &mut Self::Batch, _weight: f64) -> Result<()> {
        Err(Error::invalid("real-weight", "this setting cannot weight its real data"))
    }
    /// `m` new examples from the true distribution (`--fresh-real`).
    fn fresh_real(&self, _run: &Self::Run, _m: usize, _rng: &mut Rng) -> Result<Self::Batch> {
        Err(Error::invalid("fresh-real", "this setting cannot draw fresh real data"))
    }
    /// Refuses knobs this setting does not support under `workflow`, naming the flag.
    /// Default: sampling as fitted only, no fresh real data.
    fn check_knobs(&self, knobs: &Knobs, _workflow: Workflow) -> Result<()> {
        if knobs.fresh() > 0 {
            return Err(Error::invalid("fresh-real", "this setting cannot draw fresh real data"));
        }
        if knobs.distorts_sampling() {
            return Err(Error::invalid("temperature", "this setting samples only as fitted"));
        }
        Ok(())
    }
    /// Samples `n` synthetic examples with the knobs' sampling distortion (temperature,
    /// truncation, top-p, selection), adding the draws it made to `draws` (n without a filter):
    /// exactly [`Setting::sample`] without a distortion, else [`Setting::sample_distorted`].
    fn sample_with(
        &self,
        model: &Self::Model<'_>,
        n: usize,
        knobs: &Knobs,
        rng: &mut Rng,
        draws: &mut Draws,
    ) -> Result<Self::Batch> {
        if knobs.distorts_sampling() {
            return self.sample_distorted(model, n, knobs, rng, draws);
        }
        draws.add(n, n);
        self.sample(model, n, rng)
    }
    /// [`Setting::sample_with`] where the knobs distort sampling. Default: refused, the
    /// setting samples only as fitted.
    fn sample_distorted(
        &self,
        _model: &Self::Model<'_>,
        _n: usize,
        _knobs: &Knobs,
        _rng: &mut Rng,
        _draws: &mut Draws,
    ) -> Result<Self::Batch> {
        Err(Error::invalid("temperature", "this setting samples only as fitted"))
    }
    /// A Replace training set of `n` examples of which `k` are real, picked uniformly from
    /// `real` with `pick`, and the rest sampled with `rng` (`--keep-real`), as batches to push;
    /// the real ones weighted by the knobs' `real_weight` ([`Setting::weigh_real`]).
    #[allow(clippy::too_many_arguments)]
    fn sample_keeping_real(
        &self,
        model: &Self::Model<'_>,
        real: &Self::Batch,
        k: usize,
        n: usize,
        knobs: &Knobs,
        rng: &mut Rng,
        pick: &mut Rng,
        draws: &mut Draws,
    ) -> Result<Vec<Self::Batch>> {
        let mut kept = self.batch_pick(real, k, pick)?;
        if knobs.weighs_real() {
            self.weigh_real(&mut kept, knobs.real_weight)?;
        }
        Ok(vec![kept, self.sample_with(model, n - k, knobs, rng, draws)?])
    }
    /// Whether the chain ends after this model's metrics (an absorbing state, e.g. a discrete
    /// distribution fixed on one outcome under Replace). Default: never; the run has T generations.
    fn stop(&self, _model: &Self::Model<'_>, _workflow: Workflow) -> bool {
        false
    }
    /// Fills per-run metrics once the run's rows are known (`generations × metrics`, row-major),
    /// e.g. the generation at which something first happened. Default: nothing.
    fn finish_run(&self, _metrics: &mut [f64]) {}
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
    /// The loop's other knobs (default: the paper's loop).
    pub knobs: Knobs,
    /// Append [`DRAW_METRICS`](crate::DRAW_METRICS) to every generation's metrics.
    pub record_draws: bool,
}

impl ChainConfig {
    /// The paper's loop: n points per generation, subsamples of n, no retained real data.
    pub fn paper(workflow: Workflow, n: usize, generations: u32) -> Self {
        ChainConfig {
            workflow,
            n,
            generations,
            subsample: SubsampleSize::Count(n),
            retained_real: 0,
            knobs: Knobs::PAPER,
            record_draws: false,
        }
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
        self.knobs.validate()?;
        if self.retained_real > 0 && self.knobs.keep_real > 0.0 {
            return Err(Error::invalid("keep-real", "cannot be combined with --real (the first R real points kept)"));
        }
        Ok(())
    }
}

/// Runs one chain and returns its metrics, `generations × metric_names().len()`, row-major.
pub fn run_chain<S: Setting>(setting: &S, config: &ChainConfig, seeds: &Seeds) -> Result<Vec<f64>> {
    config.validate()?;
    let n_metrics = setting.metric_names().len();
    // Capped: a discrete Replace run allows 100,000 generations but stops at fixation (about 2n),
    // and reserving the whole bound per run cost more time in page zeroing than the run itself.
    let mut metrics = Vec::with_capacity(config.generations.min(4096) as usize * n_metrics);
    // Draws behind each generation's synthetic batch (DRAW_METRICS), interleaved at the end.
    let mut draw_rows: Vec<f64> = Vec::new();
    let mut last = Draws::default();
    let (run, mut real) = setting.start(seeds, config.n)?;
    if setting.batch_len(&real) != config.n {
        return Err(Error::RealCount { got: setting.batch_len(&real), expected: config.n });
    }
    setting.check_knobs(&config.knobs, config.workflow)?;
    let weight = config.knobs.weighs_real().then_some(config.knobs.real_weight);
    let weigh = |batch: &mut S::Batch| weight.map_or(Ok(()), |w| setting.weigh_real(batch, w));
    weigh(&mut real)?;
    let mut retained =
        (config.retained_real > 0).then(|| setting.batch_head(&real, config.retained_real)).transpose()?;
    if let Some(retained) = &mut retained {
        weigh(retained)?;
    }
    let mut pool = setting.new_pool(&run, config.workflow);
    setting.push(&mut pool, &real)?;
    let kept = config.knobs.kept_real_in(config.workflow, config.n);
    let fresh = config.knobs.fresh();
    // D_0 stays at hand only when generations draw from it.
    let real = (kept > 0).then_some(real);

    for t in 1..=config.generations {
        let synthetic = {
            let indices;
            let selection = if config.workflow.subsamples() {
                let r = config.retained_real;
                let rest = setting.pool_len(&pool) - r;
                // Generation 1 trains on D_0 alone: with R points retained that is R plus the
                // n − R others, fewer than a subsample of n.
                let k = if r > 0 && t == 1 { rest } else { config.subsample.resolve(rest, t)? };
                let mut rng = seeds.stream(Stream::Subsample(t));
                let mut idx: Vec<usize> = (0..r).collect();
                if kept > 0 && t > 1 {
                    // ⌊p·k⌋ real points from D_0 (the pool's first n), the rest from the synthetic part.
                    let n_real = config.n;
                    let k_real = config.knobs.kept_real(k);
                    let mut pick = seeds.stream(Stream::KeepReal(t));
                    idx.extend(subsample_indices(&mut pick, n_real, k_real)?);
                    let synthetic = rest - n_real;
                    idx.extend(subsample_indices(&mut rng, synthetic, k - k_real)?.into_iter().map(|i| i + n_real));
                } else {
                    idx.extend(subsample_indices(&mut rng, rest, k)?.into_iter().map(|i| i + r));
                }
                indices = idx;
                Selection::Indices(&indices)
            } else {
                Selection::All
            };
            let model = setting.fit(&run, &pool, selection, t)?;
            let before = metrics.len();
            setting.evaluate(&run, &model, &mut metrics)?;
            if metrics.len() - before != n_metrics {
                return Err(Error::MetricCount { got: metrics.len() - before, expected: n_metrics });
            }
            if config.record_draws {
                draw_rows.extend([last.made as f64, (last.made - last.kept) as f64]);
            }
            // Real data flowing in make no state absorbing.
            if t == config.generations || (kept == 0 && fresh == 0 && setting.stop(&model, config.workflow)) {
                break;
            }
            let mut rng = seeds.stream(Stream::Synthesize(t));
            last = Draws::default();
            let draws = &mut last;
            match &real {
                Some(real) if config.workflow == Workflow::Replace => {
                    let mut pick = seeds.stream(Stream::KeepReal(t + 1));
                    setting.sample_keeping_real(&model, real, kept, config.n, &config.knobs, &mut rng, &mut pick, draws)
                }
                _ => setting.sample_with(&model, config.n, &config.knobs, &mut rng, draws).map(|b| vec![b]),
            }
            .map_err(|e| match e {
                // A filter that cannot fill a batch: say which generation.
                Error::InvalidParameter { name, reason } => Error::invalid(name, format!("generation {t}: {reason}")),
                other => other,
            })?
        };
        let mut synthetic = synthetic;
        if fresh > 0 {
            let mut batch = setting.fresh_real(&run, fresh, &mut seeds.stream(Stream::FreshReal(t + 1)))?;
            weigh(&mut batch)?;
            synthetic.push(batch);
        }
        if config.workflow.keeps_history() {
            for batch in &synthetic {
                setting.push(&mut pool, batch)?;
            }
        } else {
            setting.clear(&mut pool);
            if let Some(retained) = &retained {
                setting.push(&mut pool, retained)?;
            }
            for batch in &synthetic {
                setting.push(&mut pool, batch)?;
            }
        }
    }
    setting.finish_run(&mut metrics);
    if !config.record_draws {
        // Runs that stopped early would otherwise keep their reserve until the results are written.
        metrics.shrink_to_fit();
        return Ok(metrics);
    }
    let mut out = Vec::with_capacity(metrics.len() + draw_rows.len());
    for (row, extra) in metrics.chunks_exact(n_metrics).zip(draw_rows.chunks_exact(2)) {
        out.extend_from_slice(row);
        out.extend_from_slice(extra);
    }
    Ok(out)
}
