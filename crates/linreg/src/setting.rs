//! The linear-regression setting as a thrive-core [`Setting`].

use crate::error::LinRegError;
use faer::linalg::matmul::matmul;
use faer::{Accum, Mat, MatRef, Par};
use rand::Rng as _;
use rand_distr::StandardNormal;
use thrive_core::workflow::subsample_indices;
use thrive_core::{
    draw_until_filled, ChainConfig, Draws, Error, Knobs, Params, Points, Result, Rng, RunSpec, Seeds, Selection,
    Setting, Stream, Workflow,
};

/// Metric columns: `test_mse`, the mean over the noiseless test points of (xᵀ(ŵ − w*))²
/// (the authors' "Mean Squared Error (Test)").
pub const METRICS: [&str; 1] = ["test_mse"];

/// Size of the noiseless test set (the authors' code: 1,000).
pub const TEST_POINTS: usize = 1000;

/// Linear regression with w* ~ N(0, I_d) and label noise of variance σ².
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LinReg {
    pub dim: usize,
    pub sigma2: f64,
    /// Test points per run ([`TEST_POINTS`]).
    pub test_points: usize,
}

/// Per-run state: the true weights, the fixed design, its pseudo-inverse and the test inputs.
pub struct Run {
    w_star: Vec<f64>,
    /// X₀, n × d, row-major.
    design: Points,
    /// pinv(X₀), d × n.
    pinv: Mat<f64>,
    test: Points,
}

/// One batch: labels of every row of the fixed design X₀, in row order, or (`rows` set) new
/// real rows with their labels (`--fresh-real`); `weights`, one per label, where a label
/// counts other than once in a fit (real labels under `--real-weight`).
#[derive(Debug, Clone, PartialEq)]
pub struct Batch {
    pub y: Vec<f64>,
    pub rows: Option<Points>,
    pub weights: Option<Vec<f64>>,
}

/// A pool of label vectors on copies of X₀: their weighted sum per row (what Replace and
/// Accumulate fit), and every label when the workflow subsamples.
pub struct Pool {
    rows: usize,
    copies: usize,
    /// Σ w·y per row of X₀.
    sum: Vec<f64>,
    /// Σ w per row of X₀, once a label weighs other than 1 (else every row has `copies`).
    row_weight: Option<Vec<f64>>,
    /// Fresh real rows: their count, Σ w·xxᵀ and Σ w·x·y (the fit then solves the normal equations).
    fresh: Option<(usize, Mat<f64>, Vec<f64>)>,
    labelled: Option<Labelled>,
}

/// What a subsampling pool keeps of every label, in insertion order.
struct Labelled {
    labels: Vec<f64>,
    /// The row each label belongs to: X₀'s row i for i < n, else fresh row i − n.
    source: Vec<usize>,
    /// Each label's weight, once one weighs other than 1.
    weights: Option<Vec<f64>>,
    fresh_rows: Vec<f64>,
}

/// A fitted linear model; it borrows the run for sampling (the design) and evaluation.
pub struct LinRegFit<'a> {
    run: &'a Run,
    pub weights: Vec<f64>,
}

impl LinReg {
    pub fn new(dim: usize, sigma2: f64) -> Result<Self> {
        if dim == 0 {
            return Err(Error::invalid("dim", "must be at least 1"));
        }
        if !(sigma2 > 0.0 && sigma2.is_finite()) {
            return Err(Error::invalid("sigma2", format!("{sigma2} is not a positive number")));
        }
        Ok(LinReg { dim, sigma2, test_points: TEST_POINTS })
    }

    /// A run from given parts (the fixture tests replay the authors' draws through it).
    pub fn run_from(&self, w_star: Vec<f64>, design: Points, test: Points) -> Result<Run> {
        if w_star.len() != self.dim || design.dim() != self.dim || test.dim() != self.dim {
            return Err(LinRegError::Dimensions {
                dim: self.dim,
                w_star: w_star.len(),
                design: design.dim(),
                test: test.dim(),
            }
            .into());
        }
        let x = MatRef::from_row_major_slice(design.as_slice(), design.len(), self.dim);
        let pinv = pseudoinverse(x)?;
        Ok(Run { w_star, design, pinv, test })
    }

    /// Labels of the design rows: X₀w + σε for standard-normal `noise` (one value per row).
    pub fn relabel(&self, run: &Run, weights: &[f64], noise: &[f64]) -> Result<Batch> {
        if noise.len() != run.design.len() {
            return Err(LinRegError::NoiseLength { noise: noise.len(), rows: run.design.len() }.into());
        }
        let sigma = self.sigma2.sqrt();
        let y = run.design.rows().zip(noise).map(|(x, e)| dot(x, weights) + sigma * e).collect();
        Ok(Batch { y, rows: None, weights: None })
    }

