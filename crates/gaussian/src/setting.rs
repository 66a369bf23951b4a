//! The Gaussian setting as a thrive-core [`Setting`].

use crate::error::GaussianError;
use crate::moments::Moments;
use crate::spectrum::extreme_eigenvalues;
use faer::linalg::matmul::matmul;
use faer::linalg::matmul::triangular::{self, BlockStructure};
use faer::{Accum, Mat, MatMut, MatRef, Par, Side};
use rand::Rng as _;
use rand_distr::{ChiSquared, StandardNormal};
use thrive_core::workflow::subsample_indices;
use thrive_core::{
    draw_until_filled, ChainConfig, Draws, Error, Knobs, Params, Points, Result, Rng, RunSpec, Seeds, Selection,
    Setting, Stream, Workflow,
};

/// Metric columns, in order.
///
/// - `mean_squared_error`: ‖μ̂ − μ₀‖² (not divided by d), the paper's "Squared Error of Fit Mean".
/// - `det_ratio`: det Σ̂ / det Σ₀ (product of the eigenvalues; 0 or tiny when singular).
/// - `log_det_ratio`: ln det Σ̂ − ln det Σ₀, which cannot underflow (−∞ when singular).
/// - `trace_ratio`: tr Σ̂ / (d σ²).
/// - `fit_variance`: Σ̂[0,0], the fitted variance of the first coordinate. For d = 1 it is the
///   paper's "Fit Covariance (Numerical)"; the paper logs NaN for d > 1, we keep the first
///   coordinate's variance (a column that is never NaN).
/// - `min_eigen_ratio`, `max_eigen_ratio`: the smallest and largest eigenvalue of Σ̂ over σ²
///   (tail metrics: collapse shows in the smallest first). They read the fit only, no random
///   numbers. Under the Cholesky root they come from [`crate::spectrum`], which finds only
///   these two.
pub const METRICS: [&str; 7] = [
    "mean_squared_error",
    "det_ratio",
    "log_det_ratio",
    "trace_ratio",
    "fit_variance",
    "min_eigen_ratio",
    "max_eigen_ratio",
];

/// N(0, σ² I_d) as the true distribution.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Gaussian {
    pub dim: usize,
    pub sigma2: f64,
    /// Always sample synthetic points, even where sampling their moments is exact
    /// (slower; the paper's literal algorithm).
    pub sample_points: bool,
    /// How the sampling square root of Σ̂ is computed.
    pub root: Root,
}

/// The square root of the fitted covariance used for sampling.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Root {
    /// Symmetric eigendecomposition U Λ^½: works for singular covariances.
    Eigen,
    /// Cholesky factor where Σ̂ is numerically positive definite, falling back to the
    /// eigen root where it is not (the default). Same distribution (Σ̂ = R Rᵀ either way); the
    /// factor costs a thirtieth of the decomposition at d = 100, and being triangular it makes
    /// the Wishart draw of a batch's moments cheaper too.
    #[default]
    Cholesky,
}

/// A batch of data: points, or (for synthetic batches when that is exact) only their moments.
#[derive(Debug, Clone)]
pub enum Batch {
    Points(Points),
    /// Real points that each count `.1` times in a fit (`--real-weight`).
    Weighted(Points, f64),
    Moments(Moments),
}

/// A pool: running moments, plus the raw points when a workflow subsamples (and their weights
/// once a weighted batch has joined).
pub struct Pool {
    moments: Moments,
    points: Option<Points>,
    weights: Option<Vec<f64>>,
}

/// A fitted Gaussian: mean, ML covariance and its eigendecomposition.
#[derive(Debug, Clone)]
pub struct GaussianFit {
    pub mean: Vec<f64>,
    pub covariance: Mat<f64>,
    /// det Σ̂ (0, or round-off of either sign, when singular).
    pub det: f64,
    /// ln det Σ̂ (−∞ when singular).
    pub log_det: f64,
    /// The smallest and largest eigenvalue of Σ̂.
    pub eigen_range: (f64, f64),
    /// A square root R with R Rᵀ = Σ̂: U Λ^½ (negative eigenvalues clamped to 0), or the Cholesky factor.
    pub(crate) root: Mat<f64>,
    /// Whether `root` is lower triangular (the Cholesky factor), which products exploit.
    pub(crate) root_lower: bool,
    /// Whether samples must be points (the pool subsamples, or points were asked for).
    sample_points: bool,
}

