//! Flag parsing and output helpers shared by subcommands.

use anyhow::{bail, Context, Result};
use std::path::{Path, PathBuf};
use thrive_core::manifest::Stopwatch;
use thrive_core::{Manifest, ResultsTable};

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

/// Writes results and their manifest, and logs where they are.
pub fn write_results(
    table: &ResultsTable,
    out: &Path,
    config: serde_json::Value,
    seeds: &str,
    watch: &Stopwatch,
) -> Result<PathBuf> {
    table.write_parquet(out).with_context(|| format!("writing {}", out.display()))?;
    let manifest = Manifest {
        tool: "thrive".into(),
        version: thrive_core::VERSION.into(),
        git_commit: thrive_core::GIT_COMMIT.into(),
        setting: table.setting.clone(),
        command: std::env::args().collect(),
        config,
        seeds: seeds.into(),
        started_unix: watch.started_unix(),
        wall_seconds: watch.seconds(),
        threads: rayon::current_num_threads(),
        runs: table.runs.len(),
        rows: table.num_rows(),
        results: out.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default(),
    };
    let mpath = manifest.write_beside(out)?;
    tracing::info!(
        "wrote {} rows ({} runs) to {} in {:.1} s; manifest {}",
        table.num_rows(),
        table.runs.len(),
        out.display(),
        watch.seconds(),
        mpath.display()
    );
    Ok(mpath)
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
