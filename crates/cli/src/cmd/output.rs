//! What the toy settings' commands write when their runs are done: the results file and its
//! manifest, TensorBoard event files, and with `--report` the figures and summary.

use anyhow::{bail, Context, Result};
use std::path::{Path, PathBuf};
use thrive_core::manifest::Stopwatch;
use thrive_core::{Manifest, ResultsTable};

/// The output flags every toy setting shares beside its own `--out`.
#[derive(clap::Args, Debug, Clone)]
pub struct OutputArgs {
    /// Draw the figures and print the summary when done (as `thrive report`).
    #[arg(long)]
    report: bool,
    /// Also write the per-generation metrics as TensorBoard event files under DIR, one
    /// TensorBoard run per results run (`tensorboard --logdir DIR`).
    #[arg(long, value_name = "DIR")]
    tensorboard: Option<PathBuf>,
}

impl OutputArgs {
    /// Before a run: `--tensorboard DIR` must be writable (checked before hours of work).
    pub fn check(&self) -> Result<()> {
        if let Some(dir) = &self.tensorboard {
            thrive_core::tensorboard::check_dir(dir)?;
        }
        Ok(())
    }

    /// After a run: the results and their manifest in `out`, the per-generation metrics as
    /// TensorBoard event files, then with `--report` the figures and summary.
    pub fn finish(
        &self,
        table: &ResultsTable,
        out: &Path,
        config: serde_json::Value,
        seeds: &str,
        watch: &Stopwatch,
    ) -> Result<()> {
        write_results(table, out, config, seeds, watch)?;
        if let Some(dir) = &self.tensorboard {
            thrive_core::tensorboard::write_table(table, dir)?;
            tracing::info!("TensorBoard event files in {} (tensorboard --logdir {0})", dir.display());
        }
        if self.report {
            super::report::report_table(table, out)?;
        }
        Ok(())
    }
}

/// `--out`: a results file must end in .parquet (checked before anything runs).
pub fn check_parquet(out: &Path) -> Result<()> {
    if out.extension().and_then(|e| e.to_str()) != Some("parquet") {
        bail!("--out {}: the results file must end in .parquet", out.display());
    }
    Ok(())
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
