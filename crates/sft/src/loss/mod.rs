//! The paper's next-token loss: token-mean cross-entropy over the target tokens of a batch,
//! computed only at the positions that have a target (the vocabulary dominates memory). Its
//! fused CPU kernels are in `kernels`.

mod kernels;

use crate::matmul::Mm;
use crate::model::Gemma;
use crate::ops::{recompute, GradSink, Recompute};
use crate::Result;
use candle_core::{DType, Tensor, Var, D};
use kernels::{cross_entropy_rows, SoftmaxMinusOneHot};
use std::sync::Arc;

/// A padded batch of token sequences (right padding).
#[derive(Debug, Clone)]
pub struct Batch {
    /// (batch, seq) u32 token ids.
    pub input_ids: Tensor,
    /// 1 for tokens, 0 for padding.
    pub attention_mask: Vec<Vec<u8>>,
    /// 1 where the token is a prediction target (the whole sequence, as the paper, or the response only).
    pub target_mask: Vec<Vec<u8>>,
}

/// Logit values (rows × vocabulary) computed at once by the loss on the CPU: 2²⁴ f32 values
/// are 64 MiB, a chunk of 64 rows of Gemma's 262,144-token vocabulary.
const LOSS_CHUNK_VALUES: usize = 1 << 24;

/// The same for the CPU's fused linear cross-entropy of a training step: 2²⁷ f32 values
/// (512 MiB, 512 rows of 262,144), its only buffer of that size.
const LOSS_CHUNK_VALUES_FUSED: usize = 1 << 27;

/// The same on a GPU: 2²⁸ f32 values (1 GiB, 1,024 rows of 262,144). Each chunk reads the whole
/// output matrix three times and launches a fixed number of kernels, so 64-row chunks spent an
/// H200's time on overheads (docs/performance.md, GPU); the backward of a chunk holds about five
/// such tensors, a bound that does not grow with the batch.
const LOSS_CHUNK_VALUES_GPU: usize = 1 << 28;

/// How the loss is computed; the loss and gradients do not depend on it (tests compare them).
#[doc(hidden)]
#[derive(Debug, Clone, Copy, Default)]
pub struct LossPlan {
    /// Target rows per chunk [default: about 2²⁴ logits on the CPU, 2²⁸ on a GPU].
    pub chunk_rows: Option<usize>,
}

/// Mean cross-entropy (nats per target token) of predicting each target token from the ones
/// before it, and the number of target tokens. `dropout_rng` enables LoRA dropout.
pub fn next_token_loss(
    model: &Gemma,
    batch: &Batch,
    dropout_rng: Option<&mut thrive_core::Rng>,
) -> Result<(Tensor, usize)> {
    loss_with(model, batch, dropout_rng, None, LossPlan::default(), false)
}

/// [`next_token_loss`] with the logits computed `rows` target positions at a time (the default
/// keeps a chunk near 2²⁴ values); the result does not depend on it. For tests.
#[doc(hidden)]
pub fn next_token_loss_in_chunks(model: &Gemma, batch: &Batch, rows: usize) -> Result<(Tensor, usize)> {
    loss_with(model, batch, None, None, LossPlan { chunk_rows: Some(rows) }, false)
}

