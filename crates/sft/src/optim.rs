//! AdamW (decoupled weight decay, as torch.optim.AdamW) with state that can be checkpointed,
//! and global-norm gradient clipping.

use crate::Result;
use candle_core::backprop::GradStore;
use candle_core::{Tensor, Var};

/// AdamW hyper-parameters (torch's defaults apart from the learning rate).
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct AdamWParams {
    pub lr: f64,
    pub beta1: f64,
    pub beta2: f64,
    pub eps: f64,
    pub weight_decay: f64,
}

impl Default for AdamWParams {
    fn default() -> Self {
        AdamWParams { lr: 1e-4, beta1: 0.9, beta2: 0.999, eps: 1e-8, weight_decay: 0.01 }
    }
}

/// AdamW over a fixed list of variables; moments are kept in f32.
pub struct AdamW {
    pub params: AdamWParams,
    pub vars: Vec<Var>,
    /// First and second moments, one pair per variable.
    pub moments: Vec<(Tensor, Tensor)>,
    /// Steps taken so far (for bias correction).
    pub step: u64,
}

impl AdamW {
    pub fn new(vars: Vec<Var>, params: AdamWParams) -> Result<Self> {
        let moments = vars.iter().map(|v| Ok((v.zeros_like()?, v.zeros_like()?))).collect::<Result<Vec<_>>>()?;
        Ok(AdamW { params, vars, moments, step: 0 })
    }

    /// One update with `grads` (one per variable, in order) at learning rate `lr`.
    pub fn step(&mut self, grads: &[Tensor], lr: f64) -> Result<()> {
        self.step += 1;
        let p = self.params;
        let (c1, c2) = (1.0 - p.beta1.powi(self.step as i32), 1.0 - p.beta2.powi(self.step as i32));
        for ((var, (m, v)), g) in self.vars.iter().zip(self.moments.iter_mut()).zip(grads) {
            if fused::applies(var.as_tensor(), m, v, g) {
                fused::step(var.as_tensor(), m, v, g, &p, (c1, c2), lr)?;
            } else {
                composite_step(var, (m, v), g, &p, (c1, c2), lr)?;
            }
        }
        Ok(())
    }
}

/// The update in tensor ops (any device and dtype).
fn composite_step(
    var: &Var,
    (m, v): (&mut Tensor, &mut Tensor),
    g: &Tensor,
    p: &AdamWParams,
    (c1, c2): (f64, f64),
    lr: f64,
) -> Result<()> {
    let g = g.to_dtype(m.dtype())?;
    *m = ((&*m * p.beta1)? + (&g * (1.0 - p.beta1))?)?;
    *v = ((&*v * p.beta2)? + (g.sqr()? * (1.0 - p.beta2))?)?;
    let update = ((&*m / c1)? / ((&*v / c2)?.sqrt()? + p.eps)?)?;
    let decayed = (var.as_tensor() * (1.0 - lr * p.weight_decay))?;
    var.set(&(decayed - (update * lr)?)?)?;
    Ok(())
}

/// AdamW on the CPU in place, for f32 variables, moments and gradients: three passes over memory
/// and no temporaries. The tensor-op update allocates about a dozen tensors the size of each
/// variable every step; in full fine-tuning (Gemma 3's 262,144 x 640 embedding alone is 671 MB)
/// the kernel's zeroing of their fresh pages took a third of a step. Each element goes through
/// the same f32 operations in the same order as the tensor ops (candle's `x * s` is
/// `x * (s as f32) + 0`), so both paths give bit-identical weights and moments.
mod fused {
    use super::AdamWParams;
    use candle_core::{bail, CpuStorage, InplaceOp2, InplaceOp3, Layout, Result, Tensor};
    use rayon::prelude::*;

    /// Elements per parallel task: large enough that scheduling costs nothing, small enough to
    /// spread a LoRA matrix over the threads.
    const CHUNK: usize = 1 << 15;