impl Gaussian {
    pub fn new(dim: usize, sigma2: f64) -> Result<Self> {
        if dim == 0 {
            return Err(Error::invalid("dim", "must be at least 1"));
        }
        if !(sigma2 > 0.0 && sigma2.is_finite()) {
            return Err(Error::invalid("sigma2", format!("{sigma2} is not a positive number")));
        }
        Ok(Gaussian { dim, sigma2, sample_points: false, root: Root::default() })
    }

    /// Fits mean and ML covariance to moments.
    pub fn fit_moments(&self, m: &Moments) -> Result<GaussianFit> {
        if m.count == 0 {
            return Err(Error::NothingToFit { model: "a Gaussian", data: "points" });
        }
        let covariance = m.covariance();
        if self.root == Root::Cholesky {
            if let Ok(llt) = covariance.llt(Side::Lower) {
                let root = llt.L().to_owned();
                let diag: Vec<f64> = (0..self.dim).map(|i| root[(i, i)]).collect();
                let det = diag.iter().map(|l| l * l).product();
                let log_det = 2.0 * diag.iter().map(|l| l.ln()).sum::<f64>();
                return Ok(GaussianFit {
                    mean: m.mean.clone(),
                    det,
                    log_det,
                    eigen_range: extreme_eigenvalues(covariance.as_ref()),
                    covariance,
                    root,
                    root_lower: true,
                    sample_points: self.sample_points,
                });
            }
        }
        let eig = covariance
            .self_adjoint_eigen(Side::Lower)
            .map_err(|e| Error::Numerical { operation: "eigendecomposition", message: format!("{e:?}") })?;
        let s = eig.S().column_vector();
        let eigenvalues: Vec<f64> = (0..self.dim).map(|i| s[i]).collect();
        let u = eig.U();
        let root = Mat::from_fn(self.dim, self.dim, |i, j| u[(i, j)] * eigenvalues[j].max(0.0).sqrt());
        let det = eigenvalues.iter().product();
        let log_det = eigenvalues.iter().map(|l| if *l > 0.0 { l.ln() } else { f64::NEG_INFINITY }).sum();
        Ok(GaussianFit {
            mean: m.mean.clone(),
            covariance,
            det,
            log_det,
            eigen_range: range(&eigenvalues),
            root,
            root_lower: false,
            sample_points: self.sample_points,
        })
    }

    /// The metrics of a fit, in [`METRICS`] order.
    pub fn metrics(&self, fit: &GaussianFit) -> [f64; 7] {
        let d = self.dim as f64;
        let se: f64 = fit.mean.iter().map(|m| m * m).sum();
        let trace: f64 = (0..self.dim).map(|i| fit.covariance[(i, i)]).sum();
        let fit_variance = fit.covariance[(0, 0)];
        [
            se,
            fit.det / self.sigma2.powf(d),
            fit.log_det - d * self.sigma2.ln(),
            trace / (d * self.sigma2),
            fit_variance,
            fit.eigen_range.0 / self.sigma2,
            fit.eigen_range.1 / self.sigma2,
        ]
    }

    /// `n` draws from N(mean, root rootᵀ), row-major.
    pub(crate) fn draw(&self, mean: &[f64], root: MatRef<'_, f64>, n: usize, rng: &mut Rng) -> Points {
        let z: Vec<f64> = (0..n * self.dim).map(|_| rng.sample(StandardNormal)).collect();
        self.transform(mean, root, z)
    }

