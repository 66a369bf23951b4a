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
            let g = g.to_dtype(m.dtype())?;
            *m = ((&*m * p.beta1)? + (&g * (1.0 - p.beta1))?)?;
            *v = ((&*v * p.beta2)? + (g.sqr()? * (1.0 - p.beta2))?)?;
            let update = ((&*m / c1)? / ((&*v / c2)?.sqrt()? + p.eps)?)?;
            let decayed = (var.as_tensor() * (1.0 - lr * p.weight_decay))?;
            var.set(&(decayed - (update * lr)?)?)?;
        }
        Ok(())
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
    let mut total = 0.0f64;
    for g in grads.iter() {
        total += g.sqr()?.sum_all()?.to_dtype(candle_core::DType::F64)?.to_scalar::<f64>()?;
    }
    let norm = total.sqrt();
    let scale = max_norm / (norm + 1e-6);
    if scale < 1.0 {
        for g in grads.iter_mut() {
            *g = (&*g * scale)?;
        }
    }
    Ok(norm)
}
