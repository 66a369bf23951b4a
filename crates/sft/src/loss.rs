//! The paper's next-token loss: token-mean cross-entropy over the target tokens of a batch,
//! computed only at the positions that have a target (the vocabulary dominates memory).

use crate::model::Gemma;
use crate::ops::{cross_entropy_rows, recompute, GradSink, Recompute};
use crate::Result;
use candle_core::{DType, Tensor, Var, D};
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

/// Logit values (rows × vocabulary) computed at once by the loss: 2²⁴ f32 values are 64 MiB, a
/// chunk of 64 rows of Gemma's 262,144-token vocabulary.
const LOSS_CHUNK_VALUES: usize = 1 << 24;

/// Mean cross-entropy (nats per target token) of predicting each target token from the ones
/// before it, and the number of target tokens. `dropout_rng` enables LoRA dropout.
pub fn next_token_loss(
    model: &Gemma,
    batch: &Batch,
    dropout_rng: Option<&mut thrive_core::Rng>,
) -> Result<(Tensor, usize)> {
    loss_with(model, batch, dropout_rng, None, None)
}

/// [`next_token_loss`] with the logits computed `rows` target positions at a time (the default
/// keeps a chunk near 2²⁴ values); the result does not depend on it. For tests.
#[doc(hidden)]
pub fn next_token_loss_in_chunks(model: &Gemma, batch: &Batch, rows: usize) -> Result<(Tensor, usize)> {
    loss_with(model, batch, None, None, Some(rows))
}

/// The loss, optionally with gradient checkpointing (see [`Gemma::hidden_states_with`]).
///
/// The logits never exist for the whole batch: rows with a target are taken a chunk at a time,
/// and each chunk's logits, soft-capping and log-softmax are recomputed in the backward pass
/// instead of being kept.
fn loss_with(
    model: &Gemma,
    batch: &Batch,
    dropout_rng: Option<&mut thrive_core::Rng>,
    checkpoint: Option<&GradSink>,
    chunk_rows: Option<usize>,
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
    let hidden = model.hidden_states_with(&batch.input_ids, &batch.attention_mask, dropout_rng, checkpoint)?;
    let hidden = hidden.reshape((b * seq, hidden.dim(D::Minus1)?))?;
    let device = hidden.device().clone();
    let picked = hidden.index_select(&Tensor::from_vec(rows, n, &device)?, 0)?;
    let chunk = chunk_rows.unwrap_or(LOSS_CHUNK_VALUES / model.cfg.vocab_size).max(1);
    let mut total: Option<Tensor> = None;
    for start in (0..n).step_by(chunk) {
        let len = chunk.min(n - start);
        let t = targets[start..start + len].to_vec();
        let owned = model.clone();
        // Summed negative log-likelihood of one chunk of rows.
        let body = move |a: &[Tensor], _: Option<&mut thrive_core::Rng>| -> Result<Tensor> {
            let logits = owned.uncapped_logits(&a[0], a.get(1))?;
            Ok(cross_entropy_rows(&logits, &t, owned.cfg.final_logit_softcapping)?.sum_all()?)
        };
        let rows = picked.narrow(0, start, len)?;
        let inputs: Vec<&Tensor> = match model.embed_var() {
            Some(e) => vec![&rows, e.as_tensor()],
            None => vec![&rows],
        };
        let (nll, _) = recompute("next-token-loss", &inputs, Arc::new(body), Recompute::default())?;
        total = Some(match total {
            None => nll,
            Some(s) => (s + nll)?,
        });
    }
    let total = total.expect("n > 0");
    Ok(((total / n as f64)?, n))
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
    let sink = checkpointing.then(GradSink::default);
    let (loss, n) = loss_with(model, batch, dropout_rng, sink.as_ref(), None)?;
    let weighted = (loss * (n as f64 / denominator.max(1) as f64))?;
    let value = weighted.to_dtype(DType::F64)?.to_scalar::<f64>()?;
    let store = weighted.backward()?;
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