    /// `n` draws from N(mean, τ² root rootᵀ) that pass the knobs' filters, each draw tested
    /// alone and redrawn if it fails, up to the knobs' draw limit:
    /// - truncation: the Mahalanobis distance under the fitted N(mean, root rootᵀ), τ‖z‖, is at most k;
    /// - the verifier: the Mahalanobis distance under N(μ₀ + b·e₁, Σ₀) = N(b·e₁, σ²I),
    ///   ‖x − b·e₁‖ / σ, is at most c.
    fn draw_filtered(
        &self,
        mean: &[f64],
        root: MatRef<'_, f64>,
        n: usize,
        knobs: &Knobs,
        rng: &mut Rng,
        total: &mut Draws,
    ) -> Result<Points> {
        let d = self.dim;
        let tau = knobs.temperature;
        let scaled = Mat::from_fn(d, d, |i, j| tau * root[(i, j)]);
        let mut out = Points::with_capacity(d, n);
        let mut z = vec![0.0; d];
        let mut x = vec![0.0; d];
        draw_until_filled(knobs, n, total, |_| {
            z.iter_mut().for_each(|v| *v = rng.sample(StandardNormal));
            if tau * z.iter().map(|v| v * v).sum::<f64>().sqrt() > knobs.truncate {
                return false;
            }
            for (i, xi) in x.iter_mut().enumerate() {
                *xi = mean[i] + (0..d).map(|j| scaled[(i, j)] * z[j]).sum::<f64>();
            }
            if knobs.selects() {
                let dist2: f64 = x
                    .iter()
                    .enumerate()
                    .map(|(i, v)| (v - if i == 0 { knobs.verifier_bias } else { 0.0 }).powi(2))
                    .sum();
                if (dist2 / self.sigma2).sqrt() > knobs.select_threshold {
                    return false;
                }
            }
            out.push_row(&x);
            true
        })?;
        Ok(out)
    }

    /// mean + root · z for each row z of standard normals (row-major, n × d).
    fn transform(&self, mean: &[f64], root: MatRef<'_, f64>, z: Vec<f64>) -> Points {
        let d = self.dim;
        let n = z.len() / d;
        let mut out = vec![0.0; n * d];
        // Row-major n × d buffers are column-major d × n matrices: Xᵀ = root · Zᵀ.
        let zt = MatRef::from_column_major_slice(&z, d, n);
        let xt = MatMut::from_column_major_slice_mut(&mut out, d, n);
        matmul(xt, Accum::Replace, root, zt, 1.0, Par::Seq);
        for row in out.chunks_exact_mut(d) {
            for (x, m) in row.iter_mut().zip(mean) {
                *x += m;
            }
        }
        Points::new(d, out).expect("n·d values")
    }

    /// The mean and M2 of `n` draws from N(mean, root rootᵀ), sampled directly.
    ///
    /// Exact in distribution (n > d): the sample mean is N(μ, Σ/n) and, independently,
    /// M2 is Wishart(Σ, n − 1) = (R L)(R L)ᵀ with L from Bartlett's decomposition
    /// (L_ii² ~ χ²(n − i) for i = 1..d, L_ij ~ N(0, 1) below the diagonal). This costs
    /// O(d³) instead of O(n d²) and is what keeps Accumulate and Replace fast.
    fn draw_moments(&self, mean: &[f64], root: MatRef<'_, f64>, lower: bool, n: usize, rng: &mut Rng) -> Moments {
        let d = self.dim;
        let z: Vec<f64> = (0..d).map(|_| rng.sample(StandardNormal)).collect();
        let scale = 1.0 / (n as f64).sqrt();
        let sample_mean: Vec<f64> =
            (0..d).map(|i| mean[i] + scale * (0..d).map(|j| root[(i, j)] * z[j]).sum::<f64>()).collect();
        let mut l = Mat::<f64>::zeros(d, d);
        for i in 0..d {
            let chi2 = ChiSquared::new((n - 1 - i) as f64).expect("n > d");
            l[(i, i)] = rng.sample(chi2).sqrt();
            for j in 0..i {
                l[(i, j)] = rng.sample(StandardNormal);
            }
        }
        // Both products skip the zeros: L is lower triangular, so is R L when R is (Cholesky),
        // and M2 is symmetric, so only its lower half is computed, then mirrored. At d = 100
        // that is a sixth of the work of two dense products.
        let root_shape = if lower { BlockStructure::TriangularLower } else { BlockStructure::Rectangular };
        let mut rl = Mat::<f64>::zeros(d, d);
        triangular::matmul(
            rl.as_mut(),
            root_shape,
            Accum::Replace,
            root,
            root_shape,
            l.as_ref(),
            BlockStructure::TriangularLower,
            1.0,
            Par::Seq,
        );
        let mut m2 = Mat::<f64>::zeros(d, d);
        triangular::matmul(
            m2.as_mut(),
            BlockStructure::TriangularLower,
            Accum::Replace,
            rl.as_ref(),
            root_shape,
            rl.transpose(),
            root_shape.transpose(),
            1.0,
            Par::Seq,
        );
        for j in 1..d {
            for i in 0..j {
                m2[(i, j)] = m2[(j, i)];
            }
        }
        Moments::unweighted(n, sample_mean, m2)
    }
}

