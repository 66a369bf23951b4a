//! Kernel bandwidths: fixed, rules of thumb, and schedules over generations.

use std::fmt;
use std::str::FromStr;
use thrive_core::{Error, Result};

/// How the bandwidth of generation t's fit is chosen.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Bandwidth {
    /// The same h every generation.
    Fixed(f64),
    /// Scott's rule N^(−1/(D+4)) on the N points of the current fit.
    Scott,
    /// Silverman's rule (N(D+2)/4)^(−1/(D+4)) on the N points of the current fit.
    Silverman,
    /// h_t = h₁ · t^(−α): the shrinking bandwidths of the paper's open question (§3.4).
    Schedule { h1: f64, alpha: f64 },
}

impl Bandwidth {
    /// The bandwidth for a fit on `points` points of dimension `dim` at generation `t`; under
    /// `--real-weight` the rules count a point of weight w as w points (`points` is Σw).
    pub fn at(&self, points: f64, dim: usize, generation: u32) -> f64 {
        let (n, d) = (points, dim as f64);
        match *self {
            Bandwidth::Fixed(h) => h,
            Bandwidth::Scott => n.powf(-1.0 / (d + 4.0)),
            Bandwidth::Silverman => (n * (d + 2.0) / 4.0).powf(-1.0 / (d + 4.0)),
            Bandwidth::Schedule { h1, alpha } => h1 * (generation as f64).powf(-alpha),
        }
    }

    /// Whether h is the same for every fit (then kernel sums can be carried forward).
    pub fn is_fixed(&self) -> bool {
        matches!(self, Bandwidth::Fixed(_))
    }

    /// h₁ for fixed bandwidths and schedules, NaN for rules of thumb.
    pub fn h1(&self) -> f64 {
        match *self {
            Bandwidth::Fixed(h) | Bandwidth::Schedule { h1: h, .. } => h,
            _ => f64::NAN,
        }
    }

    /// Parses `0.1`, `scott`, `silverman` or `0.5*t^-0.25` (a schedule).
    pub fn parse_list(s: &str) -> Result<Vec<Bandwidth>> {
        s.split(',').map(str::trim).filter(|p| !p.is_empty()).map(str::parse).collect()
    }
}

impl FromStr for Bandwidth {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        let bad = |why: &str| Error::invalid("bandwidth", format!("`{s}`: {why}"));
        let positive = |v: f64| if v > 0.0 && v.is_finite() { Ok(v) } else { Err(bad("must be a positive number")) };
        match s.trim().to_ascii_lowercase().as_str() {
            "scott" => Ok(Bandwidth::Scott),
            "silverman" => Ok(Bandwidth::Silverman),
            other => {
                if let Some((h, rest)) = other.split_once("*t^") {
                    let h1 = positive(h.parse().map_err(|_| bad("expected H*t^-ALPHA"))?)?;
                    let alpha: f64 = rest.parse().map_err(|_| bad("expected H*t^-ALPHA"))?;
                    if !alpha.is_finite() {
                        return Err(bad("the exponent must be finite"));
                    }
                    Ok(Bandwidth::Schedule { h1, alpha: -alpha })
                } else {
                    let h: f64 = other.parse().map_err(|_| bad("expected a number, scott, silverman or H*t^-ALPHA"))?;
                    Ok(Bandwidth::Fixed(positive(h)?))
                }
            }
        }
    }
}

impl fmt::Display for Bandwidth {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Bandwidth::Fixed(h) => write!(f, "{h}"),
            Bandwidth::Scott => f.write_str("scott"),
            Bandwidth::Silverman => f.write_str("silverman"),
            Bandwidth::Schedule { h1, alpha } => write!(f, "{h1}*t^-{alpha}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rules_match_scikit_learn() {
        // scikit-learn >= 1.2: scott = n^(-1/(d+4)), silverman = (n(d+2)/4)^(-1/(d+4)).
        assert!((Bandwidth::Scott.at(100.0, 2, 1) - 100f64.powf(-1.0 / 6.0)).abs() < 1e-15);
        assert!((Bandwidth::Silverman.at(100.0, 2, 1) - 100f64.powf(-1.0 / 6.0)).abs() < 1e-15);
        assert!((Bandwidth::Silverman.at(100.0, 3, 1) - (125f64).powf(-1.0 / 7.0)).abs() < 1e-15);
        let s = Bandwidth::Schedule { h1: 0.5, alpha: 0.25 };
        assert!((s.at(10.0, 2, 16) - 0.25).abs() < 1e-15);
    }

    #[test]
    fn parsing() {
        assert_eq!("0.1".parse::<Bandwidth>().unwrap(), Bandwidth::Fixed(0.1));
        assert_eq!("Scott".parse::<Bandwidth>().unwrap(), Bandwidth::Scott);
        assert_eq!("0.5*t^-0.25".parse::<Bandwidth>().unwrap(), Bandwidth::Schedule { h1: 0.5, alpha: 0.25 });
        assert_eq!("0.5*t^-0.25".parse::<Bandwidth>().unwrap().to_string(), "0.5*t^-0.25");
        for bad in ["0", "-1", "nan", "inf", "wide", "0*t^-1"] {
            let err = bad.parse::<Bandwidth>().unwrap_err().to_string();
            assert!(err.contains("bandwidth"), "{bad}: {err}");
        }
    }
}
