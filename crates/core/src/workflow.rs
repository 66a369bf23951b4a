//! The three training workflows and what each generation trains on.
//!
//! Generation `t` (1-based) fits model M_t and samples synthetic batch S_t.
//! Generation 1 always trains on the real data D_0 alone. For t >= 2:
//!
//! | workflow | candidate batches | training set |
//! |---|---|---|
//! | Replace | S_{t-1} | all of it |
//! | Accumulate | D_0, S_1, ..., S_{t-1} | all of it |
//! | Accumulate-Subsample | D_0, S_1, ..., S_{t-1} | a uniform subsample without replacement, redrawn every generation |
//!
//! Real data get no special status in Accumulate-Subsample: they can be left
//! out of the subsample. Every setting, toy or language model, asks this
//! module which batches a generation sees and how large its subsample is.

use crate::error::{Error, Result};
use crate::seed::Rng;
use std::fmt;
use std::str::FromStr;

/// How each generation's training set is chosen.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Workflow {
    /// Train only on the newest synthetic data.
    Replace,
    /// Train on the real data plus every synthetic batch so far.
    Accumulate,
    /// Train on a fixed-size uniform subsample of everything so far.
    AccumulateSubsample,
}

/// One batch of a chain's data.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum BatchRef {
    /// The real data D_0.
    Real,
    /// The synthetic batch S_t sampled by the model of generation `t`.
    Synthetic(u32),
}

/// The size of an Accumulate-Subsample training set.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum SubsampleSize {
    /// A fixed number of examples (the toy settings: n).
    Count(usize),
    /// A fraction of the candidate pool, floored (the LM setting: 1/t).
    Fraction(f64),
    /// 1/t of the candidate pool at generation t, i.e. the size of one batch
    /// when all batches have equal size (the paper's LM yaml).
    InverseGeneration,
}

impl SubsampleSize {
    /// The number of examples to draw from a pool of `pool_len` at generation `t`.
    pub fn resolve(self, pool_len: usize, generation: u32) -> Result<usize> {
        let k = match self {
            SubsampleSize::Count(k) => k,
            SubsampleSize::Fraction(f) => {
                if !(f > 0.0 && f <= 1.0) {
                    return Err(Error::invalid("subsample fraction", format!("{f} is not in (0, 1]")));
                }
                (f * pool_len as f64).floor() as usize
            }
            SubsampleSize::InverseGeneration => pool_len / generation.max(1) as usize,
        };
        if k > pool_len {
            return Err(Error::invalid(
                "subsample size",
                format!("{k} is larger than the pool of {pool_len} examples"),
            ));
        }
        Ok(k)
    }
}

impl Workflow {
    /// All workflows, in the order figures and tables show them.
    pub const ALL: [Workflow; 3] = [Workflow::Replace, Workflow::Accumulate, Workflow::AccumulateSubsample];

    /// The name used on the command line, in files and in figures.
    pub fn name(self) -> &'static str {
        match self {
            Workflow::Replace => "replace",
            Workflow::Accumulate => "accumulate",
            Workflow::AccumulateSubsample => "accumulate-subsample",
        }
    }

    /// A human-readable title for figures.
    pub fn title(self) -> &'static str {
        match self {
            Workflow::Replace => "Replace",
            Workflow::Accumulate => "Accumulate",
            Workflow::AccumulateSubsample => "Accumulate-Subsample",
        }
    }

    /// Parses a comma-separated list, where `all` means every workflow.
    pub fn parse_list(s: &str) -> Result<Vec<Workflow>> {
        let mut out = Vec::new();
        for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            if part == "all" {
                out.extend(Workflow::ALL);
            } else {
                out.push(part.parse()?);
            }
        }
        out.sort();
        out.dedup();
        if out.is_empty() {
            return Err(Error::invalid("workflow", "no workflow given"));
        }
        Ok(out)
    }

    /// The batches that make up generation `t`'s candidate pool (t >= 1).
    pub fn training_batches(self, generation: u32) -> Vec<BatchRef> {
        assert!(generation >= 1, "generations are numbered from 1");
        if generation == 1 {
            return vec![BatchRef::Real];
        }
        match self {
            Workflow::Replace => vec![BatchRef::Synthetic(generation - 1)],
            Workflow::Accumulate | Workflow::AccumulateSubsample => {
                std::iter::once(BatchRef::Real).chain((1..generation).map(BatchRef::Synthetic)).collect()
            }
        }
    }

    /// Whether the training set is a subsample of the candidate pool.
    pub fn subsamples(self) -> bool {
        self == Workflow::AccumulateSubsample
    }

    /// Whether the pool keeps every batch (true) or only the newest (false).
    pub fn keeps_history(self) -> bool {
        self != Workflow::Replace
    }
}

