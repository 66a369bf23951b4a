//! Means over seeds with percentile-bootstrap confidence bands.

use rand::Rng as _;
use thrive_core::{Seeds, Stream};

/// The mean of a set of values and its 95% bootstrap interval.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Band {
    pub mean: f64,
    pub lo: f64,
    pub hi: f64,
    /// Number of finite values the band is computed from.
    pub count: usize,
}

/// Mean and 95% percentile-bootstrap interval of the finite `values`
/// (`resamples` resamples, seeded by `seed` and `cell` so a figure is the
/// same every time it is drawn). `None` when no value is finite.
pub fn bootstrap_mean_ci(values: &[f64], resamples: usize, seed: u64, cell: u32) -> Option<Band> {
    let finite: Vec<f64> = values.iter().copied().filter(|v| v.is_finite()).collect();
    let k = finite.len();
    if k == 0 {
        return None;
    }
    let mean = finite.iter().sum::<f64>() / k as f64;
    if k == 1 || resamples == 0 {
        return Some(Band { mean, lo: mean, hi: mean, count: k });
    }
    let mut rng = Seeds::new(seed).stream(Stream::Custom(1, cell));
    let mut means: Vec<f64> =
        (0..resamples).map(|_| (0..k).map(|_| finite[rng.random_range(0..k)]).sum::<f64>() / k as f64).collect();
    means.sort_by(f64::total_cmp);
    let at = |q: f64| means[((q * (resamples - 1) as f64).round() as usize).min(resamples - 1)];
    Some(Band { mean, lo: at(0.025), hi: at(0.975), count: k })
}

/// R² of the ordinary least-squares line through `(x, y)` points; `None` with fewer than two
/// distinct x values or no variance in y.
pub fn r_squared(points: &[(f64, f64)]) -> Option<f64> {
    let n = points.len() as f64;
    if points.len() < 2 {
        return None;
    }
    let (mx, my) = (points.iter().map(|p| p.0).sum::<f64>() / n, points.iter().map(|p| p.1).sum::<f64>() / n);
    let sxx: f64 = points.iter().map(|p| (p.0 - mx).powi(2)).sum();
    let syy: f64 = points.iter().map(|p| (p.1 - my).powi(2)).sum();
    let sxy: f64 = points.iter().map(|p| (p.0 - mx) * (p.1 - my)).sum();
    if sxx <= 0.0 || syy <= 0.0 {
        return None;
    }
    Some(sxy * sxy / (sxx * syy))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn band_covers_mean_and_shrinks_with_more_data() {
        let small: Vec<f64> = (0..10).map(|i| i as f64).collect();
        let large: Vec<f64> = (0..1000).map(|i| (i % 10) as f64).collect();
        let a = bootstrap_mean_ci(&small, 1000, 0, 0).unwrap();
        let b = bootstrap_mean_ci(&large, 1000, 0, 0).unwrap();
        assert!((a.mean - 4.5).abs() < 1e-12 && (b.mean - 4.5).abs() < 1e-12);
        assert!(a.lo < 4.5 && a.hi > 4.5);
        assert!(b.hi - b.lo < (a.hi - a.lo) / 5.0);
        // Standard error of the mean of 0..9 is about 0.91; the 95% band is about ±1.8.
        assert!((a.hi - a.lo) > 2.5 && (a.hi - a.lo) < 4.5, "{a:?}");
    }

    #[test]
    fn non_finite_values_are_skipped() {
        let v = [1.0, f64::NAN, 3.0, f64::NEG_INFINITY];
        let b = bootstrap_mean_ci(&v, 100, 0, 0).unwrap();
        assert_eq!(b.count, 2);
        assert_eq!(b.mean, 2.0);
        assert!(bootstrap_mean_ci(&[f64::NAN], 100, 0, 0).is_none());
    }

    #[test]
    fn r_squared_of_known_points() {
        // y = 2x + 1 exactly, then a textbook set: x = 1..5, y = 2,4,5,4,5 has r = 0.7746, R² = 0.6.
        let line: Vec<(f64, f64)> = (0..5).map(|x| (x as f64, 2.0 * x as f64 + 1.0)).collect();
        assert!((r_squared(&line).unwrap() - 1.0).abs() < 1e-12);
        let pts = [(1.0, 2.0), (2.0, 4.0), (3.0, 5.0), (4.0, 4.0), (5.0, 5.0)];
        assert!((r_squared(&pts).unwrap() - 0.6).abs() < 1e-12);
        assert_eq!(r_squared(&[(1.0, 2.0), (1.0, 3.0)]), None);
    }
}
