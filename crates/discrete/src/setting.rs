//! The discrete setting as a thrive-core [`Setting`].

use crate::error::DiscreteError;
use rand::distr::Distribution;
use rand_distr::Binomial;
use thrive_core::workflow::subsample_indices;
use thrive_core::{
    ChainConfig, Draws, Error, Knobs, Params, Result, Rng, RunSpec, Seeds, Selection, Setting, Stream, Workflow,
};

/// Metric columns, in order.
///
/// - `entropy`: −Σ p ln p of the fit (nats, 0 ln 0 = 0).
/// - `entropy_fraction`: entropy over that of the uniform start, ln K.
/// - `zero_outcomes`: outcomes with probability 0 in the fit.
/// - `fixation_generation`: the first generation whose fit has one outcome left, the same on
///   every row of a run; NaN if the run never got there.
pub const METRICS: [&str; 4] = ["entropy", "entropy_fraction", "zero_outcomes", "fixation_generation"];

const ZERO: usize = 2;
const FIXATION: usize = 3;

/// K outcomes with a uniform true distribution.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Discrete {
    pub outcomes: usize,
}

/// One batch: counts per outcome, and the draws in order when they are known (the fixture
/// tests replay numpy's draws; a subsampling pool lays a batch without them out by outcome,
/// which subsamples the same multiset).
/// A batch's draws each count `weight` times in a fit (1 but for real data under `--real-weight`).
#[derive(Debug, Clone, PartialEq)]
pub struct Batch {
    pub counts: Vec<u64>,
    pub draws: Option<Vec<u32>>,
    pub weight: f64,
}

/// Counts per outcome of the pool, and its draws in insertion order when the workflow subsamples;
/// once a draw weighs other than 1, the weighted counts and (subsampling) each draw's weight.
pub struct Pool {
    counts: Vec<u64>,
    total: u64,
    items: Option<Vec<u32>>,
    weighted: Option<Vec<f64>>,
    item_weights: Option<Vec<f64>>,
}

/// A fit: empirical counts (probabilities are counts / total), or, where draws weigh
/// differently (`--real-weight`), weighted counts over their sum.
#[derive(Debug, Clone, PartialEq)]
pub struct DiscreteFit {
    pub counts: Vec<u64>,
    pub total: u64,
    pub weighted: Option<Vec<f64>>,
}

impl Batch {
    /// A batch from individual draws (each below `outcomes`).
    pub fn from_draws(outcomes: usize, draws: Vec<u32>) -> Result<Batch> {
        let mut counts = vec![0u64; outcomes];
        for &d in &draws {
            *counts.get_mut(d as usize).ok_or(DiscreteError::UnknownOutcome { draw: d, outcomes })? += 1;
        }
        Ok(Batch { counts, draws: Some(draws), weight: 1.0 })
    }

    fn counts(counts: Vec<u64>) -> Batch {
        Batch { counts, draws: None, weight: 1.0 }
    }
}

impl DiscreteFit {
    /// A fit to unweighted counts.
    pub fn of_counts(counts: Vec<u64>) -> DiscreteFit {
        let total = counts.iter().sum();
        DiscreteFit { counts, total, weighted: None }
    }

    /// The probabilities of the outcomes.
    pub fn probabilities(&self) -> Vec<f64> {
        self.masses().collect()
    }
    /// The probability of each outcome in turn, without allocating (entropy runs every
    /// generation of runs two thousand generations long).
    fn masses(&self) -> impl Iterator<Item = f64> + '_ {
        let weighted = self.weighted.as_deref().map(|w| (w, w.iter().sum::<f64>()));
        (0..self.counts.len()).map(move |k| match weighted {
            None => self.counts[k] as f64 / self.total as f64,
            Some((w, total)) => w[k] / total,
        })
    }
    /// −Σ p ln p (0 ln 0 = 0).
    pub fn entropy(&self) -> f64 {
        self.masses().filter(|&p| p > 0.0).map(|p| -p * p.ln()).sum()
    }
    /// Outcomes with probability 0.
    pub fn zero_outcomes(&self) -> usize {
        self.counts.iter().filter(|&&c| c == 0).count()
    }
}

