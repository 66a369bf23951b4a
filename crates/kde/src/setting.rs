//! The KDE setting as a thrive-core [`Setting`].

use crate::bandwidth::Bandwidth;
use crate::datasets::{BlobsCentres, Dataset};
use crate::density::{kernel_exponents, log_density, log_norm, LogSumExp};
use rand::seq::SliceRandom;
use rand::Rng as _;
use rand_distr::StandardNormal;
use std::borrow::Cow;
use std::sync::Arc;
use thrive_core::workflow::subsample_indices;
use thrive_core::{
    draw_until_filled, Draws, Error, Knobs, Points, Result, Rng, Seeds, Selection, Setting, Stream, Workflow,
};

/// Metric columns: the mean test NLL, the bandwidth of the fit, and `tail_nll`, the mean NLL
/// of the tenth of the test points (rounded up) with the lowest density under generation 1's
/// fit (the KDE of the real training data): collapse shows in the tails first. The tail is
/// chosen from the real data alone and consumes no random numbers.
pub const METRICS: [&str; 3] = ["nll", "h", "tail_nll"];

/// Size of the real test set (hard-coded in the authors' code).
pub const TEST_POINTS: usize = 500;

/// Where the real data come from.
#[derive(Debug, Clone)]
pub enum RealData {
    /// A scikit-learn generator: n training points, then 500 test points from a second call.
    Generator { dataset: Dataset, centres: BlobsCentres },
    /// Users' points: every run splits them into training and test sets (seeded).
    File { name: String, points: Arc<Points>, test_fraction: f64 },
}

/// A KDE setting: real data and bandwidth rule.
#[derive(Debug, Clone)]
pub struct Kde {
    pub data: RealData,
    pub bandwidth: Bandwidth,
}

/// Per-run state: the real test set and its low-density tail.
pub struct Run {
    test: Points,
    /// Indices of the test points in the tail (see [`METRICS`]).
    tail: Vec<usize>,
    /// Blob centres shared by every call of a run (`--blobs shared`), for fresh real data.
    centres: Option<[[f64; 2]; 3]>,
    /// Generation 1's fit (the real training points and their bandwidth), the verifier's model.
    first: (Points, f64),
}

/// One batch of points, each counting `weight` times in a fit (1 but for real data under
/// `--real-weight`).
#[derive(Debug, Clone)]
pub struct Batch {
    pub points: Points,
    pub weight: f64,
}

impl Batch {
    fn unit(points: Points) -> Batch {
        Batch { points, weight: 1.0 }
    }
}

/// The pool's points (with their weights once one weighs other than 1), and, with a fixed
/// bandwidth and every point in the fit, a running log-sum-exp of the kernel terms per test point.
pub struct Pool {
    points: Points,
    weights: Option<Vec<f64>>,
    carried: Option<Carried>,
}

/// Kernel sums carried forward: one log-sum-exp per test point over every pool point.
struct Carried {
    test: Points,
    h: f64,
    sums: Vec<LogSumExp>,
}

/// A fitted KDE: its points, bandwidth, test NLL and tail NLL.
pub struct Fit<'a> {
    points: Cow<'a, Points>,
    /// Running sums of the points' weights when they differ (sampling picks a centre in
    /// proportion to its weight); `None`: every point weighs 1.
    cumulative: Option<Vec<f64>>,
    h: f64,
    nll: f64,
    tail_nll: f64,
    /// Generation 1's fit, for the verifier.
    first: &'a (Points, f64),
}

impl Kde {
    pub fn new(data: RealData, bandwidth: Bandwidth) -> Result<Self> {
        if let Bandwidth::Fixed(h) | Bandwidth::Schedule { h1: h, .. } = bandwidth {
            if !(h > 0.0 && h.is_finite()) {
                return Err(Error::invalid("bandwidth", format!("{h} is not a positive number")));
            }
        }
        Ok(Kde { data, bandwidth })
    }

    pub fn dim(&self) -> usize {
        match &self.data {
            RealData::Generator { dataset, .. } => dataset.dim(),
            RealData::File { points, .. } => points.dim(),
        }
    }

