//! The Gaussian setting as a thrive-core [`Setting`].

use crate::moments::Moments;
use faer::linalg::matmul::matmul;
use faer::{Accum, Mat, MatMut, MatRef, Par, Side};
use rand::Rng as _;
use rand_distr::StandardNormal;
use thrive_core::{
    ChainConfig, Error, Params, Points, Result, Rng, RunSpec, Seeds, Selection, Setting, Stream, Workflow,
};

/// Metric columns, in order.
///
/// - `mean_squared_error`: ‖μ̂ − μ₀‖² (not divided by d), the paper's "Squared Error of Fit Mean".
/// - `det_ratio`: det Σ̂ / det Σ₀ (product of the eigenvalues; 0 or tiny when singular).
/// - `log_det_ratio`: ln det Σ̂ − ln det Σ₀, which cannot underflow (−∞ when singular).
/// - `trace_ratio`: tr Σ̂ / (d σ²).
/// - `fit_variance`: Σ̂[0,0] when d = 1, NaN otherwise (as the paper logs it).
pub const METRICS: [&str; 5] = ["mean_squared_error", "det_ratio", "log_det_ratio", "trace_ratio", "fit_variance"];

/// N(0, σ² I_d) as the true distribution.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Gaussian {
    pub dim: usize,
    pub sigma2: f64,
}

/// A pool: running moments, plus the raw points when a workflow subsamples.
pub struct Pool {
    moments: Moments,
    points: Option<Points>,
}

/// A fitted Gaussian: mean, ML covariance and its eigendecomposition.
#[derive(Debug, Clone)]
pub struct GaussianFit {
    pub mean: Vec<f64>,
    pub covariance: Mat<f64>,
    /// Eigenvalues in non-decreasing order (may be tiny and negative when singular).
    pub eigenvalues: Vec<f64>,
    /// U Λ^½ with negative eigenvalues clamped to 0: X = Z (UΛ^½)ᵀ + μ̂.
    root: Mat<f64>,
}

impl Gaussian {
    pub fn new(dim: usize, sigma2: f64) -> Result<Self> {
        if dim == 0 {
            return Err(Error::invalid("dim", "must be at least 1"));
        }
        if !(sigma2 > 0.0 && sigma2.is_finite()) {
            return Err(Error::invalid("sigma2", format!("{sigma2} is not a positive number")));
        }
        Ok(Gaussian { dim, sigma2 })
    }

    /// Fits mean and ML covariance to moments.
    pub fn fit_moments(&self, m: &Moments) -> Result<GaussianFit> {
        if m.count == 0 {
            return Err(Error::Setting("cannot fit a Gaussian to no points".into()));
        }
        let covariance = m.covariance();
        let eig = covariance
            .self_adjoint_eigen(Side::Lower)
            .map_err(|e| Error::Setting(format!("eigendecomposition failed: {e:?}")))?;
        let s = eig.S().column_vector();
        let eigenvalues: Vec<f64> = (0..self.dim).map(|i| s[i]).collect();
        let u = eig.U();
        let root = Mat::from_fn(self.dim, self.dim, |i, j| u[(i, j)] * eigenvalues[j].max(0.0).sqrt());
        Ok(GaussianFit { mean: m.mean.clone(), covariance, eigenvalues, root })
    }

    /// The metrics of a fit, in [`METRICS`] order.
    pub fn metrics(&self, fit: &GaussianFit) -> [f64; 5] {
        let d = self.dim as f64;
        let se: f64 = fit.mean.iter().map(|m| m * m).sum();
        let det: f64 = fit.eigenvalues.iter().product();
        let log_det: f64 = fit.eigenvalues.iter().map(|l| if *l > 0.0 { l.ln() } else { f64::NEG_INFINITY }).sum();
        let trace: f64 = (0..self.dim).map(|i| fit.covariance[(i, i)]).sum();
        let fit_variance = if self.dim == 1 { fit.covariance[(0, 0)] } else { f64::NAN };
        [se, det / self.sigma2.powf(d), log_det - d * self.sigma2.ln(), trace / (d * self.sigma2), fit_variance]
    }

    /// `n` draws from N(mean, root rootᵀ), row-major.
    fn draw(&self, mean: &[f64], root: MatRef<'_, f64>, n: usize, rng: &mut Rng) -> Points {
        let d = self.dim;
        let z: Vec<f64> = (0..n * d).map(|_| rng.sample(StandardNormal)).collect();
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
}

impl Setting for Gaussian {
    type Run = ();
    type Pool = Pool;
    type Model<'a> = GaussianFit;

    fn metric_names(&self) -> Vec<String> {
        METRICS.iter().map(|s| s.to_string()).collect()
    }

    fn start(&self, seeds: &Seeds, n: usize) -> Result<((), Points)> {
        let sigma = self.sigma2.sqrt();
        let mut rng = seeds.stream(Stream::RealData);
        let data = (0..n * self.dim).map(|_| sigma * rng.sample::<f64, _>(StandardNormal)).collect();
        Ok(((), Points::new(self.dim, data)?))
    }

    fn new_pool(&self, _run: &(), workflow: Workflow) -> Pool {
        Pool { moments: Moments::empty(self.dim), points: workflow.subsamples().then(|| Points::empty(self.dim)) }
    }

    fn push(&self, pool: &mut Pool, batch: &Points) -> Result<()> {
        pool.moments.merge(&Moments::of_rows(self.dim, batch.as_slice()));
        if let Some(points) = &mut pool.points {
            points.extend(batch);
        }
        Ok(())
    }

    fn clear(&self, pool: &mut Pool) {
        pool.moments = Moments::empty(self.dim);
        if let Some(points) = &mut pool.points {
            points.clear();
        }
    }

    fn pool_len(&self, pool: &Pool) -> usize {
        pool.moments.count
    }

    fn fit<'a>(&'a self, _run: &'a (), pool: &'a Pool, selection: Selection<'_>) -> Result<GaussianFit> {
        match selection {
            Selection::All => self.fit_moments(&pool.moments),
            Selection::Indices(idx) => {
                let points = pool
                    .points
                    .as_ref()
                    .ok_or_else(|| Error::Setting("this pool keeps no points to subsample".into()))?;
                self.fit_moments(&Moments::of_rows(self.dim, points.select(idx).as_slice()))
            }
        }
    }

    fn evaluate(&self, _run: &(), model: &GaussianFit, out: &mut Vec<f64>) -> Result<()> {
        out.extend(self.metrics(model));
        Ok(())
    }

    fn sample(&self, model: &GaussianFit, n: usize, rng: &mut Rng) -> Result<Points> {
        Ok(self.draw(&model.mean, model.root.as_ref(), n, rng))
    }
}

/// Dimensions, sample sizes and workflows of the paper's sweep (protocol §2.5).
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
