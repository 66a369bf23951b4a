//! Many runs in parallel, with a progress bar and a deterministic result order.

use crate::chain::{run_chain, ChainConfig, Setting};
use crate::error::Result;
use crate::results::{Params, ResultsTable, RunRecord};
use crate::seed::Seeds;
use indicatif::{ProgressBar, ProgressStyle};
use rayon::prelude::*;

/// Applies `f` to every item on rayon's pool and returns the results in item order.
///
/// For grids whose runs are no generation chains (the Gaussian value-of-synthetic grid): as
/// long as `f` reads only its item's seed streams, the output does not depend on the thread count.
pub fn par_map<T: Sync, R: Send>(items: &[T], f: impl Fn(&T) -> R + Sync + Send) -> Vec<R> {
    items.par_iter().with_max_len(1).map(f).collect()
}

/// One run of a grid: a setting instance, its chain configuration and its seed.
pub struct RunSpec<'s, S> {
    pub setting: &'s S,
    /// The columns that describe this run in the results (d, n, dataset, ...).
    pub params: Params,
    pub config: ChainConfig,
    pub seed: u64,
    /// A relative cost estimate; costly runs start first so the tail stays short.
    pub cost: f64,
}

/// Runs every spec on rayon's pool and returns their records in spec order.
///
/// Each run reads only its own seed's streams, so the output is the same for
/// any thread count and equals what the run gives when run alone.
pub fn run_grid<S: Setting>(
    setting_name: &str,
    metric_names: Vec<String>,
    specs: &[RunSpec<'_, S>],
    show_progress: bool,
) -> Result<ResultsTable> {
    let bar = if show_progress { ProgressBar::new(specs.len() as u64) } else { ProgressBar::hidden() };
    bar.set_style(
        ProgressStyle::with_template("{msg} [{elapsed_precise}] {wide_bar} {pos}/{len} runs ({eta} left)")
            .expect("static template")
            .progress_chars("=> "),
    );
    bar.set_message(setting_name.to_string());
    let started = std::time::Instant::now();
    let mut order: Vec<usize> = (0..specs.len()).collect();
    order.sort_by(|&a, &b| specs[b].cost.total_cmp(&specs[a].cost));
    let mut done: Vec<(usize, Result<Vec<f64>>)> = order
        .par_iter()
        .with_max_len(1)
        .map(|&i| {
            let spec = &specs[i];
            let out = run_chain(spec.setting, &spec.config, &Seeds::new(spec.seed));
            bar.inc(1);
            (i, out)
        })
        .collect();
    bar.finish_and_clear();
    // The runs alone, without start-up and writing: what a reference loop in another language
    // times (scripts/bench-*.sh read this line).
    tracing::info!("{setting_name}: {} runs in {:.6} s", specs.len(), started.elapsed().as_secs_f64());
    done.sort_by_key(|(i, _)| *i);
    let mut table = ResultsTable::new(setting_name, metric_names);
    for (i, out) in done {
        let spec = &specs[i];
        table.push(RunRecord {
            params: spec.params.clone(),
            workflow: Some(spec.config.workflow),
            seed: spec.seed,
            metrics: out?,
        })?;
    }
    Ok(table)
}
