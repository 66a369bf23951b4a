//! The loss's fused CPU kernels over f32 logits (rows, vocabulary): [`SoftmaxMinusOneHot`] turns
//! logits into their gradient in place, [`cross_entropy_rows`] is each row's negative
//! log-likelihood with a backward of its own.

use crate::ops::f32_slice;
use crate::simd::{load8, tanh8};
use candle_core::{CpuStorage, CustomOp1, Layout, Shape, Storage, Tensor};
use std::sync::{Arc, Mutex};

type CResult<T> = candle_core::Result<T>;

/// In place on f32 logits (rows, vocabulary) on the CPU: each row becomes softmax − one-hot of
/// its target, times the soft-cap's slope 1 − tanh²(l / cap) where there is a cap; the rows'
/// negative log-likelihoods are kept for [`SoftmaxMinusOneHot::summed_nll`]. Three passes over a
/// row that stays in cache (maximum; exponentials and their sum; scaling), one exp per logit.
pub struct SoftmaxMinusOneHot {
    targets: Arc<Vec<u32>>,
    cap: Option<f32>,
    nll: Mutex<Vec<f64>>,
}

impl SoftmaxMinusOneHot {
    pub fn new(targets: Arc<Vec<u32>>, cap: Option<f64>) -> Self {
        Self { targets, cap: cap.map(|c| c as f32), nll: Mutex::new(Vec::new()) }
    }

    /// Σ over rows of −log softmax(capped)[target], after the op has run.
    pub fn summed_nll(&self) -> crate::Result<f64> {
        let nll = self.nll.lock().map_err(|_| crate::Error::Invalid("loss poisoned".into()))?;
        Ok(nll.iter().sum())
    }

    /// One row: returns its negative log-likelihood. Three passes over the row, eight lanes at a
    /// time: cap and maximum; exp, its sum (f32 within a block, f64 across blocks) and the
    /// cap's slope; the scale by 1 / sum. A NaN logit makes the row's loss and gradient NaN, as
    /// scalar exp would (the vector tanh and exp would turn it into a number).
    fn row(&self, row: &mut [f32], target: usize) -> f64 {
        use wide::f32x8;
        let (head, tail) = row.split_at_mut(row.len() / 8 * 8);
        let mut maxv = f32x8::splat(f32::NEG_INFINITY);
        // NaNs are looked for in the logits as they come, before the cap could hide them.
        let mut nan = f32x8::ZERO;
        for c in head.chunks_exact_mut(8) {
            let mut v = load8(c);
            nan |= v.is_nan();
            if let Some(cap) = self.cap {
                v = tanh8(v / cap) * cap;
                c.copy_from_slice(&v.to_array());
            }
            maxv = maxv.max(v);
        }
        if nan.any() || tail.iter().any(|l| l.is_nan()) {
            row.fill(f32::NAN);
            return f64::NAN;
        }
        if let Some(cap) = self.cap {
            tail.iter_mut().for_each(|l| *l = cap * (*l / cap).tanh());
        }
        let max = maxv.to_array().into_iter().chain(tail.iter().copied()).fold(f32::NEG_INFINITY, f32::max);
        let picked = row[target];
        let (head, tail) = row.split_at_mut(row.len() / 8 * 8);
        let mut sum = 0f64;
        for block in head.chunks_mut(512) {
            let mut acc = f32x8::ZERO;
            for c in block.chunks_exact_mut(8) {
                let l = load8(c);
                let e = (l - max).exp();
                acc += e;
                let out = match self.cap {
                    Some(cap) => e * (f32x8::ONE - (l / cap) * (l / cap)),
                    None => e,
                };
                c.copy_from_slice(&out.to_array());
            }
            sum += acc.to_array().iter().map(|&x| x as f64).sum::<f64>();
        }
        // exp(c − max), times the slope 1 − (c / cap)², summed without the slope.
        for l in tail.iter_mut() {
            let e = (*l - max).exp();
            sum += e as f64;
            *l = match self.cap {
                Some(c) => e * (1.0 - (*l / c) * (*l / c)),
                None => e,
            };
        }
        let inv = (1.0 / sum) as f32;
        row.iter_mut().for_each(|l| *l *= inv);
        row[target] -= match self.cap {
            Some(c) => 1.0 - (picked / c) * (picked / c),
            None => 1.0,
        };
        max as f64 + sum.ln() - picked as f64
    }
}

impl candle_core::InplaceOp1 for SoftmaxMinusOneHot {
    fn name(&self) -> &'static str {
        "softmax-minus-one-hot"
    }

    fn cpu_fwd(&self, s: &mut CpuStorage, l: &Layout) -> CResult<()> {
        use rayon::prelude::*;
        let (rows, vocab) = l.shape().dims2()?;
        if rows != self.targets.len() || !l.is_contiguous() {
            candle_core::bail!("softmax-minus-one-hot: {rows} rows for {} targets", self.targets.len());
        }
        let CpuStorage::F32(v) = s else { candle_core::bail!("softmax-minus-one-hot: wants f32 logits") };
        let data = &mut v[l.start_offset()..l.start_offset() + rows * vocab];
        let nll: Vec<f64> = data
            .par_chunks_mut(vocab)
            .zip(self.targets.par_iter())
            .map(|(row, &t)| self.row(row, t as usize))
            .collect();
        *self.nll.lock().map_err(|_| candle_core::Error::Msg("loss poisoned".into()))? = nll;
        Ok(())
    }
}