    /// The number of training points a run of this setting has (users' data fix it).
    pub fn training_size(&self) -> Option<usize> {
        match &self.data {
            RealData::Generator { .. } => None,
            RealData::File { points, test_fraction, .. } => {
                Some(points.len() - test_size(points.len(), *test_fraction))
            }
        }
    }

    /// Mean NLL of the test set under the KDE whose kernel sums are `sums` (over points of
    /// total weight `weight`), and of its `tail`.
    fn nll_from_sums(&self, sums: &[LogSumExp], tail: &[usize], weight: f64, h: f64) -> (f64, f64) {
        let c = log_norm(self.dim(), h) - weight.ln();
        let nll = -sums.iter().map(|s| s.value() + c).sum::<f64>() / sums.len() as f64;
        let tail_nll = -tail.iter().map(|&i| sums[i].value() + c).sum::<f64>() / tail.len() as f64;
        (nll, tail_nll)
    }

    /// The tenth of the test points (rounded up) with the lowest density under the KDE of the
    /// real training data with generation 1's bandwidth; ties by index.
    fn tail(&self, test: &Points, train: &Points) -> Vec<usize> {
        let h = self.bandwidth.at(train.len() as f64, self.dim(), 1);
        let logs: Vec<f64> = self.sums_over(test, train, None, h).iter().map(LogSumExp::value).collect();
        let mut order: Vec<usize> = (0..test.len()).collect();
        order.sort_by(|&a, &b| logs[a].total_cmp(&logs[b]).then(a.cmp(&b)));
        order.truncate(test.len().div_ceil(10));
        order
    }

    /// Per test point, log Σ w_i exp(kernel exponent) over `points` (weights 1 when `None`).
    fn sums_over(&self, test: &Points, points: &Points, weights: Option<&[f64]>, h: f64) -> Vec<LogSumExp> {
        let mut buf = Vec::with_capacity(points.len());
        let logs: Option<Vec<f64>> = weights.map(|w| w.iter().map(|w| w.ln()).collect());
        test.rows()
            .map(|x| {
                kernel_exponents(x, points.as_slice(), h, &mut buf);
                if let Some(logs) = &logs {
                    buf.iter_mut().zip(logs).for_each(|(b, l)| *b += l);
                }
                let mut acc = LogSumExp::default();
                acc.add_all(&buf);
                acc
            })
            .collect()
    }
}

fn test_size(total: usize, fraction: f64) -> usize {
    ((total as f64 * fraction).round() as usize).clamp(1, total.saturating_sub(1).max(1))
}

impl Setting for Kde {
    type Run = Run;
    type Batch = Batch;
    type Pool = Pool;
    type Model<'a> = Fit<'a>;

    fn metric_names(&self) -> Vec<String> {
        METRICS.iter().map(|s| s.to_string()).collect()
    }

    fn start(&self, seeds: &Seeds, n: usize) -> Result<(Run, Batch)> {
        match &self.data {
            RealData::Generator { dataset, centres } => {
                let shared = (*centres == BlobsCentres::Shared && *dataset == Dataset::Blobs)
                    .then(|| Dataset::blob_centres(&mut seeds.stream(Stream::Setup)));
                let train = dataset.sample(n, &mut seeds.stream(Stream::RealData), shared.as_ref());
                let test = dataset.sample(TEST_POINTS, &mut seeds.stream(Stream::TestData), shared.as_ref());
                let tail = self.tail(&test, &train);
                let first = (train.clone(), self.bandwidth.at(train.len() as f64, self.dim(), 1));
                Ok((Run { test, tail, centres: shared, first }, Batch::unit(train)))
            }
            RealData::File { points, test_fraction, .. } => {
                let mut order: Vec<usize> = (0..points.len()).collect();
                order.shuffle(&mut seeds.stream(Stream::TestData));
                let k = test_size(points.len(), *test_fraction);
                let test = points.select(&order[..k]);
                let train = points.select(&order[k..]);
                if train.len() != n {
                    return Err(Error::invalid("n", format!("the data give {} training points, not {n}", train.len())));
                }
                let tail = self.tail(&test, &train);
                let first = (train.clone(), self.bandwidth.at(train.len() as f64, self.dim(), 1));
                Ok((Run { test, tail, centres: None, first }, Batch::unit(train)))
            }
        }
    }

