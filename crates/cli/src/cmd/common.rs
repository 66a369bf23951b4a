//! Flag parsing shared by subcommands: table formats, the loop knobs, seed and number lists.

use anyhow::{bail, Result};

/// How `report` and `status` print their tables.
#[derive(Clone, Copy, PartialEq, Eq, Debug, clap::ValueEnum)]
pub enum Format {
    /// Aligned text.
    Plain,
    /// GitHub-flavoured Markdown tables.
    Markdown,
    /// CSV (full-precision numbers).
    Csv,
    /// JSON (full-precision numbers).
    Json,
}

impl Format {
    /// `--format`, where `--json` (kept from before `--format`) stands for `--format json`.
    pub fn resolve(format: Format, json: bool) -> Format {
        if json {
            Format::Json
        } else {
            format
        }
    }
}

/// The loop knobs beyond the paper (thrive_core::knobs), shared by every toy setting. Each takes
/// a comma-separated list, which makes it a grid axis; a knob that is set becomes a results column.
#[derive(clap::Args, Debug, Clone)]
pub struct KnobArgs {
    /// Fraction p of real examples in every training set after the first, drawn afresh from the
    /// real data each generation; the rest synthetic, n in all (Replace with 0.1: Shumailov et al.
    /// 2024). No effect under Accumulate. [default: 0]
    #[arg(long, allow_hyphen_values = true)]
    keep_real: Option<String>,
    /// New real examples from the true distribution joining the pool every generation after the
    /// first, like a synthetic batch (Accumulate keeps them, Replace uses them once: Alemohammad
    /// et al.'s fresh-data loop). Not for --data files. [default: 0]
    #[arg(long, allow_hyphen_values = true)]
    fresh_real: Option<String>,
    /// Sampling temperature τ: Gaussian covariance × τ², KDE bandwidth × τ, discrete p^(1/τ)
    /// renormalised, linear-regression label noise × τ. [default: 1]
    #[arg(long, allow_hyphen_values = true)]
    temperature: Option<String>,
    /// Continuous settings: redraw a sample whose Mahalanobis distance under the fitted model
    /// exceeds k. [default: none]
    #[arg(long, allow_hyphen_values = true)]
    truncate: Option<String>,
    /// Discrete setting: sample from the smallest set of most probable outcomes whose mass
    /// reaches q, renormalised. [default: 1]
    #[arg(long, allow_hyphen_values = true)]
    top_p: Option<String>,
    /// The verifier's bias b along the first axis (Gaussian: it accepts by Mahalanobis distance
    /// under N(μ₀ + b·e₁, Σ₀); linear regression: β' = w* + b·e₁). [default: 0]
    #[arg(long, allow_hyphen_values = true)]
    verifier_bias: Option<String>,
    /// Keep a synthetic sample only if the verifier passes it, drawing until n are kept:
    /// Gaussian distance ≤ c, linear regression |y − xᵀβ'| ≤ c‖x‖ + √(2/π)σ (Yi et al.), KDE
    /// log-density under generation 1's fit ≥ c. Not for discrete. [default: no selection]
    #[arg(long, allow_hyphen_values = true)]
    select_threshold: Option<String>,
    /// Draws allowed per generation for selection and truncation, as a multiple of n; a batch
    /// not filled by then is an error naming the generation and the filter. [default: 100]
    #[arg(long, allow_hyphen_values = true)]
    max_draws: Option<String>,
    /// Weight w of every real example in a fit relative to a synthetic one (the real data, the
    /// points kept by --keep-real or --real, fresh ones): an integer w fits as w copies would
    /// (weighted moments, kernels, least squares and counts). [default: 1]
    #[arg(long, allow_hyphen_values = true)]
    real_weight: Option<String>,
}

impl KnobArgs {
    /// The knob grid; every value is checked before anything runs.
    pub fn grid(&self) -> Result<thrive_core::KnobGrid> {
        let mut grid = thrive_core::KnobGrid::default();
        for (name, flag, given) in [
            ("keep_real", "--keep-real", &self.keep_real),
            ("fresh_real", "--fresh-real", &self.fresh_real),
            ("temperature", "--temperature", &self.temperature),
            ("truncate", "--truncate", &self.truncate),
            ("top_p", "--top-p", &self.top_p),
            ("verifier_bias", "--verifier-bias", &self.verifier_bias),
            ("select_threshold", "--select-threshold", &self.select_threshold),
            ("max_draws", "--max-draws", &self.max_draws),
            ("real_weight", "--real-weight", &self.real_weight),
        ] {
            if let Some(text) = given {
                grid = grid.with(name, parse_list::<f64>(flag, text)?).map_err(flag_error)?;
            }
        }
        grid.combinations().map_err(flag_error)?;
        Ok(grid)
    }
}

/// Runs `specs` once per knob combination (`thrive_core::KnobGrid::expand`), logging the grid's notes.
pub fn expand_knobs<'s, S: thrive_core::Setting>(
    grid: &thrive_core::KnobGrid,
    specs: Vec<thrive_core::RunSpec<'s, S>>,
    workflows: &[thrive_core::Workflow],
) -> Result<Vec<thrive_core::RunSpec<'s, S>>> {
    for note in grid.notes(workflows) {
        tracing::warn!("{note}");
    }
    let specs = grid.expand(specs).map_err(flag_error)?;
    for note in thrive_core::KnobGrid::run_notes(&specs) {
        tracing::warn!("{note}");
    }
    Ok(specs)
}

/// Turns a library error about a parameter into one that names the flag (`--dim: must be at least 1`).
pub fn flag_error(e: thrive_core::Error) -> anyhow::Error {
    match e {
        thrive_core::Error::InvalidParameter { name, reason } => anyhow::anyhow!("--{name}: {reason}"),
        other => other.into(),
    }
}

/// Parses a seed list: `0..100` (half-open), `0..=9`, `3`, or `1,5,9`.
pub fn parse_seeds(s: &str) -> Result<Vec<u64>> {
    let s = s.trim();
    let seeds: Vec<u64> = if let Some((a, b)) = s.split_once("..=") {
        let (a, b): (u64, u64) = (a.trim().parse()?, b.trim().parse()?);
        (a..=b).collect()
    } else if let Some((a, b)) = s.split_once("..") {
        let (a, b): (u64, u64) = (a.trim().parse()?, b.trim().parse()?);
        (a..b).collect()
    } else {
        s.split(',').map(|p| p.trim().parse::<u64>()).collect::<Result<_, _>>()?
    };
    if seeds.is_empty() {
        bail!("--seeds `{s}` selects no seed");
    }
    Ok(seeds)
}

/// Parses a comma-separated list of numbers for a flag.
pub fn parse_list<T: std::str::FromStr>(flag: &str, s: &str) -> Result<Vec<T>>
where
    T::Err: std::fmt::Display,
{
    let out: Vec<T> = s
        .split(',')
        .map(str::trim)
        .filter(|p| !p.is_empty())
        .map(|p| p.parse::<T>().map_err(|e| anyhow::anyhow!("{flag}: `{p}`: {e}")))
        .collect::<Result<_>>()?;
    if out.is_empty() {
        bail!("{flag}: empty list");
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seeds() {
        assert_eq!(parse_seeds("0..3").unwrap(), vec![0, 1, 2]);
        assert_eq!(parse_seeds("2..=3").unwrap(), vec![2, 3]);
        assert_eq!(parse_seeds("5").unwrap(), vec![5]);
        assert_eq!(parse_seeds("1,4").unwrap(), vec![1, 4]);
        assert!(parse_seeds("3..3").is_err());
        assert!(parse_seeds("x").is_err());
    }
}