    pub fn applies(p: &Tensor, m: &Tensor, v: &Tensor, g: &Tensor) -> bool {
        [p, m, v, g].iter().all(|t| t.device().is_cpu() && t.dtype() == candle_core::DType::F32 && t.is_contiguous())
            && [m, v, g].iter().all(|t| t.shape() == p.shape())
    }

    pub fn step(
        p: &Tensor,
        m: &Tensor,
        v: &Tensor,
        g: &Tensor,
        h: &AdamWParams,
        (c1, c2): (f64, f64),
        lr: f64,
    ) -> Result<()> {
        let f = |x: f64| x as f32;
        m.inplace_op2(g, &Moment { beta: f(h.beta1), one_minus: f(1.0 - h.beta1), square: false })?;
        v.inplace_op2(g, &Moment { beta: f(h.beta2), one_minus: f(1.0 - h.beta2), square: true })?;
        let update = Update {
            inv_c1: f(1.0 / c1),
            inv_c2: f(1.0 / c2),
            eps: f(h.eps),
            decay: f(1.0 - lr * h.weight_decay),
            lr: f(lr),
        };
        p.inplace_op3(m, v, &update)
    }

    fn slice<'a>(s: &'a CpuStorage, l: &Layout) -> Result<&'a [f32]> {
        match (s, l.contiguous_offsets()) {
            (CpuStorage::F32(x), Some((a, b))) => Ok(&x[a..b]),
            _ => bail!("fused AdamW: expected a contiguous f32 tensor"),
        }
    }

    fn slice_mut<'a>(s: &'a mut CpuStorage, l: &Layout) -> Result<&'a mut [f32]> {
        match (s, l.contiguous_offsets()) {
            (CpuStorage::F32(x), Some((a, b))) => Ok(&mut x[a..b]),
            _ => bail!("fused AdamW: expected a contiguous f32 tensor"),
        }
    }

    /// m <- beta m + (1 - beta) g, or with g squared (the second moment).
    struct Moment {
        beta: f32,
        one_minus: f32,
        square: bool,
    }

    impl InplaceOp2 for Moment {
        fn name(&self) -> &'static str {
            "adamw-moment"
        }
        fn cpu_fwd(&self, dst: &mut CpuStorage, dst_l: &Layout, g: &CpuStorage, g_l: &Layout) -> Result<()> {
            let (m, g) = (slice_mut(dst, dst_l)?, slice(g, g_l)?);
            let Moment { beta, one_minus, square } = *self;
            m.par_chunks_mut(CHUNK).zip(g.par_chunks(CHUNK)).for_each(|(m, g)| {
                for (m, &g) in m.iter_mut().zip(g) {
                    let g = if square { g * g } else { g };
                    *m = (*m * beta + 0.0) + (g * one_minus + 0.0);
                }
            });
            Ok(())
        }
    }

    /// p <- p (1 - lr wd) - lr (m / c1) / (sqrt(v / c2) + eps).
    struct Update {
        inv_c1: f32,
        inv_c2: f32,
        eps: f32,
        decay: f32,
        lr: f32,
    }

    impl InplaceOp3 for Update {
        fn name(&self) -> &'static str {
            "adamw-update"
        }
        fn cpu_fwd(
            &self,
            dst: &mut CpuStorage,
            dst_l: &Layout,
            m: &CpuStorage,
            m_l: &Layout,
            v: &CpuStorage,
            v_l: &Layout,
        ) -> Result<()> {
            let (p, m, v) = (slice_mut(dst, dst_l)?, slice(m, m_l)?, slice(v, v_l)?);
            let Update { inv_c1, inv_c2, eps, decay, lr } = *self;
            p.par_chunks_mut(CHUNK).zip(m.par_chunks(CHUNK)).zip(v.par_chunks(CHUNK)).for_each(|((p, m), v)| {
                for ((p, &m), &v) in p.iter_mut().zip(m).zip(v) {
                    let update = (m * inv_c1 + 0.0) / ((v * inv_c2 + 0.0).sqrt() * 1.0 + eps);
                    *p = (*p * decay + 0.0) - (update * lr + 0.0);
                }
            });
            Ok(())
        }
    }
}