/// The loss, optionally with gradient checkpointing (see [`Gemma::hidden_states_with`]).
///
/// The logits never exist for the whole batch: rows with a target are taken a chunk at a time,
/// and each chunk's logits, soft-capping and log-softmax are recomputed in the backward pass
/// instead of being kept. `training` (a backward pass will follow) lets a CPU step with a
/// frozen output layer compute each chunk's gradient in the forward pass instead.
fn loss_with(
    model: &Gemma,
    batch: &Batch,
    dropout_rng: Option<&mut thrive_core::Rng>,
    checkpoint: Option<&GradSink>,
    plan: LossPlan,
    training: bool,
) -> Result<(Tensor, usize)> {
    let (b, seq) = batch.input_ids.dims2()?;
    debug_assert_eq!(batch.attention_mask.len(), b);
    let ids: Vec<Vec<u32>> = batch.input_ids.to_vec2()?;
    // Row p of the flattened hidden states predicts token p + 1 of the same sequence.
    let (mut rows, mut targets) = (Vec::new(), Vec::new());
    for (bi, row) in ids.iter().enumerate() {
        for p in 0..seq.saturating_sub(1) {
            if batch.target_mask[bi][p + 1] != 0 && batch.attention_mask[bi][p + 1] != 0 {
                rows.push((bi * seq + p) as u32);
                targets.push(row[p + 1]);
            }
        }
    }
    let n = rows.len();
    if n == 0 {
        return Err(crate::Error::Invalid("a batch with no target tokens".into()));
    }
    let started = std::time::Instant::now();
    let hidden = model.hidden_states_with(&batch.input_ids, &batch.attention_mask, dropout_rng, checkpoint)?;
    let layers_seconds = started.elapsed().as_secs_f64();
    let hidden = hidden.reshape((b * seq, hidden.dim(D::Minus1)?))?;
    let device = hidden.device().clone();
    let picked = hidden.index_select(&Tensor::from_vec(rows, n, &device)?, 0)?;
    // A training step on the CPU with a frozen output layer computes the loss's gradient in
    // the forward pass (below), which keeps one logits-sized buffer per chunk instead of
    // several: it takes larger chunks, so that MKL or gemm repacks the output matrix less often.
    let fused = training && device.is_cpu() && picked.dtype() == DType::F32;
    // A trained output matrix (full fine-tuning) gets its gradient summed over the chunks in one
    // buffer, in place, instead of a fresh (vocabulary × hidden) tensor per chunk plus a sum.
    let trained = match (fused && model.uses_manual_backward(), model.embed_var()) {
        (true, Some(e)) => Some(Arc::new(TrainedOutput::new(e.as_tensor(), model.bf16_trained())?)),
        _ => None,
    };
    let per_chunk = match (device.is_cpu(), fused) {
        (true, true) => LOSS_CHUNK_VALUES_FUSED,
        (true, false) => LOSS_CHUNK_VALUES,
        (false, _) => LOSS_CHUNK_VALUES_GPU,
    };
    let chunk = plan.chunk_rows.unwrap_or(per_chunk / model.cfg.vocab_size).max(1);
    // The hand-written backward replaces autograd through candle's ops (the default); with it
    // off (`Gemma::manual_backward`, for tests), the CPU's fused cross-entropy op takes the f32
    // logits and autograd does the rest.
    let manual = model.uses_manual_backward();
    let mut total: Option<Tensor> = None;
    for start in (0..n).step_by(chunk) {
        let len = chunk.min(n - start);
        let t = targets[start..start + len].to_vec();
        let rows = picked.narrow(0, start, len)?;
        let inputs: Vec<&Tensor> = match model.embed_var() {
            Some(e) => vec![&rows, e.as_tensor()],
            None => vec![&rows],
        };
        let (nll, _) = if manual && fused && rows.track_op() {
            // Liger's fused linear cross-entropy: the forward pass also computes the rows'
            // gradient and keeps only that (chunk rows × hidden); the backward scales it.
            let chunk = ChunkLoss { model: model.clone(), targets: Arc::new(t), trained: trained.clone() };
            let stash: Arc<std::sync::Mutex<Option<Tensor>>> = Arc::default();
            let (fwd, bwd, put, take) = (chunk.clone(), chunk, stash.clone(), stash);
            let body = move |a: &[Tensor], _: Option<&mut thrive_core::Rng>| -> Result<Tensor> {
                let (nll, d_rows) = fwd.fused_cpu(a)?;
                *put.lock().map_err(|_| crate::Error::Invalid("loss stash poisoned".into()))? = Some(d_rows);
                Ok(nll)
            };
            let backward = move |a: &[Tensor], g: &Tensor| -> Result<Vec<Option<Tensor>>> {
                let kept = take.lock().map_err(|_| crate::Error::Invalid("loss stash poisoned".into()))?.take();
                match kept {
                    Some(d_rows) => {
                        let d_rows = d_rows.broadcast_mul(&g.to_dtype(d_rows.dtype())?)?;
                        let d_embed = match &bwd.trained {
                            Some(out) => Some(out.take_grad(g)?),
                            None => None,
                        };
                        Ok(std::iter::once(Some(d_rows)).chain(a.get(1).map(|_| d_embed.flatten())).collect())
                    }
                    None => bwd.backward(a, g),
                }
            };
            let extra = Recompute { backward: Some(Arc::new(backward)), ..Recompute::default() };
            recompute("next-token-loss", &inputs, Arc::new(body), extra)?
        } else if manual {
            let chunk = ChunkLoss { model: model.clone(), targets: Arc::new(t), trained: None };
            let (fwd, bwd) = (chunk.clone(), chunk);
            let body = move |a: &[Tensor], _: Option<&mut thrive_core::Rng>| fwd.forward(a);
            let backward = move |a: &[Tensor], g: &Tensor| bwd.backward(a, g);
            let extra = Recompute { backward: Some(Arc::new(backward)), ..Recompute::default() };
            recompute("next-token-loss", &inputs, Arc::new(body), extra)?
        } else {
            let owned = model.clone();
            // Summed negative log-likelihood of one chunk of rows.
            let body = move |a: &[Tensor], _: Option<&mut thrive_core::Rng>| -> Result<Tensor> {
                let logits = owned.uncapped_logits(&a[0], a.get(1))?;
                Ok(cross_entropy_rows(&logits, &t, owned.cfg.final_logit_softcapping)?.sum_all()?)
            };
            recompute("next-token-loss", &inputs, Arc::new(body), Recompute::default())?
        };
        total = Some(match total {
            None => nll,
            Some(s) => (s + nll)?,
        });
    }
    let total = total.expect("n > 0");
    tracing::debug!(
        layers_seconds,
        loss_seconds = started.elapsed().as_secs_f64() - layers_seconds,
        targets = n,
        "forward pass"
    );
    Ok(((total / n as f64)?, n))
}