    /// The test mean squared error of `weights`.
    pub fn test_mse(&self, run: &Run, weights: &[f64]) -> f64 {
        let delta: Vec<f64> = weights.iter().zip(&run.w_star).map(|(w, s)| w - s).collect();
        run.test.rows().map(|x| dot(x, &delta).powi(2)).sum::<f64>() / run.test.len().max(1) as f64
    }
}

impl Run {
    pub fn w_star(&self) -> &[f64] {
        &self.w_star
    }
    pub fn design(&self) -> &Points {
        &self.design
    }
}

fn dot(a: &[f64], b: &[f64]) -> f64 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

/// The Moore-Penrose pseudo-inverse through a thin SVD, dropping singular values below
/// max(rows, cols)·ε·σ_max (numpy's `pinv` default).
fn pseudoinverse(x: MatRef<'_, f64>) -> Result<Mat<f64>> {
    let svd =
        x.thin_svd().map_err(|e| Error::Numerical { operation: "SVD of the design", message: format!("{e:?}") })?;
    Ok(svd.pseudoinverse())
}

/// The minimum-norm weighted least-squares solution of rows `x` (row-major, k × d), labels `y`
/// and weights `w`: pinv(√W X)·√W y.
fn weighted_solve(x: &[f64], y: &[f64], w: &[f64], d: usize) -> Result<Vec<f64>> {
    let xs = sqrt_weighted_rows(x, w, d);
    let ys: Vec<f64> = y.iter().zip(w).map(|(y, w)| y * w.sqrt()).collect();
    let pinv = pseudoinverse(MatRef::from_row_major_slice(&xs, w.len(), d))?;
    Ok(mat_vec(pinv.as_ref(), &ys))
}

/// Each row of `x` (row-major, dimension `d`) times the square root of its weight: the product
/// of the result with itself is Σ w·xxᵀ.
fn sqrt_weighted_rows(x: &[f64], w: &[f64], d: usize) -> Vec<f64> {
    let mut xs = x.to_vec();
    xs.chunks_exact_mut(d).zip(w).for_each(|(row, w)| row.iter_mut().for_each(|v| *v *= w.sqrt()));
    xs
}

/// `m` (r × c) times the vector `v` (c).
fn mat_vec(m: MatRef<'_, f64>, v: &[f64]) -> Vec<f64> {
    let mut out = Mat::<f64>::zeros(m.nrows(), 1);
    matmul(out.as_mut(), Accum::Replace, m, MatRef::from_column_major_slice(v, v.len(), 1), 1.0, Par::Seq);
    (0..m.nrows()).map(|i| out[(i, 0)]).collect()
}

impl Setting for LinReg {
    type Run = Run;
    type Batch = Batch;
    type Pool = Pool;
    type Model<'a> = LinRegFit<'a>;

    fn metric_names(&self) -> Vec<String> {
        METRICS.iter().map(|s| s.to_string()).collect()
    }

    /// w* from the setup stream (the same for every n), X₀ and then the label noise from the
    /// real-data stream, the test inputs from the test stream.
    fn start(&self, seeds: &Seeds, n: usize) -> Result<(Run, Batch)> {
        let d = self.dim;
        let normals = |rng: &mut Rng, k: usize| -> Vec<f64> { (0..k).map(|_| rng.sample(StandardNormal)).collect() };
        let w_star = normals(&mut seeds.stream(Stream::Setup), d);
        let mut rng = seeds.stream(Stream::RealData);
        let design = Points::new(d, normals(&mut rng, n * d))?;
        let noise = normals(&mut rng, n);
        let test = Points::new(d, normals(&mut seeds.stream(Stream::TestData), self.test_points * d))?;
        let run = self.run_from(w_star, design, test)?;
        let real = self.relabel(&run, &run.w_star, &noise)?;
        Ok((run, real))
    }

    fn batch_len(&self, batch: &Batch) -> usize {
        batch.y.len()
    }

    fn batch_head(&self, _batch: &Batch, _k: usize) -> Result<Batch> {
        Err(Error::invalid("real", "linear regression relabels the whole fixed design; it keeps no real rows apart"))
    }

    fn weigh_real(&self, batch: &mut Batch, weight: f64) -> Result<()> {
        batch.weights = Some(vec![weight; batch.y.len()]);
        Ok(())
    }

