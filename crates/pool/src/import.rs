//! Importing real data: HelpSteer2 as distributed (jsonl, jsonl.gz, Parquet; train and validation)
//! from a local path or the Hugging Face Hub, and any jsonl/Parquet file with a column mapping.

use crate::schema::{Example, Origin};
use crate::{Error, Result};
use arrow::array::{Array, AsArray, RecordBatch};
use arrow::datatypes::DataType;
use arrow::util::display::{ArrayFormatter, FormatOptions};
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use std::io::BufRead;
use std::path::{Path, PathBuf};
use tokenizers::Tokenizer;

/// Which input columns hold the prompt and the response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ColumnMapping {
    pub prompt: String,
    pub response: String,
}

impl Default for ColumnMapping {
    fn default() -> Self {
        ColumnMapping { prompt: "prompt".into(), response: "response".into() }
    }
}

/// Counts the tokens of an example's training text the way fine-tuning sees it (docs/protocol.md §4.1):
/// the tokenizer's own special tokens (Gemma adds `<bos>`), plus EOS when it is not already last.
pub struct TokenCounter {
    tokenizer: Tokenizer,
    eos: u32,
}

const EOS_NAMES: [&str; 4] = ["<eos>", "</s>", "<|endoftext|>", "<|end_of_text|>"];

impl TokenCounter {
    /// Loads `tokenizer.json`; it must have an EOS token.
    pub fn from_file(path: &Path) -> Result<Self> {
        let tokenizer =
            Tokenizer::from_file(path).map_err(|e| Error::bad_input(path, format!("not a tokenizer: {e}")))?;
        let eos = EOS_NAMES.iter().find_map(|n| tokenizer.token_to_id(n)).ok_or_else(|| {
            Error::bad_input(path, format!("the tokenizer has no EOS token (looked for {})", EOS_NAMES.join(", ")))
        })?;
        Ok(TokenCounter { tokenizer, eos })
    }

    /// Token counts of many (prompt, response) pairs (in parallel inside tokenizers).
    pub fn count(&self, pairs: &[(&str, &str)]) -> Result<Vec<u32>> {
        let texts: Vec<String> = pairs.iter().map(|(p, r)| thrive_core::text_format::training_text(p, r)).collect();
        let encodings =
            self.tokenizer.encode_batch(texts, true).map_err(|e| Error::Invalid(format!("tokenizing: {e}")))?;
        Ok(encodings
            .iter()
            .map(|e| {
                let ids = e.get_ids();
                (ids.len() + usize::from(ids.last() != Some(&self.eos))) as u32
            })
            .collect())
    }

    /// Fills the `tokens` field of every example.
    pub fn annotate(&self, rows: &mut [Example]) -> Result<()> {
        for chunk in rows.chunks_mut(4096) {
            let pairs: Vec<(&str, &str)> = chunk.iter().map(|r| (r.prompt.as_str(), r.response.as_str())).collect();
            let counts = self.count(&pairs)?;
            for (r, c) in chunk.iter_mut().zip(counts) {
                r.tokens = Some(c);
            }
        }
        Ok(())
    }
}

/// Reads a jsonl, jsonl.gz or Parquet file of (prompt, response) rows as real examples of
/// `dataset`/`split`. Columns other than the mapped two are kept as a JSON object in `extra`.
pub fn import_file(path: &Path, mapping: &ColumnMapping, dataset: &str, split: &str) -> Result<Vec<Example>> {
    let name = path.file_name().and_then(|n| n.to_str()).unwrap_or_default().to_ascii_lowercase();
    let rows = if name.ends_with(".parquet") {
        read_parquet(path, mapping)?
    } else if name.ends_with(".jsonl") || name.ends_with(".json") {
        let f = std::fs::File::open(path).map_err(|e| Error::io(path, e))?;
        read_jsonl(path, std::io::BufReader::new(f), mapping)?
    } else if name.ends_with(".jsonl.gz") || name.ends_with(".json.gz") {
        let f = std::fs::File::open(path).map_err(|e| Error::io(path, e))?;
        read_jsonl(path, std::io::BufReader::new(flate2::read::GzDecoder::new(f)), mapping)?
    } else {
        return Err(Error::bad_input(path, "unknown format (expected .jsonl, .jsonl.gz or .parquet)"));
    };
    if rows.is_empty() {
        return Err(Error::bad_input(path, "no rows"));
    }
    Ok(rows
        .into_iter()
        .enumerate()
        .map(|(i, (prompt, response, extra))| {
            let mut e = Example::real(dataset, split, i as u64, prompt, response);
            if let Origin::Real { extra: x, .. } = &mut e.origin {
                *x = extra;
            }
            e
        })
        .collect())
}

