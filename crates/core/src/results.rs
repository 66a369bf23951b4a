//! Tidy Parquet results: one row per run and generation.
//!
//! Columns, in order: `setting`, `workflow` (null for runs outside the
//! generation loop, such as the cells of the value-of-synthetic grid), one
//! column per run parameter (Int64, Float64 or Utf8, e.g. `d`, `n`, `sigma2`,
//! `dataset`), `seed` (UInt64), `generation` (UInt32, from 1), and one Float64
//! column per metric.
//! The file's key-value metadata names which columns are parameters
//! (`thrive.params`) and which are metrics (`thrive.metrics`), so readers such
//! as `thrive report` need no per-setting knowledge. Every setting writes
//! through this module.

use crate::error::{Error, Result};
use crate::fsutil::write_atomic;
use crate::workflow::Workflow;
use arrow::array::{Array, ArrayRef, Float64Array, Int64Array, StringArray, UInt32Array, UInt64Array};
use arrow::datatypes::{DataType, Field, Schema};
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use parquet::arrow::arrow_writer::{compute_leaves, ArrowRowGroupWriterFactory};
use parquet::arrow::{add_encoded_arrow_schema_to_metadata, ArrowSchemaConverter};
use parquet::basic::Compression;
use parquet::file::properties::WriterProperties;
use parquet::file::writer::SerializedFileWriter;
use parquet::schema::types::ColumnPath;
use rayon::prelude::*;
use std::collections::HashMap;
use std::fmt;
use std::path::Path;
use std::sync::Arc;

/// The value of one run parameter.
#[derive(Debug, Clone, PartialEq, PartialOrd)]
pub enum ParamValue {
    Int(i64),
    Float(f64),
    Str(String),
}

impl ParamValue {
    fn data_type(&self) -> DataType {
        match self {
            ParamValue::Int(_) => DataType::Int64,
            ParamValue::Float(_) => DataType::Float64,
            ParamValue::Str(_) => DataType::Utf8,
        }
    }
    /// The value as a number, if it is one.
    pub fn as_f64(&self) -> Option<f64> {
        match self {
            ParamValue::Int(v) => Some(*v as f64),
            ParamValue::Float(v) => Some(*v),
            ParamValue::Str(_) => None,
        }
    }
    /// A key usable for grouping (floats compared by bits).
    pub fn group_key(&self) -> String {
        match self {
            ParamValue::Float(v) => format!("f{:016x}", v.to_bits()),
            other => other.to_string(),
        }
    }
}

impl fmt::Display for ParamValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ParamValue::Int(v) => write!(f, "{v}"),
            ParamValue::Float(v) => write!(f, "{v}"),
            ParamValue::Str(v) => f.write_str(v),
        }
    }
}

impl From<i64> for ParamValue {
    fn from(v: i64) -> Self {
        ParamValue::Int(v)
    }
}
impl From<usize> for ParamValue {
    fn from(v: usize) -> Self {
        ParamValue::Int(v as i64)
    }
}
impl From<f64> for ParamValue {
    fn from(v: f64) -> Self {
        ParamValue::Float(v)
    }
}
impl From<&str> for ParamValue {
    fn from(v: &str) -> Self {
        ParamValue::Str(v.to_string())
    }
}
impl From<String> for ParamValue {
    fn from(v: String) -> Self {
        ParamValue::Str(v)
    }
}

/// The named parameters of one run, in column order.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Params(pub Vec<(String, ParamValue)>);

impl Params {
    pub fn new() -> Self {
        Params(Vec::new())
    }
    /// Adds a parameter (builder style).
    pub fn with(mut self, name: &str, value: impl Into<ParamValue>) -> Self {
        self.0.push((name.to_string(), value.into()));
        self
    }
    pub fn get(&self, name: &str) -> Option<&ParamValue> {
        self.0.iter().find(|(k, _)| k == name).map(|(_, v)| v)
    }
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.0.iter().map(|(k, _)| k.as_str())
    }
}