    fn new_pool(&self, run: &Run, workflow: Workflow) -> Pool {
        let rows = run.design.len();
        let labelled = workflow.subsamples().then(|| Labelled {
            labels: Vec::new(),
            source: Vec::new(),
            weights: None,
            fresh_rows: Vec::new(),
        });
        Pool { rows, copies: 0, sum: vec![0.0; rows], row_weight: None, fresh: None, labelled }
    }

    fn push(&self, pool: &mut Pool, batch: &Batch) -> Result<()> {
        let weights = batch.weights.as_deref();
        if weights.is_some_and(|w| w.len() != batch.y.len()) {
            return Err(LinRegError::WeightPerLabel.into());
        }
        let weight = |i: usize| weights.map_or(1.0, |w| w[i]);
        if let Some(l) = &mut pool.labelled {
            // Unit weights stay implicit until a label weighs otherwise.
            if weights.is_some() && l.weights.is_none() {
                l.weights = Some(vec![1.0; l.labels.len()]);
            }
            if let Some(w) = &mut l.weights {
                w.extend((0..batch.y.len()).map(weight));
            }
            l.labels.extend_from_slice(&batch.y);
            match &batch.rows {
                Some(rows) => {
                    let first = pool.rows + l.fresh_rows.len() / self.dim;
                    l.source.extend(first..first + rows.len());
                    l.fresh_rows.extend_from_slice(rows.as_slice());
                }
                None => l.source.extend(0..batch.y.len()),
            }
        }
        if let Some(rows) = &batch.rows {
            let d = self.dim;
            let (count, gram, xty) = pool.fresh.get_or_insert_with(|| (0, Mat::zeros(d, d), vec![0.0; d]));
            let xs = match weights {
                None => std::borrow::Cow::Borrowed(rows.as_slice()),
                Some(w) => std::borrow::Cow::Owned(sqrt_weighted_rows(rows.as_slice(), w, d)),
            };
            let x = MatRef::from_row_major_slice(&xs, rows.len(), d);
            matmul(gram.as_mut(), Accum::Add, x.transpose(), x, 1.0, Par::Seq);
            for (i, (row, y)) in rows.rows().zip(&batch.y).enumerate() {
                for (b, v) in xty.iter_mut().zip(row) {
                    *b += weight(i) * v * y;
                }
            }
            *count += rows.len();
            return Ok(());
        }
        if batch.y.len() != pool.rows {
            return Err(LinRegError::LabelCount { labels: batch.y.len(), rows: pool.rows }.into());
        }
        if weights.is_some() && pool.row_weight.is_none() {
            pool.row_weight = Some(vec![pool.copies as f64; pool.rows]);
        }
        match weights {
            None => pool.sum.iter_mut().zip(&batch.y).for_each(|(s, y)| *s += y),
            Some(w) => pool.sum.iter_mut().zip(&batch.y).zip(w).for_each(|((s, y), w)| *s += w * y),
        }
        if let Some(rw) = &mut pool.row_weight {
            rw.iter_mut().enumerate().for_each(|(i, r)| *r += weight(i));
        }
        pool.copies += 1;
        Ok(())
    }

    fn clear(&self, pool: &mut Pool) {
        pool.copies = 0;
        pool.fresh = None;
        pool.row_weight = None;
        pool.sum.iter_mut().for_each(|s| *s = 0.0);
        if let Some(l) = &mut pool.labelled {
            l.labels.clear();
            l.source.clear();
            l.weights = None;
            l.fresh_rows.clear();
        }
    }

    fn pool_len(&self, pool: &Pool) -> usize {
        pool.copies * pool.rows + pool.fresh.as_ref().map_or(0, |f| f.0)
    }

