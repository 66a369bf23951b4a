//! Training-set views: which examples a generation trains on, streamed as Arrow record batches.

use crate::manifest::{BatchKey, FileEntry};
use crate::schema::{batch_to_examples, Columns, Example};
use crate::store::Pool;
use crate::{Error, Result};
use arrow::array::{Array, BooleanArray, RecordBatch};
use parquet::arrow::arrow_reader::{ParquetRecordBatchReader, RowSelection};
use std::path::PathBuf;
use thrive_core::workflow::subsample_indices;
use thrive_core::{Seeds, Stream, SubsampleSize, Workflow};

/// Drops examples whose training text has more than `max_tokens` tokens (the paper drops, never
/// truncates; its limit is 512). Needs the `tokens` column, i.e. a tokenizer at import/sampling.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LengthFilter {
    pub max_tokens: u32,
}

/// How [`View::Mix`] picks its rows.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Pick {
    /// The first rows in pool order (the paper, §5.1).
    First,
    /// A uniform choice without replacement, seeded.
    Random { seed: u64 },
}

/// A selection of the pool.
#[derive(Debug, Clone, PartialEq)]
pub enum View {
    /// What generation `generation` of chain (`workflow`, `chain`) trains on (docs/protocol.md §4.4):
    /// real data at generation 1; then Replace the previous synthetic batch, Accumulate real plus
    /// every synthetic batch so far, Accumulate-Subsample a uniform subsample of that of size
    /// `subsample` (the paper: `SubsampleSize::InverseGeneration`, int(total / t)) drawn from the
    /// chain's `Subsample(t)` stream.
    Training { workflow: Workflow, chain: u64, generation: u32, subsample: SubsampleSize, filter: Option<LengthFilter> },
    /// The value-of-synthetic grid (§5): `num_real` real training rows and `num_synthetic` rows
    /// of the synthetic batch `synthetic`.
    Mix { num_real: usize, num_synthetic: usize, synthetic: BatchKey, pick: Pick, filter: Option<LengthFilter> },
    /// One batch as stored.
    Batch { key: BatchKey, filter: Option<LengthFilter> },
}

impl View {
    /// The paper's training view of a generation (1/t subsample for Accumulate-Subsample).
    pub fn training(workflow: Workflow, chain: u64, generation: u32) -> View {
        View::Training { workflow, chain, generation, subsample: SubsampleSize::InverseGeneration, filter: None }
    }

    /// The same view with a length filter.
    pub fn with_filter(mut self, f: LengthFilter) -> View {
        match &mut self {
            View::Training { filter, .. } | View::Mix { filter, .. } | View::Batch { filter, .. } => *filter = Some(f),
        }
        self
    }
}

/// The rows to read from one file.
#[derive(Debug, Clone)]
enum Rows {
    All,
    /// Sorted row indices.
    Indices(Vec<usize>),
    /// The first n rows that pass the filter.
    First(usize),
}

#[derive(Debug, Clone)]
struct Part {
    entry: FileEntry,
    rows: Rows,
}

/// A streaming reader over a view: yields record batches in the pool schema, file by file, so
/// memory stays bounded by one batch (plus the chosen indices of a subsample).
pub struct ViewReader<'a> {
    pool: &'a Pool,
    parts: std::vec::IntoIter<Part>,
    current: Option<(PathBuf, ParquetRecordBatchReader, Option<usize>)>,
    filter: Option<LengthFilter>,
    rows: usize,
}

impl Pool {
    /// Streams the training set (or other selection) that `view` describes.
    pub fn view(&self, view: &View) -> Result<ViewReader<'_>> {
        ViewReader::new(self, view)
    }
}

impl<'a> ViewReader<'a> {
    fn new(pool: &'a Pool, view: &View) -> Result<Self> {
        let (parts, filter) = plan(pool, view)?;
        let rows = parts
            .iter()
            .map(|p| match &p.rows {
                Rows::All => p.entry.rows as usize,
                Rows::Indices(i) => i.len(),
                Rows::First(n) => *n,
            })
            .sum();
        // With a filter, `All` parts shrink as they stream; the exact count is known only after reading.
        Ok(ViewReader { pool, parts: parts.into_iter(), current: None, filter, rows })
    }