type Row = (String, String, Option<String>);

fn read_jsonl(path: &Path, reader: impl BufRead, mapping: &ColumnMapping) -> Result<Vec<Row>> {
    let mut out = Vec::new();
    for (i, line) in reader.lines().enumerate() {
        let line = line.map_err(|e| Error::bad_input(path, format!("line {}: {e}", i + 1)))?;
        if line.trim().is_empty() {
            continue;
        }
        let value: serde_json::Value = serde_json::from_str(&line)
            .map_err(|e| Error::bad_input(path, format!("line {}: not JSON: {e}", i + 1)))?;
        let serde_json::Value::Object(mut obj) = value else {
            return Err(Error::bad_input(path, format!("line {}: not a JSON object", i + 1)));
        };
        let mut take = |col: &str| match obj.remove(col) {
            Some(serde_json::Value::String(s)) => Ok(s),
            Some(other) => Err(Error::bad_input(
                path,
                format!("line {}: column `{col}` is {} (expected a string)", i + 1, kind(&other)),
            )),
            None => Err(Error::bad_input(path, format!("line {}: missing column `{col}`", i + 1))),
        };
        let (prompt, response) = (take(&mapping.prompt)?, take(&mapping.response)?);
        let extra = (!obj.is_empty()).then(|| serde_json::Value::Object(obj).to_string());
        out.push((prompt, response, extra));
    }
    Ok(out)
}

fn kind(v: &serde_json::Value) -> &'static str {
    match v {
        serde_json::Value::Null => "null",
        serde_json::Value::Bool(_) => "a boolean",
        serde_json::Value::Number(_) => "a number",
        serde_json::Value::String(_) => "a string",
        serde_json::Value::Array(_) => "an array",
        serde_json::Value::Object(_) => "an object",
    }
}

fn read_parquet(path: &Path, mapping: &ColumnMapping) -> Result<Vec<Row>> {
    let f = std::fs::File::open(path).map_err(|e| Error::io(path, e))?;
    let builder = ParquetRecordBatchReaderBuilder::try_new(f)
        .map_err(|e| Error::bad_input(path, format!("not a readable Parquet file: {e}")))?;
    let schema = builder.schema().clone();
    for col in [&mapping.prompt, &mapping.response] {
        match schema.field_with_name(col) {
            Ok(f) if matches!(f.data_type(), DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View) => {}
            Ok(f) => {
                return Err(Error::bad_input(
                    path,
                    format!("column `{col}` has type {} (expected text)", f.data_type()),
                ))
            }
            Err(_) => return Err(Error::bad_input(path, format!("missing column `{col}`"))),
        }
    }
    let mut out = Vec::new();
    for batch in builder.build().map_err(|e| Error::bad_input(path, e))? {
        let batch = batch.map_err(|e| Error::bad_input(path, e))?;
        let text = |col: &str| -> Result<Vec<Option<String>>> {
            let c = arrow::compute::cast(batch.column_by_name(col).expect("checked"), &DataType::Utf8)
                .map_err(|e| Error::bad_input(path, e))?;
            Ok(c.as_string::<i32>().iter().map(|s| s.map(str::to_string)).collect())
        };
        let (prompts, responses) = (text(&mapping.prompt)?, text(&mapping.response)?);
        let extras = extra_json(path, &batch, mapping)?;
        for (i, ((p, r), x)) in prompts.into_iter().zip(responses).zip(extras).enumerate() {
            let (Some(p), Some(r)) = (p, r) else {
                return Err(Error::bad_input(path, format!("row {}: null prompt or response", out.len() + i)));
            };
            out.push((p, r, x));
        }
    }
    Ok(out)
}