    fn fit<'a>(
        &'a self,
        run: &'a Run,
        pool: &'a Pool,
        selection: Selection<'_>,
        _generation: u32,
    ) -> Result<LinRegFit<'a>> {
        if pool.copies == 0 {
            return Err(Error::NothingToFit { model: "a linear model", data: "data" });
        }
        let d = self.dim;
        let x0 = MatRef::from_row_major_slice(run.design.as_slice(), run.design.len(), d);
        // Rows of equal total weight (always so without --real-weight) fit like unit weights.
        let uniform = pool.row_weight.as_ref().is_none_or(|w| w.iter().all(|&v| v == w[0]));
        let per_row = |i: usize| pool.row_weight.as_ref().map_or(pool.copies as f64, |w| w[i]);
        let weights = match (selection, &pool.fresh) {
            // With fresh rows: the minimum-norm solution pinv(AᵀWA)·AᵀWy of the stacked design A
            // (t copies of X₀ and the fresh rows), AᵀWA = X₀ᵀ diag(Σw per row) X₀ + Σ w·x_f x_fᵀ.
            (Selection::All, Some((_, gram, xty))) => {
                let mut a = gram.clone();
                if uniform {
                    matmul(a.as_mut(), Accum::Add, x0.transpose(), x0, per_row(0), Par::Seq);
                } else {
                    let scaled = Mat::from_fn(run.design.len(), d, |i, j| per_row(i) * x0[(i, j)]);
                    matmul(a.as_mut(), Accum::Add, x0.transpose(), scaled.as_ref(), 1.0, Par::Seq);
                }
                let mut b = mat_vec(x0.transpose(), &pool.sum);
                b.iter_mut().zip(xty).for_each(|(b, f)| *b += f);
                mat_vec(pseudoinverse(a.as_ref())?.as_ref(), &b)
            }
            // pinv of t stacked copies of X₀ is pinv(X₀) applied to the mean label vector; with
            // weights, each row's weighted mean label, weighted by the row's total weight.
            (Selection::All, None) => {
                let mean: Vec<f64> = pool.sum.iter().enumerate().map(|(i, s)| s / per_row(i)).collect();
                if uniform {
                    mat_vec(run.pinv.as_ref(), &mean)
                } else {
                    let w: Vec<f64> = (0..pool.rows).map(per_row).collect();
                    weighted_solve(run.design.as_slice(), &mean, &w, d)?
                }
            }
            (Selection::Indices(idx), _) => {
                let l = pool.labelled.as_ref().ok_or(Error::NoSubsample { data: "labels" })?;
                let mut x = Vec::with_capacity(idx.len() * d);
                for &i in idx {
                    let source = l.source[i];
                    x.extend_from_slice(if source < pool.rows {
                        run.design.row(source)
                    } else {
                        &l.fresh_rows[(source - pool.rows) * d..(source - pool.rows + 1) * d]
                    });
                }
                let y: Vec<f64> = idx.iter().map(|&i| l.labels[i]).collect();
                match &l.weights {
                    None => {
                        let pinv = pseudoinverse(MatRef::from_row_major_slice(&x, idx.len(), d))?;
                        mat_vec(pinv.as_ref(), &y)
                    }
                    Some(w) => weighted_solve(&x, &y, &idx.iter().map(|&i| w[i]).collect::<Vec<_>>(), d)?,
                }
            }
        };
        Ok(LinRegFit { run, weights })
    }

    fn evaluate(&self, run: &Run, model: &LinRegFit<'_>, out: &mut Vec<f64>) -> Result<()> {
        out.push(self.test_mse(run, &model.weights));
        Ok(())
    }

    fn sample(&self, model: &LinRegFit<'_>, n: usize, rng: &mut Rng) -> Result<Batch> {
        if n != model.run.design.len() {
            return Err(LinRegError::Relabel { n, rows: model.run.design.len() }.into());
        }
        let noise: Vec<f64> = (0..n).map(|_| rng.sample(StandardNormal)).collect();
        self.relabel(model.run, &model.weights, &noise)
    }

    /// m new rows x ~ N(0, I_d) with true labels xᵀw* + σε.
    fn fresh_real(&self, run: &Run, m: usize, rng: &mut Rng) -> Result<Batch> {
        let x: Vec<f64> = (0..m * self.dim).map(|_| rng.sample(StandardNormal)).collect();
        let rows = Points::new(self.dim, x)?;
        let sigma = self.sigma2.sqrt();
        let y = rows.rows().map(|x| dot(x, &run.w_star) + sigma * rng.sample::<f64, _>(StandardNormal)).collect();
        Ok(Batch { y, rows: Some(rows), weights: None })
    }

    fn check_knobs(&self, knobs: &Knobs, _workflow: Workflow) -> Result<()> {
        knobs.refuse_top_p("linear regression")
    }

    /// Temperature τ scales the label noise to τσ. A row's noise draw e is redrawn, up to the
    /// knobs' draw limit for the batch, when
    /// - truncation: τ|e| > k (the label's Mahalanobis distance under the fitted model);
    /// - the verifier (Yi et al.): |y − xᵀβ'| > c‖x‖ + √(2/π)σ with β' = w* + b·e₁.
    fn sample_distorted(
        &self,
        model: &LinRegFit<'_>,
        n: usize,
        knobs: &Knobs,
        rng: &mut Rng,
        draws: &mut Draws,
    ) -> Result<Batch> {
        let run = model.run;
        if n != run.design.len() {
            return Err(LinRegError::Relabel { n, rows: run.design.len() }.into());
        }
        let (tau, k) = (knobs.temperature, knobs.truncate);
        let sigma = self.sigma2.sqrt();
        let mut verifier = run.w_star.clone();
        verifier[0] += knobs.verifier_bias;
        let slack = (2.0 / std::f64::consts::PI).sqrt() * sigma;
        // Per design row: the fitted mean, the verifier's bound and its target.
        let rows: Vec<(f64, f64, f64)> = run
            .design
            .rows()
            .map(|x| (dot(x, &model.weights), knobs.select_threshold * dot(x, x).sqrt() + slack, dot(x, &verifier)))
            .collect();
        let mut noise = Vec::with_capacity(n);
        draw_until_filled(knobs, n, draws, |i| {
            let (mean, bound, target) = rows[i];
            let e: f64 = rng.sample(StandardNormal);
            if tau * e.abs() > k || (knobs.selects() && (mean + sigma * tau * e - target).abs() > bound) {
                return false;
            }
            noise.push(tau * e);
            true
        })?;
        self.relabel(run, &model.weights, &noise)
    }

    /// The training set stays the fixed design: ⌊p·n⌋ rows picked uniformly keep their real
    /// labels (and their weight under `--real-weight`), the others get synthetic ones (all n are
    /// sampled, so the noise stream does not depend on the pick).
    fn sample_keeping_real(
        &self,
        model: &LinRegFit<'_>,
        real: &Batch,
        k: usize,
        n: usize,
        knobs: &Knobs,
        rng: &mut Rng,
        pick: &mut Rng,
        draws: &mut Draws,
    ) -> Result<Vec<Batch>> {
        let mut batch = self.sample_with(model, n, knobs, rng, draws)?;
        let picked = subsample_indices(pick, real.y.len(), k)?;
        if knobs.weighs_real() {
            let mut weights = vec![1.0; n];
            picked.iter().for_each(|&i| weights[i] = knobs.real_weight);
            batch.weights = Some(weights);
        }
        for i in picked {
            batch.y[i] = real.y[i];
        }
        Ok(vec![batch])
    }
}

