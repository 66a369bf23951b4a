//! The pool's Arrow schema and the typed rows the sampler and importers write.

use crate::{Error, Result};
use arrow::array::{Array, ArrayRef, Float64Array, RecordBatch, StringArray, StringBuilder, UInt32Array, UInt64Array};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use std::path::Path;
use std::sync::{Arc, OnceLock};

/// Version of the file layout and schema. Readers refuse files from a newer version.
pub const SCHEMA_VERSION: u32 = 1;

/// Parquet key-value metadata key holding [`SCHEMA_VERSION`].
pub(crate) const VERSION_KEY: &str = "thrive.pool.schema_version";

/// Every column, in order, with its type and nullability.
pub const COLUMNS: &[(&str, DataType, bool)] = &[
    ("example_id", DataType::Utf8, false),
    // "real" or "synthetic".
    ("source", DataType::Utf8, false),
    // Synthetic rows: the chain's workflow and seed. Real rows are shared by every chain: null.
    ("workflow", DataType::Utf8, true),
    ("chain", DataType::UInt64, true),
    // 0 for real data; k for data sampled by generation k's model.
    ("generation", DataType::UInt32, false),
    ("split", DataType::Utf8, false),
    ("prompt", DataType::Utf8, false),
    ("response", DataType::Utf8, false),
    // Tokens of the training text (with BOS and EOS) under the tokenizer given at write time.
    ("tokens", DataType::UInt32, true),
    // Real rows: where they came from, and any further input columns as a JSON object.
    ("dataset", DataType::Utf8, true),
    ("row_index", DataType::UInt64, true),
    ("extra", DataType::Utf8, true),
    // Synthetic rows: the model and sampler that produced them, and the filter outcome.
    ("base_model", DataType::Utf8, true),
    ("adapter_path", DataType::Utf8, true),
    ("adapter_sha256", DataType::Utf8, true),
    ("temperature", DataType::Float64, true),
    ("top_p", DataType::Float64, true),
    ("top_k", DataType::UInt32, true),
    ("max_new_tokens", DataType::UInt32, true),
    ("call_seed", DataType::UInt64, true),
    ("sample_index", DataType::UInt64, true),
    ("filter", DataType::Utf8, true),
];

/// The Arrow schema of every pool file.
pub fn pool_schema() -> SchemaRef {
    static SCHEMA: OnceLock<SchemaRef> = OnceLock::new();
    SCHEMA
        .get_or_init(|| {
            Arc::new(Schema::new(
                COLUMNS.iter().map(|(n, t, null)| Field::new(*n, t.clone(), *null)).collect::<Vec<_>>(),
            ))
        })
        .clone()
}

/// The model and sampler settings behind one synthetic example.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Provenance {
    /// Base model id or path (e.g. `google/gemma-2-2b`).
    pub base_model: String,
    /// The adapter (or fine-tuned weights) checkpoint that sampled it, and its SHA-256.
    pub adapter_path: Option<String>,
    pub adapter_sha256: Option<String>,
    pub temperature: f64,
    pub top_p: f64,
    /// `None`: no top-k cut.
    pub top_k: Option<u32>,
    pub max_new_tokens: u32,
    /// The sampling call's seed and the sample's index within it: together they fix its randomness.
    pub call_seed: u64,
    pub sample_index: u64,
    /// The outcome of the parse/length filter (`accepted` for rows in the pool).
    pub filter: String,
}

/// Where an example came from.
#[derive(Debug, Clone, PartialEq)]
pub enum Origin {
    /// A row of a real data set.
    Real { dataset: String, row_index: u64, extra: Option<String> },
    /// Sampled by generation `generation`'s model of (workflow, chain).
    Synthetic { workflow: String, chain: u64, generation: u32, provenance: Provenance },
}

/// One example as it is stored.
#[derive(Debug, Clone, PartialEq)]
pub struct Example {
    pub example_id: String,
    pub split: String,
    pub prompt: String,
    pub response: String,
    pub tokens: Option<u32>,
    pub origin: Origin,
}

