//! Knobs of the toy generation loop beyond the paper, defined once for every toy setting.
//!
//! Each knob's default is the paper's loop: the same random draws and the same metrics. A knob
//! that is set becomes a results column (named as in [`Knobs::params`]) and every knob is a
//! manifest entry; a list of values is a grid axis ([`crate::KnobGrid`]).
//!
//! - `keep_real` p: in every generation after the first, ⌊p·n⌋ of the n training examples are
//!   real, drawn uniformly without replacement from D_0 afresh each generation (stream
//!   [`crate::Stream::KeepReal`]), the rest synthetic (Shumailov et al. 2024: Replace, p = 0.1).
//!   Under Accumulate-Subsample the subsample holds ⌊p·n⌋ real points and the rest comes from
//!   the synthetic part of the pool; under Accumulate every real point is already in every
//!   training set, so the knob has no effect.
//! - `fresh_real` m: every generation after the first also gets m new real examples from the
//!   true distribution (stream [`crate::Stream::FreshReal`]), which join the pool like a synthetic
//!   batch: Accumulate keeps them, Replace uses them for that generation only (Alemohammad et
//!   al.'s fresh-data loop). Settings whose real data are a fixed sample refuse it.
//! - `temperature` τ and `truncate` k / `top_p` q distort sampling ([`crate::Setting::sample_with`]):
//!   each setting says what τ scales; a continuous draw farther than k (Mahalanobis distance
//!   under the fitted model) is redrawn; discrete sampling keeps the smallest set of most
//!   probable outcomes whose mass reaches q.
//! - `verifier_bias` b and `select_threshold` c: a verifier between sampling and training keeps
//!   a synthetic sample only if it passes (each continuous setting defines the test; Feng et al.,
//!   Yi et al., Qiao et al.); sampling draws until it has n, up to `max_draws`·n draws, which
//!   also bounds truncation's redraws. c = ∞ (the default) keeps every sample.
//! - `real_weight` w: every real example (D_0, the ones kept or retained, fresh ones) counts w
//!   times a synthetic one in every fit: frequency weights, so an integer w fits exactly as w
//!   copies of each real example would ([`crate::Setting::weigh_real`]). Sampling from a
//!   weighted fit follows the weights too (KDE centres, discrete probabilities). It draws no
//!   random numbers of its own, and w = 1 (the default) leaves every fit as it was.

use crate::error::{Error, Result};
use crate::results::ParamValue;
use crate::workflow::Workflow;

/// The loop knobs of one run.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Knobs {
    /// Fraction of real examples in each training set after the first (0: the paper).
    pub keep_real: f64,
    /// New real examples joining the pool each generation after the first (0: the paper).
    pub fresh_real: f64,
    /// Sampling temperature (1: the paper).
    pub temperature: f64,
    /// Largest Mahalanobis distance of a continuous draw (∞: no truncation).
    pub truncate: f64,
    /// Nucleus mass of discrete sampling (1: none).
    pub top_p: f64,
    /// The verifier's bias b along the first axis (0: unbiased).
    pub verifier_bias: f64,
    /// The verifier's threshold c (∞: no selection).
    pub select_threshold: f64,
    /// Draws allowed per generation, as a multiple of n, for selection and truncation (100).
    pub max_draws: f64,
    /// Weight of a real example in a fit, relative to a synthetic one (1: the paper).
    pub real_weight: f64,
}

impl Default for Knobs {
    fn default() -> Self {
        Knobs::PAPER
    }
}

/// Knob names as results columns and flags (flags write `-` for `_`).
pub const KNOB_NAMES: [&str; 9] = [
    "keep_real",
    "fresh_real",
    "temperature",
    "truncate",
    "top_p",
    "verifier_bias",
    "select_threshold",
    "max_draws",
    "real_weight",
];