    /// Rows the view will yield (exact without a filter or when the filter was applied while planning).
    pub fn planned_rows(&self) -> usize {
        self.rows
    }

    /// Collects the view into typed examples (for a training set that fits in memory).
    pub fn examples(self) -> Result<Vec<Example>> {
        let mut out = Vec::new();
        for b in self {
            out.extend(batch_to_examples(&b?));
        }
        Ok(out)
    }

    fn next_batch(&mut self) -> Result<Option<RecordBatch>> {
        loop {
            if self.current.is_none() {
                let Some(part) = self.parts.next() else { return Ok(None) };
                let path = self.pool.path_of(&part.entry);
                let (selection, limit) = match part.rows {
                    Rows::All => (None, None),
                    Rows::First(n) => (None, Some(n)),
                    Rows::Indices(idx) => {
                        let ranges = idx.iter().map(|&i| i..i + 1);
                        (Some(RowSelection::from_consecutive_ranges(ranges, part.entry.rows as usize)), None)
                    }
                };
                if limit == Some(0) {
                    continue;
                }
                let reader = self.pool.reader(&part.entry, selection, None)?;
                self.current = Some((path, reader, limit));
            }
            let (path, reader, limit) = self.current.as_mut().expect("set above");
            match reader.next() {
                None => self.current = None,
                Some(batch) => {
                    let batch = batch.map_err(|e| Error::bad_file(path.as_path(), e))?;
                    // Views whose rows were chosen by index were filtered while planning (filter is None).
                    let batch = match self.filter {
                        Some(f) => apply_filter(&batch, f, path)?,
                        None => batch,
                    };
                    let batch = match limit {
                        Some(left) => {
                            let take = (*left).min(batch.num_rows());
                            *left -= take;
                            if *left == 0 {
                                let b = batch.slice(0, take);
                                self.current = None;
                                if b.num_rows() > 0 {
                                    return Ok(Some(b));
                                }
                                continue;
                            }
                            batch.slice(0, take)
                        }
                        None => batch,
                    };
                    if batch.num_rows() > 0 {
                        return Ok(Some(batch));
                    }
                }
            }
        }
    }
}

impl Iterator for ViewReader<'_> {
    type Item = Result<RecordBatch>;
    fn next(&mut self) -> Option<Self::Item> {
        self.next_batch().transpose()
    }
}

fn tokens_mask(batch: &RecordBatch, f: LengthFilter, path: &std::path::Path) -> Result<BooleanArray> {
    let tokens = Columns { batch }.u32("tokens");
    if tokens.null_count() > 0 {
        return Err(Error::bad_file(
            path,
            "column `tokens` has no token counts, so a length filter cannot apply (import or sample with a tokenizer)",
        ));
    }
    Ok(tokens.iter().map(|t| t.map(|t| t <= f.max_tokens)).collect())
}

fn apply_filter(batch: &RecordBatch, f: LengthFilter, path: &std::path::Path) -> Result<RecordBatch> {
    let mask = tokens_mask(batch, f, path)?;
    arrow::compute::filter_record_batch(batch, &mask).map_err(|e| Error::bad_file(path, e))
}

/// Local indices (within each file) of the rows that pass the filter, reading only `tokens`.
fn eligible_rows(pool: &Pool, entry: &FileEntry, filter: Option<LengthFilter>) -> Result<Option<Vec<usize>>> {
    let Some(f) = filter else { return Ok(None) };
    let path = pool.path_of(entry);
    let mut out = Vec::new();
    let mut offset = 0;
    for b in pool.reader(entry, None, Some(&["tokens"]))? {
        let b = b.map_err(|e| Error::bad_file(&path, e))?;
        let mask = tokens_mask(&b, f, &path)?;
        out.extend((0..mask.len()).filter(|&i| mask.value(i)).map(|i| offset + i));
        offset += b.num_rows();
    }
    Ok(Some(out))
}