/// n draws from the distribution with integer weights `weights` (summing to `total`):
/// one binomial per outcome on the remaining draws and weight, exact and O(K).
fn multinomial(weights: &[u64], total: u64, n: u64, rng: &mut Rng) -> Result<Vec<u64>> {
    let mut out = vec![0u64; weights.len()];
    let (mut rest_n, mut rest_w) = (n, total);
    for (k, &w) in weights.iter().enumerate() {
        if rest_n == 0 {
            break;
        }
        if w == 0 {
            continue;
        }
        let c = if w >= rest_w { rest_n } else { binomial(rest_n, w as f64 / rest_w as f64, rng)? };
        out[k] = c;
        rest_n -= c;
        rest_w -= w;
    }
    Ok(out)
}

/// One draw from Binomial(n, p).
fn binomial(n: u64, p: f64, rng: &mut Rng) -> Result<u64> {
    let dist =
        Binomial::new(n, p).map_err(|e| Error::Numerical { operation: "binomial draw", message: e.to_string() })?;
    Ok(dist.sample(rng))
}

/// n draws from the distribution `probs` (summing to 1 up to rounding): one binomial per
/// outcome on the remaining draws and mass; the last outcome with mass takes the rest.
fn multinomial_probs(probs: &[f64], n: u64, rng: &mut Rng) -> Result<Vec<u64>> {
    let mut out = vec![0u64; probs.len()];
    let last = probs.iter().rposition(|&p| p > 0.0).unwrap_or(0);
    let (mut rest_n, mut rest_p) = (n, 1.0f64);
    for (k, &p) in probs.iter().enumerate() {
        if rest_n == 0 {
            break;
        }
        if p <= 0.0 {
            continue;
        }
        let c = if k == last { rest_n } else { binomial(rest_n, (p / rest_p).clamp(0.0, 1.0), rng)? };
        out[k] = c;
        rest_n -= c;
        rest_p -= p;
    }
    Ok(out)
}

/// The fit's probabilities sharpened by temperature τ (p^(1/τ), renormalised) and cut to the
/// smallest set of most probable outcomes whose mass reaches `top_p` (ties by index), renormalised.
pub fn distorted_probabilities(fit: &DiscreteFit, temperature: f64, top_p: f64) -> Vec<f64> {
    let mut p: Vec<f64> = fit.probabilities();
    if temperature != 1.0 {
        // In logs, so that small probabilities at small τ do not underflow before renormalising.
        let logs: Vec<f64> =
            p.iter().map(|&q| if q > 0.0 { q.ln() / temperature } else { f64::NEG_INFINITY }).collect();
        let max = logs.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        p = logs.iter().map(|l| (l - max).exp()).collect();
        let total: f64 = p.iter().sum();
        p.iter_mut().for_each(|q| *q /= total);
    }
    if top_p < 1.0 {
        let mut order: Vec<usize> = (0..p.len()).collect();
        order.sort_by(|&a, &b| p[b].total_cmp(&p[a]).then(a.cmp(&b)));
        let mut mass = 0.0;
        let mut keep = vec![false; p.len()];
        for &i in &order {
            if mass >= top_p || p[i] == 0.0 {
                break;
            }
            keep[i] = true;
            mass += p[i];
        }
        p.iter_mut().zip(&keep).for_each(|(q, &k)| *q = if k { *q / mass } else { 0.0 });
    }
    p
}

impl Discrete {
    pub fn new(outcomes: usize) -> Result<Self> {
        if outcomes < 2 {
            return Err(Error::invalid("outcomes", format!("{outcomes} outcomes: need at least 2")));
        }
        if outcomes > u32::MAX as usize {
            return Err(Error::invalid("outcomes", format!("{outcomes} outcomes is too many")));
        }
        Ok(Discrete { outcomes })
    }

    /// The metrics of a fit, in [`METRICS`] order (fixation filled in at the end of the run).
    pub fn metrics(&self, fit: &DiscreteFit) -> [f64; 4] {
        let h = fit.entropy();
        [h, h / (self.outcomes as f64).ln(), fit.zero_outcomes() as f64, f64::NAN]
    }

    fn fit_counts(&self, counts: Vec<u64>, weighted: Option<Vec<f64>>) -> Result<DiscreteFit> {
        let fit = DiscreteFit { weighted, ..DiscreteFit::of_counts(counts) };
        if fit.total == 0 {
            return Err(Error::NothingToFit { model: "a distribution", data: "draws" });
        }
        Ok(fit)
    }
}

impl Setting for Discrete {
    type Run = ();
    type Batch = Batch;
    type Pool = Pool;
    type Model<'a> = DiscreteFit;