/// One run's results: its description and its metrics per generation.
#[derive(Debug, Clone, PartialEq)]
pub struct RunRecord {
    pub params: Params,
    /// `None` for a run that is no model-collapse chain (one cell of the value-of-synthetic grid).
    pub workflow: Option<Workflow>,
    pub seed: u64,
    /// `generations × metrics`, row-major; generation 1 first.
    pub metrics: Vec<f64>,
}

/// The results of a set of runs of one setting.
#[derive(Debug, Clone, PartialEq)]
pub struct ResultsTable {
    pub setting: String,
    pub metric_names: Vec<String>,
    pub runs: Vec<RunRecord>,
}

const META_SETTING: &str = "thrive.setting";
const META_PARAMS: &str = "thrive.params";
const META_METRICS: &str = "thrive.metrics";
#[cfg(not(test))]
const BATCH_ROWS: usize = 65_536;
/// Rows per Parquet row group (ArrowWriter's default).
#[cfg(not(test))]
const ROW_GROUP_ROWS: usize = 1024 * 1024;
// Small in unit tests, so that their tables span several batches and row groups.
#[cfg(test)]
const BATCH_ROWS: usize = 7;
#[cfg(test)]
const ROW_GROUP_ROWS: usize = 16;

impl ResultsTable {
    pub fn new(setting: &str, metric_names: Vec<String>) -> Self {
        ResultsTable { setting: setting.to_string(), metric_names, runs: Vec::new() }
    }

    /// Adds a run; its parameters must match the first run's names and types.
    pub fn push(&mut self, run: RunRecord) -> Result<()> {
        let m = self.metric_names.len();
        if m == 0 || !run.metrics.len().is_multiple_of(m) {
            return Err(Error::MetricRows { values: run.metrics.len(), metrics: m });
        }
        if let Some(first) = self.runs.first() {
            let same = first.params.0.len() == run.params.0.len()
                && first
                    .params
                    .0
                    .iter()
                    .zip(&run.params.0)
                    .all(|((ka, va), (kb, vb))| ka == kb && va.data_type() == vb.data_type());
            if !same {
                return Err(Error::ParamsDiffer {
                    run: run.params.names().map(str::to_string).collect(),
                    table: first.params.names().map(str::to_string).collect(),
                });
            }
        }
        self.runs.push(run);
        Ok(())
    }

    /// Parameter names, in column order.
    pub fn param_names(&self) -> Vec<String> {
        self.runs.first().map(|r| r.params.0.iter().map(|(k, _)| k.clone()).collect()).unwrap_or_default()
    }

    /// Number of (run, generation) rows.
    pub fn num_rows(&self) -> usize {
        let m = self.metric_names.len().max(1);
        self.runs.iter().map(|r| r.metrics.len() / m).sum()
    }

    /// Generations of run `i`.
    pub fn generations(&self, i: usize) -> usize {
        self.runs[i].metrics.len() / self.metric_names.len().max(1)
    }

    /// Index of a metric column.
    pub fn metric_index(&self, name: &str) -> Option<usize> {
        self.metric_names.iter().position(|m| m == name)
    }

    fn schema(&self) -> Arc<Schema> {
        let mut fields =
            vec![Field::new("setting", DataType::Utf8, false), Field::new("workflow", DataType::Utf8, true)];
        if let Some(first) = self.runs.first() {
            for (k, v) in &first.params.0 {
                fields.push(Field::new(k, v.data_type(), false));
            }
        }
        fields.push(Field::new("seed", DataType::UInt64, false));
        fields.push(Field::new("generation", DataType::UInt32, false));
        for m in &self.metric_names {
            fields.push(Field::new(m, DataType::Float64, true));
        }
        let meta = HashMap::from([
            (META_SETTING.to_string(), self.setting.clone()),
            (META_PARAMS.to_string(), serde_json::to_string(&self.param_names()).expect("strings")),
            (META_METRICS.to_string(), serde_json::to_string(&self.metric_names).expect("strings")),
        ]);
        Arc::new(Schema::new_with_metadata(fields, meta))
    }