/// Chooses `k` of the rows of `entries` (after the filter) with `rng`, as sorted per-file indices.
fn choose(
    pool: &Pool,
    entries: &[FileEntry],
    filter: Option<LengthFilter>,
    size: impl FnOnce(usize) -> Result<usize>,
    rng: &mut thrive_core::Rng,
) -> Result<Vec<Part>> {
    let eligible: Vec<Option<Vec<usize>>> =
        entries.iter().map(|e| eligible_rows(pool, e, filter)).collect::<Result<_>>()?;
    let counts: Vec<usize> =
        entries.iter().zip(&eligible).map(|(e, el)| el.as_ref().map_or(e.rows as usize, |v| v.len())).collect();
    let total: usize = counts.iter().sum();
    let k = size(total)?;
    let mut picked = subsample_indices(rng, total, k)?;
    picked.sort_unstable();
    let mut parts = Vec::new();
    let (mut start, mut p) = (0usize, 0usize);
    for ((entry, el), &count) in entries.iter().zip(&eligible).zip(&counts) {
        let end = start + count;
        let mut local = Vec::new();
        while p < picked.len() && picked[p] < end {
            let j = picked[p] - start;
            local.push(el.as_ref().map_or(j, |v| v[j]));
            p += 1;
        }
        if !local.is_empty() {
            parts.push(Part { entry: entry.clone(), rows: Rows::Indices(local) });
        }
        start = end;
    }
    Ok(parts)
}

fn plan(pool: &Pool, view: &View) -> Result<(Vec<Part>, Option<LengthFilter>)> {
    match view {
        View::Batch { key, filter } => Ok((vec![Part { entry: pool.entry(key)?.clone(), rows: Rows::All }], *filter)),
        View::Training { workflow, chain, generation, subsample, filter } => {
            if *generation == 0 {
                return Err(Error::Invalid(
                    "generations are numbered from 1 (generation 1 trains on real data)".into(),
                ));
            }
            let keys = Pool::training_batches(*workflow, *chain, *generation);
            let entries: Vec<FileEntry> = keys.iter().map(|k| pool.entry(k).cloned()).collect::<Result<_>>()?;
            if workflow.subsamples() && *generation > 1 {
                let mut rng = Seeds::new(*chain).stream(Stream::Subsample(*generation));
                let size = |total| subsample.resolve(total, *generation).map_err(Error::from);
                // Indices are drawn among rows that pass the filter, so no second filtering.
                return Ok((choose(pool, &entries, *filter, size, &mut rng)?, None));
            }
            Ok((entries.into_iter().map(|entry| Part { entry, rows: Rows::All }).collect(), *filter))
        }
        View::Mix { num_real, num_synthetic, synthetic, pick, filter } => {
            let real = pool.entry(&BatchKey::real("train"))?.clone();
            let syn = pool.entry(synthetic)?.clone();
            for (n, e) in [(*num_real, &real), (*num_synthetic, &syn)] {
                if n as u64 > e.rows {
                    return Err(Error::Invalid(format!("Mix asks for {n} rows of `{}`, which has {}", e.key, e.rows)));
                }
            }
            match pick {
                Pick::First => Ok((
                    vec![
                        Part { entry: real, rows: Rows::First(*num_real) },
                        Part { entry: syn, rows: Rows::First(*num_synthetic) },
                    ],
                    *filter,
                )),
                Pick::Random { seed } => {
                    let seeds = Seeds::new(*seed);
                    let mut parts = Vec::new();
                    for (i, (n, e)) in [(*num_real, real), (*num_synthetic, syn)].into_iter().enumerate() {
                        let mut rng = seeds.stream(Stream::Custom(MIX_STREAM, i as u32));
                        parts.extend(choose(pool, std::slice::from_ref(&e), *filter, |_| Ok(n), &mut rng)?);
                    }
                    Ok((parts, None))
                }
            }
        }
    }
}

/// Stream tag of the random Mix picks (real rows: index 0, synthetic rows: index 1).
const MIX_STREAM: u16 = 0x4d49;