    fn metric_names(&self) -> Vec<String> {
        METRICS.iter().map(|s| s.to_string()).collect()
    }

    /// n draws from the uniform distribution over K outcomes (the real-data stream).
    fn start(&self, seeds: &Seeds, n: usize) -> Result<((), Batch)> {
        let counts =
            multinomial(&vec![1; self.outcomes], self.outcomes as u64, n as u64, &mut seeds.stream(Stream::RealData))?;
        Ok(((), Batch::counts(counts)))
    }

    fn batch_len(&self, batch: &Batch) -> usize {
        batch.counts.iter().sum::<u64>() as usize
    }

    fn batch_head(&self, _batch: &Batch, _k: usize) -> Result<Batch> {
        Err(Error::invalid("real", "the discrete setting keeps counts, not ordered real draws to keep apart"))
    }

    fn weigh_real(&self, batch: &mut Batch, weight: f64) -> Result<()> {
        batch.weight = weight;
        Ok(())
    }

    fn new_pool(&self, _run: &(), workflow: Workflow) -> Pool {
        Pool {
            counts: vec![0; self.outcomes],
            total: 0,
            items: workflow.subsamples().then(Vec::new),
            weighted: None,
            item_weights: None,
        }
    }

    fn push(&self, pool: &mut Pool, batch: &Batch) -> Result<()> {
        if batch.counts.len() != self.outcomes {
            return Err(DiscreteError::CountsMismatch { counts: batch.counts.len(), outcomes: self.outcomes }.into());
        }
        // Weighted counts and per-draw weights exist only once some draw weighs other than 1.
        if batch.weight != 1.0 && pool.weighted.is_none() {
            pool.weighted = Some(pool.counts.iter().map(|&c| c as f64).collect());
            pool.item_weights = pool.items.as_ref().map(|items| vec![1.0; items.len()]);
        }
        for (p, c) in pool.counts.iter_mut().zip(&batch.counts) {
            *p += c;
        }
        let added = batch.counts.iter().sum::<u64>();
        if let Some(weighted) = &mut pool.weighted {
            weighted.iter_mut().zip(&batch.counts).for_each(|(w, &c)| *w += batch.weight * c as f64);
        }
        if let Some(item_weights) = &mut pool.item_weights {
            item_weights.extend(std::iter::repeat_n(batch.weight, added as usize));
        }
        pool.total += added;
        if let Some(items) = &mut pool.items {
            match &batch.draws {
                Some(draws) => items.extend_from_slice(draws),
                None => {
                    for (k, &c) in batch.counts.iter().enumerate() {
                        items.extend(std::iter::repeat_n(k as u32, c as usize));
                    }
                }
            }
        }
        Ok(())
    }

    fn clear(&self, pool: &mut Pool) {
        pool.counts.iter_mut().for_each(|c| *c = 0);
        pool.total = 0;
        if let Some(items) = &mut pool.items {
            items.clear();
        }
        pool.weighted = None;
        pool.item_weights = None;
    }

    fn pool_len(&self, pool: &Pool) -> usize {
        pool.total as usize
    }