/// The gradient of each of `vars` in `store` (zero where a variable got none).
pub fn grads_of(store: &GradStore, vars: &[Var]) -> Result<Vec<Tensor>> {
    vars.iter()
        .map(|v| match store.get(v) {
            // Detached: candle's summed gradients can reference the forward graph.
            Some(g) => Ok(g.detach()),
            None => Ok(v.zeros_like()?),
        })
        .collect()
}

/// Scales `grads` so that their global L2 norm is at most `max_norm` (as
/// torch.nn.utils.clip_grad_norm_); returns the norm before clipping.
pub fn clip_grad_norm(grads: &mut [Tensor], max_norm: f64) -> Result<f64> {
    let sums = grads.iter().map(|g| g.sqr()?.sum_all()?.to_dtype(candle_core::DType::F64));
    let total = if grads.first().is_some_and(|g| !g.device().is_cpu()) {
        // On a GPU one read-back in all, not one per tensor (each waits for the device).
        Tensor::stack(&sums.collect::<candle_core::Result<Vec<_>>>()?, 0)?.sum_all()?.to_scalar::<f64>()?
    } else {
        let mut total = 0.0f64;
        for s in sums {
            total += s?.to_scalar::<f64>()?;
        }
        total
    };
    let norm = total.sqrt();
    let scale = max_norm / (norm + 1e-6);
    if scale < 1.0 {
        for g in grads.iter_mut() {
            *g = (&*g * scale)?;
        }
    }
    Ok(norm)
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{Device, Tensor};

    /// The in-place update gives bit-identical weights and moments to the tensor ops, step after
    /// step (gradients with zeros, both signs and magnitudes from 1e-2 to 10).
    #[test]
    fn fused_update_equals_the_tensor_ops() {
        let n = 100_003; // not a multiple of the chunk
        let values = |seed: u32, scale: f32| -> Tensor {
            let v: Vec<f32> = (0..n as u32)
                .map(|i| {
                    let x = (i.wrapping_mul(2654435761) ^ seed.wrapping_mul(40503)) % 20011;
                    let x = x as f32 / 20011.0 - 0.5;
                    if i % 97 == 0 {
                        0.0
                    } else {
                        x * scale * (1.0 + (i % 7) as f32)
                    }
                })
                .collect();
            Tensor::from_vec(v, n, &Device::Cpu).unwrap()
        };
        let bits = |t: &Tensor| t.to_vec1::<f32>().unwrap().into_iter().map(f32::to_bits).collect::<Vec<_>>();
        let params = AdamWParams { lr: 3e-4, weight_decay: 0.1, ..AdamWParams::default() };
        let fused_var = Var::from_tensor(&values(1, 1.0)).unwrap();
        let plain_var = Var::from_tensor(&values(1, 1.0)).unwrap();
        let mut opt = AdamW::new(vec![fused_var.clone()], params).unwrap();
        let (mut m, mut v) = (plain_var.zeros_like().unwrap(), plain_var.zeros_like().unwrap());
        for step in 1..=3u32 {
            let g = values(10 + step, 10f32.powi(step as i32 - 2));
            assert!(fused::applies(fused_var.as_tensor(), &opt.moments[0].0, &opt.moments[0].1, &g));
            let lr = 1e-3 * step as f64;
            opt.step(std::slice::from_ref(&g), lr).unwrap();
            let c = (1.0 - params.beta1.powi(step as i32), 1.0 - params.beta2.powi(step as i32));
            composite_step(&plain_var, (&mut m, &mut v), &g, &params, c, lr).unwrap();
            assert_eq!(bits(fused_var.as_tensor()), bits(plain_var.as_tensor()), "weights, step {step}");
            assert_eq!(bits(&opt.moments[0].0), bits(&m), "first moment, step {step}");
            assert_eq!(bits(&opt.moments[0].1), bits(&v), "second moment, step {step}");
        }
        assert_ne!(bits(fused_var.as_tensor()), bits(&values(1, 1.0)), "the weights moved");
    }
}