    /// Writes the table as one Parquet file, atomically.
    ///
    /// Each column is encoded on its own (rayon, one task per column, its batches in order) and
    /// the chunks are appended in column order, so the bytes do not depend on the thread count.
    pub fn write_parquet(&self, path: &Path) -> Result<()> {
        let schema = self.schema();
        let pq_err = |e: parquet::errors::ParquetError| Error::Parquet { path: path.into(), message: e.to_string() };
        write_atomic(path, |out| {
            // A metric whose values rarely repeat pays a hash per value for a dictionary that the
            // writer drops at its size limit (1 MB: a third of a long write, perf); a small limit
            // drops it early, while metrics with few values (counts, per-run constants) keep theirs.
            let mut props = self
                .metric_names
                .iter()
                .fold(WriterProperties::builder().set_compression(Compression::SNAPPY), |b, m| {
                    b.set_column_dictionary_page_size_limit(ColumnPath::from(m.as_str()), 16 * 1024)
                })
                .build();
            // As ArrowWriter does: readers take the Arrow schema (and our metadata) from here.
            add_encoded_arrow_schema_to_metadata(&schema, &mut props);
            let props = Arc::new(props);
            let parquet_schema =
                ArrowSchemaConverter::new().with_coerce_types(props.coerce_types()).convert(&schema).map_err(pq_err)?;
            let mut writer =
                SerializedFileWriter::new(out, parquet_schema.root_schema_ptr(), props.clone()).map_err(pq_err)?;
            let factory = ArrowRowGroupWriterFactory::new(&writer, schema.clone());
            let mut rows = self.row_iter().peekable();
            let mut group_index = 0;
            while rows.peek().is_some() {
                let group: Vec<_> = rows.by_ref().take(ROW_GROUP_ROWS).collect();
                let writers = factory.create_column_writers(group_index).map_err(pq_err)?;
                let chunks = writers
                    .into_par_iter()
                    .enumerate()
                    .map(|(c, mut w)| {
                        for batch in group.chunks(BATCH_ROWS) {
                            let array = self.column(c, batch);
                            for leaf in compute_leaves(schema.field(c), &array)? {
                                w.write(&leaf)?;
                            }
                        }
                        w.close()
                    })
                    .collect::<parquet::errors::Result<Vec<_>>>()
                    .map_err(pq_err)?;
                let mut row_group = writer.next_row_group().map_err(pq_err)?;
                for chunk in chunks {
                    chunk.append_to_row_group(&mut row_group).map_err(pq_err)?;
                }
                row_group.close().map_err(pq_err)?;
                group_index += 1;
            }
            writer.close().map_err(pq_err)?;
            Ok(())
        })
    }