impl Knobs {
    /// Every knob at its default: the paper's loop.
    pub const PAPER: Knobs = Knobs {
        keep_real: 0.0,
        fresh_real: 0.0,
        temperature: 1.0,
        truncate: f64::INFINITY,
        top_p: 1.0,
        verifier_bias: 0.0,
        select_threshold: f64::INFINITY,
        max_draws: 100.0,
        real_weight: 1.0,
    };

    /// Checks every knob's range; errors name the flag (`keep-real`, ...).
    pub fn validate(&self) -> Result<()> {
        if !(0.0..=1.0).contains(&self.keep_real) {
            return Err(Error::invalid("keep-real", format!("{} is not a fraction in [0, 1]", self.keep_real)));
        }
        if !(self.fresh_real >= 0.0 && self.fresh_real.fract() == 0.0 && self.fresh_real < 1e12) {
            return Err(Error::invalid("fresh-real", format!("{} is not a count of examples", self.fresh_real)));
        }
        if !(self.temperature > 0.0 && self.temperature.is_finite()) {
            return Err(Error::invalid("temperature", format!("{} is not a positive number", self.temperature)));
        }
        if self.truncate.is_nan() || self.truncate <= 0.0 {
            return Err(Error::invalid("truncate", format!("{} is not a positive distance", self.truncate)));
        }
        if !self.verifier_bias.is_finite() {
            return Err(Error::invalid("verifier-bias", format!("{} is not a finite number", self.verifier_bias)));
        }
        if self.select_threshold.is_nan() {
            return Err(Error::invalid("select-threshold", "is not a number"));
        }
        if !(self.max_draws >= 1.0 && self.max_draws.is_finite()) {
            return Err(Error::invalid(
                "max-draws",
                format!("{} is not a multiple of n of at least 1", self.max_draws),
            ));
        }
        if !(self.real_weight > 0.0 && self.real_weight.is_finite()) {
            return Err(Error::invalid(
                "real-weight",
                format!(
                    "{} is not a positive weight (generation 1 trains on real data alone, so it needs weight)",
                    self.real_weight
                ),
            ));
        }
        if !(self.top_p > 0.0 && self.top_p <= 1.0) {
            return Err(Error::invalid("top-p", format!("{} is not a probability mass in (0, 1]", self.top_p)));
        }
        Ok(())
    }

    /// Refuses top-p, a discrete setting's knob, in the continuous setting `setting` (named
    /// as the error's advice reads: "use --truncate for {setting}").
    pub fn refuse_top_p(&self, setting: &str) -> Result<()> {
        if self.top_p != 1.0 {
            return Err(Error::invalid("top-p", format!("is for the discrete setting; use --truncate for {setting}")));
        }
        Ok(())
    }

    /// Real examples kept in each training set after the first, of `n`.
    pub fn kept_real(&self, n: usize) -> usize {
        (self.keep_real * n as f64).floor() as usize
    }

    /// Real examples kept under `workflow` (none under Accumulate, which keeps all of D₀).
    pub fn kept_real_in(&self, workflow: Workflow, n: usize) -> usize {
        if workflow == Workflow::Accumulate {
            0
        } else {
            self.kept_real(n)
        }
    }

    /// New real examples per generation after the first.
    pub fn fresh(&self) -> usize {
        self.fresh_real as usize
    }

    /// Whether the loop adds real data after generation 1 under `workflow` (so no state is absorbing).
    pub fn real_inflow(&self, workflow: Workflow, n: usize) -> bool {
        self.kept_real_in(workflow, n) > 0 || self.fresh() > 0
    }

    /// Whether real examples weigh other than synthetic ones in a fit.
    pub fn weighs_real(&self) -> bool {
        self.real_weight != 1.0
    }

    /// Whether sampling differs from the fitted model's.
    pub fn distorts_sampling(&self) -> bool {
        self.temperature != 1.0 || self.truncate.is_finite() || self.top_p != 1.0 || self.selects()
    }

    /// Whether a verifier selects synthetic samples.
    pub fn selects(&self) -> bool {
        self.select_threshold != f64::INFINITY
    }

