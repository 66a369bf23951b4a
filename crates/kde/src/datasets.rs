//! scikit-learn's toy datasets, with the same shapes and semantics
//! (`make_blobs`, `make_circles`, `make_moons`, `make_swiss_roll`).
//!
//! The numbers come from thrive's seeded streams, not NumPy's, so individual
//! points differ from scikit-learn's while the distributions are the same.

use rand::seq::SliceRandom;
use rand::Rng as _;
use rand_distr::StandardNormal;
use std::f64::consts::PI;
use std::fmt;
use std::str::FromStr;
use thrive_core::{Error, Points, Result, Rng};

/// A data-generating process of docs/protocol.md §3.1.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Dataset {
    /// `make_blobs(n_samples=N, n_features=2)`: 3 centres uniform in [−10, 10]², sd 1.
    Blobs,
    /// `make_circles(n_samples=N, noise=0.05)` (factor 0.8).
    Circles,
    /// `make_moons(n_samples=N, noise=0.05)`.
    Moons,
    /// `make_swiss_roll(n_samples=N, noise=0.05)`, three-dimensional.
    SwissRoll,
}

/// Where blobs' centres come from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum BlobsCentres {
    /// Each call draws new centres, so training and test data come from different
    /// mixtures (the authors' code; the default, for fidelity).
    #[default]
    PerCall,
    /// Training and test data share one set of centres per run (corrected mode).
    Shared,
}

pub const NOISE: f64 = 0.05;
const BLOB_CENTRES: usize = 3;
const BLOB_BOX: f64 = 10.0;

impl Dataset {
    pub const ALL: [Dataset; 4] = [Dataset::Blobs, Dataset::Circles, Dataset::Moons, Dataset::SwissRoll];

    pub fn name(self) -> &'static str {
        match self {
            Dataset::Blobs => "blobs",
            Dataset::Circles => "circles",
            Dataset::Moons => "moons",
            Dataset::SwissRoll => "swiss_roll",
        }
    }

    pub fn dim(self) -> usize {
        if self == Dataset::SwissRoll {
            3
        } else {
            2
        }
    }

    /// Parses a comma-separated list; `all` means every dataset.
    pub fn parse_list(s: &str) -> Result<Vec<Dataset>> {
        let mut out = Vec::new();
        for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            if part == "all" {
                out.extend(Dataset::ALL);
            } else {
                out.push(part.parse()?);
            }
        }
        out.sort();
        out.dedup();
        Ok(out)
    }

    /// Blob centres, drawn as `make_blobs` does (uniform in the box, one row per centre).
    pub fn blob_centres(rng: &mut Rng) -> [[f64; 2]; BLOB_CENTRES] {
        let mut c = [[0.0; 2]; BLOB_CENTRES];
        for row in &mut c {
            for v in row.iter_mut() {
                *v = rng.random_range(-BLOB_BOX..BLOB_BOX);
            }
        }
        c
    }

    /// `n` points, drawn as the scikit-learn generator draws them. `centres` fixes
    /// blob centres (corrected mode); otherwise blobs draws its own.
    pub fn sample(self, n: usize, rng: &mut Rng, centres: Option<&[[f64; 2]; BLOB_CENTRES]>) -> Points {
        self.sample_with_noise(n, rng, centres, NOISE)
    }

    /// As [`Dataset::sample`] with another noise level for circles, moons and swiss roll
    /// (scikit-learn's `noise` argument; blobs always have sd 1).
    pub fn sample_with_noise(
        self,
        n: usize,
        rng: &mut Rng,
        centres: Option<&[[f64; 2]; BLOB_CENTRES]>,
        noise: f64,
    ) -> Points {
        let data = match self {
            Dataset::Blobs => {
                let own;
                let centres = match centres {
                    Some(c) => c,
                    None => {
                        own = Self::blob_centres(rng);
                        &own
                    }
                };
                // Points split as evenly as possible; the first centres take the remainder.
                let mut rows = Vec::with_capacity(n);
                for (k, c) in centres.iter().enumerate() {
                    let count = n / BLOB_CENTRES + usize::from(k < n % BLOB_CENTRES);
                    for _ in 0..count {
                        rows.push([
                            c[0] + rng.sample::<f64, _>(StandardNormal),
                            c[1] + rng.sample::<f64, _>(StandardNormal),
                        ]);
                    }
                }
                rows.shuffle(rng);
                rows.concat()
            }
            Dataset::Circles => {
                let (outer, inner) = (n / 2, n - n / 2);
                let mut rows: Vec<[f64; 2]> = Vec::with_capacity(n);
                // linspace(0, 2π, k, endpoint=False)
                for i in 0..outer {
                    let a = 2.0 * PI * i as f64 / outer as f64;
                    rows.push([a.cos(), a.sin()]);
                }
                for i in 0..inner {
                    let a = 2.0 * PI * i as f64 / inner as f64;
                    rows.push([0.8 * a.cos(), 0.8 * a.sin()]);
                }
                rows.shuffle(rng);
                add_noise(rows.concat(), rng, noise)
            }
            Dataset::Moons => {
                let (outer, inner) = (n / 2, n - n / 2);
                let linspace = |k: usize, i: usize| if k > 1 { PI * i as f64 / (k - 1) as f64 } else { 0.0 };
                let mut rows: Vec<[f64; 2]> = Vec::with_capacity(n);
                for i in 0..outer {
                    let s = linspace(outer, i);
                    rows.push([s.cos(), s.sin()]);
                }
                for i in 0..inner {
                    let s = linspace(inner, i);
                    rows.push([1.0 - s.cos(), 1.0 - s.sin() - 0.5]);
                }
                rows.shuffle(rng);
                add_noise(rows.concat(), rng, noise)
            }
            Dataset::SwissRoll => {
                let t: Vec<f64> = (0..n).map(|_| 1.5 * PI * (1.0 + 2.0 * rng.random::<f64>())).collect();
                let height: Vec<f64> = (0..n).map(|_| 21.0 * rng.random::<f64>()).collect();
                let rows: Vec<f64> = t.iter().zip(&height).flat_map(|(t, y)| [t * t.cos(), *y, t * t.sin()]).collect();
                add_noise(rows, rng, noise)
            }
        };
        Points::new(self.dim(), data).expect("rows of the dataset's dimension")
    }
}

fn add_noise(mut data: Vec<f64>, rng: &mut Rng, noise: f64) -> Vec<f64> {
    for v in &mut data {
        *v += noise * rng.sample::<f64, _>(StandardNormal);
    }
    data
}

impl fmt::Display for Dataset {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Dataset {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        match s.trim().to_ascii_lowercase().replace('-', "_").as_str() {
            "blobs" => Ok(Dataset::Blobs),
            "circles" => Ok(Dataset::Circles),
            "moons" => Ok(Dataset::Moons),
            "swiss_roll" | "swissroll" => Ok(Dataset::SwissRoll),
            other => Err(Error::invalid(
                "dataset",
                format!("unknown dataset `{other}` (expected blobs, circles, moons, swiss_roll or all)"),
            )),
        }
    }
}