/// The expected test MSE at generation t where a closed form holds (predecessor paper
/// 2404.01413, protocol §6): n > d + 1, Replace t·σ²d/(n − d − 1), Accumulate
/// σ²d/(n − d − 1)·Σ_{k≤t} 1/k². `None` otherwise (Accumulate-Subsample has none).
pub fn theory_mse(dim: usize, n: usize, sigma2: f64, workflow: Workflow, generation: u32) -> Option<f64> {
    if n <= dim + 1 || generation == 0 {
        return None;
    }
    let base = sigma2 * dim as f64 / (n - dim - 1) as f64;
    match workflow {
        Workflow::Replace => Some(generation as f64 * base),
        Workflow::Accumulate => Some(base * (1..=generation).map(|k| 1.0 / (k as f64).powi(2)).sum::<f64>()),
        Workflow::AccumulateSubsample => None,
    }
}

/// Dimensions, sample sizes and noise variances of the authors' sweep (protocol §6).
pub fn paper_grid() -> (Vec<usize>, Vec<usize>, Vec<f64>) {
    (vec![1, 3, 10, 32, 100], vec![10, 32, 100, 316, 1000], vec![0.1, 1.0, 10.0])
}

/// Run specs for every (d, σ², n, workflow, seed) combination, with results columns d, n, sigma2.
pub fn grid_specs<'s>(
    settings: &'s [LinReg],
    ns: &[usize],
    workflows: &[Workflow],
    seeds: &[u64],
    generations: u32,
) -> Result<Vec<RunSpec<'s, LinReg>>> {
    let mut specs = Vec::new();
    for setting in settings {
        for &n in ns {
            for &workflow in workflows {
                let config = ChainConfig::paper(workflow, n, generations);
                config.validate()?;
                let (nd, d2) = ((n * setting.dim) as f64, (n * setting.dim * setting.dim) as f64);
                // One SVD per run, or one per generation when subsampling; O(n·d) per generation besides.
                let cost = if workflow.subsamples() { generations as f64 * d2 } else { d2 + generations as f64 * nd };
                for &seed in seeds {
                    specs.push(RunSpec {
                        setting,
                        params: Params::new().with("d", setting.dim).with("n", n).with("sigma2", setting.sigma2),
                        config,
                        seed,
                        cost,
                    });
                }
            }
        }
    }
    Ok(specs)
}
