//! The paper's next-token loss: token-mean cross-entropy over the target tokens of a batch,
//! computed only at the positions that have a target (the vocabulary dominates memory).

use crate::model::Gemma;
use crate::Result;
use candle_core::{DType, Tensor, D};

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

/// Mean cross-entropy (nats per target token) of predicting each target token from the ones
/// before it, and the number of target tokens. `dropout_rng` enables LoRA dropout.
pub fn next_token_loss(
    model: &Gemma,
    batch: &Batch,
    dropout_rng: Option<&mut thrive_core::Rng>,
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
    let hidden = model.hidden_states(&batch.input_ids, &batch.attention_mask, dropout_rng)?;
    let hidden = hidden.reshape((b * seq, hidden.dim(D::Minus1)?))?;
    let device = hidden.device().clone();
    let picked = hidden.index_select(&Tensor::from_vec(rows, n, &device)?, 0)?;
    let logits = model.logits_of(&picked)?;
    let logp = candle_nn::ops::log_softmax(&logits.to_dtype(DType::F32)?, D::Minus1)?;
    let targets = Tensor::from_vec(targets, (n, 1), &device)?;
    let nll = logp.gather(&targets, 1)?.neg()?;
    Ok(((nll.sum_all()? / n as f64)?, n))
}
