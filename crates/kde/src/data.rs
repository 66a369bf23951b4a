//! Users' own points from CSV or Parquet files.

use arrow::array::{Array, Float64Array};
use arrow::compute::cast;
use arrow::datatypes::DataType;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use std::path::Path;
use thrive_core::{Error, Points, Result};

/// The most dimensions a users' dataset may have.
pub const MAX_DIM: usize = 10;

fn bad(path: &Path, message: impl Into<String>) -> Error {
    Error::BadResults { path: path.into(), message: message.into() }
}

/// Reads the named columns (all columns when `columns` is empty) of a `.csv` or
/// `.parquet` file as points. Errors name the file, and the row and column of a
/// bad value.
pub fn read_points(path: &Path, columns: &[String]) -> Result<Points> {
    let ext = path.extension().and_then(|e| e.to_str()).unwrap_or("").to_ascii_lowercase();
    let points = match ext.as_str() {
        "csv" => read_csv(path, columns)?,
        "parquet" => read_parquet(path, columns)?,
        _ => return Err(bad(path, "expected a .csv or .parquet file")),
    };
    if points.dim() > MAX_DIM {
        return Err(bad(path, format!("{} columns: at most {MAX_DIM} dimensions are supported", points.dim())));
    }
    Ok(points)
}

fn read_csv(path: &Path, columns: &[String]) -> Result<Points> {
    let mut reader = csv::ReaderBuilder::new().flexible(false).from_path(path).map_err(|e| bad(path, e.to_string()))?;
    let header: Vec<String> =
        reader.headers().map_err(|e| bad(path, e.to_string()))?.iter().map(String::from).collect();
    let picks = pick_columns(path, &header, columns)?;
    let mut data = Vec::new();
    for (i, record) in reader.records().enumerate() {
        let record = record.map_err(|e| bad(path, format!("row {}: {e}", i + 1)))?;
        for &c in &picks {
            let text = record.get(c).unwrap_or("").trim();
            let v: f64 = text
                .parse()
                .map_err(|_| bad(path, format!("row {}, column `{}`: `{text}` is not a number", i + 1, header[c])))?;
            if !v.is_finite() {
                return Err(bad(path, format!("row {}, column `{}`: {v} is not a finite number", i + 1, header[c])));
            }
            data.push(v);
        }
    }
    Points::new(picks.len(), data)
}

fn pick_columns(path: &Path, header: &[String], columns: &[String]) -> Result<Vec<usize>> {
    if columns.is_empty() {
        return Ok((0..header.len()).collect());
    }
    columns
        .iter()
        .map(|c| {
            header
                .iter()
                .position(|h| h == c)
                .ok_or_else(|| bad(path, format!("no column `{c}` (the file has: {})", header.join(", "))))
        })
        .collect()
}

fn read_parquet(path: &Path, columns: &[String]) -> Result<Points> {
    let file = std::fs::File::open(path).map_err(|e| Error::io(path, e))?;
    let builder = ParquetRecordBatchReaderBuilder::try_new(file)
        .map_err(|e| bad(path, format!("not a readable Parquet file: {e}")))?;
    let header: Vec<String> = builder.schema().fields().iter().map(|f| f.name().clone()).collect();
    let picks = pick_columns(path, &header, columns)?;
    for &c in &picks {
        let t = builder.schema().field(c).data_type();
        if !t.is_numeric() {
            return Err(bad(path, format!("column `{}` has type {t}, not a number", header[c])));
        }
    }
    let reader = builder.build().map_err(|e| bad(path, e.to_string()))?;
    let mut cols: Vec<Vec<f64>> = vec![Vec::new(); picks.len()];
    let mut row0 = 0;
    for batch in reader {
        let batch = batch.map_err(|e| bad(path, e.to_string()))?;
        for (k, &c) in picks.iter().enumerate() {
            let a = cast(batch.column(c), &DataType::Float64).map_err(|e| bad(path, e.to_string()))?;
            let a = a.as_any().downcast_ref::<Float64Array>().expect("cast to Float64");
            for r in 0..a.len() {
                if a.is_null(r) || !a.value(r).is_finite() {
                    let what = if a.is_null(r) { "missing".to_string() } else { a.value(r).to_string() };
                    return Err(bad(
                        path,
                        format!("row {}, column `{}`: {what} is not a finite number", row0 + r + 1, header[c]),
                    ));
                }
                cols[k].push(a.value(r));
            }
        }
        row0 += batch.num_rows();
    }
    let data = (0..row0).flat_map(|r| cols.iter().map(move |c| c[r])).collect();
    Points::new(picks.len(), data)
}