/// Per-row negative log-likelihood of `targets` under softmax of `cap · tanh(logits / cap)` (or
/// of the logits themselves without a cap), for f32 logits (rows, vocabulary). On the CPU it is
/// one fused op: a pass for each row's maximum and log-sum-exp (accumulated in f64), and a
/// backward that writes softmax − one-hot, times the cap's derivative, directly; candle's
/// composite log-softmax makes about ten passes over the logits and keeps several copies.
/// Elsewhere it is composed of candle's ops.
pub fn cross_entropy_rows(logits: &Tensor, targets: &[u32], cap: Option<f64>) -> crate::Result<Tensor> {
    let (rows, _) = logits.dims2()?;
    if targets.len() != rows {
        return Err(crate::Error::Invalid(format!("cross-entropy: {} targets for {rows} rows", targets.len())));
    }
    if !logits.device().is_cpu() || logits.dtype() != candle_core::DType::F32 {
        let capped = match cap {
            Some(c) => ((logits / c)?.tanh()? * c)?,
            None => logits.clone(),
        };
        let logp = candle_nn::ops::log_softmax(&capped, candle_core::D::Minus1)?;
        let t = Tensor::from_vec(targets.to_vec(), (rows, 1), logits.device())?;
        return Ok(logp.gather(&t, 1)?.neg()?.squeeze(1)?);
    }
    let op = CrossEntropy { targets: Arc::new(targets.to_vec()), cap: cap.map(|c| c as f32) };
    Ok(logits.contiguous()?.apply_op1(op)?)
}

struct CrossEntropy {
    targets: Arc<Vec<u32>>,
    cap: Option<f32>,
}

impl CrossEntropy {
    fn capped(&self, l: f32) -> f32 {
        match self.cap {
            Some(c) => c * (l / c).tanh(),
            None => l,
        }
    }

    /// log Σ exp over a row of capped logits.
    fn log_sum_exp(&self, row: &[f32]) -> f64 {
        let max = row.iter().map(|&l| self.capped(l)).fold(f32::NEG_INFINITY, f32::max);
        let sum: f64 = row.iter().map(|&l| ((self.capped(l) - max) as f64).exp()).sum();
        max as f64 + sum.ln()
    }
}

impl CustomOp1 for CrossEntropy {
    fn name(&self) -> &'static str {
        "cross-entropy"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> CResult<(CpuStorage, Shape)> {
        use rayon::prelude::*;
        let (rows, vocab) = l.shape().dims2()?;
        let data = f32_slice(s, l, "cross-entropy")?;
        let nll: Vec<f32> = data
            .par_chunks(vocab)
            .zip(self.targets.par_iter())
            .map(|(row, &t)| (self.log_sum_exp(row) - self.capped(row[t as usize]) as f64) as f32)
            .collect();
        Ok((CpuStorage::F32(nll), Shape::from(rows)))
    }