    fn batch_len(&self, batch: &Batch) -> usize {
        batch.points.len()
    }

    fn batch_head(&self, batch: &Batch, k: usize) -> Result<Batch> {
        Ok(Batch { points: batch.points.head(k), weight: batch.weight })
    }

    fn weigh_real(&self, batch: &mut Batch, weight: f64) -> Result<()> {
        batch.weight = weight;
        Ok(())
    }

    fn new_pool(&self, run: &Run, workflow: Workflow) -> Pool {
        // Carried-forward sums pay off whenever every pool point is in the fit with the same h.
        let carried = match self.bandwidth {
            Bandwidth::Fixed(h) if !workflow.subsamples() => {
                Some(Carried { test: run.test.clone(), h, sums: vec![LogSumExp::default(); run.test.len()] })
            }
            _ => None,
        };
        Pool { points: Points::empty(self.dim()), weights: None, carried }
    }

    fn push(&self, pool: &mut Pool, batch: &Batch) -> Result<()> {
        let (points, weight) = (&batch.points, batch.weight);
        points.check_finite("synthetic points")?;
        if let Some(c) = &mut pool.carried {
            // O(batch · n_test): the only kernel evaluations this generation needs.
            let mut buf = Vec::with_capacity(points.len());
            for (x, acc) in c.test.rows().zip(&mut c.sums) {
                kernel_exponents(x, points.as_slice(), c.h, &mut buf);
                if weight != 1.0 {
                    buf.iter_mut().for_each(|b| *b += weight.ln());
                }
                acc.add_all(&buf);
            }
        }
        // Unit weights stay implicit until a point weighs otherwise.
        if weight != 1.0 && pool.weights.is_none() {
            pool.weights = Some(vec![1.0; pool.points.len()]);
        }
        if let Some(weights) = &mut pool.weights {
            weights.extend(std::iter::repeat_n(weight, points.len()));
        }
        pool.points.extend(points);
        Ok(())
    }

    fn clear(&self, pool: &mut Pool) {
        pool.points.clear();
        pool.weights = None;
        if let Some(c) = &mut pool.carried {
            c.sums.iter_mut().for_each(|s| *s = LogSumExp::default());
        }
    }

    fn pool_len(&self, pool: &Pool) -> usize {
        pool.points.len()
    }