impl Setting for Gaussian {
    type Run = ();
    type Batch = Batch;
    type Pool = Pool;
    type Model<'a> = GaussianFit;

    fn metric_names(&self) -> Vec<String> {
        METRICS.iter().map(|s| s.to_string()).collect()
    }

    fn start(&self, seeds: &Seeds, n: usize) -> Result<((), Batch)> {
        let sigma = self.sigma2.sqrt();
        let mut rng = seeds.stream(Stream::RealData);
        let data = (0..n * self.dim).map(|_| sigma * rng.sample::<f64, _>(StandardNormal)).collect();
        Ok(((), Batch::Points(Points::new(self.dim, data)?)))
    }

    fn batch_len(&self, batch: &Batch) -> usize {
        match batch {
            Batch::Points(p) | Batch::Weighted(p, _) => p.len(),
            Batch::Moments(m) => m.count,
        }
    }

    fn batch_head(&self, batch: &Batch, k: usize) -> Result<Batch> {
        match batch {
            Batch::Points(p) => Ok(Batch::Points(p.head(k))),
            Batch::Weighted(p, w) => Ok(Batch::Weighted(p.head(k), *w)),
            Batch::Moments(_) => Err(GaussianError::PointsFromMoments.into()),
        }
    }

    fn batch_pick(&self, batch: &Batch, k: usize, rng: &mut Rng) -> Result<Batch> {
        match batch {
            Batch::Points(p) => Ok(Batch::Points(p.select(&subsample_indices(rng, p.len(), k)?))),
            Batch::Weighted(p, w) => Ok(Batch::Weighted(p.select(&subsample_indices(rng, p.len(), k)?), *w)),
            Batch::Moments(_) => Err(GaussianError::PointsFromMoments.into()),
        }
    }

    fn weigh_real(&self, batch: &mut Batch, weight: f64) -> Result<()> {
        *batch = match std::mem::replace(batch, Batch::Moments(Moments::empty(0))) {
            Batch::Points(p) | Batch::Weighted(p, _) => Batch::Weighted(p, weight),
            Batch::Moments(_) => return Err(GaussianError::RealAsMoments.into()),
        };
        Ok(())
    }

    fn fresh_real(&self, _run: &(), m: usize, rng: &mut Rng) -> Result<Batch> {
        let sigma = self.sigma2.sqrt();
        let data = (0..m * self.dim).map(|_| sigma * rng.sample::<f64, _>(StandardNormal)).collect();
        Ok(Batch::Points(Points::new(self.dim, data)?))
    }

    fn check_knobs(&self, knobs: &Knobs, _workflow: Workflow) -> Result<()> {
        knobs.refuse_top_p("the Gaussian")
    }

    /// Temperature τ scales the covariance by τ²; truncation and selection draw points one by
    /// one (no moment shortcut).
    fn sample_distorted(
        &self,
        model: &GaussianFit,
        n: usize,
        knobs: &Knobs,
        rng: &mut Rng,
        draws: &mut Draws,
    ) -> Result<Batch> {
        let tau = knobs.temperature;
        if knobs.truncate.is_finite() || knobs.selects() {
            return Ok(Batch::Points(self.draw_filtered(&model.mean, model.root.as_ref(), n, knobs, rng, draws)?));
        }
        draws.add(n, n);
        let root = Mat::from_fn(self.dim, self.dim, |i, j| tau * model.root[(i, j)]);
        if model.sample_points || n <= self.dim {
            Ok(Batch::Points(self.draw(&model.mean, root.as_ref(), n, rng)))
        } else {
            Ok(Batch::Moments(self.draw_moments(&model.mean, root.as_ref(), model.root_lower, n, rng)))
        }
    }

    fn new_pool(&self, _run: &(), workflow: Workflow) -> Pool {
        Pool {
            moments: Moments::empty(self.dim),
            points: workflow.subsamples().then(|| Points::empty(self.dim)),
            weights: None,
        }
    }

