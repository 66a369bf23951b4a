//! A batch of points in R^d, stored row-major: the data of the toy settings.

use crate::error::{Error, Result};

/// `len` points of dimension `dim`, row-major.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Points {
    dim: usize,
    data: Vec<f64>,
}

impl Points {
    /// Wraps row-major data; `data.len()` must be a multiple of `dim`.
    pub fn new(dim: usize, data: Vec<f64>) -> Result<Self> {
        if dim == 0 {
            return Err(Error::invalid("dimension", "must be at least 1"));
        }
        if !data.len().is_multiple_of(dim) {
            return Err(Error::invalid("points", format!("{} values do not make rows of dimension {dim}", data.len())));
        }
        Ok(Points { dim, data })
    }

    /// An empty batch of dimension `dim`.
    pub fn empty(dim: usize) -> Self {
        Points { dim, data: Vec::new() }
    }

    /// An empty batch with room for `rows` points.
    pub fn with_capacity(dim: usize, rows: usize) -> Self {
        Points { dim, data: Vec::with_capacity(dim * rows) }
    }

    pub fn dim(&self) -> usize {
        self.dim
    }
    pub fn len(&self) -> usize {
        self.data.len() / self.dim.max(1)
    }
    pub fn is_empty(&self) -> bool {
        self.data.is_empty()
    }
    /// Point `i`.
    pub fn row(&self, i: usize) -> &[f64] {
        &self.data[i * self.dim..(i + 1) * self.dim]
    }
    pub fn rows(&self) -> std::slice::ChunksExact<'_, f64> {
        self.data.chunks_exact(self.dim)
    }
    pub fn as_slice(&self) -> &[f64] {
        &self.data
    }
    pub fn as_mut_slice(&mut self) -> &mut [f64] {
        &mut self.data
    }
    pub fn push_row(&mut self, row: &[f64]) {
        debug_assert_eq!(row.len(), self.dim);
        self.data.extend_from_slice(row);
    }
    /// Appends every point of `other` (same dimension).
    pub fn extend(&mut self, other: &Points) {
        assert_eq!(self.dim, other.dim, "points of different dimension");
        self.data.extend_from_slice(&other.data);
    }
    /// The first `k` points.
    pub fn head(&self, k: usize) -> Points {
        Points { dim: self.dim, data: self.data[..k.min(self.len()) * self.dim].to_vec() }
    }
    /// The points at `indices`, in that order.
    pub fn select(&self, indices: &[usize]) -> Points {
        let mut out = Points::with_capacity(self.dim, indices.len());
        for &i in indices {
            out.push_row(self.row(i));
        }
        out
    }
    pub fn clear(&mut self) {
        self.data.clear();
    }
    /// An error naming the first non-finite value, if any.
    pub fn check_finite(&self, what: &str) -> Result<()> {
        if let Some(pos) = self.data.iter().position(|v| !v.is_finite()) {
            return Err(Error::invalid(
                what,
                format!("row {} column {} is {}", pos / self.dim, pos % self.dim, self.data[pos]),
            ));
        }
        Ok(())
    }
}