impl Example {
    /// A real example; its id hashes the dataset, split, row and text.
    pub fn real(dataset: &str, split: &str, row_index: u64, prompt: String, response: String) -> Self {
        let id = crate::example_id(&["real", dataset, split, &row_index.to_string(), &prompt, &response]);
        Example {
            example_id: id,
            split: split.into(),
            prompt,
            response,
            tokens: None,
            origin: Origin::Real { dataset: dataset.into(), row_index, extra: None },
        }
    }

    /// A synthetic example; its id hashes the chain, generation, call seed, sample index and text.
    pub fn synthetic(
        workflow: &str,
        chain: u64,
        generation: u32,
        prompt: String,
        response: String,
        provenance: Provenance,
    ) -> Self {
        let id = crate::example_id(&[
            "synthetic",
            workflow,
            &chain.to_string(),
            &generation.to_string(),
            &provenance.call_seed.to_string(),
            &provenance.sample_index.to_string(),
            &prompt,
            &response,
        ]);
        Example {
            example_id: id,
            split: "train".into(),
            prompt,
            response,
            tokens: None,
            origin: Origin::Synthetic { workflow: workflow.into(), chain, generation, provenance },
        }
    }

    /// "real" or "synthetic".
    pub fn source(&self) -> &'static str {
        match self.origin {
            Origin::Real { .. } => "real",
            Origin::Synthetic { .. } => "synthetic",
        }
    }
}

/// Builds a record batch in the pool schema.
pub fn examples_to_batch(rows: &[Example]) -> Result<RecordBatch> {
    let str_col = |f: &dyn Fn(&Example) -> Option<&str>| -> ArrayRef {
        let mut b = StringBuilder::with_capacity(rows.len(), rows.len() * 16);
        for r in rows {
            b.append_option(f(r));
        }
        Arc::new(b.finish())
    };
    fn real(r: &Example) -> Option<(&str, u64, Option<&str>)> {
        match &r.origin {
            Origin::Real { dataset, row_index, extra } => Some((dataset.as_str(), *row_index, extra.as_deref())),
            _ => None,
        }
    }
    fn syn(r: &Example) -> Option<(&str, u64, u32, &Provenance)> {
        match &r.origin {
            Origin::Synthetic { workflow, chain, generation, provenance } => {
                Some((workflow.as_str(), *chain, *generation, provenance))
            }
            _ => None,
        }
    }
    let columns: Vec<ArrayRef> = vec![
        str_col(&|r| Some(&r.example_id)),
        str_col(&|r| Some(r.source())),
        str_col(&|r| syn(r).map(|s| s.0)),
        Arc::new(rows.iter().map(|r| syn(r).map(|s| s.1)).collect::<UInt64Array>()),
        Arc::new(rows.iter().map(|r| Some(syn(r).map(|s| s.2).unwrap_or(0))).collect::<UInt32Array>()),
        str_col(&|r| Some(&r.split)),
        str_col(&|r| Some(&r.prompt)),
        str_col(&|r| Some(&r.response)),
        Arc::new(rows.iter().map(|r| r.tokens).collect::<UInt32Array>()),
        str_col(&|r| real(r).map(|x| x.0)),
        Arc::new(rows.iter().map(|r| real(r).map(|x| x.1)).collect::<UInt64Array>()),
        str_col(&|r| real(r).and_then(|x| x.2)),
        str_col(&|r| syn(r).map(|s| s.3.base_model.as_str())),
        str_col(&|r| syn(r).and_then(|s| s.3.adapter_path.as_deref())),
        str_col(&|r| syn(r).and_then(|s| s.3.adapter_sha256.as_deref())),
        Arc::new(rows.iter().map(|r| syn(r).map(|s| s.3.temperature)).collect::<Float64Array>()),
        Arc::new(rows.iter().map(|r| syn(r).map(|s| s.3.top_p)).collect::<Float64Array>()),
        Arc::new(rows.iter().map(|r| syn(r).and_then(|s| s.3.top_k)).collect::<UInt32Array>()),
        Arc::new(rows.iter().map(|r| syn(r).map(|s| s.3.max_new_tokens)).collect::<UInt32Array>()),
        Arc::new(rows.iter().map(|r| syn(r).map(|s| s.3.call_seed)).collect::<UInt64Array>()),
        Arc::new(rows.iter().map(|r| syn(r).map(|s| s.3.sample_index)).collect::<UInt64Array>()),
        str_col(&|r| syn(r).map(|s| s.3.filter.as_str())),
    ];
    RecordBatch::try_new(pool_schema(), columns).map_err(|e| Error::Invalid(format!("building a pool batch: {e}")))
}