    fn push(&self, pool: &mut Pool, batch: &Batch) -> Result<()> {
        match batch {
            Batch::Points(p) | Batch::Weighted(p, _) => {
                let weight = if let Batch::Weighted(_, w) = batch { *w } else { 1.0 };
                pool.moments.merge(&Moments::of_rows_weighing(self.dim, p.as_slice(), weight));
                if let Some(points) = &mut pool.points {
                    // Unit weights stay implicit until a point weighs otherwise.
                    if weight != 1.0 && pool.weights.is_none() {
                        pool.weights = Some(vec![1.0; points.len()]);
                    }
                    if let Some(weights) = &mut pool.weights {
                        weights.extend(std::iter::repeat_n(weight, p.len()));
                    }
                    points.extend(p);
                }
            }
            Batch::Moments(m) => {
                if pool.points.is_some() {
                    return Err(GaussianError::MomentsInSubsamplingPool.into());
                }
                pool.moments.merge(m);
            }
        }
        Ok(())
    }

    fn clear(&self, pool: &mut Pool) {
        pool.moments = Moments::empty(self.dim);
        if let Some(points) = &mut pool.points {
            points.clear();
        }
        pool.weights = None;
    }

    fn pool_len(&self, pool: &Pool) -> usize {
        pool.moments.count
    }

    fn fit<'a>(
        &'a self,
        _run: &'a (),
        pool: &'a Pool,
        selection: Selection<'_>,
        _generation: u32,
    ) -> Result<GaussianFit> {
        let mut fit = match selection {
            Selection::All => self.fit_moments(&pool.moments)?,
            Selection::Indices(idx) => {
                let points = pool.points.as_ref().ok_or(Error::NoSubsample { data: "points" })?;
                let selected = points.select(idx);
                let moments = match &pool.weights {
                    None => Moments::of_rows(self.dim, selected.as_slice()),
                    Some(w) => {
                        let w: Vec<f64> = idx.iter().map(|&i| w[i]).collect();
                        Moments::of_weighted_rows(self.dim, selected.as_slice(), &w)
                    }
                };
                self.fit_moments(&moments)?
            }
        };
        fit.sample_points |= pool.points.is_some();
        Ok(fit)
    }

    fn evaluate(&self, _run: &(), model: &GaussianFit, out: &mut Vec<f64>) -> Result<()> {
        out.extend(self.metrics(model));
        Ok(())
    }

    fn sample(&self, model: &GaussianFit, n: usize, rng: &mut Rng) -> Result<Batch> {
        // Bartlett needs n - 1 >= d; below that, n points are cheaper than d³ anyway.
        if model.sample_points || n <= self.dim {
            Ok(Batch::Points(self.draw(&model.mean, model.root.as_ref(), n, rng)))
        } else {
            Ok(Batch::Moments(self.draw_moments(&model.mean, model.root.as_ref(), model.root_lower, n, rng)))
        }
    }
}

/// The smallest and largest of `values`.
fn range(values: &[f64]) -> (f64, f64) {
    values.iter().fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), &v| (lo.min(v), hi.max(v)))
}

/// Dimensions, sample sizes and workflows of the paper's sweep (docs/protocol.md §2.5).
pub fn paper_grid() -> (Vec<usize>, Vec<usize>) {
    (vec![1, 3, 10, 31, 100], vec![10, 32, 100, 316, 1000])
}

/// Run specs for every (d, n, workflow, seed) combination, with results columns d, n, sigma2, real.
pub fn grid_specs<'s>(
    settings: &'s [Gaussian],
    ns: &[usize],
    workflows: &[Workflow],
    seeds: &[u64],
    generations: u32,
    real: usize,
) -> Result<Vec<RunSpec<'s, Gaussian>>> {
    let mut specs = Vec::new();
    for setting in settings {
        for &n in ns {
            for &workflow in workflows {
                let mut config = ChainConfig::paper(workflow, n, generations);
                config.retained_real = real;
                config.validate()?;
                for &seed in seeds {
                    specs.push(RunSpec {
                        setting,
                        params: Params::new()
                            .with("d", setting.dim)
                            .with("n", n)
                            .with("sigma2", setting.sigma2)
                            .with("real", real),
                        config,
                        seed,
                        // Per generation: batch products n·d², sampling n·d², eigen d³.
                        cost: generations as f64
                            * (2.0 * (n * setting.dim * setting.dim) as f64 + (setting.dim as f64).powi(3)),
                    });
                }
            }
        }
    }
    Ok(specs)
}