/// The non-mapped columns of each row as a JSON object (numbers stay numbers).
fn extra_json(path: &Path, batch: &RecordBatch, mapping: &ColumnMapping) -> Result<Vec<Option<String>>> {
    let schema = batch.schema();
    let others: Vec<usize> = (0..batch.num_columns())
        .filter(|&i| {
            let n = schema.field(i).name();
            n != &mapping.prompt && n != &mapping.response
        })
        .collect();
    if others.is_empty() {
        return Ok(vec![None; batch.num_rows()]);
    }
    let options = FormatOptions::default();
    let formatters: Vec<(String, bool, ArrayFormatter)> = others
        .iter()
        .map(|&i| {
            let numeric = schema.field(i).data_type().is_numeric();
            ArrayFormatter::try_new(batch.column(i).as_ref(), &options)
                .map(|f| (schema.field(i).name().clone(), numeric, f))
                .map_err(|e| Error::bad_input(path, e))
        })
        .collect::<Result<_>>()?;
    Ok((0..batch.num_rows())
        .map(|row| {
            let mut obj = serde_json::Map::new();
            for (k, (name, numeric, f)) in formatters.iter().enumerate() {
                let value = if batch.column(others[k]).is_null(row) {
                    serde_json::Value::Null
                } else {
                    let text = f.value(row).to_string();
                    match numeric.then(|| serde_json::from_str::<serde_json::Value>(&text).ok()).flatten() {
                        Some(v) => v,
                        None => serde_json::Value::String(text),
                    }
                };
                obj.insert(name.clone(), value);
            }
            Some(serde_json::Value::Object(obj).to_string())
        })
        .collect())
}

/// HelpSteer2's files: a local directory, or the `nvidia/HelpSteer2` dataset on the Hub.
#[derive(Debug, Clone)]
pub enum HubSource {
    Local(PathBuf),
    Hub { repo: String },
}

impl HubSource {
    /// The file of a split (`train`, `validation`): `<split>.jsonl.gz`, `.jsonl` or `.parquet`
    /// in a local directory, or `<split>.jsonl.gz` downloaded through hf-hub (HF_TOKEN and the
    /// usual cache apply).
    pub fn split_file(&self, split: &str) -> Result<PathBuf> {
        match self {
            HubSource::Local(dir) => ["jsonl.gz", "jsonl", "parquet"]
                .iter()
                .map(|ext| dir.join(format!("{split}.{ext}")))
                .find(|p| p.exists())
                .ok_or_else(|| {
                    Error::bad_input(
                        dir,
                        format!("no {split}.jsonl.gz, {split}.jsonl or {split}.parquet in this folder"),
                    )
                }),
            HubSource::Hub { repo } => {
                let (owner, name) = repo
                    .split_once('/')
                    .ok_or_else(|| Error::Invalid(format!("`{repo}` is not a Hub dataset id (owner/name)")))?;
                let file = format!("{split}.jsonl.gz");
                let fail = |e: String| {
                    Error::Invalid(format!(
                        "could not download {repo}/{file} from the Hugging Face Hub: {e} \
                         (no network here? download it elsewhere and pass the local folder)"
                    ))
                };
                let client = hf_hub::HFClientSync::new().map_err(|e| fail(e.to_string()))?;
                client
                    .dataset(owner, name)
                    .download_file()
                    .filename(file.clone())
                    .send()
                    .map_err(|e| fail(e.to_string()))
            }
        }
    }
}