/// `k` distinct indices drawn uniformly from `0..pool_len`, in draw order.
///
/// This is the one subsampling routine of thrive (Accumulate-Subsample in every
/// setting). It uses rand's `index::sample`, whose result depends only on the
/// generator's state, `pool_len` and `k`.
pub fn subsample_indices(rng: &mut Rng, pool_len: usize, k: usize) -> Result<Vec<usize>> {
    if k > pool_len {
        return Err(Error::invalid("subsample size", format!("{k} is larger than the pool of {pool_len} examples")));
    }
    Ok(rand::seq::index::sample(rng, pool_len, k).into_vec())
}

impl fmt::Display for Workflow {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Workflow {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        match s.trim().to_ascii_lowercase().replace('_', "-").as_str() {
            "replace" => Ok(Workflow::Replace),
            "accumulate" => Ok(Workflow::Accumulate),
            "accumulate-subsample" | "subsample" | "acc-subsample" => Ok(Workflow::AccumulateSubsample),
            other => Err(Error::invalid(
                "workflow",
                format!("unknown workflow `{other}` (expected replace, accumulate, accumulate-subsample or all)"),
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::seed::{Seeds, Stream};

    #[test]
    fn batches_per_workflow() {
        for w in Workflow::ALL {
            assert_eq!(w.training_batches(1), vec![BatchRef::Real]);
        }
        assert_eq!(Workflow::Replace.training_batches(4), vec![BatchRef::Synthetic(3)]);
        assert_eq!(
            Workflow::Accumulate.training_batches(3),
            vec![BatchRef::Real, BatchRef::Synthetic(1), BatchRef::Synthetic(2)]
        );
        assert_eq!(Workflow::AccumulateSubsample.training_batches(3), Workflow::Accumulate.training_batches(3));
    }

    #[test]
    fn parse_names_and_lists() {
        assert_eq!(Workflow::parse_list("all").unwrap(), Workflow::ALL.to_vec());
        assert_eq!(Workflow::parse_list("accumulate,replace").unwrap(), vec![Workflow::Replace, Workflow::Accumulate]);
        for w in Workflow::ALL {
            assert_eq!(w.name().parse::<Workflow>().unwrap(), w);
        }
        let err = "collapse".parse::<Workflow>().unwrap_err().to_string();
        assert!(err.contains("collapse"), "{err}");
    }

    #[test]
    fn subsample_is_distinct_uniform_and_seeded() {
        let seeds = Seeds::new(3);
        let a = subsample_indices(&mut seeds.stream(Stream::Subsample(2)), 50, 20).unwrap();
        let b = subsample_indices(&mut seeds.stream(Stream::Subsample(2)), 50, 20).unwrap();
        assert_eq!(a, b);
        let mut sorted = a.clone();
        sorted.sort();
        sorted.dedup();
        assert_eq!(sorted.len(), 20);
        assert!(sorted.iter().all(|&i| i < 50));
        assert!(subsample_indices(&mut seeds.stream(Stream::Subsample(2)), 5, 6).is_err());
        // Each index is chosen with probability k/N.
        let mut counts = [0usize; 10];
        for s in 0..4000u64 {
            for i in subsample_indices(&mut Seeds::new(s).stream(Stream::Subsample(1)), 10, 3).unwrap() {
                counts[i] += 1;
            }
        }
        for c in counts {
            assert!((c as f64 - 1200.0).abs() < 5.0 * (4000.0f64 * 0.3 * 0.7).sqrt(), "{counts:?}");
        }
    }

    #[test]
    fn subsample_sizes() {
        assert_eq!(SubsampleSize::Count(10).resolve(30, 3).unwrap(), 10);
        assert_eq!(SubsampleSize::Fraction(0.5).resolve(31, 3).unwrap(), 15);
        assert_eq!(SubsampleSize::InverseGeneration.resolve(300, 3).unwrap(), 100);
        assert!(SubsampleSize::Count(40).resolve(30, 3).is_err());
        assert!(SubsampleSize::Fraction(0.0).resolve(30, 3).is_err());
    }
}