    fn bwd(&self, logits: &Tensor, nll: &Tensor, grad: &Tensor) -> CResult<Option<Tensor>> {
        use rayon::prelude::*;
        let (rows, vocab) = logits.dims2()?;
        let nll: Vec<f32> = nll.to_vec1()?;
        let grad: Vec<f32> = grad.to_dtype(candle_core::DType::F32)?.to_vec1()?;
        let logits = logits.contiguous()?;
        let (storage, layout) = logits.storage_and_layout();
        let data = match &*storage {
            Storage::Cpu(s) => f32_slice(s, layout, "cross-entropy")?,
            _ => candle_core::bail!("cross-entropy: logits not on the CPU"),
        };
        let mut out = vec![0f32; rows * vocab];
        out.par_chunks_mut(vocab).zip(data.par_chunks(vocab)).enumerate().for_each(|(r, (o, row))| {
            let t = self.targets[r] as usize;
            // log-sum-exp from the forward's result: nll = lse − capped(l_t).
            let lse = nll[r] as f64 + self.capped(row[t]) as f64;
            for (j, (o, &l)) in o.iter_mut().zip(row).enumerate() {
                let p = ((self.capped(l) as f64) - lse).exp() as f32;
                let d = if j == t { p - 1.0 } else { p };
                let slope = match self.cap {
                    Some(c) => 1.0 - (l / c).tanh().powi(2),
                    None => 1.0,
                };
                *o = grad[r] * d * slope;
            }
        });
        drop(storage);
        Ok(Some(Tensor::from_vec(out, (rows, vocab), logits.device())?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{DType, Device, Var, D};

    /// The fused loss's in-place op against candle's composite ops: softmax − one-hot of the
    /// capped logits times the cap's slope, and the summed negative log-likelihood, with rows
    /// longer than a vector block (and a tail); a NaN logit makes its row NaN, not a number.
    #[test]
    fn softmax_minus_one_hot_equals_the_composite_and_keeps_nans() {
        let (rows, vocab) = (3, 1029);
        let v: Vec<f32> = (0..rows * vocab).map(|i| ((i * 53 % 101) as f32 - 50.0) * 0.9).collect();
        let targets = Arc::new(vec![0u32, 1028, 517]);
        for cap in [None, Some(30.0)] {
            let logits = Tensor::from_vec(v.clone(), (rows, vocab), &Device::Cpu).unwrap();
            let op = SoftmaxMinusOneHot::new(targets.clone(), cap);
            logits.inplace_op1(&op).unwrap();
            let capped = match cap {
                Some(c) => {
                    ((Tensor::from_vec(v.clone(), (rows, vocab), &Device::Cpu).unwrap() / c).unwrap().tanh().unwrap()
                        * c)
                        .unwrap()
                }
                None => Tensor::from_vec(v.clone(), (rows, vocab), &Device::Cpu).unwrap(),
            };
            let p = candle_nn::ops::softmax_last_dim(&capped).unwrap();
            let logp = candle_nn::ops::log_softmax(&capped, D::Minus1).unwrap().to_vec2::<f32>().unwrap();
            let (p, c) = (p.to_vec2::<f32>().unwrap(), capped.to_vec2::<f32>().unwrap());
            let got = logits.to_vec2::<f32>().unwrap();
            let mut nll = 0f64;
            for r in 0..rows {
                let t = targets[r] as usize;
                nll -= logp[r][t] as f64;
                for j in 0..vocab {
                    let slope = cap.map_or(1.0, |k| 1.0 - (c[r][j] / k as f32).powi(2));
                    let want = (p[r][j] - if j == t { 1.0 } else { 0.0 }) * slope;
                    assert!((got[r][j] - want).abs() <= 1e-6 + 1e-5 * want.abs(), "cap {cap:?} [{r}][{j}]");
                }
            }
            let summed = op.summed_nll().unwrap();
            assert!((summed - nll).abs() <= 1e-4 * nll.abs(), "cap {cap:?}: nll {summed} vs {nll}");
        }
        let mut with_nan = v.clone();
        with_nan[vocab + 5] = f32::NAN;
        let logits = Tensor::from_vec(with_nan, (rows, vocab), &Device::Cpu).unwrap();
        let op = SoftmaxMinusOneHot::new(targets.clone(), Some(30.0));
        logits.inplace_op1(&op).unwrap();
        assert!(op.summed_nll().unwrap().is_nan());
        let got = logits.to_vec2::<f32>().unwrap();
        assert!(got[1].iter().all(|x| x.is_nan()) && got[0].iter().all(|x| x.is_finite()));
    }

    /// The fused CPU cross-entropy against candle's composite ops, values and gradients, with
    /// and without the soft-cap, on rows whose targets include the first and last entries.
    #[test]
    fn fused_cross_entropy_equals_log_softmax_with_and_without_a_cap() {
        let (rows, vocab) = (5, 11);
        let v: Vec<f32> = (0..rows * vocab).map(|i| ((i * 37 % 23) as f32 - 11.0) * 0.7).collect();
        let targets: Vec<u32> = vec![0, 10, 3, 8, 9];
        let weights = Tensor::new(&[1.0f32, 0.5, 2.0, -1.0, 0.25], &Device::Cpu).unwrap();
        for cap in [None, Some(4.0)] {
            let run = |fused: bool| {
                let x = Var::from_vec(v.clone(), (rows, vocab), &Device::Cpu).unwrap();
                let nll = if fused {
                    cross_entropy_rows(x.as_tensor(), &targets, cap).unwrap()
                } else {
                    let capped = match cap {
                        Some(c) => ((x.as_tensor() / c).unwrap().tanh().unwrap() * c).unwrap(),
                        None => x.as_tensor().clone(),
                    };
                    let logp = candle_nn::ops::log_softmax(&capped, D::Minus1).unwrap();
                    let t = Tensor::new(targets.as_slice(), &Device::Cpu).unwrap().unsqueeze(1).unwrap();
                    logp.gather(&t, 1).unwrap().neg().unwrap().squeeze(1).unwrap()
                };
                let grads = (&nll * &weights).unwrap().sum_all().unwrap().backward().unwrap();
                let g = grads.get(x.as_tensor()).unwrap().to_dtype(DType::F32).unwrap();
                (nll.to_vec1::<f32>().unwrap(), g.flatten_all().unwrap().to_vec1::<f32>().unwrap())
            };
            let ((nll, grad), (want_nll, want_grad)) = (run(true), run(false));
            for (a, b) in nll.iter().zip(&want_nll).chain(grad.iter().zip(&want_grad)) {
                assert!((a - b).abs() <= 1e-5 * (1.0 + b.abs()), "cap {cap:?}: {a} vs {b}");
            }
        }
    }
}