    /// The most draws a generation of `n` samples may make (selection and truncation).
    pub fn draw_limit(&self, n: usize) -> usize {
        (self.max_draws * n.max(1) as f64).ceil() as usize
    }

    /// The error when a filtered batch cannot be filled: names the filter's flag.
    pub fn unfilled(&self, kept: usize, n: usize, draws: usize) -> Error {
        let (flag, filter) = if self.selects() {
            (
                "select-threshold",
                format!(
                    "the verifier (bias {}, threshold {}){}",
                    self.verifier_bias,
                    self.select_threshold,
                    if self.truncate.is_finite() {
                        format!(" and truncation at {}", self.truncate)
                    } else {
                        String::new()
                    }
                ),
            )
        } else {
            ("truncate", format!("truncation at Mahalanobis distance {}", self.truncate))
        };
        Error::invalid(flag, format!("{filter} kept only {kept} of {n} samples in {draws} draws (raise --max-draws)"))
    }

    /// The value of the knob called `name` (one of [`KNOB_NAMES`]).
    pub fn get(&self, name: &str) -> f64 {
        match name {
            "keep_real" => self.keep_real,
            "fresh_real" => self.fresh_real,
            "temperature" => self.temperature,
            "truncate" => self.truncate,
            "top_p" => self.top_p,
            "verifier_bias" => self.verifier_bias,
            "select_threshold" => self.select_threshold,
            "max_draws" => self.max_draws,
            "real_weight" => self.real_weight,
            other => panic!("no knob `{other}`"),
        }
    }

    pub(crate) fn set(&mut self, name: &str, value: f64) {
        match name {
            "keep_real" => self.keep_real = value,
            "fresh_real" => self.fresh_real = value,
            "temperature" => self.temperature = value,
            "truncate" => self.truncate = value,
            "top_p" => self.top_p = value,
            "verifier_bias" => self.verifier_bias = value,
            "select_threshold" => self.select_threshold = value,
            "max_draws" => self.max_draws = value,
            "real_weight" => self.real_weight = value,
            other => panic!("no knob `{other}`"),
        }
    }

    /// The knobs as results columns: `(name, value)` for each knob in `columns`.
    pub fn params(&self, columns: &[&str]) -> Vec<(String, ParamValue)> {
        columns.iter().map(|c| (c.to_string(), ParamValue::Float(self.get(c)))).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_and_ranges() {
        assert!(!Knobs::PAPER.distorts_sampling());
        Knobs::PAPER.validate().unwrap();
        for (k, flag) in [
            (Knobs { keep_real: 1.5, ..Knobs::PAPER }, "keep-real"),
            (Knobs { keep_real: -0.1, ..Knobs::PAPER }, "keep-real"),
            (Knobs { temperature: 0.0, ..Knobs::PAPER }, "temperature"),
            (Knobs { fresh_real: 2.5, ..Knobs::PAPER }, "fresh-real"),
            (Knobs { fresh_real: -1.0, ..Knobs::PAPER }, "fresh-real"),
            (Knobs { truncate: -1.0, ..Knobs::PAPER }, "truncate"),
            (Knobs { top_p: 0.0, ..Knobs::PAPER }, "top-p"),
            (Knobs { max_draws: 0.5, ..Knobs::PAPER }, "max-draws"),
            (Knobs { verifier_bias: f64::NAN, ..Knobs::PAPER }, "verifier-bias"),
            (Knobs { real_weight: -1.0, ..Knobs::PAPER }, "real-weight"),
            (Knobs { real_weight: 0.0, ..Knobs::PAPER }, "real-weight"),
            (Knobs { real_weight: f64::INFINITY, ..Knobs::PAPER }, "real-weight"),
        ] {
            assert!(k.validate().unwrap_err().to_string().contains(flag), "{k:?}");
        }
        assert_eq!(Knobs { keep_real: 0.1, ..Knobs::PAPER }.kept_real(25), 2);
    }
}