    /// (run index, generation index) for every row, in file order.
    fn row_iter(&self) -> impl Iterator<Item = (usize, usize)> + '_ {
        (0..self.runs.len()).flat_map(move |i| (0..self.generations(i)).map(move |g| (i, g)))
    }

    /// Column `c` of the schema (setting, workflow, the parameters, seed, generation, the
    /// metrics) for `rows`.
    fn column(&self, c: usize, rows: &[(usize, usize)]) -> ArrayRef {
        let params = self.runs.first().map_or(0, |r| r.params.0.len());
        match c {
            0 => Arc::new(rows.iter().map(|_| Some(self.setting.as_str())).collect::<StringArray>()),
            1 => {
                Arc::new(rows.iter().map(|&(i, _)| self.runs[i].workflow.map(Workflow::name)).collect::<StringArray>())
            }
            c if c < 2 + params => {
                let p = c - 2;
                match &self.runs[0].params.0[p].1 {
                    ParamValue::Int(_) => Arc::new(
                        rows.iter()
                            .map(|&(i, _)| match &self.runs[i].params.0[p].1 {
                                ParamValue::Int(v) => Some(*v),
                                _ => unreachable!("types checked on push"),
                            })
                            .collect::<Int64Array>(),
                    ),
                    ParamValue::Float(_) => Arc::new(
                        rows.iter()
                            .map(|&(i, _)| Some(self.runs[i].params.0[p].1.as_f64().unwrap_or(f64::NAN)))
                            .collect::<Float64Array>(),
                    ),
                    ParamValue::Str(_) => Arc::new(
                        rows.iter()
                            .map(|&(i, _)| Some(self.runs[i].params.0[p].1.to_string()))
                            .collect::<StringArray>(),
                    ),
                }
            }
            c if c == 2 + params => {
                Arc::new(rows.iter().map(|&(i, _)| Some(self.runs[i].seed)).collect::<UInt64Array>())
            }
            c if c == 3 + params => Arc::new(rows.iter().map(|&(_, g)| Some(g as u32 + 1)).collect::<UInt32Array>()),
            c => {
                let (k, m) = (c - 4 - params, self.metric_names.len());
                Arc::new(rows.iter().map(|&(i, g)| Some(self.runs[i].metrics[g * m + k])).collect::<Float64Array>())
            }
        }
    }

    /// Reads a results file written by [`ResultsTable::write_parquet`].
    pub fn read_parquet(path: &Path) -> Result<Self> {
        let bad = |message: String| Error::BadResults { path: path.into(), message };
        let file = std::fs::File::open(path).map_err(|e| Error::io(path, e))?;
        let builder = ParquetRecordBatchReaderBuilder::try_new(file)
            .map_err(|e| bad(format!("not a readable Parquet file: {e}")))?;
        let meta = builder.schema().metadata().clone();
        let get = |k: &str| {
            meta.get(k).cloned().ok_or_else(|| bad(format!("missing `{k}` metadata: not a thrive results file")))
        };
        let setting = get(META_SETTING)?;
        let params: Vec<String> = serde_json::from_str(&get(META_PARAMS)?).map_err(|e| bad(e.to_string()))?;
        let metrics: Vec<String> = serde_json::from_str(&get(META_METRICS)?).map_err(|e| bad(e.to_string()))?;
        let reader = builder.build().map_err(|e| bad(e.to_string()))?;
        let mut table = ResultsTable::new(&setting, metrics.clone());
        let mut index: HashMap<(Vec<String>, Option<Workflow>, u64), usize> = HashMap::new();
        for batch in reader {
            let batch = batch.map_err(|e| bad(e.to_string()))?;
            let col = |name: &str| batch.column_by_name(name).ok_or_else(|| bad(format!("missing column `{name}`")));
            let workflow = downcast::<StringArray>(col("workflow")?, "workflow", &bad)?;
            let seed = downcast::<UInt64Array>(col("seed")?, "seed", &bad)?;
            let gen = downcast::<UInt32Array>(col("generation")?, "generation", &bad)?;
            let param_cols: Vec<&ArrayRef> = params.iter().map(|p| col(p)).collect::<Result<_>>()?;
            let metric_cols: Vec<&Float64Array> =
                metrics.iter().map(|m| downcast::<Float64Array>(col(m)?, m, &bad)).collect::<Result<_>>()?;
            for r in 0..batch.num_rows() {
                let w: Option<Workflow> = if workflow.is_null(r) {
                    None
                } else {
                    Some(workflow.value(r).parse().map_err(|e: Error| bad(e.to_string()))?)
                };
                let mut p = Params::new();
                for (name, c) in params.iter().zip(&param_cols) {
                    let v = if let Some(a) = c.as_any().downcast_ref::<Int64Array>() {
                        ParamValue::Int(a.value(r))
                    } else if let Some(a) = c.as_any().downcast_ref::<Float64Array>() {
                        ParamValue::Float(a.value(r))
                    } else if let Some(a) = c.as_any().downcast_ref::<StringArray>() {
                        ParamValue::Str(a.value(r).to_string())
                    } else {
                        return Err(bad(format!("column `{name}` has unsupported type {}", c.data_type())));
                    };
                    p.0.push((name.clone(), v));
                }
                let key = (p.0.iter().map(|(_, v)| v.group_key()).collect::<Vec<_>>(), w, seed.value(r));
                let i = *index.entry(key).or_insert_with(|| {
                    table.runs.push(RunRecord { params: p, workflow: w, seed: seed.value(r), metrics: Vec::new() });
                    table.runs.len() - 1
                });
                let run = &mut table.runs[i];
                let expected = run.metrics.len() / metrics.len().max(1) + 1;
                if gen.value(r) as usize != expected {
                    return Err(bad(format!(
                        "run (workflow {}, seed {}) has generation {} where {expected} was expected",
                        w.map_or("none", Workflow::name),
                        seed.value(r),
                        gen.value(r)
                    )));
                }
                run.metrics.extend(metric_cols.iter().map(|c| if c.is_null(r) { f64::NAN } else { c.value(r) }));
            }
        }
        Ok(table)
    }
}