    fn fit<'a>(&'a self, run: &'a Run, pool: &'a Pool, selection: Selection<'_>, generation: u32) -> Result<Fit<'a>> {
        let points: Cow<'a, Points> = match selection {
            Selection::All => Cow::Borrowed(&pool.points),
            Selection::Indices(idx) => Cow::Owned(pool.points.select(idx)),
        };
        if points.is_empty() {
            return Err(Error::NothingToFit { model: "a KDE", data: "points" });
        }
        let weights: Option<Cow<'_, [f64]>> = match (&pool.weights, selection) {
            (None, _) => None,
            (Some(w), Selection::All) => Some(Cow::Borrowed(w)),
            (Some(w), Selection::Indices(idx)) => Some(Cow::Owned(idx.iter().map(|&i| w[i]).collect())),
        };
        // Σw, or the count as before weights existed (the same number then).
        let total = weights.as_ref().map_or(points.len() as f64, |w| w.iter().sum());
        let h = self.bandwidth.at(total, self.dim(), generation);
        let (nll, tail_nll) = match (&pool.carried, selection) {
            (Some(c), Selection::All) => self.nll_from_sums(&c.sums, &run.tail, total, c.h),
            _ => self.nll_from_sums(&self.sums_over(&run.test, &points, weights.as_deref(), h), &run.tail, total, h),
        };
        let cumulative = weights.map(|w| {
            w.iter()
                .scan(0.0, |acc, w| {
                    *acc += w;
                    Some(*acc)
                })
                .collect()
        });
        Ok(Fit { points, cumulative, h, nll, tail_nll, first: &run.first })
    }

    fn evaluate(&self, _run: &Run, model: &Fit<'_>, out: &mut Vec<f64>) -> Result<()> {
        out.extend([model.nll, model.h, model.tail_nll]);
        Ok(())
    }

    fn batch_pick(&self, batch: &Batch, k: usize, rng: &mut Rng) -> Result<Batch> {
        Ok(Batch { points: batch.points.select(&subsample_indices(rng, batch.points.len(), k)?), weight: batch.weight })
    }

    /// m new points from the generator (a new call, as the test set is).
    fn fresh_real(&self, run: &Run, m: usize, rng: &mut Rng) -> Result<Batch> {
        match &self.data {
            RealData::Generator { dataset, .. } => Ok(Batch::unit(dataset.sample(m, rng, run.centres.as_ref()))),
            RealData::File { name, .. } => {
                Err(Error::invalid("fresh-real", format!("the dataset {name} is a fixed sample")))
            }
        }
    }

    fn check_knobs(&self, knobs: &Knobs, _workflow: Workflow) -> Result<()> {
        if let (true, RealData::File { name, .. }) = (knobs.fresh() > 0, &self.data) {
            return Err(Error::invalid(
                "fresh-real",
                format!("the dataset {name} is a fixed sample: there are no new real points to draw"),
            ));
        }
        knobs.refuse_top_p("KDEs")
    }

    /// Temperature τ scales the sampling bandwidth to τh. A draw is redrawn, centre and noise,
    /// up to the knobs' draw limit, when
    /// - truncation: its kernel noise lies farther than k from its centre (Mahalanobis distance
    ///   under the fit's kernel, τ‖z‖);
    /// - the verifier: its log-density under generation 1's KDE (the real data's) is below c.
    fn sample_distorted(
        &self,
        model: &Fit<'_>,
        n: usize,
        knobs: &Knobs,
        rng: &mut Rng,
        draws: &mut Draws,
    ) -> Result<Batch> {
        let tau = knobs.temperature;
        if !knobs.truncate.is_finite() && !knobs.selects() {
            draws.add(n, n);
            return Ok(Batch::unit(model.draw(tau * model.h, n, rng)));
        }
        let dim = model.points.dim();
        let mut out = Points::with_capacity(dim, n);
        let mut z = vec![0.0; dim];
        draw_until_filled(knobs, n, draws, |_| {
            let i = model.centre(rng.random::<f64>());
            z.iter_mut().for_each(|v| *v = rng.sample(StandardNormal));
            if tau * z.iter().map(|v| v * v).sum::<f64>().sqrt() > knobs.truncate {
                return false;
            }
            let row: Vec<f64> = model.points.row(i).iter().zip(&z).map(|(c, v)| c + tau * model.h * v).collect();
            // The verifier: the log-density under generation 1's KDE must reach c.
            if knobs.selects() && log_density(&row, model.first.0.as_slice(), model.first.1) < knobs.select_threshold {
                return false;
            }
            out.push_row(&row);
            true
        })?;
        Ok(Batch::unit(out))
    }

    fn sample(&self, model: &Fit<'_>, n: usize, rng: &mut Rng) -> Result<Batch> {
        Ok(Batch::unit(model.draw(model.h, n, rng)))
    }
}

impl Fit<'_> {
    /// The centre a uniform draw `u` in [0, 1) picks: ⌊u·N⌋ with unit weights (numpy's
    /// choice), else the point whose share of the running weight holds u·Σw.
    fn centre(&self, u: f64) -> usize {
        let count = self.points.len();
        match &self.cumulative {
            None => ((u * count as f64) as usize).min(count - 1),
            Some(c) => {
                let target = u * c[count - 1];
                c.partition_point(|&s| s <= target).min(count - 1)
            }
        }
    }

    /// `n` draws with bandwidth `h`. NumPy: one uniform draw per sample picks the centre, then
    /// normal(centre, h).
    fn draw(&self, h: f64, n: usize, rng: &mut Rng) -> Points {
        let picks: Vec<usize> = (0..n).map(|_| self.centre(rng.random::<f64>())).collect();
        let mut out = Points::with_capacity(self.points.dim(), n);
        for &i in &picks {
            let row: Vec<f64> =
                self.points.row(i).iter().map(|c| c + h * rng.sample::<f64, _>(StandardNormal)).collect();
            out.push_row(&row);
        }
        out
    }
}