/// The trained output matrix of a fused loss (full fine-tuning on the CPU): the weight its
/// products read, and its gradient summed over every chunk of one loss.
struct TrainedOutput {
    /// The embedding (vocab, hidden) as the products read it: the f32 master, or its bf16
    /// rounding under bf16-mixed (rounded once per loss rather than once per chunk).
    w: Tensor,
    bf16: bool,
    /// Σ over chunks of (softmax − one-hot)ᵀ · rows, filled by the forward passes.
    grad: std::sync::Mutex<Option<Vec<f32>>>,
}

impl TrainedOutput {
    fn new(embed: &Tensor, bf16: bool) -> Result<Self> {
        let e = embed.detach();
        let w = if bf16 { crate::matmul::round_bf16(&e)? } else { e };
        Ok(TrainedOutput { w, bf16, grad: std::sync::Mutex::new(None) })
    }

    /// Adds one chunk's `dᵀ · rows` (d: rows × vocab, already softmax − one-hot).
    fn add(&self, d: &Tensor, rows: &Tensor) -> Result<()> {
        let mut g = self.grad.lock().map_err(|_| crate::Error::Invalid("loss gradient poisoned".into()))?;
        // Allocated, zeroed, by the first chunk of each loss.
        let acc = g.get_or_insert_with(|| vec![0f32; self.w.elem_count()]);
        Ok(crate::matmul::accumulate_tn(acc, d, rows, self.bf16)?)
    }

    /// The summed gradient times the loss's upstream gradient `g`, for the first chunk whose
    /// backward asks; `None` for the others. Every chunk's negative log-likelihood enters the
    /// loss with the same weight (they are summed), so one `g` scales them all.
    fn take_grad(&self, g: &Tensor) -> Result<Option<Tensor>> {
        let taken = self.grad.lock().map_err(|_| crate::Error::Invalid("loss gradient poisoned".into()))?.take();
        match taken {
            Some(acc) => {
                let t = Tensor::from_vec(acc, self.w.shape(), self.w.device())?;
                Ok(Some(t.broadcast_mul(&g.to_dtype(DType::F32)?)?))
            }
            None => Ok(None),
        }
    }
}

/// One chunk's summed negative log-likelihood with a hand-written backward: inputs are the
/// chunk's hidden rows (rows, hidden) and, when it is trained, the embedding (vocab, hidden).
#[derive(Clone)]
struct ChunkLoss {
    model: Gemma,
    targets: Arc<Vec<u32>>,
    /// The trained output matrix of a fused CPU loss ([`ChunkLoss::fused_cpu`]).
    trained: Option<Arc<TrainedOutput>>,
}

impl ChunkLoss {
    /// f32 logits after the final soft-capping, and the cap's slope 1 − tanh² where there is one.
    fn capped(&self, a: &[Tensor]) -> Result<(Tensor, Option<Tensor>)> {
        let logits = self.model.uncapped_logits(&a[0], a.get(1))?;
        Ok(match self.model.cfg.final_logit_softcapping {
            Some(cap) => {
                let t = (logits / cap)?.tanh()?;
                let slope = t.sqr()?.affine(-1.0, 1.0)?;
                ((t * cap)?, Some(slope))
            }
            None => (logits, None),
        })
    }

    fn targets(&self, device: &candle_core::Device) -> Result<Tensor> {
        Ok(Tensor::from_vec(self.targets.to_vec(), (self.targets.len(), 1), device)?)
    }

    /// Σ (log Σ exp(capped) − capped[target]) over the rows: two passes over the logits fewer
    /// than log-softmax, which also subtracts the log-sum-exp from every entry.
    fn forward(&self, a: &[Tensor]) -> Result<Tensor> {
        let capped = self.model.logits_with(&a[0], a.get(1))?;
        let max = capped.max_keepdim(D::Minus1)?;
        let lse = (capped.broadcast_sub(&max)?.exp()?.sum_keepdim(D::Minus1)?.log()? + max)?;
        let picked = capped.gather(&self.targets(capped.device())?, D::Minus1)?;
        Ok((lse - picked)?.sum_all()?)
    }