    fn fit<'a>(
        &'a self,
        _run: &'a (),
        pool: &'a Pool,
        selection: Selection<'_>,
        _generation: u32,
    ) -> Result<DiscreteFit> {
        match selection {
            Selection::All => self.fit_counts(pool.counts.clone(), pool.weighted.clone()),
            Selection::Indices(idx) => {
                let items = pool.items.as_ref().ok_or(Error::NoSubsample { data: "draws" })?;
                let mut counts = vec![0u64; self.outcomes];
                for &i in idx {
                    counts[items[i] as usize] += 1;
                }
                let weighted = pool.item_weights.as_ref().map(|w| {
                    let mut weighted = vec![0.0; self.outcomes];
                    for &i in idx {
                        weighted[items[i] as usize] += w[i];
                    }
                    weighted
                });
                self.fit_counts(counts, weighted)
            }
        }
    }

    fn evaluate(&self, _run: &(), model: &DiscreteFit, out: &mut Vec<f64>) -> Result<()> {
        out.extend(self.metrics(model));
        Ok(())
    }

    fn sample(&self, model: &DiscreteFit, n: usize, rng: &mut Rng) -> Result<Batch> {
        let counts = match &model.weighted {
            None => multinomial(&model.counts, model.total, n as u64, rng)?,
            Some(_) => multinomial_probs(&model.probabilities(), n as u64, rng)?,
        };
        Ok(Batch::counts(counts))
    }

    /// A uniform draw without replacement of `k` of the batch's draws (multivariate hypergeometric).
    fn batch_pick(&self, batch: &Batch, k: usize, rng: &mut Rng) -> Result<Batch> {
        let items: Vec<u32> = match &batch.draws {
            Some(draws) => draws.clone(),
            None => {
                batch.counts.iter().enumerate().flat_map(|(o, &c)| std::iter::repeat_n(o as u32, c as usize)).collect()
            }
        };
        let picked = subsample_indices(rng, items.len(), k)?.into_iter().map(|i| items[i]).collect();
        Ok(Batch { weight: batch.weight, ..Batch::from_draws(self.outcomes, picked)? })
    }

    /// m new draws from the uniform truth.
    fn fresh_real(&self, _run: &(), m: usize, rng: &mut Rng) -> Result<Batch> {
        let counts = multinomial(&vec![1; self.outcomes], self.outcomes as u64, m as u64, rng)?;
        Ok(Batch::counts(counts))
    }

    fn check_knobs(&self, knobs: &Knobs, _workflow: Workflow) -> Result<()> {
        if knobs.truncate.is_finite() {
            return Err(Error::invalid("truncate", "is for the continuous settings; use --top-p for discrete"));
        }
        if knobs.selects() {
            return Err(Error::invalid("select-threshold", "the discrete setting has no verifier"));
        }
        Ok(())
    }

    /// Samples from the fit's probabilities under temperature and top-p ([`distorted_probabilities`]).
    fn sample_distorted(
        &self,
        model: &DiscreteFit,
        n: usize,
        knobs: &Knobs,
        rng: &mut Rng,
        draws: &mut Draws,
    ) -> Result<Batch> {
        draws.add(n, n);
        let probs = distorted_probabilities(model, knobs.temperature, knobs.top_p);
        Ok(Batch::counts(multinomial_probs(&probs, n as u64, rng)?))
    }

    /// Under Replace one outcome left is absorbing: the run ends there.
    fn stop(&self, model: &DiscreteFit, workflow: Workflow) -> bool {
        workflow == Workflow::Replace && model.zero_outcomes() + 1 == self.outcomes
    }

    fn finish_run(&self, metrics: &mut [f64]) {
        let m = METRICS.len();
        let first = metrics.chunks_exact(m).position(|row| row[ZERO] as usize + 1 == self.outcomes);
        let value = first.map_or(f64::NAN, |g| (g + 1) as f64);
        for row in metrics.chunks_exact_mut(m) {
            row[FIXATION] = value;
        }
    }
}

/// The mean number of generations until one of K outcomes is left under Replace, from a
/// uniform start (neutral Wright-Fisher, diffusion approximation; protocol §7).
pub fn theory_fixation(outcomes: usize, n: usize) -> f64 {
    let k = outcomes as f64;
    -2.0 * n as f64 * k * (1.0 - 1.0 / k) * (1.0 - 1.0 / k).ln()
}

/// Run specs for every (K, n, workflow, seed): Replace runs until fixation or
/// `max_generations`, the other workflows `generations`. Results columns K, n.
pub fn grid_specs<'s>(
    settings: &'s [Discrete],
    ns: &[usize],
    workflows: &[Workflow],
    seeds: &[u64],
    generations: u32,
    max_generations: u32,
) -> Result<Vec<RunSpec<'s, Discrete>>> {
    let mut specs = Vec::new();
    for setting in settings {
        for &n in ns {
            for &workflow in workflows {
                let t = if workflow == Workflow::Replace { max_generations } else { generations };
                let config = ChainConfig::paper(workflow, n, t);
                config.validate()?;
                // Replace ends near fixation, about 2n generations for small K.
                let expected = if workflow == Workflow::Replace { (2.0 * n as f64).min(t as f64) } else { t as f64 };
                let per_generation = setting.outcomes as f64 + if workflow.subsamples() { n as f64 } else { 0.0 };
                for &seed in seeds {
                    specs.push(RunSpec {
                        setting,
                        params: Params::new().with("K", setting.outcomes).with("n", n),
                        config,
                        seed,
                        cost: expected * per_generation,
                    });
                }
            }
        }
    }
    Ok(specs)
}