fn downcast<'a, T: 'static>(a: &'a ArrayRef, name: &str, bad: &dyn Fn(String) -> Error) -> Result<&'a T> {
    a.as_any().downcast_ref::<T>().ok_or_else(|| bad(format!("column `{name}` has type {}", a.data_type())))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parquet_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("r.parquet");
        let mut t = ResultsTable::new("toy", vec!["a".into(), "b".into()]);
        for seed in 0..3u64 {
            for w in Workflow::ALL {
                t.push(RunRecord {
                    params: Params::new().with("d", 3usize).with("h", 0.5).with("dataset", "moons"),
                    workflow: Some(w),
                    seed,
                    metrics: (0..8).map(|i| i as f64 + seed as f64).collect(),
                })
                .unwrap();
            }
        }
        t.write_parquet(&path).unwrap();
        let back = ResultsTable::read_parquet(&path).unwrap();
        assert_eq!(back, t);
        assert_eq!(back.num_rows(), 36);
        // No temporary file is left behind.
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
    }

    #[test]
    fn runs_without_workflow_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("r.parquet");
        let mut t = ResultsTable::new("cells", vec!["loss".into()]);
        for (w, seed) in [(None, 0u64), (None, 1), (Some(Workflow::Accumulate), 0)] {
            t.push(RunRecord {
                params: Params::new().with("k", 4usize),
                workflow: w,
                seed,
                metrics: vec![seed as f64],
            })
            .unwrap();
        }
        t.write_parquet(&path).unwrap();
        assert_eq!(ResultsTable::read_parquet(&path).unwrap(), t);
    }

    #[test]
    fn mismatched_params_are_rejected() {
        let mut t = ResultsTable::new("toy", vec!["a".into()]);
        t.push(RunRecord {
            params: Params::new().with("d", 1usize),
            workflow: Some(Workflow::Replace),
            seed: 0,
            metrics: vec![1.0],
        })
        .unwrap();
        let err = t
            .push(RunRecord {
                params: Params::new().with("d", 1.5),
                workflow: Some(Workflow::Replace),
                seed: 0,
                metrics: vec![1.0],
            })
            .unwrap_err();
        assert!(err.to_string().contains("differ"));
    }

    #[test]
    fn non_results_file_is_named_in_error() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("junk.parquet");
        std::fs::write(&path, b"not parquet at all").unwrap();
        let err = ResultsTable::read_parquet(&path).unwrap_err().to_string();
        assert!(err.contains("junk.parquet"), "{err}");
    }
}