    /// The summed negative log-likelihood and its gradient with respect to the rows (f32 rows
    /// on the CPU), in one pass: the logits, then one in-place pass per row that turns them into
    /// softmax − one-hot (times the cap's slope), then that times the output matrix. For a
    /// trained output matrix, the transpose of that gradient times the rows is also added to the
    /// matrix's summed gradient. Nothing the size of the logits outlives the call.
    fn fused_cpu(&self, a: &[Tensor]) -> Result<(Tensor, Tensor)> {
        let logits = match &self.trained {
            Some(out) => crate::matmul::frozen_linear(&a[0], &out.w)?.to_dtype(DType::F32)?,
            None => self.model.uncapped_logits(&a[0], None)?,
        }
        .contiguous()?;
        let op = SoftmaxMinusOneHot::new(self.targets.clone(), self.model.cfg.final_logit_softcapping);
        logits.inplace_op1(&op)?;
        let nll = Tensor::new(op.summed_nll()? as f32, logits.device())?;
        let d_rows = match &self.trained {
            Some(out) => {
                out.add(&logits, &a[0])?;
                logits.mm(&out.w)?
            }
            None => logits.mm(&self.model.output_weight(None, DType::F32)?)?,
        };
        Ok((nll, d_rows.to_dtype(a[0].dtype())?))
    }

    /// d/dcapped = softmax − one-hot (candle's fused softmax), times the cap's slope, times the
    /// output's gradient; then through the output matmul to the rows and, when trained, the
    /// embedding.
    fn backward(&self, a: &[Tensor], grad: &Tensor) -> Result<Vec<Option<Tensor>>> {
        let (rows, dtype) = (&a[0], a[0].dtype());
        let (capped, slope) = self.capped(a)?;
        let probs = candle_nn::ops::softmax_last_dim(&capped.contiguous()?)?;
        drop(capped);
        let t = self.targets(probs.device())?;
        let minus_one = Tensor::full(-1f32, (self.targets.len(), 1), probs.device())?;
        let mut d = probs.scatter_add(&t, &minus_one, D::Minus1)?.broadcast_mul(&grad.to_dtype(DType::F32)?)?;
        if let Some(s) = slope {
            d = (d * s)?;
        }
        let d = d.to_dtype(dtype)?;
        let w = self.model.output_weight(a.get(1), dtype)?;
        let d_rows = d.mm(&w)?;
        let d_embed = match a.get(1) {
            Some(e) => Some(d.t()?.mm(rows)?.to_dtype(e.dtype())?),
            None => None,
        };
        Ok(std::iter::once(Some(d_rows)).chain(a.get(1).map(|_| d_embed)).collect())
    }
}

/// One micro-batch's share of a step: the summed loss of its targets divided by `denominator`
/// (the step's target count, so that micro-batches add up to the step's mean), its number of
/// targets, and the gradient of the weighted loss for each of `vars` (zero where a
/// variable gets none). With `checkpointing`, every decoder layer is recomputed in the backward
/// pass; the gradients equal those without it.
pub fn loss_and_grads(
    model: &Gemma,
    batch: &Batch,
    dropout_rng: Option<&mut thrive_core::Rng>,
    checkpointing: bool,
    denominator: usize,
    vars: &[Var],
) -> Result<(f64, usize, Vec<Tensor>)> {
    loss_and_grads_planned(model, batch, dropout_rng, checkpointing, denominator, vars, LossPlan::default())
}

/// [`loss_and_grads`] with the loss computed as `plan` says. For tests.
#[doc(hidden)]
pub fn loss_and_grads_planned(
    model: &Gemma,
    batch: &Batch,
    dropout_rng: Option<&mut thrive_core::Rng>,
    checkpointing: bool,
    denominator: usize,
    vars: &[Var],
    plan: LossPlan,
) -> Result<(f64, usize, Vec<Tensor>)> {
    let sink = checkpointing.then(GradSink::default);
    let (loss, n) = loss_with(model, batch, dropout_rng, sink.as_ref(), plan, true)?;
    let weighted = (loss * (n as f64 / denominator.max(1) as f64))?;
    let value = weighted.to_dtype(DType::F64)?.to_scalar::<f64>()?;
    let started = std::time::Instant::now();
    let store = weighted.backward()?;
    let parts: Vec<String> =
        crate::ops::take_backward_seconds().iter().map(|(name, s)| format!("{name} {s:.2} s")).collect();
    tracing::debug!(seconds = started.elapsed().as_secs_f64(), recomputed = parts.join(", "), "backward pass");
    let mut grads = crate::optim::grads_of(&store, vars)?;
    if let Some(sink) = &sink {
        for (g, v) in grads.iter_mut().zip(vars) {
            if let Some(extra) = sink.take(v) {
                *g = (&*g + extra)?;
            }
        }
    }
    Ok((value, n, grads))
}