/// Checks that `schema` has every pool column with the right type; the error names the file and column.
pub(crate) fn check_schema(path: &Path, schema: &Schema) -> Result<()> {
    for (name, ty, _) in COLUMNS {
        match schema.field_with_name(name) {
            Ok(f) if f.data_type() == ty => {}
            Ok(f) => {
                return Err(Error::bad_file(
                    path,
                    format!("column `{name}` has type {} (expected {ty})", f.data_type()),
                ))
            }
            Err(_) => return Err(Error::bad_file(path, format!("missing column `{name}`"))),
        }
    }
    Ok(())
}

/// Typed access to the columns of a pool batch.
pub(crate) struct Columns<'a> {
    pub batch: &'a RecordBatch,
}

impl<'a> Columns<'a> {
    pub fn str(&self, name: &str) -> &'a StringArray {
        self.batch.column_by_name(name).and_then(|c| c.as_any().downcast_ref()).expect("schema checked")
    }
    pub fn u32(&self, name: &str) -> &'a UInt32Array {
        self.batch.column_by_name(name).and_then(|c| c.as_any().downcast_ref()).expect("schema checked")
    }
    pub fn u64(&self, name: &str) -> &'a UInt64Array {
        self.batch.column_by_name(name).and_then(|c| c.as_any().downcast_ref()).expect("schema checked")
    }
    pub fn f64(&self, name: &str) -> &'a Float64Array {
        self.batch.column_by_name(name).and_then(|c| c.as_any().downcast_ref()).expect("schema checked")
    }
}

fn opt_str(a: &StringArray, i: usize) -> Option<String> {
    a.is_valid(i).then(|| a.value(i).to_string())
}

/// Reads typed examples back from a pool batch (schema already checked).
pub fn batch_to_examples(batch: &RecordBatch) -> Vec<Example> {
    let c = Columns { batch };
    let (ids, source, split, prompt, response) =
        (c.str("example_id"), c.str("source"), c.str("split"), c.str("prompt"), c.str("response"));
    let tokens = c.u32("tokens");
    (0..batch.num_rows())
        .map(|i| {
            let origin = if source.value(i) == "real" {
                Origin::Real {
                    dataset: opt_str(c.str("dataset"), i).unwrap_or_default(),
                    row_index: c.u64("row_index").value(i),
                    extra: opt_str(c.str("extra"), i),
                }
            } else {
                let top_k = c.u32("top_k");
                Origin::Synthetic {
                    workflow: opt_str(c.str("workflow"), i).unwrap_or_default(),
                    chain: c.u64("chain").value(i),
                    generation: c.u32("generation").value(i),
                    provenance: Provenance {
                        base_model: opt_str(c.str("base_model"), i).unwrap_or_default(),
                        adapter_path: opt_str(c.str("adapter_path"), i),
                        adapter_sha256: opt_str(c.str("adapter_sha256"), i),
                        temperature: c.f64("temperature").value(i),
                        top_p: c.f64("top_p").value(i),
                        top_k: top_k.is_valid(i).then(|| top_k.value(i)),
                        max_new_tokens: c.u32("max_new_tokens").value(i),
                        call_seed: c.u64("call_seed").value(i),
                        sample_index: c.u64("sample_index").value(i),
                        filter: opt_str(c.str("filter"), i).unwrap_or_default(),
                    },
                }
            };
            Example {
                example_id: ids.value(i).to_string(),
                split: split.value(i).to_string(),
                prompt: prompt.value(i).to_string(),
                response: response.value(i).to_string(),
                tokens: tokens.is_valid(i).then(|| tokens.value(i)),
                origin,
            }
        })
        .collect()
}
